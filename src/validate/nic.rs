//! NIC rules: the network reference, MAC addresses (given or derived, unique in the lab),
//! DHCP reservations, whether the NIC can get an address at all, and DHCP capacity.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use miette::{LabeledSpan, SourceSpan};

use super::network::{NetInfo, first_host, last_host};
use super::{Checker, parse_ip};
use crate::diag::{Code, did_you_mean};
use crate::model::{self, LabName, MacAddr, MacError, NetworkKind, NetworkName, Reservation, Verify, VmName};
use crate::spec::{NicSpec, VerifySpec};

/// What the NIC checks remember across VMs.
#[derive(Default)]
pub(super) struct Nics {
    /// Every MAC so far: who has it, where, and whether it was derived.
    macs: BTreeMap<MacAddr, (String, SourceSpan, bool)>,
    /// Every reserved address so far, per network.
    ips: BTreeMap<(String, Ipv4Addr), (String, SourceSpan)>,
    /// DHCP host entries per network.
    reservations: BTreeMap<String, BTreeMap<MacAddr, Reservation>>,
    /// NICs that need a dynamic lease, by network.
    dynamic: BTreeMap<String, Vec<String>>,
}

impl Nics {
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
}

/// Checks one NIC; the model NIC when it is valid.
pub(super) fn check(c: &mut Checker, nic: &NicSpec, ctx: &Context, seen: &mut Nics) -> Option<model::Nic> {
    let Context { who, index, lab: lab_name, vm: name, nets } = *ctx;
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
    let mac = check_nic_mac(c, nic, who, lab_name, name, index, &mut seen.macs);
    let ip = check_nic_ip(c, nic, who, info, &mut seen.ips);
    if nic.ip.is_none() && !info.external {
        seen.dynamic.entry(nic.network.value.clone()).or_default().push(who.to_owned());
    }
    let verify = match nic.verify.as_ref().map(|v| v.value) {
        None | Some(VerifySpec::Arp) => Verify::Arp,
        Some(VerifySpec::None) => Verify::None,
    };
    if verify != Verify::None && !info.external && !info.broken {
        let reason = if info.subnet.is_none() {
            Some(format!("network `{}` has no subnet", nic.network.value))
        } else if !info.dhcp && ip.is_none() && nic.ip.is_none() {
            Some(format!("network `{}` has no DHCP and the NIC has no `ip`", nic.network.value))
        } else {
            None
        };
        if let Some(reason) = reason {
            let help = if info.subnet.is_none() {
                "give the network a `subnet:`, or set `verify: none` on this NIC".to_owned()
            } else {
                "add `ip:` to the NIC, enable `dhcp:` on the network, or set `verify: none`".to_owned()
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
    if let (Some(ip), Some(vm_name)) = (ip, name) {
        seen.reservations
            .entry(nic.network.value.clone())
            .or_default()
            .insert(mac.0, Reservation { mac: mac.0, ip, host: vm_name.to_string() });
    }
    Some(model::Nic { index, network: net, mac: mac.0, mac_derived: mac.1, ip, verify, span: c.span(&nic.network) })
}

/// A DHCP range smaller than the NICs that need a lease from it leaves some without one.
pub(super) fn check_dhcp_capacity(c: &mut Checker, nets: &BTreeMap<String, NetInfo>, seen: &Nics) {
    for (net, nics) in &seen.dynamic {
        let Some(info) = nets.get(net) else { continue };
        let size = info.dhcp_range.map(|r| u64::from(u32::from(r.end)) - u64::from(u32::from(r.start)) + 1);
        if let (Some(size), Some(span)) = (size, info.dhcp_span)
            && nics.len() as u64 > size
        {
            c.push(
                Code::DhcpTooSmall,
                format!(
                    "network `{net}` hands out {size} address{} by DHCP, but {} NICs need one ({})",
                    if size == 1 { "" } else { "es" },
                    nics.len(),
                    nics.join(", ")
                ),
                vec![LabeledSpan::at(span, format!("{size} address{}", if size == 1 { "" } else { "es" }))],
                "use a larger subnet or DHCP range, or give some NICs a fixed `ip:`",
            );
        }
    }
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// The NIC's MAC (given or derived) and whether it was derived; records duplicates.
fn check_nic_mac(
    c: &mut Checker,
    nic: &NicSpec,
    who: &str,
    lab: Option<&LabName>,
    vm: Option<&VmName>,
    index: usize,
    seen: &mut BTreeMap<MacAddr, (String, SourceSpan, bool)>,
) -> Option<(MacAddr, bool)> {
    let (mac, derived, span) = match &nic.mac {
        Some(m) => match m.value.trim().parse::<MacAddr>() {
            Ok(mac) => (mac, false, c.span(m)),
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
    if let Some((other, other_span, other_derived)) = seen.get(&mac) {
        let label_of = |d: bool, w: &str| {
            if d { format!("{w}: derived {mac}") } else { format!("{w}: {mac}") }
        };
        let labels = vec![
            LabeledSpan::at(*other_span, label_of(*other_derived, other)),
            LabeledSpan::at(span, label_of(derived, who)),
        ];
        let help = if derived || *other_derived {
            "derived MACs collided (it is rare but possible); set `mac:` explicitly on one of the two NICs"
        } else {
            "every NIC needs its own MAC; change one, or remove `mac:` to get a derived one"
        };
        c.push(Code::DuplicateMac, format!("{other} and {who} have the same MAC {mac}"), labels, help);
        return None;
    }
    seen.insert(mac, (who.to_owned(), span, derived));
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
