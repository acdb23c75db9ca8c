//! The IPv6 probe loop: rounds of "solicit every pending NIC's SLAAC address on its bridge,
//! judge the advertisements" until every IPv6 target is settled, the time is up, or an
//! interrupt arrives. The counterpart of [`super::run`] for [`Family::Ipv6`] targets: the
//! address is known from the lab file (no leases, no sweep), so a round is one solicitation
//! per pending NIC.
//!
//! A guest's address is *tentative* for about a second after it configures it (duplicate
//! address detection, RFC 4862 5.4: it does not answer solicitations then), and it
//! configures it only after the first router advertisement (libvirt's dnsmasq sends one
//! when the guest solicits routers, then every few minutes): rounds simply repeat until it
//! answers or the timeout ends.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::VerifyError;
use super::prober::{ProbeError, Prober, TimedAdvert};
use super::sources::Clock;
use super::state::{Evidence, FailReason, NicOutcome, NicProgress, NicState, VerifyReport, settled_at_once};
use super::target::NicTarget;
use crate::lab::model::MacAddr;

/// The state of an IPv6 target before any round.
fn initial_state(t: &NicTarget) -> NicState {
    if let Some(s) = settled_at_once(t) {
        return s;
    }
    match (&t.bridge, t.address6) {
        (None, _) => NicState::Failed {
            reason: FailReason::NoBridge {
                detail: t.no_bridge.clone().unwrap_or_else(|| "the network has no bridge on this host".into()),
            },
        },
        (Some(_), Some(ip)) => NicState::Soliciting { ip },
        // An IPv6 target always has its address (`NicTarget::ipv6_of`); without one there is
        // nothing to ask.
        (Some(_), None) => NicState::Failed { reason: FailReason::NoSubnet },
    }
}

/// What one round's advertisements say of a target whose address is `ip` and MAC `mac`.
fn judge(ip: Ipv6Addr, mac: MacAddr, got: &[TimedAdvert]) -> Option<Result<Option<Duration>, FailReason>> {
    let for_ip: Vec<&TimedAdvert> = got.iter().filter(|(a, _)| a.target == ip && a.consistent()).collect();
    let own = for_ip.iter().find(|(a, _)| a.mac() == mac);
    let other = for_ip.iter().find(|(a, _)| a.mac() != mac).map(|(a, _)| a.mac());
    match (own, other) {
        (_, Some(other_mac)) => Some(Err(FailReason::Conflict6 { ip, mac, other_mac, also: own.is_some() })),
        (Some((_, rtt)), None) => Some(Ok(*rtt)),
        (None, None) => None,
    }
}

/// Proves each IPv6 target in `targets` by NDP on its bridge; see the module doc. The
/// timeout is `opts.timeout` from the clock's start (shared with the IPv4 loop that ran
/// before); `cancel` as in [`super::verify`].
///
/// # Errors
/// A probe that cannot run anywhere (no permission, an I/O error); a missing or down bridge,
/// or one without an IPv6 address, fails just its NICs.
pub(super) fn verify6<P, C>(
    targets: &[NicTarget],
    prober: &P,
    clock: &C,
    opts: &super::VerifyOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&NicProgress<'_>),
) -> Result<VerifyReport, VerifyError>
where
    P: Prober + ?Sized,
    C: Clock + ?Sized,
{
    let mut states: Vec<NicState> = targets.iter().map(initial_state).collect();
    for (index, (t, s)) in targets.iter().zip(&states).enumerate() {
        progress(&NicProgress { index, target: t, state: s });
    }
    let set = |states: &mut Vec<NicState>, index: usize, s: NicState, progress: &mut dyn FnMut(&NicProgress<'_>)| {
        states[index] = s;
        progress(&NicProgress { index, target: &targets[index], state: &states[index] });
    };
    while states.iter().any(|s| !s.is_final()) {
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        let round_start = clock.elapsed();
        // One probe per bridge, of every pending target's address there.
        let mut asks: BTreeMap<&str, Vec<Ipv6Addr>> = BTreeMap::new();
        for (t, s) in targets.iter().zip(&states) {
            if let (NicState::Soliciting { ip }, Some(b)) = (s, &t.bridge) {
                asks.entry(b.as_str()).or_default().push(*ip);
            }
        }
        let mut results: BTreeMap<&str, Result<Vec<TimedAdvert>, ProbeError>> = BTreeMap::new();
        for (bridge, ips) in &asks {
            results.insert(bridge, prober.probe6(bridge, ips, opts.probe_timeout, opts.grace));
        }
        let now = clock.elapsed();
        for index in 0..targets.len() {
            let t = &targets[index];
            let (NicState::Soliciting { ip }, Some(bridge)) = (&states[index], &t.bridge) else { continue };
            let ip = *ip;
            let next = match results.get(bridge.as_str()) {
                Some(Ok(got)) => match judge(ip, t.mac, got) {
                    Some(Ok(rtt)) => Some(NicState::Verified {
                        ip: ip.into(),
                        evidence: Evidence { mac: t.mac, bridge: bridge.clone(), ndp: true },
                        seconds: now.as_secs_f64(),
                        rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
                    }),
                    Some(Err(reason)) => Some(NicState::Failed { reason }),
                    None => None,
                },
                Some(Err(ProbeError::InterfaceMissing { .. })) => {
                    Some(NicState::Failed { reason: FailReason::BridgeNotVisible { bridge: bridge.clone() } })
                }
                Some(Err(
                    e @ (ProbeError::InterfaceDown { .. } | ProbeError::NoMac { .. } | ProbeError::NoIpv6 { .. }),
                )) => Some(NicState::Failed { reason: FailReason::NoBridge { detail: e.to_string() } }),
                Some(Err(_)) | None => None,
            };
            if let Some(s) = next {
                set(&mut states, index, s, progress);
            }
        }
        // A probe that cannot run at all ends verification as for IPv4.
        for (_, r) in results {
            if let Err(
                e @ (ProbeError::PermissionDenied { .. }
                | ProbeError::Io { .. }
                | ProbeError::ToolMissing { .. }
                | ProbeError::Remote { .. }),
            ) = r
            {
                return Err(e.into());
            }
        }
        if states.iter().all(NicState::is_final) || now >= opts.timeout {
            break;
        }
        let round_end = round_start.saturating_add(opts.probe_timeout);
        if now < round_end {
            clock.sleep((round_end - now).min(opts.timeout.saturating_sub(now)));
        }
    }
    let interrupted = cancel.load(Ordering::SeqCst);
    for index in 0..targets.len() {
        if let NicState::Soliciting { ip } = states[index] {
            let reason = if interrupted { FailReason::Interrupted } else { FailReason::NoAdvert { ip } };
            set(&mut states, index, NicState::Failed { reason }, progress);
        }
    }
    Ok(VerifyReport {
        nics: targets.iter().zip(states).map(|(t, state)| NicOutcome { target: t.clone(), state }).collect(),
        ready: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::lab::source::SourceFile;
    use crate::verify::prober::FakeProber;
    use crate::verify::target::{Family, HostAccess};
    use crate::verify::{FakeClock, FakeLeases, VerifyOptions, verify};

    const LAB: &str = "apiVersion: topo/v1
name: v6
networks:
  both: {subnet: 10.40.0.0/24, subnet6: fd00:40::/64}
  only6: {mode: isolated, subnet6: fd00:41::/64}
vms:
  a:
    boot: {kernel: KERNEL}
    nics: [{network: both, mac: '52:54:00:12:34:56'}, {network: only6, mac: '52:54:00:12:34:57'}]
";

    /// The targets of lab `v6`: the NIC on `both` has an IPv4 then an IPv6 target, the one
    /// on `only6` an IPv6 target alone, each at its SLAAC address; every bridge `br0`.
    fn targets() -> Vec<NicTarget> {
        let text = LAB.replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        let lab = crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/v6.yaml"), text)).expect("valid");
        let mut observed = crate::host::observed::Observed::default();
        for net in lab.networks.values() {
            observed.networks.insert(net.libvirt_name.to_string(), network(net.libvirt_name.as_str()));
        }
        let mut out = crate::verify::targets(&lab, &observed, HostAccess::Local);
        for t in &mut out {
            t.running = true;
        }
        out
    }

    fn network(name: &str) -> crate::host::observed::ObservedNetwork {
        crate::host::observed::ObservedNetwork {
            name: name.into(),
            uuid: None,
            active: true,
            persistent: true,
            autostart: true,
            mode: crate::host::observed::ObservedMode::Known(crate::lab::model::NetworkMode::Isolated),
            bridge: Some("br0".into()),
            live_bridge: Some("br0".into()),
            stp: false,
            mac: None,
            mtu: None,
            ip: None,
            ip6: None,
            dhcp_ping: false,
            owner: None,
        }
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().expect("test address")
    }
    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC")
    }

    fn opts() -> VerifyOptions {
        VerifyOptions {
            timeout: Duration::from_secs(3),
            probe_timeout: Duration::from_millis(300),
            grace: Duration::from_millis(30),
            poll_every: Duration::from_millis(300),
            sweep_after: Duration::from_secs(60),
            sweep_every: Duration::from_secs(60),
            max_sweep_hosts: 1024,
            ready_timeout: Duration::ZERO,
        }
    }

    #[test]
    fn a_nic_has_a_target_per_family_at_its_slaac_address() {
        let t = targets();
        let rows: Vec<(&str, Family, Option<Ipv6Addr>)> =
            t.iter().map(|t| (t.network.as_str(), t.family, t.address6)).collect();
        assert_eq!(
            rows,
            [
                ("both", Family::Ipv4, None),
                ("both", Family::Ipv6, Some(ip6("fd00:40::5054:ff:fe12:3456"))),
                ("only6", Family::Ipv6, Some(ip6("fd00:41::5054:ff:fe12:3457"))),
            ]
        );
        assert_eq!(t[1].reservation, None);
    }

    /// IPv4 by ARP and IPv6 by NDP, each proven on its own: the IPv6 address answers only
    /// after two solicitations (tentative during DAD, RFC 4862 5.4) and is still verified,
    /// with NDP evidence from the NIC's MAC; the report keeps the targets' order.
    #[test]
    fn both_families_are_proven_and_a_tentative_address_is_retried() {
        let t = targets();
        let (m0, m1) = (mac("52:54:00:12:34:56"), mac("52:54:00:12:34:57"));
        let v4 = t[0].reservation.expect("a derived reservation");
        let p = FakeProber::new()
            .answer("br0", v4, m0)
            .answer6_after("br0", ip6("fd00:40::5054:ff:fe12:3456"), m0, 2)
            .answer6_after("br0", ip6("fd00:41::5054:ff:fe12:3457"), m1, 0);
        let clock = FakeClock::new();
        let mut log = Vec::new();
        let r = verify(&t, &p, &FakeLeases::new(), &clock, &opts(), &AtomicBool::new(false), |e| {
            log.push((e.index, e.state.clone()))
        })
        .expect("runs");
        assert!(r.all_ok(), "{r:?}");
        assert!(matches!(&r.nics[0].state, NicState::Verified { ip, evidence, .. } if *ip == v4 && !evidence.ndp));
        assert!(matches!(&r.nics[1].state, NicState::Verified { ip, evidence, .. }
            if *ip == ip6("fd00:40::5054:ff:fe12:3456") && evidence.ndp && evidence.mac == m0));
        assert_eq!(p.solicits_of("br0", ip6("fd00:40::5054:ff:fe12:3456")), 3);
        assert!(
            log.iter().any(|(i, s)| *i == 2 && matches!(s, NicState::Verified { .. })),
            "progress by the caller's index"
        );
        let json = crate::verify::report::to_json("v6", &r);
        let fams: Vec<&str> =
            json["nics"].as_array().expect("rows").iter().map(|n| n["family"].as_str().unwrap_or("")).collect();
        assert_eq!(fams, ["ipv4", "ipv6", "ipv6"]);
        assert!(
            json["nics"][1]["evidence"]
                .as_str()
                .unwrap_or("")
                .starts_with("neighbour advertisement from 52:54:00:12:34:56")
        );
    }

    /// Another MAC advertising the NIC's address is a conflict naming both MACs (with
    /// `also` when the NIC answers too); silence until the timeout is `NoAdvert`.
    #[test]
    fn a_conflict_names_both_macs_and_silence_fails() {
        let t: Vec<NicTarget> = targets().into_iter().filter(|t| t.family == Family::Ipv6).collect();
        let (m0, other) = (mac("52:54:00:12:34:56"), mac("52:54:00:99:99:99"));
        let p = FakeProber::new().answer6_after("br0", ip6("fd00:40::5054:ff:fe12:3456"), m0, 0).answer6_after(
            "br0",
            ip6("fd00:40::5054:ff:fe12:3456"),
            other,
            0,
        );
        let r = verify(&t, &p, &FakeLeases::new(), &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {})
            .expect("runs");
        match &r.nics[0].state {
            NicState::Failed { reason: reason @ FailReason::Conflict6 { mac: m, other_mac, also: true, .. } } => {
                assert_eq!((*m, *other_mac), (m0, other));
                assert!(
                    reason.to_string().contains("52:54:00:99:99:99")
                        && reason.to_string().contains("52:54:00:12:34:56")
                );
            }
            s => panic!("expected a conflict, got {s:?}"),
        }
        assert!(
            matches!(&r.nics[1].state, NicState::Failed { reason: FailReason::NoAdvert { ip } } if *ip == ip6("fd00:41::5054:ff:fe12:3457"))
        );
    }

    /// A prober that speaks ARP only (the trait's default `probe6`) fails the IPv6 NICs with a
    /// reason that says so; it does not end verification.
    #[test]
    fn a_prober_without_ndp_fails_just_the_ipv6_nics() {
        struct ArpOnly;
        impl Prober for ArpOnly {
            fn probe_timed(
                &self,
                _: &str,
                _: &[std::net::Ipv4Addr],
                _: Duration,
                _: Duration,
            ) -> Result<Vec<crate::verify::prober::TimedReply>, ProbeError> {
                Ok(Vec::new())
            }
        }
        let t: Vec<NicTarget> = targets().into_iter().filter(|t| t.family == Family::Ipv6).collect();
        let r = verify(&t, &ArpOnly, &FakeLeases::new(), &FakeClock::new(), &opts(), &AtomicBool::new(false), |_| {})
            .expect("runs");
        assert!(r.nics.iter().all(|n| matches!(&n.state, NicState::Failed { reason: FailReason::NoBridge { detail } } if detail.contains("ARP only"))), "{r:?}");
    }
}
