//! The `topo plan --json` document and the saved plan file match docs/plan-json.md exactly:
//! the doc's key tables are parsed and every object of real plans is checked against them
//! (every documented key present with its type, no undocumented key). Also the staleness
//! rules of saved plans.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;
use topo::host::hypervisor::Hypervisor;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::observed::{Observed, PathFact};
use topo::plan::json::to_json;
use topo::plan::saved::{SAVED_FORMAT, SavedPlan, SavedPlanError, fingerprint, sha256_hex};

const DOC: &str = include_str!("../docs/plan-json.md");
/// The `problem`, `location` and `position` tables the plan's `warnings` follow.
const RESULTS_DOC: &str = include_str!("../docs/results-json.md");

/// One documented key: its type names (`string|null` -> [string, null]) and whether it is
/// only present for some reason kinds (`array (only for ...)`).
#[derive(Debug)]
struct Key {
    types: Vec<String>,
    optional: bool,
}

/// The tables of docs/plan-json.md and docs/results-json.md (no name is in both).
fn tables() -> BTreeMap<String, BTreeMap<String, Key>> {
    let mut out = tables_of(RESULTS_DOC);
    for (name, t) in tables_of(DOC) {
        assert!(out.insert(name.clone(), t).is_none(), "table {name} is in both docs");
    }
    out
}

/// `<!-- json-table: NAME -->` followed by a `| key | type | meaning |` table.
fn tables_of(doc: &str) -> BTreeMap<String, BTreeMap<String, Key>> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("<!-- json-table: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        let mut keys = BTreeMap::new();
        for row in lines.by_ref().skip(2) {
            if !row.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = row.split(" | ").map(|c| c.trim_matches(|ch| ch == '|' || ch == ' ')).collect();
            let key = cells[0].trim_matches('`').to_string();
            let ty = cells.get(1).copied().unwrap_or_default().replace("\\|", "|");
            let first = ty.split_whitespace().next().unwrap_or_default();
            keys.insert(
                key,
                Key { types: first.split('|').map(str::to_owned).collect(), optional: ty.contains("(only for") },
            );
        }
        out.insert(name.to_string(), keys);
    }
    out
}

/// `obj` has exactly the keys of table `name`, with the documented types.
fn check(tables: &BTreeMap<String, BTreeMap<String, Key>>, name: &str, obj: &Value) {
    let table = tables.get(name).unwrap_or_else(|| panic!("docs/plan-json.md has no table {name}"));
    let map = obj.as_object().unwrap_or_else(|| panic!("{name}: not an object: {obj}"));
    for k in map.keys() {
        assert!(table.contains_key(k), "{name}: key `{k}` is not documented in docs/plan-json.md");
    }
    for (k, spec) in table {
        match map.get(k) {
            None => assert!(spec.optional, "{name}: documented key `{k}` missing in {obj}"),
            Some(v) => assert!(
                spec.types.iter().any(|t| t == json_type(v)),
                "{name}.{k}: documented as {:?}, found {} ({v})",
                spec.types,
                json_type(v)
            ),
        }
    }
}

/// Checks a whole plan document; returns the reason kinds and actions seen.
fn check_plan(doc: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let t = tables();
    let kinds_documented: BTreeSet<String> = t["reason-kind"].keys().cloned().collect();
    check(&t, "plan", doc);
    let mut kinds = BTreeSet::new();
    let mut actions = BTreeSet::new();
    for c in doc["changes"].as_array().unwrap() {
        check(&t, "change", c);
        let action = c["action"].as_str().unwrap();
        assert!(["create", "update", "replace", "delete", "no-op"].contains(&action), "undocumented action {action}");
        actions.insert(action.to_string());
        for r in c["reasons"].as_array().unwrap() {
            check(&t, "reason", r);
            let kind = r["kind"].as_str().unwrap().to_string();
            assert!(kinds_documented.contains(&kind), "reason kind {kind} is not documented");
            let has_fields = r.get("fields").is_some();
            assert_eq!(
                has_fields,
                ["requires-replace", "requires-restart", "replugged"].contains(&kind.as_str()),
                "{r}"
            );
            if let Some(f) = r.get("fields") {
                assert!(f.as_array().unwrap().iter().all(Value::is_string));
            }
            kinds.insert(kind);
        }
        for f in c["fields"].as_array().unwrap() {
            check(&t, "field", f);
        }
        for b in c["blast_radius"].as_array().unwrap() {
            check(&t, "blast_radius", b);
        }
    }
    check(&t, "summary", &doc["summary"]);
    for w in doc["warnings"].as_array().unwrap() {
        check(&t, "problem", w);
        for l in w["locations"].as_array().unwrap() {
            check(&t, "location", l);
            check(&t, "position", &l["start"]);
            check(&t, "position", &l["end"]);
        }
    }
    (kinds, actions)
}

fn json_of(yaml: &str, hv: &MemoryHypervisor) -> Value {
    let (p, _) = plan_on(&lab(yaml), hv);
    to_json(&p)
}

#[test]
fn real_plans_match_the_documented_shape() {
    let mut kinds = BTreeSet::new();
    let mut actions = BTreeSet::new();
    let mut add = |doc: &Value| {
        let (k, a) = check_plan(doc);
        kinds.extend(k);
        actions.extend(a);
    };
    let hv = host();
    // Create.
    add(&json_of(BASE, &hv));
    apply_ok(&lab(BASE), &hv);
    // Update with restart, replace with blast radius, delete, a stopped VM, a new VM.
    let text = BASE.split("  db:\n").next().unwrap().replace("10.50.0.", "10.60.0.");
    let text = edit(
        &text,
        "  router:\n    hypervisor: qemu\n    memory: 256MiB",
        "  router:\n    hypervisor: qemu\n    memory: 512MiB",
    );
    let text = format!(
        "{text}  extra:\n    hypervisor: qemu\n    boot: {{kernel: boot/vmlinuz}}\n    nics: [{{network: back}}]\n"
    );
    hv.shutdown_domain("demo-web").unwrap();
    let doc = json_of(&text, &hv);
    assert_eq!(doc["summary"], serde_json::json!({"create": 1, "update": 3, "replace": 1, "delete": 1}));
    assert!(doc["changes"].as_array().unwrap().iter().any(|c| !c["blast_radius"].as_array().unwrap().is_empty()));
    add(&doc);
    // An inactive network.
    hv.start_domain("demo-web").unwrap();
    hv.destroy_domain("demo-db").unwrap();
    hv.destroy_domain("demo-web").unwrap();
    hv.stop_network("demo-back").unwrap();
    add(&json_of(BASE, &hv));
    // Destroy.
    add(&to_json(&topo::plan::plan_destroy(&lab(BASE), &hv.observe().unwrap())));
    for k in ["not-on-host", "not-in-lab-file", "lab-file-changed", "requires-replace", "not-active", "not-running"] {
        assert!(kinds.contains(k), "no plan above produced reason {k}: {kinds:?}");
    }
    for a in ["create", "update", "replace", "delete"] {
        assert!(actions.contains(a), "no plan above produced action {a}");
    }
    assert!(kinds.contains("requires-restart") && kinds.contains("destroy-requested"));
}

/// A NIC re-plugged for its MTU: reason `replugged` with its field, the documented shape;
/// the network's MTU as field `mtu` of a replacement (`default` where the host has none).
#[test]
fn mtu_changes_in_the_json() {
    let hv = host();
    let text = edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    mtu: 9000\n");
    apply_ok(&lab(&text), &hv);
    let mac = lab(&text).vms[&"web".parse().unwrap()].nics[0].mac;
    let plain_nic = topo::host::xml::plain_interface_xml(mac, "demo-lan");
    hv.detach_device("demo-web", &plain_nic).unwrap();
    hv.attach_device("demo-web", &plain_nic).unwrap();
    let doc = json_of(&text, &hv);
    check_plan(&doc);
    let web = &doc["changes"][0];
    assert_eq!(web["reasons"][1], serde_json::json!({"kind": "replugged", "fields": [format!("nic[{mac}].mtu")]}));
    assert_eq!(
        web["fields"][0],
        serde_json::json!({"path": format!("nic[{mac}].mtu"), "before": "default", "after": "9000",
                           "forces_replacement": false, "restarts": false})
    );
    let doc = json_of(&edit(&text, "    mtu: 9000\n", "    mtu: 1450\n"), &hv);
    check_plan(&doc);
    let lan = doc["changes"].as_array().unwrap().iter().find(|c| c["address"] == "network.lan").unwrap();
    assert_eq!(lan["action"], "replace");
    assert_eq!(lan["reasons"][1], serde_json::json!({"kind": "requires-replace", "fields": ["mtu"]}));
}

/// A plan's warnings (here: the lab's files in no storage pool of a host whose files are not
/// this machine's) are in the JSON, each located in the lab file as validate's problems are.
#[test]
fn warnings_are_in_the_json_located() {
    let l = lab(BASE);
    let hv = host();
    let mut observed = hv.observe().unwrap();
    assert_eq!(to_json(&topo::plan::plan(&l, &observed, &hv.uri()).unwrap())["warnings"], serde_json::json!([]));
    for vm in l.vms.values() {
        for (_, p, _) in vm.host_files() {
            observed.paths.insert(p.display().to_string(), PathFact::Unchecked { inactive_pool: None });
        }
    }
    let doc = to_json(&topo::plan::plan(&l, &observed, &hv.uri()).unwrap());
    check_plan(&doc);
    let w = doc["warnings"].as_array().unwrap();
    // One warning per file (router: kernel and initrd; web and db: kernel), each naming
    // every VM that uses it.
    let files: std::collections::BTreeSet<String> =
        l.vms.values().flat_map(|vm| vm.host_files().into_iter().map(|(_, p, _)| p.display().to_string())).collect();
    assert_eq!(w.len(), files.len(), "{doc:#}");
    assert!(files.len() < 4, "the lab shares a file between VMs: {files:?}");
    assert!(w.iter().any(|w| w["message"].as_str().unwrap().contains("of vms `")), "{doc:#}");
    for w in w {
        assert_eq!(w["code"], "topo::plan::file_unchecked", "{w}");
        assert!(w["help"].as_str().unwrap().contains("virsh pool-define-as"), "{w}");
        let at = &w["locations"][0];
        assert_eq!(at["file"], LAB_PATH);
        // The line and column point at the path as written in the file.
        let (line, column) = (at["start"]["line"].as_u64().unwrap(), at["start"]["column"].as_u64().unwrap());
        let text = BASE.lines().nth(line as usize - 1).unwrap();
        assert!(text[column as usize - 1..].starts_with("boot/"), "{line}:{column} is `{text}`");
    }
    // apply --json carries them in its `plan`.
    let p = topo::plan::plan(&l, &observed, &hv.uri()).unwrap();
    let run = topo::results::run_json(topo::results::Command::Apply, &p, None, None);
    assert_eq!(run["plan"]["warnings"], doc["warnings"]);
}

#[test]
fn the_documented_example_matches_the_tables() {
    let block = DOC.split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a ```json block");
    let doc: Value = serde_json::from_str(block).expect("the example is valid JSON");
    check_plan(&doc);
}

#[test]
fn the_reason_kinds_in_the_doc_are_the_planners() {
    let documented: BTreeSet<String> = tables()["reason-kind"].keys().cloned().collect();
    use topo::plan::Reason::*;
    let all = [
        NotOnHost,
        NotInLabFile,
        LabFileChanged,
        Drift,
        RequiresReplace { fields: vec![] },
        NotActive,
        NotRunning,
        RequiresRestart { fields: vec![] },
        Replugged { fields: vec![] },
        DestroyRequested,
        StopRequested,
        Paused,
        Orphaned,
        InterruptedUpload,
        PoolNeeded,
        Unplugged { nics: vec![] },
        Released,
        NetworkRenewed,
        WireEndRenewed,
        Netem { nics: vec![] },
        DeletedOutsideTopo { volumes: vec![] },
        UndefinedOutsideTopo,
        Snapshots { names: vec![] },
        Adopted,
        TakenOver { from: String::new() },
    ];
    let actual: BTreeSet<String> =
        all.iter().map(|r| serde_json::to_value(r).unwrap()["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(documented, actual);
}

// ---- saved plans -------------------------------------------------------------------------

fn saved(lab_text: &str, observed: &Observed) -> SavedPlan {
    let l = lab(lab_text);
    let p = topo::plan::plan(&l, observed, "memory:///topo").unwrap();
    let planned = topo::session::Planned { plan: p, observed: observed.clone(), hosts: Default::default() };
    let s = planned.saved(&l, LAB_PATH.into(), "memory:///topo".into());
    assert_eq!(s.lab_sha256, sha256_hex(lab_text.as_bytes()));
    assert_eq!(s.observed_sha256, fingerprint(observed));
    assert_eq!(s.plan, to_json(&s.steps));
    s
}

#[test]
fn saved_plan_file_matches_the_documented_shape() {
    let hv = host();
    let s = saved(BASE, &hv.observe().unwrap());
    let text = serde_json::to_string_pretty(&s).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let t = tables();
    check(&t, "saved", &v);
    check_plan(&v["plan"]);
    assert_eq!(v["lab_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(SavedPlan::parse("p.json", &text).unwrap(), s);
    assert!(topo::plan::saved::looks_saved(&text));
}

#[test]
fn saved_plan_is_fresh_only_while_lab_uri_and_host_are_unchanged() {
    let hv = host();
    let observed = hv.observe().unwrap();
    let s = saved(BASE, &observed);
    s.check_fresh(BASE, "memory:///topo", &observed).unwrap();

    let stale = |r: Result<(), SavedPlanError>| match r {
        Err(SavedPlanError::Stale { what }) => what,
        other => panic!("expected stale, got {other:?}"),
    };
    // Any edit of the lab text, even a comment.
    let what = stale(s.check_fresh(&format!("{BASE}# note\n"), "memory:///topo", &observed));
    assert!(what.contains("lab file"), "{what}");
    // Another connection.
    let what = stale(s.check_fresh(BASE, "qemu:///system", &observed));
    assert!(what.contains("URI"), "{what}");
    // The host changed (a lab applied, or just a network stopped).
    apply_ok(&lab(BASE), &hv);
    let what = stale(s.check_fresh(BASE, "memory:///topo", &hv.observe().unwrap()));
    assert!(what.contains("host"), "{what}");
    let fresh = saved(BASE, &hv.observe().unwrap());
    fresh.check_fresh(BASE, "memory:///topo", &hv.observe().unwrap()).unwrap();
    hv.destroy_domain("demo-db").unwrap();
    stale(fresh.check_fresh(BASE, "memory:///topo", &hv.observe().unwrap()));
}

#[test]
fn saved_plan_with_another_format_is_refused() {
    let hv = host();
    let mut s = saved(BASE, &hv.observe().unwrap());
    s.format = "topo-saved-plan/99".into();
    let text = serde_json::to_string(&s).unwrap();
    assert!(matches!(SavedPlan::parse("p.json", &text), Err(SavedPlanError::Version { .. })));
    s.format = "terraform-plan".into();
    let text = serde_json::to_string(&s).unwrap();
    assert!(matches!(SavedPlan::parse("p.json", &text), Err(SavedPlanError::Format(..))));
    assert!(matches!(SavedPlan::parse("p.json", "{}"), Err(SavedPlanError::Format(..))));
}

/// A plan saved by the topo before reasons were data (format 2, a NIC named in words) is
/// refused for its version, with what to do, before any of its steps is read; as Terraform
/// refuses a plan file from another Terraform version.
#[test]
fn a_plan_saved_by_an_older_topo_is_refused_for_its_version() {
    let hv = host();
    let s = saved(BASE, &hv.observe().unwrap());
    let mut v = serde_json::to_value(&s).unwrap();
    v["format"] = "topo-saved-plan/2".into();
    v["steps"]["changes"][0]["reasons"] =
        serde_json::json!([{"kind": "unplugged", "nics": ["eth0 (52:54:00:00:00:01, tap vnet3)"]}]);
    let err = SavedPlan::parse("old.json", &v.to_string()).unwrap_err();
    assert!(matches!(&err, SavedPlanError::Version { found, .. } if found == "topo-saved-plan/2"), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "old.json was saved by another version of topo (format topo-saved-plan/2); this topo applies only \
             {SAVED_FORMAT} plans"
        )
    );
    let help = miette::Diagnostic::help(&err).map(|h| h.to_string()).unwrap_or_default();
    assert!(help.contains("make the plan again with this topo"), "{help}");
    assert_eq!(miette::Diagnostic::code(&err).map(|c| c.to_string()).as_deref(), Some("topo::plan::saved::format"));
}
