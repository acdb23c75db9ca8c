//! The `Prober` boundary: ask a bridge "who has these IPv4 addresses?" by ARP and collect the
//! answers. `PnetProber` sends raw frames (root or CAP_NET_RAW); `FakeProber` is scripted;
//! [`crate::verify::arping::ArpingProber`] runs iputils' `arping` (and, for IPv6, `ndisc6`:
//! [`crate::verify::ndisc6`]) on the bridge's host (over ssh for a remote one).
//!
//! A probe is one call per bridge: one raw socket, one request per target, then replies are
//! read until the timeout. A sweep of a subnet is the same call with every host address.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use nix::errno::Errno;
use pnet_datalink::{self as datalink, Channel, Config, DataLinkReceiver, DataLinkSender, NetworkInterface};

use crate::lab::model::MacAddr;
use crate::verify::arp::{ArpReply, build_request, parse_reply};
use crate::verify::ndp::{NeighborAdvert, build_solicit, parse_advert};

const HELP_PERMISSION: &str = "ARP probing sends raw Ethernet frames, which needs root or the \
CAP_NET_RAW capability: run topo as root, or grant it once with \
`sudo setcap cap_net_raw+ep \"$(command -v topo)\"`; or set `verify: none` on the NICs to skip \
the check";

/// Why a probe could not be made at all (no answer is not an error: it is an empty result).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ProbeError {
    #[error("interface {bridge} does not exist on this host")]
    #[diagnostic(
        code(topo::probe::interface_missing),
        help("is the network active? `virsh net-start <network>` creates its bridge")
    )]
    InterfaceMissing { bridge: String },

    #[error("interface {bridge} is down")]
    #[diagnostic(
        code(topo::probe::interface_down),
        help("bring it up (`ip link set {bridge} up`) or restart its libvirt network")
    )]
    InterfaceDown { bridge: String },

    #[error("interface {bridge} has no Ethernet address to send ARP from")]
    #[diagnostic(code(topo::probe::no_mac))]
    NoMac { bridge: String },

    #[error("not allowed to open a raw socket on {bridge}")]
    #[diagnostic(code(topo::probe::permission), help("{}", HELP_PERMISSION))]
    PermissionDenied { bridge: String },

    /// The program that proves addresses on another host's bridge is not installed there:
    /// `arping` (ARP) or `ndisc6` (NDP).
    #[error("{tool} is not installed on {host}, where bridge {bridge} is")]
    #[diagnostic(
        code(topo::probe::tool_missing),
        help("install {package} on {host}: topo proves addresses on another host's bridge with its {tool}")
    )]
    ToolMissing { tool: &'static str, package: &'static str, bridge: String, host: String },

    #[error("ARP probe on {bridge} on {host}: {message}")]
    #[diagnostic(code(topo::probe::remote))]
    Remote { bridge: String, host: String, message: String },

    /// The prober cannot ask by NDP (a remote host's `arping`), or the bridge has no IPv6
    /// address to solicit from.
    #[error("cannot send a neighbour solicitation on {bridge}: {why}")]
    #[diagnostic(
        code(topo::probe::ipv6),
        help(
            "IPv6 addresses are proven by NDP from the bridge, which needs an IPv6 address (its link-local one) to solicit from; set `verify: none` on the NIC to skip it"
        )
    )]
    NoIpv6 { bridge: String, why: String },

    #[error("ARP probe on {bridge}: {op} failed")]
    #[diagnostic(code(topo::probe::io))]
    Io {
        bridge: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl ProbeError {
    /// The bridge the error is about.
    pub fn bridge(&self) -> &str {
        match self {
            ProbeError::InterfaceMissing { bridge }
            | ProbeError::InterfaceDown { bridge }
            | ProbeError::NoMac { bridge }
            | ProbeError::PermissionDenied { bridge }
            | ProbeError::ToolMissing { bridge, .. }
            | ProbeError::Remote { bridge, .. }
            | ProbeError::NoIpv6 { bridge, .. }
            | ProbeError::Io { bridge, .. } => bridge,
        }
    }

    /// Classifies an I/O error from opening or using the raw socket.
    pub fn from_io(bridge: &str, op: &'static str, e: io::Error) -> Self {
        let bridge = bridge.to_owned();
        let errno = e.raw_os_error().map(Errno::from_raw);
        if e.kind() == io::ErrorKind::PermissionDenied || matches!(errno, Some(Errno::EPERM | Errno::EACCES)) {
            return ProbeError::PermissionDenied { bridge };
        }
        match errno {
            Some(Errno::ENODEV | Errno::ENXIO) => ProbeError::InterfaceMissing { bridge },
            Some(Errno::ENETDOWN) => ProbeError::InterfaceDown { bridge },
            _ => ProbeError::Io { bridge, op, source: e },
        }
    }
}

/// A reply with its round-trip time, where the prober measures it ([`Prober::probe_timed`]).
pub type TimedReply = (ArpReply, Option<Duration>);

/// A Neighbor Advertisement with its round-trip time ([`Prober::probe6`]).
pub type TimedAdvert = (NeighborAdvert, Option<Duration>);

/// Asks a bridge who holds IPv4 addresses. Only what verification needs.
pub trait Prober: Send + Sync {
    /// Sends one ARP request per distinct target on `bridge`, then collects replies until
    /// `timeout` has passed, or until `grace` after every target has answered at least once
    /// (so a second MAC answering for an address is still seen), whichever comes first.
    /// Returns each distinct (MAC, address) that answered for one of the targets, sorted,
    /// with its round-trip time: from the moment the request for its address was sent to the
    /// moment the reply was read, `None` where the prober cannot tell. Replies from the
    /// bridge's own MAC are left out. Several MACs answering for one address all appear (a
    /// duplicate, or a multi-homed guest's ARP flux: the caller judges).
    fn probe_timed(
        &self,
        bridge: &str,
        targets: &[Ipv4Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<TimedReply>, ProbeError>;

    /// The IPv6 counterpart of [`Prober::probe_timed`]: one Neighbor Solicitation per
    /// distinct target on `bridge` (from the bridge's IPv6 address in the target's /64, else
    /// its link-local one), then every advertisement for a target not from the bridge's own
    /// MAC, sorted, each with the time from its solicitation. Timeout and grace as there.
    ///
    /// # Errors
    /// As `probe_timed`; [`ProbeError::NoIpv6`] when this prober cannot ask by NDP (the
    /// default: a prober that only speaks ARP) or the bridge has no IPv6 address.
    fn probe6(
        &self,
        bridge: &str,
        targets: &[Ipv6Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<TimedAdvert>, ProbeError> {
        let _ = (targets, timeout, grace);
        Err(ProbeError::NoIpv6 { bridge: bridge.to_owned(), why: "this prober asks by ARP only".to_owned() })
    }

    /// [`Prober::probe_timed`] without the round-trip times.
    fn probe(
        &self,
        bridge: &str,
        targets: &[Ipv4Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<ArpReply>, ProbeError> {
        Ok(self.probe_timed(bridge, targets, timeout, grace)?.into_iter().map(|(r, _)| r).collect())
    }
}

/// Every host address of `subnet` (network and broadcast addresses left out below /31), or
/// `None` when there are more than `max` — sweeping those would flood the bridge.
pub fn sweep_targets(subnet: Ipv4Network, max: u32) -> Option<Vec<Ipv4Addr>> {
    let hosts = match subnet.prefix() {
        31 | 32 => subnet.size(),
        _ => subnet.size() - 2,
    };
    if hosts > max {
        return None;
    }
    let (net, bcast) = (subnet.network(), subnet.broadcast());
    Some(subnet.iter().filter(|ip| subnet.prefix() >= 31 || (*ip != net && *ip != bcast)).collect())
}

/// The real prober: an `AF_PACKET` socket on the bridge through `pnet_datalink`.
#[derive(Clone, Debug)]
pub struct PnetProber {
    /// How long one read waits before the deadline is checked again.
    pub read_timeout: Duration,
    /// Requests go out in bursts of this many frames...
    pub burst: usize,
    /// ...with this pause between bursts (a /24 sweep takes a few milliseconds).
    pub burst_gap: Duration,
}

impl Default for PnetProber {
    fn default() -> Self {
        Self { read_timeout: Duration::from_millis(5), burst: 32, burst_gap: Duration::from_micros(200) }
    }
}

/// The sending and the receiving half of a raw Ethernet channel.
type EthernetChannel = (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>);

/// How often the sender checks whether every target has answered.
const ANSWERED_POLL: Duration = Duration::from_millis(1);

/// Picks the sender address for a request to `target`: the bridge address on the target's
/// subnet, else its first IPv4 address, else `0.0.0.0` (an ARP probe, RFC 5227).
pub fn source_ip(bridge_addrs: &[Ipv4Network], target: Ipv4Addr) -> Ipv4Addr {
    bridge_addrs
        .iter()
        .find(|n| n.contains(target))
        .or_else(|| bridge_addrs.first())
        .map_or(Ipv4Addr::UNSPECIFIED, |n| n.ip())
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

impl PnetProber {
    /// A raw Ethernet channel on the bridge (not promiscuous: replies are addressed to it).
    fn open_channel(&self, bridge: &str, iface: &NetworkInterface) -> Result<EthernetChannel, ProbeError> {
        let config = Config {
            read_timeout: Some(self.read_timeout),
            write_timeout: Some(Duration::from_millis(100)),
            promiscuous: false,
            ..Config::default()
        };
        match datalink::channel(iface, config) {
            Ok(Channel::Ethernet(tx, rx)) => Ok((tx, rx)),
            Ok(_) => Err(ProbeError::Io {
                bridge: bridge.to_owned(),
                op: "opening a raw socket",
                source: io::Error::other("not an Ethernet channel"),
            }),
            Err(e) => Err(ProbeError::from_io(bridge, "opening a raw socket", e)),
        }
    }

    /// Sends one request per target in bursts of `burst`, `burst_gap` apart; returns the
    /// instant just before each was handed to the socket.
    fn send_requests(
        &self,
        bridge: &str,
        tx: &mut dyn DataLinkSender,
        own_mac: MacAddr,
        addrs: &[Ipv4Network],
        wanted: &BTreeSet<Ipv4Addr>,
    ) -> Result<BTreeMap<Ipv4Addr, Instant>, ProbeError> {
        let mut sent_at = BTreeMap::new();
        for (i, target) in wanted.iter().enumerate() {
            if i > 0 && i % self.burst.max(1) == 0 {
                thread::sleep(self.burst_gap);
            }
            let frame = build_request(own_mac, source_ip(addrs, *target), *target);
            // Stamped before the send: the reader may read the reply before `send` returns
            // (a guest answers in well under a millisecond), and a stamp after it would put
            // the reply before its request.
            let at = Instant::now();
            Self::send(bridge, tx, &frame)?;
            sent_at.insert(*target, at);
        }
        Ok(sent_at)
    }

    fn send(bridge: &str, tx: &mut dyn DataLinkSender, frame: &[u8]) -> Result<(), ProbeError> {
        let mut tries = 0;
        loop {
            match tx.send_to(frame, None) {
                None | Some(Ok(())) => return Ok(()),
                // The device queue is full: give it a moment, a few times.
                Some(Err(e)) if tries < 5 && (is_transient(&e) || e.raw_os_error() == Some(Errno::ENOBUFS as i32)) => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(1));
                }
                // Still full: the request is dropped, as a frame is on a full link, and the
                // next round sends it again. A wire end's tap (`links:`) stays full while
                // its guest boots and takes no frames (its queue holds 1000).
                Some(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => return Ok(()),
                Some(Err(e)) => return Err(ProbeError::from_io(bridge, "sending a request", e)),
            }
        }
    }
}

impl Prober for PnetProber {
    /// The round-trip time of a reply is from just after its address's request left the
    /// socket to when the reader got the reply (the first one of that MAC and address).
    fn probe_timed(
        &self,
        bridge: &str,
        targets: &[Ipv4Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<TimedReply>, ProbeError> {
        let iface = bridge_interface(bridge)?;
        let wanted: BTreeSet<Ipv4Addr> = targets.iter().copied().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (mut tx, mut rx) = self.open_channel(bridge, &iface)?;
        // Checked after opening the socket, so a missing privilege is reported first.
        let own_mac = iface
            .mac
            .filter(|m| !m.is_zero())
            .and_then(|m| MacAddr::unicast(m).ok())
            .ok_or_else(|| ProbeError::NoMac { bridge: bridge.to_owned() })?;
        let addrs = ipv4_addrs(&iface);

        let stop = AtomicBool::new(false);
        // Distinct targets that answered so far (the reader counts, the sender waits on it).
        let answered = AtomicUsize::new(0);
        let (sent, read) = thread::scope(|s| {
            // The reader runs from before the first request until after the timeout, so no
            // reply is missed and a long sweep does not pile up in the socket buffer.
            let reader = s.spawn(|| read_replies(rx.as_mut(), &stop, &answered, own_mac, &wanted));
            let stopper = StopOnDrop(&stop);
            let sent = self.send_requests(bridge, tx.as_mut(), own_mac, &addrs, &wanted);
            if sent.is_ok() {
                wait_for_answers(&answered, wanted.len(), timeout, grace);
            }
            drop(stopper);
            let read = reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (sent, read)
        });
        let sent_at = sent?;
        let got = read.map_err(|e| ProbeError::from_io(bridge, "reading replies", e))?;
        Ok(got.into_iter().map(|(r, at)| (r, sent_at.get(&r.sender_ip).and_then(|s| rtt_after(&at, *s)))).collect())
    }

    fn probe6(
        &self,
        bridge: &str,
        targets: &[Ipv6Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<TimedAdvert>, ProbeError> {
        self.probe6_raw(bridge, targets, timeout, grace)
    }
}

impl PnetProber {
    /// [`Prober::probe6`] on a raw socket: the solicitations go out one by one, the reader
    /// keeps the first time each (MAC, target) advertised.
    fn probe6_raw(
        &self,
        bridge: &str,
        targets: &[Ipv6Addr],
        timeout: Duration,
        grace: Duration,
    ) -> Result<Vec<TimedAdvert>, ProbeError> {
        let iface = bridge_interface(bridge)?;
        let wanted: BTreeSet<Ipv6Addr> = targets.iter().copied().collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (mut tx, mut rx) = self.open_channel(bridge, &iface)?;
        let own_mac = iface
            .mac
            .filter(|m| !m.is_zero())
            .and_then(|m| MacAddr::unicast(m).ok())
            .ok_or_else(|| ProbeError::NoMac { bridge: bridge.to_owned() })?;
        let addrs: Vec<(Ipv6Addr, u8)> = iface
            .ips
            .iter()
            .filter_map(|n| match n.ip() {
                std::net::IpAddr::V6(ip) => Some((ip, n.prefix())),
                std::net::IpAddr::V4(_) => None,
            })
            .collect();
        let stop = AtomicBool::new(false);
        let answered = AtomicUsize::new(0);
        let (sent, read) = thread::scope(|s| {
            let reader = s.spawn(|| read_adverts(rx.as_mut(), &stop, &answered, own_mac, &wanted));
            let stopper = StopOnDrop(&stop);
            let sent = (|| {
                let mut sent_at = BTreeMap::new();
                for target in &wanted {
                    let src = source_ip6(&addrs, *target).ok_or_else(|| ProbeError::NoIpv6 {
                        bridge: bridge.to_owned(),
                        why: "the bridge has no IPv6 address (is IPv6 on for it, and has its link-local address                               finished duplicate address detection?)"
                            .to_owned(),
                    })?;
                    // Stamped before the send, as for ARP (`send_requests`).
                    let at = Instant::now();
                    Self::send(bridge, tx.as_mut(), &build_solicit(own_mac, src, *target))?;
                    sent_at.insert(*target, at);
                }
                Ok(sent_at)
            })();
            if sent.is_ok() {
                wait_for_answers(&answered, wanted.len(), timeout, grace);
            }
            drop(stopper);
            let read = reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (sent, read)
        });
        let sent_at: BTreeMap<Ipv6Addr, Instant> = sent?;
        let got = read.map_err(|e| ProbeError::from_io(bridge, "reading advertisements", e))?;
        Ok(got.into_iter().map(|(a, at)| (a, sent_at.get(&a.target).and_then(|s| rtt_after(&at, *s)))).collect())
    }
}

/// The bridge address a solicitation for `target` comes from: one in the target's /64 (the
/// network's `gateway6`), else a link-local one (RFC 4861 7.2.2 allows any of the
/// interface's addresses), else none. `addrs` are (address, prefix length).
pub fn source_ip6(addrs: &[(Ipv6Addr, u8)], target: Ipv6Addr) -> Option<Ipv6Addr> {
    let same64 = |a: &Ipv6Addr| a.octets()[..8] == target.octets()[..8];
    addrs
        .iter()
        .map(|(a, _)| *a)
        .find(same64)
        .or_else(|| addrs.iter().map(|(a, _)| *a).find(|a| a.segments()[0] & 0xffc0 == 0xfe80))
}

/// How many arrival times [`read_answers`] keeps per answer.
const MAX_TIMES: usize = 8;

/// The round trip of a request sent at `sent`: to the first answer read at or after it;
/// `None` when every answer came before (it answered someone else).
fn rtt_after(times: &[Instant], sent: Instant) -> Option<Duration> {
    times.iter().find(|t| **t >= sent).map(|t| t.duration_since(sent))
}

/// [`read_answers`] for Neighbor Advertisements: keyed by the address they are for.
fn read_adverts(
    rx: &mut dyn DataLinkReceiver,
    stop: &AtomicBool,
    answered: &AtomicUsize,
    own_mac: MacAddr,
    wanted: &BTreeSet<Ipv6Addr>,
) -> io::Result<BTreeMap<NeighborAdvert, Vec<Instant>>> {
    read_answers(rx, stop, answered, wanted, |frame| {
        parse_advert(frame).filter(|a| a.sender_mac != own_mac).map(|a| (a, a.target))
    })
}

/// [`read_answers`] for ARP replies: keyed by the address they claim.
fn read_replies(
    rx: &mut dyn DataLinkReceiver,
    stop: &AtomicBool,
    answered: &AtomicUsize,
    own_mac: MacAddr,
    wanted: &BTreeSet<Ipv4Addr>,
) -> io::Result<BTreeMap<ArpReply, Vec<Instant>>> {
    read_answers(rx, stop, answered, wanted, |frame| {
        parse_reply(frame).filter(|r| r.sender_mac != own_mac).map(|r| (r, r.sender_ip))
    })
}

/// Reads frames until `stop` is set (and one read after it), keeping the times (the first
/// [`MAX_TIMES`]) each answer `parse` finds in a frame (an answer not from the prober itself,
/// with the address it is for) came for one of `wanted`, and counting in `answered` the
/// distinct addresses that answered. Several times: an answer to another asker (the host
/// kernel's own ARP) can be read before the prober's request went out, and must not be
/// timed against it ([`rtt_after`]).
fn read_answers<A: Ord, K: Ord + Copy>(
    rx: &mut dyn DataLinkReceiver,
    stop: &AtomicBool,
    answered: &AtomicUsize,
    wanted: &BTreeSet<K>,
    parse: impl Fn(&[u8]) -> Option<(A, K)>,
) -> io::Result<BTreeMap<A, Vec<Instant>>> {
    let mut got: BTreeMap<A, Vec<Instant>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    loop {
        let last = stop.load(Ordering::Acquire);
        match rx.next() {
            Ok(frame) => {
                if let Some((answer, addr)) = parse(frame)
                    && wanted.contains(&addr)
                {
                    let times = got.entry(answer).or_default();
                    if times.len() < MAX_TIMES {
                        times.push(Instant::now());
                    }
                    if seen.insert(addr) {
                        answered.store(seen.len(), Ordering::Release);
                    }
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
        if last {
            return Ok(got);
        }
    }
}

/// The bridge's interface, which must exist and be up.
fn bridge_interface(bridge: &str) -> Result<NetworkInterface, ProbeError> {
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == bridge)
        .ok_or_else(|| ProbeError::InterfaceMissing { bridge: bridge.to_owned() })?;
    if !iface.is_up() {
        return Err(ProbeError::InterfaceDown { bridge: bridge.to_owned() });
    }
    Ok(iface)
}

/// The interface's IPv4 addresses with their prefix lengths (the candidates of [`source_ip`]).
fn ipv4_addrs(iface: &NetworkInterface) -> Vec<Ipv4Network> {
    iface
        .ips
        .iter()
        // pnet_datalink's own (older) ipnetwork, read through its address and prefix.
        .filter_map(|n| match n.ip() {
            std::net::IpAddr::V4(ip) => Ipv4Network::new(ip, n.prefix()).ok(),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

/// Stops the reader when dropped: also when the sending side panics, so the scope never
/// waits forever for a reader nobody stops.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Sleeps until `timeout`, or `grace` after all `wanted` targets have answered.
fn wait_for_answers(answered: &AtomicUsize, wanted: usize, timeout: Duration, grace: Duration) {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        if answered.load(Ordering::Acquire) >= wanted {
            thread::sleep(grace.min(left));
            break;
        }
        thread::sleep(ANSWERED_POLL.min(left));
    }
}

#[cfg(any(test, feature = "testing"))]
pub use fake::{FakeCall, FakeProber};

/// The scripted prober (tests only: built with `cfg(test)` or the `testing` feature, never
/// into the release binary).
#[cfg(any(test, feature = "testing"))]
mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;
    use std::thread::{self, ThreadId};
    use std::time::Duration;

    use super::{ProbeError, Prober, TimedAdvert, TimedReply};
    use crate::lab::model::MacAddr;
    use crate::verify::arp::ArpReply;
    use crate::verify::ndp::NeighborAdvert;

    /// One call the fake saw, for assertions.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct FakeCall {
        pub bridge: String,
        pub targets: Vec<Ipv4Addr>,
        pub timeout: Duration,
        pub grace: Duration,
        pub thread: ThreadId,
    }

    #[derive(Clone, Copy, Debug)]
    struct FakeAnswer {
        mac: MacAddr,
        /// Silent for this many probes of the address first.
        after: u32,
        /// The round-trip time it reports (`probe_timed`); none unless scripted.
        rtt: Option<Duration>,
    }

    #[derive(Default, Debug)]
    struct FakeState {
        probes: BTreeMap<(String, Ipv4Addr), u32>,
        probes6: BTreeMap<(String, Ipv6Addr), u32>,
        calls: Vec<FakeCall>,
    }

    /// A scripted prober. Strict like the real one: probing a bridge it was not told about is
    /// `InterfaceMissing`. Answers are (bridge, address) -> MAC, optionally only after the
    /// address has been probed N times (a lease that appears before the guest configured it).
    #[derive(Debug, Default)]
    pub struct FakeProber {
        bridges: BTreeSet<String>,
        down: BTreeSet<String>,
        denied: bool,
        answers: BTreeMap<(String, Ipv4Addr), Vec<FakeAnswer>>,
        answers6: BTreeMap<(String, Ipv6Addr), Vec<FakeAnswer>>,
        state: Mutex<FakeState>,
    }

    impl FakeProber {
        pub fn new() -> Self {
            Self::default()
        }
        /// Declares a bridge that exists and is up (answers nothing by itself).
        pub fn with_bridge(mut self, bridge: &str) -> Self {
            self.bridges.insert(bridge.to_owned());
            self
        }
        /// Declares a bridge that exists but is down.
        pub fn with_down_bridge(mut self, bridge: &str) -> Self {
            self.bridges.insert(bridge.to_owned());
            self.down.insert(bridge.to_owned());
            self
        }
        /// Every probe fails with `PermissionDenied` (not root, no CAP_NET_RAW).
        pub fn denied(mut self) -> Self {
            self.denied = true;
            self
        }
        /// `mac` answers for `ip` on `bridge` from the first probe on.
        pub fn answer(self, bridge: &str, ip: Ipv4Addr, mac: MacAddr) -> Self {
            self.answer_after(bridge, ip, mac, 0)
        }
        /// `mac` answers for `ip` on `bridge` once `ip` has been probed `after` times there.
        pub fn answer_after(mut self, bridge: &str, ip: Ipv4Addr, mac: MacAddr, after: u32) -> Self {
            self.bridges.insert(bridge.to_owned());
            self.answers.entry((bridge.to_owned(), ip)).or_default().push(FakeAnswer { mac, after, rtt: None });
            self
        }
        /// `mac` answers for `ip` on `bridge` from the first probe on, `rtt` after the request.
        pub fn answer_in(mut self, bridge: &str, ip: Ipv4Addr, mac: MacAddr, rtt: Duration) -> Self {
            self.bridges.insert(bridge.to_owned());
            self.answers.entry((bridge.to_owned(), ip)).or_default().push(FakeAnswer { mac, after: 0, rtt: Some(rtt) });
            self
        }
        /// `mac` advertises `ip` on `bridge` once `ip` has been solicited `after` times
        /// there (a guest whose address is tentative, in DAD, until then).
        pub fn answer6_after(mut self, bridge: &str, ip: Ipv6Addr, mac: MacAddr, after: u32) -> Self {
            self.bridges.insert(bridge.to_owned());
            self.answers6.entry((bridge.to_owned(), ip)).or_default().push(FakeAnswer { mac, after, rtt: None });
            self
        }
        /// How often `ip` was solicited on `bridge`.
        pub fn solicits_of(&self, bridge: &str, ip: Ipv6Addr) -> u32 {
            self.lock().probes6.get(&(bridge.to_owned(), ip)).copied().unwrap_or(0)
        }
        /// Every call so far, in order.
        pub fn calls(&self) -> Vec<FakeCall> {
            self.lock().calls.clone()
        }
        /// How often `ip` was probed on `bridge`.
        pub fn probes_of(&self, bridge: &str, ip: Ipv4Addr) -> u32 {
            self.lock().probes.get(&(bridge.to_owned(), ip)).copied().unwrap_or(0)
        }
        fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
            // A panic while holding the lock only happens in a failing test; keep the data.
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// The errors a real prober gives for `bridge`: missing, down, or no permission.
        fn usable(&self, bridge: &str) -> Result<(), ProbeError> {
            if !self.bridges.contains(bridge) {
                return Err(ProbeError::InterfaceMissing { bridge: bridge.to_owned() });
            }
            if self.down.contains(bridge) {
                return Err(ProbeError::InterfaceDown { bridge: bridge.to_owned() });
            }
            if self.denied {
                return Err(ProbeError::PermissionDenied { bridge: bridge.to_owned() });
            }
            Ok(())
        }
    }

    impl Prober for FakeProber {
        fn probe_timed(
            &self,
            bridge: &str,
            targets: &[Ipv4Addr],
            timeout: Duration,
            grace: Duration,
        ) -> Result<Vec<TimedReply>, ProbeError> {
            let mut st = self.lock();
            st.calls.push(FakeCall {
                bridge: bridge.to_owned(),
                targets: targets.to_vec(),
                timeout,
                grace,
                thread: thread::current().id(),
            });
            self.usable(bridge)?;
            let mut got = BTreeMap::new();
            for ip in targets.iter().copied().collect::<BTreeSet<_>>() {
                let key = (bridge.to_owned(), ip);
                let n = st.probes.entry(key.clone()).or_default();
                let before = *n;
                *n += 1;
                for a in self.answers.get(&key).into_iter().flatten() {
                    if before >= a.after {
                        let r = ArpReply { sender_mac: a.mac, sender_ip: ip, target_ip: Ipv4Addr::UNSPECIFIED };
                        got.entry(r).or_insert(a.rtt);
                    }
                }
            }
            Ok(got.into_iter().collect())
        }

        fn probe6(
            &self,
            bridge: &str,
            targets: &[Ipv6Addr],
            _timeout: Duration,
            _grace: Duration,
        ) -> Result<Vec<TimedAdvert>, ProbeError> {
            let mut st = self.lock();
            self.usable(bridge)?;
            let mut got = BTreeMap::new();
            for ip in targets.iter().copied().collect::<BTreeSet<_>>() {
                let key = (bridge.to_owned(), ip);
                let n = st.probes6.entry(key.clone()).or_default();
                let before = *n;
                *n += 1;
                for a in self.answers6.get(&key).into_iter().flatten() {
                    if before >= a.after {
                        let na = NeighborAdvert {
                            sender_mac: a.mac,
                            target_mac: Some(a.mac),
                            target: ip,
                            source: ip,
                            solicited: true,
                        };
                        got.entry(na).or_insert(a.rtt);
                    }
                }
            }
            Ok(got.into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC is valid")
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP is valid")
    }
    const T: Duration = Duration::from_millis(300);
    const G: Duration = Duration::from_millis(30);

    /// An answer read before the request went out (to the host kernel's own ARP) is not
    /// timed against it: the first answer after it is, and none at all gives no time. (The
    /// 0.0 ms users saw came from stamping the request after its send returned, by which time
    /// the reader had often read the reply: requests are now stamped before the send.)
    #[test]
    fn round_trip_counts_from_the_request_to_the_next_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(rtt_after(&[t0, t0 + ms(5)], t0 + ms(2)), Some(ms(3)));
        assert_eq!(rtt_after(&[t0], t0 + ms(2)), None);
        assert_eq!(rtt_after(&[t0 + ms(2)], t0 + ms(2)), Some(Duration::ZERO));
    }

    #[test]
    fn sweep_targets_leave_out_network_and_broadcast() {
        let hosts = sweep_targets("10.0.0.0/24".parse().unwrap(), 1024).expect("small enough");
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts.first(), Some(&ip("10.0.0.1")));
        assert_eq!(hosts.last(), Some(&ip("10.0.0.254")));
        assert_eq!(sweep_targets("10.0.0.0/16".parse().unwrap(), 1024), None);
        assert_eq!(sweep_targets("10.0.0.4/31".parse().unwrap(), 1024), Some(vec![ip("10.0.0.4"), ip("10.0.0.5")]));
        assert_eq!(sweep_targets("10.0.0.9/32".parse().unwrap(), 1), Some(vec![ip("10.0.0.9")]));
        assert_eq!(sweep_targets("10.0.0.8/30".parse().unwrap(), 1), None);
    }

    #[test]
    fn source_ip_prefers_the_targets_subnet() {
        let addrs: Vec<Ipv4Network> = vec!["192.168.1.1/24".parse().unwrap(), "10.0.0.1/24".parse().unwrap()];
        assert_eq!(source_ip(&addrs, ip("10.0.0.7")), ip("10.0.0.1"));
        assert_eq!(source_ip(&addrs, ip("172.16.0.7")), ip("192.168.1.1"));
        assert_eq!(source_ip(&[], ip("10.0.0.7")), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn io_errors_are_classified() {
        let e = |n: Errno| io::Error::from_raw_os_error(n as i32);
        assert!(matches!(ProbeError::from_io("br0", "x", e(Errno::EPERM)), ProbeError::PermissionDenied { .. }));
        assert!(matches!(ProbeError::from_io("br0", "x", e(Errno::EACCES)), ProbeError::PermissionDenied { .. }));
        assert!(matches!(ProbeError::from_io("br0", "x", e(Errno::ENODEV)), ProbeError::InterfaceMissing { .. }));
        assert!(matches!(ProbeError::from_io("br0", "x", e(Errno::ENETDOWN)), ProbeError::InterfaceDown { .. }));
        let other = ProbeError::from_io("br0", "reading replies", e(Errno::EIO));
        assert!(matches!(other, ProbeError::Io { .. }));
        assert_eq!(other.bridge(), "br0");
        assert_eq!(other.to_string(), "ARP probe on br0: reading replies failed");
    }

    #[test]
    fn permission_error_tells_how_to_fix_it() {
        use miette::Diagnostic;
        let e = ProbeError::PermissionDenied { bridge: "virbr1".into() };
        let help = e.help().expect("has help").to_string();
        assert!(help.contains("CAP_NET_RAW") && help.contains("setcap"), "{help}");
    }

    #[test]
    fn pnet_prober_reports_a_missing_interface() {
        // interfaces() reads the host's interface list; it sends nothing.
        let err =
            PnetProber::default().probe("topo-no-such0", &[ip("10.0.0.1")], Duration::from_millis(1), G).unwrap_err();
        assert!(matches!(err, ProbeError::InterfaceMissing { .. }), "{err:?}");
    }

    /// CAP_NET_RAW (bit 13) in this thread's effective capability set.
    fn has_net_raw() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_none_or(|caps| caps & (1 << 13) != 0)
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn pnet_prober_without_cap_net_raw_is_permission_denied() {
        if has_net_raw() {
            eprintln!("skipping: only meaningful without CAP_NET_RAW (run as an ordinary user)");
            return;
        }
        // Without the capability socket() fails before any frame could be sent.
        let lo = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.is_loopback() && i.is_up())
            .expect("a loopback interface");
        let err =
            PnetProber::default().probe(&lo.name, &[Ipv4Addr::LOCALHOST], Duration::from_millis(1), G).unwrap_err();
        assert!(matches!(err, ProbeError::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn fake_answers_scripted_macs_only() {
        let m = mac("52:54:00:00:00:05");
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), m);
        let got = p.probe("br0", &[ip("10.0.0.5"), ip("10.0.0.6")], T, G).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].sender_mac, got[0].sender_ip), (m, ip("10.0.0.5")));
        assert_eq!(p.probes_of("br0", ip("10.0.0.6")), 1);
        assert!(p.probe("br0", &[], T, G).unwrap().is_empty());
    }

    #[test]
    fn fake_answers_after_n_probes() {
        let m = mac("52:54:00:00:00:05");
        let p = FakeProber::new().answer_after("br0", ip("10.0.0.5"), m, 2);
        assert!(p.probe("br0", &[ip("10.0.0.5")], T, G).unwrap().is_empty());
        assert!(p.probe("br0", &[ip("10.0.0.5")], T, G).unwrap().is_empty());
        assert_eq!(p.probe("br0", &[ip("10.0.0.5")], T, G).unwrap().len(), 1);
        assert_eq!(p.calls().len(), 3);
    }

    #[test]
    fn fake_is_strict_about_bridges() {
        let p = FakeProber::new().with_bridge("br0").with_down_bridge("br1");
        assert!(matches!(p.probe("br9", &[ip("10.0.0.5")], T, G), Err(ProbeError::InterfaceMissing { .. })));
        assert!(matches!(p.probe("br1", &[ip("10.0.0.5")], T, G), Err(ProbeError::InterfaceDown { .. })));
        assert!(p.probe("br0", &[ip("10.0.0.5")], T, G).unwrap().is_empty());
        let d = FakeProber::new().with_bridge("br0").denied();
        assert!(matches!(d.probe("br0", &[], T, G), Err(ProbeError::PermissionDenied { .. })));
    }
}
