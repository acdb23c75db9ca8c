//! Network XML: rendered from a managed lab network, parsed into `ObservedNetwork`.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{
    DNSMASQ_NS, Kept, MetadataW, Rendered, XmlError, from_xml, netmask_to_prefix, prefix_to_netmask, read_ns_facts,
};
use crate::host::observed::{ObservedHost, ObservedIp, ObservedIp6, ObservedMode, ObservedNetwork};
use crate::lab::address::Address;
use crate::lab::model::{DhcpRange, Lab, MacAddr, ManagedNetwork, Network, NetworkKind, NetworkMode, Reservation};

/// The dnsmasq option that turns off the ping check before an address is offered.
const NO_PING: &str = "no-ping";

// ---- writing ---------------------------------------------------------------------------

#[derive(Serialize)]
struct NetworkW<'a> {
    #[serde(rename = "@xmlns:dnsmasq", skip_serializing_if = "Option::is_none")]
    xmlns_dnsmasq: Option<&'static str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataW>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward: Option<ForwardW>,
    bridge: BridgeW<'a>,
    /// `<mtu size='N'/>`: the bridge's and its taps' MTU; libvirt writes it after `<bridge>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<MtuW>,
    mac: MacW,
    /// The IPv4 `<ip>` first, then the IPv6 one (`family='ipv6'`), as libvirt prints them.
    ip: Vec<IpW>,
    #[serde(rename = "dnsmasq:options", skip_serializing_if = "Option::is_none")]
    dnsmasq_options: Option<DnsmasqOptionsW>,
}

#[derive(Serialize)]
struct ForwardW {
    #[serde(rename = "@mode")]
    mode: &'static str,
    /// `<nat ipv6='yes'/>`: masquerade IPv6 too (NAT66, libvirt 6.5 and later), on a `nat`
    /// network with an IPv6 `<ip>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<NatW>,
}

#[derive(Serialize)]
struct NatW {
    #[serde(rename = "@ipv6")]
    ipv6: &'static str,
}

#[derive(Serialize)]
struct BridgeW<'a> {
    #[serde(rename = "@name", skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(rename = "@stp")]
    stp: &'static str,
    #[serde(rename = "@delay")]
    delay: &'static str,
}

/// `<mtu size='N'/>` (bytes), in a network and in a domain's `<interface>` alike.
#[derive(Serialize)]
pub(super) struct MtuW {
    #[serde(rename = "@size")]
    pub(super) size: u32,
}

/// `<mtu size='N'/>` as read back; `None` when the attribute is missing or not a number.
#[derive(Deserialize)]
pub(super) struct MtuR {
    #[serde(rename = "@size")]
    size: Option<String>,
}

impl MtuR {
    /// The size in bytes (libvirt writes an unsigned int; anything else reads as none).
    pub(super) fn size(&self) -> Option<u32> {
        self.size.as_deref()?.trim().parse().ok()
    }
}

#[derive(Serialize)]
struct MacW {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Serialize)]
struct IpW {
    /// `ipv6` for an IPv6 `<ip>`; none (libvirt's default, ipv4) for the IPv4 one.
    #[serde(rename = "@family", skip_serializing_if = "Option::is_none")]
    family: Option<&'static str>,
    /// The bridge's address (IPv4 or IPv6).
    #[serde(rename = "@address")]
    address: String,
    /// IPv4 only: the subnet's netmask.
    #[serde(rename = "@netmask", skip_serializing_if = "Option::is_none")]
    netmask: Option<Ipv4Addr>,
    /// IPv6 only: the prefix length (always 64 for a lab network).
    #[serde(rename = "@prefix", skip_serializing_if = "Option::is_none")]
    prefix: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp: Option<DhcpW>,
}

#[derive(Serialize)]
struct DhcpW {
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<RangeW>,
    host: Vec<HostW>,
}

#[derive(Serialize)]
struct RangeW {
    #[serde(rename = "@start")]
    start: Ipv4Addr,
    #[serde(rename = "@end")]
    end: Ipv4Addr,
}

#[derive(Serialize)]
struct HostW {
    #[serde(rename = "@mac")]
    mac: String,
    #[serde(rename = "@name", skip_serializing_if = "str::is_empty")]
    name: String,
    #[serde(rename = "@ip")]
    ip: Ipv4Addr,
}

impl HostW {
    fn of(r: &Reservation) -> Self {
        Self { mac: r.mac.to_string(), name: r.host.clone(), ip: r.ip }
    }
}

#[derive(Serialize)]
struct DnsmasqOptionsW {
    #[serde(rename = "dnsmasq:option")]
    option: Vec<DnsmasqOptionW>,
}

#[derive(Serialize)]
struct DnsmasqOptionW {
    #[serde(rename = "@value")]
    value: &'static str,
}

/// libvirt's `<forward mode>` for a lab network mode; `None` is an isolated network.
pub fn forward_mode(mode: NetworkMode) -> Option<&'static str> {
    match mode {
        NetworkMode::Nat => Some("nat"),
        NetworkMode::Routed => Some("route"),
        NetworkMode::Open => Some("open"),
        NetworkMode::Isolated => None,
    }
}

/// The network's `<ip>` elements: the IPv4 one (with DHCP) when it has a subnet, then the
/// IPv6 one when it has a `subnet6`. The IPv6 one has no `<dhcp>`: libvirt's dnsmasq then
/// sends router advertisements only (`dhcp-range=PREFIX,ra-only`), and every guest takes its
/// SLAAC address (docs/addressing.md, section IPv6).
fn ip_w(m: &ManagedNetwork) -> Vec<IpW> {
    let mut ips = Vec::new();
    if let (Some(subnet), Some(gateway)) = (m.subnet, m.gateway) {
        let dhcp = (m.dhcp.is_some() || !m.reservations.is_empty()).then(|| DhcpW {
            range: m.dhcp.map(|r| RangeW { start: r.start, end: r.end }),
            host: m.reservations.values().map(HostW::of).collect(),
        });
        ips.push(IpW {
            family: None,
            address: gateway.to_string(),
            netmask: Some(prefix_to_netmask(subnet.prefix())),
            prefix: None,
            dhcp,
        });
    }
    if let (Some(subnet6), Some(gateway6)) = (m.subnet6, m.gateway6) {
        ips.push(IpW {
            family: Some("ipv6"),
            address: gateway6.to_string(),
            netmask: None,
            prefix: Some(subnet6.prefix()),
            dhcp: None,
        });
    }
    ips
}

/// Renders the network XML for a managed lab network, tagged with `spec_hash` (the
/// planner's hash of its desired fields), with the bridge MAC topo derives for it
/// ([`MacAddr::derived_bridge`]). External networks are never rendered:
/// `XmlError::External`.
pub fn network_xml(lab: &Lab, net: &Network, spec_hash: &str) -> Result<Rendered, XmlError> {
    network_xml_keeping(lab, net, spec_hash, Kept::default())
}

/// [`network_xml`] for a network that exists: it keeps what `kept` gives (its UUID, the
/// bridge libvirt chose when the lab names none, its bridge MAC).
pub fn network_xml_keeping(lab: &Lab, net: &Network, spec_hash: &str, kept: Kept<'_>) -> Result<Rendered, XmlError> {
    let bridge_mac = kept.mac.unwrap_or_else(|| lab.bridge_mac(net, &net.instance_host));
    let m = match &net.kind {
        NetworkKind::Managed(m) => m,
        NetworkKind::External => return Err(XmlError::External(net.name.to_string())),
    };
    let no_ping = !m.dhcp_ping;
    let tag = lab.owner_tag(&Address::Network(net.name.clone()), net.libvirt_name.as_str(), spec_hash);
    super::render_with_owner("network", "network", &tag, |metadata| NetworkW {
        xmlns_dnsmasq: no_ping.then_some(DNSMASQ_NS),
        name: net.libvirt_name.as_str(),
        uuid: kept.uuid,
        metadata,
        forward: forward_mode(m.mode).map(|mode| ForwardW {
            mode,
            nat: (m.mode == NetworkMode::Nat && m.subnet6.is_some()).then_some(NatW { ipv6: "yes" }),
        }),
        bridge: BridgeW {
            name: m.bridge.as_ref().map(|b| b.as_str()).or(kept.bridge),
            stp: if m.stp { "on" } else { "off" },
            delay: "0",
        },
        mtu: m.mtu.map(|size| MtuW { size }),
        mac: MacW { address: bridge_mac.to_string() },
        ip: ip_w(m),
        dnsmasq_options: no_ping.then(|| DnsmasqOptionsW { option: vec![DnsmasqOptionW { value: NO_PING }] }),
    })
}

/// `<host mac='..' name='..' ip='..'/>` for `virNetworkUpdate` (section IP_DHCP_HOST).
pub fn dhcp_host_xml(r: &Reservation) -> Result<String, XmlError> {
    let mut out = String::new();
    let ser = quick_xml::se::Serializer::with_root(&mut out, Some("host"))
        .map_err(|e| XmlError::Serialize { what: "dhcp host", message: e.to_string() })?;
    HostW::of(r).serialize(ser).map_err(|e| XmlError::Serialize { what: "dhcp host", message: e.to_string() })?;
    Ok(out)
}

// ---- reading ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct NetworkR {
    name: String,
    uuid: Option<String>,
    forward: Option<ForwardR>,
    bridge: Option<BridgeR>,
    mtu: Option<MtuR>,
    mac: Option<MacR>,
    #[serde(default)]
    ip: Vec<IpR>,
}

#[derive(Deserialize)]
struct MacR {
    #[serde(rename = "@address")]
    address: Option<String>,
}

#[derive(Deserialize)]
struct ForwardR {
    #[serde(rename = "@mode")]
    mode: Option<String>,
}

#[derive(Deserialize)]
struct BridgeR {
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@stp")]
    stp: Option<String>,
}

#[derive(Deserialize)]
struct IpR {
    #[serde(rename = "@family")]
    family: Option<String>,
    #[serde(rename = "@address")]
    address: Option<String>,
    #[serde(rename = "@netmask")]
    netmask: Option<String>,
    #[serde(rename = "@prefix")]
    prefix: Option<u8>,
    dhcp: Option<DhcpR>,
}

#[derive(Deserialize)]
struct DhcpR {
    #[serde(default)]
    range: Vec<RangeR>,
    #[serde(default)]
    host: Vec<HostR>,
}

#[derive(Deserialize)]
struct RangeR {
    #[serde(rename = "@start")]
    start: Option<String>,
    #[serde(rename = "@end")]
    end: Option<String>,
}

#[derive(Deserialize)]
struct HostR {
    #[serde(rename = "@mac")]
    mac: Option<String>,
    #[serde(rename = "@ip")]
    ip: Option<String>,
    #[serde(rename = "@name")]
    name: Option<String>,
}

/// The live flags of a network, which its XML does not carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkFlags {
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
}

fn observed_mode(forward: Option<&ForwardR>) -> ObservedMode {
    match forward {
        None => ObservedMode::Known(NetworkMode::Isolated),
        // `<forward/>` without a mode is NAT in libvirt.
        Some(ForwardR { mode: None }) => ObservedMode::Known(NetworkMode::Nat),
        Some(ForwardR { mode: Some(m) }) => match m.as_str() {
            "nat" => ObservedMode::Known(NetworkMode::Nat),
            "route" => ObservedMode::Known(NetworkMode::Routed),
            "open" => ObservedMode::Known(NetworkMode::Open),
            other => ObservedMode::Other(other.to_owned()),
        },
    }
}

/// libvirt's default prefix when an `<ip>` has neither `prefix` nor `netmask` (classful).
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

fn observed_host(h: &HostR) -> Option<ObservedHost> {
    let mac: MacAddr = h.mac.as_deref()?.parse().ok()?;
    let ip: Ipv4Addr = h.ip.as_deref()?.parse().ok()?;
    Some(ObservedHost { mac, ip, name: h.name.clone() })
}

/// An IPv6 `<ip family='ipv6' address prefix>` as its bridge address and prefix length;
/// `None` for an IPv4 one or one without a readable address (libvirt's default prefix for
/// IPv6 is 64).
fn observed_ip6(ip: &IpR) -> Option<ObservedIp6> {
    if ip.family.as_deref() != Some("ipv6") {
        return None;
    }
    let address = ip.address.as_deref()?.parse::<Ipv6Addr>().ok()?;
    Some(ObservedIp6 { address, prefix: ip.prefix.unwrap_or(64) })
}

fn observed_ip(ip: &IpR) -> Result<Option<ObservedIp>, XmlError> {
    if ip.family.as_deref().is_some_and(|f| f != "ipv4") {
        return Ok(None);
    }
    let Some(address) = ip.address.as_deref().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
        return Ok(None);
    };
    let prefix = match (ip.prefix, ip.netmask.as_deref()) {
        (Some(p), _) => p,
        (None, Some(mask)) => mask
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(netmask_to_prefix)
            .ok_or_else(|| XmlError::Parse { what: "network", message: format!("bad netmask {mask:?}") })?,
        (None, None) => classful_prefix(address),
    };
    let (dhcp_range, mut hosts) = match &ip.dhcp {
        None => (None, Vec::new()),
        Some(d) => {
            let range = d.range.iter().find_map(|r| {
                Some(DhcpRange { start: r.start.as_deref()?.parse().ok()?, end: r.end.as_deref()?.parse().ok()? })
            });
            let mut hosts = Vec::new();
            for h in &d.host {
                match observed_host(h) {
                    Some(o) => hosts.push(o),
                    None => {
                        tracing::debug!(mac = ?h.mac, ip = ?h.ip, "skipping a DHCP host entry without an IPv4 address and MAC")
                    }
                }
            }
            (range, hosts)
        }
    };
    hosts.sort_by_key(|h| h.mac);
    Ok(Some(ObservedIp { address, prefix, dhcp_range, hosts }))
}

/// Parses network XML (as `net-dumpxml` prints it) into an `ObservedNetwork`.
/// Unknown elements are ignored; the result is for reading, never for writing back.
pub fn parse_network(xml: &str, flags: NetworkFlags) -> Result<ObservedNetwork, XmlError> {
    let r: NetworkR = from_xml("network", "network", xml)?;
    let facts = read_ns_facts("network", xml)?;
    let mut ip = None;
    for i in &r.ip {
        if let Some(o) = observed_ip(i)? {
            ip = Some(o);
            break;
        }
    }
    let ip6 = r.ip.iter().find_map(observed_ip6);
    Ok(ObservedNetwork {
        name: r.name,
        uuid: r.uuid,
        active: flags.active,
        persistent: flags.persistent,
        autostart: flags.autostart,
        mode: observed_mode(r.forward.as_ref()),
        bridge: r.bridge.as_ref().and_then(|b| b.name.clone()),
        live_bridge: if flags.active { r.bridge.as_ref().and_then(|b| b.name.clone()) } else { None },
        // libvirt's default when `stp` is absent is on.
        stp: r.bridge.as_ref().and_then(|b| b.stp.as_deref()).is_none_or(|s| s != "off"),
        mac: r.mac.and_then(|m| m.address).and_then(|a| a.parse().ok()),
        mtu: r.mtu.as_ref().and_then(MtuR::size),
        ip,
        ip6,
        dhcp_ping: !facts.dnsmasq_options.iter().any(|o| o == NO_PING),
        owner: facts.owner,
    })
}

/// Parses one `<host>` element (as given to `virNetworkUpdate`).
pub fn parse_dhcp_host(xml: &str) -> Result<ObservedHost, XmlError> {
    let h: HostR = from_xml("dhcp host", "host", xml)?;
    observed_host(&h).ok_or_else(|| XmlError::Parse {
        what: "dhcp host",
        message: "a <host> needs a unicast mac and an IPv4 ip attribute".into(),
    })
}
