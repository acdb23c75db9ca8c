//! Resource addresses: what a plan step, an owner tag and a report line name. One typed
//! enum, shown and parsed as `network.NAME`, `vm.NAME`, `volume.NAME`, `pool.NAME`,
//! `tunnel.NAME`, `wire.NAME`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lab::names::{NetworkName, PoolName, VmName, VolumeName};

/// A resource topo plans for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// A lab network, by its name in the lab file.
    Network(NetworkName),
    /// A lab VM, by its name in the lab file.
    Vm(VmName),
    /// A storage volume of the overlay pool, by its libvirt volume name (volumes are not
    /// declared in the lab file: an orphaned overlay is planned under this address).
    Volume(VolumeName),
    /// A storage pool, by its libvirt name (the shared overlay pool).
    Pool(PoolName),
    /// The VXLAN tunnel of a lab network stretched across hosts, on one host
    /// ([`crate::lab::hosts::Tunnel`]), by the network's name in the lab file.
    Tunnel(NetworkName),
    /// A point-to-point wire between two VM NICs (`links:`), by its name (`r1--r2`).
    Wire(crate::lab::wire::WireName),
}

impl Address {
    /// `network`, `vm`, `volume` or `pool`.
    pub fn kind(&self) -> &'static str {
        match self {
            Address::Network(_) => "network",
            Address::Vm(_) => "vm",
            Address::Volume(_) => "volume",
            Address::Pool(_) => "pool",
            Address::Tunnel(_) => "tunnel",
            Address::Wire(_) => "wire",
        }
    }

    /// The name after the kind.
    pub fn name(&self) -> &str {
        match self {
            Address::Network(n) => n.as_str(),
            Address::Vm(v) => v.as_str(),
            Address::Volume(v) => v.as_str(),
            Address::Pool(p) => p.as_str(),
            Address::Tunnel(n) => n.as_str(),
            Address::Wire(w) => w.as_str(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind(), self.name())
    }
}

/// Why a string is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource address (network.NAME, vm.NAME, volume.NAME, pool.NAME, tunnel.NAME or wire.NAME)")]
pub struct AddressError(pub String);

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressError(s.to_string());
        let (kind, name) = s.split_once('.').ok_or_else(bad)?;
        match kind {
            "network" => NetworkName::new(name).map(Address::Network).map_err(|_| bad()),
            "vm" => VmName::new(name).map(Address::Vm).map_err(|_| bad()),
            "volume" => VolumeName::new(name).map(Address::Volume).map_err(|_| bad()),
            "pool" => PoolName::new(name).map(Address::Pool).map_err(|_| bad()),
            "tunnel" => NetworkName::new(name).map(Address::Tunnel).map_err(|_| bad()),
            "wire" => crate::lab::wire::WireName::parse(name).map(Address::Wire).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Compares with the displayed form, for tests and report look-ups.
impl PartialEq<str> for Address {
    fn eq(&self, other: &str) -> bool {
        other.split_once('.').is_some_and(|(k, n)| k == self.kind() && n == self.name())
    }
}

impl PartialEq<&str> for Address {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["network.local_net", "vm.deb1", "volume.a-1.qcow2", "pool.topo-overlays", "tunnel.lan"] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a, s);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Address>(&format!("\"{s}\"")).unwrap(), a);
        }
        // A volume is a file in its pool's folder, and libvirt refuses '/' in a pool's name.
        for bad in ["vm", "vm.", "disk.x", "vm.Bad Name", "network.", "volume.", "volume.a/b", "volume..", "pool.a/b"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
