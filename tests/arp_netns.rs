//! Real-socket tests of `PnetProber` (ARP, and NDP for IPv6; `verify` over it) inside network namespaces this
//! test creates: `<ns>-h` holds bridge `br0` (10.99.0.1/24), `<ns>-g` holds the "guest" end of
//! a veth pair (10.99.0.5/24, MAC 02:00:00:99:00:05) whose other end is a port of `br0`.
//! No frame touches the host's own interfaces. Needs root; skipped otherwise, except under CI
//! (`CI=true`), where a missing prerequisite fails.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use topo::lab::model::MacAddr;
use topo::verify::arp::ArpReply;
use topo::verify::prober::{PnetProber, ProbeError, Prober, sweep_targets};

const GUEST_MAC: &str = "02:00:00:99:00:05";
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
const ABSENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 6);
const GRACE: Duration = Duration::from_millis(30);

/// Whether this host can run the namespace tests. A developer without root or iproute2 gets
/// a skip message; under CI (`CI=true`) a missing prerequisite fails the test instead, so the
/// tier can never pass by not running.
fn can_run() -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("creating network namespaces and raw sockets needs root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` tool (iproute2) is not installed")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true but {why}"),
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces wired as described in the module doc; deleted on drop (also on panic).
struct TestNet {
    host: String,
    guest: String,
    /// Namespaces of further guests (`add_guest`).
    extra: Vec<String>,
}

impl TestNet {
    fn new(tag: &str) -> Self {
        let base = format!("topo-arp-test-{}-{tag}", std::process::id());
        let net = TestNet { host: format!("{base}-h"), guest: format!("{base}-g"), extra: Vec::new() };
        // Constructed before the first `ip` call so a failure half-way still cleans up.
        ip(&["netns", "add", &net.host]);
        ip(&["netns", "add", &net.guest]);
        let (h, g) = (net.host.as_str(), net.guest.as_str());
        ip(&["-n", h, "link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        ip(&["-n", h, "addr", "add", "10.99.0.1/24", "dev", "br0"]);
        ip(&["-n", h, "link", "set", "br0", "up"]);
        ip(&["-n", h, "link", "add", "vh", "type", "veth", "peer", "name", "vg", "netns", g]);
        ip(&["-n", h, "link", "set", "vh", "master", "br0"]);
        ip(&["-n", h, "link", "set", "vh", "up"]);
        ip(&["-n", g, "link", "set", "vg", "address", GUEST_MAC]);
        ip(&["-n", g, "addr", "add", "10.99.0.5/24", "dev", "vg"]);
        ip(&["-n", g, "link", "set", "vg", "up"]);
        net
    }

    /// A second "guest" namespace `<base>-<tag>` on `br0`, holding `addr` (CIDR) with `mac`.
    fn add_guest(&mut self, tag: &str, mac: &str, addr: &str) {
        let ns = format!("{}-{tag}", self.host.trim_end_matches("-h"));
        ip(&["netns", "add", &ns]);
        self.extra.push(ns.clone());
        let veth = format!("vh{tag}");
        ip(&["-n", &self.host, "link", "add", &veth, "type", "veth", "peer", "name", "vg", "netns", &ns]);
        ip(&["-n", &self.host, "link", "set", &veth, "master", "br0"]);
        ip(&["-n", &self.host, "link", "set", &veth, "up"]);
        ip(&["-n", &ns, "link", "set", "vg", "address", mac]);
        ip(&["-n", &ns, "addr", "add", addr, "dev", "vg"]);
        ip(&["-n", &ns, "link", "set", "vg", "up"]);
    }

    /// Runs `f` on a fresh thread that has joined the host namespace.
    fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(format!("/run/netns/{}", self.host)).expect("open netns");
                setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.host, &self.guest].into_iter().chain(&self.extra) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn guest_mac() -> MacAddr {
    GUEST_MAC.parse().expect("valid MAC")
}

/// The first probe may race the bridge port coming up: retry like `verify` does.
fn probe_until_answer(p: &PnetProber, target: Ipv4Addr) -> Vec<ArpReply> {
    let start = Instant::now();
    loop {
        let got = p.probe("br0", &[target], Duration::from_millis(300), GRACE).expect("probe works");
        if !got.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return got;
        }
    }
}

#[test]
fn probe_finds_the_guest_and_nothing_else() {
    if !can_run() {
        return;
    }
    let net = TestNet::new("probe");
    net.in_host(|| {
        let p = PnetProber::default();
        let got = probe_until_answer(&p, GUEST_IP);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].sender_mac, guest_mac());
        assert_eq!(got[0].sender_ip, GUEST_IP);
        assert_eq!(got[0].target_ip, Ipv4Addr::new(10, 99, 0, 1));

        let none = p.probe("br0", &[ABSENT_IP], Duration::from_millis(300), GRACE).expect("probe");
        assert!(none.is_empty(), "nobody holds .6: {none:?}");

        // The round trip of a real reply: measured, and within the probe's wait (a veth
        // guest's kernel answers in microseconds).
        let timed = p.probe_timed("br0", &[GUEST_IP], Duration::from_millis(300), GRACE).expect("probe");
        assert_eq!(timed.len(), 1, "{timed:?}");
        let rtt = timed[0].1.expect("the real prober measures the round trip");
        eprintln!("ARP round trip to the veth guest: {rtt:?}");
        assert!(rtt < Duration::from_millis(300), "{rtt:?}");

        let hosts = sweep_targets("10.99.0.0/24".parse().unwrap(), 1024).expect("a /24");
        let t = Instant::now();
        let swept = p.probe("br0", &hosts, Duration::from_millis(300), GRACE).expect("sweep");
        eprintln!("/24 sweep with 300 ms timeout took {:?}", t.elapsed());
        let found: Vec<(Ipv4Addr, MacAddr)> = swept.iter().map(|r| (r.sender_ip, r.sender_mac)).collect();
        assert_eq!(found, vec![(GUEST_IP, guest_mac())]);
        // Sending 254 requests is paced, but must stay well below the reply timeout.
        assert!(t.elapsed() < Duration::from_millis(600), "sweep took {:?}", t.elapsed());
    });
}

#[test]
fn bridge_without_address_sends_arp_probes() {
    if !can_run() {
        return;
    }
    let net = TestNet::new("noaddr");
    ip(&["-n", &net.host, "addr", "flush", "dev", "br0"]);
    net.in_host(|| {
        let got = probe_until_answer(&PnetProber::default(), GUEST_IP);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].sender_mac, guest_mac());
        // Linux answers an RFC 5227 probe with the asker's (zero) address as target.
        assert_eq!(got[0].target_ip, Ipv4Addr::UNSPECIFIED);
    });
}

#[test]
fn missing_and_down_interfaces_are_reported() {
    if !can_run() {
        return;
    }
    let net = TestNet::new("errs");
    ip(&["-n", &net.host, "link", "add", "br1", "type", "bridge"]);
    net.in_host(|| {
        let p = PnetProber::default();
        let t = Duration::from_millis(50);
        assert!(matches!(p.probe("br9", &[GUEST_IP], t, GRACE), Err(ProbeError::InterfaceMissing { .. })));
        assert!(matches!(p.probe("br1", &[GUEST_IP], t, GRACE), Err(ProbeError::InterfaceDown { .. })));
    });
}

#[test]
fn verify_over_real_arp() {
    use topo::host::observed::Lease;
    use topo::lab::model::{NetworkName, VmName};
    use topo::verify::{FailReason, NicState, NicTarget, SystemClock, VerifyOptions, verify};

    if !can_run() {
        return;
    }
    let net = TestNet::new("verify");
    let target = |vm: &str, mac: &str| NicTarget {
        vm: VmName::new(vm).unwrap(),
        domain: vm.to_string(),
        nic: "eth0".into(),
        network: NetworkName::new("net").unwrap(),
        libvirt_network: "lab-net".into(),
        bridge: Some("br0".into()),
        no_bridge: None,
        mac: mac.parse().unwrap(),
        family: Default::default(),
        address6: None,
        reservation: None,
        dhcp: true,
        subnet: Some("10.99.0.0/24".parse().unwrap()),
        running: true,
        stopped: false,
        verify: true,
        netem_delay: Default::default(),
        same_mac: Vec::new(),
        host: None,
        wire: None,
        unproven: false,
        cut: None,
    };
    let targets =
        [target("guest", GUEST_MAC), target("ghost", "02:00:00:99:00:06"), target("dup", "02:00:00:99:00:07")];
    let lease = |mac: &str, ip: Ipv4Addr| Lease {
        network: "lab-net".into(),
        mac: mac.parse().unwrap(),
        ip,
        hostname: None,
        expiry: 0,
    };
    // .5 is the guest's; .6 is a stale lease nobody answers; the "dup" NIC holds a stale
    // lease for .5, which the guest answers with another MAC.
    let leases = || {
        Ok(vec![
            lease(GUEST_MAC, GUEST_IP),
            lease("02:00:00:99:00:06", ABSENT_IP),
            lease("02:00:00:99:00:07", GUEST_IP),
        ])
    };
    let opts = VerifyOptions { timeout: Duration::from_secs(2), ..VerifyOptions::default() };
    let report = net.in_host(|| {
        verify(
            &targets,
            &PnetProber::default(),
            &leases,
            &SystemClock::start(),
            &opts,
            &std::sync::atomic::AtomicBool::new(false),
            |p| eprintln!("{} {}: {}", p.target.vm, p.target.nic, p.state),
        )
        .expect("verification runs")
    });
    match &report.nics[0].state {
        NicState::Verified { ip, evidence, .. } => {
            assert_eq!(*ip, GUEST_IP);
            assert_eq!(evidence.to_string(), format!("arp reply from {GUEST_MAC} on br0"));
        }
        other => panic!("guest not verified: {other:?}"),
    }
    assert_eq!(report.nics[1].state, NicState::Failed { reason: FailReason::LeasedButSilent { ip: ABSENT_IP } });
    assert_eq!(
        report.nics[2].state,
        NicState::Failed { reason: FailReason::Conflict { ip: GUEST_IP, other_mac: guest_mac() } }
    );
}

/// A real duplicate: a second "guest" with another MAC holds the same address. The probe
/// returns both replies (it waits a grace after the first); verification fails the NIC as a
/// duplicate naming both MACs, instead of proving it.
#[test]
fn a_real_duplicate_is_reported_with_both_macs() {
    use topo::lab::model::{NetworkName, VmName};
    use topo::verify::{FailReason, NicState, NicTarget, SystemClock, VerifyOptions, verify};
    if !can_run() {
        return;
    }
    const OTHER_MAC: &str = "02:00:00:99:00:55";
    let mut net = TestNet::new("dup");
    net.add_guest("d", OTHER_MAC, "10.99.0.5/24");
    let got = net.in_host(|| {
        let p = PnetProber::default();
        let start = Instant::now();
        loop {
            let got = p.probe("br0", &[GUEST_IP], Duration::from_millis(300), GRACE).expect("probe");
            if got.len() >= 2 || start.elapsed() > Duration::from_secs(5) {
                return got;
            }
        }
    });
    let macs: Vec<String> = got.iter().map(|r| r.sender_mac.to_string()).collect();
    assert_eq!(macs, vec![GUEST_MAC.to_string(), OTHER_MAC.to_string()], "{got:?}");

    let target = NicTarget {
        vm: VmName::new("guest").unwrap(),
        domain: "guest".into(),
        nic: "eth0".into(),
        network: NetworkName::new("net").unwrap(),
        libvirt_network: "lab-net".into(),
        bridge: Some("br0".into()),
        no_bridge: None,
        mac: guest_mac(),
        family: Default::default(),
        address6: None,
        reservation: Some(GUEST_IP),
        dhcp: false,
        subnet: Some("10.99.0.0/24".parse().unwrap()),
        running: true,
        stopped: false,
        verify: true,
        netem_delay: Default::default(),
        same_mac: Vec::new(),
        host: None,
        wire: None,
        unproven: false,
        cut: None,
    };
    let no_leases = || Ok(vec![]);
    let opts = VerifyOptions { timeout: Duration::from_secs(3), ..VerifyOptions::default() };
    let report = net.in_host(|| {
        let t = Instant::now();
        let r = verify(
            &[target],
            &PnetProber::default(),
            &no_leases,
            &SystemClock::start(),
            &opts,
            &std::sync::atomic::AtomicBool::new(false),
            |_| {},
        )
        .expect("verification runs");
        eprintln!("duplicate found after {:?}", t.elapsed());
        r
    });
    assert_eq!(
        report.nics[0].state,
        NicState::Failed {
            reason: FailReason::Duplicate { ip: GUEST_IP, mac: guest_mac(), other_mac: OTHER_MAC.parse().unwrap() }
        }
    );
}

/// NDP over the real socket: the guest end holds `fd00:99::5/64` (and the bridge
/// `fd00:99::1/64`, the source of the solicitations), both without DAD so the test does not
/// wait a second; the kernel answers topo's Neighbor Solicitation with an advertisement from
/// the guest's MAC, an absent address gets none, and a second guest holding the same address
/// answers too (both MACs seen: the caller calls it a conflict).
#[test]
fn ndp_solicitation_is_answered_by_the_guests_kernel() {
    if !can_run() {
        return;
    }
    let mut net = TestNet::new("ndp");
    let (h, g) = (net.host.clone(), net.guest.clone());
    ip(&["-n", &h, "addr", "add", "fd00:99::1/64", "dev", "br0", "nodad"]);
    ip(&["-n", &g, "addr", "add", "fd00:99::5/64", "dev", "vg", "nodad"]);
    let target: std::net::Ipv6Addr = "fd00:99::5".parse().expect("address");
    let absent: std::net::Ipv6Addr = "fd00:99::6".parse().expect("address");
    let p = PnetProber::default();
    let until = |net: &TestNet, p: &PnetProber, want: usize| {
        let start = Instant::now();
        loop {
            let got = net_probe6(net, p, &[target, absent]);
            if got.len() >= want || start.elapsed() > Duration::from_secs(10) {
                return got;
            }
            thread::sleep(Duration::from_millis(200));
        }
    };
    let got = until(&net, &p, 1);
    assert_eq!(got.len(), 1, "{got:?}");
    let (na, rtt) = &got[0];
    assert_eq!((na.target, na.mac(), na.solicited), (target, guest_mac(), true));
    assert!(rtt.is_some_and(|d| d < Duration::from_secs(1)), "{rtt:?}");

    net.add_guest("dup", "02:00:00:99:00:07", "10.99.0.7/24");
    let dup_ns = net.extra[0].clone();
    ip(&["-n", &dup_ns, "addr", "add", "fd00:99::5/64", "dev", "vg", "nodad"]);
    let got = until(&net, &p, 2);
    let macs: Vec<String> = got.iter().map(|(a, _)| a.mac().to_string()).collect();
    assert_eq!(macs.len(), 2, "{got:?}");
    assert!(macs.contains(&"02:00:00:99:00:07".to_string()) && macs.contains(&GUEST_MAC.to_string()), "{macs:?}");
}

fn net_probe6(net: &TestNet, p: &PnetProber, targets: &[std::net::Ipv6Addr]) -> Vec<topo::verify::prober::TimedAdvert> {
    net.in_host(|| p.probe6("br0", targets, Duration::from_millis(300), GRACE).expect("probe6"))
}
