//! `topo validate --json`, `topo apply --json` and `topo destroy --json` match
//! docs/results-json.md exactly: the doc's key tables are parsed and every object of real
//! documents (from the binary on libvirt's test driver, and from a run with a failed and
//! skipped steps on the memory double) is checked against them.

mod common;

use assert_cmd::Command;
use common::*;
use serde_json::Value;
use topo::host::hypervisor::{HvError, HvErrorKind};

const DOC: &str = include_str!("../docs/results-json.md");

/// `obj` has exactly the keys of table `name` of docs/results-json.md, with their types.
fn check(name: &str, obj: &Value) {
    check_json_table("docs/results-json.md", DOC, name, obj);
}

fn check_validate(doc: &Value) {
    check("validate", doc);
    if !doc["counts"].is_null() {
        check("counts", &doc["counts"]);
    }
    for p in doc["problems"].as_array().unwrap() {
        check("problem", p);
        for l in p["locations"].as_array().unwrap() {
            check("location", l);
            check("position", &l["start"]);
            check("position", &l["end"]);
        }
    }
}

fn check_run(doc: &Value) {
    check("run", doc);
    assert_eq!(doc["plan"]["format_version"], "1", "the plan document is embedded");
    for s in doc["steps"].as_array().unwrap() {
        check("step", s);
        let outcome = s["outcome"].as_str().unwrap();
        assert!(["done", "failed", "skipped"].contains(&outcome), "{s}");
        assert_eq!(s["seconds"].is_null(), outcome != "done", "{s}");
        assert_eq!(s["error"].is_null(), outcome != "failed", "{s}");
        assert_eq!(s["reason"].is_null(), outcome != "skipped", "{s}");
    }
    check("run-summary", &doc["summary"]);
}

fn topo() -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env_remove("TOPO_LOG").env("COLUMNS", "100");
    c
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_json_valid_invalid_and_unreadable() {
    let out = topo().args(["validate", "--json", "tests/fixtures/valid/seedlab.yaml"]).output().unwrap();
    assert!(out.status.success());
    let doc = json(&out);
    check_validate(&doc);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["counts"], serde_json::json!({"networks": 2, "external_networks": 1, "vms": 3, "nics": 4}));

    let out = topo().args(["validate", "--json", "tests/fixtures/invalid/bad_mac.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    check_validate(&doc);
    assert_eq!(doc["valid"], false);
    let p = &doc["problems"][0];
    assert_eq!(p["code"], "topo::lab::bad_mac");
    // The same place the human diagnostic points at.
    let line = p["locations"][0]["start"]["line"].as_u64().unwrap();
    let col = p["locations"][0]["start"]["column"].as_u64().unwrap();
    let src = std::fs::read_to_string("tests/fixtures/invalid/bad_mac.yaml").unwrap();
    let at: String = src.lines().nth(line as usize - 1).unwrap().chars().skip(col as usize - 1).collect();
    assert!(at.starts_with("52:54:00:1f:02") || at.starts_with("\"52:54:00:1f:02"), "{at}");
    assert!(text(&out.stderr).contains("bad_mac"), "the human diagnostic still goes to stderr");

    // Several problems at once, all located.
    for f in ["many_problems", "many_shape_problems", "syntax_error"] {
        let out = topo().args(["validate", "--json", &format!("tests/fixtures/invalid/{f}.yaml")]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{f}");
        let doc = json(&out);
        check_validate(&doc);
        let problems = doc["problems"].as_array().unwrap();
        assert!(problems.len() > if f == "syntax_error" { 0 } else { 5 }, "{f}: {}", problems.len());
        assert!(problems.iter().all(|p| !p["locations"].as_array().unwrap().is_empty()), "{f}: all located");
    }

    let out = topo().args(["validate", "--json", "tests/fixtures/nope.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    check_validate(&doc);
    assert_eq!(doc["problems"][0]["code"], "topo::lab::source::read");
    assert_eq!(doc["problems"][0]["locations"], serde_json::json!([]));

    let empty = tempfile::tempdir().unwrap();
    let out = topo().current_dir(empty.path()).args(["validate", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    check_validate(&doc);
    assert_eq!(doc["file"], Value::Null);
    assert_eq!(doc["problems"][0]["code"], "topo::lab::source::none_found");
}

/// A lab for the test driver (kernels from the fixtures).
fn write_lab(dir: &std::path::Path) -> std::path::PathBuf {
    let boot = std::fs::canonicalize("tests/fixtures/boot").unwrap();
    let text = format!(
        "apiVersion: topo/v1\nname: jsonlab\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 10.124.0.0/24\n    \
         dhcp: true\n    dhcp_ping: true\nvms:\n  one:\n    hypervisor: qemu\n    memory: 128MiB\n    \
         boot: {{kernel: {b}/vmlinuz}}\n    nics: [{{network: lan}}]\n",
        b = boot.display()
    );
    let path = dir.join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn apply_and_destroy_json_on_the_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path());
    // Without -y: refused before anything is observed.
    let out = topo().args(["-c", "test:///default", "apply", "--json"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("--json needs --auto-approve"), "{}", text(&out.stderr));

    let out = topo()
        .args(["-c", "test:///default", "-q", "apply", "--json", "-y", "--no-verify"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = json(&out);
    check_run(&doc);
    assert_eq!(doc["command"], "apply");
    assert_eq!(doc["summary"]["added"], 2);
    assert_eq!(doc["verify"], Value::Null);
    let addresses: Vec<&str> =
        doc["steps"].as_array().unwrap().iter().map(|s| s["address"].as_str().unwrap()).collect();
    assert!(addresses.contains(&"network.lan") && addresses.contains(&"vm.one"), "{addresses:?}");

    // With verification: the test driver has no bridges to probe, so the NIC fails; the
    // document still comes, with the verify document in it, and the exit status says so.
    let out = topo()
        .args(["-c", "test:///default", "-q", "apply", "--json", "-y", "--timeout", "1s"])
        .arg(&lab)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let doc = json(&out);
    check_run(&doc);
    assert_eq!(doc["verify"]["format_version"], "1");
    assert_eq!(doc["verify"]["summary"]["failed"], 1, "{}", doc["verify"]);

    let out = topo().args(["-c", "test:///default", "-q", "destroy", "--json", "-y"]).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = json(&out);
    check_run(&doc);
    assert_eq!(doc["command"], "destroy");
    assert_eq!(doc["steps"], serde_json::json!([]), "each process starts the test driver afresh: nothing to destroy");
    assert_eq!(doc["plan"]["changes"], serde_json::json!([]));
}

/// Failed and skipped steps, from a real run on the memory double.
#[test]
fn a_failed_run_documents_every_outcome() {
    let hv = host();
    let l = lab(BASE);
    hv.fail_on(
        "define_domain",
        "demo-db",
        HvError {
            op: "define domain".into(),
            object: "demo-db".into(),
            message: "injected failure".into(),
            kind: HvErrorKind::Other,
            hint: Some("injected hint".into()),
        },
    );
    let (plan, report) = apply_with(&l, &hv, 1);
    assert!(report.failed());
    let doc = topo::results::run_json(topo::results::Command::Apply, &plan, Some(&report), None);
    check_run(&doc);
    let outcomes: Vec<&str> = doc["steps"].as_array().unwrap().iter().map(|s| s["outcome"].as_str().unwrap()).collect();
    for o in ["done", "failed", "skipped"] {
        assert!(outcomes.contains(&o), "{o} in {outcomes:?}");
    }
    let failed = doc["steps"].as_array().unwrap().iter().find(|s| s["outcome"] == "failed").unwrap();
    assert_eq!(failed["address"], "vm.db");
    assert_eq!(failed["hint"], "injected hint");
    assert_eq!(doc["summary"]["failed"], 1);
    assert_eq!(
        doc["summary"]["skipped"].as_u64().unwrap() as usize,
        outcomes.iter().filter(|o| **o == "skipped").count()
    );
}

/// `topo status --json` and `topo inventory --format json` on the test driver (the lab is not
/// on the host: every process starts the driver afresh) match their tables.
#[test]
fn status_and_inventory_json_match_the_doc() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path());
    let out = topo().args(["-c", "test:///default", "-q", "status", "--json"]).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = json(&out);
    check("status", &doc);
    let resources = doc["resources"].as_array().unwrap();
    let addresses: Vec<&str> = resources.iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, ["network.lan", "vm.one"]);
    for r in resources {
        check("status-resource", r);
        assert_eq!(r["state"], "missing", "{r}");
        for n in r["addresses"].as_array().unwrap() {
            check("status-nic", n);
        }
    }
    assert_eq!(resources[1]["addresses"].as_array().unwrap().len(), 1);

    let out = topo()
        .args(["-c", "test:///default", "-q", "inventory", "--format", "json", "--timeout", "1s"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc = json(&out);
    check("inventory", &doc);
    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1);
    for h in hosts {
        check("inventory-host", h);
        for n in h["nics"].as_array().unwrap() {
            check("inventory-nic", n);
            assert_eq!(n["state"], "unproven", "{n}");
        }
    }
}
