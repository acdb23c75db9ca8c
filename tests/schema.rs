//! The committed JSON Schema is the one generated from the Rust types; example labs pass it
//! and invalid samples fail it.

use std::path::Path;

const SCHEMA: &str = "schemas/topology.schema.json";

fn yaml_to_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_schema_is_generated() {
    let generated = topo::lab::schema::schema_json() + "\n";
    if std::env::var_os("TOPO_UPDATE_SCHEMA").is_some() {
        std::fs::write(SCHEMA, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SCHEMA).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA} differs from the schema generated from src/spec.rs; regenerate it with \
         `TOPO_UPDATE_SCHEMA=1 cargo test --test schema` (or `topo schema > {SCHEMA}`)"
    );
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(SCHEMA).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

#[test]
fn every_example_lab_passes_the_schema_and_names_it() {
    let v = validator();
    let mut n = 0;
    for entry in std::fs::read_dir("topologies").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/topology.schema.json"),
            "{} must start with the schema header",
            path.display()
        );
        let doc = yaml_to_json(&path);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        n += 1;
    }
    assert!(n >= 3, "expected at least three example labs, found {n}");
}

#[test]
fn invalid_samples_fail_the_schema() {
    let v = validator();
    let samples = [
        // unknown key
        "apiVersion: topo/v1\nname: x\nnetworks:\n  n:\n    mode: nat\n    subnett: 10.0.0.0/24\n",
        // wrong mode
        "apiVersion: topo/v1\nname: x\nnetworks:\n  n:\n    mode: bridged\n",
        // vcpus as a string
        "apiVersion: topo/v1\nname: x\nvms:\n  a:\n    vcpus: two\n",
        // nics must be a list
        "apiVersion: topo/v1\nname: x\nvms:\n  a:\n    nics: {network: n}\n",
        // verify vocabulary
        "apiVersion: topo/v1\nname: x\nvms:\n  a:\n    nics: [{network: n, verify: ping}]\n",
        // missing name
        "apiVersion: topo/v1\n",
    ];
    for s in samples {
        let doc: serde_json::Value = serde_saphyr::from_str(s).unwrap();
        assert!(!v.is_valid(&doc), "schema accepted an invalid sample:\n{s}");
    }
}
