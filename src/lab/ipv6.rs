//! IPv6 on lab networks: the SLAAC address every guest NIC configures from its network's
//! /64 prefix and its MAC (docs/addressing.md, section IPv6), and the prefix length SLAAC
//! needs.

use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;

use crate::lab::model::MacAddr;

/// The only prefix length a lab network's `subnet6` may have: SLAAC forms an address from a
/// /64 prefix and a 64-bit interface identifier (RFC 4862 section 5.5.3 d, RFC 4291 section
/// 2.5.1), and dnsmasq refuses any other length in a `dhcp-range` with router
/// advertisements ("prefix length must be exactly 64 for RA subnets", dnsmasq src/option.c),
/// which is what libvirt writes for an IPv6 `<ip>`.
pub const SLAAC_PREFIX_LEN: u8 = 64;

/// The modified EUI-64 interface identifier of `mac` (RFC 4291 appendix A): the MAC's first
/// three bytes with the universal/local bit (0x02 of the first byte) inverted, `ff:fe`, then
/// its last three bytes. Eight bytes, network order.
pub fn modified_eui64(mac: MacAddr) -> [u8; 8] {
    let m = mac.octets();
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The address a Linux guest configures by SLAAC on `prefix` for a NIC with MAC `mac`: the
/// prefix's first 64 bits and [`modified_eui64`] of the MAC. That is the kernel's default
/// (`net.ipv6.conf.*.addr_gen_mode = 0`, eui64; `use_tempaddr = 0`, no privacy address
/// beside it: net/ipv6/addrconf.c `addrconf_ifid_eui48`). `prefix` is a /64
/// ([`SLAAC_PREFIX_LEN`]); a longer or shorter one still gives its first 64 bits.
pub fn slaac_address(prefix: Ipv6Network, mac: MacAddr) -> Ipv6Addr {
    let p = prefix.network().octets();
    let id = modified_eui64(mac);
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&p[..8]);
    a[8..].copy_from_slice(&id);
    Ipv6Addr::from(a)
}

/// The default bridge address of `prefix`: its `::1` (the first address after the
/// subnet-router anycast address, RFC 4291 section 2.6.1).
pub fn default_gateway6(prefix: Ipv6Network) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC")
    }

    /// RFC 4291 appendix A's rule on QEMU's prefix: 52:54:00 becomes 50:54:00 (the
    /// universal/local bit inverted), ff:fe in the middle. The same address `ip -6 addr`
    /// shows in a Linux guest with that MAC on an RA'd fd00:10::/64.
    #[test]
    fn eui64_of_a_qemu_mac() {
        let p: Ipv6Network = "fd00:10::/64".parse().expect("prefix");
        assert_eq!(
            slaac_address(p, mac("52:54:00:12:34:56")),
            "fd00:10::5054:ff:fe12:3456".parse::<Ipv6Addr>().expect("a")
        );
        assert_eq!(modified_eui64(mac("00:1b:21:aa:bb:cc")), [0x02, 0x1b, 0x21, 0xff, 0xfe, 0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn default_gateway_is_prefix_one() {
        let p: Ipv6Network = "fd00:10::/64".parse().expect("prefix");
        assert_eq!(default_gateway6(p), "fd00:10::1".parse::<Ipv6Addr>().expect("a"));
    }
}
