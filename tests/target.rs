//! `--target ADDRESS` with Terraform's semantics, on the memory double (tier 2): apply covers
//! the targets and what they depend on, destroy the targets and what depends on them; the
//! plan says it is partial; a targeted apply converges for its targets and leaves the rest.

mod common;

use std::collections::BTreeSet;

use common::*;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::lab::address::Address;
use topo::plan::render::{Style, render};
use topo::plan::target::{Direction, targeted};

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn addresses(p: &topo::plan::Plan) -> BTreeSet<String> {
    p.changes.iter().map(|c| c.address.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn plan_targets(l: &topo::lab::model::Lab, hv: &MemoryHypervisor, targets: &[&str]) -> topo::plan::Plan {
    let (full, observed) = plan_on(l, hv);
    let targets: Vec<Address> = targets.iter().map(|t| addr(t)).collect();
    targeted(l, &observed, full, &targets, Direction::Apply).expect("known targets")
}

fn run(p: &topo::plan::Plan, hv: &MemoryHypervisor) {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let report = topo::apply::apply(p, hv, &options(4), &cancel, &topo::apply::progress::Silent);
    assert!(!report.failed(), "{report:#?}");
}

#[test]
fn apply_covers_a_target_and_what_it_depends_on() {
    let hv = host();
    let l = lab(BASE);
    // vm.db sits on network.back only.
    let p = plan_targets(&l, &hv, &["vm.db"]);
    assert_eq!(addresses(&p), set(&["network.back", "vm.db"]));
    assert_eq!(p.targets, vec![addr("vm.db")]);
    let shown = render(&p, "lab.yaml", Style::Plain).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]");
    assert!(
        shown.starts_with(
            "Partial plan (--target vm.db): the rest of lab demo is left as it is, whatever lab.yaml says.\n"
        ),
        "{shown}"
    );
    assert_eq!(topo::plan::json::to_json(&p)["targets"], serde_json::json!(["vm.db"]));
    run(&p, &hv);
    // Converged for the target; the rest of the lab is still to do.
    converged_for(&l, &hv, &p.targets).expect("the target converged");
    assert!(converged(&l, &hv).is_err(), "the whole lab did not");
    let o = hv.observe().unwrap();
    assert!(o.domains.contains_key("demo-db") && !o.domains.contains_key("demo-web"));
    assert!(!o.networks.contains_key("demo-lan"));
    // Again: nothing for the target.
    let again = plan_targets(&l, &hv, &["vm.db"]);
    assert!(again.is_empty());
    assert!(render(&again, "lab.yaml", Style::Plain).starts_with("No changes for the targets.\nPartial plan"));
    // The rest follows with a whole apply.
    let rest = apply_ok(&l, &hv);
    assert_eq!(addresses(&rest), set(&["network.lan", "vm.router", "vm.web"]));
}

#[test]
fn several_targets_and_a_network_target() {
    let hv = host();
    let l = lab(BASE);
    let p = plan_targets(&l, &hv, &["network.lan", "vm.db", "vm.db"]);
    assert_eq!(addresses(&p), set(&["network.back", "network.lan", "vm.db"]));
    assert_eq!(p.targets, vec![addr("network.lan"), addr("vm.db")], "sorted, once each");
    // `after` only names kept changes.
    for c in &p.changes {
        for a in &c.after {
            assert!(addresses(&p).contains(&a.to_string()), "{} after {a}", c.address);
        }
    }
}

#[test]
fn an_unknown_target_is_refused_with_a_suggestion() {
    let hv = host();
    let l = lab(BASE);
    let (full, observed) = plan_on(&l, &hv);
    let err = targeted(&l, &observed, full, &[addr("vm.dbb"), addr("network.nope")], Direction::Apply).unwrap_err();
    assert_eq!(err.address, "vm.dbb");
    assert!(err.help.contains("did you mean `vm.db`?"), "{}", err.help);
    assert!(err.help.contains("also unknown: network.nope"), "{}", err.help);
}

#[test]
fn destroy_covers_a_target_and_what_depends_on_it() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    let observed = hv.observe().unwrap();
    let full = topo::plan::plan_destroy(&l, &observed);
    // web and db have a NIC on back; router does not.
    let p = targeted(&l, &observed, full, &[addr("network.back")], Direction::Destroy).unwrap();
    assert_eq!(addresses(&p), set(&["network.back", "vm.db", "vm.web"]));
    run(&p, &hv);
    let o = hv.observe().unwrap();
    assert!(o.domains.contains_key("demo-router") && o.networks.contains_key("demo-lan"));
    assert!(!o.domains.contains_key("demo-web") && !o.networks.contains_key("demo-back"));

    // A VM target takes only the VM.
    let observed = hv.observe().unwrap();
    let full = topo::plan::plan_destroy(&l, &observed);
    let p = targeted(&l, &observed, full, &[addr("vm.router")], Direction::Destroy).unwrap();
    assert_eq!(addresses(&p), set(&["vm.router"]));
}

#[test]
fn a_targeted_plan_survives_saving() {
    let hv = host();
    let l = lab(BASE);
    let p = plan_targets(&l, &hv, &["vm.web"]);
    let text = serde_json::to_string(&p).unwrap();
    let back: topo::plan::Plan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.targets, vec![addr("vm.web")]);
}

/// Through the binary on libvirt's test driver (fresh state per process).
#[test]
fn target_flags_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let boot = std::fs::canonicalize("tests/fixtures/boot").unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(
        &lab,
        format!(
            "apiVersion: topo/v1\nname: tgt\nnetworks:\n  a:\n    mode: isolated\n    subnet: 10.125.0.0/24\n    \
             dhcp_ping: true\n  b:\n    mode: isolated\n    subnet: 10.126.0.0/24\n    dhcp_ping: true\nvms:\n  \
             one:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{kernel: {b}/vmlinuz}}\n    nics: [{{network: a}}]\n  \
             two:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{kernel: {b}/vmlinuz}}\n    nics: [{{network: b}}]\n",
            b = boot.display()
        ),
    )
    .unwrap();
    let topo = || {
        let mut c = assert_cmd::Command::cargo_bin("topo").unwrap();
        c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("TOPO_LOG").args(["-c", "test:///default", "--color", "never"]);
        c
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let out = topo().args(["-q", "plan", "--target", "vm.one"]).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.starts_with("Partial plan (--target vm.one)"), "{plan}");
    assert!(plan.contains("# network.a (tgt-a) will be created") && plan.contains("# vm.one (tgt-one)"), "{plan}");
    assert!(!plan.contains("vm.two") && !plan.contains("network.b"), "{plan}");
    assert!(plan.contains("Plan: 2 to add"), "{plan}");

    let out = topo().args(["-q", "apply", "-y", "--no-verify", "--target", "vm.one"]).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Apply complete: 2 added, 0 changed, 0 replaced, 0 destroyed."));

    let out = topo().args(["plan", "--target", "vm.onee"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did you mean `vm.one`?"), "{}", text(&out.stderr));
    let out = topo().args(["plan", "--target", "one"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "not an address: a usage error");
}
