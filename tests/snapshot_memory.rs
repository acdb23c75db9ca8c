//! Tier 2 (issue 19, whole-lab snapshots): `Session::snapshot_*` against the strict
//! in-memory double: save pauses every VM, snapshots each and resumes them all; a failed
//! snapshot deletes those made in the run and resumes every VM; restore brings the guests'
//! content back; list and delete; refusals before anything is touched; destroy removes the
//! lab's snapshots.

mod common;

use common::*;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::hypervisor::{HvError, HvErrorKind, Hypervisor};
use topo::host::observed::DomainState;
use topo::lab::model::{Lab, SnapshotName};
use topo::session::{Session, Silent};

/// Two VMs with a disk (and a seed) on one isolated network: lab `snap`.
const LAB: &str = "\
apiVersion: topo/v1
name: snap
networks:
  net:
    mode: isolated
    subnet: 10.81.0.0/24
vms:
  a:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2, size: 1GiB}
    nics: [{network: net}]
  b:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2, size: 1GiB}
    nics: [{network: net}]
";

/// The error of a call that must fail.
fn err<T>(r: miette::Result<T>) -> miette::Report {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn name(s: &str) -> SnapshotName {
    SnapshotName::new(s).unwrap()
}

/// A host with `text` applied; each its own host name, so the lab locks of tests running
/// side by side (keyed on the host) never meet.
fn applied(text: &str) -> (MemoryHypervisor, Lab) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let hv = host().with_hostname(&format!("snapshot-test-{}-{n}", std::process::id()));
    let l = lab(text);
    apply_ok(&l, &hv);
    (hv, l)
}

fn states(hv: &MemoryHypervisor, doms: &[&str]) -> Vec<DomainState> {
    doms.iter().map(|d| hv.domain_state(d).unwrap()).collect()
}

const DOMS: [&str; 2] = ["snap-a", "snap-b"];

#[test]
fn save_change_restore_brings_the_content_back_and_resumes_every_vm() {
    let (hv, l) = applied(LAB);
    let s = Session::over(&hv);
    hv.clear_calls();
    let saved = s.snapshot_save(&l, &name("s1"), &Silent::default()).expect("save");
    assert_eq!(saved.vms.iter().map(|v| v.vm.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    // Every VM paused before the first snapshot, resumed after the last.
    let calls: Vec<String> = hv
        .calls()
        .into_iter()
        .filter(|c| ["suspend_domain", "create_snapshot", "resume_domain"].iter().any(|p| c.starts_with(p)))
        .collect();
    assert_eq!(
        calls,
        [
            "suspend_domain snap-a",
            "suspend_domain snap-b",
            "create_snapshot snap-a",
            "create_snapshot snap-b",
            "resume_domain snap-a",
            "resume_domain snap-b"
        ]
    );
    assert_eq!(states(&hv, &DOMS), [DomainState::Running, DomainState::Running]);
    let before = hv.guest_content("snap-a");
    hv.write_guest("snap-a");
    assert_ne!(hv.guest_content("snap-a"), before);

    let restored = s.snapshot_restore(&l, &name("s1"), None, &Silent::default()).expect("restore");
    assert_eq!(restored.reverted.len(), 2);
    assert_eq!(hv.guest_content("snap-a"), before, "the change is gone");
    assert_eq!(states(&hv, &DOMS), [DomainState::Running, DomainState::Running]);

    let list = s.snapshot_list(&l).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "s1");
    assert_eq!(list[0].vms, ["a", "b"]);
    assert!(list[0].missing.is_empty());

    // The name is taken now.
    let e = s.snapshot_save(&l, &name("s1"), &Silent::default()).unwrap_err();
    assert!(format!("{e}").contains("exists already on VMs a, b"), "{e}");

    let deleted = s.snapshot_delete(&l, &name("s1"), &Silent::default()).unwrap();
    assert_eq!(deleted, ["a", "b"]);
    assert!(s.snapshot_list(&l).unwrap().is_empty());
    assert!(hv.snapshots("snap-a").is_empty() && hv.snapshots("snap-b").is_empty());
    let e = err(s.snapshot_restore(&l, &name("s1"), None, &Silent::default()));
    assert!(format!("{e}").contains("has no snapshot s1"), "{e}");
}

/// One VM's snapshot fails: the one made in this run is deleted, every VM resumed.
#[test]
fn a_failed_snapshot_deletes_the_others_and_resumes_every_vm() {
    let (hv, l) = applied(LAB);
    let s = Session::over(&hv);
    hv.fail_on(
        "create_snapshot",
        "snap-b",
        HvError {
            op: "create snapshot".into(),
            object: "snap-b".into(),
            message: "boom".into(),
            kind: HvErrorKind::Other,
            hint: None,
        },
    );
    let e = s.snapshot_save(&l, &name("s1"), &Silent::default()).unwrap_err();
    assert!(format!("{e}").contains("snapshot s1 of VM b failed"), "{e}");
    assert!(hv.snapshots("snap-a").is_empty(), "a's snapshot was deleted again");
    assert!(hv.snapshots("snap-b").is_empty());
    assert_eq!(states(&hv, &DOMS), [DomainState::Running, DomainState::Running]);
}

/// A failed pause resumes the VMs already paused.
#[test]
fn a_failed_pause_resumes_the_vms_already_paused() {
    let (hv, l) = applied(LAB);
    let s = Session::over(&hv);
    hv.fail_on(
        "suspend_domain",
        "snap-b",
        HvError {
            op: "suspend domain".into(),
            object: "snap-b".into(),
            message: "boom".into(),
            kind: HvErrorKind::Other,
            hint: None,
        },
    );
    assert!(s.snapshot_save(&l, &name("s1"), &Silent::default()).is_err());
    assert_eq!(states(&hv, &DOMS), [DomainState::Running, DomainState::Running]);
    assert!(hv.snapshots("snap-a").is_empty());
}

/// Refused up front, naming the VMs: one stopped, one without a disk (the tiny guest).
#[test]
fn save_is_refused_for_stopped_or_diskless_vms_before_anything_is_touched() {
    let (hv, l) = applied(LAB);
    hv.destroy_domain("snap-b").unwrap();
    hv.clear_calls();
    let e = Session::over(&hv).snapshot_save(&l, &name("s1"), &Silent::default()).unwrap_err();
    assert!(format!("{e}").contains("VMs b are not running"), "{e}");
    assert!(!hv.calls().iter().any(|c| c.starts_with("suspend") || c.starts_with("create_snapshot")));

    let (hv, l) = applied(BASE);
    hv.clear_calls();
    let e = Session::over(&hv).snapshot_save(&l, &name("s1"), &Silent::default()).unwrap_err();
    assert!(format!("{e}").contains("VMs db, router, web have no qcow2 disk"), "{e}");
    assert!(!hv.calls().iter().any(|c| c.starts_with("suspend") || c.starts_with("create_snapshot")));
}

/// A snapshot made by hand (another description) is not the lab's: not listed, not restored,
/// not deleted by `topo snapshot`; a VM lacking the lab's snapshot makes restore refuse.
#[test]
fn snapshots_made_by_hand_are_not_the_labs() {
    let (hv, l) = applied(LAB);
    let s = Session::over(&hv);
    hv.snapshot_internal("snap-a", "mine").unwrap();
    assert!(s.snapshot_list(&l).unwrap().is_empty());
    assert!(s.snapshot_delete(&l, &name("mine"), &Silent::default()).is_err());
    assert_eq!(hv.snapshots("snap-a"), ["mine"]);
    s.snapshot_save(&l, &name("s1"), &Silent::default()).unwrap();
    hv.delete_snapshot("snap-b", "s1").unwrap();
    let e = err(s.snapshot_restore(&l, &name("s1"), None, &Silent::default()));
    assert!(format!("{e}").contains("missing on VMs b"), "{e}");
    assert_eq!(s.snapshot_list(&l).unwrap()[0].missing, ["b"]);
}

/// destroy removes the lab's snapshots with its VMs (metadata, then the overlay holding
/// their data), and leaves nothing behind.
#[test]
fn destroy_removes_the_labs_snapshots() {
    let (hv, l) = applied(LAB);
    Session::over(&hv).snapshot_save(&l, &name("s1"), &Silent::default()).unwrap();
    let (p, r) = destroy_with(&l, &hv, 4);
    assert!(!r.failed(), "{r:?}");
    assert!(
        p.changes.iter().any(|c| c.ops.iter().any(|o| matches!(o, topo::plan::Op::DeleteSnapshotMetadata { .. }))),
        "{p:#?}"
    );
    assert!(hv.observe().unwrap().domains.is_empty());
    assert!(hv.snapshots("snap-a").is_empty());
}

/// Restore also brings back a VM stopped since the save (a running snapshot starts it).
#[test]
fn restore_starts_a_vm_stopped_since_the_save() {
    let (hv, l) = applied(LAB);
    let s = Session::over(&hv);
    s.snapshot_save(&l, &name("s1"), &Silent::default()).unwrap();
    hv.destroy_domain("snap-a").unwrap();
    s.snapshot_restore(&l, &name("s1"), None, &Silent::default()).unwrap();
    assert_eq!(states(&hv, &DOMS), [DomainState::Running, DomainState::Running]);
}
