//! Tier 2: plan + apply + destroy against the strict in-memory hypervisor. Order is checked
//! from the double's call log, end states through `observe()`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use common::*;
use topo::apply::StepOutcome;
use topo::apply::progress::Silent;
use topo::host::Host;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::hypervisor::{HvError, HvErrorKind, Hypervisor};
use topo::host::observed::Observed;
use topo::lab::model::{Lab, LibvirtName, NetworkKind, VolumeName};
use topo::lab::ownership::SEED_MARK;

fn libvirt_name(s: &str) -> LibvirtName {
    LibvirtName::new(s).unwrap()
}
use topo::plan::{self, Action, Plan};

fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.changes.iter().map(|c| (c.address.to_string(), c.action)).collect()
}

fn pairs(v: &[(&str, Action)]) -> Vec<(String, Action)> {
    v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

/// Position of the first call exactly equal to `call`.
fn pos(calls: &[String], call: &str) -> usize {
    calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("no call {call:?} in {calls:#?}"))
}

fn assert_replans_empty<'a>(l: &Lab, hv: impl Into<Host<'a>>) {
    let (p, _) = plan_on(l, hv);
    assert!(p.is_empty(), "plan after apply is not empty: {:#?}", actions(&p));
}

fn names(o: &Observed) -> (Vec<String>, Vec<String>) {
    (o.networks.keys().cloned().collect(), o.domains.keys().cloned().collect())
}

fn fault(op: &str, name: &str) -> HvError {
    HvError {
        op: op.into(),
        object: name.into(),
        message: "injected failure".into(),
        kind: HvErrorKind::Other,
        hint: Some("injected hint".into()),
    }
}

/// Calls that change the host (everything but reads).
fn mutating(calls: &[String]) -> Vec<String> {
    calls.iter().filter(|c| *c != "observe" && !c.starts_with("domain_state ")).cloned().collect()
}

#[test]
fn apply_converges_and_touches_no_external_network() {
    let hv = host();
    let l = lab(BASE);
    let p = apply_ok(&l, &hv);
    assert_eq!(p.summary().create, 5);
    assert_replans_empty(&l, &hv);
    let calls = hv.calls();
    assert!(!calls.iter().any(|c| c.ends_with(" default")), "external network touched: {calls:#?}");
    let o = hv.observe().unwrap();
    assert!(o.domains.values().all(|d| d.state == topo::host::observed::DomainState::Running));
    assert!(o.networks.values().all(|n| n.active));
}

#[test]
fn networks_are_defined_and_started_before_the_domains_that_use_them() {
    for parallelism in [1, 4] {
        let hv = host();
        let l = lab(BASE);
        apply_with(&l, &hv, parallelism);
        let calls = hv.calls();
        for vm in l.vms.values() {
            for nic in &vm.nics {
                let net = &l.networks[&nic.network];
                if matches!(net.kind, NetworkKind::External) {
                    continue;
                }
                let (n, d) = (&net.libvirt_name, &vm.libvirt_name);
                assert!(pos(&calls, &format!("define_network {n}")) < pos(&calls, &format!("define_domain {d}")));
                assert!(pos(&calls, &format!("start_network {n}")) < pos(&calls, &format!("start_domain {d}")));
            }
        }
    }
}

#[test]
fn edits_apply_and_converge() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);

    // A second NIC for db: hot-plugged, and its derived reservation added to lan first.
    let t1 = edit(
        BASE,
        "      - network: back\n        ip: 10.51.0.30\n",
        "      - network: back\n        ip: 10.51.0.30\n      - network: lan\n",
    );
    let p = apply_ok(&lab(&t1), &hv);
    assert_eq!(actions(&p), pairs(&[("network.lan", Action::Update), ("vm.db", Action::Update)]));
    assert_replans_empty(&lab(&t1), &hv);
    assert_eq!(hv.observe().unwrap().domains["demo-db"].interfaces.len(), 2);

    // A new VM with a reservation: the network gains a host entry first.
    let t2 = format!(
        "{t1}  cache:\n    hypervisor: qemu\n    boot: {{kernel: boot/vmlinuz}}\n    nics: [{{network: back, ip: 10.51.0.40}}]\n"
    );
    hv.clear_calls();
    let p = apply_ok(&lab(&t2), &hv);
    assert_eq!(actions(&p), pairs(&[("network.back", Action::Update), ("vm.cache", Action::Create)]));
    let calls = hv.calls();
    assert!(pos(&calls, "update_dhcp_host demo-back") < pos(&calls, "start_domain demo-cache"));
    assert_replans_empty(&lab(&t2), &hv);

    // A changed reservation: delete + add on the live network, then web's NIC re-plugged so
    // its guest asks again; nothing restarted.
    let t3 = edit(&t2, "ip: 10.50.0.20", "ip: 10.50.0.21");
    hv.clear_calls();
    let p = apply_ok(&lab(&t3), &hv);
    assert_eq!(actions(&p), pairs(&[("network.lan", Action::Update), ("vm.web", Action::Update)]));
    assert!(!hv.calls().iter().any(|c| c.starts_with("stop_network") || c.starts_with("start_domain")));
    assert_replans_empty(&lab(&t3), &hv);

    // A new subnet while VMs run on the network: replaced, and every NIC re-plugged.
    let t4 = t3.replace("10.50.0.", "10.60.0.");
    let p = apply_ok(&lab(&t4), &hv);
    assert_eq!(actions(&p), pairs(&[("network.lan", Action::Replace)]));
    let lan = &p.changes[0];
    assert_eq!(lan.blast_radius.len(), 3, "router, web and db's new NIC are on lan: {:?}", lan.blast_radius);
    assert!(lan.blast_radius.iter().all(|d| d.reattached));
    assert_eq!(hv.cut_nics(), vec![], "NICs left off the restarted network");
    assert_replans_empty(&lab(&t4), &hv);
    let o = hv.observe().unwrap();
    assert_eq!(o.networks["demo-lan"].ip.as_ref().unwrap().address.to_string(), "10.60.0.1");
}

#[test]
fn restarting_an_inactive_network_replugs_running_nics() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    // Stopped by hand under running VMs (libvirt allows it; their NICs lose the link).
    hv.stop_network("demo-lan").unwrap();
    assert_eq!(hv.cut_nics().len(), 2);
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("network.lan", Action::Update)]));
    apply_ok(&l, &hv);
    assert_eq!(hv.cut_nics(), vec![], "NICs left off the restarted network");
}

/// Bug 5: a lab network stopped and started by hand (`virsh net-destroy` + `net-start`) is
/// active again, but the running VMs' taps are on no bridge. The plan sees it from where each
/// tap is plugged, re-attaches each cut NIC with the reason, and converges.
#[test]
fn a_network_restarted_by_hand_replugs_its_running_nics() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.stop_network("demo-lan").unwrap();
    hv.start_network("demo-lan").unwrap();
    assert_eq!(hv.cut_nics().len(), 2);
    let (p, o) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.router", Action::Update), ("vm.web", Action::Update)]));
    let links = o.domains["demo-router"].links.as_ref().expect("links of a running domain");
    assert_eq!(links.iter().filter(|l| l.bridge.is_none()).count(), 1, "{links:?}");
    for c in &p.changes {
        let plan::Reason::Unplugged { nics } = &c.reasons[0] else { panic!("reason: {:?}", c.reasons) };
        assert_eq!(nics.len(), 1, "{nics:?}");
        assert_eq!(nics[0].index, if c.libvirt_name == "demo-router" { 1 } else { 0 }, "{nics:?}");
        let text = plan::render::reason(&c.reasons[0]);
        let want = format!("{} (", if c.libvirt_name == "demo-router" { "eth1" } else { "eth0" });
        assert!(text.starts_with(&want), "{text}");
        assert_eq!(c.fields.len(), 1, "{:?}", c.fields);
        assert_eq!(c.fields[0].before.as_deref(), Some("none"));
        assert_eq!(c.fields[0].after.as_deref(), Some("demo-lan"));
        assert!(matches!(&c.ops[..], [plan::Op::ReattachNics { nics }] if nics.len() == 1), "{:?}", c.ops);
    }
    apply_ok(&l, &hv);
    assert_eq!(hv.cut_nics(), vec![], "NICs left off the restarted network");
    assert_replans_empty(&l, &hv);
    // A stopped VM has no taps: nothing to plug, and its next start plugs it in.
    hv.stop_network("demo-lan").unwrap();
    hv.start_network("demo-lan").unwrap();
    hv.destroy_domain("demo-web").unwrap();
    let (p, _) = plan_on(&l, &hv);
    let web = p.changes.iter().find(|c| c.libvirt_name == "demo-web").expect("web starts");
    assert!(!web.ops.iter().any(|o| matches!(o, plan::Op::ReattachNics { .. })), "{:?}", web.ops);
    apply_ok(&l, &hv);
    assert_eq!(hv.cut_nics(), vec![]);
    assert_replans_empty(&l, &hv);
}

#[test]
fn removed_vm_and_network_are_deleted_vms_first() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    // Drop db and the back network (and web's NIC on it).
    let text = BASE.split("  db:\n").next().unwrap();
    let text = edit(text, "      - network: back\n", "");
    let text = edit(&text, "  back:\n    mode: isolated\n    subnet: 10.51.0.0/24\n    dhcp: true\n", "");
    let l = lab(&text);
    hv.clear_calls();
    let p = apply_ok(&l, &hv);
    assert_eq!(
        actions(&p),
        pairs(&[("vm.db", Action::Delete), ("network.back", Action::Delete), ("vm.web", Action::Update)])
    );
    let calls = hv.calls();
    // The deletion of back waits for the deletion of db, which is on it (the host's reference,
    // reversed). web's update, which unplugs its NIC from back, is not a deletion: it may run
    // before or after (libvirt lets a network go from under a running domain, and detaches
    // the NIC by its MAC).
    assert!(pos(&calls, "undefine_domain demo-db") < pos(&calls, "undefine_network demo-back"));
    assert!(calls.iter().any(|c| c == "detach_device demo-web"), "{calls:?}");
    assert_replans_empty(&l, &hv);
    assert!(!hv.observe().unwrap().networks.contains_key("demo-back"));
}

#[test]
fn destroy_is_the_exact_reverse_of_creation() {
    let hv = host();
    let l = lab(BASE);
    hv.clear_calls();
    apply_with(&l, &hv, 1);
    let created: Vec<String> = hv
        .calls()
        .iter()
        .filter_map(|c| c.strip_prefix("define_network ").or_else(|| c.strip_prefix("define_domain ")))
        .map(str::to_owned)
        .collect();
    hv.clear_calls();
    let (_, report) = destroy_with(&l, &hv, 1);
    assert!(!report.failed(), "{report:#?}");
    let removed: Vec<String> = hv
        .calls()
        .iter()
        .filter_map(|c| c.strip_prefix("undefine_network ").or_else(|| c.strip_prefix("undefine_domain ")))
        .map(str::to_owned)
        .collect();
    let reversed: Vec<String> = created.into_iter().rev().collect();
    assert_eq!(removed, reversed);
}

#[test]
fn destroy_removes_only_what_the_lab_owns() {
    let hv = host()
        .with_network_xml(&foreign_network_xml("keep-net", "keepbr0", "10.90.0.1", "255.255.255.0"), true, true)
        .unwrap()
        .with_domain_xml(&foreign_domain_xml("keep-vm", &[("52:54:00:ee:00:09", "keep-net")]), true)
        .unwrap();
    let other = lab("\
apiVersion: topo/v1
name: other
networks:
  lan:
    mode: isolated
    subnet: 10.70.0.0/24
vms:
  web:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.70.0.5}]
");
    apply_ok(&other, &hv);
    let before = hv.observe().unwrap();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    let (p, report) = destroy_with(&l, &hv, 4);
    assert_eq!(p.summary().delete, 5);
    assert!(!report.failed(), "{report:#?}");
    let after = hv.observe().unwrap();
    assert_eq!(after, before, "destroy changed objects the lab does not own");
    assert_eq!(
        names(&after),
        (vec!["default".into(), "keep-net".into(), "other-lan".into()], vec!["keep-vm".into(), "other-web".into()])
    );
    // Twice: nothing left to do.
    assert!(plan::plan_destroy(&l, &after).is_empty());
    let (p, report) = destroy_with(&l, &hv, 4);
    assert!(p.changes.is_empty() && report.steps.is_empty());
}

#[test]
fn destroy_with_inactive_networks_and_stopped_vms() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    for d in ["demo-db", "demo-router", "demo-web"] {
        hv.destroy_domain(d).unwrap();
    }
    hv.stop_network("demo-lan").unwrap();
    hv.stop_network("demo-back").unwrap();
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(names(&hv.observe().unwrap()), (vec!["default".into()], vec![]));
}

#[test]
fn destroy_when_objects_already_vanished() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    // Gone before destroy looked.
    hv.destroy_domain("demo-db").unwrap();
    hv.undefine_domain("demo-db").unwrap();
    let observed = hv.observe().unwrap();
    let p = plan::plan_destroy(&l, &observed);
    assert_eq!(p.summary().delete, 4);
    // Gone after destroy looked, before it acted: already absent counts as removed.
    hv.destroy_domain("demo-router").unwrap();
    hv.undefine_domain("demo-router").unwrap();
    let report = topo::apply::apply(&p, &hv, &options(4), &AtomicBool::new(false), &Silent);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(names(&hv.observe().unwrap()), (vec!["default".into()], vec![]));
}

#[test]
fn a_failing_step_stops_new_steps_and_apply_again_converges() {
    let hv = host();
    let l = lab(BASE);
    hv.fail_on("define_domain", "demo-db", fault("define domain", "demo-db"));
    let (_, report) = apply_with(&l, &hv, 1);
    let outcome = |a: &str| report.steps.iter().find(|s| s.address == a).unwrap().outcome.clone();
    assert!(matches!(outcome("network.back"), StepOutcome::Done { .. }));
    assert!(matches!(outcome("network.lan"), StepOutcome::Done { .. }));
    match outcome("vm.db") {
        StepOutcome::Failed { error } => {
            assert_eq!(error.to_string(), "define domain demo-db: injected failure");
            assert_eq!(error.hint(), Some("injected hint"));
        }
        o => panic!("vm.db: {o:?}"),
    }
    for vm in ["vm.router", "vm.web"] {
        assert!(matches!(outcome(vm), StepOutcome::Skipped { .. }), "{vm}: {:?}", outcome(vm));
    }
    assert!(report.failed() && !report.interrupted);
    // Skipped steps did nothing.
    assert!(!hv.calls().iter().any(|c| c.ends_with("demo-router") || c.ends_with("demo-web")));
    apply_ok(&l, &hv);
    assert_replans_empty(&l, &hv);
}

#[test]
fn with_parallel_steps_running_ones_finish_after_a_failure() {
    let hv = host();
    let l = lab(BASE);
    hv.fail_on("define_domain", "demo-db", fault("define domain", "demo-db"));
    let (_, report) = apply_with(&l, &hv, 4);
    let calls = hv.calls();
    for s in &report.steps {
        let name = format!("demo-{}", s.address.name());
        match &s.outcome {
            // A step that ran, ran to the end.
            StepOutcome::Done { .. } if s.address.kind() == "vm" => {
                assert!(calls.contains(&format!("start_domain {name}")), "{}", s.address)
            }
            StepOutcome::Done { .. } => assert!(calls.contains(&format!("start_network {name}"))),
            StepOutcome::Failed { .. } => assert_eq!(s.address, "vm.db"),
            StepOutcome::Skipped { .. } => {
                assert!(!calls.iter().any(|c| c.ends_with(&format!(" {name}"))), "{} skipped but called", s.address)
            }
        }
    }
    assert_eq!(report.steps.iter().filter(|s| matches!(s.outcome, StepOutcome::Failed { .. })).count(), 1);
    apply_ok(&l, &hv);
}

#[test]
fn cancelled_before_start_skips_everything() {
    let hv = host();
    let l = lab(BASE);
    let (p, _) = plan_on(&l, &hv);
    hv.clear_calls();
    let report = topo::apply::apply(&p, &hv, &options(4), &AtomicBool::new(true), &Silent);
    assert!(report.interrupted);
    assert_eq!(report.steps.len(), 5);
    assert!(
        report.steps.iter().all(|s| s.outcome == StepOutcome::Skipped { why: "interrupted".into() }),
        "{report:#?}"
    );
    assert_eq!(mutating(&hv.calls()), Vec::<String>::new());
}

#[test]
fn parallelism_does_not_change_the_end_state() {
    let strip = |mut o: Observed| {
        o.networks.values_mut().for_each(|n| n.uuid = None);
        o.domains.values_mut().for_each(|d| d.uuid = None);
        o
    };
    let end = |parallelism| {
        let hv = host();
        let l = lab(BASE);
        let (_, report) = apply_with(&l, &hv, parallelism);
        assert!(!report.failed());
        converged(&l, &hv).unwrap();
        strip(hv.observe().unwrap())
    };
    let one = end(1);
    for _ in 0..5 {
        assert_eq!(end(4), one);
    }
}

#[test]
fn a_disk_gets_an_overlay_volume_that_destroy_deletes() {
    let hv = MemoryHypervisor::new();
    let l = lab(DISK_LAB);
    apply_ok(&l, &hv);
    let vm = l.vms.values().next().unwrap();
    let name = vm.overlay_name(&l.name).unwrap();
    let overlay = format!("{OVERLAY_DIR}/{name}");
    let base = vm.disk.as_ref().unwrap().image.display().to_string();
    // A VM with a disk gets a cloud-init seed by default: a second, uploaded volume.
    let seed = topo::guest::Seed::of(&l, vm).unwrap().unwrap();
    let seed_path = format!("{OVERLAY_DIR}/{}", seed.volume_name(&l, vm));
    // Sorted by name; the overlay's hashes the checkout's image path, so compare as sets.
    let mut want = vec![(overlay.clone(), base), (seed_path.clone(), "raw".to_string())];
    want.sort();
    assert_eq!(hv.volumes(), want);
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["disky-box"].disks, vec![overlay.clone(), seed_path]);
    // The seed's files as the host has them (downloaded and read back).
    let bytes = hv.download_volume("topo-overlays", seed.volume_name(&l, vm).as_str()).unwrap();
    assert_eq!(
        topo::guest::read_fat_files(&bytes).unwrap(),
        seed.files().map(|(n, t)| (n.to_string(), t.to_string())).to_vec()
    );
    let calls = hv.calls();
    assert!(pos(&calls, "ensure_pool topo-overlays") < pos(&calls, &format!("create_volume {name}")));
    assert!(pos(&calls, &format!("create_volume {name}")) < pos(&calls, "define_domain disky-box"));
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(hv.volumes(), vec![]);
    assert_eq!(names(&hv.observe().unwrap()), (vec![], vec![]));
}

#[test]
fn a_new_disk_size_replaces_the_vm_and_its_overlay() {
    let hv = MemoryHypervisor::new();
    apply_ok(&lab(DISK_LAB), &hv);
    let l = lab(&edit(DISK_LAB, "size: 1GiB", "size: 2GiB"));
    let p = apply_ok(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.box", Action::Replace)]));
    let vm = l.vms.values().next().unwrap();
    let overlay = format!("{OVERLAY_DIR}/{}", vm.overlay_name(&l.name).unwrap());
    let seed = topo::guest::Seed::of(&l, vm).unwrap().unwrap();
    let seed = format!("{OVERLAY_DIR}/{}", seed.volume_name(&l, vm));
    assert_eq!(hv.volumes().into_iter().map(|v| v.0).collect::<BTreeSet<_>>(), BTreeSet::from([overlay, seed]));
}

// ---- cloud-init seeds (issue 10) -------------------------------------------------------

const GUEST_LAB: &str = "\
apiVersion: topo/v1
name: guests
cloud_init:
  user_data: guest/user-data-a.yaml
  ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtopoTestKeyNotARealOneXXXXXXXXXXXXXXXXXXXX a@b']
networks:
  net:
    mode: isolated
    subnet: 10.81.0.0/24
  fixed:
    mode: routed
    subnet: 10.82.0.0/24
    dhcp: false
vms:
  box:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    nics: [{network: net}, {network: fixed, ip: 10.82.0.5}]
  plain:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    cloud_init: {enabled: false}
    nics: [{network: net}]
";

fn seed_volumes(hv: &MemoryHypervisor) -> Vec<String> {
    hv.volumes().into_iter().map(|(p, _)| p).filter(|p| p.contains("-cidata-")).collect()
}

#[test]
fn the_seed_is_uploaded_attached_and_converges() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    let p = apply_ok(&l, &hv);
    let ops: Vec<&str> = p.changes.iter().flat_map(|c| c.ops.iter().map(|o| o.name())).collect();
    assert_eq!(ops.iter().filter(|o| **o == "upload-seed").count(), 1, "only the VM with cloud-init: {ops:?}");
    assert_eq!(seed_volumes(&hv).len(), 1);
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["guests-box"].disks.len(), 2, "overlay and seed");
    assert_eq!(o.domains["guests-plain"].disks.len(), 1, "cloud_init: enabled: false");
    assert!(plan::plan(&l, &o, &hv.uri()).unwrap().is_empty(), "converged");
    let calls = hv.calls();
    let upload = calls.iter().position(|c| c.starts_with("upload_volume guests-box-cidata-")).unwrap();
    assert!(upload < pos(&calls, "define_domain guests-box"));
}

#[test]
fn a_user_data_edit_replaces_the_vm_with_a_readable_diff() {
    let hv = MemoryHypervisor::new();
    apply_ok(&lab(GUEST_LAB), &hv);
    let before = seed_volumes(&hv);
    let l = lab(&edit(GUEST_LAB, "user-data-a.yaml", "user-data-b.yaml"));
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.box", Action::Replace)]));
    let c = &p.changes[0];
    let paths: Vec<_> = c.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["cloud_init", "cloud_init.meta-data", "cloud_init.user-data"], "network-config unchanged");
    assert!(c.fields.iter().all(|f| f.forces_replacement));
    let text = topo::plan::render::render(&p, "lab.yaml", topo::plan::render::Style::Plain);
    insta::assert_snapshot!(text);
    apply_ok(&l, &hv);
    let after = seed_volumes(&hv);
    assert_eq!(after.len(), 1, "the old seed went with the old VM");
    assert_ne!(after, before);
}

/// Observe downloads no seed; the seeds read for a plan's diff are only those the lab
/// changes (the volume name is a hash of the content: same name, same files).
#[test]
fn only_a_changed_seed_is_downloaded_for_the_diff() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    apply_ok(&l, &hv);
    let downloads = |hv: &MemoryHypervisor| hv.calls().into_iter().filter(|c| c.starts_with("download_volume")).count();
    hv.clear_calls();
    let mut o = hv.observe().unwrap();
    assert!(o.domains.values().all(|d| d.seed.is_none()), "observe reads no seed");
    topo::host::hypervisor::read_changed_seeds(&hv, &l, &mut o);
    assert_eq!(downloads(&hv), 0, "a converged lab: nothing to show, nothing downloaded");
    assert!(plan::plan(&l, &o, &hv.uri()).unwrap().is_empty());

    let edited = lab(&edit(GUEST_LAB, "user-data-a.yaml", "user-data-b.yaml"));
    let mut o = hv.observe().unwrap();
    topo::host::hypervisor::read_changed_seeds(&hv, &edited, &mut o);
    assert_eq!(downloads(&hv), 1, "the one changed seed: {:?}", hv.calls());
    let files = o.domains["guests-box"].seed.as_ref().expect("read for the diff");
    let old = topo::guest::Seed::of(&l, &l.vms.values().next().unwrap().clone()).unwrap().unwrap();
    assert_eq!(files, &old.files().map(|(n, t)| (n.to_string(), t.to_string())).to_vec(), "the host's (old) files");
    // Without the read-back the plan still replaces the VM, by the volume names alone.
    let bare = plan::plan(&edited, &hv.observe().unwrap(), &hv.uri()).unwrap();
    assert_eq!(actions(&bare), pairs(&[("vm.box", Action::Replace)]));
    let paths: Vec<_> = bare.changes[0].fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["cloud_init"]);
}

#[test]
fn an_orphaned_seed_is_deleted() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    apply_ok(&l, &hv);
    // A seed uploaded by an apply that died before it defined the domain.
    hv.upload_volume(
        "topo-overlays",
        topo::lab::ownership::volume_name("guests", &libvirt_name("guests-box"), SEED_MARK, "00000000", "img")
            .unwrap()
            .as_str(),
        b"x",
    )
    .unwrap();
    assert_eq!(seed_volumes(&hv).len(), 2);
    let p = apply_ok(&l, &hv);
    assert_eq!(p.changes.iter().filter(|c| c.action == Action::Delete).count(), 1, "{p:#?}");
    assert_eq!(seed_volumes(&hv).len(), 1);
}

/// The name (in topo's pool) of the first volume of `vm` whose path contains `part`.
fn volume_of(hv: &MemoryHypervisor, vm: &str, part: &str) -> String {
    let o = hv.observe().unwrap();
    let path = o.domains[vm].disks.iter().find(|d| d.contains(part)).unwrap().clone();
    path.rsplit('/').next().unwrap().to_string()
}

#[test]
fn a_seed_deleted_by_hand_is_uploaded_again_in_place() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    apply_ok(&l, &hv);
    let seed = volume_of(&hv, "guests-box", "-cidata-");
    let before = hv.observe().unwrap();
    let bytes = hv.download_volume("topo-overlays", &seed).unwrap();
    hv.delete_volume("topo-overlays", &seed).unwrap();
    assert!(seed_volumes(&hv).is_empty());
    let p = plan::plan(&l, &hv.observe().unwrap(), &hv.uri()).unwrap();
    assert_eq!(actions(&p), pairs(&[("vm.box", Action::Update)]), "not a replace: same content");
    let c = &p.changes[0];
    assert_eq!(c.reasons, [plan::Reason::DeletedOutsideTopo { volumes: vec![VolumeName::new(&seed).unwrap()] }]);
    let ops: Vec<&str> = c.ops.iter().map(|o| o.name()).collect();
    assert_eq!(ops, ["upload-seed"], "the VM keeps running");
    let f: Vec<(String, Option<&str>, bool)> =
        c.fields.iter().map(|f| (f.path.to_string(), f.before.as_deref(), f.forces_replacement)).collect();
    assert_eq!(f, [("cloud_init".to_string(), Some(&*format!("{seed} (deleted outside topo)")), false)]);
    let text = topo::plan::render::render(&p, "lab.yaml", topo::plan::render::Style::Plain);
    assert!(text.contains("was deleted outside topo; the seed is uploaded again"), "{text}");
    hv.clear_calls();
    apply_ok(&l, &hv);
    assert_eq!(volume_of(&hv, "guests-box", "-cidata-"), seed, "the same name, so the same content");
    let after = hv.observe().unwrap();
    assert_eq!(after.domains["guests-box"].uuid, before.domains["guests-box"].uuid, "the same domain");
    let touched: Vec<String> =
        hv.calls().into_iter().filter(|c| c.contains("domain") || c.contains("download")).collect();
    assert!(touched.is_empty(), "the domain is not touched: {touched:?}");
    assert_eq!(hv.download_volume("topo-overlays", &seed).unwrap(), bytes, "the same bytes");
    assert_replans_empty(&l, &hv);
}

#[test]
fn a_seed_deleted_under_a_stopped_vm_is_back_before_it_starts() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    apply_ok(&l, &hv);
    hv.destroy_domain("guests-box").unwrap();
    hv.delete_volume("topo-overlays", &volume_of(&hv, "guests-box", "-cidata-")).unwrap();
    let p = plan::plan(&l, &hv.observe().unwrap(), &hv.uri()).unwrap();
    let ops: Vec<&str> = p.changes[0].ops.iter().map(|o| o.name()).collect();
    assert_eq!(ops, ["upload-seed", "start-domain"]);
    apply_ok(&l, &hv);
    assert_replans_empty(&l, &hv);
}

#[test]
fn an_overlay_deleted_by_hand_replaces_the_vm() {
    let hv = MemoryHypervisor::new();
    let l = lab(GUEST_LAB);
    apply_ok(&l, &hv);
    let overlay = volume_of(&hv, "guests-plain", ".qcow2");
    hv.delete_volume("topo-overlays", &overlay).unwrap();
    let p = plan::plan(&l, &hv.observe().unwrap(), &hv.uri()).unwrap();
    assert_eq!(actions(&p), pairs(&[("vm.plain", Action::Replace)]), "its disk is lost");
    let c = &p.changes[0];
    let volumes = vec![VolumeName::new(&overlay).unwrap()];
    assert!(c.reasons.contains(&plan::Reason::DeletedOutsideTopo { volumes }), "{c:#?}");
    assert!(c.reasons.contains(&plan::Reason::RequiresReplace { fields: vec![plan::fields::Field::Disk] }), "{c:#?}");
    apply_ok(&l, &hv);
    assert_eq!(volume_of(&hv, "guests-plain", ".qcow2"), overlay);
    assert_replans_empty(&l, &hv);
}

// ---- idempotent steps, states, ownership (issue 8) ------------------------------------

/// The DefineDomain XML a plan of `l` carries for VM `vm` (by libvirt name).
fn planned_domain_xml(l: &Lab, hv: &MemoryHypervisor, vm: &str) -> String {
    let (p, _) = plan_on(l, hv);
    p.changes
        .iter()
        .filter(|c| c.libvirt_name == vm)
        .flat_map(|c| &c.ops)
        .find_map(|op| match op {
            plan::Op::DefineDomain { xml } => Some(xml.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no define of {vm} in the plan"))
}

#[test]
fn a_start_that_libvirt_finished_meanwhile_counts_as_done() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.destroy_domain("demo-db").unwrap();
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.db", Action::Update)]));
    // A killed apply had asked libvirt to start it; libvirt finished after the plan was made.
    hv.start_domain("demo-db").unwrap();
    let report = topo::apply::apply(&p, &hv, &options(1), &AtomicBool::new(false), &Silent);
    assert!(!report.failed(), "\"already running\" must count as done: {report:#?}");
    assert_replans_empty(&l, &hv);
}

#[test]
fn a_paused_vm_is_resumed_not_started() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.pause("demo-web").unwrap();
    let (p, _) = plan_on(&l, &hv);
    let web = &p.changes[0];
    assert_eq!((web.address.to_string(), web.action), ("vm.web".to_string(), Action::Update));
    assert_eq!(web.reasons, vec![plan::Reason::Paused]);
    assert_eq!(web.ops, vec![plan::Op::ResumeDomain]);
    apply_ok(&l, &hv);
    assert_eq!(hv.observe().unwrap().domains["demo-web"].state, topo::host::observed::DomainState::Running);
}

/// A define whose restart never happened (an interrupted older apply, or `virsh define` by
/// hand) leaves a running VM whose config matches the file: the live settings show it.
#[test]
fn a_pending_restart_is_seen_in_the_live_settings() {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    let bigger = lab(&edit(
        BASE,
        "  db:\n    hypervisor: qemu\n    memory: 256MiB",
        "  db:\n    hypervisor: qemu\n    memory: 512MiB",
    ));
    hv.define_domain(&planned_domain_xml(&bigger, &hv, "demo-db")).unwrap();
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["demo-db"].memory_kib, 512 * 1024, "the config is new");
    let (p, _) = plan_on(&bigger, &hv);
    assert_eq!(actions(&p), pairs(&[("vm.db", Action::Update)]));
    let db = &p.changes[0];
    assert!(
        db.reasons.contains(&plan::Reason::RequiresRestart { fields: vec![plan::fields::Field::Memory] }),
        "{:?}",
        db.reasons
    );
    let kinds: Vec<&str> = db.ops.iter().map(|o| o.name()).collect();
    assert_eq!(kinds, ["stop-domain", "define-domain", "start-domain"], "stop first: a death after it is seen");
    apply_ok(&bigger, &hv);
    let live = hv.observe().unwrap().domains["demo-db"].live.clone().unwrap();
    assert_eq!(live.memory_kib, 512 * 1024);
}

/// `virsh dumpxml demo-db | sed s/demo-db/copy/ | virsh define`: the copy keeps topo's tag,
/// which names demo-db: it is foreign. destroy leaves it; apply does not touch it.
#[test]
fn a_domain_copied_under_another_name_is_foreign() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    // The XML topo defines demo-db with (planned on an empty host).
    let xml = planned_domain_xml(&l, &host(), "demo-db");
    let copy = xml.replace("<name>demo-db</name>", "<name>copy</name>");
    let copy = match copy.find("<uuid>") {
        Some(a) => format!("{}{}", &copy[..a], &copy[copy.find("</uuid>").unwrap() + "</uuid>".len()..]),
        None => copy,
    };
    hv.define_domain(&copy).unwrap();
    let o = hv.observe().unwrap();
    assert!(o.domains["copy"].owner.is_some(), "the copy carries the tag");
    assert_eq!(o.domains["copy"].ownership(&l), topo::host::observed::Ownership::NotOwned);
    assert_replans_empty(&l, &hv);
    let (p, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert!(!p.changes.iter().any(|c| c.libvirt_name == "copy"));
    assert!(hv.observe().unwrap().domains.contains_key("copy"), "destroy deleted a domain the lab does not own");
}

#[test]
fn destroy_forces_vms_off_and_graceful_asks_first() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.clear_calls();
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed());
    let calls = hv.calls();
    assert!(calls.contains(&"destroy_domain demo-db".to_string()), "{calls:#?}");
    assert!(!calls.iter().any(|c| c.starts_with("shutdown_domain")), "no ACPI wait by default: {calls:#?}");

    apply_ok(&l, &hv);
    hv.clear_calls();
    let p = plan::plan_destroy_with(&l, &hv.observe().unwrap(), plan::Shutdown::Graceful);
    let report = topo::apply::apply(&p, &hv, &options(4), &AtomicBool::new(false), &Silent);
    assert!(!report.failed());
    assert!(hv.calls().contains(&"shutdown_domain demo-db".to_string()));
}

/// Volumes: only the lab's by tag (or a disk of a domain it owns) are ever deleted; a file
/// that merely starts with the lab's prefix is not the lab's.
#[test]
fn only_tagged_volumes_are_the_labs() {
    let hv = MemoryHypervisor::new();
    let l = lab(DISK_LAB);
    apply_ok(&l, &hv);
    let lookalike = topo::host::hypervisor::VolumeSpec {
        pool: topo::lab::ownership::OVERLAY_POOL.into(),
        name: "disky-box-12345678.qcow2".into(),
        backing: "/img/user.qcow2".into(),
        backing_format: Default::default(),
        size: None,
    };
    hv.create_volume(&lookalike).unwrap();
    // A tagged volume no domain uses (left by an interrupted run) is an orphan.
    let orphan = topo::host::hypervisor::VolumeSpec {
        name: topo::lab::ownership::volume_name("disky", &libvirt_name("disky-old"), "-", "00000000", "qcow2")
            .unwrap()
            .to_string(),
        ..lookalike.clone()
    };
    hv.create_volume(&orphan).unwrap();
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(actions(&p), vec![(format!("volume.{}", orphan.name), Action::Delete)]);
    apply_ok(&l, &hv);
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(hv.volumes(), vec![(format!("{OVERLAY_DIR}/{}", lookalike.name), lookalike.backing.clone())]);
}

/// The overlay pool is one step before every VM step, even with several disk VMs in
/// parallel (issue 8: "pool 'topo-overlays' already exists" from the racing VM steps).
#[test]
fn the_overlay_pool_is_ensured_once_by_name() {
    let hv = MemoryHypervisor::new();
    let text = format!(
        "{DISK_LAB}  box2:\n    hypervisor: qemu\n    boot: {{kernel: boot/vmlinuz}}\n    disk: {{image: images/base.qcow2}}\n    nics: [{{network: net}}]\n"
    );
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let pool = p.changes.iter().find(|c| c.address.kind() == "pool").expect("a pool step");
    assert_eq!(pool.action, Action::Create);
    for vm in p.changes.iter().filter(|c| c.address.kind() == "vm") {
        assert!(vm.after.contains(&pool.address), "{} does not wait for the pool", vm.address);
    }
    let report = topo::apply::apply(&p, &hv, &options(4), &AtomicBool::new(false), &Silent);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(hv.calls().iter().filter(|c| c.starts_with("ensure_pool")).count(), 1);
    converged(&l, &hv).unwrap();
}

/// Deleting a network lists every domain on it, owned or not; a domain outside the lab on
/// it makes apply and destroy refuse, unless the user insists.
#[test]
fn deleting_a_network_a_foreign_vm_uses_is_refused_unless_insisted() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.define_domain(&foreign_domain_xml("outsider", &[("52:54:00:aa:00:01", "demo-back")])).unwrap();
    // `back` and `db` leave the file; `web` keeps only `lan`.
    let text = edit(BASE, "  back:\n    mode: isolated\n    subnet: 10.51.0.0/24\n    dhcp: true\n", "");
    let text = edit(&text, "      - network: back\n", "");
    let text = &text[..text.find("  db:").unwrap()];
    let l2 = lab(text);
    let (p, _) = plan_on(&l2, &hv);
    let back = p.changes.iter().find(|c| c.libvirt_name == "demo-back").expect("network.back deleted");
    assert_eq!(back.action, Action::Delete);
    let radius: Vec<(&str, bool)> = back.blast_radius.iter().map(|d| (d.domain.as_str(), d.owned)).collect();
    // db is deleted by the same plan: not listed. web stays (its NIC is unplugged).
    assert_eq!(radius, [("demo-web", true), ("outsider", false)]);
    let err = plan::check_foreign(&p, "memory:///topo", false).unwrap_err();
    let text_err = render_diag(&err);
    assert!(text_err.contains("network.back (demo-back): used by outsider"), "{text_err}");
    assert!(text_err.contains("--disconnect-foreign"), "{text_err}");
    assert!(plan::check_foreign(&p, "memory:///topo", true).is_ok());
    let rendered = plan::render::render(&p, "lab.yaml", plan::render::Style::Plain);
    assert!(rendered.contains("#   outsider 52:54:00:aa:00:01 (NOT owned by this lab)"), "{rendered}");
    // destroy too
    let d = plan::plan_destroy(&l, &hv.observe().unwrap());
    assert!(plan::check_foreign(&d, "memory:///topo", false).is_err());
    // Without the foreign domain, nothing to refuse; insisting deletes it under the domain.
    assert!(plan::check_foreign(&plan::plan_destroy(&l2, &Observed::default()), "m", false).is_ok());
    apply_ok(&l2, &hv);
    assert!(!hv.observe().unwrap().networks.contains_key("demo-back"));
    assert!(hv.observe().unwrap().domains.contains_key("outsider"), "the foreign domain itself is never touched");
}

/// Replacing a network (a changed subnet) stops it under every running domain on it: a
/// running domain outside the lab makes apply refuse, as a deletion does, unless the user
/// insists; then only the lab's NICs are plugged back, the foreign one stays cut off and its
/// domain untouched. A stopped foreign domain is not cut off (it finds the network by name
/// when it starts).
#[test]
fn replacing_a_network_a_foreign_vm_runs_on_is_refused_unless_insisted() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.define_domain(&foreign_domain_xml("outsider", &[("52:54:00:aa:00:02", "demo-lan")])).unwrap();
    hv.define_domain(&foreign_domain_xml("parked", &[("52:54:00:aa:00:03", "demo-lan")])).unwrap();
    hv.start_domain("outsider").unwrap();
    let l2 = lab(&BASE.replace("10.50.0.", "10.60.0."));
    let (p, observed) = plan_on(&l2, &hv);
    let lan = p.changes.iter().find(|c| c.libvirt_name == "demo-lan").expect("network.lan");
    assert_eq!(lan.action, Action::Replace);
    let radius: Vec<(&str, bool, bool)> =
        lan.blast_radius.iter().map(|d| (d.domain.as_str(), d.owned, d.reattached)).collect();
    assert_eq!(radius, [("demo-router", true, true), ("demo-web", true, true), ("outsider", false, false)]);
    let check =
        |insist| plan::check_executable(&l2, &observed, &p, "memory:///topo", plan::target::Direction::Apply, insist);
    let err = check(false).unwrap_err();
    let text = render_diag(&err);
    assert!(text.contains("would replace a network"), "{text}");
    assert!(
        text.contains("network.lan (demo-lan) is replaced (stopped and started again) under running outsider"),
        "{text}"
    );
    assert!(text.contains("--disconnect-foreign"), "{text}");
    assert!(!text.contains("parked"), "a stopped domain is not cut off by a replace: {text}");
    check(true).expect("--disconnect-foreign lets it through");
    hv.clear_calls();
    let report = topo::apply::apply(&p, &hv, &options(4), &AtomicBool::new(false), &Silent);
    assert!(!report.failed(), "{report:#?}");
    converged(&l2, &hv).expect("converged");
    assert_eq!(hv.cut_nics(), [("outsider".to_string(), "52:54:00:aa:00:02".parse().unwrap())]);
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["outsider"].interfaces, observed.domains["outsider"].interfaces, "never touched");
    let touched: Vec<String> = mutating(&hv.calls()).into_iter().filter(|c| c.ends_with(" outsider")).collect();
    assert_eq!(touched, Vec::<String>::new(), "the foreign domain is never touched");
}

/// A subnet that a route of the host already has (a VPN's tun0, docker0) cannot start: libvirt
/// refuses it (src/network/bridge_driver_linux.c `networkCheckRouteCollision`: the route's
/// destination and netmask equal the network's). On a local host the plan refuses it first,
/// located at the network and naming the route's device, for a create and a replace alike;
/// the lab's own bridges' routes never count, and a route to a larger prefix is no collision.
#[test]
fn a_subnet_a_host_route_has_is_refused_at_plan_time() {
    let routed = || {
        host()
            .with_host_interfaces(&["eth0"])
            .with_host_routes(&[("tun0", "10.60.0.0/24"), ("docker0", "10.50.0.0/16")])
    };
    let refused = |l: &Lab, hv: &MemoryHypervisor| {
        let o = hv.observe().unwrap();
        match plan::plan(l, &o, "memory:///topo") {
            Err(e) => render_diag(&e),
            Ok(p) => panic!("not refused: {:#?}", actions(&p)),
        }
    };
    // Create: refused, nothing touched.
    let hv = routed();
    let onto_vpn = lab(&BASE.replace("10.50.0.", "10.60.0."));
    let text = refused(&onto_vpn, &hv);
    assert!(text.contains("topo::plan::route_taken"), "{text}");
    assert!(
        text.contains("subnet 10.60.0.0/24 of network `lan` is already a route of the host, through `tun0`"),
        "{text}"
    );
    assert!(text.contains("lab.yaml:"), "located: {text}");
    // The double refuses the start as libvirt does, when topo does not see the routes.
    let remote = host().with_host_routes(&[("tun0", "10.60.0.0/24")]);
    let (p, report) = apply_with(&onto_vpn, &remote, 1);
    assert!(report.failed(), "{p:#?}");
    let failed: Vec<String> = report
        .steps
        .iter()
        .filter_map(|s| match &s.outcome {
            StepOutcome::Failed { error } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(failed, ["start network demo-lan: internal error: Network is already in use by interface tun0"]);
    // A /16 route over the lab's /24 (docker0 above) is no collision; the lab's own routes
    // (its bridges, once active) never count.
    let l = lab(BASE);
    apply_ok(&l, &hv);
    assert!(hv.observe().unwrap().host_routes.unwrap().iter().any(|r| r.device == "demo-lan"));
    assert_replans_empty(&l, &hv);
    // Replace: refused before the working network is stopped.
    hv.clear_calls();
    let text = refused(&onto_vpn, &hv);
    assert!(text.contains("through `tun0`"), "{text}");
    assert_eq!(mutating(&hv.calls()), Vec::<String>::new());
}

/// Where the plan cannot see the host's routes (a remote host) and libvirt refuses to start
/// the replacement network after the working one was stopped, apply brings the old network
/// back: its previous config defined again, started, the lab's NICs plugged in again. The
/// step fails, saying so; the lab runs as before; apply again (the route gone) converges.
#[test]
fn a_replacement_that_does_not_start_brings_the_old_network_back() {
    let hv = host().with_host_routes(&[("tun0", "10.60.0.0/24")]);
    let l = lab(BASE);
    apply_ok(&l, &hv);
    let before = hv.observe().unwrap();
    let l2 = lab(&BASE.replace("10.50.0.", "10.60.0."));
    let (p, report) = apply_with(&l2, &hv, 4);
    assert_eq!(actions(&p), pairs(&[("network.lan", Action::Replace)]));
    let StepOutcome::Failed { error } = &report.steps[0].outcome else { panic!("{report:#?}") };
    let hint = error.hint();
    let error = error.to_string();
    assert!(error.contains("Network is already in use by interface tun0"), "{error}");
    assert!(error.contains("the network as it was before was brought back"), "{error}");
    assert!(hint.is_some_and(|h| h.contains("plugged the lab's NICs back in")), "{hint:?}");
    let o = hv.observe().unwrap();
    assert!(o.networks["demo-lan"].active);
    assert_eq!(o.networks["demo-lan"], before.networks["demo-lan"], "the old network, as it was");
    assert_eq!(hv.cut_nics(), vec![], "the lab's NICs are back on the bridge");
    assert_replans_empty(&l, &hv);
    hv.set_host_routes(&[]);
    apply_ok(&l2, &hv);
    assert_eq!(hv.cut_nics(), vec![]);
    // The same when libvirt refuses the new definition after the stop.
    let l3 = lab(&BASE.replace("10.50.0.", "10.70.0."));
    let before = hv.observe().unwrap();
    hv.fail_on("define_network", "demo-lan", fault("define network", "demo-lan"));
    let (_, report) = apply_with(&l3, &hv, 4);
    let StepOutcome::Failed { error } = &report.steps[0].outcome else { panic!("{report:#?}") };
    let error = error.to_string();
    assert!(error.contains("injected failure; the network as it was before was brought back"), "{error}");
    assert_eq!(hv.observe().unwrap().networks["demo-lan"], before.networks["demo-lan"]);
    assert_eq!(hv.cut_nics(), vec![]);
    apply_ok(&l3, &hv);
}

/// An owned network re-declared `external: true` is released (its tag removed), not
/// deleted under its VMs; destroy then leaves it.
#[test]
fn an_owned_network_declared_external_is_released() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    // `back` becomes the external network `demo-back` (an external network's key is its
    // libvirt name); an external network carries no reservations.
    let text = edit(
        BASE,
        "  back:\n    mode: isolated\n    subnet: 10.51.0.0/24\n    dhcp: true\n",
        "  demo-back:\n    external: true\n",
    );
    let text = edit(&text, "      - network: back\n        ip: 10.51.0.30\n", "      - network: demo-back\n");
    let text = text.replace("      - network: back\n", "      - network: demo-back\n");
    let l2 = lab(&text);
    let (p, _) = plan_on(&l2, &hv);
    let back = p.changes.iter().find(|c| c.libvirt_name == "demo-back").expect("a change for demo-back");
    assert_eq!(back.action, Action::Update, "{p:#?}");
    assert_eq!(back.reasons, vec![plan::Reason::Released]);
    assert_eq!(back.ops, vec![plan::Op::ReleaseNetwork]);
    hv.clear_calls();
    apply_ok(&l2, &hv);
    let calls = mutating(&hv.calls());
    assert!(!calls.iter().any(|c| c.contains("demo-back") && !c.starts_with("release_network")), "{calls:#?}");
    let o = hv.observe().unwrap();
    assert!(o.networks["demo-back"].owner.is_none() && o.networks["demo-back"].active);
    assert_replans_empty(&l2, &hv);
    let (_, report) = destroy_with(&l2, &hv, 1);
    assert!(!report.failed(), "{report:#?}");
    let o = hv.observe().unwrap();
    assert!(o.networks.contains_key("demo-back"), "destroy deleted a released network");
}

/// Runs `f` on a thread and fails if it has not returned within 60 s (a hang is the bug).
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("apply did not return: a worker is waiting forever"),
    }
}

/// A progress display that panics when one step starts: a bug inside a worker thread.
struct PanicsOn(&'static str);
impl topo::apply::progress::Progress for PanicsOn {
    fn event(&self, e: topo::apply::progress::Event<'_>) {
        if let topo::apply::progress::Event::Started { address, .. } = e
            && *address == self.0
        {
            panic!("progress display bug at {address}");
        }
    }
}

#[test]
fn a_panicking_worker_fails_its_step_and_leaves_no_one_waiting() {
    for parallelism in [1, 4] {
        let report = within_a_minute(move || {
            let hv = host();
            let l = lab(BASE);
            let (p, _) = plan_on(&l, &hv);
            topo::apply::apply(&p, &hv, &options(parallelism), &AtomicBool::new(false), &PanicsOn("vm.db"))
        });
        let db = report.steps.iter().find(|s| s.address == "vm.db").expect("vm.db step");
        match &db.outcome {
            StepOutcome::Failed { error } => {
                assert_eq!(error.to_string(), "internal error: progress display bug at vm.db");
                assert!(matches!(error, topo::apply::StepError::Panic(_)), "{error:?}");
                assert!(error.hint().is_some_and(|h| h.contains("bug in topo")), "{:?}", error.hint());
            }
            other => panic!("parallelism {parallelism}: {other:?}"),
        }
        assert!(report.failed());
    }
}

#[test]
fn a_huge_shutdown_timeout_does_not_overflow() {
    // `--graceful=584942417355y` (Duration::MAX): the deadline is past the end of the clock.
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    let p = plan::plan_destroy_with(&l, &hv.observe().unwrap(), plan::Shutdown::Graceful);
    let opts = topo::apply::Options { shutdown_timeout: std::time::Duration::MAX, ..options(4) };
    let report = within_a_minute(move || topo::apply::apply(&p, &hv, &opts, &AtomicBool::new(false), &Silent));
    assert!(!report.failed(), "{report:#?}");
}

/// The overlay's backing format is what the lab file declares (default qcow2), never read
/// from the image's first bytes: planned without the image's header (no path facts), the
/// declared format is the one carried to libvirt. A declared `raw` is another overlay.
/// (With the header read, a declared format the header contradicts is a plan refusal.)
#[test]
fn backing_format_is_declared_never_probed() {
    let volume = |text: &str| {
        let l = lab(text);
        let hv = MemoryHypervisor::new();
        let p = plan::plan(&l, &hv.observe().unwrap(), &hv.uri()).unwrap();
        p.changes
            .iter()
            .flat_map(|c| c.ops.iter())
            .find_map(|op| match op {
                topo::plan::Op::CreateVolume { volume } => Some(volume.clone()),
                _ => None,
            })
            .expect("an overlay volume")
    };
    let default = volume(DISK_LAB);
    assert_eq!(default.backing_format, topo::lab::model::ImageFormat::Qcow2);
    let raw = volume(&DISK_LAB.replace("size: 1GiB}", "size: 1GiB, format: raw}"));
    assert_eq!(raw.backing_format, topo::lab::model::ImageFormat::Raw);
    assert_ne!(raw.name, default.name, "another backing format is another overlay");
    let qcow2 = volume(&DISK_LAB.replace("size: 1GiB}", "size: 1GiB, format: qcow2}"));
    assert_eq!(qcow2, default, "the default, written out, changes nothing");
}

/// Every volume name derived from VM names is unique, whatever the names look like: the
/// overlay (`NAME-HASH.TAG.qcow2`) and seed (`NAME-cidata-HASH.TAG.img`) of VMs named like
/// each other's suffixes never meet.
#[test]
fn derived_volume_names_are_unique() {
    let mut text = String::from("apiVersion: topo/v1\nname: vols\nprefix: p-\nvms:\n");
    for vm in ["a", "a-cidata", "a_cidata", "a-1", "a-12345678", "cidata"] {
        text.push_str(&format!(
            "  {vm}:\n    hypervisor: qemu\n    boot: {{kernel: boot/vmlinuz}}\n    disk: {{image: images/base.qcow2}}\n"
        ));
    }
    let l = lab(&text);
    let mut names = std::collections::BTreeSet::new();
    for vm in l.vms.values() {
        assert!(names.insert(vm.overlay_name(&l.name).unwrap()), "overlay of {}", vm.name);
        if let Some(seed) = topo::guest::Seed::of(&l, vm).unwrap() {
            let s = seed.volume_name(&l, vm);
            assert!(topo::guest::is_seed_volume(s.as_str()));
            assert!(names.insert(s), "seed of {}", vm.name);
        }
    }
    assert!(names.len() >= 6, "{names:?}");
    assert!(names.iter().filter(|n| n.as_str().ends_with(".qcow2")).all(|n| !topo::guest::is_seed_volume(n.as_str())));
}

/// A lab VM undefined by hand while it runs (`virsh undefine`) stays running as a transient
/// domain, which libvirt forgets when it stops. The plan defines its config again (reason
/// `undefined-outside-topo`), and a stop for `state: stopped` comes after that define, so
/// the VM is kept. Mirrors libvirt: virDomainUndefine of an active domain makes it
/// transient; virDomainDestroy/Shutdown of a transient domain removes it.
#[test]
fn a_running_vm_undefined_by_hand_is_defined_again_before_it_stops() {
    // The double itself behaves as libvirt does.
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.undefine_domain("demo-db").unwrap();
    let o = hv.observe().unwrap();
    assert!(!o.domains["demo-db"].persistent);
    assert_eq!(o.domains["demo-db"].state, topo::host::observed::DomainState::Running);
    hv.destroy_domain("demo-db").unwrap();
    assert!(!hv.observe().unwrap().domains.contains_key("demo-db"), "a stopped transient domain is gone");

    // Kept running: the config is defined again in place, nothing else.
    for (text, stopped) in [(BASE.to_string(), false), (edit(BASE, "  db:\n", "  db:\n    state: stopped\n"), true)] {
        let hv = host();
        apply_ok(&lab(BASE), &hv);
        let id = hv.observe().unwrap().domains["demo-db"].uuid.clone();
        hv.undefine_domain("demo-db").unwrap();
        let l = lab(&text);
        let (p, _) = plan_on(&l, &hv);
        assert_eq!(actions(&p), pairs(&[("vm.db", Action::Update)]), "stopped: {stopped}");
        let c = &p.changes[0];
        assert_eq!(c.reasons[0], plan::Reason::UndefinedOutsideTopo, "{c:#?}");
        assert!(
            c.fields
                .iter()
                .any(|f| f.path == plan::fields::Field::Persistent && f.before.as_deref() == Some("no (transient)"))
        );
        let ops: Vec<&str> = c.ops.iter().map(|o| o.name()).collect();
        if stopped {
            assert_eq!(ops, ["define-domain", "stop-domain"], "define first, then stop");
        } else {
            assert_eq!(ops, ["define-domain"]);
        }
        hv.clear_calls();
        apply_ok(&l, &hv);
        assert_replans_empty(&l, &hv);
        let o = hv.observe().unwrap();
        let d = &o.domains["demo-db"];
        assert!(d.persistent);
        assert_eq!(d.uuid, id, "the same domain, not a new one");
        let want = if stopped {
            topo::host::observed::DomainState::Shutoff
        } else {
            topo::host::observed::DomainState::Running
        };
        assert_eq!(d.state, want);
        assert!(!hv.calls().iter().any(|c| c.starts_with("start_domain")), "not restarted: {:#?}", hv.calls());
    }
}

/// The same on libvirt's test driver through the real virt code (tier 3): its
/// virDomainUndefine of a running domain leaves it transient, and topo's define makes it
/// persistent again before `state: stopped` stops it.
#[test]
fn a_running_vm_undefined_by_hand_on_the_test_driver() {
    let hv = topo::host::hypervisor::libvirt::LibvirtHypervisor::connect("test:///default").unwrap();
    // The test driver drops `<dnsmasq:options>`: ping on, so none is written.
    let base = BASE
        .replace("    dhcp: true\n", "    dhcp: true\n    dhcp_ping: true\n")
        .replace("    autostart: true\n", "    autostart: true\n    dhcp_ping: true\n");
    apply_ok(&lab(&base), Host::libvirt(&hv));
    hv.undefine_domain("demo-db").unwrap();
    assert!(!hv.observe_libvirt().unwrap().domains["demo-db"].persistent);
    let l = lab(&edit(&base, "  db:\n", "  db:\n    state: stopped\n"));
    let (p, _) = plan_on(&l, Host::libvirt(&hv));
    assert_eq!(actions(&p), pairs(&[("vm.db", Action::Update)]));
    assert_eq!(p.changes[0].reasons[0], plan::Reason::UndefinedOutsideTopo);
    apply_ok(&l, Host::libvirt(&hv));
    assert_replans_empty(&l, Host::libvirt(&hv));
    let d = &hv.observe_libvirt().unwrap().domains["demo-db"];
    assert!(d.persistent);
    assert_eq!(d.state, topo::host::observed::DomainState::Shutoff);
}

/// Destroy of a lab whose running VM was undefined by hand: the transient domain is stopped
/// (which removes it) and its undefine counts as done; nothing is left.
#[test]
fn destroy_removes_a_transient_lab_vm() {
    let hv = host();
    let l = lab(BASE);
    apply_ok(&l, &hv);
    hv.undefine_domain("demo-db").unwrap();
    let (_, report) = destroy_with(&l, &hv, 1);
    assert!(!report.failed(), "{report:#?}");
    let o = hv.observe().unwrap();
    assert!(!o.domains.keys().any(|d| d.starts_with("demo-")), "{:?}", o.domains.keys());
}

/// Issue 18: a running NIC whose reservation changes is plugged in again (no restart), so the
/// guest asks DHCP again; `ip: dynamic` and a host name change alone re-plug nothing; each
/// apply converges to an empty plan.
#[test]
fn a_running_nics_new_address_replugs_it() {
    let hv = host();
    // web: eth1 on back derived, eth2 on back written (host name `web-eth2`).
    let t0 = edit(
        BASE,
        "      - network: back\n  db:",
        "      - network: back\n      - {network: back, ip: 10.51.0.60}\n  db:",
    );
    apply_ok(&lab(&t0), &hv);
    let l0 = lab(&t0);
    let web = &l0.vms[&topo::lab::model::VmName::new("web").unwrap()];
    let (eth1, derived) = (web.nics[1].mac, web.nics[1].ip.expect("a derived address"));
    assert_eq!(web.nics[1].ip_source, topo::lab::model::IpSource::Derived);
    let replugged = |p: &Plan| -> Vec<String> {
        p.changes
            .iter()
            .flat_map(|c| c.reasons.iter())
            .filter_map(|r| match r {
                plan::Reason::Replugged { fields } => Some(fields.iter().map(|f| f.to_string()).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };

    // Derived -> written: the network's entry changes, then web's eth1 is re-plugged.
    let t1 = edit(
        &t0,
        "      - network: back\n      - {network: back",
        "      - {network: back, ip: 10.51.0.77}\n      - {network: back",
    );
    let (p, _) = plan_on(&lab(&t1), &hv);
    assert_eq!(actions(&p), pairs(&[("network.back", Action::Update), ("vm.web", Action::Update)]));
    assert_eq!(replugged(&p), [format!("nic[{eth1}].ip")]);
    let web_change = p.changes.iter().find(|c| c.libvirt_name == "demo-web").expect("a change of web");
    let f = &web_change.fields[0];
    assert_eq!((f.before.as_deref(), f.after.as_deref()), (Some(derived.to_string().as_str()), Some("10.51.0.77")));
    hv.clear_calls();
    apply_ok(&lab(&t1), &hv);
    let calls = hv.calls();
    assert!(pos(&calls, "update_dhcp_host demo-back") < pos(&calls, "detach_device demo-web"), "{calls:#?}");
    assert!(pos(&calls, "detach_device demo-web") < pos(&calls, "attach_device demo-web"), "{calls:#?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("shutdown_domain")
            || c.starts_with("destroy_domain")
            || c.starts_with("start_domain")),
        "{calls:#?}"
    );
    assert_replans_empty(&lab(&t1), &hv);

    // Written -> dynamic: the entry goes, nothing is re-plugged (the old lease stays valid,
    // and a NIC without a reservation is verified at any lease); eth2's entry is renamed
    // `web` (a host name change alone: no re-plug either).
    let t2 = edit(&t1, "ip: 10.51.0.77", "ip: dynamic");
    let (p, _) = plan_on(&lab(&t2), &hv);
    assert_eq!(actions(&p), pairs(&[("network.back", Action::Update)]));
    apply_ok(&lab(&t2), &hv);
    assert_replans_empty(&lab(&t2), &hv);

    // Dynamic -> derived again: the same derived address, re-plugged (it had no entry).
    let t3 = edit(&t2, "{network: back, ip: dynamic}", "{network: back}");
    let (p, _) = plan_on(&lab(&t3), &hv);
    assert_eq!(actions(&p), pairs(&[("network.back", Action::Update), ("vm.web", Action::Update)]));
    let web_change = p.changes.iter().find(|c| c.libvirt_name == "demo-web").expect("a change of web");
    let f = &web_change.fields[0];
    assert_eq!((f.before.as_deref(), f.after.as_deref()), (Some("a lease"), Some(derived.to_string().as_str())));
    apply_ok(&lab(&t3), &hv);
    assert_replans_empty(&lab(&t3), &hv);

    // A stopped VM is not re-plugged: its config carries no address, the next boot asks.
    hv.clear_calls();
    let t4 = edit(
        &t3,
        "    memory: 256MiB\n    boot: {kernel: boot/vmlinuz}\n    nics:\n      - network: lan\n        ip: 10.50.0.20",
        "    memory: 256MiB\n    state: stopped\n    boot: {kernel: boot/vmlinuz}\n    nics:\n      - network: lan\n        ip: 10.50.0.20",
    );
    apply_ok(&lab(&t4), &hv);
    let t5 = edit(&t4, "{network: back, ip: 10.51.0.60}", "{network: back, ip: 10.51.0.61}");
    let (p, _) = plan_on(&lab(&t5), &hv);
    assert_eq!(actions(&p), pairs(&[("network.back", Action::Update)]));
    assert!(replugged(&p).is_empty());
}

/// A lab `subnet6` that a route of the host overlaps (a VPN's ULA /48 around it) is refused
/// at plan time on a local host, located at the network and naming the route's device; a
/// prefix outside it applies, and a replacement of that network to another prefix is not
/// refused by the network's own route on its bridge.
#[test]
fn a_subnet6_a_host_route_overlaps_is_refused_at_plan_time() {
    let hv = host().with_host_interfaces(&["eth0"]).with_host_routes6(&[("tun0", "fd00:60::/48")]);
    let with6 =
        |p: &str| lab(&edit(BASE, "    bridge: demo-lan\n", &format!("    bridge: demo-lan\n    subnet6: {p}\n")));
    let o = hv.observe().unwrap();
    let text = match plan::plan(&with6("fd00:60:0:1::/64"), &o, "memory:///topo") {
        Err(e) => render_diag(&e),
        Ok(p) => panic!("not refused: {:#?}", actions(&p)),
    };
    assert!(text.contains("topo::plan::route_taken"), "{text}");
    assert!(
        text.contains("subnet6 fd00:60:0:1::/64 of network `lan` overlaps a route of the host, fd00:60::/48")
            && text.contains("`tun0`"),
        "{text}"
    );
    assert!(text.contains("lab.yaml:"), "located: {text}");
    apply_ok(&with6("fd00:61::/64"), &hv);
    let o = hv.observe().unwrap();
    let p = plan::plan(&with6("fd00:62::/64"), &o, "memory:///topo").expect("a replacement is not refused");
    assert!(p.changes.iter().any(|c| c.action == Action::Replace), "{:#?}", actions(&p));
}
