//! The machine boundary over real ssh, against two hosts of the multi-host harness
//! (docs/multi-host-harness.md): `RemoteMachine::ssh` and `ArpingProber` over an
//! `SshRunner`, from the controller namespace. Needs the harness up, so it is ignored in a
//! plain `cargo test`; run it with the lock held:
//!
//! ```text
//! flock -o /tmp/topo-hosts.lock sh -c 'scripts/hosts.sh up 2 && eval "$(scripts/hosts.sh env)" &&
//!   scripts/hosts.sh ctl -- env TOPO_HOSTS_URI_h1="$TOPO_HOSTS_URI_h1" TOPO_HOSTS_URI_h2="$TOPO_HOSTS_URI_h2" \
//!   target/debug/deps/machine_ssh-HASH --ignored --nocapture; scripts/hosts.sh down'
//! ```
//!
//! On each host it makes bridge `br-t` (no address); on h2 a guest namespace `tg` on it
//! holding 10.66.0.5; a tunnel `vx66` (VNI 66) each way over the underlay. Everything it made
//! is removed at the end, also on failure.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use topo::host::machine::{Machine, RemoteMachine};
use topo::host::runner::{Runner, SshRunner, SshTarget};
use topo::host::tunnel::TunnelSpec;
use topo::lab::model::MacAddr;
use topo::verify::arping::ArpingProber;
use topo::verify::prober::Prober;

const GUEST_MAC: &str = "02:00:00:66:00:05";
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 5);

fn uri(h: &str) -> String {
    std::env::var(format!("TOPO_HOSTS_URI_{h}"))
        .unwrap_or_else(|_| panic!("TOPO_HOSTS_URI_{h} is not set (scripts/hosts.sh env)"))
}

fn sh(r: &dyn Runner, script: &str) {
    let o = r.run(&["sh", "-c", script], None).expect("ssh runs");
    assert_eq!(o.code, 0, "on {}: {script}: {}", r.describe(), o.error_text());
}

/// Removes what the test made on both hosts (best effort).
struct Cleanup(Vec<Arc<SshRunner>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = r.run(&["sh", "-c", "ip link del vx66; ip link del br-t; ip netns del tg; true"], None);
        }
    }
}

#[test]
#[ignore = "needs scripts/hosts.sh up 2 and the controller namespace (see the module doc)"]
fn tunnels_and_arp_proof_over_ssh_on_two_harness_hosts() {
    let (u1, u2) = (uri("h1"), uri("h2"));
    let r1 = Arc::new(SshRunner::from_uri(&u1).expect("an ssh URI"));
    let r2 = Arc::new(SshRunner::from_uri(&u2).expect("an ssh URI"));
    let _clean = Cleanup(vec![r1.clone(), r2.clone()]);
    let ul = |u: &str| -> Ipv4Addr {
        SshTarget::from_uri(u).unwrap().host.parse().expect("the harness URIs name addresses")
    };
    let (a1, a2) = (ul(&u1), ul(&u2));

    let t = Instant::now();
    sh(r1.as_ref(), "ip link add br-t type bridge stp_state 0 && ip link set br-t up");
    eprintln!("first command over ssh (login, control master): {:?}", t.elapsed());
    let t = Instant::now();
    sh(
        r2.as_ref(),
        "ip link add br-t type bridge stp_state 0 && ip link set br-t up && ip netns add tg && \
         ip link add vt type veth peer name eth0 netns tg && ip link set vt master br-t up && \
         ip -n tg link set eth0 address 02:00:00:66:00:05 && ip -n tg addr add 10.66.0.5/24 dev eth0 && \
         ip -n tg link set eth0 up",
    );
    eprintln!("first command on h2: {:?}", t.elapsed());

    let m1 = RemoteMachine::over(r1.clone());
    let m2 = RemoteMachine::over(r2.clone());
    // The tool probe over real ssh, one round trip: the harness hosts have every program.
    assert_eq!(m1.missing_tools(), Some(BTreeSet::new()), "h1 lacks none of topo's programs");
    let underlay = m1.addresses().unwrap().get(&a1.into()).cloned().expect("h1 has its underlay address");
    assert_eq!(underlay.mtu, 1500, "the MTU of {} (h1's underlay device) is read", underlay.device);
    assert!(!m2.addresses().unwrap().contains_key(&a1.into()), "h2 has not h1's");
    for (m, local, peer) in [(&m1, a1, a2), (&m2, a2, a1)] {
        let spec = TunnelSpec {
            device: "vx66".into(),
            alias: "topo test/lan".into(),
            vni: 66,
            local,
            dstport: 4789,
            peers: BTreeSet::from([peer]),
            bridge: "br-t".into(),
            mtu: 1450,
        };
        let t = Instant::now();
        m.ensure_tunnel(&spec).unwrap();
        eprintln!("ensure_tunnel (read + one change script): {:?}", t.elapsed());
        let t = Instant::now();
        m.ensure_tunnel(&spec).unwrap();
        eprintln!("ensure_tunnel again (read only): {:?}", t.elapsed());
        let got = m.tunnels().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].vni, got[0].local, &got[0].peers), (66, Some(local), &spec.peers));
        assert_eq!((got[0].master.as_deref(), got[0].mtu, got[0].up), (Some("br-t"), 1450, true));
    }
    assert!(m1.interfaces().unwrap().contains("vx66"));
    assert!(m1.kernel().is_ok());

    let want: MacAddr = GUEST_MAC.parse().unwrap();
    for (name, r) in [("h2 (local to the guest)", r2.clone()), ("h1 (across the tunnel)", r1.clone())] {
        let p = ArpingProber::over(r);
        let start = Instant::now();
        let got = loop {
            let t = Instant::now();
            let got = p.probe("br-t", &[GUEST_IP], Duration::from_secs(1), Duration::ZERO).unwrap();
            eprintln!("probe on {name}: {got:?} in {:?}", t.elapsed());
            if !got.is_empty() || start.elapsed() > Duration::from_secs(15) {
                break got;
            }
        };
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!((got[0].sender_mac, got[0].target_ip), (want, Ipv4Addr::UNSPECIFIED), "{name}");
    }

    m1.delete_tunnel("vx66").unwrap();
    m1.delete_tunnel("vx66").unwrap();
    assert_eq!(m1.tunnels().unwrap(), []);
}
