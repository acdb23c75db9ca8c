//! Where the loop's inputs come from, apart from ARP: DHCP leases ([`LeaseSource`]), time
//! ([`Clock`]), and, for remote hosts, what libvirt itself reports ([`reported`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use super::state::{FailReason, NicOutcome, NicState, VerifyReport};
use super::target::NicTarget;
use crate::host::hypervisor::{HvError, Hypervisor};
use crate::host::observed::Lease;
use crate::lab::model::{MacAddr, VmName};

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
    /// The networks of `targets` that serve DHCP; those of `verify: none` NICs included, as
    /// their leases are addresses that never prove another NIC.
    pub fn for_targets<'h>(hypervisor: &'h H, targets: &[NicTarget]) -> HypervisorLeases<'h, H> {
        let networks = targets.iter().filter(|t| t.dhcp).map(|t| t.libvirt_network.clone()).collect();
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
                Err(e) if e.kind == crate::host::hypervisor::HvErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

/// A [`LeaseSource`] that keeps the leases of its last successful read, so what needs them
/// after the loop (`topo status`: the address of a NIC not proven) does not read them again.
pub struct LastLeases<S> {
    inner: S,
    last: std::cell::RefCell<Option<Vec<Lease>>>,
}

impl<S: LeaseSource> LastLeases<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, last: std::cell::RefCell::new(None) }
    }
    /// The leases of the last successful read; `None` when none was made (every NIC was
    /// settled before the first round, or every read failed).
    pub fn into_last(self) -> Option<Vec<Lease>> {
        self.last.into_inner()
    }
}

impl<S: LeaseSource> LeaseSource for LastLeases<S> {
    fn leases(&self) -> Result<Vec<Lease>, HvError> {
        let l = self.inner.leases()?;
        *self.last.borrow_mut() = Some(l.clone());
        Ok(l)
    }
}

/// Scripted leases: each lease becomes visible from the Nth call of `leases()` on (0-based),
/// so a test can make a lease "appear" in a given round.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct FakeLeases {
    leases: Vec<(u32, Lease)>,
    calls: std::cell::Cell<u32>,
    fail: Option<HvError>,
}

#[cfg(any(test, feature = "testing"))]
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
    /// How often `leases()` was called.
    pub fn calls(&self) -> u32 {
        self.calls.get()
    }
}

#[cfg(any(test, feature = "testing"))]
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
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct FakeClock(std::cell::Cell<Duration>);

#[cfg(any(test, feature = "testing"))]
impl FakeClock {
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        self.0.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.set(self.0.get().saturating_add(d))
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
            let state = if let Some(state) = super::state::settled_at_once(t) {
                state
            } else if t.family == super::target::Family::Ipv6 {
                // libvirt reports IPv4 leases and addresses here: nothing of this NIC's
                // SLAAC address, and no NDP from this host onto the remote bridge.
                NicState::Failed {
                    reason: FailReason::NoBridge {
                        detail: "IPv6 addresses are proven by NDP on the bridge's own host, and libvirt reports \
                                 no IPv6 address of this NIC"
                            .into(),
                    },
                }
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
    VerifyReport { nics, ready: Vec::new() }
}

/// One reading of what libvirt reports: the DHCP leases, and the addresses of each running VM
/// from libvirt's ARP or guest-agent sources.
pub type Reports = (Vec<Lease>, BTreeMap<VmName, Vec<(MacAddr, Ipv4Addr)>>);

/// How often [`reported_within`] reads libvirt's reports again while a NIC has none.
pub const REPORT_POLL: Duration = Duration::from_secs(1);

/// [`reported`], read again (by `read`: the leases, and libvirt's addresses per VM) every
/// [`REPORT_POLL`] while a NIC that expects a lease has none, until `timeout` on `clock`
/// or `cancel`: a guest that just started gets its lease within the time `--timeout` gives
/// it, as the ARP proof waits on a local host. The last reading's report is returned.
///
/// # Errors
/// The first failed read.
pub fn reported_within(
    targets: &[NicTarget],
    read: &mut dyn FnMut() -> Result<Reports, HvError>,
    clock: &dyn Clock,
    timeout: Duration,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<VerifyReport, HvError> {
    loop {
        let (leases, addresses) = read()?;
        let report = reported(targets, &leases, &addresses);
        let waiting = report.nics.iter().any(|n| matches!(n.state, NicState::Failed { reason: FailReason::NoLease }));
        let left = timeout.saturating_sub(clock.elapsed());
        if !waiting || left.is_zero() || cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(report);
        }
        clock.sleep(REPORT_POLL.min(left));
    }
}

#[cfg(test)]
mod last_leases_tests {
    use super::*;
    use crate::host::hypervisor::HvErrorKind;

    #[test]
    fn keeps_the_last_successful_read() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(LastLeases::new(FakeLeases::new().with(&n(), mac, ip)).into_last(), None, "no read, nothing kept");
        let l = LastLeases::new(FakeLeases::new().with_from_call(1, &n(), mac, ip));
        assert!(l.leases().unwrap().is_empty());
        assert_eq!(l.leases().unwrap().len(), 1);
        let last = l.into_last().unwrap();
        assert_eq!((last.len(), last[0].ip), (1, ip), "the second read's");
        let err = HvError {
            op: "dhcp leases".into(),
            object: n(),
            message: "gone".into(),
            kind: HvErrorKind::Other,
            hint: None,
        };
        let failing = LastLeases::new(FakeLeases::new().failing(err));
        assert!(failing.leases().is_err());
        assert_eq!(failing.into_last(), None);
    }

    fn n() -> String {
        "lab-net".into()
    }
}
