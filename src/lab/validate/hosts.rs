//! Host rules: the hosts a lab names (`hosts:`: names, libvirt URIs, underlay addresses), the
//! host of each VM and the serving host of each network (`host:`), and what a network that
//! spans hosts needs of them (an underlay address on each). docs/multi-host.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use miette::LabeledSpan;

use super::lab::checked_name;
use super::{Checker, parse_ip};
use crate::diag::{Code, suggest};
use crate::lab::hosts::{STRETCHED_MTU, VXLAN_MAX_MTU, VXLAN_OVERHEAD};
use crate::lab::model::LabHost;
use crate::lab::model::{self, HostName, Network, NetworkKind, NetworkName, Vm, VmName};
use crate::lab::spec::{HostSpec, NetworkSpec, Spanned, SpannedMap};

/// The hosts of `hosts:` that passed their checks, and whether the lab names any.
pub(super) struct Hosts {
    /// By name; `order` is the position in the file.
    valid: BTreeMap<HostName, LabHost>,
    /// Every key written under `hosts:` (valid or not), in file order: a VM naming a host
    /// whose own entry has a problem is not reported again as naming an unknown host.
    written: Vec<String>,
    /// The hosts whose `underlay:` is written but refused: not reported again as missing.
    bad_underlay: BTreeSet<HostName>,
}

impl Hosts {
    /// Checks `hosts:`: each name, `uri` and `underlay`, and that no two hosts share a URI or
    /// an underlay address.
    pub(super) fn check(c: &mut Checker, hosts: &SpannedMap<HostSpec>) -> Self {
        let mut valid = BTreeMap::new();
        let mut uris: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
        let mut underlays: BTreeMap<Ipv4Addr, &Spanned<String>> = BTreeMap::new();
        let mut bad_underlay = BTreeSet::new();
        for (order, (key, spec)) in hosts.iter().enumerate() {
            let name = checked_name(
                c,
                key,
                Code::HostName,
                "host name",
                "lowercase letters, digits, '-' and '_'",
                model::MAX_RESOURCE_NAME,
                HostName::new,
            );
            let uri_ok = check_uri(c, &spec.uri);
            if uri_ok {
                if let Some(first) = uris.get(spec.uri.value.trim()) {
                    c.push(
                        Code::HostUri,
                        format!(
                            "hosts `{}` and `{}` have the same uri `{}`",
                            host_of(hosts, first),
                            key.value,
                            spec.uri.value
                        ),
                        vec![
                            LabeledSpan::at(c.span(*first), "first here"),
                            LabeledSpan::at(c.span(&spec.uri), "again here"),
                        ],
                        "each host is one libvirt daemon: give each its own uri, or merge the two hosts",
                    );
                } else {
                    uris.insert(spec.uri.value.trim(), &spec.uri);
                }
            }
            let underlay = spec.underlay.as_ref().and_then(|u| check_underlay(c, u, &mut underlays));
            if let (Some(name), None, Some(_)) = (&name, underlay, &spec.underlay) {
                bad_underlay.insert(name.clone());
            }
            if let Some(name) = name.filter(|_| uri_ok) {
                let lab_host = LabHost {
                    name: name.clone(),
                    uri: spec.uri.value.trim().to_owned(),
                    underlay,
                    order,
                    span: c.span(key),
                };
                valid.insert(name, lab_host);
            }
        }
        Self { valid, written: hosts.iter().map(|(k, _)| k.value.clone()).collect(), bad_underlay }
    }

    /// The host a VM or network (`who`, for messages) is on: its `host:`, which must be
    /// under `hosts:`; without one, the first host of `hosts:` (the default host when the
    /// lab names none). `None` when `host:` names no valid host (the problem is recorded).
    pub(super) fn place(&self, c: &mut Checker, host: Option<&Spanned<String>>, who: &str) -> Option<HostName> {
        let Some(h) = host else { return Some(self.first()) };
        if self.written.is_empty() {
            c.at(
                Code::UnknownHost,
                h,
                format!("{who} names host `{}`, but the lab declares no `hosts:`", h.value),
                "no such host",
                "declare the lab's libvirt hosts under `hosts:` (each with its `uri`), or remove `host:` to use the \
                 one host --connect reaches",
            );
            return None;
        }
        if let Some((name, _)) = self.valid.iter().find(|(n, _)| n.as_str() == h.value) {
            return Some(name.clone());
        }
        if !self.written.contains(&h.value) {
            c.at(
                Code::UnknownHost,
                h,
                format!("{who} names host `{}`, which is not under `hosts:`", h.value),
                "unknown host",
                suggest(
                    &h.value,
                    &self.written,
                    "Declared hosts",
                    "declare it under `hosts:` or use one of the declared hosts",
                ),
            );
        }
        None
    }

    /// The first host in file order, or the default host of a lab that names none.
    fn first(&self) -> HostName {
        self.valid.values().min_by_key(|h| h.order).map(|h| h.name.clone()).unwrap_or_else(HostName::default_host)
    }

    /// Places each lab network: its serving host (`host:`, default the first host in
    /// `hosts:` with a VM on it, else the first host), and checks that every host a network
    /// spans has an `underlay:` for its tunnel.
    pub(super) fn place_networks(
        &self,
        c: &mut Checker,
        specs: &SpannedMap<NetworkSpec>,
        networks: &mut BTreeMap<NetworkName, Network>,
        vms: &BTreeMap<VmName, Vm>,
    ) {
        for (name, net) in networks.iter_mut() {
            if matches!(net.kind, NetworkKind::External) {
                continue;
            }
            let on: BTreeSet<&HostName> =
                vms.values().filter(|vm| vm.nics.iter().any(|n| n.network == *name)).map(|vm| &vm.host).collect();
            let spec = specs.get(name.as_str()).map(|(_, s)| s);
            let explicit = spec.and_then(|s| s.host.as_ref());
            let serving = match explicit {
                Some(_) => self.place(c, explicit, &format!("network `{name}`")),
                None => Some(
                    self.valid
                        .values()
                        .filter(|h| on.contains(&h.name))
                        .min_by_key(|h| h.order)
                        .map(|h| h.name.clone())
                        .unwrap_or_else(|| self.first()),
                ),
            };
            let Some(serving) = serving else { continue };
            net.host = serving.clone();
            net.instance_host = serving.clone();
            let mut spans: BTreeSet<&HostName> = on;
            spans.insert(&serving);
            net.spans = spans.iter().map(|h| (*h).clone()).collect();
            if spans.len() < 2 {
                continue;
            }
            let all: Vec<String> = spans.iter().map(|h| h.to_string()).collect();
            // The bridges, the tunnel and every guest NIC carry what the tunnel carries.
            if let NetworkKind::Managed(m) = &mut net.kind {
                match m.mtu {
                    None => m.mtu = Some(STRETCHED_MTU),
                    Some(mtu) if mtu > VXLAN_MAX_MTU => {
                        let at = spec.and_then(|s| s.mtu.as_ref()).map(|s| c.span(s)).unwrap_or(net.span);
                        c.push(
                            Code::Underlay,
                            format!(
                                "network `{name}` spans hosts {}, and its mtu {mtu} is more than the {VXLAN_MAX_MTU} bytes \
                                 a VXLAN device carries",
                                all.join(", ")
                            ),
                            vec![LabeledSpan::at(at, "too large for the tunnel")],
                            format!(
                                "give at most {VXLAN_MAX_MTU}, and no more than the underlay's MTU less \
                                 {VXLAN_OVERHEAD} (a 9000-byte underlay carries `mtu: 8950`), or remove `mtu:` (topo \
                                 then sets {STRETCHED_MTU}, for a 1500-byte underlay)"
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            // IPv6 across hosts: each host's libvirt would put `gateway6` on its own bridge
            // and run its own router advertisements (two routers, one address: DAD fails on
            // one bridge), and without it the bridge of a host that does not serve the
            // network has IPv6 off (libvirt sets disable_ipv6 on a bridge with no IPv6
            // `<ip>`), so nothing there could prove a NIC by NDP. Refused until topo serves
            // IPv6 from one host and proves across the tunnel.
            if let NetworkKind::Managed(m) = &net.kind
                && m.subnet6.is_some()
            {
                let at = spec.and_then(|s| s.subnet6.as_ref()).map(|s| c.span(s)).unwrap_or(net.span);
                c.push(
                    Code::Underlay,
                    format!(
                        "network `{name}` spans hosts {} and has `subnet6`: IPv6 on a network stretched across hosts is not supported",
                        all.join(", ")
                    ),
                    vec![LabeledSpan::at(at, "IPv6 on a stretched network")],
                    "keep the IPv6 network on one host (put the VMs that use it on one host, or give it `host:` and its \
                     VMs that host), or remove `subnet6` from it (docs/multi-host.md)"
                        .to_string(),
                );
            }
            for h in &spans {
                let Some(host) = self.valid.get(*h) else { continue };
                if host.underlay.is_none() && !self.bad_underlay.contains(*h) {
                    c.push(
                        Code::Underlay,
                        format!(
                            "network `{name}` spans hosts {}, and host `{h}` has no `underlay` address for its tunnel",
                            all.join(", ")
                        ),
                        vec![LabeledSpan::at(host.span, "no `underlay:`"), LabeledSpan::at(net.span, "spans hosts")],
                        format!(
                            "give host `{h}` the IPv4 address the other hosts reach it on, e.g. `underlay: 10.0.0.11`"
                        ),
                    );
                }
            }
        }
    }

    /// The valid hosts, for the model.
    pub(super) fn into_model(self) -> BTreeMap<HostName, LabHost> {
        self.valid
    }
}

/// The name of the host whose `uri` is `uri` (for messages).
fn host_of(hosts: &SpannedMap<HostSpec>, uri: &Spanned<String>) -> String {
    hosts.iter().find(|(_, s)| std::ptr::eq(&s.uri, uri)).map(|(k, _)| k.value.clone()).unwrap_or_default()
}

/// A libvirt connection URI as `virConnectOpen` parses it (src/util/viruri.c over libxml2's
/// URI parser; docs/uri.rst): `driver[+transport]://[user@][host][:port]/[path][?params]`,
/// the scheme made of letters, digits and '+', no whitespace or control characters.
fn check_uri(c: &mut Checker, uri: &Spanned<String>) -> bool {
    let text = uri.value.trim();
    let scheme = text.split_once("://").map(|(s, _)| s);
    let ok_scheme = scheme.is_some_and(|s| {
        !s.is_empty()
            && s.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '+')
    });
    let bad_char = text.chars().find(|ch| ch.is_whitespace() || ch.is_control());
    if text.is_empty() || !ok_scheme || bad_char.is_some() {
        let what = match bad_char {
            Some(ch) => format!("`{}` is not a libvirt URI: it contains {ch:?}", uri.value),
            None => format!("`{}` is not a libvirt URI", uri.value),
        };
        c.at(
            Code::HostUri,
            uri,
            what,
            "not driver[+transport]://[user@]host/path",
            "write the URI virsh -c takes, e.g. `qemu+ssh://root@h1/system` (an ssh config alias keeps the lab file \
             portable) or `qemu:///system` for this machine",
        );
        return false;
    }
    true
}

/// `underlay:`: an IPv4 address a VXLAN tunnel can use as its source and its peers as their
/// destination (the kernel refuses a multicast local address, drivers/net/vxlan/vxlan_core.c
/// `vxlan_config_validate`; an unspecified, broadcast or loopback one reaches no other host),
/// given to one host only.
fn check_underlay<'s>(
    c: &mut Checker,
    u: &'s Spanned<String>,
    seen: &mut BTreeMap<Ipv4Addr, &'s Spanned<String>>,
) -> Option<Ipv4Addr> {
    let ip = parse_ip(c, u, "underlay address")?;
    let why = if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else if ip.is_multicast() {
        Some("a multicast address (the kernel refuses it as a tunnel's source)")
    } else if ip.is_loopback() {
        Some("a loopback address, which no other host reaches")
    } else {
        None
    };
    if let Some(why) = why {
        c.at(
            Code::Underlay,
            u,
            format!("underlay `{ip}` is {why}"),
            "not a tunnel address",
            "give the host's own unicast IPv4 address on the network that joins the hosts",
        );
        return None;
    }
    if let Some(first) = seen.get(&ip) {
        c.push(
            Code::Underlay,
            format!("underlay `{ip}` is given to two hosts"),
            vec![LabeledSpan::at(c.span(*first), "first here"), LabeledSpan::at(c.span(u), "again here")],
            "each host's tunnels start from its own address: give each host its own",
        );
        return None;
    }
    seen.insert(ip, u);
    Some(ip)
}
