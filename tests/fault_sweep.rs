//! Tier 2 fault sweep: for each scenario (create a lab with disks, edit it, change a NIC's
//! rate and netem in place, replace a
//! network under running VMs (also under a foreign VM, through the `--disconnect-foreign`
//! guard), re-plug NICs of a network restarted by hand, release a network
//! declared external, volumes deleted by hand, take the lab over from another lab file, as
//! it is and with edits, destroy, and an edit and a destroy of VMs with external and internal
//! snapshots; and wires: a lab created with one, one added to running VMs (hot-plugged, and
//! with cloud-init VMs replaced), removed, an end restarted by hand, destroyed) and for every
//! k, (a) the k-th hypervisor call fails (the machine's `set_netem` and `join_taps` count too),
//! (b) the process stops right after the k-th call (the double keeps what was done, every
//! later call fails, as after a kill -9). Then a new apply must converge to an empty plan
//! with no orphaned volume and no NIC left off its bridge, and destroy must leave nothing
//! the lab owned and change nothing it does not own.

mod common;

use std::collections::BTreeSet;

use common::*;
use topo::apply::progress::Silent;
use topo::host::hypervisor::Hypervisor;
use topo::host::hypervisor::memory::{Fault, MemoryHypervisor};
use topo::host::observed::Ownership;
use topo::lab::model::Lab;
use topo::plan::target::Direction;

const LAB: &str = "\
apiVersion: topo/v1
name: sweep
networks:
  default:
    external: true
  lan:
    mode: nat
    subnet: 10.50.0.0/24
    dhcp: {start: 10.50.0.100, end: 10.50.0.199}
    autostart: true
  back:
    mode: isolated
    subnet: 10.51.0.0/24
    dhcp: true
vms:
  a:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2, size: 1GiB}
    nics:
      - network: lan
        ip: 10.50.0.10
        rate: 10Mbit
        delay: 20ms
      - network: default
  b:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2, size: 1GiB}
    nics:
      - network: lan
        ip: 10.50.0.20
      - network: back
  c:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    nics:
      - network: back
        ip: 10.51.0.30
";

/// Every kind of change at once: a restart (a's memory), a replace (b's disk size), a VM
/// and a network removed (c, back; b unplugs from back), a VM added (d, with a disk), a
/// reservation changed (a's address).
fn edited() -> String {
    let t = LAB.replace("memory: 256MiB", "memory: 512MiB").replace("ip: 10.50.0.10", "ip: 10.50.0.11");
    let t = t.replacen("disk: {image: images/base.qcow2, size: 1GiB}\n    nics:\n      - network: lan\n        ip: 10.50.0.20\n      - network: back\n",
        "disk: {image: images/base.qcow2, size: 2GiB}\n    nics:\n      - network: lan\n        ip: 10.50.0.20\n", 1);
    let t = t.split("  c:\n").next().unwrap().to_string();
    let t = t.replace("  back:\n    mode: isolated\n    subnet: 10.51.0.0/24\n    dhcp: true\n", "");
    format!(
        "{t}  d:\n    hypervisor: qemu\n    boot: {{kernel: boot/vmlinuz}}\n    disk: {{image: images/base.qcow2}}\n    nics: [{{network: lan, ip: 10.50.0.40}}]\n"
    )
}

/// a's link impairment changed in place: a new rate (set live, then in the config; libvirt
/// clears the tap's qdiscs, so netem is set again) and new netem settings; b's first NIC
/// gets netem.
fn link_changed() -> String {
    link_changed_in(LAB)
}

/// [`link_changed`] of lab text `text`.
fn link_changed_in(text: &str) -> String {
    text.replace(
        "        rate: 10Mbit\n        delay: 20ms\n",
        "        rate: 20Mbit\n        delay: 50ms\n        jitter: 5ms\n        loss: 1%\n",
    )
    .replace("        ip: 10.50.0.20\n", "        ip: 10.50.0.20\n        loss: 2%\n")
}

/// A new subnet for `lan` while a and b run on it: replaced, NICs re-plugged.
fn new_subnet() -> String {
    LAB.replace("10.50.0.", "10.60.0.")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Apply,
    /// Apply as `topo apply --disconnect-foreign` does: the plan passes
    /// `plan::check_executable` (the guard every executed plan passes) first.
    ApplyDisconnectForeign,
    Destroy,
}

struct Scenario {
    name: &'static str,
    /// Applied before the step, without faults (`None`: an empty host).
    before: Option<String>,
    /// The lab file `before` is applied from (`None`: the step's own, [`LAB_PATH`]).
    before_from: Option<&'static str>,
    /// Done by hand on the host after `before` (a network restarted under running VMs).
    by_hand: Option<fn(&MemoryHypervisor)>,
    /// The lab the step uses.
    lab: String,
    step: Step,
    /// The step runs with `--take-over`.
    take_over: bool,
}

/// `back` re-declared `external: true` under its libvirt name (an external network carries
/// no reservations): released, not deleted.
fn back_external() -> String {
    LAB.replace(
        "  back:\n    mode: isolated\n    subnet: 10.51.0.0/24\n    dhcp: true\n",
        "  sweep-back:\n    external: true\n",
    )
    .replace("      - network: back\n        ip: 10.51.0.30\n", "      - network: sweep-back\n")
    .replace("      - network: back\n", "      - network: sweep-back\n")
}

/// `virsh net-destroy` + `net-start` of both lab networks: the running VMs' NICs are off
/// their bridges.
fn restart_networks(hv: &MemoryHypervisor) {
    for n in ["sweep-lan", "sweep-back"] {
        hv.stop_network(n).unwrap();
        hv.start_network(n).unwrap();
    }
}

/// `virsh vol-delete` of a's cloud-init seed (uploaded again in place) and of c's overlay
/// (c is replaced).
fn delete_volumes(hv: &MemoryHypervisor) {
    let o = hv.observe().unwrap();
    let volume = |vm: &str, part: &str| {
        let disk = o.domains[vm].disks.iter().find(|d| d.contains(part)).unwrap();
        disk.rsplit('/').next().unwrap().to_string()
    };
    hv.delete_volume("topo-overlays", &volume("sweep-a", "-cidata-")).unwrap();
    hv.delete_volume("topo-overlays", &volume("sweep-c", ".qcow2")).unwrap();
}

/// A domain outside the lab, started by hand on `lan` (`virsh define` + `start`).
fn intruder_on_lan(hv: &MemoryHypervisor) {
    hv.define_domain(&foreign_domain_xml("intruder", &[("52:54:00:ee:00:0a", "sweep-lan")])).unwrap();
    hv.start_domain("intruder").unwrap();
}

/// `virsh undefine` of the running c: a transient domain, gone once it stops.
fn undefine_running(hv: &MemoryHypervisor) {
    hv.undefine_domain("sweep-c").unwrap();
}

/// c asked to be `state: stopped` (after it was undefined by hand while running): its config
/// is defined again before the stop, so it is kept.
fn c_stopped() -> String {
    LAB.replace("  c:\n", "  c:\n    state: stopped\n")
}

/// `virsh snapshot-create-as sweep-a s1 --disk-only --atomic` (a's overlay becomes the
/// backing file of a new layer) and `virsh snapshot-create-as sweep-b i1` (internal): the
/// edit then restarts a (its disk stays the new layer) and replaces b (snapshot metadata
/// first); destroy removes both VMs with their metadata and every layer.
fn take_snapshots(hv: &MemoryHypervisor) {
    hv.snapshot_external("sweep-a", "s1").unwrap();
    hv.snapshot_internal("sweep-b", "i1").unwrap();
}

/// [`LAB`] with the wire a -- b (docs/wires.md).
fn wired() -> String {
    format!("{LAB}links:\n  - [a, b]\n")
}

/// [`LAB`] without cloud-init (so a wire added or removed changes no seed: the ends are
/// hot-plugged, nothing is replaced).
fn no_guest() -> String {
    LAB.replacen("name: sweep\n", "name: sweep\ncloud_init: {enabled: false}\n", 1)
}

/// [`no_guest`] with the wire a -- b.
fn no_guest_wired() -> String {
    format!("{}links:\n  - [a, b]\n", no_guest())
}

/// `virsh destroy` + `virsh start` of a: its wire tap is made anew, b's redirect points at
/// the tap that is gone.
fn restart_a(hv: &MemoryHypervisor) {
    hv.destroy_domain("sweep-a").unwrap();
    hv.start_domain("sweep-a").unwrap();
}

/// Where the lab was applied from before it is taken over (another lab file; in the same
/// folder, so that its relative paths name the same files, as in a moved folder or a clone).
const MOVED: &str = "tests/fixtures/clone.topo.yaml";

fn scenarios() -> Vec<Scenario> {
    let s = |name, before: Option<&str>, by_hand, lab: String, step| Scenario {
        name,
        before: before.map(String::from),
        before_from: None,
        by_hand,
        lab,
        step,
        take_over: false,
    };
    let take_over = |name, lab: String| Scenario {
        before_from: Some(MOVED),
        take_over: true,
        ..s(name, Some(LAB), None, lab, Step::Apply)
    };
    vec![
        s("create", None, None, LAB.into(), Step::Apply),
        s("edit", Some(LAB), None, edited(), Step::Apply),
        s("link changed in place", Some(LAB), None, link_changed(), Step::Apply),
        s("replace network", Some(LAB), None, new_subnet(), Step::Apply),
        s(
            "replace network under a foreign VM, --disconnect-foreign",
            Some(LAB),
            Some(intruder_on_lan),
            new_subnet(),
            Step::ApplyDisconnectForeign,
        ),
        s("network restarted by hand", Some(LAB), Some(restart_networks), LAB.into(), Step::Apply),
        s("release network restarted by hand", Some(LAB), Some(restart_networks), back_external(), Step::Apply),
        s("volumes deleted by hand", Some(LAB), Some(delete_volumes), LAB.into(), Step::Apply),
        s("VM undefined by hand, then stopped", Some(LAB), Some(undefine_running), c_stopped(), Step::Apply),
        take_over("take over from another lab file", LAB.into()),
        take_over("take over and edit", edited()),
        Scenario {
            take_over: true,
            before_from: Some(MOVED),
            ..s("destroy taken over", Some(LAB), None, LAB.into(), Step::Destroy)
        },
        s("destroy", Some(LAB), None, LAB.into(), Step::Destroy),
        s("snapshots, then an edit", Some(LAB), Some(take_snapshots), edited(), Step::Apply),
        s("snapshots, then destroy", Some(LAB), Some(take_snapshots), LAB.into(), Step::Destroy),
        s("create with a wire", None, None, wired(), Step::Apply),
        s("wire added to running VMs (hot-plugged)", Some(&no_guest()), None, no_guest_wired(), Step::Apply),
        s("wire added to cloud-init VMs (replaced)", Some(LAB), None, wired(), Step::Apply),
        s("wire removed", Some(&no_guest_wired()), None, no_guest(), Step::Apply),
        // The drift alone is one call (the join): with links changed in place, to sweep more.
        s(
            "wire end restarted by hand, links changed",
            Some(&no_guest_wired()),
            Some(restart_a),
            link_changed_in(&no_guest_wired()),
            Step::Apply,
        ),
        s("destroy with a wire", Some(&wired()), None, wired(), Step::Destroy),
    ]
}

/// A host with the test driver's `default` network and objects topo did not create: a
/// network and a running domain on it, which no run may change.
fn bystanders() -> MemoryHypervisor {
    // A local host: the taps are visible, so netem can be set.
    host()
        .with_host_interfaces(&["eth0"])
        .with_network_xml(&foreign_network_xml("keep-net", "keepbr0", "10.90.0.1", "255.255.255.0"), true, true)
        .unwrap()
        .with_domain_xml(&foreign_domain_xml("keep-vm", &[("52:54:00:ee:00:09", "keep-net")]), true)
        .unwrap()
}

/// What the bystanders look like (everything not named like the lab).
fn foreign(hv: &MemoryHypervisor) -> String {
    let o = hv.observe().unwrap();
    let nets: Vec<_> = o.networks.values().filter(|n| !n.name.starts_with("sweep-")).collect();
    let doms: Vec<_> = o.domains.values().filter(|d| !d.name.starts_with("sweep-")).collect();
    format!("{nets:?}{doms:?}")
}

/// The lab the scenario's step uses, with its `--take-over`.
fn scenario_lab(s: &Scenario) -> Lab {
    let mut l = lab(&s.lab);
    l.take_over = s.take_over;
    l
}

fn start(s: &Scenario) -> MemoryHypervisor {
    let hv = bystanders();
    if let Some(b) = &s.before {
        apply_ok(&lab_at(s.before_from.unwrap_or(LAB_PATH), b), &hv);
    }
    if let Some(f) = s.by_hand {
        f(&hv);
    }
    hv
}

/// Runs the scenario's step; true when it reported a failure.
fn run(s: &Scenario, l: &Lab, hv: &MemoryHypervisor, parallelism: usize) -> bool {
    match s.step {
        Step::Apply => apply_with(l, hv, parallelism).1.failed(),
        Step::ApplyDisconnectForeign => {
            let (p, observed) = plan_on(l, hv);
            let guard = topo::plan::check_executable(l, &observed, &p, &hv.uri(), Direction::Apply, true);
            assert!(guard.is_ok(), "--disconnect-foreign lets the replace through: {guard:?}");
            let report = topo::apply::apply(&p, hv, &options(parallelism), &Default::default(), &Silent);
            report.failed()
        }
        Step::Destroy => destroy_with(l, hv, parallelism).1.failed(),
    }
}

/// The lab's NICs that are off their network's bridge (a foreign domain's NIC cut off with
/// `--disconnect-foreign` stays so: topo never touches it).
fn lab_cut(hv: &MemoryHypervisor) -> Vec<(String, topo::lab::model::MacAddr)> {
    hv.cut_nics().into_iter().filter(|(d, _)| d.starts_with("sweep-")).collect()
}

/// Volumes that no domain uses.
fn orphans(hv: &MemoryHypervisor) -> Vec<String> {
    let o = hv.observe().unwrap();
    let used: BTreeSet<&str> = o.domains.values().flat_map(|d| d.files()).collect();
    hv.volumes().into_iter().map(|v| v.0).filter(|p| !used.contains(p.as_str())).collect()
}

/// Everything on the host that `lab` owns (volumes: any tagged with its name).
fn owned(l: &Lab, hv: &MemoryHypervisor) -> Vec<String> {
    let o = hv.observe().unwrap();
    let nets = o.networks.values().filter(|n| n.ownership(l) == Ownership::ThisLab).map(|n| n.name.clone());
    let doms = o.domains.values().filter(|d| d.ownership(l) == Ownership::ThisLab).map(|d| d.name.clone());
    let vols = o
        .volumes
        .values()
        .filter(|v| topo::lab::ownership::volume_owned_by(l.name.as_str(), &v.name))
        .map(|v| v.path.clone());
    nets.chain(doms).chain(vols).collect()
}

#[test]
fn every_fault_at_every_call_converges() {
    // Whether some sweep reaches the machine's change (netem on a tap), not only libvirt's.
    let mut machine_swept = false;
    // Whether some sweep reaches the join of a wire's taps (`join_taps`, on the machine).
    let mut wire_swept = false;
    for s in scenarios() {
        let l = scenario_lab(&s);
        // The length of the sweep: the calls of a clean run.
        let hv = start(&s);
        hv.clear_calls();
        hv.count_calls();
        assert!(!run(&s, &l, &hv, 1), "{}: the clean run failed", s.name);
        let n = hv.disarm();
        machine_swept |= hv.calls().iter().any(|c| c.starts_with("set_netem vnet"));
        wire_swept |= hv.calls().iter().any(|c| c.starts_with("join_taps tw"));
        assert!(n >= 4, "{}: only {n} calls", s.name);
        let untouched = foreign(&hv);
        // Parallelism 1 makes the k-th call the same call every time; 4 runs the steps of
        // the plan as apply does by default (the k-th call is then whichever comes k-th).
        for (fault, parallelism) in
            [(Fault::FailCall, 1), (Fault::StopAfterCall, 1), (Fault::FailCall, 4), (Fault::StopAfterCall, 4)]
        {
            let mut failed = 0;
            for k in 1..=n {
                let what = format!("{} / {fault:?} at call {k} of {n}, parallelism {parallelism}", s.name);
                let hv = start(&s);
                hv.arm(k, fault);
                failed += usize::from(run(&s, &l, &hv, parallelism));
                hv.disarm();
                // A new process: apply again (or destroy again) must converge.
                match s.step {
                    Step::Apply | Step::ApplyDisconnectForeign => {
                        let (p, report) = apply_with(&l, &hv, 4);
                        assert!(!report.failed(), "{what}: apply again failed: {report:#?}\nplan: {p:#?}");
                        if let Err(e) = converged(&l, &hv) {
                            panic!("{what}: not converged:\n{}", render_diag(&e));
                        }
                        assert_eq!(orphans(&hv), Vec::<String>::new(), "{what}: orphaned volumes");
                        assert_eq!(lab_cut(&hv), vec![], "{what}: NICs left off their network's bridge");
                        seeds_whole(&l, &hv).unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Step::Destroy => {}
                }
                let (p, report) = destroy_with(&l, &hv, 4);
                assert!(!report.failed(), "{what}: destroy failed: {report:#?}\nplan: {p:#?}");
                assert_eq!(owned(&l, &hv), Vec::<String>::new(), "{what}: destroy left objects of the lab");
                assert_eq!(hv.volumes(), vec![], "{what}: destroy left volumes");
                assert_eq!(foreign(&hv), untouched, "{what}: objects the lab does not own changed");
            }
            // The faults did hit: all but the last call's crash, and all but the few calls
            // whose failure an op tolerates (an ACPI request ignored), fail the run.
            eprintln!("{}: {fault:?}, parallelism {parallelism}: {failed} of {n} runs failed", s.name);
            assert!(
                failed * 10 >= n * 8 || failed + 1 >= n,
                "{}: {fault:?}: only {failed} of {n} faulted runs failed",
                s.name
            );
        }
    }
    assert!(machine_swept, "no scenario sets netem on a tap: the machine's change is not swept");
    assert!(wire_swept, "no scenario joins a wire's taps: join_taps is not swept");
}

/// Every seed volume the lab's domains use holds exactly its seed's image (a seed under its
/// own name is whole: `guest::partial_seed_name`).
fn seeds_whole(l: &Lab, hv: &MemoryHypervisor) -> Result<(), String> {
    for vm in l.vms.values() {
        let Some(seed) = topo::guest::Seed::of(l, vm).unwrap() else { continue };
        let name = seed.volume_name(l, vm);
        let got = hv
            .download_volume(topo::lab::ownership::OVERLAY_POOL, name.as_str())
            .map_err(|e| format!("{name}: {e}"))?;
        if got != seed.image().unwrap() {
            return Err(format!("{name}: {} bytes, not the seed's {}", got.len(), seed.image().unwrap().len()));
        }
    }
    Ok(())
}

/// A kill during the upload of a seed volume (the stream cut half-way: the volume holds
/// part of its bytes) used to leave a truncated seed under its final name, which no later
/// plan repaired. Now the upload goes to a partial name: for every seed upload of every
/// scenario, the process dies during it, and the next plan deletes the leftover with reason
/// `interrupted-upload`, uploads the seed again, and converges with every seed whole.
#[test]
fn a_kill_during_a_seed_upload_converges_with_a_whole_seed() {
    let mut hits = 0;
    for s in scenarios().into_iter().filter(|s| s.step == Step::Apply) {
        let l = scenario_lab(&s);
        let hv = start(&s);
        hv.clear_calls();
        hv.count_calls();
        assert!(!run(&s, &l, &hv, 1), "{}: the clean run failed", s.name);
        hv.disarm();
        // The k (1-based, `observe` not counted) of each upload.
        let counted: Vec<String> = hv.calls().into_iter().filter(|c| c != "observe").collect();
        let uploads: Vec<usize> =
            counted.iter().enumerate().filter(|(_, c)| c.starts_with("upload_volume ")).map(|(i, _)| i + 1).collect();
        for k in uploads {
            hits += 1;
            let what = format!("{} / kill during call {k} ({})", s.name, counted[k - 1]);
            let hv = start(&s);
            hv.arm(k, Fault::StopDuringCall);
            assert!(run(&s, &l, &hv, 1), "{what}: the run did not fail");
            hv.disarm();
            assert!(
                hv.volumes().iter().any(|(p, _)| topo::guest::is_partial_seed(p.rsplit('/').next().unwrap())),
                "{what}: the cut upload left its partial volume"
            );
            assert!(seeds_whole(&l, &hv).is_err(), "{what}: a seed is missing until the next apply");
            let (p, _) = plan_on(&l, &hv);
            let leftover = p
                .changes
                .iter()
                .find(|c| c.reasons.contains(&topo::plan::Reason::InterruptedUpload))
                .unwrap_or_else(|| panic!("{what}: no interrupted-upload change: {p:#?}"));
            assert_eq!(leftover.action, topo::plan::Action::Delete, "{what}");
            let (p, report) = apply_with(&l, &hv, 4);
            assert!(!report.failed(), "{what}: apply again failed: {report:#?}\nplan: {p:#?}");
            if let Err(e) = converged(&l, &hv) {
                panic!("{what}: not converged:\n{}", render_diag(&e));
            }
            assert_eq!(orphans(&hv), Vec::<String>::new(), "{what}: orphaned volumes");
            seeds_whole(&l, &hv).unwrap_or_else(|e| panic!("{what}: {e}"));
            let (_, report) = destroy_with(&l, &hv, 4);
            assert!(!report.failed(), "{what}");
            assert_eq!(hv.volumes(), vec![], "{what}: destroy left volumes");
        }
    }
    assert!(hits >= 3, "the scenarios upload seeds: {hits}");
}

/// The replace guard on its own: without `--disconnect-foreign`, the replace under a running
/// foreign domain is refused before any call that changes the host; the host is as it was,
/// and the foreign VM keeps its link.
#[test]
fn a_refused_replace_touches_nothing() {
    let s = &scenarios()[4];
    assert!(matches!(s.step, Step::ApplyDisconnectForeign), "{}", s.name);
    let hv = start(s);
    let l = lab(&s.lab);
    let before = format!("{:?}", hv.observe().unwrap());
    hv.clear_calls();
    let (p, observed) = plan_on(&l, &hv);
    let err = topo::plan::check_executable(&l, &observed, &p, &hv.uri(), Direction::Apply, false).unwrap_err();
    assert!(render_diag(&err).contains("under running intruder"), "{}", render_diag(&err));
    assert_eq!(hv.calls(), ["observe"], "only observed");
    assert_eq!(format!("{:?}", hv.observe().unwrap()), before);
    assert_eq!(hv.cut_nics(), vec![]);
}

/// A define that libvirt refuses after the overlay and seed exist (issue: a control
/// character in `cmdline`) leaves tagged volumes no domain uses: the next apply deletes and
/// recreates them instead of failing on "exists already", and destroy removes them.
#[test]
fn a_refused_define_does_not_wedge_later_applies() {
    let hv = host().with_host_interfaces(&["eth0"]);
    let l = lab(LAB);
    hv.fail_on(
        "define_domain",
        "sweep-a",
        topo::host::hypervisor::HvError {
            op: "define domain".into(),
            object: "sweep-a".into(),
            message: "XML error: invalid cmdline".into(),
            kind: topo::host::hypervisor::HvErrorKind::InvalidXml,
            hint: None,
        },
    );
    let (_, report) = apply_with(&l, &hv, 1);
    assert!(report.failed());
    assert_eq!(orphans(&hv).len(), 2, "the overlay and the cloud-init seed of a exist, no domain uses them");
    let (p, _) = plan_on(&l, &hv);
    let orphan = p.changes.iter().find(|c| c.address.kind() == "volume").expect("the orphan is planned");
    assert_eq!(orphan.reasons, vec![topo::plan::Reason::Orphaned]);
    apply_ok(&l, &hv);
    assert_eq!(orphans(&hv), Vec::<String>::new());
    // Left by a failed apply, removed by destroy too.
    let hv = host().with_host_interfaces(&["eth0"]);
    hv.fail_on(
        "define_domain",
        "sweep-a",
        topo::host::hypervisor::HvError {
            op: "define domain".into(),
            object: "sweep-a".into(),
            message: "XML error".into(),
            kind: topo::host::hypervisor::HvErrorKind::InvalidXml,
            hint: None,
        },
    );
    apply_with(&l, &hv, 1);
    let (_, report) = destroy_with(&l, &hv, 1);
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(hv.volumes(), vec![]);
}
