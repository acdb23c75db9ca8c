//! Tier 2 across hosts: a lab over two in-memory hosts (`Session::over_hosts`), applied,
//! checked on each host (its share, its tunnel), planned again empty, destroyed to nothing;
//! then the fault sweep: every call of either host failing, and the process dying after
//! every call, and a new apply converges on both hosts, and destroy leaves nothing of the lab.

mod common;

use common::*;
use topo::host::Host;
use topo::host::hypervisor::memory::{Fault, MemoryHypervisor};
use topo::lab::address::Address;
use topo::lab::model::{HostName, Lab};
use topo::session::{ApplyRequest, DestroyRequest, Session, Silent};

fn lab_text() -> String {
    format!(
        "apiVersion: topo/v1\nname: mh\n\
         hosts:\n  h1: {{uri: \"qemu+ssh://root@h1/system\", underlay: 10.77.0.11}}\n  \
         h2: {{uri: \"qemu+ssh://root@h2/system\", underlay: 10.77.0.12}}\n\
         networks:\n  lan: {{mode: isolated, subnet: 10.10.0.0/24}}\n  wan: {{mode: nat, subnet: 10.20.0.0/24, host: h2}}\n\
         vms:\n  g1:\n    boot: {{kernel: {k}}}\n    nics: [{{network: lan}}]\n  \
         g2:\n    host: h2\n    boot: {{kernel: {k}}}\n    nics: [{{network: lan, ip: 10.10.0.20}}, {{network: wan}}]\n",
        k = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/boot/vmlinuz")
    )
}

fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

/// Two hosts whose names start with `test` (each test its own: locks key on the host name,
/// and the tests of this file run at once in one process).
fn hosts(test: &str) -> (MemoryHypervisor, MemoryHypervisor) {
    let hv1 = MemoryHypervisor::new().with_hostname(&format!("{test}-h1")).with_host_addresses(&["10.77.0.11"]);
    let hv2 = MemoryHypervisor::new().with_hostname(&format!("{test}-h2")).with_host_addresses(&["10.77.0.12"]);
    (hv1, hv2)
}

fn session<'a>(hv1: &'a MemoryHypervisor, hv2: &'a MemoryHypervisor) -> Session<'a> {
    Session::over_hosts([(h("h1"), Host::from(hv1)), (h("h2"), Host::from(hv2))])
}

fn apply(l: &Lab, s: &Session<'_>) -> Result<(), String> {
    let req = ApplyRequest {
        saved: None,
        targets: &[],
        options: options(4),
        auto_approve: true,
        disconnect_foreign: false,
        verify: None,
    };
    s.apply(l, &req, &Silent::default()).map(|_| ()).map_err(|e| e.error.to_string())
}

fn destroy(l: &Lab, s: &Session<'_>) -> Result<(), String> {
    let req = DestroyRequest { targets: &[], graceful: None, options: options(4), disconnect_foreign: false };
    s.destroy(l, &req, &Silent::default()).map(|_| ()).map_err(|e| e.error.to_string())
}

/// Every network, domain and tunnel of a host, by name.
fn objects(hv: &MemoryHypervisor) -> Vec<String> {
    let o = hv.observe().unwrap();
    let tunnels = Host::from(hv).machine.unwrap().tunnels().unwrap();
    o.networks
        .keys()
        .map(|n| format!("network {n}"))
        .chain(o.domains.keys().map(|d| format!("domain {d}")))
        .chain(tunnels.iter().map(|t| format!("tunnel {}", t.device)))
        .collect()
}

fn plan_is_empty(l: &Lab, s: &Session<'_>) -> bool {
    s.plan(l, &[], &Silent::default()).unwrap_or_else(|e| panic!("plan: {e:?}")).plan.is_empty()
}

#[test]
fn a_lab_across_two_hosts_applies_converges_and_is_destroyed() {
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("whole");
    let s = session(&hv1, &hv2);
    let planned = s.plan(&l, &[], &Silent::default()).unwrap().plan;
    assert_eq!(planned.hosts.keys().map(ToString::to_string).collect::<Vec<_>>(), ["h1", "h2"]);
    let on =
        |host: &str| -> Vec<String> { planned.hosts[&h(host)].changes.iter().map(|c| c.address.to_string()).collect() };
    assert_eq!(on("h1"), ["network.lan", "tunnel.lan", "vm.g1"]);
    assert_eq!(on("h2"), ["network.lan", "network.wan", "tunnel.lan", "vm.g2"]);

    apply(&l, &s).unwrap();
    let vx = topo::lab::hosts::tunnel_device(l.vni(&l.networks[&"lan".parse().unwrap()]));
    assert_eq!(objects(&hv1), ["network mh-lan".to_string(), "domain mh-g1".into(), format!("tunnel {vx}")]);
    assert_eq!(
        objects(&hv2),
        ["network mh-lan".to_string(), "network mh-wan".into(), "domain mh-g2".into(), format!("tunnel {vx}")]
    );
    // h1 serves lan (its address, DHCP and g2's reservation); on h2 it is a bridge alone.
    let o1 = hv1.observe().unwrap();
    let o2 = hv2.observe().unwrap();
    assert!(o1.networks["mh-lan"].ip.is_some(), "h1 serves lan");
    assert!(o2.networks["mh-lan"].ip.is_none(), "lan on h2 has no address");
    let t1 = Host::from(&hv1).machine.unwrap().tunnels().unwrap();
    let t2 = Host::from(&hv2).machine.unwrap().tunnels().unwrap();
    assert_eq!(t1[0].peers, ["10.77.0.12".parse().unwrap()].into());
    assert_eq!(t2[0].peers, ["10.77.0.11".parse().unwrap()].into());
    assert_eq!((t1[0].mtu, t1[0].master.as_deref()), (1450, o1.networks["mh-lan"].bridge_now()));
    assert!(plan_is_empty(&l, &s), "the plan after apply is not empty");

    // A tunnel deleted by hand on h2 is made again, and only that.
    Host::from(&hv2).machine.unwrap().delete_tunnel(&vx).unwrap();
    let again = s.plan(&l, &[], &Silent::default()).unwrap().plan;
    let changed: Vec<(String, String)> =
        again.all_changes().iter().map(|(h, c)| (h.unwrap().to_string(), c.address.to_string())).collect();
    assert_eq!(changed, [("h2".to_string(), "tunnel.lan".to_string())]);
    apply(&l, &s).unwrap();
    assert!(plan_is_empty(&l, &s));

    destroy(&l, &s).unwrap();
    assert_eq!(objects(&hv1), Vec::<String>::new());
    assert_eq!(objects(&hv2), Vec::<String>::new());
}

#[test]
fn a_target_on_one_host_leaves_the_other_alone() {
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("target");
    let s = session(&hv1, &hv2);
    let planned = s.plan(&l, &[Address::Vm("g1".parse().unwrap())], &Silent::default()).unwrap().plan;
    assert_eq!(planned.hosts.keys().map(ToString::to_string).collect::<Vec<_>>(), ["h1"]);
}

#[test]
fn every_fault_on_either_host_converges() {
    let l = lab(&lab_text());
    for faulty in ["h1", "h2"] {
        // The length of the sweep: the calls of a clean run on the faulty host.
        let (hv1, hv2) = hosts("sweep");
        let target = if faulty == "h1" { &hv1 } else { &hv2 };
        target.clear_calls();
        target.count_calls();
        apply(&l, &session(&hv1, &hv2)).unwrap();
        let n = target.disarm();
        assert!(n >= 4, "{faulty}: only {n} calls");
        for fault in [Fault::FailCall, Fault::StopAfterCall] {
            let mut failed = 0;
            for k in 1..=n {
                let what = format!("{faulty}: {fault:?} at call {k} of {n}");
                let (hv1, hv2) = hosts("sweep");
                let target = if faulty == "h1" { &hv1 } else { &hv2 };
                target.arm(k, fault);
                failed += usize::from(apply(&l, &session(&hv1, &hv2)).is_err());
                target.disarm();
                // A new process: apply again converges on both hosts.
                let s = session(&hv1, &hv2);
                apply(&l, &s).unwrap_or_else(|e| panic!("{what}: apply again failed: {e}"));
                assert!(plan_is_empty(&l, &s), "{what}: not converged");
                destroy(&l, &s).unwrap_or_else(|e| panic!("{what}: destroy failed: {e}"));
                assert_eq!(objects(&hv1), Vec::<String>::new(), "{what}: left on h1");
                assert_eq!(objects(&hv2), Vec::<String>::new(), "{what}: left on h2");
            }
            eprintln!("{faulty}: {fault:?}: {failed} of {n} faulted runs failed");
            assert!(failed * 10 >= n * 7, "{faulty}: {fault:?}: only {failed} of {n} faulted runs failed");
        }
    }
}

/// Destroy across hosts runs every host's steps at once: a call failing, or the process
/// dying after any call, on either host, and a new destroy still leaves nothing of the lab.
#[test]
fn every_destroy_fault_on_either_host_is_cleaned_up() {
    let l = lab(&lab_text());
    for faulty in ["h1", "h2"] {
        let (hv1, hv2) = hosts("dsweep");
        apply(&l, &session(&hv1, &hv2)).unwrap();
        let target = if faulty == "h1" { &hv1 } else { &hv2 };
        target.clear_calls();
        target.count_calls();
        destroy(&l, &session(&hv1, &hv2)).unwrap();
        let n = target.disarm();
        assert!(n >= 3, "{faulty}: only {n} calls");
        for fault in [Fault::FailCall, Fault::StopAfterCall] {
            let mut failed = 0;
            for k in 1..=n {
                let what = format!("{faulty}: destroy {fault:?} at call {k} of {n}");
                let (hv1, hv2) = hosts("dsweep");
                apply(&l, &session(&hv1, &hv2)).unwrap_or_else(|e| panic!("{what}: apply failed: {e}"));
                let target = if faulty == "h1" { &hv1 } else { &hv2 };
                target.arm(k, fault);
                failed += usize::from(destroy(&l, &session(&hv1, &hv2)).is_err());
                target.disarm();
                let s = session(&hv1, &hv2);
                destroy(&l, &s).unwrap_or_else(|e| panic!("{what}: destroy again failed: {e}"));
                assert_eq!(objects(&hv1), Vec::<String>::new(), "{what}: left on h1");
                assert_eq!(objects(&hv2), Vec::<String>::new(), "{what}: left on h2");
            }
            eprintln!("{faulty}: destroy {fault:?}: {failed} of {n} faulted runs failed");
            assert!(failed * 10 >= n * 7, "{faulty}: destroy {fault:?}: only {failed} of {n} faulted runs failed");
        }
    }
}

/// `topo plan --out` then `topo apply FILE` across hosts: the saved plan (written and read
/// back as JSON) runs exactly its steps on each host, and the lab converges; a saved plan
/// that one host no longer matches is refused as stale before anything is done anywhere.
#[test]
fn a_saved_plan_across_hosts_applies_or_is_refused_when_a_host_changed() {
    use topo::plan::saved::SavedPlan;
    let l = lab(&lab_text());
    let save = |s: &Session<'_>| {
        let planned = s.plan(&l, &[], &Silent::default()).unwrap();
        let saved = planned.saved(&l, "/labs/mh.yaml".into(), s.uri());
        assert_eq!(saved.hosts.keys().map(String::as_str).collect::<Vec<_>>(), ["h1", "h2"]);
        SavedPlan::parse("plan.json", &serde_json::to_string(&saved).unwrap()).unwrap()
    };
    let apply_saved = |s: &Session<'_>, saved: &SavedPlan| {
        let req = ApplyRequest {
            saved: Some(saved),
            targets: &[],
            options: options(4),
            auto_approve: false,
            disconnect_foreign: false,
            verify: None,
        };
        s.apply(&l, &req, &Silent::default()).map(|_| ()).map_err(|e| e.error.to_string())
    };

    let (hv1, hv2) = hosts("saved");
    let s = session(&hv1, &hv2);
    let saved = save(&s);
    apply_saved(&s, &saved).unwrap();
    assert!(plan_is_empty(&l, &s), "the saved plan's steps converge the lab on both hosts");
    assert!(objects(&hv2).contains(&"domain mh-g2".to_string()));

    let (hv1, hv2) = hosts("stale");
    let s = session(&hv1, &hv2);
    let saved = save(&s);
    // h2 changes after the plan was saved (network.wan lives on h2 only).
    let req = ApplyRequest {
        saved: None,
        targets: &[Address::Network("wan".parse().unwrap())],
        options: options(4),
        auto_approve: true,
        disconnect_foreign: false,
        verify: None,
    };
    s.apply(&l, &req, &Silent::default()).map_err(|e| e.error.to_string()).unwrap();
    let err = apply_saved(&s, &saved).unwrap_err();
    // Only h2 changed (h1's observation still matches its part), so h2's part is the stale one.
    assert!(err.contains("the saved plan is stale: the host"), "{err}");
    assert_eq!(objects(&hv1), Vec::<String>::new(), "nothing is done on h1 when h2's part is stale");
}

fn down() -> topo::host::hypervisor::HvError {
    topo::host::hypervisor::HvError {
        op: "connect".into(),
        object: "qemu+ssh://root@h2/system".into(),
        message: "ssh: connect to host h2 port 22: No route to host".into(),
        kind: topo::host::hypervisor::HvErrorKind::Other,
        hint: None,
    }
}

/// A host that cannot be reached: a run that needs it stops before anything is done on any
/// host, naming it; `--target` on the other host goes on; destroy cleans the host that
/// answers and fails saying what is left on the other.
#[test]
fn an_unreachable_host_stops_what_needs_it_only() {
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("down");
    let h1_only = || Session::over_hosts([(h("h1"), Host::from(&hv1))]).with_unreachable(h("h2"), down());
    let err = apply(&l, &h1_only()).unwrap_err();
    assert!(err.contains("host h2 of the lab cannot be reached"), "{err}");
    assert_eq!(objects(&hv1), Vec::<String>::new(), "nothing is made on h1 when h2 is needed and down");

    let req = ApplyRequest {
        saved: None,
        targets: &[Address::Vm("g1".parse().unwrap())],
        options: options(4),
        auto_approve: true,
        disconnect_foreign: false,
        verify: None,
    };
    h1_only().apply(&l, &req, &Silent::default()).map_err(|e| e.error.to_string()).unwrap();
    assert!(objects(&hv1).contains(&"domain mh-g1".to_string()), "--target vm.g1 acts on h1");

    let err = destroy(&l, &h1_only()).unwrap_err();
    assert!(err.contains("left there: h2 (vm.g2, network.lan, network.wan, tunnel.lan)"), "{err}");
    assert_eq!(objects(&hv1), Vec::<String>::new(), "destroy cleans the host that answers");
    drop(hv2);
}

/// The plan's refusal across hosts, as the CLI shows it.
fn refusal(l: &Lab, s: &Session<'_>, targets: &[Address]) -> Option<String> {
    let err = s.plan(l, targets, &Silent::default()).err()?;
    Some(render_diag(err.as_ref()).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]"))
}

/// A host of a stretched network whose machine (reached over ssh) lacks `bridge` (iproute2): refused at plan
/// time at the host's entry, naming the program, what it is for and the package, and not
/// also as a machine topo cannot reach for the tunnel (its tunnels cannot be read there).
/// Nothing is made on either host.
#[test]
fn a_host_without_bridge_is_refused_for_its_tunnel_and_only_so() {
    use topo::host::tools::Tool;
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("tools");
    let hv2 = hv2.reached_over_ssh().with_missing_tools(&[Tool::Bridge]);
    let s = session(&hv1, &hv2);
    let text = refusal(&l, &s, &[]).expect("refused");
    insta::assert_snapshot!("host_without_bridge", text);
    assert_eq!(text.matches("topo::plan::host_tools_missing").count(), 1, "{text}");
    assert!(!text.contains("tunnel_unreachable"), "the better message wins: {text}");
    assert!(text.contains("host `h2`") && text.contains("`bridge`") && text.contains("apt install iproute2"), "{text}");
    assert!(apply(&l, &s).is_err());
    assert_eq!(objects(&hv1), Vec::<String>::new());
    let o2 = hv2.observe().unwrap();
    assert!(o2.networks.is_empty() && o2.domains.is_empty(), "nothing made on h2");
    // Installed: the lab goes up.
    let hv2 = hv2.with_missing_tools(&[]);
    apply(&l, &session(&hv1, &hv2)).unwrap();
}

/// What a host lacks is refused only where the lab needs it: `tc` on a lab without `rate`
/// or netem is not; a host the run does not need (`--target` on the other) is not asked.
#[test]
fn missing_tools_are_refused_only_where_needed() {
    use topo::host::tools::Tool;
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("unneeded");
    let hv2 = hv2.with_missing_tools(&[Tool::Tc]);
    let s = session(&hv1, &hv2);
    assert_eq!(refusal(&l, &s, &[]), None, "no netem, no rate: tc is not needed");

    let (hv1, hv2) = hosts("elsewhere");
    let hv2 = hv2.with_missing_tools(&[Tool::Bridge, Tool::Ip]);
    let s = session(&hv1, &hv2);
    assert!(refusal(&l, &s, &[]).is_some_and(|t| t.contains("host_tools_missing")));
    let on_h1 = [Address::Vm("g1".parse().unwrap())];
    assert_eq!(refusal(&l, &s, &on_h1), None, "h2 is not needed for vm.g1");
}

/// A host reached over ssh needs more there: its reads, its lock (`flock`) and, for the NICs
/// proven by ARP there, `arping`; one problem lists every missing program and each package
/// once. A lab whose NICs there are not verified does not need `arping`.
#[test]
fn a_host_over_ssh_needs_its_reads_lock_and_arping() {
    use topo::host::tools::Tool;
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("ssh");
    let hv2 = hv2.reached_over_ssh().with_missing_tools(&[Tool::Arping, Tool::Flock, Tool::Stat, Tool::Cut]);
    let s = session(&hv1, &hv2);
    let text = refusal(&l, &s, &[]).expect("refused");
    assert_eq!(text.matches("topo::plan::host_tools_missing").count(), 1, "{text}");
    for t in ["`arping`", "`flock`", "`stat`", "`cut`", "apt install iputils-arping util-linux coreutils"] {
        assert!(text.contains(t), "{t}: {text}");
    }
    let unverified = lab(&lab_text()
        .replace("{network: wan}", "{network: wan, verify: none}")
        .replace("{network: lan, ip: 10.10.0.20}", "{network: lan, ip: 10.10.0.20, verify: none}"));
    let text = refusal(&unverified, &s, &[]).expect("refused");
    assert!(!text.contains("arping") && text.contains("`flock`"), "{text}");
}

/// `ndisc6` (the NDP proof over ssh) is needed on a host only when its share of the lab has a
/// NIC proven there on a network with `subnet6`: `wan` (on h2 only) with one needs it on h2,
/// named with its package; the same lab without `subnet6`, or with that NIC not verified,
/// does not.
#[test]
fn a_host_over_ssh_needs_ndisc6_only_for_ipv6_proof() {
    use topo::host::tools::Tool;
    let v6 = lab_text().replace(
        "wan: {mode: nat, subnet: 10.20.0.0/24, host: h2}",
        "wan: {mode: nat, subnet: 10.20.0.0/24, subnet6: 'fd00:20::/64', host: h2}",
    );
    let (hv1, hv2) = hosts("ndisc6");
    let hv2 = hv2.reached_over_ssh().with_missing_tools(&[Tool::Ndisc6]);
    let s = session(&hv1, &hv2);
    let text = refusal(&lab(&v6), &s, &[]).expect("refused");
    assert_eq!(text.matches("topo::plan::host_tools_missing").count(), 1, "{text}");
    for t in ["host `h2`", "`ndisc6` (the NDP proof", "apt install ndisc6"] {
        assert!(text.contains(t), "{t}: {text}");
    }
    assert!(!text.contains("arping"), "{text}");
    assert_eq!(refusal(&lab(&lab_text()), &s, &[]), None, "no subnet6: no NDP proof, no ndisc6");
    let unverified = lab(&v6.replace("{network: wan}", "{network: wan, verify: none}"));
    assert_eq!(refusal(&unverified, &s, &[]), None, "the NIC on wan is not verified");
}

/// A host whose underlay device carries less than a stretched network's frames with VXLAN
/// around them (a cloud VM's 1400-byte device under the default 1450): refused at plan at the
/// network, naming the host, the device and the MTU that fits (RFC 7348 section 4.3: VXLAN
/// packets must not be fragmented). A jumbo underlay on every host carries `mtu: 8950`; one
/// host at 1500 refuses it.
#[test]
fn a_network_larger_than_a_hosts_underlay_is_refused() {
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("umtu");
    let hv2 = hv2.with_underlay_mtu(1400);
    let text = refusal(&l, &session(&hv1, &hv2), &[]).expect("refused");
    insta::assert_snapshot!("underlay_mtu", text);
    assert_eq!(objects(&hv1), Vec::<String>::new());

    let jumbo = lab(&lab_text().replace(
        "lan: {mode: isolated, subnet: 10.10.0.0/24}",
        "lan: {mode: isolated, subnet: 10.10.0.0/24, mtu: 8950}",
    ));
    let (hv1, hv2) = hosts("jumbo");
    let (hv1, hv2) = (hv1.with_underlay_mtu(9000), hv2.with_underlay_mtu(9000));
    assert_eq!(refusal(&jumbo, &session(&hv1, &hv2), &[]), None, "a 9000-byte underlay carries mtu 8950");
    let (hv1, hv2) = hosts("jumbo1500");
    let hv1 = hv1.with_underlay_mtu(9000);
    let text = refusal(&jumbo, &session(&hv1, &hv2), &[]).expect("refused");
    assert!(text.contains("topo::plan::underlay_mtu") && text.contains("host `h2`"), "{text}");
    assert!(!text.contains("host `h1`"), "{text}");
}

/// `--target tunnel.NAME` once the lab has converged: the tunnel is the lab's, so it is a
/// known target (with nothing to do), as `network.NAME` and `vm.NAME` are.
#[test]
fn a_converged_tunnel_is_a_known_target() {
    let l = lab(&lab_text());
    let (hv1, hv2) = hosts("tunnel-target");
    let s = session(&hv1, &hv2);
    apply(&l, &s).unwrap();
    let planned = s.plan(&l, &[Address::Tunnel("lan".parse().unwrap())], &Silent::default());
    let plan = planned.map_err(|e| e.to_string()).expect("a known target").plan;
    assert!(plan.hosts.values().all(|p| p.changes.iter().all(|c| c.action == topo::plan::Action::NoOp)));
}
