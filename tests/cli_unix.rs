//! The binary as a Unix tool: a closed stdout ends every command quietly, usage errors exit 1
//! (never clap's 2, which `plan --detailed-exitcode` means "changes"), every duration flag
//! takes the same forms and refuses what overflows, and SIGTERM/SIGHUP/SIGINT end a command
//! through the handler (exit 130), not by the default action. On libvirt's in-process test
//! driver, no daemon needed.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn topo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_topo"));
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env("COLUMNS", "100");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A lab the test driver can plan and apply; `NAME` is replaced (apply locks per lab name).
const LAB: &str = "\
apiVersion: topo/v1
name: NAME
networks:
  default:
    external: true
  lan:
    mode: isolated
    subnet: 10.125.0.0/24
    dhcp: true
    dhcp_ping: true
vms:
  one:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: BOOT/vmlinuz}
    nics: [{network: lan}, {network: default}]
";

fn write_lab(dir: &Path, name: &str) -> PathBuf {
    let boot = std::fs::canonicalize("tests/fixtures/boot").unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, LAB.replace("NAME", name).replace("BOOT", &boot.display().to_string())).unwrap();
    path
}

/// Runs `cmd` with stdout a pipe whose reading end is already closed: every write to it
/// fails with EPIPE, deterministically.
fn with_closed_stdout(mut cmd: Command) -> Output {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    cmd.stdout(Stdio::from(write)).stderr(Stdio::piped()).stdin(Stdio::null());
    cmd.output().unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), "unix-pipe");
    let lab_apply = write_lab(dir.path(), "unix-pipe-apply");
    let lab = lab.to_str().unwrap();
    let lab_apply = lab_apply.to_str().unwrap();
    let t = ["-c", "test:///default"];
    let commands: Vec<Vec<&str>> = vec![
        vec!["validate", lab],
        vec!["validate", "tests/fixtures/invalid/bad_mac.yaml"],
        [&t[..], &["plan", lab]].concat(),
        [&t[..], &["plan", "--json", lab]].concat(),
        [&t[..], &["plan", "--detailed-exitcode", lab]].concat(),
        vec!["graph", lab],
        vec!["graph", "--format", "mermaid", lab],
        vec!["schema"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["man", "plan"],
        [&t[..], &["status", lab]].concat(),
        [&t[..], &["status", "--json", lab]].concat(),
        [&t[..], &["verify", "--timeout", "1", lab]].concat(),
        [&t[..], &["verify", "--json", "--timeout", "1", lab]].concat(),
        [&t[..], &["apply", "-y", "--timeout", "1", lab_apply]].concat(),
        [&t[..], &["destroy", "-y", lab]].concat(),
        vec!["--help"],
        vec!["plan", "--help"],
        vec!["--version"],
        vec!["plan", "--no-such-flag"],
    ];
    for args in commands {
        let mut open = topo();
        open.args(&args).stdin(Stdio::null());
        let expected = open.output().unwrap().status.code();
        let mut closed = topo();
        closed.args(&args);
        let out = with_closed_stdout(closed);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), expected, "{args:?}: same exit status as with a reader\n{err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}:\n{err}");
    }
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let cases: &[&[&str]] = &[
        &[],
        // (`topo plan` alone looks for the lab file: tests/discover.rs)
        &["plan", "one.yaml", "two.yaml"],
        &["plan", "--no-such-flag", "lab.yaml"],
        &["no-such-command"],
        &["--color", "sometimes", "validate", "lab.yaml"],
        &["apply", "--parallelism", "0", "lab.yaml"],
        &["apply", "--parallelism", "100000", "lab.yaml"],
        &["plan", "--detailed-exitcode", "--detailed-exitcode", "lab.yaml"],
        &["verify", "--timeout", "5 parsecs", "lab.yaml"],
        &["verify", "--timeout", "400000000000000000m", "lab.yaml"],
        &["apply", "--timeout", "-1", "lab.yaml"],
        &["apply", "--shutdown-timeout", "400000000000000000m", "lab.yaml"],
        &["destroy", "--shutdown-timeout", "99999999999999999999", "lab.yaml"],
        &["destroy", "--graceful=400000000000000000m", "lab.yaml"],
        &["destroy", "--graceful=soon", "lab.yaml"],
    ];
    for args in cases {
        let out = topo().args(*args).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{err}");
        assert!(err.contains("error"), "{args:?}: says what is wrong:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}:\n{err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let e = text(&topo().args(["verify", "--timeout", "400000000000000000m", "x.yaml"]).output().unwrap().stderr);
    assert!(e.contains("too large"), "{e}");
    for ok in [&["--help"][..], &["--version"], &["help"], &["help", "plan"], &["apply", "-h"]] {
        let out = topo().args(ok).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{ok:?}");
        assert!(!out.stdout.is_empty(), "{ok:?}: help goes to stdout");
    }
}

#[test]
fn every_duration_flag_takes_the_same_forms() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing to verify or destroy: the commands parse their flags and return at once.
    let lab = dir.path().join("empty.yaml");
    std::fs::write(&lab, "apiVersion: topo/v1\nname: unix-durations\nnetworks:\n  default:\n    external: true\n")
        .unwrap();
    for form in ["90", "90s", "2m", "1h", "1h30m", "500ms", "18446744073709551615"] {
        let graceful = format!("--graceful={form}");
        for args in [
            vec!["verify", "--timeout", form],
            vec!["destroy", "-y", "--shutdown-timeout", form],
            vec!["destroy", "-y", &graceful],
            vec!["apply", "-y", "--timeout", form, "--shutdown-timeout", form],
        ] {
            let out = topo().args(["-c", "test:///default", "-q"]).args(&args).arg(&lab).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", text(&out.stderr));
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP reach topo's handler, which ends a command that is not in a
/// stoppable phase with 130 (the default action would end it by the signal, no exit code).
/// The command is held waiting for the host lock, which this test holds (a FIFO as the lab
/// file no longer holds anything: it is refused without blocking, docs/files.md).
#[test]
fn signals_end_a_command_with_130() {
    use nix::fcntl::{Flock, FlockArg};
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    let lab = write_lab(dir.path(), "unix-signals");
    // A first apply makes the host lock file (the test driver forgets its state at exit;
    // its verification fails, which does not matter here).
    topo()
        .env("TOPO_LOCK_DIR", &locks)
        .args(["-c", "test:///default", "-q", "apply", "-y"])
        .arg(&lab)
        .output()
        .unwrap();
    let host_lock = std::fs::read_dir(&locks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "hostlock"))
        .expect("the host lock file");
    let _held = Flock::lock(std::fs::File::open(&host_lock).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let mut child = topo()
            .env("TOPO_LOCK_DIR", &locks)
            .args(["-c", "test:///default", "apply", "-y"])
            .arg(&lab)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once it says it waits for the lock (its handler is installed long before).
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            let mut told = false;
            while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if !told && text(&seen).contains("Waiting for another topo run") {
                    told = tx.send(()).is_ok();
                }
            }
            text(&seen)
        });
        let waiting = rx.recv_timeout(Duration::from_secs(60)).is_ok();
        let t = Instant::now();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{sig}: still running");
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = reader.join().unwrap();
        assert!(waiting, "{sig}: held at the lock: {err}");
        assert_eq!(status.code(), Some(130), "{sig}: {status:?}");
    }
}

/// stderr closed as well (`topo ... 2>&1 | head -c 1`): diagnostics, progress and `-v` logs
/// are best effort, never a panic (exit 101 would be the sign).
#[test]
fn a_closed_stderr_is_no_panic_either() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), "unix-stderr");
    let lab = lab.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["-v", "-c", "test:///default", "plan", lab], 0),
        (vec!["-vv", "-c", "test:///default", "status", lab], 0),
        (vec!["validate", "tests/fixtures/invalid/bad_mac.yaml"], 1),
        (vec!["plan", "--no-such-flag"], 1),
    ];
    for (args, code) in cases {
        let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = topo()
            .args(&args)
            .stdout(Stdio::from(write.try_clone().unwrap()))
            .stderr(Stdio::from(write))
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(out.code(), Some(code), "{args:?}");
    }
}
