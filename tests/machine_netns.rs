//! Real-kernel tests of the machine boundary's commands (VXLAN tunnels, the `arping` prober
//! and its `ndisc6` for IPv6, the remote machine's reads) inside network namespaces this test
//! creates; no frame touches the host's own interfaces. Needs root and iproute2,
//! iputils-arping, ndisc6: without them the tests FAIL (they never skip).
//!
//! Two "hosts", `<base>-a` and `<base>-b`, joined by a veth underlay (`ul`, 10.88.0.1/24 and
//! 10.88.0.2/24), each with an address-less bridge `br0`; the tunnels stretch `br0` over the
//! underlay. A "guest" namespace `<base>-g` on b's bridge holds 10.66.0.5 (MAC
//! 02:00:00:66:00:05); for the duplicate case `<base>-d` on a's bridge holds it too (MAC
//! 02:00:00:66:00:0d). The NDP test gives them fd00:66::5 as well.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use topo::host::machine::{ImageBacking, LocalMachine, Machine, RemoteMachine};
use topo::host::runner::{LocalRunner, Output, RunError, Runner};
use topo::host::tunnel::TunnelSpec;
use topo::lab::model::MacAddr;
use topo::verify::arping::ArpingProber;
use topo::verify::prober::{ProbeError, Prober};

const UL_A: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const UL_B: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 5);
const GUEST_MAC: &str = "02:00:00:66:00:05";
const DUP_MAC: &str = "02:00:00:66:00:0d";

/// Fails (never skips) without what the tests need.
fn require_root_and_tools() {
    assert!(nix::unistd::geteuid().is_root(), "these tests create network namespaces: run them as root");
    for (tool, arg) in [("ip", "-V"), ("bridge", "-V"), ("arping", "-V"), ("ndisc6", "-V")] {
        assert!(Command::new(tool).arg(arg).output().is_ok(), "`{tool}` is not installed");
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The namespaces of the module doc; deleted on drop (also on panic).
struct Net {
    base: String,
    made: Vec<String>,
}

impl Net {
    fn new(tag: &str) -> Self {
        let base = format!("topo-mach-{}-{tag}", std::process::id());
        let mut net = Net { base, made: Vec::new() };
        let (a, b) = (net.ns("a"), net.ns("b"));
        ip(&["-n", &a, "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &b]);
        for (ns, addr) in [(&a, "10.88.0.1/24"), (&b, "10.88.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", "ul"]);
            ip(&["-n", ns, "link", "set", "ul", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "add", "br0", "type", "bridge", "stp_state", "0"]);
            ip(&["-n", ns, "link", "set", "br0", "up"]);
        }
        net
    }

    /// Makes namespace `<base>-<tag>`.
    fn ns(&mut self, tag: &str) -> String {
        let ns = format!("{}-{tag}", self.base);
        ip(&["netns", "add", &ns]);
        self.made.push(ns.clone());
        ns
    }

    fn name(&self, tag: &str) -> String {
        format!("{}-{tag}", self.base)
    }

    /// A guest namespace `<base>-<tag>` on host `host`'s bridge, holding `addr` with `mac`.
    fn guest(&mut self, host: &str, tag: &str, mac: &str, addr: &str) {
        let (h, g) = (self.name(host), self.ns(tag));
        let port = format!("v{tag}");
        ip(&["-n", &h, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &g]);
        ip(&["-n", &h, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &g, "link", "set", "eth0", "address", mac]);
        ip(&["-n", &g, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", &g, "link", "set", "eth0", "up"]);
    }

    /// Runs `f` on a fresh thread that has joined namespace `<base>-<tag>` (the commands it
    /// starts run there too: a child inherits its thread's network namespace).
    fn inside<T: Send>(&self, tag: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name(tag));
        thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).expect("open netns");
                setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.made {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A `LocalRunner` that records every command it runs.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<String>>,
}

impl Runner for Recording {
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, RunError> {
        self.calls.lock().unwrap().push(argv.join(" "));
        LocalRunner.run(argv, stdin)
    }

    fn describe(&self) -> String {
        "this machine (recorded)".into()
    }
}

/// Runs every command in a namespace (`ip netns exec`), as ssh runs it on another host.
struct InNs(String);

impl Runner for InNs {
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, RunError> {
        let mut a = vec!["ip", "netns", "exec", &self.0];
        a.extend_from_slice(argv);
        LocalRunner.run(&a, stdin)
    }

    fn describe(&self) -> String {
        format!("netns {}", self.0)
    }
}

fn spec(local: Ipv4Addr, peer: Ipv4Addr) -> TunnelSpec {
    TunnelSpec {
        device: "vx66".into(),
        alias: "topo test/lan".into(),
        vni: 66,
        local,
        dstport: 4789,
        peers: BTreeSet::from([peer]),
        bridge: "br0".into(),
        mtu: 1450,
    }
}

/// Probes until an answer comes (a new bridge port, the tunnel's first flood), at most 10 s.
fn probe_until(p: &ArpingProber, bridge: &str, target: Ipv4Addr, want: usize) -> Vec<topo::verify::arp::ArpReply> {
    let start = Instant::now();
    loop {
        let got = p.probe(bridge, &[target], Duration::from_secs(1), Duration::ZERO).expect("probe runs");
        if got.len() >= want || start.elapsed() > Duration::from_secs(10) {
            return got;
        }
    }
}

/// ensure_tunnel through `LocalMachine` in each of two namespaces: made as wanted; a second
/// ensure only reads (one command, nothing changed); peers changed in place; another VNI
/// makes it again; delete, and delete again (absent is fine); a device of the name that is no
/// VXLAN device is neither taken over nor deleted. Then a frame crosses: ARP from a's
/// address-less bridge reaches the guest on b.
#[test]
fn vxlan_tunnels_are_made_kept_changed_and_deleted_in_namespaces() {
    require_root_and_tools();
    let mut net = Net::new("tun");
    net.guest("b", "g", GUEST_MAC, "10.66.0.5/24");
    for (tag, local, peer) in [("a", UL_A, UL_B), ("b", UL_B, UL_A)] {
        net.inside(tag, || {
            let m = LocalMachine::new();
            assert_eq!(m.tunnels().unwrap(), []);
            m.ensure_tunnel(&spec(local, peer)).unwrap();
            let t = m.tunnels().unwrap();
            assert_eq!(t.len(), 1, "{t:?}");
            let t = &t[0];
            assert_eq!((t.device.as_str(), t.vni, t.local, t.dstport), ("vx66", 66, Some(local), 4789));
            assert_eq!(
                (t.alias.as_deref(), t.master.as_deref(), t.mtu, t.up),
                (Some("topo test/lan"), Some("br0"), 1450, true)
            );
            assert_eq!(t.peers, BTreeSet::from([peer]));
            assert!(m.addresses().unwrap().contains_key(&local.into()));
        });
    }
    // Idempotent: a second ensure reads once and changes nothing.
    net.inside("a", || {
        let rec = Arc::new(Recording::default());
        let m = RemoteMachine::over(rec.clone());
        let before = m.tunnels().unwrap();
        m.ensure_tunnel(&spec(UL_A, UL_B)).unwrap();
        assert_eq!(rec.calls.lock().unwrap().len(), 2, "one read for tunnels(), one for ensure: {:?}", rec.calls);
        assert_eq!(m.tunnels().unwrap(), before);
    });
    // The frames cross: a's bridge has no address (arping -s 0.0.0.0), the guest is on b.
    net.inside("a", || {
        let p = ArpingProber::over(Arc::new(LocalRunner));
        let got = probe_until(&p, "br0", GUEST_IP, 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].sender_mac, GUEST_MAC.parse::<MacAddr>().unwrap());
        assert_eq!(got[0].target_ip, Ipv4Addr::UNSPECIFIED, "an ARP probe from an address-less bridge");
    });
    net.inside("a", || {
        let m = LocalMachine::new();
        // Peers changed in place: the device stays (same ifindex), the entries follow. (Read
        // with `ip`: sysfs and /proc/net show the namespace of the mount and of the main
        // thread, not this thread's.)
        let index = || {
            let o = LocalRunner.run(&["ip", "-o", "link", "show", "dev", "vx66"], None).unwrap();
            o.text().split(':').next().map(str::to_owned)
        };
        let was = index();
        assert!(was.is_some());
        let mut s = spec(UL_A, UL_B);
        s.peers = BTreeSet::from([Ipv4Addr::new(10, 88, 0, 3), Ipv4Addr::new(10, 88, 0, 4)]);
        m.ensure_tunnel(&s).unwrap();
        assert_eq!(m.tunnels().unwrap()[0].peers, s.peers);
        assert_eq!(index(), was, "changed in place");
        // Another VNI: deleted and made again.
        s.vni = 67;
        m.ensure_tunnel(&s).unwrap();
        assert_eq!(m.tunnels().unwrap()[0].vni, 67);
        assert_ne!(index(), was, "made again");
        m.delete_tunnel("vx66").unwrap();
        assert_eq!(m.tunnels().unwrap(), []);
        m.delete_tunnel("vx66").unwrap();
        // A bridge is no VXLAN device: not deleted, not taken.
        let e = m.delete_tunnel("br0").unwrap_err();
        assert!(e.to_string().contains("not a VXLAN device"), "{e}");
        assert_eq!(LocalRunner.run(&["ip", "link", "show", "dev", "br0"], None).unwrap().code, 0, "still there");
        let e = m.ensure_tunnel(&TunnelSpec { device: "br0".into(), ..spec(UL_A, UL_B) }).unwrap_err();
        assert!(e.hint().is_some_and(|h| h.contains("no VXLAN device")), "{e:?}");
        // A bridge that is not there fails, naming it.
        let e = m.ensure_tunnel(&TunnelSpec { bridge: "nobr".into(), ..spec(UL_A, UL_B) }).unwrap_err();
        assert!(e.to_string().contains("nobr"), "{e}");
        m.delete_tunnel("vx66").unwrap();
    });
}

/// The arping prober on the real kernel: a guest on the local bridge, one across the tunnel
/// with a duplicate of its address on the local bridge (both MACs reported), a silent
/// address, a missing bridge, a bridge that is down; from a bridge with an address, the
/// reply echoes that address.
#[test]
fn arping_prober_finds_guests_duplicates_and_broken_bridges() {
    require_root_and_tools();
    let mut net = Net::new("arp");
    net.guest("b", "g", GUEST_MAC, "10.66.0.5/24");
    net.guest("a", "d", DUP_MAC, "10.66.0.5/24");
    for (tag, local, peer) in [("a", UL_A, UL_B), ("b", UL_B, UL_A)] {
        net.inside(tag, || LocalMachine::new().ensure_tunnel(&spec(local, peer)).unwrap());
    }
    // Over a runner that is "another host" (commands in b's namespace): the local guest.
    let p = ArpingProber::over(Arc::new(InNs(net.name("b"))));
    let got = probe_until(&p, "br0", GUEST_IP, 2);
    let macs: BTreeSet<String> = got.iter().map(|r| r.sender_mac.to_string()).collect();
    assert_eq!(macs, BTreeSet::from([GUEST_MAC.to_owned(), DUP_MAC.to_owned()]), "a duplicate: both MACs");
    // From a, with an address on its bridge: the reply echoes it.
    ip(&["-n", &net.name("a"), "addr", "add", "10.66.0.1/24", "dev", "br0"]);
    let pa = ArpingProber::over(Arc::new(InNs(net.name("a"))));
    let got = probe_until(&pa, "br0", GUEST_IP, 2);
    assert!(got.iter().all(|r| r.target_ip == Ipv4Addr::new(10, 66, 0, 1)), "{got:?}");
    let t = pa.probe_timed("br0", &[GUEST_IP, Ipv4Addr::new(10, 66, 0, 9)], Duration::from_secs(1), Duration::ZERO);
    let t = t.unwrap();
    assert!(t.iter().all(|(r, rtt)| r.sender_ip == GUEST_IP && rtt.is_some()), "{t:?}");
    assert!(matches!(
        pa.probe("nobr", &[GUEST_IP], Duration::from_secs(1), Duration::ZERO),
        Err(ProbeError::InterfaceMissing { .. })
    ));
    ip(&["-n", &net.name("a"), "link", "set", "br0", "down"]);
    assert!(matches!(
        pa.probe("br0", &[GUEST_IP], Duration::from_secs(1), Duration::ZERO),
        Err(ProbeError::InterfaceDown { .. })
    ));
}

/// Solicits until `want` advertisements come (the bridge's own link-local address and a
/// guest's address leave duplicate address detection, the tunnel's first flood), at most 10 s.
fn solicit_until(p: &ArpingProber, target: Ipv6Addr, want: usize) -> Vec<topo::verify::prober::TimedAdvert> {
    let start = Instant::now();
    loop {
        let got = p.probe6("br0", &[target], Duration::from_millis(300), Duration::ZERO).expect("probe runs");
        if got.len() >= want || start.elapsed() > Duration::from_secs(10) {
            return got;
        }
    }
}

/// The prober's IPv6 half on the real kernel, real `ndisc6` through a runner that is
/// "another host" (commands in b's namespace): a guest on the local bridge and a duplicate of
/// its address across the tunnel (both MACs, from the target link-layer option); a silent
/// address (no answer, after about the wait); an address still tentative (RFC 4862 5.4: not
/// answered while in DAD, answered after); a missing bridge, a bridge with IPv6 disabled (as
/// libvirt leaves the bridge of a network without an IPv6 `<ip>`), a bridge that is down.
#[test]
fn ndisc6_prober_finds_guests_duplicates_silence_and_broken_bridges() {
    require_root_and_tools();
    let mut net = Net::new("ndp");
    net.guest("b", "g", GUEST_MAC, "10.66.0.5/24");
    net.guest("a", "d", DUP_MAC, "10.66.0.5/24");
    // `nodad`: both hold the address at once, as two guests that skipped or lost DAD would.
    for g in ["g", "d"] {
        ip(&["-n", &net.name(g), "addr", "add", "fd00:66::5/64", "dev", "eth0", "nodad"]);
    }
    for (tag, local, peer) in [("a", UL_A, UL_B), ("b", UL_B, UL_A)] {
        net.inside(tag, || LocalMachine::new().ensure_tunnel(&spec(local, peer)).unwrap());
    }
    let p = ArpingProber::over(Arc::new(InNs(net.name("b"))));
    let five: Ipv6Addr = "fd00:66::5".parse().unwrap();
    let got = solicit_until(&p, five, 2);
    let macs: BTreeSet<String> = got.iter().map(|(a, _)| a.mac().to_string()).collect();
    assert_eq!(macs, BTreeSet::from([GUEST_MAC.to_owned(), DUP_MAC.to_owned()]), "a duplicate: both MACs");
    assert!(got.iter().all(|(a, rtt)| a.target == five && a.source == five && rtt.is_none()), "{got:?}");

    let silent: Ipv6Addr = "fd00:66::9".parse().unwrap();
    let t0 = Instant::now();
    let none = p.probe6("br0", &[silent], Duration::from_millis(300), Duration::ZERO).expect("probe runs");
    let took = t0.elapsed();
    assert_eq!(none, [], "nobody holds fd00:66::9");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "the call lasts about the wait: {took:?}"
    );

    // A new address of the guest is tentative for about a second: no answer, then one.
    ip(&["-n", &net.name("g"), "addr", "add", "fd00:66::7/64", "dev", "eth0"]);
    let seven: Ipv6Addr = "fd00:66::7".parse().unwrap();
    let early = p.probe6("br0", &[seven], Duration::from_millis(100), Duration::ZERO).expect("probe runs");
    assert_eq!(early, [], "tentative (in DAD): not answered");
    let later = solicit_until(&p, seven, 1);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].0.mac(), GUEST_MAC.parse::<MacAddr>().unwrap());

    let ms = Duration::from_millis(100);
    assert!(matches!(p.probe6("nobr", &[five], ms, Duration::ZERO), Err(ProbeError::InterfaceMissing { .. })));
    ip(&["netns", "exec", &net.name("b"), "sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=1"]);
    let off = p.probe6("br0", &[five], ms, Duration::ZERO);
    assert!(matches!(&off, Err(ProbeError::NoIpv6 { why, .. }) if why.contains("no IPv6 address")), "{off:?}");
    ip(&["-n", &net.name("b"), "link", "set", "br0", "down"]);
    assert!(matches!(p.probe6("br0", &[five], ms, Duration::ZERO), Err(ProbeError::InterfaceDown { .. })));
}

/// RemoteMachine's reads with the commands it runs over ssh, here in a namespace: devices,
/// where a "tap" is plugged, a bridge's own MACs, routes, files and images; the same answers
/// LocalMachine gives from sysfs in that namespace.
#[test]
fn remote_machine_reads_devices_routes_and_files_through_a_runner() {
    require_root_and_tools();
    let mut net = Net::new("read");
    net.guest("a", "g", GUEST_MAC, "10.66.0.5/24");
    let m = RemoteMachine::over(Arc::new(InNs(net.name("a"))));
    let names = m.interfaces().unwrap();
    assert_eq!(names, BTreeSet::from(["br0", "lo", "ul", "vg"].map(String::from)));
    let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    let links = m.tap_links(&[(mac, "vg".into()), (mac, "ul".into())], None).unwrap();
    assert_eq!((links[0].bridge.as_deref(), links[1].bridge.as_deref()), (Some("br0"), None));
    assert_eq!(m.tap_links(&[(mac, "vnet9".into())], None), None, "not a device here");
    let addr = |dev: &str| {
        let o = Command::new("ip").args(["-n", &net.name("a"), "-o", "link", "show", "dev", dev]).output().unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse::<MacAddr>().unwrap()
    };
    assert_eq!(m.bridge_macs("br0"), Some(BTreeSet::from([addr("br0"), addr("vg")])), "the bridge's and its port's");
    assert_eq!(m.bridge_macs("ul"), None, "not a bridge");
    assert_eq!(m.bridge_macs("nope"), None);
    let routes = m.routes().unwrap();
    assert!(routes.iter().any(|r| r.device == "ul" && r.destination == Ipv4Addr::new(10, 88, 0, 0)), "{routes:?}");
    assert!(m.qdiscs().unwrap().contains_key("ul"));
    // Files: the same machine's files, so the same answers as LocalMachine's.
    let d = tempfile::tempdir().unwrap();
    let at = |n: &str| d.path().join(n).display().to_string();
    std::fs::write(at("base.raw"), [0u8; 512]).unwrap();
    std::fs::write(at("a.qcow2"), qcow2_backed_by("base.raw")).unwrap();
    let here = LocalMachine::new();
    for f in ["a.qcow2", "base.raw", "gone.qcow2"] {
        assert_eq!(m.image_backing(&at(f)), here.image_backing(&at(f)), "{f}");
        assert_eq!(m.file_id(&at(f)), here.file_id(&at(f)), "{f}");
    }
    assert_eq!(m.image_backing(&at("a.qcow2")), ImageBacking::File(at("base.raw")));
    assert_eq!(m.kernel().unwrap(), here.kernel().unwrap());
}

/// A qcow2 v3 header (docs/interop/qcow2.txt) naming `backing`, the name placed at 4096
/// (beyond the 512 bytes read first, so the second read runs too).
fn qcow2_backed_by(backing: &str) -> Vec<u8> {
    let mut h = vec![0u8; 4096 + backing.len()];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[8..16].copy_from_slice(&4096u64.to_be_bytes());
    h[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
    h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
    h[4096..].copy_from_slice(backing.as_bytes());
    h
}
