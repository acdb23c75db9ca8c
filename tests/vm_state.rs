//! `state: running | stopped` per VM, on the memory double (tier 2): a stopped VM is
//! defined with its disk and not started; apply starts or stops it in place; a VM that stays
//! stopped takes new settings without a restart; every apply converges.

mod common;

use common::*;
use topo::host::hypervisor::Hypervisor;
use topo::host::observed::DomainState;
use topo::plan::render::{Style, render};
use topo::plan::{Action, Op, Reason, Shutdown};

fn state_of(hv: &dyn Hypervisor, domain: &str) -> DomainState {
    hv.observe_libvirt().unwrap().domains[domain].state
}

fn plain(p: &topo::plan::Plan) -> String {
    render(p, "lab.yaml", Style::Plain).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]")
}

/// BASE with `state: STATE` on VM `db`.
fn with_db_state(state: &str) -> String {
    edit(BASE, "  db:\n    hypervisor: qemu\n", &format!("  db:\n    hypervisor: qemu\n    state: {state}\n"))
}

fn ops_of<'a>(p: &'a topo::plan::Plan, address: &str) -> Vec<&'a Op> {
    p.changes.iter().filter(|c| c.address == address).flat_map(|c| &c.ops).collect()
}

#[test]
fn created_stopped_is_defined_not_started() {
    let hv = host();
    let l = lab(&with_db_state("stopped"));
    let (p, _) = plan_on(&l, &hv);
    let db = p.changes.iter().find(|c| c.address == "vm.db").unwrap();
    assert_eq!(db.action, Action::Create);
    assert!(
        db.fields.iter().any(|f| f.path == topo::plan::fields::Field::State && f.after.as_deref() == Some("stopped"))
    );
    assert!(!db.ops.contains(&Op::StartDomain), "{:?}", db.ops);
    assert!(ops_of(&p, "vm.web").contains(&&Op::StartDomain), "the other VMs run");
    apply_ok(&l, &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Shutoff);
    assert_eq!(state_of(&hv, "demo-web"), DomainState::Running);
}

#[test]
fn stop_and_start_in_place_through_the_file() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    // running -> stopped: one update that shuts it down gracefully, nothing else.
    let stopped = lab(&with_db_state("stopped"));
    let (p, _) = plan_on(&stopped, &hv);
    assert_eq!(p.changes.len(), 1, "{}", plain(&p));
    let c = &p.changes[0];
    assert_eq!((c.address.to_string().as_str(), c.action), ("vm.db", Action::Update));
    assert_eq!(c.reasons, vec![Reason::StopRequested]);
    assert_eq!(c.ops, vec![Op::StopDomain { shutdown: Shutdown::Graceful }]);
    insta::assert_snapshot!("running_to_stopped", plain(&p));
    apply_ok(&stopped, &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Shutoff);

    // stopped -> running: started in place, with the existing definition and disk.
    let (p, _) = plan_on(&lab(BASE), &hv);
    assert_eq!(p.changes.len(), 1, "{}", plain(&p));
    assert_eq!(p.changes[0].reasons, vec![Reason::NotRunning]);
    assert_eq!(p.changes[0].ops, vec![Op::StartDomain]);
    apply_ok(&lab(BASE), &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Running);
}

#[test]
fn a_vm_that_stays_stopped_takes_new_settings_without_a_restart() {
    let hv = host();
    let stopped = with_db_state("stopped");
    apply_ok(&lab(&stopped), &hv);
    let bigger = edit(&stopped, "    state: stopped\n    memory: 256MiB", "    state: stopped\n    memory: 512MiB");
    let l = lab(&bigger);
    let (p, _) = plan_on(&l, &hv);
    let c = &p.changes[0];
    assert_eq!(c.action, Action::Update);
    assert!(!c.reasons.iter().any(|r| matches!(r, Reason::RequiresRestart { .. })), "{:?}", c.reasons);
    assert!(c.fields.iter().all(|f| !f.restarts), "{:?}", c.fields);
    assert!(c.ops.iter().all(|o| matches!(o, Op::DefineDomain { .. })), "{:?}", c.ops);
    insta::assert_snapshot!("stopped_vm_new_settings", plain(&p));
    apply_ok(&l, &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Shutoff);
}

#[test]
fn a_running_vm_with_new_settings_stopped_by_the_file_is_stopped_then_redefined() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    let text = edit(
        &with_db_state("stopped"),
        "    state: stopped\n    memory: 256MiB",
        "    state: stopped\n    memory: 512MiB",
    );
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let ops: Vec<&str> = p.changes[0].ops.iter().map(Op::name).collect();
    assert_eq!(ops, ["stop-domain", "define-domain"]);
    apply_ok(&l, &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Shutoff);
}

#[test]
fn a_paused_vm_the_file_stops_is_forced_off() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    hv.pause("demo-db").unwrap();
    let l = lab(&with_db_state("stopped"));
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(p.changes[0].ops, vec![Op::StopDomain { shutdown: Shutdown::Force }]);
    apply_ok(&l, &hv);
    assert_eq!(state_of(&hv, "demo-db"), DomainState::Shutoff);
}

#[test]
fn a_stopped_vm_gets_new_nics_in_its_config() {
    let hv = host();
    let stopped = with_db_state("stopped");
    apply_ok(&lab(&stopped), &hv);
    let more = edit(
        &stopped,
        "    nics:\n      - network: back\n        ip: 10.51.0.30\n",
        "    nics:\n      - network: back\n        ip: 10.51.0.30\n      - network: lan\n",
    );
    let l = lab(&more);
    apply_ok(&l, &hv);
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["demo-db"].state, DomainState::Shutoff);
    assert_eq!(o.domains["demo-db"].interfaces.len(), 2);
}

#[test]
fn a_bad_state_is_refused_with_the_choices() {
    let text = with_db_state("paused");
    let source = topo::lab::source::SourceFile::from_text(std::path::Path::new(LAB_PATH), text);
    let err = topo::lab::validate::load(&source).expect_err("paused is not a state the file can ask for");
    let shown = render_diag(&err);
    assert!(shown.contains("running") && shown.contains("stopped"), "{shown}");
}

/// Through the binary on libvirt's test driver: a stopped VM is created defined and not
/// running, and the verification after apply lists its NIC as stopped, not failed.
#[test]
fn a_stopped_vm_on_the_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let boot = std::fs::canonicalize("tests/fixtures/boot").unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(
        &lab,
        format!(
            "apiVersion: topo/v1\nname: st\nnetworks:\n  a:\n    mode: isolated\n    subnet: 10.127.0.0/24\n    \
             dhcp_ping: true\nvms:\n  one:\n    hypervisor: qemu\n    memory: 128MiB\n    state: stopped\n    \
             boot: {{kernel: {b}/vmlinuz}}\n    nics: [{{network: a}}]\n",
            b = boot.display()
        ),
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("topo")
        .unwrap()
        .env_remove("LIBVIRT_DEFAULT_URI")
        .args(["-c", "test:///default", "--color", "never", "apply", "-y", "--json"])
        .arg(&lab)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["added"], 2);
    // Its NIC is listed as stopped, not failed (and not probed: the test driver has no bridge).
    assert_eq!(doc["verify"]["summary"]["stopped"], 1, "{}", doc["verify"]);
    assert_eq!(doc["verify"]["summary"]["failed"], 0, "{}", doc["verify"]);
    assert_eq!(doc["verify"]["nics"][0]["state"], "stopped");
    let vm = doc["plan"]["changes"].as_array().unwrap().iter().find(|c| c["address"] == "vm.one").unwrap();
    assert!(vm["fields"].as_array().unwrap().iter().any(|f| f["path"] == "state" && f["after"] == "stopped"));
}
