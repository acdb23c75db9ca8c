//! The files topo reads and writes, through the binary (docs/files.md): every file it reads
//! is a regular file of bounded size checked before it is read (a FIFO, `/dev/zero` or a
//! huge file is refused at once, located in the lab file when the lab names it), `status`
//! and `destroy` never block on such a file, and `plan --out` writes a private file without
//! following links. On libvirt's in-process test driver, no daemon needed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

fn topo(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("NO_COLOR")
        .env("COLUMNS", "200")
        .env("TOPO_LOCK_DIR", dir.join("locks"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("HOME", dir)
        // Any of these would block forever without the bounded read: the test fails instead.
        .timeout(Duration::from_secs(60));
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// `topo apply /dev/zero` ate memory, a FIFO as the lab file hung: each is refused at
/// once, as not a regular file, exit 1.
#[test]
fn a_lab_file_that_is_no_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("lab.topo.yaml");
    fifo(&pipe);
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big).unwrap().set_len(3 << 30).unwrap();
    for (args, want) in [
        (vec!["validate", "/dev/zero"], "is a character device"),
        (vec!["apply", "-y", "/dev/zero"], "is a character device"),
        (vec!["plan", pipe.to_str().unwrap()], "is a FIFO (named pipe)"),
        (vec!["status", pipe.to_str().unwrap()], "is a FIFO (named pipe)"),
        (vec!["validate", dir.path().to_str().unwrap()], "is a folder"),
        // Refused by its size (fstat), not read whole and then called missing.
        (vec!["validate", big.to_str().unwrap()], "is 3221225472 bytes"),
        (vec!["apply", "-y", big.to_str().unwrap()], "is 3221225472 bytes"),
    ] {
        let out = topo(dir.path()).args(["--color", "never", "-c", "test:///default"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        let code =
            if want.ends_with("bytes") { "topo::lab::source::too_large" } else { "topo::lab::source::not_a_file" };
        assert!(stderr(&out).contains(code), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("missing_file"), "{args:?}: {}", stderr(&out));
    }
}

fn lab(dir: &Path, user_data: &Path, keys: &Path) -> std::path::PathBuf {
    let body = format!(
        "apiVersion: topo/v1\nname: fileslab\nnetworks:\n  lan: {{mode: isolated, subnet: 10.125.0.0/24}}\n\
         cloud_init:\n  ssh_authorized_keys_files: [{k}, /dev/zero]\n  user_data: {u}\n\
         vms:\n  a:\n    hypervisor: qemu\n    boot: {{kernel: {b}/vmlinuz}}\n    nics: [{{network: lan, ip: 10.125.0.10}}]\n",
        u = user_data.display(),
        k = keys.display(),
        b = std::fs::canonicalize("tests/fixtures/boot").unwrap().display(),
    );
    let path = dir.join("lab.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

/// `user_data: /dev/stdin` or a FIFO hung `plan` and also `status` and `destroy` of the lab;
/// a huge key file was read whole. Each is now a located problem of its own kind (not
/// `missing_file`), all at once; the commands that open no file go ahead without blocking.
#[test]
fn files_the_lab_names_are_located_problems_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data");
    fifo(&ud);
    let keys = dir.path().join("keys.pub");
    std::fs::File::create(&keys).unwrap().set_len(1 << 30).unwrap();
    let lab = lab(dir.path(), &ud, &keys);
    let lab = lab.to_str().unwrap();
    let out = topo(dir.path()).args(["--color", "never", "-c", "test:///default", "plan", lab]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("topo::lab::not_a_file").count(), 2, "the FIFO and /dev/zero: {err}");
    assert_eq!(err.matches("topo::lab::file_too_large").count(), 1, "{err}");
    assert!(err.contains("is a FIFO (named pipe)"), "{err}");
    assert!(err.contains("is 1073741824 bytes"), "{err}");
    assert!(!err.contains("missing_file"), "{err}");
    // Located at the key naming each file (lab.yaml:line:col).
    assert!(err.contains("lab.yaml:7:14]"), "user_data's value: {err}");
    assert!(err.contains("lab.yaml:6:31]"), "the key file's entry: {err}");
    // The commands that open none of the files: done, not blocked.
    for cmd in [&["status"][..], &["destroy", "--auto-approve"], &["inventory", "--timeout", "1s"]] {
        let out =
            topo(dir.path()).args(["--color", "never", "-c", "test:///default"]).args(cmd).arg(lab).output().unwrap();
        assert!(!stderr(&out).contains("not_a_file"), "{cmd:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("file_too_large"), "{cmd:?}: {}", stderr(&out));
    }
}

/// `plan --out` holds the users' user-data: written 0600 whatever the umask, atomically,
/// and a symlink at the path is replaced instead of written through.
#[test]
fn a_saved_plan_is_private_and_never_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let body = "apiVersion: topo/v1\nname: savelab\nnetworks:\n  lan: {mode: isolated, subnet: 10.126.0.0/24}\n";
    let lab = dir.path().join("lab.yaml");
    std::fs::write(&lab, body).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let out = dir.path().join("plan.json");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let r = topo(dir.path())
        .args(["--color", "never", "-c", "test:///default", "plan", "--out"])
        .arg(&out)
        .arg(&lab)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&out).unwrap().contains("topo-saved-plan/"));
}
