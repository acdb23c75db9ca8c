//! What is verified: one [`NicTarget`] per NIC, from the model and what the host reports, and
//! where frames may go at all ([`HostAccess`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv4Network;
use serde::Serialize;

use crate::host::observed::{DomainState, Observed, ObservedNetwork};
use crate::lab::model::{Lab, MacAddr, Network, NetworkKind, NetworkName, Nic, Verify, Vm, VmName};

/// Whether the networks' bridges of a libvirt URI are interfaces of this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAccess {
    /// A local driver (`qemu:///system`): bridges are this host's interfaces; ARP proves.
    Local,
    /// The URI names another host (`qemu+ssh://user@host/system`): its bridges are not here;
    /// only what libvirt reports is available (`super::reported`).
    Remote,
    /// libvirt's `test` driver: its networks and bridges exist only inside libvirt. An
    /// interface of the same name on this host (`virbr0`) is someone else's: never probed.
    TestDriver,
}

impl HostAccess {
    /// Classifies a connection URI: `driver[+transport]://[user@][host][:port]/path`. A host
    /// part makes it remote (even `localhost`: libvirt may run in another namespace); the
    /// `test` driver is never probed.
    pub fn of_uri(uri: &str) -> Self {
        let Some((scheme, rest)) = uri.split_once("://") else { return HostAccess::Local };
        let driver = scheme.split('+').next().unwrap_or(scheme);
        if driver == "test" {
            HostAccess::TestDriver
        } else if !rest.is_empty() && !rest.starts_with('/') {
            HostAccess::Remote
        } else {
            HostAccess::Local
        }
    }
}

/// Which of a NIC's addresses a [`NicTarget`] proves: IPv4 by ARP, IPv6 by NDP. The two are
/// proven independently, each a row of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The NIC's IPv4 address (reservation, lease or sweep), proven by an ARP reply.
    #[default]
    Ipv4,
    /// The NIC's SLAAC address on its network's `subnet6`, proven by a Neighbor
    /// Advertisement (docs/addressing.md, section IPv6).
    Ipv6,
}

impl Family {
    /// `ipv4` or `ipv6`, as the JSON and the table show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One NIC to verify, with everything the loop needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicTarget {
    pub vm: VmName,
    /// The VM's libvirt domain name.
    pub domain: String,
    /// `eth0`, `eth1`, ... (model::Nic::label).
    pub nic: String,
    pub network: NetworkName,
    /// The network's libvirt name: leases are matched on it and the MAC.
    pub libvirt_network: String,
    /// The host bridge the running network uses, as libvirt reports it; `None` when there
    /// is none to probe ([`NicTarget::no_bridge`] says why).
    pub bridge: Option<String>,
    /// Why there is no bridge to probe (network missing or inactive, no bridge, test driver).
    pub no_bridge: Option<String>,
    pub mac: MacAddr,
    /// The address family this target proves; an IPv6 target has [`NicTarget::address6`].
    #[serde(default)]
    pub family: Family,
    /// IPv6 targets only: the address the NIC must answer at, its SLAAC address on the
    /// network's `subnet6` ([`crate::lab::ipv6::slaac_address`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// A DHCP reservation for this MAC: probed from the start, before any lease shows up.
    pub reservation: Option<Ipv4Addr>,
    /// The network serves DHCP (so a lease is expected).
    pub dhcp: bool,
    /// The network's subnet, swept when no candidate address turns up.
    #[serde(serialize_with = "ser_subnet")]
    pub subnet: Option<Ipv4Network>,
    /// The VM is running (a stopped VM cannot answer).
    pub running: bool,
    /// The lab file says `state: stopped`: not running on purpose, nothing to prove.
    pub stopped: bool,
    /// `verify: arp` on the NIC; `false` (`verify: none`) skips it.
    pub verify: bool,
    /// The NIC's netem `delay` and `jitter` from the lab file (zero when none): netem
    /// holds every frame toward the VM for `delay` +/- `jitter`, so an ARP round trip takes
    /// at least `delay - jitter` and can take `delay + jitter` more than an unimpaired one.
    #[serde(skip)]
    pub netem_delay: (std::time::Duration, std::time::Duration),
    /// The other running domains on the host, owned by the lab or not, with an interface of
    /// this MAC on this network (its libvirt network, or its bridge): a copy of the VM
    /// (`virsh dumpxml | virsh define` under another name) keeps the MAC. Sorted libvirt
    /// names; empty when there is none. Two NICs with one MAC on one bridge answer ARP alike,
    /// so nothing proves this NIC then ([`FailReason::DuplicateMac`](super::FailReason::DuplicateMac)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_mac: Vec<String>,
    /// The host of a lab across hosts that holds the NIC's VM (docs/multi-host.md), set by
    /// the session's verification across hosts; `None` for a lab on one host (and then left
    /// out of any JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<crate::lab::model::HostName>,
    /// A wire end's NIC (`links:`): the wire's name. Its `bridge` is the end's own tap
    /// (requests go to this guest alone; its replies are read there before the host passes
    /// them on to the peer), `network` is `wire`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire: Option<crate::lab::wire::WireName>,
    /// A wire end whose guest topo does not configure (no cloud-init): nothing says it holds
    /// its address, so it is reported unproven, not failed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unproven: bool,
    /// A wire end whose tap the host does not join to its peer's, as observed: (where the tap
    /// sends now, the peer's tap). `None` when joined, or when it cannot be told (the machine
    /// not read, a VM of the wire not running or stopped on purpose).
    #[serde(skip)]
    pub cut: Option<(String, String)>,
}

fn ser_subnet<S: serde::Serializer>(v: &Option<Ipv4Network>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.collect_str(n),
        None => s.serialize_none(),
    }
}

impl NicTarget {
    /// The shortest ARP round trip netem lets through for this NIC: `delay - jitter`
    /// (netem's jitter is uniform around the delay, iproute2 tc-netem(8)); zero without one.
    pub fn min_rtt(&self) -> std::time::Duration {
        self.netem_delay.0.saturating_sub(self.netem_delay.1)
    }

    /// How much longer than an unimpaired round trip a reply may take: `delay + jitter`.
    pub fn max_extra_rtt(&self) -> std::time::Duration {
        self.netem_delay.0 + self.netem_delay.1
    }

    /// Builds the target of one NIC from the model and what libvirt reports of its network.
    ///
    /// The bridge is only ever the one libvirt reports for the *running* network (its live
    /// XML): never a name from the lab file or an inactive config, which may be another
    /// interface on this host, and none at all for the test driver. Lab networks take subnet
    /// and DHCP from the model; external networks from `observed` (their first IPv4 `<ip>`).
    pub fn from_model(
        vm: &Vm,
        nic: &Nic,
        network: &Network,
        observed: Option<&ObservedNetwork>,
        running: bool,
        access: HostAccess,
    ) -> Self {
        let observed_ip = observed.and_then(|o| o.ip.as_ref());
        let (bridge, no_bridge) = match (access, observed) {
            (HostAccess::TestDriver, _) => {
                (None, Some("libvirt's test driver has no bridges on this host: nothing to send ARP on".to_owned()))
            }
            (_, None) => (None, Some(format!("the network {} does not exist on the host", network.libvirt_name))),
            (_, Some(o)) if !o.active => (None, Some(format!("the network {} is not active", o.name))),
            (_, Some(o)) => match &o.live_bridge {
                Some(b) => (Some(b.clone()), None),
                None => (None, Some(format!("the network {} has no bridge (a macvtap or direct network)", o.name))),
            },
        };
        let (dhcp, subnet) = match &network.kind {
            NetworkKind::Managed(m) => (m.dhcp.is_some(), m.subnet),
            NetworkKind::External => (
                observed_ip.is_some_and(|ip| ip.dhcp_range.is_some()),
                observed_ip
                    .and_then(|ip| {
                        let any = Ipv4Network::new(ip.address, ip.prefix).ok()?;
                        Ipv4Network::new(any.network(), ip.prefix).ok()
                    })
                    .or(network.declared_subnet),
            ),
        };
        let observed_reservation = observed_ip.and_then(|ip| ip.hosts.iter().find(|h| h.mac == nic.mac)).map(|h| h.ip);
        NicTarget {
            vm: vm.name.clone(),
            domain: vm.libvirt_name.to_string(),
            nic: nic.label(),
            network: network.name.clone(),
            libvirt_network: network.libvirt_name.to_string(),
            bridge,
            no_bridge,
            mac: nic.mac,
            family: Family::Ipv4,
            address6: None,
            reservation: nic.ip.or(observed_reservation),
            dhcp,
            subnet,
            running,
            stopped: vm.state == crate::lab::model::VmState::Stopped,
            verify: nic.verify == Verify::Arp,
            netem_delay: nic.impairment.netem.map_or_else(Default::default, |n| {
                let n = n.normalized();
                (
                    n.delay.map(|d| d.as_duration()).unwrap_or_default(),
                    n.jitter.map(|j| j.as_duration()).unwrap_or_default(),
                )
            }),
            same_mac: Vec::new(),
            host: None,
            wire: None,
            unproven: false,
            cut: None,
        }
    }

    /// The target of end `k` of wire `w`: its address in the wire's /31, proven by ARP on the
    /// end's tap (a probe from `0.0.0.0`: the tap has no address); unproven when the VM has
    /// no cloud-init to give the guest its address.
    pub fn wire_end(vm: &Vm, w: &crate::lab::wire::Wire, k: usize, running: bool, access: HostAccess) -> Self {
        let end = &w.ends[k];
        let (bridge, no_bridge) = match access {
            HostAccess::TestDriver => {
                (None, Some("libvirt's test driver has no taps on this host: nothing to send ARP on".to_owned()))
            }
            _ => (Some(end.tap.clone()), None),
        };
        NicTarget {
            vm: vm.name.clone(),
            domain: vm.libvirt_name.to_string(),
            nic: crate::lab::model::nic_label(end.index),
            // Invariant: `wire` is a valid network name (lowercase letters).
            network: NetworkName::new("wire").unwrap_or_else(|_| unreachable!("`wire` is a valid name")),
            libvirt_network: w.name.to_string(),
            bridge,
            no_bridge,
            mac: end.mac,
            family: Family::Ipv4,
            address6: None,
            reservation: Some(end.ip),
            dhcp: false,
            subnet: Some(w.subnet),
            running,
            stopped: vm.state == crate::lab::model::VmState::Stopped,
            verify: true,
            netem_delay: Default::default(),
            same_mac: Vec::new(),
            host: None,
            wire: Some(w.name.clone()),
            unproven: vm.cloud_init.is_none(),
            cut: None,
        }
    }

    /// Where end `k` of wire `w` stands on the host, from `redirects` (what the machine
    /// showed of the lab's wire taps, `Observed::wire_redirects`): `Some((now, peer))` when its
    /// tap does not send to the peer's tap; `None` when it does or the tap was not read.
    pub fn wire_cut(
        w: &crate::lab::wire::Wire,
        k: usize,
        redirects: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Option<(String, String)> {
        let peer = &w.peer_of(k).tap;
        let now = redirects.get(&w.ends[k].tap)?;
        (now.as_deref() != Some(peer.as_str())).then(|| (now.clone().unwrap_or_else(|| "nothing".into()), peer.clone()))
    }

    /// The IPv6 target of the same NIC when its network has a `subnet6`: the same VM,
    /// bridge and MAC, family [`Family::Ipv6`], and the SLAAC address to prove; no IPv4
    /// reservation, DHCP or subnet. `None` on a network without `subnet6` (and on external
    /// networks, whose prefixes topo does not know).
    pub fn ipv6_of(&self, network: &Network) -> Option<Self> {
        let NetworkKind::Managed(m) = &network.kind else { return None };
        let prefix = m.subnet6?;
        Some(NicTarget {
            family: Family::Ipv6,
            address6: Some(crate::lab::ipv6::slaac_address(prefix, self.mac)),
            reservation: None,
            dhcp: false,
            subnet: None,
            ..self.clone()
        })
    }

    /// The address this target expects, when one is known before probing: the IPv4
    /// reservation, or the IPv6 SLAAC address.
    pub fn expected(&self) -> Option<std::net::IpAddr> {
        match self.family {
            Family::Ipv4 => self.reservation.map(Into::into),
            Family::Ipv6 => self.address6.map(Into::into),
        }
    }
}

/// The running domains of `observed` other than `domain` with an interface of MAC `mac` on
/// network `network` (libvirt name), or on its bridge (a `type='bridge'` interface, or the
/// live XML's `<source bridge>`). Sorted libvirt names.
pub fn same_mac_elsewhere(observed: &Observed, domain: &str, mac: MacAddr, network: &str) -> Vec<String> {
    let bridge = observed.networks.get(network).and_then(|n| n.bridge_now());
    observed
        .domains
        .values()
        .filter(|d| d.name != domain && d.state == DomainState::Running)
        .filter(|d| {
            d.interfaces.iter().any(|i| {
                i.mac == Some(mac)
                    && (i.network.as_deref() == Some(network) || (bridge.is_some() && i.bridge.as_deref() == bridge))
            })
        })
        .map(|d| d.name.clone())
        .collect()
}

/// The targets of the lab's NICs (VMs sorted by name, NICs in file order), from the model
/// and what the host reports, each with the other running domains that have its MAC on its
/// network ([`same_mac_elsewhere`]: every domain observed, the lab's or not). A NIC on a
/// network with both `subnet` and `subnet6` has two targets, IPv4 then IPv6; with only
/// `subnet6`, its IPv6 one alone; otherwise its IPv4 one.
pub fn targets(lab: &Lab, observed: &Observed, access: HostAccess) -> Vec<NicTarget> {
    lab.nics()
        .filter_map(|(vm, nic)| {
            let net = lab.networks.get(&nic.network)?;
            let running =
                observed.domains.get(vm.libvirt_name.as_str()).is_some_and(|d| d.state == DomainState::Running);
            let mut t =
                NicTarget::from_model(vm, nic, net, observed.networks.get(net.libvirt_name.as_str()), running, access);
            t.same_mac = same_mac_elsewhere(observed, vm.libvirt_name.as_str(), nic.mac, net.libvirt_name.as_str());
            let v6 = t.ipv6_of(net);
            let v6_only = matches!(&net.kind, NetworkKind::Managed(m) if m.subnet.is_none()) && v6.is_some();
            Some((!v6_only).then_some(t).into_iter().chain(v6))
        })
        .flatten()
        .chain(lab.wires.values().flat_map(|w| {
            (0..2).filter_map(move |k| {
                let vm = lab.vms.get(&w.ends[k].vm)?;
                let running =
                    observed.domains.get(vm.libvirt_name.as_str()).is_some_and(|d| d.state == DomainState::Running);
                let mut t = NicTarget::wire_end(vm, w, k, running, access);
                // Judged only where the lab wants both VMs running (a wire to a VM stopped on
                // purpose carries nothing, and is not joined, by design).
                let both = w
                    .ends
                    .iter()
                    .all(|e| lab.vms.get(&e.vm).is_some_and(|v| v.state == crate::lab::model::VmState::Running));
                if running && both {
                    t.cut = NicTarget::wire_cut(w, k, &observed.wire_redirects);
                }
                Some(t)
            })
        }))
        .collect()
}

/// `3 NICs`, or `6 NICs (7 addresses)` where some NIC has a row per family: what a
/// verification of `targets` proves, for its progress line.
pub fn nics_and_addresses(targets: &[NicTarget]) -> String {
    let nics: std::collections::BTreeSet<(&VmName, &str)> = targets.iter().map(|t| (&t.vm, t.nic.as_str())).collect();
    let s = |n: usize| if n == 1 { "" } else { "s" };
    if nics.len() == targets.len() {
        format!("{} NIC{}", nics.len(), s(nics.len()))
    } else {
        format!("{} NIC{} ({} addresses)", nics.len(), s(nics.len()), targets.len())
    }
}
