//! NDP frames on the wire: building Neighbor Solicitations and parsing Neighbor
//! Advertisements (RFC 4861), the IPv6 counterpart of [`super::arp`] (pure, no I/O).
//!
//! A solicitation asks "who has TARGET?" from the bridge: Ethernet II to the solicited-node
//! multicast MAC `33:33:ff:XX:XX:XX`, IPv6 to the solicited-node address
//! `ff02::1:ffXX:XXXX` (RFC 4291 2.7.1; the last 24 bits of the target), hop limit 255, an
//! ICMPv6 type 135 body with the source link-layer address option (RFC 4861 4.3), checksum
//! over the IPv6 pseudo-header (RFC 8200 8.1, `pnet_packet`'s `icmpv6::checksum`). An
//! advertisement is accepted only as RFC 4861 7.1.2 validates one: IPv6 next header 58, hop
//! limit 255, ICMPv6 type 136 code 0, a correct checksum; everything else parses to `None`.
//!
//! A tentative address (still in duplicate address detection, RFC 4862 5.4) does not answer
//! a solicitation: the caller retries within its timeout.

use std::net::Ipv6Addr;

use pnet_base::MacAddr as WireMac;
use pnet_packet::Packet as _;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborSolicitPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags, NeighborAdvertPacket,
};
use pnet_packet::icmpv6::{Icmpv6Code, Icmpv6Packet, Icmpv6Types, checksum};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

use crate::lab::model::MacAddr;

/// Ethernet II header (14) + IPv6 header (40) + Neighbor Solicitation (24) + source
/// link-layer address option (8).
pub const NS_FRAME_LEN: usize = 86;
/// Bytes of the ICMPv6 part of a solicitation: the body and its one option.
const NS_ICMP_LEN: usize = 32;
/// RFC 4861 7.1.1/7.1.2: NDP messages are sent with hop limit 255 and a receiver drops any
/// other (so they cannot come from off-link).
pub const NDP_HOP_LIMIT: u8 = 255;

/// A Neighbor Advertisement: `target` is at `sender_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighborAdvert {
    /// The Ethernet source of the frame: the MAC that answered.
    pub sender_mac: MacAddr,
    /// The target link-layer address option, when the advertisement carries one (a solicited
    /// advertisement to a unicast asker may leave it out, RFC 4861 4.4).
    pub target_mac: Option<MacAddr>,
    /// The address the advertisement is for.
    pub target: Ipv6Addr,
    /// The IPv6 source (the answering interface's address; usually the target itself).
    pub source: Ipv6Addr,
    /// The S flag: an answer to a solicitation, not an unsolicited announcement.
    pub solicited: bool,
}

impl NeighborAdvert {
    /// The MAC this advertisement puts forward for its target: the target link-layer
    /// option, else the Ethernet source. An advertisement whose option and Ethernet source
    /// differ (a proxy) is proof for neither: [`NeighborAdvert::consistent`] is false.
    pub fn mac(&self) -> MacAddr {
        self.target_mac.unwrap_or(self.sender_mac)
    }

    /// The Ethernet source and the target link-layer option (when present) are one MAC.
    pub fn consistent(&self) -> bool {
        self.target_mac.is_none_or(|m| m == self.sender_mac)
    }
}

/// The solicited-node multicast address of `target` (RFC 4291 2.7.1): `ff02::1:ff00:0/104`
/// plus the target's last 24 bits.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, t[13], t[14], t[15]])
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 section 7): `33:33`
/// and the address's last 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> WireMac {
    let g = group.octets();
    WireMac::new(0x33, 0x33, g[12], g[13], g[14], g[15])
}

/// A Neighbor Solicitation for `target`, from the bridge (`src_mac`, `src_ip`: its
/// link-local or its `gateway6` address), to `target`'s solicited-node multicast address,
/// with the source link-layer address option so the guest can answer without soliciting
/// back. `src_ip` must not be `::` (that would be a DAD probe, answered by multicast and
/// only by a node that holds the address tentatively too).
pub fn build_solicit(src_mac: MacAddr, src_ip: Ipv6Addr, target: Ipv6Addr) -> [u8; NS_FRAME_LEN] {
    let group = solicited_node(target);
    let mut f = [0u8; NS_FRAME_LEN];
    // Invariant: NS_FRAME_LEN holds the Ethernet header, the IPv6 header and the 32 bytes of
    // ICMPv6, so every view below fits.
    let mut eth = MutableEthernetPacket::new(&mut f).expect("an Ethernet header fits in NS_FRAME_LEN");
    eth.set_destination(multicast_mac(group));
    eth.set_source(src_mac.wire());
    eth.set_ethertype(EtherTypes::Ipv6);
    let mut ip = MutableIpv6Packet::new(pnet_packet::MutablePacket::payload_mut(&mut eth))
        .expect("an IPv6 header fits after the Ethernet header");
    ip.set_version(6);
    ip.set_payload_length(NS_ICMP_LEN as u16);
    ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip.set_hop_limit(NDP_HOP_LIMIT);
    ip.set_source(src_ip);
    ip.set_destination(group);
    let mut ns = MutableNeighborSolicitPacket::new(pnet_packet::MutablePacket::payload_mut(&mut ip))
        .expect("a solicitation fits after the IPv6 header");
    ns.set_icmpv6_type(Icmpv6Types::NeighborSolicit);
    ns.set_icmpv6_code(Icmpv6Code(0));
    ns.set_target_addr(target);
    // One 8-byte option: type 1, length 1 (in units of 8 bytes), the MAC.
    ns.set_options(&[NdpOption {
        option_type: NdpOptionTypes::SourceLLAddr,
        length: 1,
        data: src_mac.octets().to_vec(),
    }]);
    let sum = Icmpv6Packet::new(ns.packet()).map(|p| checksum(&p, &src_ip, &group)).unwrap_or_default();
    ns.set_checksum(sum);
    f
}

/// Reads a Neighbor Advertisement out of an Ethernet frame; `None` for anything else,
/// including an advertisement RFC 4861 7.1.2 says to drop (hop limit not 255, code not 0,
/// a wrong checksum, shorter than 24 bytes of ICMPv6, a multicast target) or one whose
/// Ethernet source is not unicast.
pub fn parse_advert(frame: &[u8]) -> Option<NeighborAdvert> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new(eth.payload())?;
    if ip.get_version() != 6
        || ip.get_next_header() != IpNextHeaderProtocols::Icmpv6
        || ip.get_hop_limit() != NDP_HOP_LIMIT
    {
        return None;
    }
    // The payload is cut to the IPv6 payload length (frame padding is not ICMPv6).
    let len = usize::from(ip.get_payload_length());
    let body = ip.payload().get(..len)?;
    let icmp = Icmpv6Packet::new(body)?;
    if icmp.get_icmpv6_type() != Icmpv6Types::NeighborAdvert
        || icmp.get_icmpv6_code() != Icmpv6Code(0)
        || body.len() < 24
        || checksum(&icmp, &ip.get_source(), &ip.get_destination()) != icmp.get_checksum()
    {
        return None;
    }
    let na = NeighborAdvertPacket::new(body)?;
    let target = na.get_target_addr();
    if target.is_multicast() {
        return None;
    }
    let target_mac = na
        .get_options_iter()
        .find(|o| o.get_option_type() == NdpOptionTypes::TargetLLAddr)
        .and_then(|o| <[u8; 6]>::try_from(o.payload().get(..6)?).ok())
        .and_then(|b| MacAddr::new(b).ok());
    Some(NeighborAdvert {
        sender_mac: MacAddr::unicast(eth.get_source()).ok()?,
        target_mac,
        target,
        source: ip.get_source(),
        solicited: na.get_flags() & NeighborAdvertFlags::Solicited != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC is valid")
    }
    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().expect("test address is valid")
    }

    const BRIDGE_LL: &str = "fe80::5054:ff:feaa:bbcc";
    const GUEST: &str = "fd00:10::5054:ff:fe12:3456";

    /// The solicitation, byte for byte: written out from RFC 4861 4.3 / RFC 8200 / RFC 2464
    /// by hand (not by the code under test); the checksum computed independently (the
    /// one's-complement sum over pseudo-header and body, as `tcpdump -v` checks it).
    #[test]
    fn solicit_is_the_known_good_frame() {
        let f = build_solicit(mac("52:54:00:aa:bb:cc"), ip6(BRIDGE_LL), ip6(GUEST));
        #[rustfmt::skip]
        let want: [u8; NS_FRAME_LEN] = [
            // Ethernet: 33:33:ff:12:34:56 <- bridge, IPv6
            0x33, 0x33, 0xff, 0x12, 0x34, 0x56,  0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,  0x86, 0xdd,
            // IPv6: version 6, payload 32, next header 58, hop limit 255
            0x60, 0, 0, 0,  0x00, 0x20, 58, 255,
            0xfe, 0x80, 0, 0, 0, 0, 0, 0,  0x50, 0x54, 0x00, 0xff, 0xfe, 0xaa, 0xbb, 0xcc,
            0xff, 0x02, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0x01, 0xff, 0x12, 0x34, 0x56,
            // ICMPv6 NS: type 135, code 0, checksum, reserved
            135, 0, CK[0], CK[1],  0, 0, 0, 0,
            0xfd, 0x00, 0x00, 0x10, 0, 0, 0, 0,  0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56,
            // source link-layer address option
            1, 1, 0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,
        ];
        assert_eq!(f, want);
    }

    /// The ICMPv6 checksum of the solicitation above, computed apart from pnet (python3's
    /// RFC 1071 sum over the pseudo-header src, dst, length 32, next header 58, and the 32
    /// bytes with a zero checksum).
    const CK: [u8; 2] = [0xab, 0x52];

    /// An advertisement as a Linux guest sends it in answer (solicited, override, target
    /// link-layer option), built by hand with its checksum, parses to the guest's MAC.
    fn advert(src_mac: [u8; 6], tll: Option<[u8; 6]>, hop: u8, flags: u8) -> Vec<u8> {
        let src = ip6(GUEST);
        let dst = ip6(BRIDGE_LL);
        let mut icmp = vec![136, 0, 0, 0, flags, 0, 0, 0];
        icmp.extend_from_slice(&src.octets());
        if let Some(t) = tll {
            icmp.extend_from_slice(&[2, 1]);
            icmp.extend_from_slice(&t);
        }
        let sum = rfc1071(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = vec![0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&u16::try_from(icmp.len()).expect("short").to_be_bytes());
        f.extend_from_slice(&[58, hop]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    /// RFC 1071's sum over the IPv6 pseudo-header (RFC 8200 8.1) and `body`, written here
    /// apart from pnet's helper.
    fn rfc1071(src: &Ipv6Addr, dst: &Ipv6Addr, body: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&u32::try_from(body.len()).expect("short").to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 58]);
        bytes.extend_from_slice(body);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    const G: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn a_guests_advert_parses() {
        let na = parse_advert(&advert(G, Some(G), 255, 0x60)).expect("an advertisement");
        assert_eq!(na.target, ip6(GUEST));
        assert_eq!(na.mac(), mac("52:54:00:12:34:56"));
        assert!(na.solicited && na.consistent());
        // Without the option the Ethernet source is the answer.
        let na = parse_advert(&advert(G, None, 255, 0x40)).expect("an advertisement");
        assert_eq!((na.target_mac, na.mac()), (None, mac("52:54:00:12:34:56")));
        // Ethernet padding after the ICMPv6 body is ignored.
        let mut padded = advert(G, Some(G), 255, 0x60);
        padded.extend_from_slice(&[0; 6]);
        assert!(parse_advert(&padded).is_some());
    }

    /// RFC 4861 7.1.2: hop limit other than 255, a bad checksum, a solicitation, or an
    /// IPv4 frame is not an advertisement; a proxy's (option MAC != Ethernet source) is
    /// inconsistent.
    #[test]
    fn what_is_not_an_advert() {
        assert_eq!(parse_advert(&advert(G, Some(G), 64, 0x60)), None, "hop limit 64");
        let mut bad = advert(G, Some(G), 255, 0x60);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(parse_advert(&bad), None, "checksum");
        let ns = build_solicit(mac("52:54:00:aa:bb:cc"), ip6(BRIDGE_LL), ip6(GUEST));
        assert_eq!(parse_advert(&ns), None, "a solicitation");
        assert_eq!(parse_advert(&ns[..60]), None, "short");
        let proxy = parse_advert(&advert([0x52, 0x54, 0, 9, 9, 9], Some(G), 255, 0x60)).expect("parses");
        assert!(!proxy.consistent());
    }

    #[test]
    fn solicited_node_and_its_mac() {
        assert_eq!(solicited_node(ip6(GUEST)), ip6("ff02::1:ff12:3456"));
        assert_eq!(multicast_mac(ip6("ff02::1:ff12:3456")), WireMac::new(0x33, 0x33, 0xff, 0x12, 0x34, 0x56));
    }
}
