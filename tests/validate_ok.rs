//! Valid lab files load, and the model holds what the file says (summary and a few values).

use std::path::{Path, PathBuf};

use topo::lab::model::{NetworkKind, NetworkName, VmName};
use topo::lab::source::SourceFile;
use topo::lab::validate;

fn valid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/valid")
        .expect("fixture folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load_with_expected_summary() {
    let files = valid_fixtures();
    assert!(files.len() >= 3);
    for path in files {
        let source = SourceFile::read(&path).expect("readable");
        let want = source
            .text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .expect("valid fixtures carry `# expect: <summary>`")
            .to_owned();
        match validate::load(&source) {
            Ok(lab) => assert_eq!(lab.summary(), want, "{}", path.display()),
            Err(e) => panic!("{}: {:?}", path.display(), miette::Report::new(e)),
        }
    }
}

#[test]
fn seed_lab_model() {
    let lab = validate::load(&SourceFile::read(Path::new("tests/fixtures/valid/seedlab.yaml")).unwrap()).unwrap();
    let local = &lab.networks[&NetworkName::new("local_net").unwrap()];
    assert_eq!(local.libvirt_name, "seedlab-local_net");
    let NetworkKind::Managed(m) = &local.kind else { panic!("local_net is a lab network") };
    assert_eq!(m.bridge.as_ref().unwrap().as_str(), "virbr2");
    assert_eq!(m.reservations.len(), 3);
    let hosts: Vec<_> = {
        let mut h: Vec<_> = m.reservations.values().map(|r| (r.host.clone(), r.ip.to_string())).collect();
        h.sort();
        h
    };
    assert_eq!(
        hosts,
        [
            ("deb1".to_owned(), "192.168.152.64".to_owned()),
            ("deb2".to_owned(), "192.168.152.62".to_owned()),
            ("deb3".to_owned(), "192.168.152.63".to_owned())
        ]
    );
    let deb1 = &lab.vms[&VmName::new("deb1").unwrap()];
    let boot = deb1.boot.as_ref().unwrap();
    assert!(boot.kernel.is_absolute(), "paths are resolved: {}", boot.kernel.display());
    // canonical: `..` resolved (the file says `../boot/vmlinuz`)
    assert_eq!(boot.kernel, std::fs::canonicalize("tests/fixtures/boot/vmlinuz").unwrap());
    assert_eq!(boot.cmdline.as_deref(), Some("console=ttyS0"));
    assert_eq!(deb1.nics.len(), 2);
    assert_eq!(deb1.nics[0].network.as_str(), "default");
    assert!(deb1.nics.iter().all(|n| n.mac_derived));
}

#[test]
fn full_lab_model() {
    let lab = validate::load(&SourceFile::read(Path::new("tests/fixtures/valid/full.yaml")).unwrap()).unwrap();
    assert_eq!(lab.prefix, "t1_");
    let wan = &lab.networks[&NetworkName::new("wan").unwrap()];
    assert_eq!(wan.libvirt_name, "t1_wan");
    let NetworkKind::Managed(m) = &wan.kind else { panic!() };
    assert_eq!(m.gateway.unwrap().to_string(), "10.20.0.254");
    assert_eq!(m.dhcp.unwrap().start.to_string(), "10.20.0.100");
    assert!(!m.autostart && m.stp && m.dhcp_ping);
    let router = &lab.vms[&VmName::new("router").unwrap()];
    assert_eq!(router.vcpus, 2);
    assert_eq!(router.nics[0].mac.to_string(), "52:54:00:00:1f:01");
    assert!(!router.nics[0].mac_derived);
    assert_eq!(router.disk.as_ref().unwrap().size.unwrap().to_string(), "10GiB");
    let client = &lab.vms[&VmName::new("client").unwrap()];
    assert_eq!(client.memory.to_string(), "512MiB");
    assert!(lab.vms[&VmName::new("empty").unwrap()].nics.is_empty());
}

/// The generated JSON Schema accepts every valid fixture (YAML read as JSON values).
#[test]
fn schema_accepts_valid_fixtures() {
    let schema = topo::lab::spec::json_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    for path in valid_fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    let bad: serde_json::Value = serde_json::json!({"apiVersion": "topo/v1", "name": "x", "bogus": 1});
    assert!(!validator.is_valid(&bad), "schema rejects unknown keys");
}
