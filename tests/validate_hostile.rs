//! Hostile and random input: `load` returns Ok or Err, never panics, and ends (a hang shows
//! up as the test harness timing out, not as a timing assertion).

use std::path::Path;

use proptest::prelude::*;
use topo::lab::source::{MAX_SOURCE_BYTES, SourceError, SourceFile};
use topo::lab::validate;

fn load_text(text: String) -> Result<topo::lab::model::Lab, validate::ValidateError> {
    validate::load(&SourceFile::from_text(Path::new("/nonexistent/fuzz.yaml"), text))
}

#[test]
fn billion_laughs_is_rejected() {
    let mut y = String::from("apiVersion: topo/v1\nname: lol\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        y.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let err = load_text(y).unwrap_err();
    assert_eq!(err.problems.len(), 1);
}

#[test]
fn alias_bomb_under_a_real_key_is_rejected() {
    // The anchors sit under `prefix` and `nics`, keys the parser must read.
    let mut y = String::from(
        "apiVersion: topo/v1\nname: lol\nprefix: &x0 [a, a, a, a, a, a, a, a, a, a]\nvms:\n  a:\n    nics:\n",
    );
    for i in 1..9 {
        let p = i - 1;
        y.push_str(&format!("      - &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"));
    }
    assert!(load_text(y).is_err());
}

#[test]
fn deep_nesting_is_rejected() {
    let depth = 100_000;
    let y = format!("apiVersion: topo/v1\nname: deep\nvms: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    assert!(load_text(y).is_err());
    let y = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(load_text(y).is_err());
    let block: String = (0..2_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    assert!(load_text(block).is_err());
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    let text: String = std::iter::repeat_n(line, (2 * 1024 * 1024) / line.len() + 1).collect();
    std::fs::write(&path, format!("apiVersion: topo/v1\nname: big\n{text}")).unwrap();
    match SourceFile::read(&path) {
        Err(SourceError::TooLarge { max, .. }) => assert_eq!(max, MAX_SOURCE_BYTES),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn huge_text_given_directly_ends_in_error() {
    // Bypassing SourceFile::read: many nodes hit the parser budget.
    let mut y = String::from("apiVersion: topo/v1\nname: big\nvms:\n");
    for i in 0..120_000 {
        y.push_str(&format!("  v{i}: {{boot: {{kernel: k}}}}\n"));
    }
    assert!(load_text(y).is_err());
}

#[test]
fn many_documents_are_rejected() {
    let y = "apiVersion: topo/v1\nname: a\n---\napiVersion: topo/v1\nname: b\n".to_owned();
    assert!(load_text(y).is_err());
}

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("~".to_owned()),
        Just("topo/v1".to_owned()),
        Just("10.0.0.0/24".to_owned()),
        Just("10.0.0.1".to_owned()),
        Just("10.0.0.300".to_owned()),
        Just("52:54:00:00:1f:02".to_owned()),
        Just("256MiB".to_owned()),
        Just("/etc/hostname".to_owned()),
        Just("nat".to_owned()),
        Just("isolated".to_owned()),
        Just("none".to_owned()),
        "[a-z_]{1,8}",
        "-?[0-9]{1,12}",
        "\"[ -~]{0,10}\"",
        ".{0,6}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion".to_owned()),
        Just("name".to_owned()),
        Just("prefix".to_owned()),
        Just("networks".to_owned()),
        Just("vms".to_owned()),
        Just("external".to_owned()),
        Just("mode".to_owned()),
        Just("subnet".to_owned()),
        Just("gateway".to_owned()),
        Just("dhcp".to_owned()),
        Just("start".to_owned()),
        Just("end".to_owned()),
        Just("bridge".to_owned()),
        Just("nics".to_owned()),
        Just("network".to_owned()),
        Just("mac".to_owned()),
        Just("ip".to_owned()),
        Just("verify".to_owned()),
        Just("boot".to_owned()),
        Just("kernel".to_owned()),
        Just("disk".to_owned()),
        Just("image".to_owned()),
        Just("memory".to_owned()),
        Just("vcpus".to_owned()),
        "[a-z_]{1,6}",
    ]
}

/// YAML-ish flow values built from the lab file's own vocabulary.
fn yaml_value() -> impl Strategy<Value = String> {
    yaml_scalar().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,200}") {
        let _ = load_text(s);
    }

    #[test]
    fn arbitrary_yaml_never_panics(entries in prop::collection::vec((key(), yaml_value()), 0..8)) {
        let mut y = String::new();
        for (k, v) in entries {
            y.push_str(&format!("{k}: {v}\n"));
        }
        let _ = load_text(y);
    }

    #[test]
    fn lab_shaped_yaml_never_panics(
        subnet in yaml_scalar(),
        gateway in yaml_scalar(),
        dhcp in yaml_value(),
        ip in yaml_scalar(),
        mac in yaml_scalar(),
        net in "[a-z_]{1,4}",
    ) {
        let y = format!(
            "apiVersion: topo/v1\nname: fuzz\nnetworks:\n  {net}:\n    subnet: {subnet}\n    gateway: {gateway}\n    dhcp: {dhcp}\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - {{network: {net}, ip: {ip}, mac: {mac}}}\n"
        );
        let _ = load_text(y);
    }
}
