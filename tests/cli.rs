//! The binary: help texts, validate output and exit codes, plan exit codes, and one apply on
//! libvirt's in-process test driver (`test:///default`, fresh state per process).

use assert_cmd::Command;

fn topo() -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE").env("COLUMNS", "100");
    c
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_texts() {
    let out = topo().arg("--help").output().unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!("help", stdout(&out));
    for sub in ["validate", "plan", "apply", "destroy", "verify", "status", "graph", "schema", "capture"] {
        let out = topo().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        insta::assert_snapshot!(format!("help_{sub}"), stdout(&out));
    }
}

/// `topo capture` refuses a target the lab lacks (with the closest name), a filter libpcap
/// does not compile, and `--on` in a lab on one host, before it connects to anything; the
/// word after the target is the lab file only when it looks like one.
#[test]
fn capture_refusals_before_connecting() {
    let lab = "tests/fixtures/valid/seedlab.yaml";
    let run = |args: &[&str]| {
        let out = topo().args(["--color", "never", "-c", "test:///nowhere", "capture"]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        stderr(&out)
    };
    insta::assert_snapshot!("capture_unknown_vm", run(&["deb4", lab]));
    insta::assert_snapshot!("capture_unknown_nic", run(&["deb1.eth3", lab]));
    insta::assert_snapshot!("capture_unknown_network", run(&["net:local-net", lab]));
    insta::assert_snapshot!("capture_bad_filter", run(&["deb1", lab, "icmp", "and"]));
    // `icmpp` is no lab file: it starts the filter (and is refused as one).
    let e = run(&["deb1", "icmpp", "-f", lab]);
    assert!(e.contains("topo::capture::filter") && e.contains("`icmpp`"), "{e}");
    let e = run(&["local_net", lab, "--on", "h1"]);
    assert!(e.contains("topo::capture::on_without_hosts"), "{e}");
}

#[test]
fn validate_prints_the_summary() {
    let out = topo().args(["validate", "tests/fixtures/valid/seedlab.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "lab seedlab: 2 networks (1 external), 3 vms, 4 nics\n");
}

#[test]
fn validate_reports_problems_and_exits_1() {
    let out = topo().args(["--color", "never", "validate", "tests/fixtures/invalid/bad_mac.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    insta::assert_snapshot!(stderr(&out));
}

/// Every wire problem of a file at once (and the entry of a VM with its own problem not
/// again as an unknown wire end), exit 1; a file whose wires are right validates.
#[test]
fn validate_reports_every_wire_problem_and_exits_1() {
    let bad = "tests/fixtures/invalid/wire_all_problems_at_once.yaml";
    let out = topo().args(["--color", "never", "validate", bad]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let flat = err.split_whitespace().filter(|w| *w != "|").collect::<Vec<_>>().join(" ");
    assert!(flat.contains("has 6 problems"), "{err}");
    assert_eq!(err.matches("topo::lab::wire").count(), 5, "{err}");
    assert!(!err.contains("wire end `broken`"), "{err}");
    let out = topo().args(["validate", "tests/fixtures/valid/wires.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `--color auto` (the default) on a pipe: plain, unless `CLICOLOR_FORCE` is set, not empty
/// and not `0`; `NO_COLOR` turns colour off only when it is not empty, and wins over
/// `CLICOLOR_FORCE`.
#[test]
fn no_color_and_clicolor_force_conventions() {
    let bold_plan = "\x1b[1mPlan:\x1b[0m";
    let bad = "tests/fixtures/invalid/bad_mac.yaml";
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    for (env, coloured) in [
        (&[][..], false),
        (&[("CLICOLOR_FORCE", "1")][..], true),
        (&[("CLICOLOR_FORCE", "0")][..], false),
        (&[("CLICOLOR_FORCE", "")][..], false),
        (&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")][..], true),
        (&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")][..], false),
        (&[("NO_COLOR", "")][..], false),
    ] {
        let plan =
            topo().envs(env.iter().copied()).args(["-c", "test:///default", "-q", "plan"]).arg(&lab).output().unwrap();
        assert!(plan.status.success(), "{env:?}: {}", stderr(&plan));
        assert_eq!(stdout(&plan).contains(bold_plan), coloured, "{env:?}: {}", stdout(&plan));
        assert_eq!(stdout(&plan).contains('\x1b'), coloured, "{env:?}");
        // The diagnostics on stderr follow the same choice.
        let bad = topo().envs(env.iter().copied()).args(["validate", bad]).output().unwrap();
        assert_eq!(stderr(&bad).contains('\x1b'), coloured, "{env:?}: {}", stderr(&bad));
    }
    // `--color never` beats CLICOLOR_FORCE; `--color always` beats NO_COLOR.
    let never = topo().env("CLICOLOR_FORCE", "1").args(["--color", "never", "validate", bad]).output().unwrap();
    assert!(!stderr(&never).contains('\x1b'));
    let always = topo().env("NO_COLOR", "1").args(["--color", "always", "validate", bad]).output().unwrap();
    assert!(stderr(&always).contains('\x1b'));
}

#[test]
fn plan_on_a_bad_file_exits_1() {
    for file in ["tests/fixtures/invalid/bad_mac.yaml", "tests/fixtures/does-not-exist.yaml"] {
        let out = topo().args(["--color", "never", "-c", "test:///default", "plan", file]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert_eq!(stdout(&out), "", "{file}");
        assert!(stderr(&out).contains(file.rsplit('/').next().unwrap()), "{}", stderr(&out));
    }
}

/// A lab for the test driver: lab networks with `dhcp_ping: true` (the test driver drops
/// `<dnsmasq:options>`, so `no-ping` would read back as changed), kernels from the fixtures.
fn write_lab(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let boot = std::fs::canonicalize("tests/fixtures/boot").unwrap();
    let text = body.replace("BOOT", &boot.display().to_string());
    let path = dir.join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const TEST_LAB: &str = "\
apiVersion: topo/v1
name: clilab
networks:
  default:
    external: true
  lan:
    mode: isolated
    subnet: 10.123.0.0/24
    dhcp: true
    dhcp_ping: true
vms:
  one:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: BOOT/vmlinuz, initrd: BOOT/initrd.gz}
    nics:
      - network: lan
        ip: 10.123.0.10
      - network: default
  two:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: BOOT/vmlinuz}
    nics: [{network: lan}]
";

#[test]
fn plan_detailed_exitcode() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    let out = topo().args(["-c", "test:///default", "-q", "plan", "--detailed-exitcode"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).contains("Plan: 3 to add, 0 to change, 0 to replace, 0 to destroy."), "{}", stdout(&out));
    // Without --detailed-exitcode, changes still exit 0.
    let out = topo().args(["-c", "test:///default", "-q", "plan"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(0));

    // Only the test driver's own `default` network: nothing to do.
    let lab = write_lab(dir.path(), "apiVersion: topo/v1\nname: nothing\nnetworks:\n  default:\n    external: true\n");
    let out = topo().args(["-c", "test:///default", "-q", "plan", "--detailed-exitcode"]).arg(&lab).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("No changes. Lab nothing matches {}.\n", lab.display()));
}

#[test]
fn plan_json_on_the_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    let out = topo().args(["-c", "test:///default", "-q", "plan", "--json"]).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["format_version"], "1");
    assert_eq!(v["summary"], serde_json::json!({"create": 3, "update": 0, "replace": 0, "delete": 0}));
}

#[test]
fn apply_on_the_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    // The test driver has no bridges to send ARP on: verification is tier 4's.
    let out = topo()
        .args(["-c", "test:///default", "--color", "never", "apply", "-y", "--no-verify"])
        .arg(&lab)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Apply complete: 3 added, 0 changed, 0 replaced, 0 destroyed."), "{}", stdout(&out));
}

/// `apply PLAN.json` runs the saved steps, exactly: it never plans again. (Each run gets a
/// fresh test driver, so the host is as observed when the plan was saved.) A step list cut
/// short in the file is run as it is, and the convergence check after apply then names
/// what is missing: proof that the saved steps, not a new plan, were executed.
#[test]
fn a_saved_plan_runs_its_saved_steps() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), &TEST_LAB.replace("name: clilab", "name: clilab-saved"));
    let saved = dir.path().join("plan.json");
    let out = topo().args(["-c", "test:///default", "-q", "plan", "--out"]).arg(&saved).arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let apply = |file: &std::path::Path| {
        topo().args(["-c", "test:///default", "--color", "never", "apply", "--no-verify"]).arg(file).output().unwrap()
    };
    let out = apply(&saved);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Apply complete: 3 added, 0 changed, 0 replaced, 0 destroyed."), "{}", stdout(&out));

    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let steps = v["steps"]["changes"].as_array_mut().unwrap();
    let last = steps.pop().unwrap();
    assert_eq!(last["address"], "vm.two");
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, serde_json::to_string(&v).unwrap()).unwrap();
    let out = apply(&cut);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Apply complete: 2 added"), "{}", stdout(&out));
    assert!(stderr(&out).contains("vm.two would still create"), "{}", stderr(&out));
}

#[test]
fn verify_without_bridges_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // Another lab name: tests run at once and apply locks the lab.
    let lab = write_lab(dir.path(), &TEST_LAB.replace("name: clilab", "name: clilab-verify"));
    // Applied and verified in one process (the test driver's state is per process).
    let out = topo()
        .args(["-c", "test:///default", "--color", "never", "apply", "-y", "--timeout", "5"])
        .arg(&lab)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Verify: 0 verified, 3 failed, 0 skipped."), "{text}");
    assert!(text.contains("cannot probe the network's bridge"), "{text}");
    // Never an interface of this host found by name: the test driver's bridges are not here.
    assert!(text.contains("libvirt's test driver has no bridges on this host"), "{text}");
    assert!(stderr(&out).contains("3 NICs not verified"), "{}", stderr(&out));
}

#[test]
fn apply_without_confirmation_refuses_when_stdin_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // Another lab name than the apply test's: both run at once and apply locks the lab.
    let lab = write_lab(dir.path(), &TEST_LAB.replace("name: clilab", "name: clilab2"));
    let out = topo()
        .args(["-c", "test:///default", "--color", "never", "apply"])
        .arg(&lab)
        .write_stdin("yes\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("without confirmation"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("Apply complete"));
}

#[test]
fn graph_as_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    for (format, name) in [("dot", "graph_dot"), ("mermaid", "graph_mermaid")] {
        let out = topo().args(["graph", "--format", format]).arg(&lab).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        insta::assert_snapshot!(name, stdout(&out));
    }
}

/// On a terminal apply shows the plan and asks; only `yes` goes ahead. The terminal is a
/// pseudo-terminal made by util-linux `script`, which feeds our stdin to it.
#[test]
fn apply_asks_on_a_terminal() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("tty.yaml");
    std::fs::write(
        &lab,
        "apiVersion: topo/v1\nname: clilab-tty\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 10.124.0.0/24\n    dhcp_ping: true\n",
    )
    .unwrap();
    let run = |answer: &str| {
        let cmd = format!(
            "{} -c test:///default --color never apply --no-verify {}",
            env!("CARGO_BIN_EXE_topo"),
            lab.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = run("no\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Do you want to apply these changes? Only 'yes' will be accepted:"), "{text}");
    assert!(text.contains("cancelled: nothing was changed"), "{text}");
    assert!(!text.contains("Apply complete"), "{text}");
    let (code, text) = run("yes\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Apply complete: 1 added, 0 changed, 0 replaced, 0 destroyed."), "{text}");
}

/// Bug: `cd sub && topo plan ../lab.yaml`, or the lab reached through a symlinked folder,
/// planned other disk paths (so other overlays, a replacement of every VM with a disk).
/// Every path in the lab is made canonical first: the plan is the same however the file is
/// reached, and a saved plan applies from any folder.
#[test]
fn plan_does_not_depend_on_the_folder_or_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::fs::write(real.join("base.qcow2"), b"not read by plan").unwrap();
    for f in ["vmlinuz", "initrd.gz"] {
        std::fs::copy(std::path::Path::new("tests/fixtures/boot").join(f), real.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
    std::fs::write(
        real.join("lab.yaml"),
        "apiVersion: topo/v1\nname: clilab-paths\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 10.125.0.0/24\n    dhcp_ping: true\n\
         vms:\n  a:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {kernel: vmlinuz, initrd: ./sub/../initrd.gz}\n    disk: {image: base.qcow2, size: 1GiB}\n    nics: [{network: lan}]\n",
    )
    .unwrap();
    let plan = |cwd: &std::path::Path, file: &str| {
        let out =
            topo().current_dir(cwd).args(["-c", "test:///default", "-q", "plan", "--json", file]).output().unwrap();
        assert!(out.status.success(), "{file} from {}: {}", cwd.display(), stderr(&out));
        // The warnings (the files are in no storage pool of the test driver) point at the
        // lab file as it was named, like every diagnostic; the rest must be identical.
        let mut doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        for w in doc["warnings"].as_array_mut().unwrap() {
            for l in w["locations"].as_array_mut().unwrap() {
                assert!(l["file"].as_str().unwrap().ends_with("lab.yaml"), "{l}");
                l["file"] = "LAB".into();
            }
        }
        doc.to_string()
    };
    let want = plan(&real, "lab.yaml");
    let canonical = std::fs::canonicalize(&real).unwrap();
    assert!(want.contains(&format!("on {}", canonical.join("base.qcow2").display())), "{want}");
    assert!(want.contains(&canonical.join("vmlinuz").display().to_string()), "{want}");
    for (cwd, file) in [
        (real.join("sub"), "../lab.yaml"),
        (tmp.path().join("link/sub"), "../lab.yaml"),
        (tmp.path().to_path_buf(), "link/lab.yaml"),
        (tmp.path().to_path_buf(), "./link/sub/../lab.yaml"),
    ] {
        assert_eq!(plan(&cwd, file), want, "{file} from {}", cwd.display());
    }
    // A plan saved from one folder is applied from another.
    let out = topo()
        .current_dir(tmp.path().join("link/sub"))
        .args(["-c", "test:///default", "-q", "plan", "--out", "saved.json", "../lab.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(real.join("sub/saved.json")).unwrap()).unwrap();
    assert_eq!(saved["lab_file"], canonical.join("lab.yaml").display().to_string());
}

/// A user other than root has no `/run/topo`: apply keeps its lock files (lab and host) under
/// `$XDG_RUNTIME_DIR/topo`. As root the test drops to uid/gid 65534 with util-linux `setpriv`.
#[test]
fn apply_as_a_user_keeps_its_locks_under_xdg_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let lab = write_lab(dir.path(), &TEST_LAB.replace("name: clilab", "name: clilab-user"));
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o777)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(env!("CARGO_BIN_EXE_topo"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_topo"))
    };
    let out = cmd
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("TOPO_LOCK_DIR")
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("HOME", dir.path())
        .args(["-c", "test:///default", "--color", "never", "apply", "-y", "--no-verify"])
        .arg(&lab)
        .output()
        .expect("run topo (as root this needs util-linux setpriv)");
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(xdg.join("topo"))
        .expect("lock folder under XDG_RUNTIME_DIR")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("clilab-user-") && files[0].ends_with(".lock"), "{files:?}");
    assert!(files[1].starts_with("host-") && files[1].ends_with(".hostlock"), "{files:?}");
    let holder = std::fs::read_to_string(xdg.join("topo").join(&files[0])).unwrap();
    assert!(holder.starts_with("topo apply pid "), "{holder}");
}

/// Paths are checked where QEMU opens them: on this machine for a local URI; for another
/// host (or the test driver, which opens no files) `validate` does not look for them here,
/// and says that `plan` and `apply` check them through libvirt's storage pools.
#[test]
fn validate_checks_paths_only_for_a_local_host() {
    let file = "tests/fixtures/invalid/missing_kernel.yaml";
    let local = topo().args(["--color", "never", "-c", "qemu:///system", "validate", file]).output().unwrap();
    assert_eq!(local.status.code(), Some(1), "{}", stderr(&local));
    assert!(stderr(&local).contains("topo::lab::missing_file"), "{}", stderr(&local));
    let remote =
        topo().args(["--color", "never", "-c", "qemu+ssh://root@lab-host/system", "validate", file]).output().unwrap();
    assert!(remote.status.success(), "{}", stderr(&remote));
    assert!(
        stderr(&remote).contains("`topo validate` does not check them; `topo plan` and `topo apply` check them through libvirt's storage pools"),
        "{}",
        stderr(&remote)
    );
    let test = topo().args(["--color", "never", "-c", "test:///default", "validate", file]).output().unwrap();
    assert!(test.status.success(), "{}", stderr(&test));
    let json = topo().args(["-c", "qemu+ssh://root@lab-host/system", "validate", "--json", file]).output().unwrap();
    assert!(json.status.success(), "{}", stderr(&json));
}

/// `plan --json` carries the warnings it also prints (here: a kernel in no storage pool of
/// the test driver's host), located in the lab file; the plan itself goes ahead (exit 0).
#[test]
fn plan_json_carries_the_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(
        &lab,
        "apiVersion: topo/v1\nname: files\nvms:\n  v:\n    hypervisor: qemu\n    boot:\n      kernel: /srv/nowhere/vmlinuz\n",
    )
    .unwrap();
    let out = topo()
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["--color", "never", "-c", "test:///default", "plan", "--json"])
        .arg(&lab)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("topo::plan::file_unchecked"), "also on stderr: {err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = doc["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{doc:#}");
    assert_eq!(w[0]["code"], "topo::plan::file_unchecked");
    assert_eq!(w[0]["locations"][0]["start"]["line"], 7);
    assert_eq!(w[0]["locations"][0]["start"]["column"], 15);
}

/// On a host whose files are not this machine's (here the test driver, with its pool
/// `default-pool` at `/default-pool`), `plan` checks the lab's files through libvirt's
/// storage pools before anything is touched: every file missing from the pool over its
/// folder is refused at once, each at its place in the lab file (exit 1); a file in no
/// pool is a located warning saying how to make it checkable.
#[test]
fn plan_checks_files_through_storage_pools() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(
        &lab,
        "apiVersion: topo/v1\nname: files\nvms:\n  v:\n    hypervisor: qemu\n    boot:\n      kernel: /default-pool/vmlinuz\n      initrd: /srv/nowhere/initrd.gz\n    disk:\n      image: /default-pool/base.qcow2\n",
    )
    .unwrap();
    let out = topo()
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["--color", "never", "-c", "test:///default", "plan"])
        .arg(&lab)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("topo::plan::missing_file").count(), 2, "{err}");
    assert!(err.contains("boot.kernel `/default-pool/vmlinuz` of vm `v` does not exist"), "{err}");
    assert!(err.contains("lab.yaml:7:15"), "kernel located: {err}");
    assert!(err.contains("lab.yaml:10:14"), "image located: {err}");
    assert!(err.contains("topo::plan::file_unchecked"), "{err}");
    assert!(err.contains("lab.yaml:8:15"), "initrd located: {err}");
    // Each command whole on a line of its own (never split where the message wraps).
    assert!(err.lines().any(|l| l.trim() == "virsh pool-define-as NAME dir --target /srv/nowhere"), "{err}");
    assert!(err.lines().any(|l| l.trim() == "virsh pool-start NAME"), "{err}");
}

/// A `--target` plan warns only about the files of the VMs it reaches, on stderr and in
/// the JSON; without targets, about every VM's.
#[test]
fn plan_warns_only_about_targeted_vms() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.yaml");
    std::fs::write(
        &lab,
        "apiVersion: topo/v1\nname: tw\nvms:\n  a:\n    boot: {kernel: /srv/a/vmlinuz}\n  b:\n    boot: {kernel: /srv/b/vmlinuz}\n",
    )
    .unwrap();
    let plan = |extra: &[&str]| {
        topo()
            .env("XDG_RUNTIME_DIR", dir.path())
            .args(["--color", "never", "-c", "test:///default", "plan"])
            .arg(&lab)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = plan(&["--target", "vm.a"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("/srv/a/vmlinuz") && !err.contains("/srv/b/vmlinuz"), "{err}");
    let out = plan(&["--target", "vm.a", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = doc["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{doc:#}");
    assert!(w[0]["message"].as_str().unwrap().contains("/srv/a/vmlinuz"), "{doc:#}");
    let err = stderr(&plan(&[]));
    assert!(err.contains("/srv/a/vmlinuz") && err.contains("/srv/b/vmlinuz"), "{err}");
}

/// Terraform's destroy needs a parseable config, not the files it names: `topo destroy`
/// (and the other commands that open none of them) go ahead when the lab's kernel, image,
/// SSH key file or user-data file is gone since the apply; `plan` still refuses.
#[test]
fn destroy_does_not_need_the_files_the_lab_names() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let body = format!(
        "apiVersion: topo/v1\nname: gonelab\nnetworks:\n  lan: {{mode: isolated, subnet: 10.124.0.0/24, dhcp_ping: true}}\n\
         cloud_init:\n  ssh_authorized_keys_files: [{g}/keys.pub]\n  user_data: {g}/user-data.yaml\n\
         vms:\n  a:\n    hypervisor: qemu\n    disk: {{image: {g}/base.qcow2}}\n    nics: [{{network: lan}}]\n  \
         b:\n    hypervisor: qemu\n    boot: {{kernel: {g}/vmlinuz}}\n    nics: [{{network: lan}}]\n",
        g = gone.display()
    );
    let lab = write_lab(dir.path(), &body);
    let lab = lab.to_str().unwrap();
    // The test driver: key and user-data files are read here whatever the host.
    let plan = topo().args(["--color", "never", "-c", "test:///default", "plan", lab]).output().unwrap();
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
    assert!(stderr(&plan).contains("does not exist"), "{}", stderr(&plan));
    let destroy =
        topo().args(["--color", "never", "-c", "test:///default", "destroy", "--auto-approve", lab]).output().unwrap();
    assert!(destroy.status.success(), "{}", stderr(&destroy));
    let inventory = topo()
        .args(["--color", "never", "-c", "test:///default", "inventory", "--format", "hosts", lab])
        .output()
        .unwrap();
    assert!(!stderr(&inventory).contains("does not exist"), "{}", stderr(&inventory));
    // A local host, where kernel and image are checked on this disk for plan (the socket is
    // made up: only how far each command gets matters).
    let local = "qemu:///system?socket=/nonexistent/topo-test.sock";
    let plan = topo().args(["--color", "never", "-c", local, "plan", lab]).output().unwrap();
    assert_eq!(plan.status.code(), Some(1));
    assert!(stderr(&plan).contains("kernel"), "{}", stderr(&plan));
    for cmd in [&["destroy", "--auto-approve"][..], &["status"], &["verify"], &["inventory"]] {
        let out = topo().args(["--color", "never", "-c", local]).args(cmd).arg(lab).output().unwrap();
        assert!(!stderr(&out).contains("missing_file"), "{cmd:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("does not exist"), "{cmd:?}: {}", stderr(&out));
    }
}

/// With neither `-c` nor `LIBVIRT_DEFAULT_URI`, topo passes no URI and libvirt chooses, as it
/// does for virsh: the client config's `uri_default`, which may name one of its `uri_aliases`
/// (libvirt, "Connection URIs": "Default URI choice" and "URI aliases"). As root, the client
/// reads /etc/libvirt/libvirt.conf, so topo runs in a private mount namespace (`unshare
/// --mount`, root) with a folder of this test bound over /etc/libvirt; the host's own config
/// is never touched. Needs root and util-linux's unshare: without them it fails.
#[test]
fn no_uri_lets_libvirt_choose_its_configured_default_through_an_alias() {
    assert!(nix::unistd::geteuid().is_root(), "a private mount namespace needs root (CI runs as root)");
    let dir = tempfile::tempdir().unwrap();
    let lab = write_lab(dir.path(), TEST_LAB);
    let etc = dir.path().join("etc-libvirt");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(
        etc.join("libvirt.conf"),
        "uri_aliases = [\n  \"topolab=test:///default\",\n]\nuri_default = \"topolab\"\n",
    )
    .unwrap();
    let topo_bin = assert_cmd::cargo::cargo_bin("topo");
    let script = "mount --bind \"$1\" /etc/libvirt && shift && exec \"$@\"";
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&etc)
        .arg(&topo_bin)
        .args(["--color", "never", "plan"])
        .arg(&lab)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env("COLUMNS", "100")
        .output()
        .expect("util-linux's unshare runs");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("Observing test:///default"), "libvirt chose the aliased default:\n{}", stderr(&out));
    assert!(stdout(&out).contains("Plan: 3 to add"), "{}", stdout(&out));
}

/// `--target vm.GROUP` (a VM group, `count:`) plans the group's members and what they need;
/// a group of count 0 is refused as a target (it would target nothing, and no target means
/// everything); `validate` counts the members.
#[test]
fn a_group_target_plans_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab.yaml");
    let text = |count: u32| {
        format!(
            "apiVersion: topo/v1\nname: tg\nnetworks:\n  lan: {{mode: isolated, subnet: 10.61.0.0/24}}\nvms:\n  a:\n    boot: {{kernel: /srv/a/vmlinuz}}\n  c:\n    count: {count}\n    boot: {{kernel: /srv/c/vmlinuz}}\n    nics: [{{network: lan}}]\n"
        )
    };
    std::fs::write(&lab, text(2)).unwrap();
    let run = |args: &[&str]| {
        topo()
            .env("XDG_RUNTIME_DIR", dir.path())
            .args(["--color", "never", "-c", "test:///default"])
            .args(args)
            .arg(&lab)
            .output()
            .unwrap()
    };
    let out = run(&["validate"]);
    assert_eq!(stdout(&out).trim(), "lab tg: 1 network (0 external), 3 vms (2 in group c), 2 nics");
    let out = run(&["plan", "--json", "--target", "vm.c"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<&str> =
        doc["changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap()).collect();
    assert_eq!(changes, ["network.lan", "vm.c-1", "vm.c-2"]);
    assert_eq!(doc["targets"], serde_json::json!(["vm.c-1", "vm.c-2"]));
    std::fs::write(&lab, text(0)).unwrap();
    let out = run(&["plan", "--target", "vm.c"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("topo::plan::target") && err.contains("group `c` has no members (count: 0)"), "{err}");
}
