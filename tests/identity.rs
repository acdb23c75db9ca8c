//! Tier 2: lab identity (issue 15, section 1). Two lab files with one `name:` (a copied
//! folder, a colleague's clone, a worktree) are two instances of one lab: neither changes or
//! deletes what the other made unless `--take-over`; the same name with another `prefix:`
//! is another lab; tags of an older topo are adopted. docs/lab-file.md, "Lab identity".

mod common;

use common::*;
use topo::diag::Code;
use topo::host::hypervisor::Hypervisor;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::lab::model::Lab;
use topo::lab::ownership::Stamp;
use topo::plan::target::Direction;
use topo::plan::{self, Action, Op, PlanError, Reason};

const LAB: &str = "\
apiVersion: topo/v1
name: demo
networks:
  lan:
    mode: nat
    subnet: 10.70.0.0/24
vms:
  web:
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    nics: [{network: lan, ip: 10.70.0.10}]
  db:
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    nics: [{network: lan, ip: 10.70.0.20}]
";

/// The colleague's copy: the same lab without `db`.
fn without_db() -> String {
    LAB.split("  db:\n").next().unwrap().to_string()
}

/// Another lab file in the same folder (so its relative paths name the same files).
const COPY: &str = "tests/fixtures/copy.topo.yaml";

fn stamped(mut l: Lab, at: &str) -> Lab {
    l.stamp = Stamp { applied: Some(at.into()), user: Some("alice".into()) };
    l
}

fn refusal(l: &Lab, hv: &MemoryHypervisor) -> Vec<topo::diag::Problem> {
    match plan::plan(l, &hv.observe().unwrap(), "mem") {
        Err(PlanError::Refused { problems, .. }) => problems,
        Ok(p) => panic!("planned instead of refused: {:#?}", p.changes),
        Err(e) => panic!("other error: {e}"),
    }
}

fn all_names(hv: &MemoryHypervisor) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    let o = hv.observe().unwrap();
    (o.networks.keys().cloned().collect(), o.domains.keys().cloned().collect(), hv.volumes())
}

/// The example: a second lab file with the same name, lacking `db`, used to plan
/// `vm.db will be destroyed` and `apply -y` deleted it with its disk. Now plan, apply (under
/// the host lock it plans again) and destroy of the second file are refused, naming the
/// first file and when it was applied; the first lab is intact and plans empty.
#[test]
fn a_second_lab_file_with_the_same_name_is_refused_and_the_first_stays() {
    let hv = host();
    let first = stamped(lab(LAB), "2026-12-07T01:00:00Z");
    apply_ok(&first, &hv);
    let before = all_names(&hv);
    let second = lab_at(COPY, &without_db());
    let problems = refusal(&second, &hv);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.code, Code::OtherInstance);
    let first_file = first.instance().file;
    assert!(p.message.contains(&first_file), "{}", p.message);
    assert!(p.message.contains("last at 2026-12-07T01:00:00Z by alice"), "{}", p.message);
    assert!(p.message.contains("vm.db (demo-db)"), "{}", p.message);
    assert!(p.message.contains(&second.instance().file), "names this file too: {}", p.message);
    let observed = hv.observe().unwrap();
    assert!(plan::check_instances(&second, &observed, "mem").is_err(), "destroy is refused too");
    let destroy = plan::plan_destroy(&second, &observed);
    let guard = plan::check_executable(&second, &observed, &destroy, "mem", Direction::Destroy, false);
    assert!(matches!(guard, Err(PlanError::Refused { .. })), "the guard of every executed plan: {guard:?}");
    // Nothing changed; the first lab still owns everything and plans empty.
    assert_eq!(all_names(&hv), before);
    let (again, _) = plan_on(&first, &hv);
    assert!(again.is_empty(), "{:#?}", again.changes);
    assert!(plan::check_instances(&first, &observed, "mem").is_ok());
}

/// `--take-over` re-tags the other instance's objects in place: one define each, no stop,
/// start, undefine or volume op; then the taken-over file plans empty and the old one is
/// refused in turn, naming the new one.
#[test]
fn take_over_retags_in_place_and_then_the_old_file_is_refused() {
    let hv = host();
    let first = lab(LAB);
    apply_ok(&first, &hv);
    let mut second = stamped(lab_at(COPY, LAB), "2026-12-07T02:00:00Z");
    second.take_over = true;
    let (p, _) = plan_on(&second, &hv);
    assert_eq!(p.summary().update, 3, "{:#?}", p.changes);
    for c in &p.changes {
        assert_eq!(c.action, Action::Update, "{}", c.address);
        assert_eq!(c.reasons, vec![Reason::TakenOver { from: first.instance().file }], "{}", c.address);
        assert!(c.ops.iter().all(|o| matches!(o, Op::DefineDomain { .. } | Op::DefineNetwork { .. })), "{:?}", c.ops);
        assert_eq!(c.fields.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["owner"]);
        assert!(c.fields.iter().all(|f| !f.restarts && !f.forces_replacement));
    }
    let uuids = |hv: &MemoryHypervisor| -> Vec<Option<String>> {
        hv.observe().unwrap().domains.values().map(|d| d.uuid.clone()).collect()
    };
    let before = uuids(&hv);
    apply_ok(&second, &hv);
    assert_eq!(uuids(&hv), before, "the same domains");
    second.take_over = false;
    let (again, _) = plan_on(&second, &hv);
    assert!(again.is_empty(), "{:#?}", again.changes);
    let o = hv.observe().unwrap();
    assert_eq!(o.domains["demo-web"].owner.as_ref().unwrap().applied.as_deref(), Some("2026-12-07T02:00:00Z"));
    let problems = refusal(&first, &hv);
    assert!(problems[0].message.contains(&second.instance().file), "{}", problems[0].message);
    // A take-over by a file lacking db deletes it (the plan says so): Terraform's rule.
    let mut third = lab_at("tests/fixtures/third.topo.yaml", &without_db());
    third.take_over = true;
    let (p, _) = plan_on(&third, &hv);
    let db = p.changes.iter().find(|c| c.address == "vm.db").expect("db planned");
    assert_eq!((db.action, db.reasons.clone()), (Action::Delete, vec![Reason::NotInLabFile]));
}

/// The same name with another `prefix:` is another lab: both coexist; neither's apply,
/// orphan clean-up or destroy touches the other's networks, domains or volumes.
#[test]
fn the_same_name_with_another_prefix_is_another_lab() {
    let hv = host();
    let a = lab(LAB);
    apply_ok(&a, &hv);
    let b_text = LAB.replace("name: demo\n", "name: demo\nprefix: b-\n").replace("10.70.0.", "10.71.0.");
    let b = lab_at(COPY, &without_db_of(&b_text));
    let (p, _) = plan_on(&b, &hv);
    assert!(p.changes.iter().all(|c| c.action == Action::Create || c.address.kind() == "pool"), "{:#?}", p.changes);
    apply_ok(&b, &hv);
    // An orphan of lab a (its db's overlay, left by an interrupted replace): b never deletes it.
    let o = hv.observe().unwrap();
    let db_disks = o.domains["demo-db"].disks.clone();
    let (pb, _) = plan_on(&b, &hv);
    assert!(pb.is_empty(), "{:#?}", pb.changes);
    hv.destroy_domain("demo-db").unwrap();
    hv.undefine_domain("demo-db").unwrap();
    let (pb, _) = plan_on(&b, &hv);
    assert!(pb.is_empty(), "b plans to touch a's orphans: {:#?}", pb.changes);
    let (pd, report) = destroy_with(&b, &hv, 4);
    assert!(!report.failed(), "{report:#?}");
    assert!(pd.changes.iter().all(|c| c.libvirt_name.starts_with("b-") || c.address.kind() == "volume"));
    let left: Vec<String> = hv.volumes().into_iter().map(|v| v.0).collect();
    for d in &db_disks {
        assert!(left.contains(d), "b's destroy deleted a's orphan {d}: {left:?}");
    }
    let o = hv.observe().unwrap();
    assert!(o.domains.contains_key("demo-web") && o.networks.contains_key("demo-lan"));
    assert!(!o.domains.keys().any(|d| d.starts_with("b-")));
    // a's own plan deletes its orphans and recreates db.
    let (pa, _) = plan_on(&a, &hv);
    assert!(pa.changes.iter().any(|c| c.reasons.contains(&Reason::Orphaned)), "{:#?}", pa.changes);
}

fn without_db_of(text: &str) -> String {
    text.split("  db:\n").next().unwrap().to_string()
}

/// Objects tagged by a topo older than lab identity (no `prefix`, no `file`) are adopted by
/// the lab whose prefix their names carry: re-tagged in place (reason `adopted`), nothing
/// restarted; the same lab name under another prefix leaves them alone.
#[test]
fn tags_of_an_older_topo_are_adopted_in_place() {
    const PLAIN: &str = "\
apiVersion: topo/v1
name: demo
networks:
  lan:
    mode: isolated
    subnet: 10.72.0.0/24
vms:
  web:
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.72.0.10}]
";
    let l = lab(PLAIN);
    let (p, _) = plan_on(&l, &host());
    let old = |xml: &str| {
        let file = format!(" file=\"{}\"", l.instance().file);
        xml.replace(" prefix=\"demo-\"", "").replace(&file, "")
    };
    let mut hv = host();
    for c in &p.changes {
        for op in &c.ops {
            hv = match op {
                Op::DefineNetwork { xml } => hv.with_network_xml(&old(xml), true, true).unwrap(),
                Op::DefineDomain { xml } => hv.with_domain_xml(&old(xml), true).unwrap(),
                _ => hv,
            };
        }
    }
    let o = hv.observe().unwrap();
    let tag = o.domains["demo-web"].owner.clone().unwrap();
    assert_eq!((tag.prefix, tag.file), (None, None), "an older topo's tag");
    // The same name under another prefix: not its objects.
    let other = lab_at(COPY, &PLAIN.replace("name: demo\n", "name: demo\nprefix: x-\n").replace("10.72.", "10.73."));
    let (po, _) = plan_on(&other, &hv);
    assert!(po.changes.iter().all(|c| c.action == Action::Create), "{:#?}", po.changes);
    let (p, _) = plan_on(&l, &hv);
    assert_eq!(p.summary().update, 2, "{:#?}", p.changes);
    for c in &p.changes {
        assert_eq!(c.reasons, vec![Reason::Adopted]);
        assert!(c.ops.iter().all(|o| matches!(o, Op::DefineDomain { .. } | Op::DefineNetwork { .. })), "{:?}", c.ops);
    }
    let text = topo::plan::render::render(&p, "lab.yaml", topo::plan::render::Style::Plain);
    assert!(text.contains("(no lab file recorded)"), "{text}");
    apply_ok(&l, &hv);
    assert_eq!(hv.observe().unwrap().domains["demo-web"].state, topo::host::observed::DomainState::Running);
}

/// The contradiction: a network replaced in the plan that also deletes a VM on it
/// listed that VM as "NOT re-attached: the domain is not owned by this lab". The VM is
/// deleted before the network changes, so it is not in the blast radius at all.
#[test]
fn a_deleted_vm_is_not_in_a_replaced_networks_blast_radius() {
    let hv = host();
    let l = lab(LAB);
    apply_ok(&l, &hv);
    let edited = lab(&without_db().replace("10.70.0.", "10.74.0."));
    let (p, _) = plan_on(&edited, &hv);
    let lan = p.changes.iter().find(|c| c.address == "network.lan").unwrap();
    assert_eq!(lan.action, Action::Replace);
    let domains: Vec<&str> = lan.blast_radius.iter().map(|d| d.domain.as_str()).collect();
    assert_eq!(domains, ["demo-web"]);
    let text = topo::plan::render::render(&p, "lab.yaml", topo::plan::render::Style::Plain);
    assert!(!text.contains("not owned by this lab"), "{text}");
}
