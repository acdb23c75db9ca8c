//! `topo list --json` matches docs/list-json.md exactly: two labs applied on the memory
//! double (one under a second prefix) listed and every object checked against the doc's
//! key tables; and the binary on libvirt's test driver (no lab there).

mod common;

use assert_cmd::Command;
use common::*;
use serde_json::Value;

const DOC: &str = include_str!("../docs/list-json.md");

fn check(name: &str, obj: &Value) {
    check_json_table("docs/list-json.md", DOC, name, obj);
}

fn check_list(doc: &Value) {
    check("list", doc);
    for l in doc["labs"].as_array().unwrap() {
        check("lab", l);
        check("counts", &l["vms"]);
        check("counts", &l["networks"]);
    }
}

const LAB: &str = "\
apiVersion: topo/v1
name: demo
networks:
  lan:
    mode: isolated
    subnet: 10.80.0.0/24
vms:
  web:
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2}
    nics: [{network: lan}]
  db:
    state: stopped
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan}]
";

#[test]
fn two_labs_listed_as_documented() {
    let hv = host();
    let a = lab(LAB);
    apply_ok(&a, &hv);
    let b = lab_at(
        "tests/fixtures/b.topo.yaml",
        &LAB.replace("name: demo\n", "name: demo\nprefix: b-\n").replace("10.80.", "10.81."),
    );
    apply_ok(&b, &hv);
    let list = topo::host::labs::list(&hv.observe().unwrap(), "mem");
    let doc = list.to_json();
    check_list(&doc);
    let labs = doc["labs"].as_array().unwrap();
    assert_eq!(labs.len(), 2, "{doc:#}");
    assert_eq!((labs[0]["prefix"].as_str(), labs[1]["prefix"].as_str()), (Some("b-"), Some("demo-")));
    assert_eq!(labs[1]["file"].as_str(), Some(a.instance().file.as_str()));
    assert_eq!((labs[1]["vms"]["up"].as_u64(), labs[1]["vms"]["total"].as_u64()), (Some(1), Some(2)));
    assert_eq!(labs[1]["domain_names"], serde_json::json!(["demo-db", "demo-web"]));
    // Its overlays and seeds, and none of lab b's.
    let ours = hv.volumes().iter().filter(|v| v.0.contains("/demo-")).count() as u64;
    assert!(ours >= 1);
    assert_eq!(labs[1]["volumes"].as_u64(), Some(ours));
    let table = list.table();
    assert!(table.contains(&a.instance().file) && table.contains(&b.instance().file), "{table}");
}

#[test]
fn the_binary_lists_the_test_driver_host() {
    for args in [&["list", "--json"][..], &["status", "--all", "--json"]] {
        let out = Command::cargo_bin("topo").unwrap().args(["-c", "test:///default"]).args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        check_list(&doc);
        assert_eq!(doc["labs"], serde_json::json!([]));
    }
    let out = Command::cargo_bin("topo").unwrap().args(["-c", "test:///default", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "No topo labs on test:///default.\n");
}
