//! Tiers 2 and 3 (issue 15, disks): a disk a domain still uses is never an orphan, whatever
//! path names it; snapshots of a lab VM (internal or external) never block its deletion or
//! replacement. Against the strict in-memory double, which keeps backing chains, volume
//! keys and snapshot metadata as libvirt 9.0 does, and against libvirt's test driver
//! through the real virt code.

mod common;

use common::*;
use topo::host::Host;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::hypervisor::{HvErrorKind, Hypervisor, VolumeSpec};
use topo::lab::model::Lab;
use topo::plan::{self, Action, Op, Plan, Reason};

const DOM: &str = "disky-box";

fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.changes.iter().map(|c| (c.address.to_string(), c.action)).collect()
}

/// The overlay's full path in the pool (default folder).
fn overlay(l: &Lab) -> String {
    let vm = l.vms.values().next().unwrap();
    format!("{OVERLAY_DIR}/{}", vm.overlay_name(&l.name).unwrap())
}

/// The name libvirt gives an external snapshot's layer of `path` (the last suffix
/// replaced by the snapshot's name).
fn layer(path: &str, snapshot: &str) -> String {
    format!("{}.{snapshot}", path.rsplit_once('.').unwrap().0)
}

fn volume_paths(hv: &MemoryHypervisor) -> Vec<String> {
    hv.volumes().into_iter().map(|v| v.0).collect()
}

/// A domain `clone` the lab does not own, whose disk `clone.qcow2` (in the overlay pool) has
/// the lab VM's overlay as its backing file.
fn linked_clone(hv: &MemoryHypervisor, l: &Lab) {
    let clone = VolumeSpec {
        pool: topo::lab::ownership::OVERLAY_POOL.into(),
        name: "clone.qcow2".into(),
        backing: overlay(l),
        backing_format: Default::default(),
        size: None,
    };
    hv.create_volume(&clone).unwrap();
    let disk =
        format!("<disk type='file' device='disk'><source file='{OVERLAY_DIR}/clone.qcow2'/><target dev='vda'/></disk>");
    hv.define_domain(&foreign_domain_xml("clone", &[]).replace("<devices>", &format!("<devices>{disk}"))).unwrap();
}

fn vm_change(p: &Plan) -> &plan::Change {
    p.changes.iter().find(|c| c.libvirt_name == DOM).unwrap_or_else(|| panic!("no change of {DOM}: {p:#?}"))
}

/// `virsh snapshot-create-as VM s1 --disk-only --atomic` on the running lab VM: its overlay
/// becomes the backing file of a new top layer. The next plan changes nothing (the overlay
/// is in use, the disk is the same disk), and a restart keeps the new layer as the disk.
#[test]
fn an_external_snapshot_keeps_the_overlay_in_use() {
    for local in [true, false] {
        let hv = if local { MemoryHypervisor::new().with_host_interfaces(&["eth0"]) } else { MemoryHypervisor::new() };
        let l = lab(DISK_LAB);
        apply_ok(&l, &hv);
        hv.snapshot_external(DOM, "s1").unwrap();
        let top = layer(&overlay(&l), "s1");
        let o = hv.observe().unwrap();
        assert_eq!(o.domains[DOM].disks[0], top);
        let base = l.vms.values().next().unwrap().disk.as_ref().unwrap().image.display().to_string();
        assert_eq!(
            o.domains[DOM].backing[0],
            vec![overlay(&l), base],
            "the chain: the overlay under the layer, then the base"
        );
        let (p, _) = plan_on(&l, &hv);
        assert!(p.is_empty(), "local {local}: {:#?}", actions(&p));
        // A change that restarts the VM defines it again: its disk stays the new layer.
        let more = lab(&edit(DISK_LAB, "hypervisor: qemu", "hypervisor: qemu\n    memory: 256MiB"));
        let p = apply_ok(&more, &hv);
        assert_eq!(actions(&p), vec![("vm.box".to_string(), Action::Update)]);
        let xml = vm_change(&p)
            .ops
            .iter()
            .find_map(|op| match op {
                Op::DefineDomain { xml } => Some(xml.clone()),
                _ => None,
            })
            .unwrap();
        assert!(xml.contains(&top) && !xml.contains(&format!("'{}'", overlay(&l))), "{xml}");
        // The read-only seed is left out of the snapshot, as libvirt 9.0 does.
        let seed = o.domains[DOM].disks[1].clone();
        assert!(seed.ends_with(".img") && seed.contains("-cidata-"), "{seed}");
        assert!(xml.contains(&seed), "{xml}");
        assert_eq!(hv.observe().unwrap().domains[DOM].disks[0], top);
        assert!(volume_paths(&hv).contains(&overlay(&l)));
        let (p, _) = plan_on(&more, &hv);
        assert!(p.is_empty(), "{:#?}", actions(&p));
    }
}

/// destroy of a running lab VM with an external and an internal snapshot: the snapshot
/// metadata is removed first, while it runs (a typed reason and a `snapshots` field say so),
/// then it is forced off, undefined, and the new layer, the overlay and the seed deleted, top
/// layers first; the base image is never a volume it deletes. Nothing is left.
#[test]
fn destroy_removes_snapshots_and_the_layers_above_the_overlay() {
    let hv = MemoryHypervisor::new();
    let l = lab(DISK_LAB);
    apply_ok(&l, &hv);
    hv.snapshot_external(DOM, "s1").unwrap();
    hv.snapshot_internal(DOM, "i1").unwrap();
    let p = plan::plan_destroy(&l, &hv.observe().unwrap());
    let c = vm_change(&p);
    assert!(c.reasons.contains(&Reason::Snapshots { names: vec!["i1".into(), "s1".into()] }), "{c:#?}");
    let field = c.fields.iter().find(|f| f.path == plan::fields::Field::Snapshots).expect("a snapshots field");
    assert_eq!((field.before.as_deref(), field.after.as_deref()), (Some("i1, s1"), None));
    let names: Vec<&str> = c.ops.iter().map(|o| o.name()).collect();
    assert_eq!(
        names[..3],
        ["delete-snapshot-metadata", "stop-domain", "undefine-domain"],
        "metadata first, while it runs: {names:?}"
    );
    let deleted: Vec<String> = c
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::DeleteVolume { name, .. } => Some(name.to_string()),
            _ => None,
        })
        .collect();
    let top = layer(&overlay(&l), "s1");
    let file = |p: &str| p.rsplit('/').next().unwrap().to_string();
    assert_eq!(deleted[..2], [file(&top), file(&overlay(&l))], "top layers first: {deleted:?}");
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(hv.observe().unwrap().domains.len(), 0);
    assert_eq!(volume_paths(&hv), Vec::<String>::new());
}

/// libvirt refuses to undefine an inactive domain that has snapshot metadata (qemu driver,
/// qemuDomainUndefineFlags without VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA); the double too.
/// A running one is made transient and keeps them.
#[test]
fn the_double_refuses_to_undefine_a_stopped_domain_with_snapshots() {
    let hv = MemoryHypervisor::new();
    apply_ok(&lab(DISK_LAB), &hv);
    hv.snapshot_internal(DOM, "i1").unwrap();
    hv.destroy_domain(DOM).unwrap();
    let e = hv.undefine_domain(DOM).unwrap_err();
    assert_eq!(e.kind, HvErrorKind::InvalidState);
    assert!(e.message.contains("cannot delete inactive domain with 1 snapshots"), "{e}");
    assert_eq!(hv.delete_snapshot_metadata(DOM, "nope").unwrap_err().kind, HvErrorKind::NotFound);
    hv.delete_snapshot_metadata(DOM, "i1").unwrap();
    hv.undefine_domain(DOM).unwrap();
}

/// A replace (new disk size) of a VM with snapshots: the metadata goes first, the VM is
/// replaced, no layer of the old disk is left, and the next plan is empty.
#[test]
fn a_replace_removes_snapshots_and_old_layers() {
    let hv = MemoryHypervisor::new();
    apply_ok(&lab(DISK_LAB), &hv);
    hv.snapshot_external(DOM, "s1").unwrap();
    hv.snapshot_internal(DOM, "i1").unwrap();
    let l = lab(&edit(DISK_LAB, "size: 1GiB", "size: 2GiB"));
    let p = apply_ok(&l, &hv);
    let c = vm_change(&p);
    assert_eq!(c.action, Action::Replace);
    assert_eq!(c.ops[0], Op::DeleteSnapshotMetadata { names: vec!["i1".into(), "s1".into()] });
    assert!(c.reasons.iter().any(|r| matches!(r, Reason::Snapshots { .. })), "{c:#?}");
    assert_eq!(hv.snapshots(DOM), Vec::<String>::new());
    let o = hv.observe().unwrap();
    assert_eq!(o.domains[DOM].disks[0], overlay(&l));
    // The new overlay and the seed only.
    assert_eq!(volume_paths(&hv).len(), 2, "{:?}", volume_paths(&hv));
    let (p, _) = plan_on(&l, &hv);
    assert!(p.is_empty(), "{:#?}", actions(&p));
}

/// The overlay pool's folder moved, a symlink left at the old path, the pool redefined over
/// the new folder: the domains' disks still name the old path. No overlay or seed of the
/// running VM is an orphan: on a local host by `(dev, inode)`, on another host (no stat,
/// no volume at the old path) because the names match and nothing says they differ. destroy
/// still removes them.
#[test]
fn a_pool_moved_behind_a_symlink_makes_no_orphans() {
    for local in [true, false] {
        let hv = if local { MemoryHypervisor::new().with_host_interfaces(&["eth0"]) } else { MemoryHypervisor::new() };
        let l = lab(DISK_LAB);
        apply_ok(&l, &hv);
        hv.move_pool_folder("/srv/topo");
        let o = hv.observe().unwrap();
        assert!(o.domains[DOM].disks.iter().all(|d| d.starts_with(OVERLAY_DIR)));
        assert!(o.volumes.values().all(|v| v.path.starts_with("/srv/topo/")));
        if local {
            assert_eq!(
                o.same_file(&overlay(&l), &overlay(&l).replace(OVERLAY_DIR, "/srv/topo")),
                topo::host::observed::Same::Yes
            );
        }
        let (p, _) = plan_on(&l, &hv);
        assert!(p.is_empty(), "local {local}: {:#?}", actions(&p));
        let (_, report) = destroy_with(&l, &hv, 4);
        assert!(!report.failed(), "{report:#?}");
        assert_eq!(volume_paths(&hv), Vec::<String>::new(), "local {local}");
    }
}

/// A domain the lab does not own built on the lab VM's overlay (a linked clone: its disk's
/// backing file is the overlay): destroy deletes the lab's VM and everything else, but not
/// the overlay under the other domain, and no apply calls it an orphan (or makes it anew).
#[test]
fn a_layer_another_domain_uses_is_never_deleted() {
    let hv = MemoryHypervisor::new().with_host_interfaces(&["eth0"]);
    let l = lab(DISK_LAB);
    apply_ok(&l, &hv);
    linked_clone(&hv, &l);
    let (_, report) = destroy_with(&l, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    let left = volume_paths(&hv);
    assert!(left.contains(&overlay(&l)), "the clone's backing file was deleted: {left:?}");
    assert!(left.contains(&format!("{OVERLAY_DIR}/clone.qcow2")));
    // Not an orphan for the next apply either: it is in use; and the lab cannot make its
    // VM's overlay anew under that name while the clone is built on it: refused.
    match plan::plan(&l, &hv.observe().unwrap(), &hv.uri()) {
        Err(plan::PlanError::Refused { problems, .. }) => {
            let codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
            assert_eq!(codes, ["topo::plan::disk_in_use"]);
        }
        other => panic!("expected a refusal, got {other:#?}"),
    }
}

/// Tier 3: snapshot metadata through the real virt code on libvirt's test driver. A snapshot
/// taken through libvirt's API is observed; libvirt refuses to undefine the stopped domain
/// while it has one; topo's destroy removes its metadata first and leaves nothing.
#[test]
fn snapshots_on_the_libvirt_test_driver() {
    let hv = topo::host::hypervisor::libvirt::LibvirtHypervisor::connect("test:///default").unwrap();
    // The test driver drops `<dnsmasq:options>`: ping on, so none is written.
    let base = BASE
        .replace("    dhcp: true\n", "    dhcp: true\n    dhcp_ping: true\n")
        .replace("    autostart: true\n", "    autostart: true\n    dhcp_ping: true\n");
    let l = lab(&base);
    apply_ok(&l, Host::libvirt(&hv));
    // Another connection to the same in-process driver (its state lives while one is open).
    let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
    let dom = conn.lookup_domain_by_name("demo-db").unwrap();
    dom.create_snapshot_xml("<domainsnapshot><name>s1</name></domainsnapshot>", 0).unwrap();
    dom.create_snapshot_xml("<domainsnapshot><name>s2</name></domainsnapshot>", 0).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().domains["demo-db"].snapshots, ["s1", "s2"]);
    hv.destroy_domain("demo-db").unwrap();
    let e = hv.undefine_domain("demo-db").unwrap_err();
    assert!(e.message.contains("snapshot"), "{e:?}");
    assert_eq!(e.kind, HvErrorKind::InvalidState, "{e:?}");
    assert_eq!(hv.delete_snapshot_metadata("demo-db", "nope").unwrap_err().kind, HvErrorKind::NotFound);
    hv.delete_snapshot_metadata("demo-db", "s2").unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().domains["demo-db"].snapshots, ["s1"]);
    let p = plan::plan_destroy(&l, &hv.observe_libvirt().unwrap());
    let c = p.changes.iter().find(|c| c.libvirt_name == "demo-db").unwrap();
    assert_eq!(c.ops[0], Op::DeleteSnapshotMetadata { names: vec!["s1".into()] });
    let (_, report) = destroy_with(&l, Host::libvirt(&hv), 1);
    assert!(!report.failed(), "{report:#?}");
    let o = hv.observe_libvirt().unwrap();
    assert!(!o.domains.keys().any(|d| d.starts_with("demo-")), "{:?}", o.domains.keys());
}

/// A replace that makes the lab's overlay anew under the same name (a cloud-init change)
/// while another domain's disk is built on that overlay: refused before anything is
/// touched (`topo::plan::disk_in_use`), with the commands that free it; the create would
/// otherwise fail on "exists" after the VM was already gone.
#[test]
fn a_replace_that_would_remake_a_disk_in_use_is_refused() {
    let hv = MemoryHypervisor::new().with_host_interfaces(&["eth0"]);
    let l = lab(DISK_LAB);
    apply_ok(&l, &hv);
    linked_clone(&hv, &l);
    let edited =
        lab(&edit(DISK_LAB, "    hypervisor: qemu\n", "    hypervisor: qemu\n    cloud_init: {user: alice}\n"));
    let before = hv.calls().len();
    match plan::plan(&edited, &hv.observe().unwrap(), &hv.uri()) {
        Err(plan::PlanError::Refused { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert_eq!(problems[0].code.as_str(), "topo::plan::disk_in_use");
            let text = render_diag(&problems[0]);
            assert!(text.contains("clone") && text.contains("virsh undefine clone"), "{text}");
        }
        other => panic!("expected a refusal, got {other:#?}"),
    }
    assert_eq!(hv.calls().len(), before + 1, "only observed");
}
