//! VM groups (`count:`) planned and applied on the strict memory double (tier 2): a group of
//! 6 scaled to 8 and back to 5 plans and changes only the difference (the members added or
//! removed, and their DHCP host entries on the network), the members that stay are neither
//! redefined nor restarted, and `--target vm.GROUP` is the group's members. The plans are
//! pinned as insta snapshots, text and JSON (docs/lab-file.md, "VM groups").

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::lab::address::Address;
use topo::lab::model::Lab;
use topo::plan::render::{Style, render};
use topo::plan::target::{Direction, targeted};
use topo::plan::{Action, Plan};

/// The lab: a plain VM and the group `client` of `count` on one network.
fn group_lab(count: u32) -> Lab {
    lab(&format!(
        "apiVersion: topo/v1\nname: grp\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 10.60.0.0/24\n\
         vms:\n  server:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{kernel: boot/vmlinuz}}\n    nics:\n      - network: lan\n        ip: 10.60.0.10\n\
         \x20 client:\n    count: {count}\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{kernel: boot/vmlinuz}}\n    nics:\n      - network: lan\n"
    ))
}

fn plain(p: &Plan) -> String {
    render(p, "lab.yaml", Style::Plain).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]")
}

fn json(p: &Plan) -> serde_json::Value {
    let text = serde_json::to_string(&topo::plan::json::to_json(p)).unwrap();
    serde_json::from_str(&text.replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]")).unwrap()
}

/// Each change's address and action.
fn actions(p: &Plan) -> BTreeMap<String, Action> {
    p.changes.iter().map(|c| (c.address.to_string(), c.action)).collect()
}

/// Each domain's UUID, by libvirt name.
fn uuids(hv: &MemoryHypervisor) -> BTreeMap<String, Option<String>> {
    hv.observe().unwrap().domains.values().map(|d| (d.name.clone(), d.uuid.clone())).collect()
}

/// The libvirt calls of an apply (`OP NAME`) on the object `name`.
fn calls_on(calls: &[String], name: &str) -> Vec<String> {
    calls.iter().filter(|c| c.split(' ').nth(1) == Some(name)).cloned().collect()
}

fn run(p: &Plan, hv: &MemoryHypervisor) {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let report = topo::apply::apply(p, hv, &options(4), &cancel, &topo::apply::progress::Silent);
    assert!(!report.failed(), "{report:#?}");
}

#[test]
fn a_group_scaled_from_6_to_8_to_5_changes_only_the_difference() {
    let hv = host();
    let six = group_lab(6);
    apply_ok(&six, &hv);
    let before = uuids(&hv);
    assert_eq!(before.len(), 7, "server and six members: {before:?}");

    // 6 -> 8: two members created; the network gains their two host entries, in place.
    let eight = group_lab(8);
    let (p, _) = plan_on(&eight, &hv);
    let want: BTreeMap<String, Action> =
        [("network.lan", Action::Update), ("vm.client-7", Action::Create), ("vm.client-8", Action::Create)]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b))
            .collect();
    assert_eq!(actions(&p), want);
    insta::assert_snapshot!("scale_6_to_8", plain(&p));
    insta::assert_json_snapshot!("scale_6_to_8_json", json(&p));
    hv.clear_calls();
    run(&p, &hv);
    converged(&eight, &hv).expect("converged at 8");
    let calls = hv.calls();
    assert!(!calls_on(&calls, "grp-client-7").is_empty(), "the new members are made: {calls:#?}");
    for name in (1..=6).map(|i| format!("grp-client-{i}")).chain(["grp-server".to_string()]) {
        assert_eq!(calls_on(&calls, &name), Vec::<String>::new(), "{name} is not touched");
    }
    let after = uuids(&hv);
    for (name, uuid) in &before {
        assert_eq!(after.get(name), Some(uuid), "{name} keeps its domain");
    }

    // 8 -> 5: the three highest members deleted, their host entries with them.
    let five = group_lab(5);
    let (p, _) = plan_on(&five, &hv);
    let want: BTreeMap<String, Action> = [
        ("network.lan", Action::Update),
        ("vm.client-6", Action::Delete),
        ("vm.client-7", Action::Delete),
        ("vm.client-8", Action::Delete),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    assert_eq!(actions(&p), want);
    insta::assert_snapshot!("scale_8_to_5", plain(&p));
    insta::assert_json_snapshot!("scale_8_to_5_json", json(&p));
    run(&p, &hv);
    converged(&five, &hv).expect("converged at 5");
    let left = uuids(&hv);
    let names: BTreeSet<&str> = left.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> =
        ["grp-client-1", "grp-client-2", "grp-client-3", "grp-client-4", "grp-client-5", "grp-server"].into();
    assert_eq!(names, want);
    for (name, uuid) in &left {
        assert_eq!(before.get(name), Some(uuid), "{name} keeps its domain");
    }
    let (p, _) = plan_on(&five, &hv);
    assert!(p.is_empty(), "{}", plain(&p));

    // To 0: the group is gone, the server stays.
    let none = group_lab(0);
    let (p, _) = plan_on(&none, &hv);
    let deleted: BTreeSet<String> =
        p.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.address.to_string()).collect();
    assert_eq!(deleted, (1..=5).map(|i| format!("vm.client-{i}")).collect());
    run(&p, &hv);
    converged(&none, &hv).expect("converged at 0");
}

/// `--target vm.client` is the group's members (what `topo plan/apply/destroy` pass on after
/// `group::expand_targets`); a member is targeted by its own name.
#[test]
fn a_group_target_is_its_members() {
    let hv = host();
    let l = group_lab(3);
    let addr = |s: &str| s.parse::<Address>().unwrap();
    let targets = topo::lab::group::expand_targets(l.groups.values(), &[addr("vm.client")]).unwrap();
    assert_eq!(targets, [addr("vm.client-1"), addr("vm.client-2"), addr("vm.client-3")]);
    let (full, observed) = plan_on(&l, &hv);
    let p = targeted(&l, &observed, full, &targets, Direction::Apply).expect("known targets");
    let planned: BTreeSet<String> = p.changes.iter().map(|c| c.address.to_string()).collect();
    let want: BTreeSet<String> =
        ["network.lan", "vm.client-1", "vm.client-2", "vm.client-3"].iter().map(|s| s.to_string()).collect();
    assert_eq!(planned, want, "the members and their network, not the server");
    run(&p, &hv);
    converged_for(&l, &hv, &targets).expect("the group converged");
    let one = topo::lab::group::expand_targets(l.groups.values(), &[addr("vm.client-2")]).unwrap();
    assert_eq!(one, [addr("vm.client-2")]);
    let empty = group_lab(0);
    let e = topo::lab::group::expand_targets(empty.groups.values(), &[addr("vm.client")]).unwrap_err();
    assert_eq!(e.to_string(), "--target vm.client: group `client` has no members (count: 0)");
}
