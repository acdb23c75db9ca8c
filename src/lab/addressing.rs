//! Derived IPv4 addresses: the DHCP reservation topo gives every NIC on a lab network that
//! has no `ip:` in the lab file (docs/addressing.md).
//!
//! The rule, in full:
//! - the *candidates* of a network are the addresses its reservations may take: the DHCP
//!   range (or, with `dhcp: false`, every host address of the subnet), without the gateway
//!   and without the addresses ending in .0 or .255 inside 192.0.0.0-223.255.255.255, which
//!   dnsmasq never hands out ([`class_c_edge`]). They depend only on the network's own
//!   `subnet`, `gateway` and `dhcp`, never on its NICs;
//! - every written `ip:` on the network occupies its address before anything is derived;
//! - each NIC to derive has a *key*: SHA-256 of `"topo-ip-v1\0" + lab + "\0" + vm + "\0" +
//!   NIC index in decimal` (the same shape as [`crate::lab::model::MacAddr::derived`]);
//! - the NICs take their addresses in the order of their keys (ties, never seen in practice,
//!   by VM name and index); each starts at candidate `key mod n` (`n` candidates, the key's
//!   first 8 bytes read big-endian) and takes the first one not occupied, walking up and
//!   wrapping round (linear probing).
//!
//! So a NIC's address depends on the lab name, its VM name and index, the network's
//! candidates, the written `ip:`s, and the NICs *before it in key order* whose walk reaches
//! its start candidate's run of occupied addresses. Adding or removing a VM moves another
//! NIC only when one of the added or removed NICs comes before it in key order and starts in
//! the run of occupied candidates that ends at its address (two NICs hashing to one slot is
//! the plainest case); a new written `ip:` moves only the NIC that had that address, and
//! those after it in the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::lab::model::{DhcpRange, LabName, VmName};

/// dnsmasq never hands out an address ending in .0 or .255 inside the old class C space
/// (192.0.0.0 - 223.255.255.255), even in a larger subnet where it is a host address
/// (dnsmasq src/dhcp.c, `address_allocate`: "broken in Windows", KB281579).
pub fn class_c_edge(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    (192..=223).contains(&o[0]) && (o[3] == 0 || o[3] == 255)
}

/// The candidates (see the module) of a network with `subnet` and `gateway`, from its DHCP
/// `range`, or from the subnet's host addresses when it has none (`dhcp: false`), in
/// ascending order. Empty for a subnet without host addresses (/31, /32).
pub fn candidates(subnet: Ipv4Network, gateway: Option<Ipv4Addr>, range: Option<DhcpRange>) -> Vec<Ipv4Addr> {
    let (start, end) = match range {
        Some(r) => (u32::from(r.start), u32::from(r.end)),
        None if subnet.prefix() >= 31 => return Vec::new(),
        None => (u32::from(subnet.network()) + 1, u32::from(subnet.broadcast()) - 1),
    };
    (start..=end).map(Ipv4Addr::from).filter(|ip| Some(*ip) != gateway && !class_c_edge(*ip)).collect()
}

/// The derivation key of NIC `index` of VM `vm` in lab `lab` (see the module): 32 bytes.
pub fn key(lab: &LabName, vm: &VmName, index: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"topo-ip-v1\0");
    h.update(lab.as_str().as_bytes());
    h.update(b"\0");
    h.update(vm.as_str().as_bytes());
    h.update(b"\0");
    h.update(index.to_string().as_bytes());
    h.finalize().into()
}

/// The start candidate of `key` among `n` candidates: its first 8 bytes, big-endian, mod `n`.
/// `n` must not be 0 (then there is no candidate to start at).
fn slot(key: &[u8; 32], n: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    (u64::from_be_bytes(first) % n as u64) as usize
}

/// More NICs to derive than free candidates: how many there were of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Candidates not occupied by a written `ip:`.
    pub free: usize,
    /// NICs that needed one.
    pub wanted: usize,
}

/// Gives each NIC of `nics` (VM, index) on one network of lab `lab` its derived address
/// among `candidates` (ascending, from [`candidates`]), none of `taken` (the written `ip:`s
/// of the network; those outside the candidates change nothing). The result is the same
/// whatever the order of `nics`; duplicates in `nics` are taken once.
///
/// # Errors
/// [`Shortfall`] when the NICs outnumber the free candidates: nothing is assigned.
pub fn assign(
    lab: &LabName,
    nics: &[(VmName, usize)],
    candidates: &[Ipv4Addr],
    taken: &BTreeSet<Ipv4Addr>,
) -> Result<BTreeMap<(VmName, usize), Ipv4Addr>, Shortfall> {
    let mut occupied: Vec<bool> = candidates.iter().map(|ip| taken.contains(ip)).collect();
    let mut order: Vec<([u8; 32], &VmName, usize)> = nics.iter().map(|(vm, i)| (key(lab, vm, *i), vm, *i)).collect();
    order.sort();
    order.dedup();
    let free = occupied.iter().filter(|o| !**o).count();
    if order.len() > free {
        return Err(Shortfall { free, wanted: order.len() });
    }
    let n = candidates.len();
    let mut out = BTreeMap::new();
    for (k, vm, index) in order {
        // Invariant: n > 0 and a free candidate exists (order.len() <= free, and each NIC
        // before took exactly one), so the walk ends within n steps.
        let start = slot(&k, n);
        let Some(at) = (0..n).map(|step| (start + step) % n).find(|&i| !occupied[i]) else {
            return Err(Shortfall { free, wanted: nics.len() });
        };
        occupied[at] = true;
        out.insert((vm.clone(), index), candidates[at]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> LabName {
        LabName::new("addr").unwrap()
    }
    fn vm(s: &str) -> VmName {
        VmName::new(s).unwrap()
    }
    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn range(a: &str, b: &str) -> Option<DhcpRange> {
        Some(DhcpRange { start: a.parse().unwrap(), end: b.parse().unwrap() })
    }

    #[test]
    fn candidates_skip_the_gateway_and_class_c_edges() {
        let c = candidates(net("192.168.152.0/23"), Some("192.168.152.1".parse().unwrap()), None);
        assert_eq!(c.len(), 510 - 1 - 2, "a /23 has 510 hosts; the gateway, .255 and .0 (in the middle) are out");
        assert!(!c.contains(&"192.168.152.255".parse().unwrap()));
        assert!(!c.contains(&"192.168.153.0".parse().unwrap()));
        let r = candidates(net("10.0.0.0/16"), Some("10.0.0.1".parse().unwrap()), range("10.0.0.250", "10.0.1.5"));
        assert_eq!(r.len(), 12, "outside class C, .255 and .0 are ordinary addresses");
        assert!(candidates(net("10.0.0.0/31"), None, None).is_empty());
    }

    #[test]
    fn the_key_and_the_address_are_pinned() {
        // Changing the derivation moves every user's addresses. Values computed independently
        // with Python hashlib from the documented formula: SHA-256 of
        // b"topo-ip-v1\x00addr\x00a\x000", first 8 bytes c9e8c1664c26fad5, mod 253 = 72.
        let k = key(&lab(), &vm("a"), 0);
        let hex: String = k.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "c9e8c1664c26fad5");
        let c = candidates(net("10.1.0.0/24"), Some("10.1.0.1".parse().unwrap()), None);
        assert_eq!(c.len(), 253);
        let got = assign(&lab(), &[(vm("a"), 0)], &c, &BTreeSet::new()).unwrap();
        assert_eq!(got[&(vm("a"), 0)], Ipv4Addr::new(10, 1, 0, 74));
    }

    #[test]
    fn deterministic_and_independent_of_order() {
        let c = candidates(net("10.1.0.0/24"), Some("10.1.0.1".parse().unwrap()), None);
        let nics: Vec<(VmName, usize)> = ["a", "b", "c", "d"].iter().map(|n| (vm(n), 0)).collect();
        let mut rev = nics.clone();
        rev.reverse();
        let one = assign(&lab(), &nics, &c, &BTreeSet::new()).unwrap();
        assert_eq!(one, assign(&lab(), &rev, &c, &BTreeSet::new()).unwrap());
        let ips: BTreeSet<_> = one.values().collect();
        assert_eq!(ips.len(), 4, "distinct");
        assert!(one.values().all(|ip| c.contains(ip)));
    }

    #[test]
    fn written_addresses_are_never_derived() {
        // Two candidates, one taken: the one NIC gets the other whatever its key.
        let c: Vec<Ipv4Addr> = vec!["10.1.0.2".parse().unwrap(), "10.1.0.3".parse().unwrap()];
        for name in ["a", "b", "c", "d", "e"] {
            let taken: BTreeSet<Ipv4Addr> = [c[0]].into();
            let got = assign(&lab(), &[(vm(name), 0)], &c, &taken).unwrap();
            assert_eq!(got[&(vm(name), 0)], c[1]);
        }
    }

    #[test]
    fn too_many_nics_is_a_shortfall() {
        let c: Vec<Ipv4Addr> = vec!["10.1.0.2".parse().unwrap(), "10.1.0.3".parse().unwrap()];
        let taken: BTreeSet<Ipv4Addr> = [c[1]].into();
        assert_eq!(assign(&lab(), &[(vm("a"), 0), (vm("b"), 0)], &c, &taken), Err(Shortfall { free: 1, wanted: 2 }));
    }

    /// A NIC added elsewhere does not move the others when their slots do not collide; when
    /// the new NIC comes first in key order and starts on another's slot, that one moves to
    /// the next free candidate (the documented limit).
    #[test]
    fn adding_a_vm_moves_only_a_nic_whose_slot_it_takes() {
        let c = candidates(net("10.1.0.0/24"), Some("10.1.0.1".parse().unwrap()), None);
        let n = c.len();
        let base: Vec<(VmName, usize)> = (0..5).map(|i| (vm(&format!("v{i}")), 0)).collect();
        let before = assign(&lab(), &base, &c, &BTreeSet::new()).unwrap();
        let slot_of = |v: &VmName| slot(&key(&lab(), v, 0), n);
        let slots: BTreeSet<usize> = base.iter().map(|(v, _)| slot_of(v)).collect();
        assert_eq!(slots.len(), 5, "this lab has no collision among its own NICs");
        // A new VM whose slot is free and not next to a taken one: nobody moves.
        let calm = (0..1000)
            .map(|i| vm(&format!("new{i}")))
            .find(|v| (0..=1).all(|d| !slots.contains(&((slot_of(v) + d) % n))))
            .unwrap();
        let mut more = base.clone();
        more.push((calm.clone(), 0));
        let after = assign(&lab(), &more, &c, &BTreeSet::new()).unwrap();
        for k in &base {
            assert_eq!(before[k], after[k], "{k:?} stays");
        }
        // A new VM on the slot of v0 whose key comes before v0's: v0 moves one up, only it.
        let k0 = key(&lab(), &base[0].0, 0);
        let clash = (0..100_000)
            .map(|i| vm(&format!("x{i}")))
            .find(|v| slot_of(v) == slot_of(&base[0].0) && key(&lab(), v, 0) < k0)
            .unwrap();
        let mut more = base.clone();
        more.push((clash.clone(), 0));
        let after = assign(&lab(), &more, &c, &BTreeSet::new()).unwrap();
        assert_eq!(after[&(clash, 0)], before[&base[0]], "the new NIC takes the slot it hashes to");
        assert_ne!(after[&base[0]], before[&base[0]], "v0 moved");
        for k in &base[1..] {
            assert_eq!(before[k], after[k], "{k:?} stays");
        }
    }
}
