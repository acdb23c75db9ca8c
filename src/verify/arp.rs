//! ARP frames on the wire: building who-has requests and parsing replies (pure, no I/O).
//!
//! Only Ethernet II + ARP for IPv4 over Ethernet (RFC 826) is handled. A request is always
//! 42 bytes (the kernel pads it to the 60-byte minimum); a reply may carry padding, which is
//! ignored. Everything else — other EtherTypes, VLAN tags, requests, other hardware or
//! protocol types, short frames — is not a reply and parses to `None`.

use std::net::Ipv4Addr;

use pnet_base::MacAddr as WireMac;
use pnet_packet::Packet as _;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};

use crate::lab::model::MacAddr;

/// Length of an Ethernet II header (14 bytes) plus an IPv4-over-Ethernet ARP body (28).
pub const FRAME_LEN: usize = 42;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// An ARP reply: `sender_ip is at sender_mac`, sent to whoever asked `target_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArpReply {
    /// The MAC that answered (the ARP sender hardware address).
    pub sender_mac: MacAddr,
    /// The address it claims to hold.
    pub sender_ip: Ipv4Addr,
    /// The asker's address as echoed back; `0.0.0.0` for answers to ARP probes.
    pub target_ip: Ipv4Addr,
}

/// An Ethernet-broadcast ARP request "who has `target_ip`? tell `src_ip`" (`pnet_packet`'s
/// Ethernet and ARP layouts).
///
/// Pass `Ipv4Addr::UNSPECIFIED` as `src_ip` when the sending interface has no IPv4 address:
/// that makes the request an ARP probe (RFC 5227), which hosts answer without learning a
/// bogus mapping for the asker.
pub fn build_request(src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mac = src_mac.wire();
    let mut f = [0u8; FRAME_LEN];
    // Invariant: FRAME_LEN is the minimum size of an Ethernet header plus an ARP body, so
    // both views fit.
    let mut eth = MutableEthernetPacket::new(&mut f).expect("an Ethernet header fits in FRAME_LEN");
    eth.set_destination(WireMac::broadcast());
    eth.set_source(mac);
    eth.set_ethertype(EtherTypes::Arp);
    let mut arp = MutableArpPacket::new(pnet_packet::MutablePacket::payload_mut(&mut eth))
        .expect("an ARP body fits after the header");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(src_ip);
    // Target hardware address stays zero: unknown, that is the question.
    arp.set_target_hw_addr(WireMac::zero());
    arp.set_target_proto_addr(target_ip);
    f
}

/// Reads an ARP reply out of an Ethernet frame; `None` for anything else.
///
/// Requires EtherType 0x0806, hardware type Ethernet with 6-byte addresses, protocol type
/// IPv4 with 4-byte addresses, opcode 2 (reply), a unicast sender MAC, and at least
/// [`FRAME_LEN`] bytes (trailing padding is allowed).
pub fn parse_reply(frame: &[u8]) -> Option<ArpReply> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
        || arp.get_operation() != ArpOperations::Reply
    {
        return None;
    }
    let sender_mac = MacAddr::unicast(arp.get_sender_hw_addr()).ok()?;
    Some(ArpReply { sender_mac, sender_ip: arp.get_sender_proto_addr(), target_ip: arp.get_target_proto_addr() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC is valid")
    }

    /// A reply as a Linux guest sends it, built independently of `build_request`.
    fn reply_frame(sha: [u8; 6], sip: [u8; 4], tha: [u8; 6], tip: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&tha);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&sip);
        f.extend_from_slice(&tha);
        f.extend_from_slice(&tip);
        f
    }

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const BRIDGE: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];

    #[test]
    fn request_layout_is_rfc826() {
        let f = build_request(mac("52:54:00:aa:bb:cc"), Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 5));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,  0x08, 0x06,
            0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x01,
            0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,  10, 0, 0, 1,
            0, 0, 0, 0, 0, 0,  10, 0, 0, 5,
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn probe_request_has_zero_sender_ip() {
        let f = build_request(mac("52:54:00:aa:bb:cc"), Ipv4Addr::UNSPECIFIED, [10, 0, 0, 5].into());
        assert_eq!(&f[28..32], &[0, 0, 0, 0]);
        assert_eq!(&f[38..42], &[10, 0, 0, 5]);
    }

    #[test]
    fn own_request_is_not_a_reply() {
        let f = build_request(mac("52:54:00:aa:bb:cc"), [10, 0, 0, 1].into(), [10, 0, 0, 5].into());
        assert_eq!(parse_reply(&f), None);
    }

    #[test]
    fn parses_reply() {
        let f = reply_frame(GUEST, [10, 0, 0, 5], BRIDGE, [10, 0, 0, 1]);
        assert_eq!(
            parse_reply(&f),
            Some(ArpReply {
                sender_mac: mac("52:54:00:12:34:56"),
                sender_ip: Ipv4Addr::new(10, 0, 0, 5),
                target_ip: Ipv4Addr::new(10, 0, 0, 1),
            })
        );
    }

    #[test]
    fn parses_padded_reply() {
        let mut f = reply_frame(GUEST, [10, 0, 0, 5], BRIDGE, [0, 0, 0, 0]);
        f.resize(60, 0);
        let r = parse_reply(&f).expect("padded reply parses");
        assert_eq!(r.sender_ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(r.target_ip, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn rejects_malformed_and_foreign_frames() {
        let good = reply_frame(GUEST, [10, 0, 0, 5], BRIDGE, [10, 0, 0, 1]);
        assert!(parse_reply(&good).is_some());
        // Every truncation.
        for n in 0..good.len() {
            assert_eq!(parse_reply(&good[..n]), None, "truncated to {n}");
        }
        let mutate = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            parse_reply(&f)
        };
        assert!(mutate(12, 0x08).is_some(), "sanity: writing the same byte keeps it valid");
        assert_eq!(mutate(13, 0x00), None, "EtherType IPv4");
        assert_eq!(mutate(12, 0x81), None, "VLAN tag / other EtherType");
        assert_eq!(mutate(15, 6), None, "hardware type IEEE 802");
        assert_eq!(mutate(16, 0x86), None, "protocol type IPv6");
        assert_eq!(mutate(18, 8), None, "hardware length");
        assert_eq!(mutate(19, 16), None, "protocol length");
        assert_eq!(mutate(21, 1), None, "request opcode");
        assert_eq!(mutate(21, 3), None, "RARP opcode");
        assert_eq!(mutate(20, 1), None, "opcode 258");
        assert_eq!(mutate(22, 0x01), None, "multicast sender MAC");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_reply(&bytes);
        }

        #[test]
        fn reply_roundtrip(
            sha in any::<[u8; 6]>(),
            sip in any::<[u8; 4]>(),
            tip in any::<[u8; 4]>(),
            pad in 0usize..32,
        ) {
            let mut sha = sha;
            sha[0] &= 0xfe; // unicast
            let mut f = reply_frame(sha, sip, BRIDGE, tip);
            f.resize(f.len() + pad, 0);
            let r = parse_reply(&f).expect("well-formed reply parses");
            prop_assert_eq!(r.sender_mac.octets(), sha);
            prop_assert_eq!(r.sender_ip.octets(), sip);
            prop_assert_eq!(r.target_ip.octets(), tip);
        }

        #[test]
        fn requests_never_parse_as_replies(
            sha in any::<[u8; 6]>(), sip in any::<[u8; 4]>(), tip in any::<[u8; 4]>(),
        ) {
            let mut sha = sha;
            sha[0] &= 0xfe;
            let m = MacAddr::new(sha).expect("unicast");
            prop_assert_eq!(parse_reply(&build_request(m, sip.into(), tip.into())), None);
        }
    }
}
