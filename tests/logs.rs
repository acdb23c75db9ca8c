//! Logs on stderr: `TOPO_LOG` (RUST_LOG syntax) and `-v`/`-vv` trace every libvirt call with
//! its duration, through the real `virt` code against libvirt's `test:///default` driver.

use assert_cmd::Command;

fn topo() -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env_remove("TOPO_LOG").env("COLUMNS", "100");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One network only: the test driver applies it without kernels or disks.
const LAB: &str = "\
apiVersion: topo/v1
name: loglab
networks:
  lan:
    mode: isolated
    subnet: 10.77.0.0/24
    dhcp: true
    dhcp_ping: true
";

fn lab() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, LAB).unwrap();
    (dir, path)
}

/// The libvirt functions a log names, in order, from lines like
/// `... DEBUG topo::host::hypervisor::libvirt: libvirt call api="virConnectOpen" object="..." ms=0.071`.
fn calls(log: &str) -> Vec<(String, f64)> {
    log.lines()
        .filter(|l| l.contains("libvirt call"))
        .map(|l| {
            let field = |key: &str| -> String {
                let rest = &l[l.find(key).unwrap_or_else(|| panic!("{key} in {l}")) + key.len()..];
                rest.trim_start_matches('"').split(['"', ' ']).next().unwrap().to_owned()
            };
            (field("api="), field("ms=").parse().unwrap_or_else(|_| panic!("a duration in {l}")))
        })
        .collect()
}

#[test]
fn topo_log_debug_shows_each_libvirt_call_with_its_duration() {
    let (_dir, lab) = lab();
    let out = topo()
        .env("TOPO_LOG", "debug")
        .args(["-c", "test:///default", "--color", "never", "plan"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let calls = calls(&log);
    let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["virConnectOpen", "virConnectGetURI", "virConnectListAllNetworks"], "{log}");
    for api in ["virNetworkGetXMLDesc", "virConnectListAllDomains", "virDomainGetState"] {
        assert!(names.contains(&api), "{api} missing from\n{log}");
    }
    assert!(calls.iter().all(|(_, ms)| *ms >= 0.0));
    // Logs go to stderr only: the plan on stdout is untouched.
    assert!(!text(&out.stdout).contains("DEBUG"), "{}", text(&out.stdout));
}

#[test]
fn v_and_vv_on_apply() {
    let (_dir, lab) = lab();
    let out = topo()
        .args(["-c", "test:///default", "--color", "never", "-v", "apply", "-y", "--no-verify"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let names: Vec<String> = calls(&log).into_iter().map(|(n, _)| n).collect();
    for api in ["virNetworkDefineXML", "virNetworkCreate", "virNetworkSetAutostart"] {
        assert!(names.iter().any(|n| n == api), "{api} missing from\n{log}");
    }
    assert!(!log.contains("XML sent to libvirt"), "-v does not show the XML:\n{log}");

    // Each process starts the test driver afresh: the network is created again.
    let out = topo()
        .args(["-c", "test:///default", "--color", "never", "-vv", "apply", "-y", "--no-verify"])
        .arg(&lab)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("TRACE") && log.contains("network XML sent to libvirt") && log.contains("<network"), "{log}");
}

#[test]
fn no_flag_no_log() {
    let (_dir, lab) = lab();
    let out = topo().args(["-c", "test:///default", "--color", "never", "plan"]).arg(&lab).output().unwrap();
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("libvirt call"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_topo_log_is_an_error_before_anything_runs() {
    let (_dir, lab) = lab();
    let out = topo()
        .env("TOPO_LOG", "topo=loud")
        .args(["-c", "test:///default", "--color", "never", "apply", "-y"])
        .arg(&lab)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("TOPO_LOG=\"topo=loud\" is not a log filter"), "{err}");
    assert!(!err.contains("Observing"), "nothing ran: {err}");
}
