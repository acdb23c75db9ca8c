//! Wires (`links:`, docs/wires.md) planned and applied on the strict memory double (tier 2):
//! each end an `<interface type='ethernet'>` with the derived tap, the two taps redirected
//! to each other on the machine; a wire added to running VMs is hot-plugged (no restart), a
//! tap made anew by a restart outside topo is joined again (drift), a wire removed from the
//! file unplugs its NICs; `--target wire.NAME`; the plan of a lab with a wire pinned as
//! insta snapshots, text and JSON.

mod common;

use std::collections::BTreeMap;

use common::*;
use topo::host::hypervisor::Hypervisor;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::lab::address::Address;
use topo::lab::model::{Lab, MacAddr};
use topo::lab::wire::{Wire, WireName};
use topo::plan::render::{Style, render};
use topo::plan::target::{Direction, targeted};
use topo::plan::{Action, Op, Plan, Reason};

/// Three VMs without cloud-init (kernel boot, no disk): r1 and r2 on `lan`, r3 on nothing.
const LAB: &str = "\
apiVersion: topo/v1
name: wl
networks:
  lan:
    mode: isolated
    subnet: 10.50.0.0/24
vms:
  r1:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.50.0.10}]
  r2:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.50.0.20}]
  r3:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
";

/// [`LAB`] with the wire r1 -- r2.
fn wired() -> String {
    format!("{LAB}links:\n  - [r1, r2]\n")
}

fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.changes.iter().map(|c| (c.address.to_string(), c.action)).collect()
}

fn pairs(v: &[(&str, Action)]) -> Vec<(String, Action)> {
    v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

fn pos(calls: &[String], call: &str) -> usize {
    calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("no call {call:?} in {calls:#?}"))
}

fn assert_replans_empty(l: &Lab, hv: &MemoryHypervisor) {
    let (p, _) = plan_on(l, hv);
    assert!(p.is_empty(), "plan after apply is not empty: {:#?}", p.changes);
}

fn the_wire(l: &Lab) -> &Wire {
    &l.wires[&WireName::parse("r1--r2").unwrap()]
}

/// The `type='ethernet'` interfaces of domain `domain`: (position, MAC, tap).
fn ethernet_nics(hv: &MemoryHypervisor, domain: &str) -> Vec<(usize, MacAddr, String)> {
    let o = hv.observe().unwrap();
    o.domains[domain]
        .interfaces
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, n.mac?, n.ethernet.clone()?)))
        .collect()
}

/// Where each wire tap of a running domain sends its frames, as observed for a plan.
fn redirects(l: &Lab, hv: &MemoryHypervisor) -> BTreeMap<String, Option<String>> {
    plan_on(l, hv).1.wire_redirects
}

/// The wire is on the host as the file says: each end an ethernet NIC of its VM with its
/// MAC and tap (at its NIC index, no network), each tap redirected to the other.
fn assert_joined(l: &Lab, hv: &MemoryHypervisor) {
    let w = the_wire(l);
    for e in &w.ends {
        let domain = format!("wl-{}", e.vm);
        assert_eq!(ethernet_nics(hv, &domain), vec![(e.index, e.mac, e.tap.clone())], "{domain}");
        let o = hv.observe().unwrap();
        assert_eq!(o.domains[&domain].interfaces[e.index].network, None, "{domain}: a wire end is on no network");
    }
    let (a, b) = (w.ends[0].tap.clone(), w.ends[1].tap.clone());
    let want: BTreeMap<String, Option<String>> = [(a.clone(), Some(b.clone())), (b, Some(a))].into_iter().collect();
    assert_eq!(redirects(l, hv), want);
}

/// Ops that restart, replace or start a VM.
fn restarts(p: &Plan) -> Vec<(String, String)> {
    p.changes
        .iter()
        .flat_map(|c| c.ops.iter().map(move |o| (c.address.to_string(), o)))
        .filter(|(_, o)| matches!(o, Op::StartDomain | Op::StopDomain { .. } | Op::UndefineDomain | Op::ResumeDomain))
        .map(|(a, o)| (a, format!("{o:?}")))
        .collect()
}

#[test]
fn a_lab_with_a_wire_applies_joins_it_and_replans_empty() {
    let hv = host();
    let l = lab(&wired());
    let p = apply_ok(&l, &hv);
    assert_eq!(
        actions(&p),
        pairs(&[
            ("network.lan", Action::Create),
            ("vm.r1", Action::Create),
            ("vm.r2", Action::Create),
            ("vm.r3", Action::Create),
            ("wire.r1--r2", Action::Create)
        ])
    );
    let w = p.changes.last().unwrap();
    assert_eq!(w.reasons, [Reason::NotOnHost]);
    let wire = the_wire(&l);
    let (a, b) = (&wire.ends[0].tap, &wire.ends[1].tap);
    assert_eq!(w.ops, [Op::JoinWire { a: a.clone(), b: b.clone() }]);
    assert_replans_empty(&l, &hv);
    assert_joined(&l, &hv);
    assert_eq!(ethernet_nics(&hv, "wl-r3"), vec![], "r3 has no wire");
    // Joined once both VMs run (their taps exist).
    let calls = hv.calls();
    let join = pos(&calls, &format!("join_taps {a}"));
    assert!(pos(&calls, "start_domain wl-r1") < join && pos(&calls, "start_domain wl-r2") < join, "{calls:#?}");
    // The ends are verify targets on their taps, in the wire's /31, unproven (no cloud-init).
    let (_, o) = plan_on(&l, &hv);
    let ends: Vec<_> = topo::verify::target::targets(&l, &o, topo::verify::target::HostAccess::Local)
        .into_iter()
        .filter(|t| t.wire.is_some())
        .map(|t| (t.vm.to_string(), t.nic.clone(), t.bridge.clone(), t.reservation, t.mac, t.unproven))
        .collect();
    let want: Vec<_> = wire
        .ends
        .iter()
        .map(|e| (e.vm.to_string(), format!("eth{}", e.index), Some(e.tap.clone()), Some(e.ip), e.mac, true))
        .collect();
    assert_eq!(ends, want);
}

/// A VM with cloud-init (a disk) is configured by topo: its end is proven, not unproven.
#[test]
fn a_cloud_init_end_is_to_be_proven() {
    let text = edit(
        &wired(),
        "  r2:\n    hypervisor: qemu\n",
        "  r2:\n    hypervisor: qemu\n    disk: {image: images/base.qcow2}\n",
    );
    let l = lab(&text);
    let hv = host();
    apply_ok(&l, &hv);
    assert_joined(&l, &hv);
    let (_, o) = plan_on(&l, &hv);
    let unproven: Vec<(String, bool)> = topo::verify::target::targets(&l, &o, topo::verify::target::HostAccess::Local)
        .into_iter()
        .filter(|t| t.wire.is_some())
        .map(|t| (t.vm.to_string(), t.unproven))
        .collect();
    assert_eq!(unproven, [("r1".to_string(), true), ("r2".to_string(), false)]);
}

#[test]
fn a_wire_added_to_running_vms_is_hot_plugged_without_a_restart() {
    let hv = host();
    apply_ok(&lab(LAB), &hv);
    let before = hv.observe().unwrap();
    let l = lab(&wired());
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(
        actions(&p),
        pairs(&[("vm.r1", Action::Update), ("vm.r2", Action::Update), ("wire.r1--r2", Action::Create)])
    );
    assert_eq!(restarts(&p), vec![], "nothing restarted");
    let w = the_wire(&l);
    for e in &w.ends {
        let c = p.changes.iter().find(|c| c.address == Address::Vm(e.vm.clone())).unwrap();
        let plugs: Vec<MacAddr> = c
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::AttachNic { mac, xml } => {
                    assert!(xml.contains("ethernet") && xml.contains(&e.tap), "{xml}");
                    Some(*mac)
                }
                Op::DetachNic { .. } => panic!("{}: nothing to unplug: {:?}", e.vm, c.ops),
                _ => None,
            })
            .collect();
        assert_eq!(plugs, [e.mac], "{}: {:?}", e.vm, c.ops);
    }
    hv.clear_calls();
    apply_ok(&l, &hv);
    let calls = hv.calls();
    assert!(
        !calls.iter().any(|c| ["start_domain", "destroy_domain", "shutdown_domain", "undefine_domain"]
            .contains(&c.split(' ').next().unwrap())
            && c.contains("wl-r")),
        "{calls:#?}"
    );
    // The same domains (no replace), still running.
    let after = hv.observe().unwrap();
    for d in ["wl-r1", "wl-r2"] {
        assert_eq!(after.domains[d].uuid, before.domains[d].uuid, "{d}");
    }
    assert_replans_empty(&l, &hv);
    assert_joined(&l, &hv);
}

/// `virsh destroy` + `virsh start` of one end's VM: its tap is new (no redirect), and the
/// peer's redirect points at the tap that is gone (`*`). The plan joins the wire again,
/// drift, and nothing else.
#[test]
fn a_vm_restarted_outside_topo_is_joined_again_as_drift() {
    let hv = host();
    let l = lab(&wired());
    apply_ok(&l, &hv);
    let w = the_wire(&l);
    let (a, b) = (w.ends[0].tap.clone(), w.ends[1].tap.clone());
    hv.destroy_domain("wl-r1").unwrap();
    hv.start_domain("wl-r1").unwrap();
    let seen = redirects(&l, &hv);
    assert_eq!(seen[&a], None, "r1's new tap has no redirect");
    assert_eq!(seen[&b].as_deref(), Some("*"), "r2's points at the gone tap");
    // Verify says the wire is cut at both ends, before anything else (even unproven ends).
    let (_, o) = plan_on(&l, &hv);
    let cut: Vec<_> = topo::verify::target::targets(&l, &o, topo::verify::target::HostAccess::Local)
        .into_iter()
        .filter(|t| t.wire.is_some())
        .map(|t| (t.vm.to_string(), t.cut))
        .collect();
    assert_eq!(
        cut,
        [
            ("r1".to_string(), Some(("nothing".to_string(), b.clone()))),
            ("r2".to_string(), Some(("*".to_string(), a.clone())))
        ]
    );
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("wire.r1--r2", Action::Update)]));
    let c = &p.changes[0];
    assert_eq!(c.reasons, [Reason::Drift]);
    assert_eq!(c.fields.len(), 1, "{:?}", c.fields);
    assert_eq!(c.fields[0].before.as_deref(), Some(format!("{a} -> none, {b} -> *").as_str()));
    assert_eq!(c.ops, [Op::JoinWire { a: a.clone(), b: b.clone() }]);
    hv.clear_calls();
    apply_ok(&l, &hv);
    assert_eq!(hv.calls().iter().filter(|c| c.starts_with("join_taps")).count(), 1);
    assert_replans_empty(&l, &hv);
    assert_joined(&l, &hv);
    let (_, o) = plan_on(&l, &hv);
    assert!(
        topo::verify::target::targets(&l, &o, topo::verify::target::HostAccess::Local).iter().all(|t| t.cut.is_none()),
        "joined again: nothing cut"
    );

    // Stopped outside topo and left stopped: the plan starts it, and joins its new tap.
    hv.destroy_domain("wl-r2").unwrap();
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.r2", Action::Update), ("wire.r1--r2", Action::Create)]));
    apply_ok(&l, &hv);
    assert_replans_empty(&l, &hv);
    assert_joined(&l, &hv);
}

/// A running VM whose end the plan plugs in again (its tap made anew) has the wire joined
/// again in the same apply, even when it was joined before (reason: wire-end-renewed).
#[test]
fn a_restart_topo_makes_rejoins_the_wire() {
    let hv = host();
    let l = lab(&wired());
    apply_ok(&l, &hv);
    // r1's memory: a restart.
    let text = edit(
        &wired(),
        "  r1:\n    hypervisor: qemu\n    memory: 256MiB\n",
        "  r1:\n    hypervisor: qemu\n    memory: 512MiB\n",
    );
    let l2 = lab(&text);
    let (p, _) = plan_on(&l2, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.r1", Action::Update), ("wire.r1--r2", Action::Update)]));
    let c = p.changes.iter().find(|c| c.address == "wire.r1--r2").unwrap();
    assert_eq!(c.reasons, [Reason::WireEndRenewed]);
    apply_ok(&l2, &hv);
    assert_replans_empty(&l2, &hv);
    assert_joined(&l2, &hv);
}

#[test]
fn a_wire_removed_from_the_file_unplugs_both_ends() {
    let hv = host();
    let l = lab(&wired());
    apply_ok(&l, &hv);
    let w = the_wire(&l).clone();
    let plain = lab(LAB);
    let (p, _) = plan_on(&plain, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.r1", Action::Update), ("vm.r2", Action::Update)]));
    assert_eq!(restarts(&p), vec![]);
    for e in &w.ends {
        let c = p.changes.iter().find(|c| c.address == Address::Vm(e.vm.clone())).unwrap();
        let unplugs: Vec<MacAddr> = c
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::DetachNic { mac, xml, .. } => {
                    assert!(xml.contains(&e.tap), "{xml}");
                    Some(*mac)
                }
                Op::AttachNic { .. } => panic!("{}: nothing to plug: {:?}", e.vm, c.ops),
                _ => None,
            })
            .collect();
        assert_eq!(unplugs, [e.mac], "{}: {:?}", e.vm, c.ops);
    }
    apply_ok(&plain, &hv);
    assert_replans_empty(&plain, &hv);
    for d in ["wl-r1", "wl-r2"] {
        assert_eq!(ethernet_nics(&hv, d), vec![], "{d}");
        assert_eq!(hv.observe().unwrap().domains[d].interfaces.len(), 1, "{d}: its lan NIC stays");
    }
    let m = topo::host::Host::from(&hv).machine.unwrap();
    let gone = m.wire_redirects(&[w.ends[0].tap.clone(), w.ends[1].tap.clone()]).unwrap();
    assert!(gone.values().all(Option::is_none), "no filter left: {gone:?}");
}

/// An ethernet NIC with a wire tap's name that the lab does not have (the end of a wire
/// since removed from the file, under a name that is not derived any more) is unplugged; one
/// added by hand with another tap name is not (the define that follows leaves it out of the
/// config, as any NIC the file does not have).
#[test]
fn a_stale_wire_end_is_unplugged_and_a_hand_made_ethernet_nic_is_not() {
    let hv = host();
    let l = lab(&wired());
    apply_ok(&l, &hv);
    let stale = "<interface type='ethernet'><mac address='52:54:00:aa:00:01'/><target dev='tw0123456789'/><model type='virtio'/></interface>";
    let mine = "<interface type='ethernet'><mac address='52:54:00:aa:00:02'/><target dev='mytap0'/><model type='virtio'/></interface>";
    hv.attach_device("wl-r3", stale).unwrap();
    hv.attach_device("wl-r3", mine).unwrap();
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.r3", Action::Update)]));
    assert_eq!(restarts(&p), vec![]);
    let detached: Vec<String> = p.changes[0]
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::DetachNic { mac, .. } => Some(mac.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(detached, ["52:54:00:aa:00:01"], "{:?}", p.changes[0].ops);
    hv.clear_calls();
    apply_ok(&l, &hv);
    assert_eq!(hv.calls().iter().filter(|c| c.starts_with("detach_device")).count(), 1);
    assert_replans_empty(&l, &hv);
    assert_joined(&l, &hv);
}

fn plan_targets(l: &Lab, hv: &MemoryHypervisor, targets: &[&str]) -> Plan {
    let (full, observed) = plan_on(l, hv);
    let targets: Vec<Address> = targets.iter().map(|t| t.parse().unwrap()).collect();
    targeted(l, &observed, full, &targets, Direction::Apply).expect("known targets")
}

fn run(p: &Plan, hv: &MemoryHypervisor) {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let report = topo::apply::apply(p, hv, &options(4), &cancel, &topo::apply::progress::Silent);
    assert!(!report.failed(), "{report:#?}");
}

/// `--target wire.r1--r2`: the wire and what it depends on (its VMs, their network), not
/// the rest of the lab's changes.
#[test]
fn target_a_wire() {
    // From an empty host: the wire, both VMs and their network; not r3.
    let hv = host();
    let l = lab(&wired());
    let p = plan_targets(&l, &hv, &["wire.r1--r2"]);
    assert_eq!(
        actions(&p),
        pairs(&[
            ("network.lan", Action::Create),
            ("vm.r1", Action::Create),
            ("vm.r2", Action::Create),
            ("wire.r1--r2", Action::Create)
        ])
    );
    run(&p, &hv);
    converged_for(&l, &hv, &p.targets).expect("the target converged");
    assert!(converged(&l, &hv).is_err(), "r3 is still to create");
    assert_joined(&l, &hv);

    // Added to a running lab with another change pending (r3's memory): only the wire's.
    let hv = host();
    apply_ok(&lab(LAB), &hv);
    let text = edit(
        &wired(),
        "  r3:\n    hypervisor: qemu\n    memory: 256MiB\n",
        "  r3:\n    hypervisor: qemu\n    memory: 512MiB\n",
    );
    let l = lab(&text);
    let p = plan_targets(&l, &hv, &["wire.r1--r2"]);
    assert_eq!(
        actions(&p),
        pairs(&[("vm.r1", Action::Update), ("vm.r2", Action::Update), ("wire.r1--r2", Action::Create)])
    );
    let shown = render(&p, "lab.yaml", Style::Plain);
    assert!(shown.starts_with("Partial plan (--target wire.r1--r2)"), "{shown}");
    run(&p, &hv);
    converged_for(&l, &hv, &p.targets).expect("the target converged");
    assert!(plan_targets(&l, &hv, &["wire.r1--r2"]).is_empty());
    let (rest, _) = plan_on(&l, &hv);
    assert_eq!(actions(&rest), pairs(&[("vm.r3", Action::Update)]));
    // A wire the lab does not have is an unknown target.
    let (full, observed) = plan_on(&l, &hv);
    let e = targeted(&l, &observed, full, &["wire.r2--r1".parse().unwrap()], Direction::Apply).unwrap_err();
    assert!(render_diag(&e).contains("wire.r1--r2"), "the known wire is suggested: {}", render_diag(&e));
}

fn plain(p: &Plan) -> String {
    render(p, "lab.yaml", Style::Plain).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]")
}

fn json(p: &Plan) -> serde_json::Value {
    let text = serde_json::to_string(&topo::plan::json::to_json(p)).unwrap();
    serde_json::from_str(&text.replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]")).unwrap()
}

/// Creating a lab of two VMs and a wire, then the drift of one restarted outside topo.
#[test]
fn plan_snapshots() {
    let text = "\
apiVersion: topo/v1
name: wl
networks:
  lan:
    mode: isolated
    subnet: 10.50.0.0/24
vms:
  r1:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.50.0.10}]
  r2:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
links:
  - [r1, r2]
";
    let hv = host();
    let l = lab(text);
    let (p, _) = plan_on(&l, &hv);
    insta::assert_snapshot!("create_with_a_wire", plain(&p));
    insta::assert_json_snapshot!("create_with_a_wire_json", json(&p));
    apply_ok(&l, &hv);
    hv.destroy_domain("wl-r2").unwrap();
    hv.start_domain("wl-r2").unwrap();
    let (p, _) = plan_on(&l, &hv);
    insta::assert_snapshot!("wire_drift", plain(&p));
}
