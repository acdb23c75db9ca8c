//! NIC rules: the network reference, MAC addresses (given or derived, unique in the lab),
//! DHCP reservations (written, or derived by [`crate::lab::addressing`]), whether the NIC can
//! get an address at all, and DHCP capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use miette::{LabeledSpan, SourceSpan};

use super::network::{NetInfo, first_host, last_host};
use super::{Checker, parse_ip};
use crate::diag::{Code, did_you_mean};
use crate::lab::addressing::{self, class_c_edge};
use crate::lab::impair::{Impairment, Loss, Micros, Netem, Rate};
use crate::lab::model::{
    self, IpSource, LabName, MacAddr, MacError, NetworkKind, NetworkName, Reservation, Verify, VmName,
};
use crate::lab::spec::Spanned;
use crate::lab::spec::{NicSpec, VerifySpec};

/// What the NIC checks remember across VMs.
#[derive(Default)]
pub(super) struct Nics {
    /// Every MAC so far: who has it, where, whether it was derived, and on which network.
    macs: BTreeMap<MacAddr, (String, SourceSpan, bool, String)>,
    /// Every reserved address so far, per network.
    ips: BTreeMap<(String, Ipv4Addr), (String, SourceSpan)>,
    /// DHCP host entries per network, in file order, before host names are given.
    pending: BTreeMap<String, Vec<Pending>>,
    /// DHCP host entries per network, with their host names ([`Nics::name_dhcp_hosts`]).
    reservations: BTreeMap<String, BTreeMap<MacAddr, Reservation>>,
    /// NICs that need a dynamic lease (`ip: dynamic`), by network: (file order, who).
    dynamic: BTreeMap<String, Vec<(usize, String)>>,
    /// NICs whose address topo derives (no `ip:`), by network, in file order.
    derive: BTreeMap<String, Vec<Derive>>,
    /// NICs checked so far: the file-order position of the next one.
    order: usize,
}

/// A NIC whose reservation topo derives, before it has its address.
struct Derive {
    order: usize,
    who: String,
    vm: VmName,
    index: usize,
    mac: MacAddr,
    span: SourceSpan,
}

/// A reservation before its DHCP host name is chosen.
struct Pending {
    /// The NIC's position in the file (VMs in file order, then NICs): host names are given in it.
    order: usize,
    vm: String,
    index: usize,
    mac: MacAddr,
    ip: Ipv4Addr,
    span: SourceSpan,
}

/// The word `ip:` takes for "no reservation: a lease from the DHCP pool".
pub const DYNAMIC: &str = "dynamic";

/// Longest DHCP host name: one DNS label (RFC 1035 section 2.3.4; dnsmasq refuses a longer
/// `dhcp-host` name with "bad DHCP host name", src/option.c via `legal_hostname`).
pub const MAX_DHCP_HOST_NAME: usize = 63;

impl Nics {
    /// Gives every reservation its DHCP host name and refuses names that are not unique on
    /// their network. A VM's first reservation on a network is named after the VM; further
    /// ones on the same network get `<vm>-eth<index>`, because libvirt refuses to add a
    /// host entry whose name another entry has ("there is an existing dhcp host entry ...
    /// that matches", src/conf/network_conf.c, virNetworkDefUpdateIPDHCPHost).
    pub(super) fn name_dhcp_hosts(&mut self, c: &mut Checker) {
        for (net, mut pending) in std::mem::take(&mut self.pending) {
            pending.sort_by_key(|p| p.order);
            let mut by_name: BTreeMap<String, &Pending> = BTreeMap::new();
            let mut firsts: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
            let out = self.reservations.entry(net.clone()).or_default();
            for p in &pending {
                let host = if firsts.insert(p.vm.as_str()) { p.vm.clone() } else { format!("{}-eth{}", p.vm, p.index) };
                if host.len() > MAX_DHCP_HOST_NAME {
                    c.push(
                        Code::DhcpHostName,
                        format!(
                            "vms.{}.nics[{}] would get the DHCP host name `{host}`, longer than {MAX_DHCP_HOST_NAME} bytes",
                            p.vm, p.index
                        ),
                        vec![LabeledSpan::at(p.span, "second reservation of this VM on this network")],
                        "dnsmasq refuses host names longer than one DNS label; shorten the VM name",
                    );
                    continue;
                }
                if let Some(other) = by_name.get(&host) {
                    c.push(
                        Code::DhcpHostName,
                        format!("vms.{}.nics[{}] and vms.{}.nics[{}] get the same DHCP host name `{host}` on network `{net}`", other.vm, other.index, p.vm, p.index),
                        vec![
                            LabeledSpan::at(other.span, format!("`{host}`")),
                            LabeledSpan::at(p.span, format!("`{host}` again")),
                        ],
                        "a VM's second reservation on a network is named `<vm>-eth<index>`; rename the VM that has that name",
                    );
                    continue;
                }
                by_name.insert(host.clone(), p);
                out.insert(p.mac, Reservation { mac: p.mac, ip: p.ip, host });
            }
        }
    }

    /// Refuses a NIC whose MAC (given or derived) is the bridge MAC of a lab network
    /// ([`MacAddr::derived_bridge`], written into the network's XML). The bridge holds its
    /// own address as a local forwarding entry: frames to it go up to the host and are
    /// never forwarded to a port (Linux net/bridge/br_input.c `br_handle_frame_finish`),
    /// and frames from a port with it as source are warned about and not learned
    /// (net/bridge/br_fdb.c `br_fdb_update`), so such a guest gets no DHCP or ARP reply;
    /// plan's `bridge_mac` refuses the same for bridges MACs observed on the host. Every
    /// lab network's is checked, not only the NIC's own: with these, every MAC the lab
    /// puts on the host is unique. Derived NIC MACs (`52:54:00:..`) can never match
    /// (`52:54:01:..`); the check covers them anyway.
    pub(super) fn check_bridge_macs(
        &self,
        c: &mut Checker,
        lab: Option<&LabName>,
        networks: &BTreeMap<NetworkName, model::Network>,
    ) {
        let Some(lab) = lab else { return };
        for net in networks.values().filter(|n| matches!(n.kind, NetworkKind::Managed(_))) {
            let bridge_mac = MacAddr::derived_bridge(lab, &net.name);
            let Some((who, span, derived, on)) = self.macs.get(&bridge_mac) else { continue };
            let why = if on == net.name.as_str() {
                "the bridge keeps frames to its own address for the host, so the guest would get no DHCP or ARP reply"
            } else {
                "every MAC the lab puts on the host must be unique, bridges' included"
            };
            let help = if *derived {
                "set `mac:` on this NIC to another address"
            } else {
                "choose another `mac:` for this NIC (topo gives each lab network's bridge a `52:54:01:..` MAC), or remove it to get a derived one"
            };
            c.push(
                Code::BridgeMac,
                format!("{who}: MAC {bridge_mac} is the MAC topo gives the bridge of network `{}`: {why}", net.name),
                vec![
                    LabeledSpan::at(*span, "this NIC's MAC"),
                    LabeledSpan::at(net.span, format!("bridge MAC {bridge_mac}")),
                ],
                help,
            );
        }
    }

    /// Derives the address of every NIC without `ip:` on a lab network with a subnet
    /// ([`crate::lab::addressing`]), each network's written `ip:`s occupied first, and adds
    /// them to the reservations. Returns them by (VM, NIC index). A network whose NICs
    /// outnumber its free candidates gets none (`check_dhcp_capacity` reports it).
    pub(super) fn derive_addresses(
        &mut self,
        lab: Option<&LabName>,
        nets: &BTreeMap<String, NetInfo>,
    ) -> BTreeMap<(VmName, usize), Ipv4Addr> {
        let mut out = BTreeMap::new();
        let Some(lab) = lab else { return out };
        for (net, list) in std::mem::take(&mut self.derive) {
            let Some(info) = nets.get(&net) else { continue };
            let Some(subnet) = info.subnet else { continue };
            let range = if info.dhcp {
                match info.dhcp_range {
                    Some(r) => Some(r),
                    // A range with a problem of its own (reported): nothing to derive from.
                    None => continue,
                }
            } else {
                None
            };
            let candidates = addressing::candidates(subnet, info.gateway, range);
            let taken: BTreeSet<Ipv4Addr> = self.ips.keys().filter(|(n, _)| *n == net).map(|(_, ip)| *ip).collect();
            let nics: Vec<(VmName, usize)> = list.iter().map(|d| (d.vm.clone(), d.index)).collect();
            let Ok(got) = addressing::assign(lab, &nics, &candidates, &taken) else { continue };
            for d in list {
                let Some(ip) = got.get(&(d.vm.clone(), d.index)).copied() else { continue };
                self.pending.entry(net.clone()).or_default().push(Pending {
                    order: d.order,
                    vm: d.vm.to_string(),
                    index: d.index,
                    mac: d.mac,
                    ip,
                    span: d.span,
                });
                out.insert((d.vm, d.index), ip);
            }
        }
        out
    }

    /// Puts the reservations into the networks' models.
    pub(super) fn attach_reservations(mut self, networks: &mut BTreeMap<NetworkName, model::Network>) {
        for (name, net) in networks.iter_mut() {
            if let NetworkKind::Managed(m) = &mut net.kind
                && let Some(r) = self.reservations.remove(name.as_str())
            {
                m.reservations = r;
            }
        }
    }
}

/// Where a NIC sits: for messages and derived values.
pub(super) struct Context<'a> {
    /// `vm.nics[i]` as written, for messages.
    pub(super) who: &'a str,
    pub(super) index: usize,
    pub(super) lab: Option<&'a LabName>,
    pub(super) vm: Option<&'a VmName>,
    pub(super) nets: &'a BTreeMap<String, NetInfo>,
    /// The NIC is a VM group member's: its keys are its group's, shared by every member.
    pub(super) in_group: bool,
}

/// Checks one NIC; the model NIC when it is valid.
pub(super) fn check(c: &mut Checker, nic: &NicSpec, ctx: &Context, seen: &mut Nics) -> Option<model::Nic> {
    let Context { who, index, lab: lab_name, vm: name, nets, in_group } = *ctx;
    let Some(info) = nets.get(&nic.network.value) else {
        let help = match did_you_mean(&nic.network.value, nets.keys().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? Declared networks: {}", list(nets.keys())),
            None if nets.is_empty() => "declare the network under `networks:` first".to_owned(),
            None => format!("declare it under `networks:` or use one of: {}", list(nets.keys())),
        };
        c.at(
            Code::UnknownNetwork,
            &nic.network,
            format!("{who} uses network `{}`, which is not declared", nic.network.value),
            "not declared under `networks`",
            help,
        );
        return None;
    };
    let order = seen.order;
    seen.order += 1;
    let mac = check_nic_mac(c, nic, (who, in_group), lab_name, name, index, &mut seen.macs);
    let dynamic = nic.ip.as_ref().is_some_and(|s| s.value.trim() == DYNAMIC);
    let ip = if dynamic { None } else { check_nic_ip(c, nic, who, info, &mut seen.ips) };
    // topo derives an address on a lab network with a subnet; a network with a problem of
    // its own gets none (its problem is reported).
    let derived = nic.ip.is_none() && !info.external && !info.broken && info.subnet.is_some();
    let ip_source = if derived {
        IpSource::Derived
    } else if nic.ip.is_some() && !dynamic {
        IpSource::Written
    } else {
        IpSource::Dynamic
    };
    if dynamic && !info.external {
        seen.dynamic.entry(nic.network.value.clone()).or_default().push((order, who.to_owned()));
    }
    let verify = match nic.verify.as_ref().map(|v| v.value) {
        None | Some(VerifySpec::Arp) => Verify::Arp,
        Some(VerifySpec::None) => Verify::None,
    };
    if verify != Verify::None && !info.external && !info.broken {
        // A network with only an IPv6 prefix gives the NIC its SLAAC address, which verify
        // proves by NDP: nothing to refuse.
        let reason = if info.subnet.is_none() && info.subnet6.is_some() {
            None
        } else if info.subnet.is_none() {
            Some(format!("network `{}` has no subnet", nic.network.value))
        } else if !info.dhcp && dynamic {
            Some(format!(
                "network `{}` has no DHCP range (`dhcp: false` serves reservations only) and the NIC says `ip: dynamic`",
                nic.network.value
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            let help = if info.subnet.is_none() {
                "give the network a `subnet:` (or a `subnet6:`), or set `verify: none` on this NIC".to_owned()
            } else {
                "remove `ip: dynamic` (topo then derives a reservation, which is served without a range), write an `ip:`, enable `dhcp:` on the network, or set `verify: none`".to_owned()
            };
            c.at(
                Code::NicNoAddress,
                &nic.network,
                format!("{who} can get no IPv4 address, so topo cannot verify it: {reason}"),
                "this NIC gets no address",
                help,
            );
        }
    }
    let (Some(mac), Ok(net)) = (mac, NetworkName::new(&nic.network.value)) else {
        return None;
    };
    // The NIC's SLAAC address may not be the bridge's own IPv6 address: the guest's DAD
    // would find it taken (RFC 4862 5.4.5) and leave the NIC without it.
    if let (Some(prefix), Some(g6)) = (info.subnet6, info.gateway6)
        && crate::lab::ipv6::slaac_address(prefix, mac.0) == g6
    {
        c.at(
            Code::Gateway6,
            &nic.network,
            format!("{who}'s SLAAC address {g6} is the gateway6 of network `{}`", nic.network.value),
            "this NIC's address is the bridge's",
            "remove `gateway6:` (the default, ::1, is never an EUI-64 address) or give the NIC another `mac:`",
        );
    }
    if let (Some(ip), Some(vm_name)) = (ip, name) {
        let span = nic.ip.as_ref().map_or_else(|| c.span(&nic.network), |s| c.span(s));
        seen.pending.entry(nic.network.value.clone()).or_default().push(Pending {
            order,
            vm: vm_name.to_string(),
            index,
            mac: mac.0,
            ip,
            span,
        });
    }
    if let (true, Some(vm_name)) = (derived, name) {
        seen.derive.entry(nic.network.value.clone()).or_default().push(Derive {
            order,
            who: who.to_owned(),
            vm: vm_name.clone(),
            index,
            mac: mac.0,
            span: c.span(&nic.network),
        });
    }
    let (impairment, netem_span) = check_impairment(c, nic, who);
    Some(model::Nic {
        index,
        network: net,
        mac: mac.0,
        mac_derived: mac.1,
        ip,
        ip_source,
        verify,
        impairment,
        netem_span,
        rate_span: nic.rate.as_ref().map(|r| c.span(r)),
        span: c.span(&nic.network),
    })
}

/// `rate`, `delay`, `jitter` and `loss`: units, and the ranges libvirt and tc accept (see
/// `crate::lab::impair` for each rule and its source). Returns the settings (invalid ones left
/// out, with a problem each) and where the first netem setting is written.
fn check_impairment(c: &mut Checker, nic: &NicSpec, who: &str) -> (Impairment, Option<SourceSpan>) {
    let mut out = Impairment::default();
    if let Some(r) = &nic.rate {
        match Rate::parse(&r.value) {
            Ok(v) => out.rate = Some(v),
            Err(e) => c.at(
                Code::Link,
                r,
                format!("{who}: rate `{}` {e}", r.value),
                "rate limit",
                "write a bit rate such as `10Mbit`, `512kbit` or `1Gbit` (SI units; a multiple of 8kbit, since \
                 libvirt's <bandwidth> counts whole kilobytes per second)",
            ),
        }
    }
    let time = |c: &mut Checker, field: &str, v: &Option<Spanned<String>>| -> Option<Micros> {
        let s = v.as_ref()?;
        match Micros::parse(&s.value) {
            Ok(t) => Some(t),
            Err(e) => {
                c.at(
                    Code::Link,
                    s,
                    format!("{who}: {field} `{}` {e}", s.value),
                    field,
                    "write a duration such as `50ms`, `1.5ms` or `1s` (whole microseconds, at most 274s)",
                );
                None
            }
        }
    };
    let delay = time(c, "delay", &nic.delay);
    let jitter = time(c, "jitter", &nic.jitter);
    let loss = nic.loss.as_ref().and_then(|l| match Loss::parse(&l.value) {
        Ok(v) => Some(v),
        Err(e) => {
            c.at(
                Code::Link,
                l,
                format!("{who}: loss `{}` {e}", l.value),
                "loss",
                "write a percentage from `0%` to `100%`, such as `1%` or `0.5%`",
            );
            None
        }
    });
    if let (Some(j), None) = (&nic.jitter, &nic.delay) {
        // tc's netem syntax: `delay TIME [JITTER [CORRELATION]]`; a jitter alone is "What is
        // \"jitter\"?" (iproute2 tc/q_netem.c).
        c.at(
            Code::Link,
            j,
            format!("{who}: jitter `{}` without a delay", j.value),
            "jitter without delay",
            "netem varies the delay by the jitter: add `delay:` (e.g. `delay: 50ms` beside `jitter: 5ms`)",
        );
    }
    let netem = Netem { delay, jitter, loss };
    if nic.delay.is_some() || nic.jitter.is_some() || nic.loss.is_some() {
        out.netem = Some(netem);
    }
    let span = [&nic.delay, &nic.jitter, &nic.loss].into_iter().flatten().next().map(|s| c.span(s));
    (out, span)
}

/// A network with fewer free addresses than the NICs that need one leaves some without.
///
/// With a DHCP range, the NICs whose address topo derives and those with `ip: dynamic` all
/// need one of the range: dnsmasq never leases a reserved address to another client (a
/// `dhcp-host` address is taken even while its owner is off: dnsmasq `address_allocate`
/// skips addresses configured for a host), so the pool is the range minus the written
/// reservations inside it and the class C edges dnsmasq skips; the derived reservations take
/// their addresses from it too ([`crate::lab::addressing`]). With `dhcp: false`, the derived
/// reservations need the subnet's host addresses other than the gateway, the class C edges
/// and the written ones.
pub(super) fn check_dhcp_capacity(c: &mut Checker, nets: &BTreeMap<String, NetInfo>, seen: &Nics) {
    let names: BTreeSet<&String> = seen.dynamic.keys().chain(seen.derive.keys()).collect();
    for net in names {
        let Some(info) = nets.get(net) else { continue };
        let (Some(span), Some(subnet)) = (info.dhcp_span, info.subnet) else { continue };
        let mut nics: Vec<(usize, &str)> = Vec::new();
        nics.extend(seen.derive.get(net).into_iter().flatten().map(|d| (d.order, d.who.as_str())));
        let derived = nics.len();
        if info.dhcp {
            nics.extend(seen.dynamic.get(net).into_iter().flatten().map(|(o, w)| (*o, w.as_str())));
        }
        nics.sort();
        let names: Vec<&str> = nics.iter().map(|(_, w)| *w).collect();
        let reserved_ips: BTreeSet<Ipv4Addr> = seen.ips.keys().filter(|(n, _)| n == net).map(|(_, ip)| *ip).collect();
        let Some(range) = info.dhcp_range else {
            if !info.dhcp {
                check_reservations_only(c, net, subnet, info, &reserved_ips, &names, span);
            }
            // Otherwise the range has a problem of its own (reported).
            continue;
        };
        let (start, end) = (u32::from(range.start), u32::from(range.end));
        let total = u64::from(end - start) + 1;
        // What dnsmasq skips when it picks a free address (src/dhcp.c, address_allocate).
        let mut reserved = 0u64;
        let mut class_c_edges = 0u64;
        for ip in (start..=end).map(Ipv4Addr::from) {
            if reserved_ips.contains(&ip) {
                reserved += 1;
            } else if class_c_edge(ip) {
                class_c_edges += 1;
            }
        }
        let size = total - reserved - class_c_edges;
        if names.len() as u64 <= size {
            continue;
        }
        let es = |n: u64| if n == 1 { "" } else { "es" };
        let need = need_text(names.len(), derived);
        let (message, label) = if reserved == 0 && class_c_edges == 0 {
            (
                format!(
                    "network `{net}` hands out {size} address{} by DHCP, but {need} ({})",
                    es(size),
                    names.join(", ")
                ),
                format!("{size} address{}", es(size)),
            )
        } else {
            (
                format!(
                    "network `{net}` has {size} free address{} in its DHCP range ({total} minus {}), but {need} ({})",
                    es(size),
                    skipped(reserved, class_c_edges),
                    names.join(", ")
                ),
                format!("{total} address{}, {size} of them free for DHCP", es(total)),
            )
        };
        let help = if reserved == 0 {
            "use a larger subnet or DHCP range, or give some NICs an `ip:` outside the range"
        } else {
            "use a larger subnet or DHCP range, move reservations out of the range, or give some NICs an `ip:` outside the range"
        };
        c.push(Code::DhcpTooSmall, message, vec![LabeledSpan::at(span, label)], help);
    }
}

/// "3 NICs need one", "3 NICs need one for a derived reservation" or "3 NICs need one, 2 of
/// them for a derived reservation".
fn need_text(all: usize, derived: usize) -> String {
    let nics = if all == 1 { "1 NIC needs one".to_owned() } else { format!("{all} NICs need one") };
    match derived {
        0 => nics,
        d if d == all => format!("{nics} for a derived reservation"),
        d => format!("{nics}, {d} of them for a derived reservation"),
    }
}

/// `dhcp: false`: the derived reservations need free host addresses of the subnet.
fn check_reservations_only(
    c: &mut Checker,
    net: &str,
    subnet: ipnetwork::Ipv4Network,
    info: &NetInfo,
    written: &BTreeSet<Ipv4Addr>,
    names: &[&str],
    span: SourceSpan,
) {
    let candidates = addressing::candidates(subnet, info.gateway, None);
    let free = candidates.iter().filter(|ip| !written.contains(ip)).count();
    if names.len() <= free {
        return;
    }
    let es = if free == 1 { "" } else { "es" };
    c.push(
        Code::DhcpTooSmall,
        format!(
            "network `{net}` has {free} free host address{es} for reservations (subnet {subnet} without the gateway, the written `ip:`s and the .0 and .255 that dnsmasq never hands out in 192.0.0.0-223.255.255.255), but {} ({})",
            need_text(names.len(), names.len()),
            names.join(", ")
        ),
        vec![LabeledSpan::at(span, format!("{free} free address{es}"))],
        "use a larger subnet, or move some NICs to another network",
    );
}

/// "3 reserved by `ip:` and 2 that dnsmasq skips (.0 and .255 in class C space)".
fn skipped(reserved: u64, edges: u64) -> String {
    let r = format!("{reserved} reserved by `ip:`");
    let e = format!("{edges} that dnsmasq never hands out (.0 and .255 in 192.0.0.0-223.255.255.255)");
    match (reserved, edges) {
        (_, 0) => r,
        (0, _) => e,
        _ => format!("{r} and {e}"),
    }
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// Why a parsed unicast MAC cannot be a guest's, and how to fix it (the layer that
/// refuses it is named in the message).
pub(super) fn refused_mac(mac: MacAddr) -> Option<(&'static str, &'static str)> {
    let b = mac.octets();
    if b[0] == 0xfe {
        // libvirt src/util/virnetdevtap.c, virNetDevTapCreateInBridgePort: the host side of
        // the tap gets the guest's MAC with the first byte set to 0xFE, so a guest MAC that
        // starts with it is refused ("Unable to use MAC address starting with reserved value
        // 0xFE") when the domain starts.
        return Some((
            "starts with 0xFE, which libvirt reserves for the host side of the tap device and refuses for a guest",
            "use another first byte; QEMU's `52:54:00:..` prefix is a safe choice",
        ));
    }
    if b == [0; 6] {
        // QEMU net/net.c, qemu_macaddr_default_if_unset: an all-zero MAC means "unset" and
        // QEMU gives the NIC 52:54:00:12:34:NN instead, so the reservation and the ARP proof
        // would be for a MAC the guest never has (and Linux's is_valid_ether_addr refuses it).
        return Some((
            "is all zeros, which QEMU treats as unset and replaces with its own 52:54:00:12:34:xx",
            "use a real address such as `52:54:00:00:1f:02`, or remove `mac` to get a derived one",
        ));
    }
    None
}

/// The NIC's MAC (given or derived) and whether it was derived; records duplicates.
fn check_nic_mac(
    c: &mut Checker,
    nic: &NicSpec,
    (who, in_group): (&str, bool),
    lab: Option<&LabName>,
    vm: Option<&VmName>,
    index: usize,
    seen: &mut BTreeMap<MacAddr, (String, SourceSpan, bool, String)>,
) -> Option<(MacAddr, bool)> {
    let (mac, derived, span) = match &nic.mac {
        Some(m) => match m.value.trim().parse::<MacAddr>() {
            Ok(mac) => {
                if let Some((why, help)) = refused_mac(mac) {
                    c.at(Code::BadMac, m, format!("MAC `{}` {why}", m.value), "refused MAC", help);
                    return None;
                }
                (mac, false, c.span(m))
            }
            Err(e) => {
                let help = match e {
                    MacError::Format => {
                        "write six pairs of hex digits separated by ':', e.g. `52:54:00:00:1f:02`, or remove `mac` to get a derived one"
                    }
                    MacError::Multicast => {
                        "use a unicast address: the first byte must be even; QEMU's `52:54:00:..` prefix is a safe choice"
                    }
                };
                c.at(Code::BadMac, m, format!("MAC `{}` {e}", m.value), "invalid MAC", help);
                return None;
            }
        },
        None => {
            let (Some(lab), Some(vm)) = (lab, vm) else {
                return None;
            };
            (MacAddr::derived(lab, vm, index), true, c.span(&nic.network))
        }
    };
    if let Some((other, other_span, other_derived, _)) = seen.get(&mac) {
        let label_of = |d: bool, w: &str| {
            if d { format!("{w}: derived {mac}") } else { format!("{w}: {mac}") }
        };
        let labels = vec![
            LabeledSpan::at(*other_span, label_of(*other_derived, other)),
            LabeledSpan::at(span, label_of(derived, who)),
        ];
        let help = if in_group && derived {
            "derived MACs collided (it is rare but possible); a group member's MAC follows from its name, so rename the group (or set `mac:` on the other NIC when it is not a group's)"
        } else if derived || *other_derived {
            "derived MACs collided (it is rare but possible); set `mac:` explicitly on one of the two NICs"
        } else {
            "every NIC needs its own MAC; change one, or remove `mac:` to get a derived one"
        };
        c.push(Code::DuplicateMac, format!("{other} and {who} have the same MAC {mac}"), labels, help);
        return None;
    }
    seen.insert(mac, (who.to_owned(), span, derived, nic.network.value.clone()));
    Some((mac, derived))
}

/// The NIC's reserved address, if valid; records duplicates per network.
fn check_nic_ip(
    c: &mut Checker,
    nic: &NicSpec,
    who: &str,
    info: &NetInfo,
    seen: &mut BTreeMap<(String, Ipv4Addr), (String, SourceSpan)>,
) -> Option<Ipv4Addr> {
    let s = nic.ip.as_ref()?;
    let net = &nic.network.value;
    let ip = parse_ip(c, s, "address")?;
    if info.external {
        c.at(
            Code::IpOnExternal,
            s,
            format!("{who} reserves {ip} on external network `{net}`"),
            "cannot reserve on an external network",
            "topo never changes an external network, so it cannot add a DHCP reservation there; remove `ip:` or put the NIC on a lab network",
        );
        return None;
    }
    if info.broken {
        return None;
    }
    let Some(sub) = info.subnet else {
        c.at(
            Code::IpWithoutSubnet,
            s,
            format!("{who} reserves {ip} on network `{net}`, which has no subnet"),
            "no subnet on this network",
            format!("add `subnet:` to network `{net}`, or remove `ip:`"),
        );
        return None;
    };
    let problem = if !sub.contains(ip) {
        Some(format!("is outside {sub}"))
    } else if ip == sub.network() {
        Some(format!("is the network address of {sub}"))
    } else if ip == sub.broadcast() {
        Some(format!("is the broadcast address of {sub}"))
    } else if Some(ip) == info.gateway {
        Some("is the network's gateway (the host bridge)".to_owned())
    } else {
        None
    };
    if let Some(p) = problem {
        c.at(
            Code::BadReservation,
            s,
            format!("{who}: address {ip} {p}"),
            "not usable for this NIC",
            format!(
                "pick a free host address of {sub} between {} and {}, other than the gateway",
                first_host(&sub),
                last_host(&sub)
            ),
        );
        return None;
    }
    let span = c.span(s);
    if let Some((other, other_span)) = seen.get(&(net.clone(), ip)) {
        let labels =
            vec![LabeledSpan::at(*other_span, format!("{other} has it")), LabeledSpan::at(span, format!("{who} too"))];
        c.push(
            Code::DuplicateIp,
            format!("{other} and {who} both reserve {ip} on network `{net}`"),
            labels,
            "give each NIC its own address",
        );
        return None;
    }
    seen.insert((net.clone(), ip), (who.to_owned(), span));
    Some(ip)
}
