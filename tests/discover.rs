//! A lab file found without naming it: with no file argument, topo uses the single
//! `topo.yaml` / `*.topo.yaml` in the current folder and says so on stderr; none or several
//! is a clear error (exit 1) listing what it found.

use assert_cmd::Command;

fn topo(dir: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env_remove("TOPO_LOG").env("COLUMNS", "100");
    c.current_dir(dir);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const LAB: &str = "apiVersion: topo/v1\nname: found\nnetworks:\n  default:\n    external: true\n";

#[test]
fn the_single_candidate_is_used_and_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.topo.yaml"), LAB).unwrap();
    std::fs::write(dir.path().join("other.yaml"), "not: a lab").unwrap();
    let out = topo(dir.path()).arg("validate").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lab found: 1 network (1 external), 0 vms, 0 nics\n");
    assert_eq!(text(&out.stderr), "Using lab file demo.topo.yaml (found in the current folder)\n");

    // Every command that takes a lab file finds it the same way.
    let out = topo(dir.path()).args(["-c", "test:///default", "plan"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No changes. Lab found matches demo.topo.yaml.\n");
    assert!(text(&out.stderr).starts_with("Using lab file demo.topo.yaml"), "{}", text(&out.stderr));
    for cmd in [&["graph"][..], &["-c", "test:///default", "status"], &["-c", "test:///default", "destroy", "-y"]] {
        let out = topo(dir.path()).args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("Using lab file demo.topo.yaml"), "{cmd:?}: {}", text(&out.stderr));
    }

    // -q keeps stderr for errors only.
    let out = topo(dir.path()).args(["-q", "validate"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");

    // A named file wins, and nothing is announced.
    let out = topo(dir.path()).args(["validate", "demo.topo.yaml"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn plain_topo_yaml_counts_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("topo.yml"), LAB).unwrap();
    let out = topo(dir.path()).arg("validate").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Using lab file topo.yml"), "{}", text(&out.stderr));
}

#[test]
fn none_is_an_error_that_says_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lab.yaml"), LAB).unwrap();
    let out = topo(dir.path()).args(["--color", "never", "validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(err.contains("no lab file given, and none in ."), "{err}");
    assert!(err.contains("*.topo.yaml"), "{err}");
    assert!(err.contains("topo::lab::source::none_found"), "{err}");
}

#[test]
fn several_is_an_error_that_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["b.topo.yaml", "a.topo.yaml", "topo.yaml"] {
        std::fs::write(dir.path().join(f), LAB).unwrap();
    }
    let out = topo(dir.path()).args(["--color", "never", "-c", "test:///default", "apply", "-y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(err.contains("no lab file given, and 3 in .: a.topo.yaml, b.topo.yaml, topo.yaml"), "{err}");
    assert!(err.contains("name the one to use"), "{err}");
    assert!(!err.contains("Observing"), "nothing was touched: {err}");
}
