//! VXLAN tunnels that stretch a lab network's bridge across hosts, as the machine that runs a
//! host holds them (types shared by the planner and the machine boundary).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A lab network's tunnel on one host, as wanted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    pub device: String,
    pub alias: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub dstport: u16,
    pub peers: BTreeSet<Ipv4Addr>,
    pub bridge: String,
    pub mtu: u32,
}

/// A VXLAN device as found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTunnel {
    pub device: String,
    pub alias: Option<String>,
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub dstport: u16,
    pub peers: BTreeSet<Ipv4Addr>,
    pub master: Option<String>,
    pub mtu: u32,
    pub up: bool,
}
