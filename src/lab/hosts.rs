//! Labs across several libvirt hosts: the hosts a lab names, where each network exists, the
//! VXLAN tunnel that stretches a network over its hosts, and each host's share of the lab
//! (what one host's plan is made of). docs/multi-host.md.
//!
//! A lab network exists on every host that has a VM on it, and on the host that serves it
//! (its gateway, DHCP, DNS and NAT: `Network::host`). On the others it is a bridge without
//! addresses. When it exists on two hosts or more it is *stretched*: each host's bridge gets
//! a VXLAN device (RFC 7348) with the network's VNI, sending to every other host's underlay
//! address by unicast, and the network's MTU is lowered by VXLAN's 50 bytes of overhead so
//! that no full-size frame is dropped at the tunnel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::lab::model::{HostName, Lab, LabName, MacAddr, Network, NetworkKind, NetworkMode, NetworkName};

/// UDP port of the tunnels: IANA's VXLAN port (RFC 7348 section 5). Linux's own default
/// without `dstport` is 8472 (the pre-standard port), so topo always names it.
pub const VXLAN_PORT: u16 = 4789;

/// Bytes VXLAN adds to every frame over an IPv4 underlay: outer IPv4 (20), UDP (8), VXLAN
/// (8) and the inner Ethernet header (14) (RFC 7348 section 4.3).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The largest MTU a VXLAN device over IPv4 takes without a lower device: the largest
/// Ethernet MTU less [`VXLAN_OVERHEAD`] (drivers/net/vxlan/vxlan_core.c, `vxlan_config_apply`:
/// `max_mtu = ETH_MAX_MTU - VXLAN_HEADROOM`). What the underlay carries is checked at plan
/// (`topo::plan::underlay_mtu`), against the MTU of the device that holds the underlay address.
pub const VXLAN_MAX_MTU: u32 = 65535 - VXLAN_OVERHEAD;

/// The MTU of a stretched network's bridge, tunnel and guest NICs: an underlay of Ethernet's
/// 1500 bytes minus [`VXLAN_OVERHEAD`].
pub const STRETCHED_MTU: u32 = 1500 - VXLAN_OVERHEAD;

/// The smallest VNI topo derives: values below are left to VNIs people choose by hand.
pub const MIN_DERIVED_VNI: u32 = 4096;

/// The largest VNI: it is a 24-bit field (RFC 7348 section 5).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The VNI of lab network `network` of lab `lab` (prefix `prefix`): SHA-256 of
/// `"topo-vni-v1\0" + lab + "\0" + prefix + "\0" + network`, its first three bytes mapped
/// into `MIN_DERIVED_VNI..=MAX_VNI`. The same on every host and every run; checked at plan
/// time against the VNIs already on each host.
pub fn derived_vni(lab: &LabName, prefix: &str, network: &NetworkName) -> u32 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [b"topo-vni-v1".as_slice(), lab.as_str().as_bytes(), prefix.as_bytes(), network.as_str().as_bytes()] {
        h.update(part);
        h.update(b"\0");
    }
    let d = h.finalize();
    let raw = u32::from_be_bytes([0, d[0], d[1], d[2]]);
    MIN_DERIVED_VNI + raw % (MAX_VNI - MIN_DERIVED_VNI + 1)
}

/// The name of the VXLAN device of VNI `vni` on each host: `topovx` and the VNI in six hex
/// digits (12 bytes, within IFNAMSIZ - 1 = 15).
pub fn tunnel_device(vni: u32) -> String {
    format!("topovx{vni:06x}")
}

/// The bridge of a stretched network that names none: `topobr` and its VNI in six hex digits,
/// the same on every host (libvirt's `virbrN` would differ from host to host, and the tunnel
/// needs the bridge's name when the plan is made).
pub fn stretched_bridge(vni: u32) -> String {
    format!("topobr{vni:06x}")
}

/// What topo writes as the tunnel device's alias (`ip link set DEV alias`, IFLA_IFALIAS, at
/// most 255 bytes): its owner tag. A VXLAN device whose alias is not this lab's is never
/// changed or deleted.
pub fn tunnel_alias(lab: &LabName, prefix: &str, network: &NetworkName) -> String {
    format!("{}{network}", tunnel_alias_head(lab, prefix))
}

/// What every tunnel alias of lab `lab` (prefix `prefix`) starts with, the network's name
/// following it ([`tunnel_alias`]).
pub fn tunnel_alias_head(lab: &LabName, prefix: &str) -> String {
    format!("topo lab={lab} prefix={prefix} network=")
}

/// A lab network's tunnel on one host, as the machine that runs the host makes it (the
/// payload of apply's `EnsureTunnel`; `crate::host::tunnel` runs it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// The VXLAN device's name (at most 15 bytes, as every network device's: IFNAMSIZ - 1).
    pub device: String,
    /// Its alias (`ip link set DEV alias`, at most 255 bytes): what tells topo's devices apart.
    pub alias: String,
    /// The VXLAN network identifier, below 2^24 (RFC 7348 5).
    pub vni: u32,
    /// This host's underlay address, the tunnel's source.
    pub local: Ipv4Addr,
    /// The UDP port, sent to and listened on (4789 is IANA's for VXLAN; Linux's default
    /// without `dstport` is 8472, so it is always given).
    pub dstport: u16,
    /// The peer hosts' underlay addresses: every flooded frame goes to each.
    pub peers: BTreeSet<Ipv4Addr>,
    /// The lab network's bridge on this host; the device becomes its port.
    pub bridge: String,
    /// The device's MTU in bytes (1450: a 1500-byte underlay less VXLAN's 50 bytes of
    /// outer headers over IPv4).
    pub mtu: u32,
}

/// One host's end of a stretched network's tunnel, as the lab wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// The lab network it stretches.
    pub network: NetworkName,
    /// The host it is on.
    pub host: HostName,
    /// The device as the host's machine makes it: [`tunnel_device`], [`tunnel_alias`] (the
    /// owner tag), [`derived_vni`], this host's underlay address, [`VXLAN_PORT`], the other
    /// hosts' underlay addresses (an all-zero forwarding entry each), the bridge (the
    /// network's `bridge:`, or [`stretched_bridge`]) and the network's MTU
    /// ([`STRETCHED_MTU`] unless the lab file gives a lower one).
    pub spec: TunnelSpec,
}

impl Lab {
    /// Whether the lab names its hosts (`hosts:`).
    pub fn is_multi_host(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The hosts the lab runs on, in name order: those of `hosts:`, or the one default host.
    pub fn host_names(&self) -> Vec<HostName> {
        if self.hosts.is_empty() { vec![HostName::default_host()] } else { self.hosts.keys().cloned().collect() }
    }

    /// The hosts lab network `net` exists on ([`Network::spans`]): its serving host and every
    /// host with a VM that has a NIC on it. External networks: the hosts of the VMs on them (each host's own
    /// network of that name; never stretched).
    pub fn network_hosts(&self, net: &Network) -> BTreeSet<HostName> {
        match net.kind {
            NetworkKind::Managed(_) => net.spans.clone(),
            NetworkKind::External => {
                self.nics().filter(|(_, n)| n.network == net.name).map(|(vm, _)| vm.host.clone()).collect()
            }
        }
    }

    /// The host of this share of the lab ([`Lab::on_host`]): the host its stretched networks'
    /// instances are on; `None` when it has none (then it has no tunnels either).
    pub fn share_host(&self) -> Option<&HostName> {
        self.networks.values().find(|n| self.is_stretched(n)).map(|n| &n.instance_host)
    }

    /// Whether lab network `net` spans more than one host (a managed network only).
    pub fn is_stretched(&self, net: &Network) -> bool {
        matches!(net.kind, NetworkKind::Managed(_)) && self.network_hosts(net).len() > 1
    }

    /// The VNI of lab network `net` ([`derived_vni`]).
    pub fn vni(&self, net: &Network) -> u32 {
        derived_vni(&self.name, &self.prefix, &net.name)
    }

    /// The bridge MAC topo gives network `net` on host `host`: on its serving host (and in a
    /// lab on one host) [`MacAddr::derived_bridge`]; on the other hosts of a stretched
    /// network one that also hashes the host's name, since bridges joined by a tunnel are one
    /// Ethernet segment, where each bridge takes frames to its own MAC for itself.
    pub fn bridge_mac(&self, net: &Network, host: &HostName) -> MacAddr {
        if *host == net.host {
            MacAddr::derived_bridge(&self.name, &net.name)
        } else {
            MacAddr::derived_bridge_on(&self.name, &net.name, host)
        }
    }

    /// The tunnels of the lab on host `host`: one per stretched network that exists there.
    /// Hosts without an underlay address are left out of a tunnel's peers (validation
    /// refuses such a lab).
    pub fn tunnels_on(&self, host: &HostName) -> Vec<Tunnel> {
        let underlay = |h: &HostName| self.hosts.get(h).and_then(|h| h.underlay);
        let Some(local) = underlay(host) else { return Vec::new() };
        self.networks
            .values()
            .filter(|net| self.is_stretched(net))
            .filter_map(|net| {
                let hosts = self.network_hosts(net);
                if !hosts.contains(host) {
                    return None;
                }
                let NetworkKind::Managed(m) = &net.kind else { return None };
                let vni = self.vni(net);
                Some(Tunnel {
                    network: net.name.clone(),
                    host: host.clone(),
                    spec: TunnelSpec {
                        device: tunnel_device(vni),
                        alias: tunnel_alias(&self.name, &self.prefix, &net.name),
                        vni,
                        local,
                        dstport: VXLAN_PORT,
                        peers: hosts.iter().filter(|h| *h != host).filter_map(underlay).collect(),
                        bridge: m.bridge.as_ref().map(|b| b.to_string()).unwrap_or_else(|| stretched_bridge(vni)),
                        mtu: m.mtu.unwrap_or(STRETCHED_MTU),
                    },
                })
            })
            .collect()
    }

    /// Host `host`'s share of the lab: a lab on one host that the planner, apply and verify
    /// take as they take any lab. It holds the VMs placed on `host`, the external networks
    /// they use, and the lab networks that exist there ([`Lab::network_hosts`]); on a host
    /// that does not serve a stretched network, that network is a bridge without addresses
    /// (no `<ip>`, no forward, no DHCP). Every stretched network gets a bridge name
    /// ([`stretched_bridge`] unless it names one). Ownership is the lab's: the same name,
    /// prefix and lab file, so each host's objects carry the lab's tags. For a lab on one
    /// host, the lab itself.
    pub fn on_host(&self, host: &HostName) -> Lab {
        if !self.is_multi_host() {
            return self.clone();
        }
        let vms: BTreeMap<_, _> =
            self.vms.iter().filter(|(_, vm)| vm.host == *host).map(|(k, v)| (k.clone(), v.clone())).collect();
        let used: BTreeSet<&NetworkName> = vms.values().flat_map(|vm| vm.nics.iter().map(|n| &n.network)).collect();
        let mut networks = BTreeMap::new();
        let mut served = BTreeMap::new();
        for (name, net) in &self.networks {
            let here = match net.kind {
                NetworkKind::External => used.contains(name),
                NetworkKind::Managed(_) => self.network_hosts(net).contains(host),
            };
            if !here {
                continue;
            }
            let mut share = net.clone();
            share.instance_host = host.clone();
            let stretched = self.is_stretched(net);
            if let NetworkKind::Managed(m) = &mut share.kind {
                if stretched && m.bridge.is_none() {
                    // Invariant: `stretched_bridge` is 12 ASCII characters, a valid bridge name.
                    m.bridge = crate::lab::model::BridgeName::new(&stretched_bridge(self.vni(net))).ok();
                }
                if net.host != *host {
                    served.insert(name.clone(), m.clone());
                    m.mode = NetworkMode::Isolated;
                    m.subnet = None;
                    m.gateway = None;
                    m.dhcp = None;
                    m.reservations.clear();
                }
            }
            networks.insert(name.clone(), share);
        }
        // Both ends of a wire are on one host (validation): the wire is that host's.
        let wires = self
            .wires
            .iter()
            .filter(|(_, w)| w.ends.iter().all(|e| vms.contains_key(&e.vm)))
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        Lab { vms, networks, served, wires, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_is_stable_in_range_and_differs_per_network() {
        let lab = LabName::new("mh").unwrap();
        let a = NetworkName::new("lan").unwrap();
        let b = NetworkName::new("wan").unwrap();
        let v = derived_vni(&lab, "mh-", &a);
        assert_eq!(v, derived_vni(&lab, "mh-", &a));
        assert!((MIN_DERIVED_VNI..=MAX_VNI).contains(&v));
        assert_ne!(v, derived_vni(&lab, "mh-", &b));
        assert_ne!(v, derived_vni(&lab, "", &a));
        assert_eq!(tunnel_device(v).len(), 12);
        assert_eq!(tunnel_device(0xabcdef), "topovxabcdef");
        assert_eq!(stretched_bridge(0x1000), "topobr001000");
    }

    fn multihost() -> Lab {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/valid/multihost.yaml"));
        let source = crate::lab::source::SourceFile::read(path).unwrap();
        crate::lab::validate::load(&source).unwrap()
    }

    fn h(s: &str) -> HostName {
        HostName::new(s).unwrap()
    }

    #[test]
    fn placement_defaults_and_serving_hosts() {
        let lab = multihost();
        assert!(lab.is_multi_host());
        assert_eq!(lab.host_names(), vec![h("h1"), h("h2")]);
        let vm = |n: &str| &lab.vms[&crate::lab::model::VmName::new(n).unwrap()];
        let net = |n: &str| &lab.networks[&NetworkName::new(n).unwrap()];
        // No `host:`: the first host of `hosts:`.
        assert_eq!(vm("g1").host, h("h1"));
        assert_eq!(vm("g2").host, h("h2"));
        // `lan` has VMs on h1 and h2, served by the first of them; `wan` names h2.
        assert_eq!(net("lan").host, h("h1"));
        assert_eq!(net("wan").host, h("h2"));
        assert_eq!(lab.network_hosts(net("lan")), [h("h1"), h("h2")].into());
        assert!(lab.is_stretched(net("lan")));
        assert!(!lab.is_stretched(net("wan")) && !lab.is_stretched(net("only1")));
    }

    #[test]
    fn each_host_gets_its_share() {
        let lab = multihost();
        let on1 = lab.on_host(&h("h1"));
        let on2 = lab.on_host(&h("h2"));
        let names = |l: &Lab| {
            (
                l.vms.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
                l.networks.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(names(&on1), (vec!["g1".into()], vec!["lan".into(), "only1".into()]));
        assert_eq!(names(&on2), (vec!["g2".into()], vec!["lan".into(), "wan".into()]));
        let lan = NetworkName::new("lan").unwrap();
        let vni = lab.vni(&lab.networks[&lan]);
        let managed = |l: &Lab| match &l.networks[&lan].kind {
            NetworkKind::Managed(m) => m.clone(),
            NetworkKind::External => panic!("managed"),
        };
        // h1 serves lan: its subnet, DHCP and the reservations of g1's NIC (derived) and of
        // g2's NIC (written, on h2) are there.
        let m1 = managed(&on1);
        assert_eq!(m1.subnet, Some("10.10.0.0/24".parse().unwrap()));
        assert_eq!(m1.reservations.len(), 2);
        assert!(m1.reservations.values().any(|r| r.ip == std::net::Ipv4Addr::new(10, 10, 0, 20) && r.host == "g2"));
        assert_eq!(m1.bridge.as_ref().unwrap().as_str(), stretched_bridge(vni));
        // On h2 it is a bridge without addresses, on the same bridge name.
        let m2 = managed(&on2);
        assert_eq!((m2.mode, m2.subnet, m2.gateway, m2.dhcp), (NetworkMode::Isolated, None, None, None));
        assert!(m2.reservations.is_empty());
        assert_eq!(m2.bridge, m1.bridge);
        // Each instance's bridge MAC is its own: the bridges are one segment.
        let mac1 = lab.bridge_mac(&on1.networks[&lan], &on1.networks[&lan].instance_host);
        let mac2 = lab.bridge_mac(&on2.networks[&lan], &on2.networks[&lan].instance_host);
        assert_ne!(mac1, mac2);
        assert_eq!(mac1, MacAddr::derived_bridge(&lab.name, &lan));
        // A lab on one host is its own share.
        assert_eq!(on1.hosts, lab.hosts);
    }

    #[test]
    fn tunnels_join_each_stretched_network_to_every_peer() {
        let lab = multihost();
        let t1 = lab.tunnels_on(&h("h1"));
        let t2 = lab.tunnels_on(&h("h2"));
        assert_eq!(t1.len(), 1);
        assert_eq!(t2.len(), 1);
        assert_eq!(
            (t1[0].network.as_str(), t1[0].spec.vni, t1[0].spec.dstport, t1[0].spec.mtu),
            ("lan", t2[0].spec.vni, 4789, 1450)
        );
        assert_eq!(t1[0].spec.local, "10.77.0.11".parse::<Ipv4Addr>().unwrap());
        assert_eq!(t1[0].spec.peers, ["10.77.0.12".parse().unwrap()].into());
        assert_eq!(t2[0].spec.peers, ["10.77.0.11".parse().unwrap()].into());
        assert_eq!(t1[0].spec.device, t2[0].spec.device);
        assert_eq!(t1[0].spec.alias, "topo lab=mh prefix=mh- network=lan");
    }

    #[test]
    fn stretched_mtu_leaves_room_for_vxlan() {
        assert_eq!(STRETCHED_MTU, 1450);
    }
}
