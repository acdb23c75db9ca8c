//! Network rules: names, external networks (reference only), subnets, gateways, DHCP
//! ranges, bridges, and the rules between networks (overlapping subnets, shared bridges).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use miette::{LabeledSpan, SourceSpan};

use super::lab::checked_name;
use super::{Checker, LeftOut, parse_ip};
use crate::diag::Code;
use crate::lab::ipv6::{SLAAC_PREFIX_LEN, default_gateway6};
use crate::lab::model::{
    self, BridgeName, DhcpRange, ManagedNetwork, NameError, NetworkKind, NetworkMode, NetworkName,
};
use crate::lab::spec::{DhcpRangeSpec, DhcpSpec, ModeSpec, NetworkSpec, Spanned, SpannedMap};

/// Smallest subnet (largest prefix length): a /30 holds a gateway and one guest.
pub const MAX_PREFIX_LEN: u8 = 30;

/// An IPv4 block no lab subnet may overlap, and the layer whose rule that is.
pub struct Reserved {
    pub net: Ipv4Network,
    /// What the block is, e.g. "loopback".
    pub what: &'static str,
    /// Why a lab cannot use it: the owning layer's rule.
    pub why: &'static str,
}

const fn block(a: u8, b: u8, c: u8, d: u8, len: u8, what: &'static str, why: &'static str) -> Reserved {
    // `Ipv4Network::new` is not const; `new_checked` is, and these literals are valid.
    let net = match Ipv4Network::new_checked(std::net::Ipv4Addr::new(a, b, c, d), len) {
        Some(n) => n,
        None => panic!("invalid reserved block"),
    };
    Reserved { net, what, why }
}

/// Blocks a lab subnet may not overlap. Linux drops packets whose source lies in 127/8
/// (unless `route_localnet`) or 224/4, or is 255.255.255.255 or 0.0.0.0, as "martian"
/// (net/ipv4/route.c `ip_route_input_slow`; include/linux/in.h), so the host could not talk
/// to guests there; 0/8 is "this network" (RFC 1122 section 3.2.1.3, RFC 6890: a source
/// only while a host boots; Linux before 5.3 dropped all of it); 169.254/16 is for
/// self-assigned addresses only (RFC 3927: never handed out by DHCP); 240/4 is reserved
/// (RFC 1112 section 4, RFC 6890) and ends in the limited broadcast address.
pub const RESERVED: [Reserved; 5] = [
    block(
        0,
        0,
        0,
        0,
        8,
        "\"this network\"",
        "0.0.0.0/8 is only a source address while a host boots (RFC 1122 3.2.1.3); Linux drops 0.0.0.0 (before 5.3 all of 0/8) as martian (net/ipv4/route.c)",
    ),
    block(
        127,
        0,
        0,
        0,
        8,
        "loopback",
        "the Linux kernel drops packets from 127.0.0.0/8 on any interface but `lo` as martian (net/ipv4/route.c)",
    ),
    block(
        169,
        254,
        0,
        0,
        16,
        "link-local",
        "169.254.0.0/16 is for self-assigned link-local addresses, never handed out by DHCP (RFC 3927)",
    ),
    block(
        224,
        0,
        0,
        0,
        4,
        "multicast",
        "the Linux kernel drops packets from multicast sources as martian (net/ipv4/route.c)",
    ),
    block(
        240,
        0,
        0,
        0,
        4,
        "reserved, with the limited broadcast address",
        "240.0.0.0/4 is reserved (RFC 1112, RFC 6890) and the kernel drops packets from 255.255.255.255 as martian (net/ipv4/route.c)",
    ),
];

/// An IPv6 block no lab `subnet6` may overlap, and the rule that keeps it out.
pub struct Reserved6 {
    pub net: Ipv6Network,
    /// What the block is, e.g. "link-local".
    pub what: &'static str,
    /// Why a lab cannot use it: the owning layer's rule.
    pub why: &'static str,
}

/// Blocks a lab `subnet6` may not overlap (RFC 4291 section 2.4, the address type table):
///
/// - `::/8`: reserved by the IETF; it holds the unspecified `::` and loopback `::1`
///   (RFC 4291 2.5.2, 2.5.3), the IPv4-mapped `::ffff:0:0/96` (2.5.5.2: an IPv4 node's
///   address, which the kernel's IPv6 stack hands to IPv4) and the deprecated
///   IPv4-compatible addresses (2.5.5.1);
/// - `fe80::/10` link-local: every interface already has one, the kernel makes it itself
///   (RFC 4291 2.5.6, RFC 4862 5.3) and routes nothing from it; dnsmasq serves no range there;
/// - `fec0::/10` site-local: deprecated (RFC 3879), no longer special to Linux nor to be
///   configured;
/// - `ff00::/8` multicast: never a source address (RFC 4291 2.7).
///
/// Allowed, by decision: the documentation prefix `2001:db8::/32` (RFC 3849). It is global
/// unicast to the kernel, libvirt and dnsmasq alike; RFC 3849 only asks that it not be routed
/// on the Internet, and a lab keeps it inside (isolated and routed networks never leave the
/// host unless a router is told, NAT66 rewrites its sources). ULAs (`fd00::/8`, RFC 4193)
/// are what docs/addressing.md recommends.
pub const RESERVED6: [Reserved6; 4] = [
    Reserved6 {
        net: block6(0, 8),
        what: "reserved: unspecified, loopback, IPv4-mapped",
        why: "::/8 is reserved (RFC 4291 2.4) and holds ::, ::1 and the IPv4-mapped ::ffff:0:0/96",
    },
    Reserved6 {
        net: block6(0xfe80, 10),
        what: "link-local",
        why: "every interface makes its own fe80::/10 address (RFC 4291 2.5.6, RFC 4862 5.3); it is never routed",
    },
    Reserved6 {
        net: block6(0xfec0, 10),
        what: "site-local, deprecated",
        why: "site-local addresses are deprecated (RFC 3879)",
    },
    Reserved6 {
        net: block6(0xff00, 8),
        what: "multicast",
        why: "a multicast address is never a source (RFC 4291 2.7)",
    },
];

/// The block `first16::/len` (the first 16 bits given, the rest zero).
const fn block6(first16: u16, len: u8) -> Ipv6Network {
    match Ipv6Network::new_checked(Ipv6Addr::new(first16, 0, 0, 0, 0, 0, 0, 0), len) {
        Some(n) => n,
        None => panic!("invalid reserved block"),
    }
}

/// The networks as the VM and NIC checks see them, and the model of the valid ones.
pub(super) struct Networks {
    /// Every declared network by its key as written (also the invalid ones, so NICs that
    /// name them are not reported as unknown).
    pub(super) info: BTreeMap<String, NetInfo>,
    pub(super) model: BTreeMap<NetworkName, model::Network>,
}

/// Checks every network and the rules between them.
pub(super) fn check_all(c: &mut Checker, networks: &SpannedMap<NetworkSpec>, prefix: &str) -> Networks {
    let mut nets: BTreeMap<String, NetInfo> = BTreeMap::new();
    let mut model_nets = BTreeMap::new();
    let mut managed_subnets: Vec<(&Spanned<String>, &Spanned<String>, Ipv4Network)> = Vec::new();
    let mut managed_subnets6: Vec<(&Spanned<String>, &Spanned<String>, Ipv6Network)> = Vec::new();
    let mut bridges: BTreeMap<String, &Spanned<String>> = BTreeMap::new();
    for (key, net) in networks.iter() {
        let name = checked_name(
            c,
            key,
            Code::NetworkName,
            "network name",
            "lowercase letters, digits, '-' and '_'",
            model::MAX_RESOURCE_NAME,
            NetworkName::new,
        );
        let external = net.external.as_ref().is_some_and(|e| e.value);
        let mut declared_subnet = None;
        let (info, kind) = if external {
            check_external(c, net);
            declared_subnet = net.subnet.as_ref().and_then(|s| parse_subnet(c, s));
            (NetInfo::external(), Some(NetworkKind::External))
        } else {
            // Every part that is valid is used by the checks that follow (overlaps, NICs,
            // DHCP capacity), even when another part of this network has a problem: all
            // problems are found in one run, not in rounds.
            let (ok, partial) = check_managed(c, key, net);
            if let (Some(s), Some(sub)) = (&net.subnet, partial.subnet) {
                managed_subnets.push((key, s, sub));
            }
            if let (Some(s), Some(sub)) = (&net.subnet6, partial.network.subnet6) {
                managed_subnets6.push((key, s, sub));
            }
            if let Some(b) = &net.bridge {
                check_bridge_unique(c, b, &mut bridges);
            }
            let info = NetInfo::managed(c, key, net, &partial);
            (info, ok.then_some(NetworkKind::Managed(partial.network)))
        };
        nets.insert(key.value.clone(), info);
        if let (Some(name), Some(kind)) = (name, kind) {
            let libvirt_name = match kind {
                NetworkKind::External => name.to_string(),
                NetworkKind::Managed(_) => format!("{prefix}{name}"),
            };
            // A prefix libvirt would refuse is reported by `lab::check`: no model then.
            let Ok(libvirt_name) = model::LibvirtName::new(&libvirt_name) else { continue };
            let spans = match kind {
                NetworkKind::External => Default::default(),
                NetworkKind::Managed(_) => [model::HostName::default_host()].into(),
            };
            model_nets.insert(
                name.clone(),
                model::Network {
                    name,
                    libvirt_name,
                    kind,
                    declared_subnet,
                    // Placed on its hosts by `hosts::place_networks`, once the VMs are known.
                    host: model::HostName::default_host(),
                    instance_host: model::HostName::default_host(),
                    spans,
                    span: c.span(key),
                },
            );
        }
    }
    check_overlaps(c, &managed_subnets);
    check_overlaps6(c, &managed_subnets6);
    check_libvirt_names(c, &model_nets);
    Networks { info: nets, model: model_nets }
}

/// Every lab network needs its own bridge: records `b` in `bridges`, or reports its second use.
fn check_bridge_unique<'s>(
    c: &mut Checker,
    b: &'s Spanned<String>,
    bridges: &mut BTreeMap<String, &'s Spanned<String>>,
) {
    if let Some(prev) = bridges.get(&b.value) {
        let labels = vec![LabeledSpan::at(c.span(prev), "first use"), LabeledSpan::at(c.span(b), "used again")];
        c.push(
            Code::DuplicateBridge,
            format!("bridge `{}` is given to two networks", b.value),
            labels,
            "every lab network needs its own bridge; rename one or remove `bridge:` to let libvirt pick",
        );
    } else {
        bridges.insert(b.value.clone(), b);
    }
}

/// Lab networks may not have overlapping subnets: `subnets` are (key, `subnet:`, subnet).
fn check_overlaps(c: &mut Checker, subnets: &[(&Spanned<String>, &Spanned<String>, Ipv4Network)]) {
    for (i, (ka, sa, a)) in subnets.iter().enumerate() {
        for (kb, sb, b) in &subnets[i + 1..] {
            if a.contains(b.network()) || b.contains(a.network()) {
                let labels = vec![
                    LabeledSpan::at(c.span(sa), format!("`{}` uses {a}", ka.value)),
                    LabeledSpan::at(c.span(sb), format!("`{}` uses {b}", kb.value)),
                ];
                c.push(
                    Code::SubnetOverlap,
                    format!("networks `{}` and `{}` have overlapping subnets", ka.value, kb.value),
                    labels,
                    "give each lab network its own, non-overlapping subnet",
                );
            }
        }
    }
}

/// Lab networks may not have overlapping IPv6 prefixes either (the host routes each /64 to
/// one bridge): `subnets` are (key, `subnet6:`, prefix). Every prefix is a /64, so two
/// overlap exactly when they are equal; the test stays general.
fn check_overlaps6(c: &mut Checker, subnets: &[(&Spanned<String>, &Spanned<String>, Ipv6Network)]) {
    for (i, (ka, sa, a)) in subnets.iter().enumerate() {
        for (kb, sb, b) in &subnets[i + 1..] {
            if a.contains(b.network()) || b.contains(a.network()) {
                let labels = vec![
                    LabeledSpan::at(c.span(sa), format!("`{}` uses {a}", ka.value)),
                    LabeledSpan::at(c.span(sb), format!("`{}` uses {b}", kb.value)),
                ];
                c.push(
                    Code::SubnetOverlap,
                    format!("networks `{}` and `{}` have overlapping IPv6 prefixes", ka.value, kb.value),
                    labels,
                    "give each lab network its own /64, e.g. `fd00:10::/64` and `fd00:11::/64`",
                );
            }
        }
    }
}

/// Two networks may not become one libvirt network: an external network is looked up by
/// the name as written, a lab network is created as prefix + name (libvirt network names
/// are unique per host, src/conf/virnetworkobj.c).
fn check_libvirt_names(c: &mut Checker, model_nets: &BTreeMap<NetworkName, model::Network>) {
    let mut libvirt_names: BTreeMap<&str, &model::Network> = BTreeMap::new();
    for net in model_nets.values() {
        if let Some(other) = libvirt_names.get(net.libvirt_name.as_str()) {
            let (ext, own) = if matches!(other.kind, NetworkKind::External) { (*other, net) } else { (net, *other) };
            c.push(
                Code::LibvirtNameClash,
                format!("networks `{}` and `{}` are both `{}` in libvirt", other.name, net.name, net.libvirt_name),
                vec![
                    LabeledSpan::at(ext.span, format!("external: `{}` on the host", ext.libvirt_name)),
                    LabeledSpan::at(own.span, format!("lab network: prefix + `{}`", own.name)),
                ],
                "rename the lab network or change `prefix:`, so that topo does not create the external network's name",
            );
        } else {
            libvirt_names.insert(net.libvirt_name.as_str(), net);
        }
    }
}

/// What a network looks like to the NIC checks.
pub(super) struct NetInfo {
    pub(super) external: bool,
    pub(super) subnet: Option<Ipv4Network>,
    pub(super) gateway: Option<Ipv4Addr>,
    /// The network's IPv6 prefix (`subnet6`): its NICs have a SLAAC address to verify.
    pub(super) subnet6: Option<Ipv6Network>,
    /// The bridge's IPv6 address (`gateway6`, or the prefix's `::1`).
    pub(super) gateway6: Option<Ipv6Addr>,
    pub(super) dhcp: bool,
    /// The DHCP range (lab networks), and where to point when it is too small.
    pub(super) dhcp_range: Option<DhcpRange>,
    pub(super) dhcp_span: Option<SourceSpan>,
    /// Set when the network's own definition has problems: skip NIC checks that depend on it.
    pub(super) broken: bool,
}

impl NetInfo {
    /// An external network: topo knows nothing of its addresses, so the NIC checks skip it.
    fn external() -> Self {
        NetInfo {
            external: true,
            subnet: None,
            gateway: None,
            subnet6: None,
            gateway6: None,
            dhcp: true,
            dhcp_range: None,
            dhcp_span: None,
            broken: false,
        }
    }

    /// A lab network as far as [`check_managed`] found it valid.
    fn managed(c: &Checker, key: &Spanned<String>, net: &NetworkSpec, partial: &Partial) -> Self {
        // DHCP is meant to be on when the file says so (or leaves it to the default),
        // even if its range has a problem of its own.
        let dhcp_meant = partial.dhcp.is_some()
            || (partial.subnet.is_some() && net.dhcp.as_ref().is_none_or(|d| d.value != DhcpSpec::Enabled(false)));
        NetInfo {
            external: false,
            subnet: partial.subnet,
            gateway: partial.gateway,
            subnet6: partial.network.subnet6,
            gateway6: partial.network.gateway6,
            dhcp: dhcp_meant,
            dhcp_range: partial.dhcp,
            dhcp_span: Some(net.dhcp.as_ref().map_or_else(|| c.span(key), |d| c.span(d))),
            // Without a usable subnet the NIC checks have nothing to check against (and
            // the network's own problem already says what to add).
            broken: partial.subnet.is_none() && (net.subnet.is_some() || partial.subnet_required),
        }
    }
}

pub(super) fn first_host(n: &Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + 1)
}
pub(super) fn last_host(n: &Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.broadcast()) - 1)
}
fn is_host(n: &Ipv4Network, ip: Ipv4Addr) -> bool {
    n.contains(ip) && ip != n.network() && ip != n.broadcast()
}

/// The DHCP range `dhcp: true` gives: every host address of the subnet except the gateway.
/// When the gateway is the first (default) or last host address, the range is the rest;
/// when it sits inside, the range is the larger of the two sides (the upper side on a tie),
/// because a dnsmasq range is one contiguous block. Needs a subnet of /30 or larger.
pub fn default_dhcp_range(subnet: &Ipv4Network, gateway: Ipv4Addr) -> DhcpRange {
    let first = u32::from(first_host(subnet));
    let last = u32::from(last_host(subnet));
    let g = u32::from(gateway);
    let (start, end) = if g < first || g > last {
        (first, last)
    } else if g == first {
        (first + 1, last)
    } else if g == last {
        (first, last - 1)
    } else if g - first > last - g {
        (first, g - 1)
    } else {
        (g + 1, last)
    };
    DhcpRange { start: Ipv4Addr::from(start), end: Ipv4Addr::from(end) }
}

fn parse_subnet(c: &mut Checker, s: &Spanned<String>) -> Option<Ipv4Network> {
    parse_cidr(c, s, "subnet", MAX_PREFIX_LEN, "a gateway and a guest")
}

/// An IPv4 prefix in CIDR form (`what`: the key it is written under): an address and a
/// length, the host bits zero, at most `/max_len` (`room`: what a smaller one leaves no
/// room for), outside the blocks that cannot be a lab's ([`RESERVED`]).
pub(super) fn parse_cidr(
    c: &mut Checker,
    s: &Spanned<String>,
    what: &str,
    max_len: u8,
    room: &str,
) -> Option<Ipv4Network> {
    let text = s.value.trim();
    let bad = |c: &mut Checker| {
        c.at(
            Code::BadSubnet,
            s,
            format!("`{text}` is not an IPv4 subnet"),
            "not address/prefix-length",
            format!("write the {what} in CIDR form, e.g. `192.168.152.0/24`"),
        );
        None
    };
    let Some((addr, len)) = text.split_once('/') else {
        return bad(c);
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
        return bad(c);
    };
    let Ok(net) = Ipv4Network::new(addr, len) else {
        return bad(c);
    };
    if net.network() != addr {
        c.at(
            Code::SubnetHostBits,
            s,
            format!("{what} `{text}` has host bits set"),
            "host bits set",
            format!("the {what} is written with its network address: `{}/{}`", net.network(), len),
        );
        return None;
    }
    if len > max_len {
        c.at(
            Code::SubnetTooSmall,
            s,
            format!("{what} `{text}` is too small"),
            format!("/{len} leaves no room for {room}"),
            format!("use a /{max_len} or larger {what}, e.g. `{}/24`", net.network()),
        );
        return None;
    }
    if let Some(r) = RESERVED.iter().find(|r| r.net.overlaps(net)) {
        c.at(
            Code::ReservedSubnet,
            s,
            format!("{what} `{text}` overlaps {} ({}), which cannot be a lab subnet", r.net, r.what),
            format!("overlaps {}", r.net),
            format!("{}; use a private subnet such as `192.168.152.0/24` or `10.0.0.0/24`", r.why),
        );
        return None;
    }
    Some(net)
}

/// `subnet6:` in CIDR form: a /64 ([`SLAAC_PREFIX_LEN`]) with its host bits zero, outside
/// [`RESERVED6`].
fn parse_subnet6(c: &mut Checker, s: &Spanned<String>) -> Option<Ipv6Network> {
    let text = s.value.trim();
    let parsed = text
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv6Addr>().ok()?, l.parse::<u8>().ok()?)))
        .and_then(|(a, l)| Some((a, Ipv6Network::new(a, l).ok()?)));
    let Some((addr, net)) = parsed else {
        c.at(
            Code::BadSubnet,
            s,
            format!("`{text}` is not an IPv6 prefix"),
            "not address/prefix-length",
            "write the prefix in CIDR form, e.g. `fd00:10::/64`",
        );
        return None;
    };
    if net.prefix() != SLAAC_PREFIX_LEN {
        c.at(
            Code::Subnet6Prefix,
            s,
            format!("subnet6 `{text}` is a /{}, not a /64", net.prefix()),
            "must be a /64",
            "SLAAC forms each guest's address from a /64 and a 64-bit interface identifier (RFC 4862 5.5.3, RFC 4291 \
             2.5.1), and dnsmasq refuses other lengths for router advertisements (\"prefix length must be exactly 64 \
             for RA subnets\"); write a /64, e.g. `fd00:10::/64`",
        );
        return None;
    }
    if net.network() != addr {
        c.at(
            Code::SubnetHostBits,
            s,
            format!("subnet6 `{text}` has host bits set"),
            "host bits set",
            format!("the prefix is written with its network address: `{}/64`", net.network()),
        );
        return None;
    }
    if let Some(r) = RESERVED6.iter().find(|r| r.net.contains(net.network()) || net.contains(r.net.network())) {
        c.at(
            Code::ReservedSubnet6,
            s,
            format!("subnet6 `{text}` is inside {} ({}), which cannot be a lab prefix", r.net, r.what),
            format!("inside {}", r.net),
            format!("{}; use a unique local prefix (RFC 4193) such as `fd00:10::/64`", r.why),
        );
        return None;
    }
    Some(net)
}

/// `gateway6:`: an address inside `subnet6`, not its subnet-router anycast address (the
/// prefix with a zero interface identifier, RFC 4291 2.6.1, which every router on the link
/// answers); the prefix's `::1` when not given.
fn check_gateway6(
    c: &mut Checker,
    net: &NetworkSpec,
    subnet6: Option<Ipv6Network>,
) -> Result<Option<Ipv6Addr>, LeftOut> {
    match (&net.gateway6, subnet6) {
        (Some(g), Some(sub)) => {
            let Ok(ip) = g.value.trim().parse::<Ipv6Addr>() else {
                c.at(
                    Code::BadAddress,
                    g,
                    format!("`{}` is not an IPv6 address", g.value),
                    "not a valid gateway6",
                    format!("write an IPv6 address without a prefix length, e.g. `{}`", default_gateway6(sub)),
                );
                return Err(LeftOut);
            };
            let (label, message) = if !sub.contains(ip) {
                ("outside the prefix", format!("gateway6 {ip} is outside subnet6 {sub}"))
            } else if ip == sub.network() {
                (
                    "the subnet-router anycast address",
                    format!("gateway6 {ip} is the subnet-router anycast address of {sub} (RFC 4291 2.6.1)"),
                )
            } else {
                return Ok(Some(ip));
            };
            c.at(
                Code::Gateway6,
                g,
                message,
                label,
                format!("pick an address inside {sub}, e.g. {} (the default)", default_gateway6(sub)),
            );
            Err(LeftOut)
        }
        (Some(g), None) => {
            if net.subnet6.is_none() {
                c.at(
                    Code::Gateway6,
                    g,
                    "`gateway6` is given without a `subnet6`",
                    "no prefix to put it in",
                    "add `subnet6:` to the network, e.g. `subnet6: fd00:10::/64`, or remove `gateway6`",
                );
            }
            Err(LeftOut)
        }
        (None, Some(sub)) => Ok(Some(default_gateway6(sub))),
        (None, None) => Ok(None),
    }
}

/// External networks may say `external: true` and nothing else, except `subnet:`: the
/// subnet of a LAN libvirt knows no address of, for verification only.
fn check_external(c: &mut Checker, net: &NetworkSpec) {
    let NetworkSpec {
        external: _,
        mode,
        subnet: _,
        gateway,
        subnet6,
        gateway6,
        dhcp,
        bridge,
        autostart,
        stp,
        dhcp_ping,
        mtu,
        host,
    } = net;
    let mut given: Vec<(&str, SourceSpan)> = Vec::new();
    if let Some(v) = subnet6 {
        given.push(("subnet6", c.span(v)));
    }
    if let Some(v) = gateway6 {
        given.push(("gateway6", c.span(v)));
    }
    if let Some(v) = mode {
        given.push(("mode", c.span(v)));
    }
    if let Some(v) = gateway {
        given.push(("gateway", c.span(v)));
    }
    if let Some(v) = dhcp {
        given.push(("dhcp", c.span(v)));
    }
    if let Some(v) = bridge {
        given.push(("bridge", c.span(v)));
    }
    if let Some(v) = autostart {
        given.push(("autostart", c.span(v)));
    }
    if let Some(v) = stp {
        given.push(("stp", c.span(v)));
    }
    if let Some(v) = dhcp_ping {
        given.push(("dhcp_ping", c.span(v)));
    }
    if let Some(v) = mtu {
        given.push(("mtu", c.span(v)));
    }
    if let Some(v) = host {
        given.push(("host", c.span(v)));
    }
    for (key, span) in given {
        c.push(
            Code::ExternalSettings,
            format!("external network sets `{key}`"),
            vec![LabeledSpan::at(span, "not allowed on an external network")],
            format!(
                "remove `{key}`: topo uses an external network as it is and never changes it; \
                 to let the lab own the network, remove `external: true`"
            ),
        );
    }
}

/// What [`check_managed`] found valid: the network as far as it is valid (each invalid part
/// left out), for the checks that use it even when the network has problems.
struct Partial {
    network: ManagedNetwork,
    subnet: Option<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
    dhcp: Option<DhcpRange>,
    /// The mode needs a subnet and none is given.
    subnet_required: bool,
}

/// The part `r` checked, or `None` (and `ok` cleared) when it is left out.
fn keep<T>(ok: &mut bool, r: Result<Option<T>, LeftOut>) -> Option<T> {
    r.unwrap_or_else(|LeftOut| {
        *ok = false;
        None
    })
}

/// Checks a lab network. `ok` is false when it recorded a problem; the partial network is
/// what was valid.
fn check_managed(c: &mut Checker, key: &Spanned<String>, net: &NetworkSpec) -> (bool, Partial) {
    let mut ok = true;
    let mode = match net.mode.as_ref().map(|m| m.value) {
        None | Some(ModeSpec::Nat) => NetworkMode::Nat,
        Some(ModeSpec::Routed) => NetworkMode::Routed,
        Some(ModeSpec::Isolated) => NetworkMode::Isolated,
        Some(ModeSpec::Open) => NetworkMode::Open,
    };
    // A routed network may be IPv6 only; NAT needs an IPv4 subnet (what it masquerades
    // first; NAT66 comes beside it, `<nat ipv6='yes'/>`).
    let subnet_required =
        net.subnet.is_none() && (mode == NetworkMode::Nat || (mode == NetworkMode::Routed && net.subnet6.is_none()));
    let subnet = keep(&mut ok, check_subnet(c, key, net, mode));
    let gateway = keep(&mut ok, check_gateway(c, net, subnet));
    let subnet6 = keep(&mut ok, net.subnet6.as_ref().map(|s| parse_subnet6(c, s).ok_or(LeftOut)).transpose());
    let gateway6 = keep(&mut ok, check_gateway6(c, net, subnet6));
    let dhcp = keep(&mut ok, check_dhcp(c, net, subnet, gateway));
    let dhcp = keep(&mut ok, check_dhcp_in_one_block(c, key, net, subnet, dhcp));
    let bridge = keep(&mut ok, check_bridge(c, net));
    let mtu = keep(&mut ok, check_mtu(c, net));
    let mtu = keep(&mut ok, check_mtu6(c, net, subnet6, mtu));
    let network = ManagedNetwork {
        mode,
        subnet,
        gateway,
        subnet6,
        gateway6,
        dhcp,
        bridge,
        autostart: net.autostart.as_ref().is_none_or(|a| a.value),
        stp: net.stp.as_ref().is_some_and(|a| a.value),
        dhcp_ping: net.dhcp_ping.as_ref().is_some_and(|a| a.value),
        mtu,
        reservations: BTreeMap::new(),
    };
    (ok, Partial { network, subnet, gateway, dhcp, subnet_required })
}

/// `subnet:`: a valid lab subnet ([`parse_subnet`]); required in the nat (default) and
/// routed modes.
fn check_subnet(
    c: &mut Checker,
    key: &Spanned<String>,
    net: &NetworkSpec,
    mode: NetworkMode,
) -> Result<Option<Ipv4Network>, LeftOut> {
    match &net.subnet {
        Some(s) => parse_subnet(c, s).map(Some).ok_or(LeftOut),
        None if mode == NetworkMode::Routed && net.subnet6.is_some() => Ok(None),
        // NAT with only `subnet6`: topo's nat masquerades IPv4 and adds NAT66 beside it
        // (`<nat ipv6='yes'/>` rides on the IPv4 NAT), so the fix differs.
        None if mode == NetworkMode::Nat && net.subnet6.is_some() => {
            let how = if net.mode.is_none() { " (the default mode)" } else { "" };
            c.at(
                Code::SubnetRequired,
                key,
                format!("network `{}` is nat{how} with only an IPv6 `subnet6`: nat needs an IPv4 `subnet`", key.value),
                "nat network without an IPv4 `subnet`".to_string(),
                "add an IPv4 `subnet:` beside `subnet6` (NAT for IPv4, NAT66 beside it), or use `mode: routed` \
                 (IPv6 routed, no NAT) or `mode: isolated` for an IPv6-only network",
            );
            Err(LeftOut)
        }
        None if matches!(mode, NetworkMode::Nat | NetworkMode::Routed) => {
            let how = if net.mode.is_none() { " (the default mode)" } else { "" };
            c.at(
                Code::SubnetRequired,
                key,
                format!("network `{}` is {mode}{how} but has no subnet", key.value),
                format!("{mode} network without `subnet`"),
                "add `subnet:`, e.g. `subnet: 192.168.152.0/24`, or use `mode: isolated` for a network without addresses",
            );
            Err(LeftOut)
        }
        None => Ok(None),
    }
}

/// `gateway:`: a host address of the subnet (not its network or broadcast address); the
/// first host address when not given.
fn check_gateway(c: &mut Checker, net: &NetworkSpec, subnet: Option<Ipv4Network>) -> Result<Option<Ipv4Addr>, LeftOut> {
    match (&net.gateway, subnet) {
        (Some(g), Some(sub)) => match parse_ip(c, g, "gateway") {
            Some(ip) if !sub.contains(ip) => {
                c.at(
                    Code::Gateway,
                    g,
                    format!("gateway {ip} is outside subnet {sub}"),
                    "outside the subnet",
                    format!("pick an address inside {sub}, e.g. {} (the default)", first_host(&sub)),
                );
                Err(LeftOut)
            }
            Some(ip) if ip == sub.network() || ip == sub.broadcast() => {
                let which = if ip == sub.network() { "network" } else { "broadcast" };
                c.at(
                    Code::Gateway,
                    g,
                    format!("gateway {ip} is the {which} address of {sub}"),
                    format!("{which} address"),
                    format!("pick a host address, e.g. {} (the default)", first_host(&sub)),
                );
                Err(LeftOut)
            }
            Some(ip) => Ok(Some(ip)),
            None => Err(LeftOut),
        },
        (Some(g), None) => {
            if net.subnet.is_none() {
                c.at(
                    Code::Gateway,
                    g,
                    "`gateway` is given without a `subnet`",
                    "no subnet to put it in",
                    "add `subnet:` to the network, or remove `gateway`",
                );
            }
            Err(LeftOut)
        }
        (None, Some(sub)) => Ok(Some(first_host(&sub))),
        (None, None) => Ok(None),
    }
}

/// `dhcp:`: on by default with a subnet ([`default_dhcp_range`]), off with `false`, or an
/// explicit range ([`check_dhcp_range`]); needs a subnet and a gateway.
fn check_dhcp(
    c: &mut Checker,
    net: &NetworkSpec,
    subnet: Option<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
) -> Result<Option<DhcpRange>, LeftOut> {
    match (&net.dhcp, subnet, gateway) {
        (None, Some(sub), Some(g)) => Ok(Some(default_dhcp_range(&sub, g))),
        (None, _, _) => Ok(None),
        (Some(d), _, _) if d.value == DhcpSpec::Enabled(false) => Ok(None),
        (Some(d), None, _) => {
            if net.subnet.is_none() {
                c.at(
                    Code::Dhcp,
                    d,
                    "`dhcp` is set on a network without a `subnet`",
                    "no subnet to hand out",
                    "add `subnet:` to the network, or remove `dhcp`",
                );
            }
            Err(LeftOut)
        }
        (Some(_), Some(_), None) => Err(LeftOut),
        (Some(d), Some(sub), Some(g)) => match &d.value {
            DhcpSpec::Enabled(_) => Ok(Some(default_dhcp_range(&sub, g))),
            DhcpSpec::Range(r) => check_dhcp_range(c, d, r, sub, g).map(Some),
        },
    }
}

/// `dhcp: {start, end}`: two host addresses of the subnet, in order, around the gateway
/// (dnsmasq hands out one contiguous block, and the gateway is the host's own address).
fn check_dhcp_range(
    c: &mut Checker,
    d: &Spanned<DhcpSpec>,
    r: &DhcpRangeSpec,
    sub: Ipv4Network,
    g: Ipv4Addr,
) -> Result<DhcpRange, LeftOut> {
    let start = r.start.trim().parse::<Ipv4Addr>();
    let end = r.end.trim().parse::<Ipv4Addr>();
    let label = |t: &str| vec![LabeledSpan::at(c.span(d), t.to_owned())];
    let (Ok(start), Ok(end)) = (start, end) else {
        let labels = label("not two IPv4 addresses");
        c.push(
            Code::Dhcp,
            format!("DHCP range `{}` .. `{}` is not two IPv4 addresses", r.start, r.end),
            labels,
            format!("write e.g. `dhcp: {{start: {}, end: {}}}`", first_host(&sub), last_host(&sub)),
        );
        return Err(LeftOut);
    };
    let suggest = default_dhcp_range(&sub, g);
    let suggest = format!("e.g. `{{start: {}, end: {}}}`", suggest.start, suggest.end);
    let (labels, message, help) = if !is_host(&sub, start) || !is_host(&sub, end) {
        (
            label("outside the subnet's host addresses"),
            format!("DHCP range {start} .. {end} is not inside the host addresses of {sub}"),
            format!("keep both ends between {} and {}, {suggest}", first_host(&sub), last_host(&sub)),
        )
    } else if start > end {
        (
            label("start after end"),
            format!("DHCP range starts at {start}, after its end {end}"),
            format!("swap the two: `{{start: {end}, end: {start}}}`"),
        )
    } else if start <= g && g <= end {
        (
            label("contains the gateway"),
            format!("DHCP range {start} .. {end} contains the gateway {g}"),
            format!("leave the gateway out of the range, {suggest}"),
        )
    } else {
        return Ok(DhcpRange { start, end });
    };
    c.push(Code::Dhcp, message, labels, help);
    Err(LeftOut)
}

/// libvirt's own rule for a DHCP range (src/util/virsocketaddr.c, virSocketAddrGetRange):
/// start and end must share their first two bytes, else "range ... is too large (> 65535)"
/// at `define network`. A default range of a subnet larger than /16 breaks it too.
fn check_dhcp_in_one_block(
    c: &mut Checker,
    key: &Spanned<String>,
    net: &NetworkSpec,
    subnet: Option<Ipv4Network>,
    dhcp: Option<DhcpRange>,
) -> Result<Option<DhcpRange>, LeftOut> {
    let Some(r) = dhcp.filter(|r| r.start.octets()[..2] != r.end.octets()[..2]) else {
        return Ok(dhcp);
    };
    let last = subnet.map_or(u32::MAX, |sub| u32::from(last_host(&sub)));
    let block = Ipv4Addr::from((u32::from(r.start) | 0xffff).min(last));
    let (label, help) = match &net.dhcp {
        Some(d) if matches!(d.value, DhcpSpec::Range(_)) => {
            (c.span(d), format!("keep the range inside one /16, e.g. `{{start: {}, end: {block}}}`", r.start))
        }
        _ => (
            net.dhcp.as_ref().map_or_else(|| net.subnet.as_ref().map_or(c.span(key), |s| c.span(s)), |d| c.span(d)),
            format!(
                "use a /16 or smaller subnet, or give a range inside one /16, e.g. `dhcp: {{start: {}, end: {block}}}`",
                r.start
            ),
        ),
    };
    c.push(
        Code::DhcpRangeTooLarge,
        format!(
            "DHCP range {} .. {} crosses a /16 boundary, which libvirt refuses (\"range is too large (> 65535)\")",
            r.start, r.end
        ),
        vec![LabeledSpan::at(label, "start and end differ in their first two bytes")],
        help,
    );
    Err(LeftOut)
}

/// `bridge:`: a Linux interface name (at most IFNAMSIZ - 1 bytes, not `.` or `..`, the
/// kernel's rules); libvirt picks one when not given.
fn check_bridge(c: &mut Checker, net: &NetworkSpec) -> Result<Option<BridgeName>, LeftOut> {
    let Some(b) = &net.bridge else {
        return Ok(None);
    };
    match BridgeName::new(&b.value) {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            let help = match e {
                NameError::TooLongBytes { .. } | NameError::TooLong { .. } => format!(
                    "Linux limits interface names to {} bytes (IFNAMSIZ); use a shorter name such as `virbr2`",
                    model::MAX_BRIDGE_NAME
                ),
                NameError::Reserved => {
                    "the kernel refuses `.` and `..` as interface names; use a name such as `virbr2`".to_owned()
                }
                _ => "a bridge name uses letters, digits, '-', '_' and '.', e.g. `virbr2`".to_owned(),
            };
            c.at(Code::Bridge, b, format!("bridge name `{}` {e}", b.value), "invalid bridge name", help);
            Err(LeftOut)
        }
    }
}

/// IPv6 needs a link MTU of at least 1280 bytes (RFC 8200 section 5); the Linux kernel
/// turns IPv6 off on a device whose MTU is below it (net/ipv6/addrconf.c, `IPV6_MIN_MTU`),
/// so a network with `subnet6` may not have a smaller `mtu`.
fn check_mtu6(
    c: &mut Checker,
    net: &NetworkSpec,
    subnet6: Option<Ipv6Network>,
    mtu: Option<u32>,
) -> Result<Option<u32>, LeftOut> {
    match (&net.mtu, subnet6, mtu) {
        (Some(m), Some(_), Some(n)) if n < 1280 => {
            c.at(
                Code::Mtu,
                m,
                format!("mtu {n} is below 1280, the least IPv6 takes, on a network with `subnet6`"),
                "below IPv6's 1280",
                "IPv6 needs a link MTU of 1280 bytes or more (RFC 8200 section 5) and Linux turns IPv6 off on a \
                 smaller device; give `mtu: 1280` or more, or remove `subnet6`",
            );
            Err(LeftOut)
        }
        _ => Ok(mtu),
    }
}

/// `mtu:`: bytes, within [`model::MTU_RANGE`] (68 to 65521: what the kernel's bridge and tap
/// devices take; the rule and its sources are there). Below 1280 is fine: topo's labs are
/// IPv4.
fn check_mtu(c: &mut Checker, net: &NetworkSpec) -> Result<Option<u32>, LeftOut> {
    let Some(m) = &net.mtu else {
        return Ok(None);
    };
    let (min, max) = (*model::MTU_RANGE.start(), *model::MTU_RANGE.end());
    match u32::try_from(m.value) {
        Ok(n) if model::MTU_RANGE.contains(&n) => Ok(Some(n)),
        _ => {
            let help = if m.value < i64::from(min) {
                format!(
                    "the kernel refuses an MTU below {min} bytes on a bridge or tap (ETH_MIN_MTU, the least IPv4 \
                     needs); give {min} or more, e.g. `mtu: 1450` for a network stretched over VXLAN"
                )
            } else {
                format!(
                    "libvirt gives every tap on the network its MTU, and a tap takes at most {max} bytes (65535 \
                     less its Ethernet header, drivers/net/tun.c); give at most {max}, e.g. `mtu: 9000` for jumbo \
                     frames"
                )
            };
            c.at(Code::Mtu, m, format!("mtu {} is out of range", m.value), format!("must be {min} to {max}"), help);
            Err(LeftOut)
        }
    }
}
