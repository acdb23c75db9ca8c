//! What the host has: libvirt networks and domains as observed, classified by owner.
//!
//! Filled by a `Hypervisor` in one pass before planning; the planner reads it and does no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{DhcpRange, MacAddr, NetworkMode};

/// XML namespace of the `<metadata>` element topo puts on every object it creates.
/// (`.invalid` is a reserved top-level domain: the URI names no real host.)
pub const OWNER_NS: &str = "http://topo.invalid/xmlns/lab/1";

/// Who created an object, read back from its `<metadata>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct OwnerTag {
    /// The lab's name (model::LabName as text).
    pub lab: String,
    /// The resource's address in the lab: `network.local_net`, `vm.deb1`.
    pub resource: String,
    /// Hash of the desired spec the object was last written from (hex).
    pub spec_hash: String,
}

/// libvirt's `<forward mode>` as found on the host; modes topo does not create are `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ObservedMode {
    Known(NetworkMode),
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedHost {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub dhcp_range: Option<DhcpRange>,
    /// `<host>` entries of `<dhcp>`, sorted by MAC.
    pub hosts: Vec<ObservedHost>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedNetwork {
    pub name: String,
    pub uuid: Option<String>,
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
    pub mode: ObservedMode,
    /// Bridge name (libvirt fills `virbrN` in when the XML named none).
    pub bridge: Option<String>,
    /// Bridge of the running network (its live XML); `None` when inactive. It differs from
    /// `bridge` (the persistent config) when the config was redefined without a bridge name
    /// while the network ran: libvirt then gives the config another free `virbrN`.
    pub live_bridge: Option<String>,
    /// `stp` attribute of `<bridge>`; libvirt's default when absent is on.
    pub stp: bool,
    /// First IPv4 `<ip>` element, if any.
    pub ip: Option<ObservedIp>,
    /// False when dnsmasq runs with `no-ping` (set through dnsmasq:options).
    pub dhcp_ping: bool,
    pub owner: Option<OwnerTag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    Running,
    Paused,
    Shutoff,
    /// Crashed, suspended by the host, shutting down, ...
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedInterface {
    pub mac: Option<MacAddr>,
    /// `<source network=...>` for `type='network'` interfaces; None for other types.
    pub network: Option<String>,
    pub model: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedDomain {
    pub name: String,
    pub uuid: Option<String>,
    pub state: DomainState,
    /// `type` attribute of `<domain>`: `qemu`, `kvm`, ...
    pub virt_type: String,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// Source paths of the disks, in device order.
    pub disks: Vec<String>,
    /// Interfaces in device order (the persistent config when the domain is defined).
    pub interfaces: Vec<ObservedInterface>,
    pub owner: Option<OwnerTag>,
}

/// Everything topo looked at on the host, keyed by libvirt name (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub networks: BTreeMap<String, ObservedNetwork>,
    pub domains: BTreeMap<String, ObservedDomain>,
}

/// A DHCP lease from libvirt's dnsmasq (`virNetworkGetDHCPLeases`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub network: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    /// Seconds since the epoch when the lease expires.
    pub expiry: i64,
}

/// How an observed object relates to a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this lab.
    ThisLab,
    /// Created by another topo lab (named in the tag).
    OtherLab,
    /// Not created by topo.
    NotOwned,
}

impl Ownership {
    pub fn of(owner: Option<&OwnerTag>, lab: &str) -> Self {
        match owner {
            Some(t) if t.lab == lab => Ownership::ThisLab,
            Some(_) => Ownership::OtherLab,
            None => Ownership::NotOwned,
        }
    }
}
