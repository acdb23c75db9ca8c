//! Proof after apply that every NIC holds an IPv4 address: an ARP reply from the NIC's own MAC
//! on its network's bridge. Leases only say where to look; they never count as proof.
//!
//! The loop is pure apart from its three boundaries — a [`Prober`], a [`LeaseSource`] and a
//! [`Clock`] — so every outcome is tested with fakes. Each round: refresh the leases, probe
//! every pending NIC's candidate addresses (reservation and leases) with one short probe per
//! bridge, all bridges in parallel; a NIC that has no candidate after a while is looked for by
//! sweeping its subnet and matching its MAC. Rounds repeat until every NIC is settled or the
//! time is up; then each unsettled NIC gets a diagnosis.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use serde::Serialize;

use crate::arp::ArpReply;
use crate::hypervisor::{HvError, Hypervisor};
use crate::model::{MacAddr, Network, NetworkKind, NetworkName, Nic, Verify, Vm, VmName};
use crate::observed::{Lease, ObservedNetwork};
use crate::prober::{ProbeError, Prober, sweep_targets};

/// One NIC to verify, with everything the loop needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicTarget {
    pub vm: VmName,
    /// The VM's libvirt domain name.
    pub domain: String,
    /// `eth0`, `eth1`, ... (model::Nic::label).
    pub nic: String,
    pub network: NetworkName,
    /// The network's libvirt name: leases are matched on it and the MAC.
    pub libvirt_network: String,
    /// The host bridge of the network; `None` when it has none (or it is unknown).
    pub bridge: Option<String>,
    pub mac: MacAddr,
    /// A DHCP reservation for this MAC: probed from the start, before any lease shows up.
    pub reservation: Option<Ipv4Addr>,
    /// The network serves DHCP (so a lease is expected).
    pub dhcp: bool,
    /// The network's subnet, swept when no candidate address turns up.
    #[serde(serialize_with = "ser_subnet")]
    pub subnet: Option<Ipv4Network>,
    /// The VM is running (a stopped VM cannot answer).
    pub running: bool,
    /// `verify: arp` on the NIC; `false` (`verify: none`) skips it.
    pub verify: bool,
}

fn ser_subnet<S: serde::Serializer>(v: &Option<Ipv4Network>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.collect_str(n),
        None => s.serialize_none(),
    }
}

impl NicTarget {
    /// Builds the target of one NIC from the model and what libvirt reports of its network.
    ///
    /// Lab networks take subnet, DHCP and bridge from the model, falling back to the observed
    /// bridge (libvirt picks `virbrN` when the file names none). External networks take
    /// everything from `observed`.
    pub fn from_model(
        vm: &Vm,
        nic: &Nic,
        network: &Network,
        observed: Option<&ObservedNetwork>,
        running: bool,
    ) -> Self {
        // The running network's bridge is where frames go; the config's name can differ.
        let live_bridge = observed.and_then(|o| o.live_bridge.clone());
        let observed_bridge = live_bridge.clone().or_else(|| observed.and_then(|o| o.bridge.clone()));
        let observed_ip = observed.and_then(|o| o.ip.as_ref());
        let (bridge, dhcp, subnet) = match &network.kind {
            NetworkKind::Managed(m) => (
                live_bridge.or_else(|| m.bridge.as_ref().map(|b| b.as_str().to_owned())).or(observed_bridge),
                m.dhcp.is_some(),
                m.subnet,
            ),
            NetworkKind::External => (
                observed_bridge,
                observed_ip.is_some_and(|ip| ip.dhcp_range.is_some()),
                observed_ip.and_then(|ip| {
                    let any = Ipv4Network::new(ip.address, ip.prefix).ok()?;
                    Ipv4Network::new(any.network(), ip.prefix).ok()
                }),
            ),
        };
        let observed_reservation = observed_ip.and_then(|ip| ip.hosts.iter().find(|h| h.mac == nic.mac)).map(|h| h.ip);
        NicTarget {
            vm: vm.name.clone(),
            domain: vm.libvirt_name.clone(),
            nic: nic.label(),
            network: network.name.clone(),
            libvirt_network: network.libvirt_name.clone(),
            bridge,
            mac: nic.mac,
            reservation: nic.ip.or(observed_reservation),
            dhcp,
            subnet,
            running,
            verify: nic.verify == Verify::Arp,
        }
    }
}

/// What proved an address: a reply from this MAC on this bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub mac: MacAddr,
    pub bridge: String,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arp reply from {} on {}", self.mac, self.bridge)
    }
}

/// Why a NIC could not be verified; each says what to look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FailReason {
    #[error(
        "the network has no DHCP and the NIC no reserved address, and a sweep of the subnet \
         found no address answering from this MAC"
    )]
    NoDhcpNoReservation,
    #[error("{ip} (its lease or reservation) got no ARP reply from this NIC")]
    LeasedButSilent { ip: Ipv4Addr },
    #[error("no DHCP lease for this MAC, and no address in the subnet answered from it")]
    NoLease,
    #[error("{ip} is answered by {other_mac}, not by this NIC")]
    Conflict { ip: Ipv4Addr, other_mac: MacAddr },
    #[error("answers at {answered}, not at its reserved address {reserved}")]
    NotReserved { reserved: Ipv4Addr, answered: Ipv4Addr },
    #[error("the VM is not running")]
    VmNotRunning,
    #[error("cannot probe the network's bridge: {detail}")]
    NoBridge { detail: String },
    #[error("verification was interrupted before this NIC was proven")]
    Interrupted,
}

impl FailReason {
    /// What the user can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            FailReason::NoDhcpNoReservation => {
                "give the NIC an `ip` (a DHCP reservation) and DHCP on its network, or configure \
                 a static address in the guest; `verify: none` skips the check"
            }
            FailReason::LeasedButSilent { .. } => {
                "the guest's interface is down or has no address: check that the guest brings up \
                 this NIC (its name may differ, e.g. ens3 instead of eth0); a lease may also be \
                 left over from an earlier boot"
            }
            FailReason::NoLease => {
                "no DHCP client asked for an address on this NIC: check the guest's network \
                 configuration for this interface, or give it more time (--timeout)"
            }
            FailReason::Conflict { .. } => {
                "another machine holds this address (a duplicate static address, or a stale lease \
                 handed on): stop the other machine or change the NIC's `ip`"
            }
            FailReason::NotReserved { .. } => {
                "the reservation changed while the VM ran: the guest keeps its older lease until \
                 it renews it; restart the VM (or renew DHCP in the guest)"
            }
            FailReason::VmNotRunning => "start it with `topo apply`, or look at its console log",
            FailReason::NoBridge { .. } => {
                "ARP evidence needs the network's bridge on this host, up: is the network \
                 active (`virsh net-start`)? `verify: none` skips the check"
            }
            FailReason::Interrupted => "run `topo verify` again to finish the check",
        }
    }
}

/// Where a NIC stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NicState {
    /// `verify: none`.
    Skipped,
    /// No candidate address yet (no lease, no reservation).
    WaitingForLease,
    /// A candidate address (lease or reservation) is known; no reply from this MAC yet.
    LeasedNoReply {
        ip: Ipv4Addr,
    },
    Verified {
        ip: Ipv4Addr,
        evidence: Evidence,
        /// Seconds from the start of verification.
        seconds: f64,
    },
    Failed {
        reason: FailReason,
    },
    /// Remote hosts only: libvirt reports this address (a DHCP lease, or its ARP or guest
    /// agent address source), but topo could not probe the bridge: weaker evidence.
    Reported {
        ip: Ipv4Addr,
        source: String,
    },
}

impl NicState {
    /// Settled: no further probing changes it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            NicState::Skipped | NicState::Verified { .. } | NicState::Failed { .. } | NicState::Reported { .. }
        )
    }
    pub fn is_ok(&self) -> bool {
        matches!(self, NicState::Skipped | NicState::Verified { .. } | NicState::Reported { .. })
    }
}

impl fmt::Display for NicState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicState::Skipped => f.write_str("not verified (verify: none)"),
            NicState::WaitingForLease => f.write_str("waiting for a DHCP lease"),
            NicState::LeasedNoReply { ip } => write!(f, "{ip}: no ARP reply yet"),
            NicState::Verified { ip, evidence, seconds } => {
                write!(f, "{ip} verified ({evidence}, after {seconds:.1} s)")
            }
            NicState::Failed { reason } => write!(f, "failed: {reason}"),
            NicState::Reported { ip, source } => write!(f, "{ip} reported by {source} (not proven by ARP)"),
        }
    }
}

/// Where topo cannot probe the bridges (a remote libvirt host), the weaker evidence: what
/// libvirt reports. Per NIC, in order of preference: an address from libvirt's ARP or
/// guest-agent sources (`addresses`, per VM), the newest DHCP lease for the MAC on its network,
/// the reservation. Pure; the caller reads `leases` and `addresses` from the hypervisor.
pub fn reported(
    targets: &[NicTarget],
    leases: &[Lease],
    addresses: &BTreeMap<VmName, Vec<(MacAddr, Ipv4Addr)>>,
) -> VerifyReport {
    let nics = targets
        .iter()
        .map(|t| {
            let from_libvirt = addresses
                .get(&t.vm)
                .and_then(|v| v.iter().find(|(m, ip)| *m == t.mac && t.subnet.is_none_or(|s| s.contains(*ip))));
            let lease =
                leases.iter().filter(|l| l.mac == t.mac && l.network == t.libvirt_network).max_by_key(|l| l.expiry);
            let state = if !t.verify {
                NicState::Skipped
            } else if !t.running {
                NicState::Failed { reason: FailReason::VmNotRunning }
            } else if let Some((_, ip)) = from_libvirt {
                NicState::Reported { ip: *ip, source: "libvirt's address sources".into() }
            } else if let Some(l) = lease {
                NicState::Reported { ip: l.ip, source: "a DHCP lease".into() }
            } else if !t.dhcp {
                NicState::Failed { reason: FailReason::NoDhcpNoReservation }
            } else {
                NicState::Failed { reason: FailReason::NoLease }
            };
            NicOutcome { target: t.clone(), state }
        })
        .collect();
    VerifyReport { nics }
}

/// A NIC's state changed; passed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct NicProgress<'a> {
    /// Position of the NIC in the target list.
    pub index: usize,
    pub target: &'a NicTarget,
    pub state: &'a NicState,
}

/// The result of verification: every target with its final state, in input order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    pub nics: Vec<NicOutcome>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NicOutcome {
    pub target: NicTarget,
    pub state: NicState,
}

impl VerifyReport {
    /// Every NIC verified or skipped.
    pub fn all_ok(&self) -> bool {
        self.nics.iter().all(|n| n.state.is_ok())
    }
    /// The NICs that failed, in order.
    pub fn failed(&self) -> impl Iterator<Item = &NicOutcome> {
        self.nics.iter().filter(|n| !n.state.is_ok())
    }
}

/// Verification could not run at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum VerifyError {
    #[error("ARP probe failed")]
    #[diagnostic(code(topo::verify::probe))]
    Probe(
        #[from]
        #[diagnostic_source]
        ProbeError,
    ),
    #[error("reading DHCP leases failed")]
    #[diagnostic(code(topo::verify::leases))]
    Leases(
        #[from]
        #[diagnostic_source]
        HvError,
    ),
}

/// Where DHCP leases come from (libvirt, or a fake).
pub trait LeaseSource {
    /// Every current lease of the networks of interest (stale ones included: libvirt keeps
    /// them; the loop never trusts a lease without an ARP reply).
    fn leases(&self) -> Result<Vec<Lease>, HvError>;
}

impl<F: Fn() -> Result<Vec<Lease>, HvError>> LeaseSource for F {
    fn leases(&self) -> Result<Vec<Lease>, HvError> {
        self()
    }
}

/// Leases of the given libvirt networks, read through a [`Hypervisor`].
pub struct HypervisorLeases<'a, H: Hypervisor + ?Sized> {
    pub hypervisor: &'a H,
    pub networks: BTreeSet<String>,
}

impl<H: Hypervisor + ?Sized> HypervisorLeases<'_, H> {
    /// The networks of `targets` that serve DHCP.
    pub fn for_targets<'h>(hypervisor: &'h H, targets: &[NicTarget]) -> HypervisorLeases<'h, H> {
        let networks = targets.iter().filter(|t| t.dhcp && t.verify).map(|t| t.libvirt_network.clone()).collect();
        HypervisorLeases { hypervisor, networks }
    }
}

impl<H: Hypervisor + ?Sized> LeaseSource for HypervisorLeases<'_, H> {
    fn leases(&self) -> Result<Vec<Lease>, HvError> {
        let mut all = Vec::new();
        for n in &self.networks {
            match self.hypervisor.dhcp_leases(n) {
                Ok(l) => all.extend(l),
                // A driver without lease support (libvirt's test driver, some remote setups)
                // has no leases to offer: reservations and subnet sweeps still work.
                Err(e) if e.kind == crate::hypervisor::HvErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

/// Scripted leases: each lease becomes visible from the Nth call of `leases()` on (0-based),
/// so a test can make a lease "appear" in a given round.
#[derive(Debug, Default)]
pub struct FakeLeases {
    leases: Vec<(u32, Lease)>,
    calls: Cell<u32>,
    fail: Option<HvError>,
}

impl FakeLeases {
    pub fn new() -> Self {
        Self::default()
    }
    /// A lease present from the first call.
    pub fn with(self, network: &str, mac: MacAddr, ip: Ipv4Addr) -> Self {
        self.with_from_call(0, network, mac, ip)
    }
    /// A lease that shows up at call `n` (0-based) and stays.
    pub fn with_from_call(mut self, n: u32, network: &str, mac: MacAddr, ip: Ipv4Addr) -> Self {
        let lease = Lease { network: network.to_owned(), mac, ip, hostname: None, expiry: 0 };
        self.leases.push((n, lease));
        self
    }
    /// Every call fails with this error.
    pub fn failing(mut self, e: HvError) -> Self {
        self.fail = Some(e);
        self
    }
    pub fn calls(&self) -> u32 {
        self.calls.get()
    }
}

impl LeaseSource for FakeLeases {
    fn leases(&self) -> Result<Vec<Lease>, HvError> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        Ok(self.leases.iter().filter(|(from, _)| *from <= n).map(|(_, l)| l.clone()).collect())
    }
}

/// Time as the loop sees it: elapsed since verification started, and waiting.
pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The wall clock, started at construction.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn start() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        thread::sleep(d)
    }
}

/// A clock that only moves when slept on: tests run instantly and deterministically.
#[derive(Debug, Default)]
pub struct FakeClock(Cell<Duration>);

impl FakeClock {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        self.0.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.set(self.0.get().saturating_add(d))
    }
}

/// Tuning of the loop.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Give up on NICs still unverified after this long.
    pub timeout: Duration,
    /// How long one probe waits for replies (also the round length). A lease shows up a bit
    /// before the guest has configured the address: short probes, retried, beat one long wait.
    pub probe_timeout: Duration,
    /// A NIC with DHCP but no candidate address after this long is looked for by sweeping
    /// its subnet. (Without DHCP and reservation there is nothing to wait for: sweep at once.)
    pub sweep_after: Duration,
    /// At most one sweep per bridge this often.
    pub sweep_every: Duration,
    /// Subnets with more host addresses than this are not swept.
    pub max_sweep_hosts: u32,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            probe_timeout: Duration::from_millis(300),
            sweep_after: Duration::from_secs(10),
            sweep_every: Duration::from_secs(3),
            max_sweep_hosts: 1024,
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
}

fn initial_state(t: &NicTarget) -> NicState {
    if !t.verify {
        NicState::Skipped
    } else if !t.running {
        NicState::Failed { reason: FailReason::VmNotRunning }
    } else if t.bridge.is_none() {
        NicState::Failed { reason: FailReason::NoBridge { detail: "the network has no bridge on this host".into() } }
    } else if let Some(ip) = t.reservation {
        NicState::LeasedNoReply { ip }
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
/// Errors only when probing is impossible everywhere (no permission for raw sockets, an I/O
/// error) or the leases cannot be read; a missing or down bridge fails just its NICs.
///
/// `cancel` (set by Ctrl-C, SIGTERM, SIGHUP) is checked before and after each round's probe:
/// once set, every NIC not yet settled fails as [`FailReason::Interrupted`] and the report is
/// returned at once.
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
    let mut tracks: Vec<Track> = targets
        .iter()
        .map(|t| Track {
            state: initial_state(t),
            leased: None,
            candidates: Vec::new(),
            conflict: None,
            elsewhere: None,
        })
        .collect();
    for (index, (t, tr)) in targets.iter().zip(&tracks).enumerate() {
        progress(&NicProgress { index, target: t, state: &tr.state });
    }
    let mut last_sweep: BTreeMap<String, Duration> = BTreeMap::new();
    let mut first_round = true;

    while tracks.iter().any(|tr| !tr.state.is_final()) {
        if cancel.load(Ordering::SeqCst) {
            interrupt(targets, &mut tracks, &mut progress);
            break;
        }
        let round_start = clock.elapsed();

        // 1. Candidates from reservations and the current leases.
        let all_leases = leases.leases()?;
        for (t, tr) in targets.iter().zip(tracks.iter_mut()) {
            if tr.state.is_final() {
                continue;
            }
            let mine = all_leases.iter().filter(|l| l.mac == t.mac && l.network == t.libvirt_network).map(|l| l.ip);
            tr.candidates = t.reservation.into_iter().collect();
            for ip in mine {
                tr.leased = Some(ip);
                if !tr.candidates.contains(&ip) {
                    tr.candidates.push(ip);
                }
            }
        }

        // 2. What to ask on each bridge: candidates, plus a sweep where a NIC has none.
        let mut asks: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut sweeping: BTreeSet<String> = BTreeSet::new();
        for (t, tr) in targets.iter().zip(&tracks) {
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
        // The first round asks every bridge, even with nothing to probe yet: a missing or
        // down bridge is reported at once instead of as a missing lease at the deadline.
        if !first_round {
            asks.retain(|_, a| !a.is_empty());
        }
        first_round = false;
        for b in &sweeping {
            last_sweep.insert(b.clone(), round_start);
        }

        // 3. Probe all bridges in parallel, one thread each.
        let results: BTreeMap<String, Result<Vec<ArpReply>, ProbeError>> = thread::scope(|s| {
            let handles: Vec<_> = asks
                .iter()
                .map(|(bridge, ips)| {
                    let ips: Vec<Ipv4Addr> = ips.iter().copied().collect();
                    let h = s.spawn(move || prober.probe(bridge, &ips, opts.probe_timeout));
                    (bridge.clone(), h)
                })
                .collect();
            handles.into_iter().map(|(b, h)| (b, h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))).collect()
        });
        let mut replies: BTreeMap<String, Vec<ArpReply>> = BTreeMap::new();
        let mut broken: BTreeMap<String, String> = BTreeMap::new();
        for (bridge, r) in results {
            match r {
                Ok(v) => {
                    replies.insert(bridge, v);
                }
                Err(
                    e @ (ProbeError::InterfaceMissing { .. }
                    | ProbeError::InterfaceDown { .. }
                    | ProbeError::NoMac { .. }),
                ) => {
                    broken.insert(bridge, e.to_string());
                }
                Err(e @ (ProbeError::PermissionDenied { .. } | ProbeError::Io { .. })) => {
                    return Err(e.into());
                }
            }
        }

        // 4. Judge each pending NIC by the replies on its bridge.
        let now = clock.elapsed();
        let none: Vec<ArpReply> = Vec::new();
        for (index, (t, tr)) in targets.iter().zip(tracks.iter_mut()).enumerate() {
            let Some(bridge) = t.bridge.as_ref().filter(|_| !tr.state.is_final()) else {
                continue;
            };
            let next = if let Some(detail) = broken.get(bridge) {
                NicState::Failed { reason: FailReason::NoBridge { detail: detail.clone() } }
            } else {
                let got = replies.get(bridge).unwrap_or(&none);
                let ours = |r: &&ArpReply| r.sender_mac == t.mac;
                // With a reservation only the reserved address counts: a guest still holding an
                // older lease does not have the address the lab says.
                let counts = |ip: &Ipv4Addr| t.reservation.map_or(tr.candidates.contains(ip), |r| r == *ip);
                let hit = got.iter().filter(ours).find(|r| counts(&r.sender_ip)).or_else(|| {
                    // No candidate: any address of the subnet this MAC answered for (sweep).
                    let subnet = t.subnet.filter(|_| tr.candidates.is_empty())?;
                    got.iter().filter(ours).find(|r| subnet.contains(r.sender_ip))
                });
                if let Some(r) = hit {
                    NicState::Verified {
                        ip: r.sender_ip,
                        evidence: Evidence { mac: t.mac, bridge: bridge.clone() },
                        seconds: now.as_secs_f64(),
                    }
                } else {
                    if let Some(r) = got.iter().find(|r| r.sender_mac != t.mac && tr.candidates.contains(&r.sender_ip))
                    {
                        tr.conflict = Some((r.sender_ip, r.sender_mac));
                    }
                    if let Some(r) = got.iter().filter(ours).find(|r| tr.candidates.contains(&r.sender_ip)) {
                        tr.elsewhere = Some(r.sender_ip);
                    }
                    match tr.candidates.first() {
                        Some(ip) => NicState::LeasedNoReply { ip: *ip },
                        None => NicState::WaitingForLease,
                    }
                }
            };
            if next != tr.state {
                tr.state = next;
                progress(&NicProgress { index, target: t, state: &tr.state });
            }
        }

        // 5. Done; or interrupted; or out of time: diagnose what is left; or wait out the round.
        if tracks.iter().all(|tr| tr.state.is_final()) {
            break;
        }
        if cancel.load(Ordering::SeqCst) {
            interrupt(targets, &mut tracks, &mut progress);
            break;
        }
        if now >= opts.timeout {
            for (index, (t, tr)) in targets.iter().zip(tracks.iter_mut()).enumerate() {
                if !tr.state.is_final() {
                    tr.state = NicState::Failed { reason: diagnose(t, tr) };
                    progress(&NicProgress { index, target: t, state: &tr.state });
                }
            }
            break;
        }
        let round_end = round_start.saturating_add(opts.probe_timeout);
        if now < round_end {
            clock.sleep((round_end - now).min(opts.timeout.saturating_sub(now)));
        }
    }

    Ok(VerifyReport {
        nics: targets.iter().zip(tracks).map(|(t, tr)| NicOutcome { target: t.clone(), state: tr.state }).collect(),
    })
}

/// Fails every NIC not yet settled as interrupted.
fn interrupt<F: FnMut(&NicProgress<'_>)>(targets: &[NicTarget], tracks: &mut [Track], progress: &mut F) {
    for (index, (t, tr)) in targets.iter().zip(tracks.iter_mut()).enumerate() {
        if !tr.state.is_final() {
            tr.state = NicState::Failed { reason: FailReason::Interrupted };
            progress(&NicProgress { index, target: t, state: &tr.state });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::HvErrorKind;
    use crate::prober::FakeProber;

    const NET: &str = "lab-net";

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC is valid")
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP is valid")
    }
    fn a() -> MacAddr {
        mac("52:54:00:00:00:0a")
    }
    fn b() -> MacAddr {
        mac("52:54:00:00:00:0b")
    }
    fn stranger() -> MacAddr {
        mac("52:54:00:ff:ff:ff")
    }

    fn target(vm: &str, m: MacAddr) -> NicTarget {
        NicTarget {
            vm: VmName::new(vm).unwrap(),
            domain: format!("lab-{vm}"),
            nic: "eth0".into(),
            network: NetworkName::new("net").unwrap(),
            libvirt_network: NET.into(),
            bridge: Some("br0".into()),
            mac: m,
            reservation: None,
            dhcp: true,
            subnet: Some("10.0.0.0/24".parse().unwrap()),
            running: true,
            verify: true,
        }
    }

    fn opts() -> VerifyOptions {
        VerifyOptions {
            timeout: Duration::from_secs(3),
            probe_timeout: Duration::from_millis(300),
            sweep_after: Duration::from_millis(1500),
            sweep_every: Duration::from_secs(1),
            max_sweep_hosts: 1024,
        }
    }

    struct Run {
        report: VerifyReport,
        log: Vec<(usize, NicState)>,
        clock: FakeClock,
    }

    fn run(targets: &[NicTarget], p: &FakeProber, l: &FakeLeases) -> Run {
        let clock = FakeClock::new();
        let mut log = Vec::new();
        let report =
            verify(targets, p, l, &clock, &opts(), &AtomicBool::new(false), |e| log.push((e.index, e.state.clone())))
                .expect("verification runs");
        Run { report, log, clock }
    }

    fn state(r: &Run, i: usize) -> &NicState {
        &r.report.nics[i].state
    }

    fn failed(r: &Run, i: usize) -> &FailReason {
        match state(r, i) {
            NicState::Failed { reason } => reason,
            other => panic!("NIC {i} did not fail: {other:?}"),
        }
    }

    #[test]
    fn leased_and_answering_is_verified_at_once() {
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
        let r = run(&[target("vm1", a())], &p, &l);
        assert_eq!(
            state(&r, 0),
            &NicState::Verified {
                ip: ip("10.0.0.5"),
                evidence: Evidence { mac: a(), bridge: "br0".into() },
                seconds: 0.0,
            }
        );
        assert!(r.report.all_ok());
        assert_eq!(p.calls().len(), 1, "settled NICs are not probed again");
        assert_eq!(
            state(&r, 0).to_string(),
            "10.0.0.5 verified (arp reply from 52:54:00:00:00:0a on br0, after 0.0 s)"
        );
    }

    #[test]
    fn lease_before_address_is_retried_until_the_guest_answers() {
        // The lease shows up in round 1; the guest configures the address two probes later.
        let p = FakeProber::new().answer_after("br0", ip("10.0.0.5"), a(), 2);
        let l = FakeLeases::new().with_from_call(1, NET, a(), ip("10.0.0.5"));
        let r = run(&[target("vm1", a())], &p, &l);
        let verified = NicState::Verified {
            ip: ip("10.0.0.5"),
            evidence: Evidence { mac: a(), bridge: "br0".into() },
            seconds: 0.9,
        };
        assert_eq!(
            r.log,
            vec![
                (0, NicState::WaitingForLease),
                (0, NicState::LeasedNoReply { ip: ip("10.0.0.5") }),
                (0, verified.clone()),
            ]
        );
        assert_eq!(state(&r, 0), &verified);
        assert_eq!(p.probes_of("br0", ip("10.0.0.5")), 3);
        assert_eq!(r.clock.elapsed(), Duration::from_millis(900));
    }

    #[test]
    fn reservation_is_probed_before_any_lease() {
        let mut t = target("vm1", a());
        t.reservation = Some(ip("10.0.0.20"));
        let p = FakeProber::new().answer("br0", ip("10.0.0.20"), a());
        let r = run(&[t], &p, &FakeLeases::new());
        assert_eq!(r.log[0], (0, NicState::LeasedNoReply { ip: ip("10.0.0.20") }));
        assert!(matches!(state(&r, 0), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.20")));
    }

    #[test]
    fn old_lease_answering_is_not_the_reservation() {
        // The reservation moved from .62 to .63 while the VM ran: the guest keeps .62.
        let mut t = target("vm1", a());
        t.reservation = Some(ip("10.0.0.63"));
        let p = FakeProber::new().answer("br0", ip("10.0.0.62"), a());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.62"));
        let r = run(&[t.clone()], &p, &l);
        assert_eq!(failed(&r, 0), &FailReason::NotReserved { reserved: ip("10.0.0.63"), answered: ip("10.0.0.62") });
        assert_eq!(failed(&r, 0).to_string(), "answers at 10.0.0.62, not at its reserved address 10.0.0.63");
        // Once the guest renews (answers at the reserved address), it is verified.
        let p = FakeProber::new().answer("br0", ip("10.0.0.62"), a()).answer_after("br0", ip("10.0.0.63"), a(), 2);
        let r = run(&[t], &p, &l);
        assert!(matches!(state(&r, 0), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.63")));
    }

    #[test]
    fn stale_lease_without_reply_does_not_count() {
        let p = FakeProber::new().with_bridge("br0");
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.50"));
        let r = run(&[target("vm1", a())], &p, &l);
        assert_eq!(failed(&r, 0), &FailReason::LeasedButSilent { ip: ip("10.0.0.50") });
        assert!(!r.report.all_ok());
        // Short probes, retried until the deadline (3 s / 300 ms + the final round).
        assert_eq!(p.probes_of("br0", ip("10.0.0.50")), 11);
        assert_eq!(r.clock.elapsed(), Duration::from_secs(3));
        assert!(p.calls().iter().all(|c| c.timeout == Duration::from_millis(300)));
    }

    #[test]
    fn reply_from_another_mac_is_a_conflict_not_a_proof() {
        let p = FakeProber::new().answer("br0", ip("10.0.0.50"), stranger());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.50"));
        let r = run(&[target("vm1", a())], &p, &l);
        assert_eq!(failed(&r, 0), &FailReason::Conflict { ip: ip("10.0.0.50"), other_mac: stranger() });
        assert!(r.log.iter().all(|(_, s)| !matches!(s, NicState::Verified { .. })));
    }

    #[test]
    fn own_reply_wins_over_a_duplicate() {
        let p =
            FakeProber::new().answer("br0", ip("10.0.0.50"), stranger()).answer_after("br0", ip("10.0.0.50"), a(), 1);
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.50"));
        let r = run(&[target("vm1", a())], &p, &l);
        assert!(matches!(state(&r, 0), NicState::Verified { .. }));
    }

    #[test]
    fn old_lease_elsewhere_and_new_lease_answering() {
        // Two leases for the MAC: the old address went to another VM, the new one is ours.
        let p = FakeProber::new().answer("br0", ip("10.0.0.50"), stranger()).answer("br0", ip("10.0.0.51"), a());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.50")).with(NET, a(), ip("10.0.0.51"));
        let r = run(&[target("vm1", a())], &p, &l);
        assert!(matches!(state(&r, 0), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.51")));
    }

    #[test]
    fn lease_of_another_network_or_mac_is_ignored() {
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
        let l = FakeLeases::new().with("other-net", a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.5"));
        let mut t = target("vm1", a());
        t.subnet = None; // no sweep either
        let r = run(&[t], &p, &l);
        assert_eq!(failed(&r, 0), &FailReason::NoLease);
        assert_eq!(p.probes_of("br0", ip("10.0.0.5")), 0);
    }

    #[test]
    fn no_lease_sweeps_the_subnet_after_a_while_and_diagnoses_no_lease() {
        // Another host answers somewhere in the subnet: it must not verify this NIC.
        let p = FakeProber::new().answer("br0", ip("10.0.0.9"), stranger());
        let r = run(&[target("vm1", a())], &p, &FakeLeases::new());
        assert_eq!(failed(&r, 0), &FailReason::NoLease);
        assert_eq!(r.log, vec![(0, NicState::WaitingForLease), (0, failed_state(FailReason::NoLease))]);
        // The first round only checks the bridge (no targets); nothing else is asked before
        // sweep_after; then a /24 sweep at most once per second.
        let calls = p.calls();
        assert!(calls[0].targets.is_empty(), "{:?}", calls[0]);
        assert!(calls[1..].iter().all(|c| c.targets.len() == 254), "{calls:?}");
        assert_eq!(calls.len(), 3, "sweeps at 1.5 s and 2.7 s, not in every round");
    }

    #[test]
    fn remote_evidence_prefers_libvirt_addresses_then_leases() {
        let lease =
            |mac, ip: &str, expiry| Lease { network: NET.into(), mac, ip: ip.parse().unwrap(), hostname: None, expiry };
        let (ta, tb, tc) = (target("vm1", a()), target("vm2", b()), target("vm3", stranger()));
        let mut stopped = target("vm4", mac("52:54:00:00:00:44"));
        stopped.running = false;
        let mut no_dhcp = target("vm5", mac("52:54:00:00:00:55"));
        no_dhcp.dhcp = false;
        let leases = vec![
            lease(a(), "10.0.0.5", 10),
            lease(b(), "10.0.0.6", 10),
            lease(b(), "10.0.0.7", 20),
            // Same MAC on another network: not this NIC's.
            Lease { network: "other".into(), ..lease(stranger(), "10.0.0.8", 30) },
        ];
        let mut addrs = BTreeMap::new();
        addrs.insert(ta.vm.clone(), vec![(a(), ip("10.0.0.50")), (a(), ip("192.168.9.9"))]);
        let targets = [ta, tb, tc, stopped, no_dhcp];
        let r = reported(&targets, &leases, &addrs);
        let states: Vec<&NicState> = r.nics.iter().map(|n| &n.state).collect();
        assert_eq!(
            states,
            [
                &NicState::Reported { ip: ip("10.0.0.50"), source: "libvirt's address sources".into() },
                &NicState::Reported { ip: ip("10.0.0.7"), source: "a DHCP lease".into() },
                &failed_state(FailReason::NoLease),
                &failed_state(FailReason::VmNotRunning),
                &failed_state(FailReason::NoDhcpNoReservation),
            ]
        );
        assert!(r.nics[0].state.is_ok() && r.nics[1].state.is_ok() && !r.all_ok());
    }

    fn failed_state(reason: FailReason) -> NicState {
        NicState::Failed { reason }
    }

    #[test]
    fn sweep_finds_a_statically_configured_guest() {
        let p = FakeProber::new().answer("br0", ip("10.0.0.77"), a());
        let r = run(&[target("vm1", a())], &p, &FakeLeases::new());
        match state(&r, 0) {
            NicState::Verified { ip: x, evidence, seconds } => {
                assert_eq!(*x, ip("10.0.0.77"));
                assert_eq!(evidence.mac, a());
                assert!(*seconds >= 1.5, "swept only after sweep_after: {seconds}");
            }
            other => panic!("not verified: {other:?}"),
        }
    }

    #[test]
    fn no_dhcp_no_reservation_sweeps_at_once() {
        let mut t = target("vm1", a());
        t.dhcp = false;
        let p = FakeProber::new().answer("br0", ip("10.0.0.77"), a());
        let r = run(&[t.clone()], &p, &FakeLeases::new());
        assert!(matches!(state(&r, 0), NicState::Verified { seconds, .. } if *seconds == 0.0));

        let silent = FakeProber::new().with_bridge("br0");
        let r = run(&[t.clone()], &silent, &FakeLeases::new());
        assert_eq!(failed(&r, 0), &FailReason::NoDhcpNoReservation);

        // Without a subnet there is nothing to sweep either.
        t.subnet = None;
        let r = run(&[t], &silent, &FakeLeases::new());
        assert_eq!(failed(&r, 0), &FailReason::NoDhcpNoReservation);
    }

    #[test]
    fn silent_reservation_without_dhcp_or_lease() {
        let mut t = target("vm1", a());
        t.dhcp = false;
        t.reservation = Some(ip("10.0.0.20"));
        let p = FakeProber::new().answer("br0", ip("10.0.0.77"), a());
        let r = run(&[t.clone()], &p, &FakeLeases::new());
        // A known candidate means no sweep: the NIC must answer where it is expected to.
        assert_eq!(failed(&r, 0), &FailReason::LeasedButSilent { ip: ip("10.0.0.20") });
        assert!(p.calls().iter().all(|c| c.targets == vec![ip("10.0.0.20")]));
        // With DHCP on and only a reservation, the missing lease is the diagnosis.
        t.dhcp = true;
        let r = run(&[t], &FakeProber::new().with_bridge("br0"), &FakeLeases::new());
        assert_eq!(failed(&r, 0), &FailReason::NoLease);
    }

    #[test]
    fn stopped_vm_fails_without_probing() {
        let mut t = target("vm1", a());
        t.running = false;
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
        let r = run(&[t], &p, &l);
        assert_eq!(failed(&r, 0), &FailReason::VmNotRunning);
        assert!(p.calls().is_empty());
        assert_eq!(l.calls(), 0, "nothing pending: leases not even read");
    }

    #[test]
    fn missing_or_down_bridge_fails_only_its_nics() {
        let mut none = target("vm1", a());
        none.bridge = None;
        let mut gone = target("vm2", b());
        gone.bridge = Some("br9".into());
        let mut down = target("vm3", mac("52:54:00:00:00:0c"));
        down.bridge = Some("br1".into());
        let fine = target("vm4", mac("52:54:00:00:00:0d"));
        let p = FakeProber::new().with_down_bridge("br1").answer("br0", ip("10.0.0.13"), mac("52:54:00:00:00:0d"));
        let l = FakeLeases::new()
            .with(NET, b(), ip("10.0.0.11"))
            .with(NET, mac("52:54:00:00:00:0c"), ip("10.0.0.12"))
            .with(NET, mac("52:54:00:00:00:0d"), ip("10.0.0.13"));
        let r = run(&[none, gone, down, fine], &p, &l);
        let detail = |i| match failed(&r, i) {
            FailReason::NoBridge { detail } => detail.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(detail(0), "the network has no bridge on this host");
        assert_eq!(detail(1), "interface br9 does not exist on this host");
        assert_eq!(detail(2), "interface br1 is down");
        assert!(matches!(state(&r, 3), NicState::Verified { .. }));
    }

    #[test]
    fn verify_none_is_skipped() {
        let mut t = target("vm1", a());
        t.verify = false;
        let p = FakeProber::new().with_bridge("br0");
        let r = run(&[t], &p, &FakeLeases::new());
        assert_eq!(state(&r, 0), &NicState::Skipped);
        assert!(r.report.all_ok());
        assert!(p.calls().is_empty());
    }

    #[test]
    fn permission_denied_aborts() {
        let p = FakeProber::new().with_bridge("br0").denied();
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
        let err = verify(&[target("vm1", a())], &p, &l, &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {})
            .unwrap_err();
        assert!(matches!(err, VerifyError::Probe(ProbeError::PermissionDenied { .. })), "{err:?}");
    }

    #[test]
    fn an_interrupt_stops_verification_and_fails_what_is_left() {
        /// Sets the cancel flag on its first probe, like a Ctrl-C during the first round.
        struct CancelOnProbe<'a>(FakeProber, &'a AtomicBool);
        impl Prober for CancelOnProbe<'_> {
            fn probe(&self, b: &str, t: &[Ipv4Addr], d: Duration) -> Result<Vec<ArpReply>, ProbeError> {
                self.1.store(true, Ordering::SeqCst);
                self.0.probe(b, t, d)
            }
        }
        let cancel = AtomicBool::new(false);
        let p = CancelOnProbe(FakeProber::new().answer("br0", ip("10.0.0.5"), a()), &cancel);
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
        let clock = FakeClock::new();
        let r = verify(&[target("vm1", a()), target("vm2", b())], &p, &l, &clock, &opts(), &cancel, |_| {}).unwrap();
        assert!(matches!(r.nics[0].state, NicState::Verified { .. }), "proven in the round that ran");
        assert_eq!(r.nics[1].state, failed_state(FailReason::Interrupted));
        assert_eq!(p.0.calls().len(), 1, "no round after the interrupt");
        assert_eq!(clock.elapsed(), Duration::ZERO, "no waiting either");

        // Set before the start: nothing is probed.
        let p = FakeProber::new().with_bridge("br0");
        let r = verify(&[target("vm1", a())], &p, &l, &clock, &opts(), &cancel, |_| {}).unwrap();
        assert_eq!(r.nics[0].state, failed_state(FailReason::Interrupted));
        assert!(p.calls().is_empty());
    }

    #[test]
    fn a_huge_timeout_does_not_overflow() {
        let p = FakeProber::new().answer_after("br0", ip("10.0.0.5"), a(), 3);
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
        let o = VerifyOptions { timeout: Duration::MAX, ..opts() };
        let r = verify(&[target("vm1", a())], &p, &l, &FakeClock::new(), &o, &AtomicBool::new(false), |_| {});
        assert!(matches!(r.unwrap().nics[0].state, NicState::Verified { .. }));
    }

    #[test]
    fn lease_errors_abort() {
        let e = HvError {
            op: "dhcp leases".into(),
            object: NET.into(),
            message: "connection lost".into(),
            kind: HvErrorKind::Connect,
            hint: None,
        };
        let l = FakeLeases::new().failing(e);
        let p = FakeProber::new().with_bridge("br0");
        let err = verify(&[target("vm1", a())], &p, &l, &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {})
            .unwrap_err();
        assert!(matches!(err, VerifyError::Leases(_)));
    }

    #[test]
    fn bridges_are_probed_in_parallel_threads() {
        let mut t2 = target("vm2", b());
        t2.bridge = Some("br1".into());
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a()).answer("br1", ip("10.0.0.6"), b());
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.6"));
        let r = run(&[target("vm1", a()), t2], &p, &l);
        assert!(r.report.all_ok());
        let calls = p.calls();
        assert_eq!(calls.len(), 2);
        assert_ne!(calls[0].thread, calls[1].thread);
        assert!(calls.iter().all(|c| c.thread != thread::current().id()));
    }

    #[test]
    fn one_probe_per_bridge_per_round_for_all_its_nics() {
        let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a()).answer_after("br0", ip("10.0.0.6"), b(), 1);
        let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.6"));
        let r = run(&[target("vm1", a()), target("vm2", b())], &p, &l);
        assert!(r.report.all_ok());
        let calls = p.calls();
        assert_eq!(calls[0].targets, vec![ip("10.0.0.5"), ip("10.0.0.6")]);
        assert_eq!(calls[1].targets, vec![ip("10.0.0.6")], "verified NIC dropped");
        // Progress: initial states in order, then changes.
        assert_eq!(r.log.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 0, 1, 1]);
    }

    #[test]
    fn failure_reasons_have_help() {
        let all = [
            FailReason::NoDhcpNoReservation,
            FailReason::LeasedButSilent { ip: ip("10.0.0.5") },
            FailReason::NoLease,
            FailReason::Conflict { ip: ip("10.0.0.5"), other_mac: stranger() },
            FailReason::NotReserved { reserved: ip("10.0.0.6"), answered: ip("10.0.0.5") },
            FailReason::VmNotRunning,
            FailReason::NoBridge { detail: "x".into() },
            FailReason::Interrupted,
        ];
        for r in all {
            assert!(!r.to_string().is_empty() && r.help().len() > 20, "{r:?}");
        }
        assert_eq!(
            FailReason::Conflict { ip: ip("10.0.0.5"), other_mac: stranger() }.to_string(),
            "10.0.0.5 is answered by 52:54:00:ff:ff:ff, not by this NIC"
        );
    }

    #[test]
    fn targets_from_the_model() {
        use crate::model::{ByteSize, DhcpRange, ManagedNetwork, NetworkMode, VirtType};
        use crate::observed::{ObservedHost, ObservedIp, ObservedMode};
        use std::collections::BTreeMap;

        let span = miette::SourceSpan::from((0, 0));
        let nic = |index, network: &str, ip| Nic {
            index,
            network: NetworkName::new(network).unwrap(),
            mac: if index == 0 { a() } else { b() },
            mac_derived: true,
            ip,
            verify: if index == 0 { Verify::Arp } else { Verify::None },
            span,
        };
        let vm = Vm {
            name: VmName::new("deb1").unwrap(),
            libvirt_name: "lab-deb1".into(),
            virt_type: VirtType::Qemu,
            memory: ByteSize::from_mib(256),
            vcpus: 1,
            boot: None,
            disk: None,
            nics: vec![nic(0, "local", Some(ip("10.0.0.20"))), nic(1, "ext", None)],
            cloud_init: None,
            span,
        };
        let local = Network {
            name: NetworkName::new("local").unwrap(),
            libvirt_name: "lab-local".into(),
            kind: NetworkKind::Managed(ManagedNetwork {
                mode: NetworkMode::Isolated,
                subnet: Some("10.0.0.0/24".parse().unwrap()),
                gateway: Some(ip("10.0.0.1")),
                dhcp: Some(DhcpRange { start: ip("10.0.0.100"), end: ip("10.0.0.200") }),
                bridge: None,
                autostart: false,
                stp: false,
                dhcp_ping: false,
                reservations: BTreeMap::new(),
            }),
            span,
        };
        let ext = Network {
            name: NetworkName::new("ext").unwrap(),
            libvirt_name: "default".into(),
            kind: NetworkKind::External,
            span,
        };
        let observed = |name: &str, bridge: &str, ip_: Option<ObservedIp>| ObservedNetwork {
            name: name.into(),
            uuid: None,
            active: true,
            persistent: true,
            autostart: false,
            mode: ObservedMode::Known(NetworkMode::Nat),
            bridge: Some(bridge.into()),
            live_bridge: None,
            stp: true,
            ip: ip_,
            dhcp_ping: true,
            owner: None,
        };
        let o_local = observed("lab-local", "virbr5", None);
        let o_ext = observed(
            "default",
            "virbr0",
            Some(ObservedIp {
                address: ip("192.168.122.1"),
                prefix: 24,
                dhcp_range: Some(DhcpRange { start: ip("192.168.122.2"), end: ip("192.168.122.254") }),
                hosts: vec![ObservedHost { mac: b(), ip: ip("192.168.122.9"), name: None }],
            }),
        );

        let t0 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_local), true);
        assert_eq!(t0.nic, "eth0");
        assert_eq!(t0.libvirt_network, "lab-local");
        assert_eq!(t0.bridge.as_deref(), Some("virbr5"), "libvirt-chosen bridge");
        assert_eq!(t0.reservation, Some(ip("10.0.0.20")));
        assert!(t0.dhcp && t0.verify && t0.running);
        assert_eq!(t0.subnet, Some("10.0.0.0/24".parse().unwrap()));

        let t1 = NicTarget::from_model(&vm, &vm.nics[1], &ext, Some(&o_ext), false);
        assert_eq!(t1.bridge.as_deref(), Some("virbr0"));
        assert_eq!(t1.subnet, Some("192.168.122.0/24".parse().unwrap()));
        assert_eq!(t1.reservation, Some(ip("192.168.122.9")), "host entry of the network");
        assert!(t1.dhcp && !t1.verify && !t1.running);

        let t2 = NicTarget::from_model(&vm, &vm.nics[1], &ext, None, true);
        assert_eq!((t2.bridge, t2.subnet, t2.dhcp), (None, None, false));

        // Seen on libvirt 9.0: a network redefined while running without a bridge name has
        // `virbr3` in its config but still runs on `virbr1`: probe the live one.
        let o_moved = ObservedNetwork { live_bridge: Some("virbr1".into()), ..observed("lab-local", "virbr3", None) };
        let t3 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_moved), true);
        assert_eq!(t3.bridge.as_deref(), Some("virbr1"), "the live bridge, not the config's");
    }
}
