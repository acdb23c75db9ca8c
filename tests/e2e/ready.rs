//! Issue 19 end-to-end check (readiness): tiny guests with `ready:` conditions on their
//! serial console and a TCP port; one VM gets ready, one never does and fails apply with the
//! condition and the last thing seen; the same in `topo verify --json`. The cloud image's
//! `ssh` and `cloud-init` conditions are checked in `ipv6::e2e_ipv6_cloud_guest`.

use super::*;

fn ready_lab(v2_ready: &str) -> String {
    let g = guest_dir();
    let vm = |n: &str, ready: &str| {
        format!(
            "  {n}:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    nics: [{{ network: lan }}]\n    ready: {ready}\n"
        )
    };
    format!(
        "apiVersion: topo/v1\nname: rdy\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 192.168.176.0/24\nvms:\n{}{}",
        vm("v1", "[{console: \"topo-guest: init done\"}]"),
        vm("v2", v2_ready)
    )
}

#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_ready_console_and_tcp() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    // v2 waits for TCP port 22, which the tiny guest never opens (it has no sshd).
    let lab = write(tmp.path(), "lab.yaml", &ready_lab("[{tcp: 22}]"));
    let r = topo(&["apply", "-y", "--timeout", "90", "--ready-timeout", "8", path(&lab)]);
    assert_eq!(r.code, 1, "a VM not ready fails apply:\n{}", r.show());
    assert!(r.stdout.contains("Verify: 2 verified, 0 failed"), "{}", r.show());
    assert!(r.stdout.contains("Ready: 1 ready, 1 not ready."), "{}", r.show());
    let v1 = r.stdout.lines().find(|l| l.starts_with("v1 ") && l.contains("console:")).unwrap_or_default();
    assert!(v1.contains(" ready "), "v1 is ready:\n{}", r.show());
    assert!(
        r.stdout.contains("v2: not ready: tcp:22 did not hold; last seen: connection refused"),
        "v2 names the condition and the last thing seen:\n{}",
        r.show()
    );
    assert!(r.stderr.contains("1 VM not ready"), "{}", r.show());
    assert_converged(&lab);
    clock.step("apply: v1 ready by its console line, v2 not ready (tcp:22 refused), exit 1");

    let r = topo(&["verify", "--json", "--ready-timeout", "0", path(&lab)]);
    assert_eq!(r.code, 1, "{}", r.show());
    let doc: Value = serde_json::from_str(&r.stdout).expect("verify JSON");
    let states: Vec<(&str, &str)> = doc["ready"]
        .as_array()
        .expect("ready")
        .iter()
        .map(|v| (v["vm"].as_str().unwrap_or_default(), v["state"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(states, vec![("v1", "ready"), ("v2", "not-ready")], "{}", r.stdout);
    assert_eq!(doc["ready"][1]["conditions"][0]["last_seen"], "connection refused", "{}", r.stdout);
    clock.step("verify --json: v1 ready, v2 not-ready with last_seen");

    // `ready: []` on v2: nothing to wait for; the lab verifies.
    std::fs::write(&lab, ready_lab("[]")).expect("lab");
    let r = topo_ok(&["verify", path(&lab)]);
    assert!(r.stdout.contains("Ready: 1 ready, 0 not ready."), "{}", r.show());
    clock.step("v2 with `ready: []`: verify passes");
    topo_ok(&["destroy", "-y", path(&lab)]);
}
