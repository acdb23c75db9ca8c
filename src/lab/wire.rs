//! Point-to-point wires (`links:` in the lab file): a cable between two VM NICs with no lab
//! network between them. Each end is a NIC of its VM (`<interface type='ethernet'>`, a tap
//! libvirt makes under the name topo derives), and the host joins the two taps with `tc`:
//! every frame one guest sends is redirected, unchanged, to the other guest's tap
//! ([`crate::host::wire`]). No bridge sees the frames, so what a cable passes passes: LLDP,
//! LACP, STP and every other link-local group address that a Linux bridge keeps to itself
//! (docs/wires.md).
//!
//! Names, MACs, taps and addresses are derived from the lab file alone, so the same file
//! gives the same wires on every host.

use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use miette::SourceSpan;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::lab::names::{LabName, MacAddr, VmName};

/// The pool wire addresses come from when the lab file sets no `link_subnet:`: a /24 of
/// the shared address space (RFC 6598), which no host route of an ordinary host covers.
pub const DEFAULT_LINK_SUBNET: &str = "100.127.0.0/24";

/// The prefix length of each wire's subnet: a /31, two addresses and no broadcast, as
/// RFC 3021 allows on a point-to-point link (Linux has honoured it since 2.6.x).
pub const WIRE_PREFIX: u8 = 31;

/// A wire's name: the two VM names joined by `--`, then `.2`, `.3`, ... for the second and
/// later wires between the same two VMs in the same order (`r1--r2`, `r1--r2.2`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WireName(String);

impl WireName {
    /// The name of the `nth` (1-based) wire from `a` to `b`.
    pub fn of(a: &VmName, b: &VmName, nth: usize) -> Self {
        if nth <= 1 { Self(format!("{a}--{b}")) } else { Self(format!("{a}--{b}.{nth}")) }
    }

    /// A name as shown (`--target wire.NAME`); any text without a space, `/` or NUL.
    /// `None` when empty, or holding whitespace, `/` or NUL.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '/' || c == '\0') {
            return None;
        }
        Some(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WireName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One end of a wire: a NIC of `vm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEnd {
    pub vm: VmName,
    /// The NIC's position among the VM's NICs (after its `nics:`, in `links:` order): its
    /// PCI order, and `ethN` in the guest's name for it.
    pub index: usize,
    /// The NIC's MAC ([`wire_mac`]).
    pub mac: MacAddr,
    /// The tap device on the host ([`wire_tap`]).
    pub tap: String,
    /// The end's IPv4 address in the wire's /31.
    pub ip: Ipv4Addr,
}

/// A wire between two VM NICs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire {
    pub name: WireName,
    /// The ends in the order the lab file writes them.
    pub ends: [WireEnd; 2],
    /// The wire's /31 of the lab's `link_subnet`.
    pub subnet: Ipv4Network,
    /// The `links:` entry.
    pub span: SourceSpan,
}

impl Wire {
    /// The other end than `end` (0 or 1).
    pub fn peer_of(&self, end: usize) -> &WireEnd {
        &self.ends[1 - end.min(1)]
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\0");
        }
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// The MAC of end `end` (0 or 1) of wire `wire`: QEMU's locally administered prefix
/// 52:54:00, then the first three bytes of SHA-256("topo-wire-mac-v1\0" + lab + "\0" + wire
/// + "\0" + end). Independent of the VMs' other NICs, so adding a NIC leaves it as it is.
pub fn wire_mac(lab: &LabName, wire: &WireName, end: usize) -> MacAddr {
    let d = digest(&["topo-wire-mac-v1", lab.as_str(), wire.as_str(), &end.to_string()]);
    // Invariant: 52 has the multicast bit clear, so the address is unicast.
    MacAddr::new([0x52, 0x54, 0x00, d[0], d[1], d[2]]).unwrap_or_else(|_| unreachable!("52:54:00 is unicast"))
}

/// The tap device name of end `end` of wire `wire` in the lab with libvirt prefix `prefix`:
/// `tw` and 10 hex digits of SHA-256("topo-wire-tap-v1\0" + lab + "\0" + prefix + "\0" +
/// wire + "\0" + end), 12 bytes (the kernel's limit is 15, IFNAMSIZ - 1). libvirt names the
/// tap of a `type='ethernet'` interface as its `<target dev>` says, unless the name starts
/// with `vnet`, `vif`, `macvtap` or `macvlan` (its own prefixes, src/conf/domain_conf.c
/// `virDomainNetDefParseXML`), which `tw` does not.
pub fn wire_tap(lab: &LabName, prefix: &str, wire: &WireName, end: usize) -> String {
    let d = digest(&["topo-wire-tap-v1", lab.as_str(), prefix, wire.as_str(), &end.to_string()]);
    format!("tw{:02x}{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3], d[4])
}

/// Whether `dev` has the shape of a wire end's tap ([`wire_tap`]): `tw` and 10 lowercase hex
/// digits.
pub fn is_wire_tap(dev: &str) -> bool {
    dev.len() == 12 && dev.starts_with("tw") && dev[2..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The /31 of the `nth` (0-based, in `links:` order) wire in `pool`; `None` when the pool
/// has fewer than `nth + 1` of them.
pub fn wire_subnet(pool: Ipv4Network, nth: usize) -> Option<Ipv4Network> {
    let base = u32::from(pool.network());
    let size = pool.size();
    let offset = u32::try_from(nth).ok()?.checked_mul(2)?;
    if u64::from(offset) + 2 > u64::from(size) {
        return None;
    }
    Ipv4Network::new(Ipv4Addr::from(base + offset), WIRE_PREFIX).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_stable_and_distinct() {
        let lab = LabName::new("demo").unwrap();
        let w = WireName::of(&VmName::new("r1").unwrap(), &VmName::new("r2").unwrap(), 1);
        assert_eq!(w.as_str(), "r1--r2");
        assert_eq!(WireName::of(&VmName::new("r1").unwrap(), &VmName::new("r2").unwrap(), 2).as_str(), "r1--r2.2");
        assert_ne!(wire_mac(&lab, &w, 0), wire_mac(&lab, &w, 1));
        assert_eq!(wire_mac(&lab, &w, 0), wire_mac(&lab, &w, 0));
        let t = wire_tap(&lab, "demo-", &w, 0);
        assert_eq!(t.len(), 12);
        assert!(t.starts_with("tw"));
        assert_ne!(t, wire_tap(&lab, "other-", &w, 0));
        assert_eq!(t, wire_tap(&lab, "demo-", &w, 0));
    }

    #[test]
    fn each_wire_takes_the_next_31() {
        let pool: Ipv4Network = "100.127.0.0/24".parse().unwrap();
        assert_eq!(wire_subnet(pool, 0).unwrap().to_string(), "100.127.0.0/31");
        assert_eq!(wire_subnet(pool, 1).unwrap().to_string(), "100.127.0.2/31");
        assert_eq!(wire_subnet(pool, 127).unwrap().to_string(), "100.127.0.254/31");
        assert_eq!(wire_subnet(pool, 128), None);
        let tiny: Ipv4Network = "10.0.0.0/31".parse().unwrap();
        assert_eq!(wire_subnet(tiny, 0).unwrap().to_string(), "10.0.0.0/31");
        assert_eq!(wire_subnet(tiny, 1), None);
        let one: Ipv4Network = "10.0.0.1/32".parse().unwrap();
        assert_eq!(wire_subnet(one, 0), None);
    }
}
