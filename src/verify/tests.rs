//! The verification loop, target building and remote evidence against the fakes (instant,
//! deterministic).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::*;
use crate::host::hypervisor::{HvError, HvErrorKind};
use crate::host::observed::{Lease, ObservedNetwork};
use crate::lab::model::{HostName, MacAddr, Network, NetworkKind, NetworkName, Nic, Verify, Vm, VmName};
use crate::verify::prober::{FakeProber, ProbeError, Prober, TimedReply};

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
        no_bridge: None,
        mac: m,
        family: Default::default(),
        address6: None,
        reservation: None,
        dhcp: true,
        subnet: Some("10.0.0.0/24".parse().unwrap()),
        running: true,
        stopped: false,
        verify: true,
        netem_delay: Default::default(),
        same_mac: Vec::new(),
        host: None,
        wire: None,
        unproven: false,
        cut: None,
    }
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        timeout: Duration::from_secs(3),
        probe_timeout: Duration::from_millis(300),
        grace: Duration::from_millis(30),
        poll_every: Duration::from_millis(300),
        sweep_after: Duration::from_millis(1500),
        sweep_every: Duration::from_secs(1),
        max_sweep_hosts: 1024,
        ready_timeout: Duration::ZERO,
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
            ip: ip("10.0.0.5").into(),
            evidence: Evidence { mac: a(), bridge: "br0".into(), ndp: false },
            seconds: 0.0,
            rtt_ms: None
        }
    );
    assert!(r.report.all_ok());
    assert_eq!(p.calls().len(), 1, "settled NICs are not probed again");
    assert_eq!(state(&r, 0).to_string(), "10.0.0.5 verified (arp reply from 52:54:00:00:00:0a on br0, after 0.0 s)");
}

/// The round trip of the reply that proved a NIC is its `rtt_ms`; a NIC whose reply came
/// without a measured time (a prober that does not measure) has none.
#[test]
fn the_proving_replys_round_trip_is_reported() {
    let p = FakeProber::new().answer_in("br0", ip("10.0.0.5"), a(), std::time::Duration::from_micros(50_250)).answer(
        "br0",
        ip("10.0.0.6"),
        b(),
    );
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.6"));
    let r = run(&[target("vm1", a()), target("vm2", b())], &p, &l);
    assert!(matches!(state(&r, 0), NicState::Verified { rtt_ms: Some(ms), .. } if (ms - 50.25).abs() < 1e-9));
    assert!(matches!(state(&r, 1), NicState::Verified { rtt_ms: None, .. }));
    assert_eq!(
        state(&r, 0).to_string(),
        "10.0.0.5 verified (arp reply from 52:54:00:00:00:0a on br0 in 50.2 ms, after 0.0 s)"
    );
}

/// A NIC with netem `delay`: its bridge's round waits `delay + jitter` longer (so a reply
/// netem holds is read in its own round), and a round trip below `delay - jitter` (a late
/// reply to an earlier round's request, timed from this round's) is not reported.
#[test]
fn a_delayed_nics_round_waits_for_it_and_an_impossible_rtt_is_dropped() {
    use std::time::Duration;
    let slow = |m| NicTarget { netem_delay: (Duration::from_millis(80), Duration::from_millis(5)), ..target("vm1", m) };
    let p = FakeProber::new().answer_in("br0", ip("10.0.0.5"), a(), Duration::from_millis(12)).answer_in(
        "br0",
        ip("10.0.0.6"),
        b(),
        Duration::from_millis(81),
    );
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.6"));
    let r = run(&[slow(a()), slow(b())], &p, &l);
    assert!(matches!(state(&r, 0), NicState::Verified { rtt_ms: None, .. }), "{:?}", state(&r, 0));
    assert!(matches!(state(&r, 1), NicState::Verified { rtt_ms: Some(ms), .. } if (ms - 81.0).abs() < 1e-9));
    let calls = p.calls();
    assert_eq!(calls[0].timeout, opts().probe_timeout + Duration::from_millis(85), "delay + jitter longer");
    assert_eq!(calls[0].grace, opts().grace + Duration::from_millis(85), "a flux reply must not end the round early");

    // An unimpaired NIC on another bridge keeps the plain probe timeout.
    let p = FakeProber::new().answer_in("br0", ip("10.0.0.5"), a(), Duration::from_millis(1));
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
    let r = run(&[target("vm1", a())], &p, &l);
    assert!(matches!(state(&r, 0), NicState::Verified { rtt_ms: Some(_), .. }));
    assert_eq!(p.calls()[0].timeout, opts().probe_timeout);
    assert_eq!(p.calls()[0].grace, opts().grace);
}

#[test]
fn lease_before_address_is_retried_until_the_guest_answers() {
    // The lease shows up in round 1; the guest configures the address two probes later.
    let p = FakeProber::new().answer_after("br0", ip("10.0.0.5"), a(), 2);
    let l = FakeLeases::new().with_from_call(1, NET, a(), ip("10.0.0.5"));
    let r = run(&[target("vm1", a())], &p, &l);
    let verified = NicState::Verified {
        ip: ip("10.0.0.5").into(),
        evidence: Evidence { mac: a(), bridge: "br0".into(), ndp: false },
        seconds: 0.9,
        rtt_ms: None,
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
fn a_duplicate_is_a_conflict_even_when_the_nic_answers_too() {
    // Another machine answers for the lease from the start; the NIC from the second probe.
    let p = FakeProber::new().answer("br0", ip("10.0.0.50"), stranger()).answer_after("br0", ip("10.0.0.50"), a(), 1);
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.50"));
    let r = run(&[target("vm1", a())], &p, &l);
    let dup = FailReason::Duplicate { ip: ip("10.0.0.50"), mac: a(), other_mac: stranger() };
    assert_eq!(failed(&r, 0), &dup);
    assert_eq!(
        dup.to_string(),
        "10.0.0.50 is answered by this NIC (52:54:00:00:00:0a) and also by 52:54:00:ff:ff:ff: a duplicate address"
    );
    assert_eq!(p.calls().len(), 2, "settled as soon as both MACs answered in one probe");
    assert!(r.log.iter().all(|(_, s)| !matches!(s, NicState::Verified { .. })));

    // The same for a reservation, for a swept static address, and for a duplicate that
    // is another NIC of the lab (two guests configured with one static address).
    let mut t = target("vm1", a());
    t.reservation = Some(ip("10.0.0.20"));
    let p = FakeProber::new().answer("br0", ip("10.0.0.20"), a()).answer("br0", ip("10.0.0.20"), stranger());
    let r = run(&[t], &p, &FakeLeases::new());
    assert!(matches!(failed(&r, 0), FailReason::Duplicate { other_mac, .. } if *other_mac == stranger()));

    let mut t = target("vm1", a());
    t.dhcp = false;
    let p = FakeProber::new().answer("br0", ip("10.0.0.77"), a()).answer("br0", ip("10.0.0.77"), stranger());
    let r = run(&[t], &p, &FakeLeases::new());
    assert!(matches!(failed(&r, 0), FailReason::Duplicate { ip: x, .. } if *x == ip("10.0.0.77")));

    let (mut t1, mut t2) = (target("vm1", a()), target("vm2", b()));
    t1.dhcp = false;
    t2.dhcp = false;
    let p = FakeProber::new().answer("br0", ip("10.0.0.77"), a()).answer("br0", ip("10.0.0.77"), b());
    let r = run(&[t1, t2], &p, &FakeLeases::new());
    assert!(matches!(failed(&r, 0), FailReason::Duplicate { other_mac, .. } if *other_mac == b()));
    assert!(matches!(failed(&r, 1), FailReason::Duplicate { other_mac, .. } if *other_mac == a()));
}

/// A VM with two NICs on one network. Linux answers ARP for any of its addresses on every
/// interface ("ARP flux"), so each NIC's MAC also answers for the other's address.
fn two_nics(second_configured: bool) -> (Vec<NicTarget>, FakeProber) {
    let eth0 = target("vm1", a());
    let mut eth1 = target("vm1", b());
    eth1.nic = "eth1".into();
    let mut p = FakeProber::new().answer("br0", ip("10.0.0.5"), a()).answer("br0", ip("10.0.0.5"), b());
    if second_configured {
        p = p.answer("br0", ip("10.0.0.6"), a()).answer("br0", ip("10.0.0.6"), b());
    }
    (vec![eth0, eth1], p)
}

#[test]
fn arp_flux_from_a_sibling_nic_is_no_duplicate_and_no_proof() {
    // Both NICs configured: each verified at its own lease, no duplicate.
    let (t, p) = two_nics(true);
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5")).with(NET, b(), ip("10.0.0.6"));
    let r = run(&t, &p, &l);
    assert!(matches!(state(&r, 0), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.5")), "{r:?}", r = r.report);
    assert!(matches!(state(&r, 1), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.6")));
}

#[test]
fn an_unconfigured_sibling_is_not_verified_at_the_first_nics_address() {
    // eth1 never gets configured (no DHCP client on it): the sweep hears its MAC at
    // eth0's lease (ARP flux). That address is eth0's: it proves nothing about eth1.
    let (t, p) = two_nics(false);
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
    let r = run(&t, &p, &l);
    assert!(matches!(state(&r, 0), NicState::Verified { ip: x, .. } if *x == ip("10.0.0.5")));
    assert_eq!(failed(&r, 1), &FailReason::NoLease);
    assert!(p.calls().iter().any(|c| c.targets.len() == 254), "eth1 was swept");

    // The same with eth0's address a reservation instead of a lease.
    let (mut t, p) = two_nics(false);
    t[0].reservation = Some(ip("10.0.0.5"));
    let r = run(&t, &p, &FakeLeases::new());
    assert!(matches!(state(&r, 0), NicState::Verified { .. }));
    assert_eq!(failed(&r, 1), &FailReason::NoLease);

    // ... and with eth0's address a lease or reservation of a `verify: none` NIC, or of
    // another VM's NIC: never proof for someone else.
    let (mut t, p) = two_nics(false);
    t[0].verify = false;
    let r = run(&t, &p, &l);
    assert_eq!(state(&r, 0), &NicState::Skipped);
    assert_eq!(failed(&r, 1), &FailReason::NoLease);
    let mut other_vm = target("vm2", a());
    other_vm.reservation = Some(ip("10.0.0.5"));
    let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a()).answer("br0", ip("10.0.0.5"), b());
    let r = run(&[other_vm, target("vm1", b())], &p, &FakeLeases::new());
    assert_eq!(failed(&r, 1), &FailReason::NoLease);
}

#[test]
fn static_siblings_without_leases_are_ambiguous() {
    // No DHCP, no reservations: both MACs answer at the one configured address. Which NIC
    // holds it cannot be told by ARP: both fail, saying why and what helps.
    let (mut t, p) = two_nics(false);
    t[0].dhcp = false;
    t[1].dhcp = false;
    let r = run(&t, &p, &FakeLeases::new());
    assert_eq!(
        failed(&r, 0),
        &FailReason::Ambiguous { ip: ip("10.0.0.5"), sibling: "eth1 (52:54:00:00:00:0b)".into() }
    );
    assert!(matches!(failed(&r, 1), FailReason::Ambiguous { .. }));
    assert!(failed(&r, 0).help().contains("arp_ignore"));
    // With a reservation on the configured NIC, the other is simply not found.
    t[0].reservation = Some(ip("10.0.0.5"));
    let r = run(&t, &p, &FakeLeases::new());
    assert!(matches!(state(&r, 0), NicState::Verified { .. }));
    assert_eq!(failed(&r, 1), &FailReason::NoDhcpNoReservation);
}

#[test]
fn no_subnet_and_no_dhcp_fails_at_once() {
    // An external network bridged to a LAN: libvirt knows no `<ip>` for it.
    let mut t = target("vm1", a());
    t.dhcp = false;
    t.subnet = None;
    let p = FakeProber::new().with_bridge("br0");
    let r = run(&[t.clone()], &p, &FakeLeases::new());
    assert_eq!(failed(&r, 0), &FailReason::NoSubnet);
    assert!(p.calls().is_empty(), "nothing sent on someone else's LAN");
    assert_eq!(r.clock.elapsed(), Duration::ZERO, "no waiting for the timeout");
    // A reservation is something to ask for.
    t.reservation = Some(ip("10.0.0.5"));
    let r = run(&[t], &FakeProber::new().answer("br0", ip("10.0.0.5"), a()), &FakeLeases::new());
    assert!(matches!(state(&r, 0), NicState::Verified { .. }));
}

#[test]
fn probes_carry_the_grace_for_late_duplicates() {
    let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
    run(&[target("vm1", a())], &p, &l);
    assert!(p.calls().iter().all(|c| c.grace == Duration::from_millis(30)));
    let d = VerifyOptions::default();
    assert!(d.grace < d.probe_timeout && d.probe_timeout <= Duration::from_millis(100));
    assert!(d.poll_every <= Duration::from_millis(50));
}

#[test]
fn waiting_for_a_lease_polls_at_the_idle_period() {
    // Nothing to ask before the lease shows up: rounds are `poll_every` long, not a probe.
    let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
    let l = FakeLeases::new().with_from_call(3, NET, a(), ip("10.0.0.5"));
    let clock = FakeClock::new();
    let o = VerifyOptions { poll_every: Duration::from_millis(50), ..opts() };
    let r = verify(&[target("vm1", a())], &p, &l, &clock, &o, &AtomicBool::new(false), |_| {}).unwrap();
    assert!(matches!(r.nics[0].state, NicState::Verified { seconds, .. } if (seconds - 0.15).abs() < 1e-9));
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
        NicState::Verified { ip: x, evidence, seconds, .. } => {
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

    // Without a subnet there is nothing topo may sweep: said at once.
    t.subnet = None;
    let r = run(&[t], &silent, &FakeLeases::new());
    assert_eq!(failed(&r, 0), &FailReason::NoSubnet);
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

/// `state: stopped` in the lab file: listed as stopped, not failed, and never probed,
/// locally or (from what libvirt reports) remotely.
#[test]
fn a_vm_stopped_by_the_file_is_stopped_not_failed() {
    let mut t = target("vm1", a());
    t.running = false;
    t.stopped = true;
    let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
    let r = run(std::slice::from_ref(&t), &p, &FakeLeases::new()).report;
    assert_eq!(r.nics[0].state, NicState::Stopped);
    assert!(r.all_ok() && r.failed().next().is_none());
    assert!(p.calls().is_empty());
    assert!(crate::verify::report::summary_line(&r).ends_with("0 failed, 0 skipped, 1 stopped."));
    let remote = reported(&[t], &[], &BTreeMap::new());
    assert_eq!(remote.nics[0].state, NicState::Stopped);
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
    // libvirt reports br9 for an active network and it is not here: another namespace.
    let gone = failed(&r, 1);
    assert_eq!(gone, &FailReason::BridgeNotVisible { bridge: "br9".into() });
    assert!(gone.help().contains("network namespace of libvirtd"), "{}", gone.help());
    assert!(!gone.help().contains("net-start"), "{}", gone.help());
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
    let err =
        verify(&[target("vm1", a())], &p, &l, &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(matches!(err, VerifyError::Probe(ProbeError::PermissionDenied { .. })), "{err:?}");
}

#[test]
fn an_interrupt_stops_verification_and_fails_what_is_left() {
    /// Sets the cancel flag on its first probe, like a Ctrl-C during the first round.
    struct CancelOnProbe<'a>(FakeProber, &'a AtomicBool);
    impl Prober for CancelOnProbe<'_> {
        fn probe_timed(
            &self,
            b: &str,
            t: &[Ipv4Addr],
            d: Duration,
            g: Duration,
        ) -> Result<Vec<TimedReply>, ProbeError> {
            self.1.store(true, Ordering::SeqCst);
            self.0.probe_timed(b, t, d, g)
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
    let err =
        verify(&[target("vm1", a())], &p, &l, &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {}).unwrap_err();
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
        FailReason::Duplicate { ip: ip("10.0.0.5"), mac: a(), other_mac: stranger() },
        FailReason::Ambiguous { ip: ip("10.0.0.5"), sibling: "eth1 (52:54:00:00:00:0b)".into() },
        FailReason::NoSubnet,
        FailReason::NotReserved { reserved: ip("10.0.0.6"), answered: ip("10.0.0.5") },
        FailReason::VmNotRunning,
        FailReason::NoBridge { detail: "x".into() },
        FailReason::BridgeNotVisible { bridge: "virbr0".into() },
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
    use crate::host::observed::{ObservedHost, ObservedIp, ObservedMode};
    use crate::lab::model::{ByteSize, DhcpRange, ManagedNetwork, NetworkMode, VirtType};
    use std::collections::BTreeMap;

    let span = miette::SourceSpan::from((0, 0));
    let nic = |index, network: &str, ip| Nic {
        index,
        network: NetworkName::new(network).unwrap(),
        mac: if index == 0 { a() } else { b() },
        mac_derived: true,
        ip,
        ip_source: if ip.is_some() {
            crate::lab::model::IpSource::Written
        } else {
            crate::lab::model::IpSource::Dynamic
        },
        verify: if index == 0 { Verify::Arp } else { Verify::None },
        impairment: Default::default(),
        netem_span: None,
        rate_span: None,
        span,
    };
    let vm = Vm {
        name: VmName::new("deb1").unwrap(),
        libvirt_name: crate::lab::model::LibvirtName::new("lab-deb1").unwrap(),
        virt_type: VirtType::Qemu,
        memory: ByteSize::from_mib(256),
        vcpus: 1,
        state: crate::lab::model::VmState::Running,
        boot: None,
        disk: None,
        nics: vec![nic(0, "local", Some(ip("10.0.0.20"))), nic(1, "ext", None)],
        cloud_init: None,
        host: HostName::default_host(),
        ready: Vec::new(),
        group: None,
        span,
    };
    let local = Network {
        name: NetworkName::new("local").unwrap(),
        libvirt_name: crate::lab::model::LibvirtName::new("lab-local").unwrap(),
        kind: NetworkKind::Managed(ManagedNetwork {
            mode: NetworkMode::Isolated,
            subnet: Some("10.0.0.0/24".parse().unwrap()),
            gateway: Some(ip("10.0.0.1")),
            subnet6: None,
            gateway6: None,
            dhcp: Some(DhcpRange { start: ip("10.0.0.100"), end: ip("10.0.0.200") }),
            bridge: None,
            autostart: false,
            stp: false,
            dhcp_ping: false,
            mtu: None,
            reservations: BTreeMap::new(),
        }),
        declared_subnet: None,
        host: HostName::default_host(),
        instance_host: HostName::default_host(),
        spans: [HostName::default_host()].into(),
        span,
    };
    let ext = Network {
        name: NetworkName::new("ext").unwrap(),
        libvirt_name: crate::lab::model::LibvirtName::new("default").unwrap(),
        kind: NetworkKind::External,
        declared_subnet: None,
        host: HostName::default_host(),
        instance_host: HostName::default_host(),
        spans: [HostName::default_host()].into(),
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
        // Active: the running network's bridge, as libvirt reports it.
        live_bridge: Some(bridge.into()),
        stp: true,
        mac: None,
        ip: ip_,
        ip6: None,
        dhcp_ping: true,
        mtu: None,
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

    let local_host = HostAccess::Local;
    let t0 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_local), true, local_host);
    assert_eq!(t0.nic, "eth0");
    assert_eq!(t0.libvirt_network, "lab-local");
    assert_eq!(t0.bridge.as_deref(), Some("virbr5"), "libvirt-chosen bridge");
    assert_eq!(t0.reservation, Some(ip("10.0.0.20")));
    assert!(t0.dhcp && t0.verify && t0.running);
    assert_eq!(t0.subnet, Some("10.0.0.0/24".parse().unwrap()));

    let t1 = NicTarget::from_model(&vm, &vm.nics[1], &ext, Some(&o_ext), false, local_host);
    assert_eq!(t1.bridge.as_deref(), Some("virbr0"));
    assert_eq!(t1.subnet, Some("192.168.122.0/24".parse().unwrap()));
    assert_eq!(t1.reservation, Some(ip("192.168.122.9")), "host entry of the network");
    assert!(t1.dhcp && !t1.verify && !t1.running);

    let t2 = NicTarget::from_model(&vm, &vm.nics[1], &ext, None, true, local_host);
    assert_eq!((t2.bridge, t2.subnet, t2.dhcp), (None, None, false));
    assert_eq!(t2.no_bridge.as_deref(), Some("the network default does not exist on the host"));

    // Seen on libvirt 9.0: a network redefined while running without a bridge name has
    // `virbr3` in its config but still runs on `virbr1`: probe the live one.
    let o_moved = ObservedNetwork { live_bridge: Some("virbr1".into()), ..observed("lab-local", "virbr3", None) };
    let t3 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_moved), true, local_host);
    assert_eq!(t3.bridge.as_deref(), Some("virbr1"), "the live bridge, not the config's");

    // Frames only go to bridges the host reports for running networks: not to the
    // config's name of an inactive network, not to the lab file's `bridge:` name, and
    // never to a test driver's bridge (an interface of that name here is someone else's).
    let o_inactive = ObservedNetwork { active: false, live_bridge: None, ..observed("lab-local", "virbr5", None) };
    let t4 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_inactive), true, local_host);
    assert_eq!(t4.bridge, None);
    assert_eq!(t4.no_bridge.as_deref(), Some("the network lab-local is not active"));
    let mut named = local.clone();
    if let NetworkKind::Managed(m) = &mut named.kind {
        m.bridge = Some(crate::lab::model::BridgeName::new("labbr0").unwrap());
    }
    let t5 = NicTarget::from_model(&vm, &vm.nics[0], &named, None, true, local_host);
    assert_eq!(t5.bridge, None, "the lab file's name alone is not the host's word");
    let t6 = NicTarget::from_model(&vm, &vm.nics[0], &local, Some(&o_local), true, HostAccess::TestDriver);
    assert_eq!(t6.bridge, None);
    assert!(t6.no_bridge.as_deref().unwrap().contains("test driver"));
    let p = FakeProber::new().with_bridge("virbr5");
    let r = run(&[t6], &p, &FakeLeases::new());
    assert!(matches!(failed(&r, 0), FailReason::NoBridge { detail } if detail.contains("test driver")));
    assert!(p.calls().is_empty(), "nothing sent");

    // An external network libvirt knows no address of (a bridge to a LAN): its declared
    // subnet is what verification may sweep; without one, nothing (NoSubnet, at once).
    let o_lan = ObservedNetwork { ip: None, ..observed("lan", "br-lan", None) };
    let lan = Network {
        name: NetworkName::new("lan").unwrap(),
        libvirt_name: crate::lab::model::LibvirtName::new("lan").unwrap(),
        ..ext.clone()
    };
    let t7 = NicTarget::from_model(&vm, &vm.nics[1], &lan, Some(&o_lan), true, local_host);
    assert_eq!((t7.subnet, t7.dhcp, t7.bridge.as_deref()), (None, false, Some("br-lan")));
    let declared = Network { declared_subnet: Some("192.168.1.0/24".parse().unwrap()), ..lan };
    let t8 = NicTarget::from_model(&vm, &vm.nics[1], &declared, Some(&o_lan), true, local_host);
    assert_eq!(t8.subnet, Some("192.168.1.0/24".parse().unwrap()));
}

#[test]
fn host_access_of_uris() {
    assert_eq!(HostAccess::of_uri("qemu:///system"), HostAccess::Local);
    assert_eq!(HostAccess::of_uri("qemu:///session"), HostAccess::Local);
    assert_eq!(HostAccess::of_uri("qemu+unix:///system"), HostAccess::Local);
    assert_eq!(HostAccess::of_uri("qemu+ssh://user@host/system"), HostAccess::Remote);
    assert_eq!(HostAccess::of_uri("qemu+tcp://127.0.0.1/system"), HostAccess::Remote);
    assert_eq!(HostAccess::of_uri("test:///default"), HostAccess::TestDriver);
    assert_eq!(HostAccess::of_uri("test+tcp://host/default"), HostAccess::TestDriver);
}

fn domain_on(name: &str, m: MacAddr, iface: &str) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os><devices>{}</devices></domain>",
        iface.replace("MAC", &m.to_string())
    )
}

/// A copy of a lab VM started beside it keeps its MAC (`virsh dumpxml`, new name and UUID,
/// `virsh define`, `start`): every running domain with the NIC's MAC on its network, the
/// lab's or not, is found, through the network's name or its bridge; a stopped copy, or
/// the MAC on another network, is not a duplicate on this one.
#[test]
fn the_running_domains_with_a_nics_mac_on_its_network_are_found() {
    use crate::host::hypervisor::memory::MemoryHypervisor;
    let net = |name: &str, br: &str, ip: &str| {
        format!(
            "<network><name>{name}</name><bridge name='{br}'/><ip address='{ip}' netmask='255.255.255.0'/></network>"
        )
    };
    let on_net = |n: &str| format!("<interface type='network'><mac address='MAC'/><source network='{n}'/></interface>");
    let hv = MemoryHypervisor::new()
        .with_network_xml(&net(NET, "br0", "10.0.0.1"), true, false)
        .and_then(|h| h.with_network_xml(&net("other", "br1", "10.1.0.1"), true, false))
        .and_then(|h| h.with_domain_xml(&domain_on("lab-vm1", a(), &on_net(NET)), true))
        .and_then(|h| h.with_domain_xml(&domain_on("vm1-clone", a(), &on_net(NET)), true))
        .and_then(|h| {
            let bridged = "<interface type='bridge'><mac address='MAC'/><source bridge='br0'/></interface>";
            h.with_domain_xml(&domain_on("bridged", a(), bridged), true)
        })
        .and_then(|h| h.with_domain_xml(&domain_on("lab-vm2", b(), &on_net(NET)), true))
        .and_then(|h| h.with_domain_xml(&domain_on("parked", b(), &on_net(NET)), false))
        .and_then(|h| h.with_domain_xml(&domain_on("elsewhere", b(), &on_net("other")), true))
        .expect("fixture");
    let o = hv.observe().unwrap();
    assert_eq!(target::same_mac_elsewhere(&o, "lab-vm1", a(), NET), ["bridged", "vm1-clone"]);
    assert_eq!(target::same_mac_elsewhere(&o, "lab-vm2", b(), NET), Vec::<String>::new());
    assert_eq!(target::same_mac_elsewhere(&o, "elsewhere", b(), "other"), Vec::<String>::new());
}

/// Two domains with one MAC on one network: the NIC fails as a duplicate naming both, at
/// once, even though a reply from its MAC comes for its lease (it may be the copy's); it is
/// never probed, and on a remote host never "reported".
#[test]
fn a_duplicate_mac_is_never_a_pass_and_names_both_domains() {
    let t = NicTarget { same_mac: vec!["vm1-clone".into()], ..target("vm1", a()) };
    let p = FakeProber::new().answer("br0", ip("10.0.0.5"), a());
    let l = FakeLeases::new().with(NET, a(), ip("10.0.0.5"));
    let r = run(std::slice::from_ref(&t), &p, &l);
    let want =
        FailReason::DuplicateMac { mac: a(), network: NET.into(), domains: vec!["lab-vm1".into(), "vm1-clone".into()] };
    assert_eq!(failed(&r, 0), &want);
    assert!(p.calls().is_empty(), "not probed");
    assert_eq!(
        want.to_string(),
        "MAC 52:54:00:00:00:0a is on network lab-net in 2 running domains: lab-vm1 and vm1-clone; an ARP reply \
         from it cannot tell which one answered, so nothing proves this NIC"
    );
    let lease = Lease { network: NET.into(), mac: a(), ip: ip("10.0.0.5"), hostname: None, expiry: 1 };
    let remote = reported(std::slice::from_ref(&t), &[lease], &BTreeMap::new());
    assert_eq!(remote.nics[0].state, NicState::Failed { reason: want });
    let json = report::to_json("lab", &r.report);
    assert_eq!(json["nics"][0]["same_mac"], serde_json::json!(["lab-vm1", "vm1-clone"]));
    assert!(report::table(&r.report).contains("lab-vm1 and vm1-clone"));
}

/// A lease that appears on the third reading is reported; until then the NIC waits, and
/// without it the wait ends at the timeout with the NIC failed.
#[test]
fn waits_for_a_lease_until_the_timeout() {
    let t = target("vm1", a());
    let ip = Ipv4Addr::new(10, 0, 0, 9);
    let lease = Lease { mac: t.mac, ip, network: t.libvirt_network.clone(), expiry: 1, hostname: None };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (clock, mut reads) = (FakeClock::new(), 0);
    let mut read = || {
        reads += 1;
        Ok((if reads >= 3 { vec![lease.clone()] } else { Vec::new() }, BTreeMap::new()))
    };
    let r = crate::verify::sources::reported_within(
        std::slice::from_ref(&t),
        &mut read,
        &clock,
        Duration::from_secs(30),
        &cancel,
    )
    .unwrap();
    assert!(matches!(r.nics[0].state, NicState::Reported { ip: got, .. } if got == ip), "{:?}", r.nics[0].state);
    assert_eq!(clock.elapsed(), 2 * crate::verify::sources::REPORT_POLL);

    let clock = FakeClock::new();
    let mut never = || Ok((Vec::new(), BTreeMap::new()));
    let r = crate::verify::sources::reported_within(
        std::slice::from_ref(&t),
        &mut never,
        &clock,
        Duration::from_secs(5),
        &cancel,
    )
    .unwrap();
    assert!(matches!(r.nics[0].state, NicState::Failed { reason: FailReason::NoLease }));
    assert_eq!(clock.elapsed(), Duration::from_secs(5));
}

/// A wire end whose tap the host does not join to its peer's fails at once, with where the
/// tap sends now, before it is taken as unproven (the cut is the host's, whatever the guest
/// holds); joined, an end of a VM without cloud-init is unproven.
#[test]
fn a_cut_wire_end_fails_before_it_is_unproven() {
    let mut t = target("r1", MacAddr::derived(&"demo".parse().unwrap(), &VmName::new("r1").unwrap(), 1));
    t.unproven = true;
    assert_eq!(state::settled_at_once(&t), Some(NicState::Unproven));
    t.cut = Some(("*".into(), "tw0123456789".into()));
    let s = state::settled_at_once(&t).expect("settled");
    let NicState::Failed { reason } = &s else { panic!("{s:?}") };
    assert_eq!(reason, &FailReason::WireCut { now: "*".into(), peer: "tw0123456789".into() });
    assert!(reason.to_string().contains("sends its frames to *, not to the peer's tap tw0123456789"));
    assert!(reason.help().contains("topo apply"));
}
