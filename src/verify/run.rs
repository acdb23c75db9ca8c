//! The probe loop: rounds of "read leases, probe every bridge in parallel, judge each NIC"
//! until every NIC is settled, the time is up, or an interrupt arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::VerifyError;
use super::sources::{Clock, LeaseSource};
use super::state::{Evidence, FailReason, NicOutcome, NicProgress, NicState, VerifyReport};
use super::target::{Family, NicTarget};
use crate::host::observed::Lease;
use crate::lab::model::MacAddr;
use crate::verify::arp::ArpReply;
use crate::verify::prober::{ProbeError, Prober, TimedReply, sweep_targets};

/// Tuning of the loop. The defaults are documented in docs/verify.md.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Give up on NICs still unverified after this long.
    pub timeout: Duration,
    /// The longest one probe waits for replies; also the shortest round that asked anything.
    /// A lease shows up a bit before the guest has configured the address: short probes,
    /// retried, beat one long wait.
    pub probe_timeout: Duration,
    /// Once every address a probe asked for has answered, replies are still collected this
    /// long, so that a second MAC answering for the same address (a duplicate) is seen.
    pub grace: Duration,
    /// The round length when there is nothing to ask yet (NICs waiting for a lease): how
    /// often leases are read again.
    pub poll_every: Duration,
    /// A NIC with DHCP but no candidate address after this long is looked for by sweeping
    /// its subnet. (Without DHCP and reservation there is nothing to wait for: sweep at once.)
    pub sweep_after: Duration,
    /// At most one sweep per bridge this often.
    pub sweep_every: Duration,
    /// Subnets with more host addresses than this are not swept.
    pub max_sweep_hosts: u32,
    /// How long VMs' `ready:` conditions are waited for once their NICs are proven
    /// (`super::ready`); `Duration::ZERO` checks each condition once.
    pub ready_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_millis(100),
            grace: Duration::from_millis(30),
            poll_every: Duration::from_millis(50),
            sweep_after: Duration::from_secs(10),
            sweep_every: Duration::from_secs(3),
            max_sweep_hosts: 1024,
            ready_timeout: Duration::from_secs(300),
        }
    }
}

/// What the loop remembers about one NIC.
#[derive(Debug)]
struct Track {
    state: NicState,
    /// The latest leased address seen for the MAC on the NIC's network.
    leased: Option<Ipv4Addr>,
    /// Reservation first, then leases; refreshed each round.
    candidates: Vec<Ipv4Addr>,
    /// Another MAC answered for one of the candidates (latest seen).
    conflict: Option<(Ipv4Addr, MacAddr)>,
    /// This MAC answered at a leased address other than its reservation (latest seen).
    elsewhere: Option<Ipv4Addr>,
    /// A sweep found this MAC at an address a lease-less sibling NIC answers too.
    ambiguous: Option<(Ipv4Addr, String)>,
}

impl Track {
    /// A NIC before the first round: its initial state, nothing seen yet.
    fn new(t: &NicTarget) -> Self {
        Track {
            state: initial_state(t),
            leased: None,
            candidates: Vec::new(),
            conflict: None,
            elsewhere: None,
            ambiguous: None,
        }
    }
}

fn initial_state(t: &NicTarget) -> NicState {
    if let Some(state) = super::state::settled_at_once(t) {
        state
    } else if t.bridge.is_none() {
        let detail = t.no_bridge.clone().unwrap_or_else(|| "the network has no bridge on this host".into());
        NicState::Failed { reason: FailReason::NoBridge { detail } }
    } else if let Some(ip) = t.reservation {
        NicState::LeasedNoReply { ip }
    } else if !t.dhcp && t.subnet.is_none() {
        // Nothing will ever be a candidate, and there is nothing topo may sweep.
        NicState::Failed { reason: FailReason::NoSubnet }
    } else {
        NicState::WaitingForLease
    }
}

fn diagnose(t: &NicTarget, tr: &Track) -> FailReason {
    if let (Some(reserved), Some(answered)) = (t.reservation, tr.elsewhere) {
        return FailReason::NotReserved { reserved, answered };
    }
    if let Some((ip, other_mac)) = tr.conflict
        && tr.candidates.contains(&ip)
    {
        return FailReason::Conflict { ip, other_mac };
    }
    if let Some((ip, sibling)) = &tr.ambiguous
        && tr.candidates.is_empty()
    {
        return FailReason::Ambiguous { ip: *ip, sibling: sibling.clone() };
    }
    if let Some(ip) = tr.leased {
        return FailReason::LeasedButSilent { ip };
    }
    match (t.dhcp, t.reservation) {
        (false, None) => FailReason::NoDhcpNoReservation,
        (false, Some(ip)) => FailReason::LeasedButSilent { ip },
        (true, _) => FailReason::NoLease,
    }
}

/// Runs the verification loop over `targets` until every NIC is settled or
/// `opts.timeout` has passed. `progress` sees every state change (the initial state of each
/// NIC included), in target order within a round.
///
/// A NIC is verified by an ARP reply from its own MAC, on its network's bridge, for an
/// address that is its own: its reservation (when it has one, only that), else one of its
/// leases, else (a subnet sweep) any address of the subnet that is not another NIC's lease or
/// reservation. It fails at once as [`FailReason::Duplicate`] when another MAC answers for the
/// same address in the same probe. Replies from other NICs of the same VM are Linux's ARP
/// flux (it answers for any of its addresses on every interface): never proof for them,
/// never a duplicate; see docs/verify.md.
///
/// Errors only when probing is impossible everywhere (no permission for raw sockets, an I/O
/// error) or the leases cannot be read; a missing or down bridge fails just its NICs.
///
/// `cancel` (set by Ctrl-C, SIGTERM, SIGHUP) is checked before and after each round's probe:
/// once set, every NIC not yet settled fails as [`FailReason::Interrupted`] and the report is
/// returned at once.
///
/// IPv6 targets ([`Family::Ipv6`]) are proven apart, by NDP ([`super::run6::verify6`]), after
/// the IPv4 ones and within what is left of the same timeout; the report keeps the order of
/// `targets`.
pub fn verify<P, L, C, F>(
    targets: &[NicTarget],
    prober: &P,
    leases: &L,
    clock: &C,
    opts: &VerifyOptions,
    cancel: &AtomicBool,
    mut progress: F,
) -> Result<VerifyReport, VerifyError>
where
    P: Prober + ?Sized,
    L: LeaseSource + ?Sized,
    C: Clock + ?Sized,
    F: FnMut(&NicProgress<'_>),
{
    let (v6, v4): (Vec<usize>, Vec<usize>) = (0..targets.len()).partition(|&i| targets[i].family == Family::Ipv6);
    if v6.is_empty() {
        return verify4(targets, prober, leases, clock, opts, cancel, &mut progress);
    }
    let pick = |idx: &[usize]| idx.iter().map(|&i| targets[i].clone()).collect::<Vec<_>>();
    let (t4, t6) = (pick(&v4), pick(&v6));
    let mut states: Vec<Option<NicState>> = vec![None; targets.len()];
    let r4 = verify4(&t4, prober, leases, clock, opts, cancel, &mut |p: &NicProgress<'_>| {
        progress(&NicProgress { index: v4[p.index], ..*p })
    })?;
    for (o, &i) in r4.nics.into_iter().zip(&v4) {
        states[i] = Some(o.state);
    }
    let r6 = super::run6::verify6(&t6, prober, clock, opts, cancel, &mut |p: &NicProgress<'_>| {
        progress(&NicProgress { index: v6[p.index], ..*p })
    })?;
    for (o, &i) in r6.nics.into_iter().zip(&v6) {
        states[i] = Some(o.state);
    }
    Ok(VerifyReport {
        nics: targets
            .iter()
            .zip(states)
            // Invariant: every index is in v4 or v6, and each report has one state per target.
            .map(|(t, s)| NicOutcome {
                target: t.clone(),
                state: s.unwrap_or(NicState::Failed { reason: FailReason::Interrupted }),
            })
            .collect(),
        ready: Vec::new(),
    })
}

/// The IPv4 loop of [`verify`] (every target is IPv4).
fn verify4<P, L, C>(
    targets: &[NicTarget],
    prober: &P,
    leases: &L,
    clock: &C,
    opts: &VerifyOptions,
    cancel: &AtomicBool,
    mut progress: &mut dyn FnMut(&NicProgress<'_>),
) -> Result<VerifyReport, VerifyError>
where
    P: Prober + ?Sized,
    L: LeaseSource + ?Sized,
    C: Clock + ?Sized,
{
    let mut tracks: Vec<Track> = targets.iter().map(Track::new).collect();
    for (index, (t, tr)) in targets.iter().zip(&tracks).enumerate() {
        progress(&NicProgress { index, target: t, state: &tr.state });
    }
    let mut last_sweep: BTreeMap<String, Duration> = BTreeMap::new();
    let mut first_round = true;

    while tracks.iter().any(|tr| !tr.state.is_final()) {
        if cancel.load(Ordering::SeqCst) {
            fail_unsettled(targets, &mut tracks, &mut progress, |_, _| FailReason::Interrupted);
            break;
        }
        let round_start = clock.elapsed();

        // 1. Every NIC's own addresses (reservation, leases), settled ones and `verify: none`
        //    included: an address that is one NIC's never proves another (ARP flux).
        let all_leases = leases.leases()?;
        let owned = Owned::new(targets, &all_leases);
        refresh_candidates(targets, &mut tracks, &owned, &all_leases);

        // 2. What to ask on each bridge: candidates, plus a sweep where a NIC has none.
        let asks = plan_asks(targets, &tracks, opts, round_start, &mut last_sweep, first_round);
        first_round = false;
        let asked_anything = asks.values().any(|a| !a.is_empty());

        // 3. Probe all bridges in parallel, one thread each.
        let probed = Probed::sort(probe_bridges(targets, prober, &asks, opts))?;

        // 4. Judge each pending NIC by the replies on its bridge.
        let now = clock.elapsed();
        judge_round(targets, &mut tracks, &owned, &probed, now, &mut progress);

        // 5. Done; or interrupted; or out of time: diagnose what is left; or wait out the round.
        if tracks.iter().all(|tr| tr.state.is_final()) {
            break;
        }
        if cancel.load(Ordering::SeqCst) {
            fail_unsettled(targets, &mut tracks, &mut progress, |_, _| FailReason::Interrupted);
            break;
        }
        if now >= opts.timeout {
            fail_unsettled(targets, &mut tracks, &mut progress, diagnose);
            break;
        }
        let round = if asked_anything { opts.probe_timeout } else { opts.poll_every };
        let round_end = round_start.saturating_add(round);
        if now < round_end {
            clock.sleep((round_end - now).min(opts.timeout.saturating_sub(now)));
        }
    }

    Ok(VerifyReport {
        nics: targets.iter().zip(tracks).map(|(t, tr)| NicOutcome { target: t.clone(), state: tr.state }).collect(),
        ready: Vec::new(),
    })
}

/// One round's addresses: `own[j]` are NIC j's reservation and leases, `owners` the NICs
/// owning each (libvirt network, address).
struct Owned<'t> {
    own: Vec<Vec<Ipv4Addr>>,
    owners: BTreeMap<(&'t str, Ipv4Addr), BTreeSet<usize>>,
}

impl<'t> Owned<'t> {
    /// Every NIC's own addresses from its reservation and `all_leases`, reservation first.
    fn new(targets: &'t [NicTarget], all_leases: &[Lease]) -> Self {
        let own: Vec<Vec<Ipv4Addr>> = targets
            .iter()
            .map(|t| {
                let mut v: Vec<Ipv4Addr> = t.reservation.into_iter().collect();
                for l in all_leases.iter().filter(|l| l.mac == t.mac && l.network == t.libvirt_network) {
                    if !v.contains(&l.ip) {
                        v.push(l.ip);
                    }
                }
                v
            })
            .collect();
        let mut owners: BTreeMap<(&str, Ipv4Addr), BTreeSet<usize>> = BTreeMap::new();
        for (j, (t, ips)) in targets.iter().zip(&own).enumerate() {
            for ip in ips {
                owners.entry((t.libvirt_network.as_str(), *ip)).or_default().insert(j);
            }
        }
        Self { own, owners }
    }
}

/// Sets each pending NIC's candidates to its own addresses, and its latest lease.
fn refresh_candidates(targets: &[NicTarget], tracks: &mut [Track], owned: &Owned<'_>, all_leases: &[Lease]) {
    for (t, (tr, ips)) in targets.iter().zip(tracks.iter_mut().zip(&owned.own)) {
        if tr.state.is_final() {
            continue;
        }
        tr.candidates = ips.clone();
        if let Some(l) = all_leases.iter().rfind(|l| l.mac == t.mac && l.network == t.libvirt_network) {
            tr.leased = Some(l.ip);
        }
    }
}

/// The addresses to ask on each bridge this round: every pending NIC's candidates, plus its
/// subnet (a sweep) where it has none, once `opts.sweep_after` has passed (at once without
/// DHCP and reservation) and the bridge was not swept within `opts.sweep_every`. Records the
/// sweeps in `last_sweep`. The first round asks every bridge, even with nothing to probe yet:
/// a missing or down bridge is reported at once instead of as a missing lease at the deadline.
fn plan_asks(
    targets: &[NicTarget],
    tracks: &[Track],
    opts: &VerifyOptions,
    round_start: Duration,
    last_sweep: &mut BTreeMap<String, Duration>,
    first_round: bool,
) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut asks: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut sweeping: BTreeSet<String> = BTreeSet::new();
    for (t, tr) in targets.iter().zip(tracks) {
        let Some(bridge) = t.bridge.as_ref().filter(|_| !tr.state.is_final()) else {
            continue;
        };
        let ask = asks.entry(bridge.clone()).or_default();
        ask.extend(tr.candidates.iter().copied());
        let due = round_start >= opts.sweep_after || (!t.dhcp && t.reservation.is_none());
        let recent = last_sweep.get(bridge).is_some_and(|at| round_start.saturating_sub(*at) < opts.sweep_every);
        if tr.candidates.is_empty()
            && due
            && (!recent || sweeping.contains(bridge))
            && let Some(hosts) = t.subnet.and_then(|s| sweep_targets(s, opts.max_sweep_hosts))
        {
            ask.extend(hosts);
            sweeping.insert(bridge.clone());
        }
    }
    if !first_round {
        asks.retain(|_, a| !a.is_empty());
    }
    for b in &sweeping {
        last_sweep.insert(b.clone(), round_start);
    }
    asks
}

/// Probes every bridge of `asks` at once, one thread each.
///
/// A bridge's round (its timeout, and its grace after every address has answered) waits
/// `delay + jitter` longer for its slowest impaired NIC: a reply netem holds past the round
/// would be read by the next round and timed from that round's request (ARP replies carry no
/// request id), giving a wrong, short RTT. The grace matters because a sibling NIC of the
/// same guest can answer at once for the delayed NIC's address (ARP flux), which counts as
/// "every address answered".
fn probe_bridges<P: Prober + ?Sized>(
    targets: &[NicTarget],
    prober: &P,
    asks: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
    opts: &VerifyOptions,
) -> BTreeMap<String, Result<Vec<TimedReply>, ProbeError>> {
    let mut extra: BTreeMap<&str, Duration> = BTreeMap::new();
    for t in targets {
        if let Some(b) = t.bridge.as_deref() {
            let e = extra.entry(b).or_default();
            *e = (*e).max(t.max_extra_rtt());
        }
    }
    thread::scope(|s| {
        let handles: Vec<_> = asks
            .iter()
            .map(|(bridge, ips)| {
                let ips: Vec<Ipv4Addr> = ips.iter().copied().collect();
                let extra = extra.get(bridge.as_str()).copied().unwrap_or_default();
                let (timeout, grace) = (opts.probe_timeout + extra, opts.grace + extra);
                let h = s.spawn(move || prober.probe_timed(bridge, &ips, timeout, grace));
                (bridge.clone(), h)
            })
            .collect();
        // A panicking probe thread is re-raised here, after the scope has joined the
        // others (they end by their own timeout): nobody waits forever.
        handles.into_iter().map(|(b, h)| (b, h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))).collect()
    })
}

/// One round's probe results, by bridge.
struct Probed {
    replies: BTreeMap<String, Vec<ArpReply>>,
    /// The round trip of each reply, by (bridge, MAC, address).
    rtts: BTreeMap<(String, MacAddr, Ipv4Addr), Duration>,
    /// Per bridge, why it could not be probed.
    broken: BTreeMap<String, FailReason>,
}

impl Probed {
    /// Sorts each bridge's result into replies, round trips or a reason its NICs fail; an
    /// error that makes probing impossible everywhere (permission, I/O) is returned.
    fn sort(results: BTreeMap<String, Result<Vec<TimedReply>, ProbeError>>) -> Result<Self, VerifyError> {
        let mut probed = Probed { replies: BTreeMap::new(), rtts: BTreeMap::new(), broken: BTreeMap::new() };
        for (bridge, r) in results {
            match r {
                Ok(v) => {
                    for (reply, rtt) in &v {
                        if let Some(rtt) = rtt {
                            probed.rtts.insert((bridge.clone(), reply.sender_mac, reply.sender_ip), *rtt);
                        }
                    }
                    probed.replies.insert(bridge, v.into_iter().map(|(r, _)| r).collect());
                }
                // A target's bridge is one libvirt reports for an active network
                // (`verify::target`): missing here means topo runs in another namespace.
                Err(ProbeError::InterfaceMissing { .. }) => {
                    probed.broken.insert(bridge.clone(), FailReason::BridgeNotVisible { bridge });
                }
                Err(e @ (ProbeError::InterfaceDown { .. } | ProbeError::NoMac { .. } | ProbeError::NoIpv6 { .. })) => {
                    probed.broken.insert(bridge, FailReason::NoBridge { detail: e.to_string() });
                }
                Err(
                    e @ (ProbeError::PermissionDenied { .. }
                    | ProbeError::Io { .. }
                    | ProbeError::ToolMissing { .. }
                    | ProbeError::Remote { .. }),
                ) => {
                    return Err(e.into());
                }
            }
        }
        Ok(probed)
    }
}

/// Judges each pending NIC by the replies on its bridge at `now`, reporting each change.
fn judge_round<F: FnMut(&NicProgress<'_>)>(
    targets: &[NicTarget],
    tracks: &mut [Track],
    owned: &Owned<'_>,
    probed: &Probed,
    now: Duration,
    progress: &mut F,
) {
    let none: Vec<ArpReply> = Vec::new();
    for index in 0..targets.len() {
        let t = &targets[index];
        let Some(bridge) = t.bridge.as_ref().filter(|_| !tracks[index].state.is_final()) else {
            continue;
        };
        let next = if let Some(reason) = probed.broken.get(bridge) {
            NicState::Failed { reason: reason.clone() }
        } else {
            let got = probed.replies.get(bridge).unwrap_or(&none);
            let judged = judge(index, targets, &owned.own, &owned.owners, got, &tracks[index]);
            let tr = &mut tracks[index];
            if let Some(c) = judged.conflict {
                tr.conflict = Some(c);
            }
            if let Some(e) = judged.elsewhere {
                tr.elsewhere = Some(e);
            }
            if let Some(a) = judged.ambiguous {
                tr.ambiguous = Some(a);
            }
            match judged.verdict {
                Verdict::Proven(ip) => NicState::Verified {
                    ip: ip.into(),
                    evidence: Evidence { mac: t.mac, bridge: bridge.clone(), ndp: false },
                    seconds: now.as_secs_f64(),
                    // A round trip shorter than netem allows is a late reply to an
                    // earlier round's request: not this request's round trip.
                    rtt_ms: probed
                        .rtts
                        .get(&(bridge.clone(), t.mac, ip))
                        .filter(|d| **d >= t.min_rtt())
                        .map(|d| d.as_secs_f64() * 1e3),
                },
                Verdict::Duplicate { ip, other_mac } => {
                    NicState::Failed { reason: FailReason::Duplicate { ip, mac: t.mac, other_mac } }
                }
                Verdict::Pending => match tr.candidates.first() {
                    Some(ip) => NicState::LeasedNoReply { ip: *ip },
                    None => NicState::WaitingForLease,
                },
            }
        };
        let tr = &mut tracks[index];
        if next != tr.state {
            tr.state = next;
            progress(&NicProgress { index, target: t, state: &tr.state });
        }
    }
}
enum Verdict {
    Proven(Ipv4Addr),
    Duplicate { ip: Ipv4Addr, other_mac: MacAddr },
    Pending,
}

struct Judged {
    verdict: Verdict,
    conflict: Option<(Ipv4Addr, MacAddr)>,
    elsewhere: Option<Ipv4Addr>,
    ambiguous: Option<(Ipv4Addr, String)>,
}

/// Judges NIC `i` by the replies `got` of one probe on its bridge. `own[j]` are NIC j's
/// reservation and leases, `owners` the NICs owning each (network, address).
fn judge(
    i: usize,
    targets: &[NicTarget],
    own: &[Vec<Ipv4Addr>],
    owners: &BTreeMap<(&str, Ipv4Addr), BTreeSet<usize>>,
    got: &[ArpReply],
    tr: &Track,
) -> Judged {
    let t = &targets[i];
    // Other NICs of the same VM on the same bridge: their replies are ARP flux.
    let siblings: Vec<usize> =
        (0..targets.len()).filter(|&j| j != i && targets[j].vm == t.vm && targets[j].bridge == t.bridge).collect();
    let is_sibling = |m: MacAddr| siblings.iter().any(|&j| targets[j].mac == m);
    // An address that is another NIC's lease or reservation never proves this one.
    let not_anothers = |ip: Ipv4Addr| {
        tr.candidates.contains(&ip)
            || owners.get(&(t.libvirt_network.as_str(), ip)).is_none_or(|o| o.iter().all(|&j| j == i))
    };
    let ours: Vec<&ArpReply> = got.iter().filter(|r| r.sender_mac == t.mac).collect();
    // With a reservation only the reserved address counts: a guest still holding an older
    // lease does not have the address the lab says.
    let counts = |ip: Ipv4Addr| t.reservation.map_or(tr.candidates.contains(&ip), |r| r == ip);
    let mut ambiguous = None;
    let hit = ours.iter().find(|r| counts(r.sender_ip)).map(|r| r.sender_ip).or_else(|| {
        // No candidate: any address of the subnet this MAC answered for (a sweep), unless
        // a sibling without addresses of its own answers there too.
        let subnet = t.subnet.filter(|_| tr.candidates.is_empty())?;
        let found = ours.iter().filter(|r| subnet.contains(r.sender_ip) && not_anothers(r.sender_ip));
        let mut first_ambiguous = None;
        for r in found {
            let shared = siblings.iter().find(|&&j| {
                own[j].is_empty() && got.iter().any(|o| o.sender_mac == targets[j].mac && o.sender_ip == r.sender_ip)
            });
            match shared {
                None => return Some(r.sender_ip),
                Some(&j) => {
                    first_ambiguous.get_or_insert((r.sender_ip, format!("{} ({})", targets[j].nic, targets[j].mac)));
                }
            }
        }
        ambiguous = first_ambiguous;
        None
    });
    if let Some(ip) = hit {
        let dup = got.iter().find(|o| o.sender_ip == ip && o.sender_mac != t.mac && !is_sibling(o.sender_mac));
        let verdict = match dup {
            Some(o) => Verdict::Duplicate { ip, other_mac: o.sender_mac },
            None => Verdict::Proven(ip),
        };
        return Judged { verdict, conflict: None, elsewhere: None, ambiguous: None };
    }
    let conflict = got
        .iter()
        .find(|r| r.sender_mac != t.mac && !is_sibling(r.sender_mac) && tr.candidates.contains(&r.sender_ip))
        .map(|r| (r.sender_ip, r.sender_mac));
    let elsewhere = ours.iter().find(|r| tr.candidates.contains(&r.sender_ip)).map(|r| r.sender_ip);
    Judged { verdict: Verdict::Pending, conflict, elsewhere, ambiguous }
}

/// Fails every NIC not yet settled, for the reason `why` gives (interrupted, or the
/// diagnosis at the deadline), reporting each.
fn fail_unsettled<F, W>(targets: &[NicTarget], tracks: &mut [Track], progress: &mut F, why: W)
where
    F: FnMut(&NicProgress<'_>),
    W: Fn(&NicTarget, &Track) -> FailReason,
{
    for (index, (t, tr)) in targets.iter().zip(tracks.iter_mut()).enumerate() {
        if !tr.state.is_final() {
            tr.state = NicState::Failed { reason: why(t, tr) };
            progress(&NicProgress { index, target: t, state: &tr.state });
        }
    }
}
