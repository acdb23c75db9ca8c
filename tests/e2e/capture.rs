//! Issue 19 end-to-end checks: `topo capture` on a real guest's tap and its network's bridge.

use super::*;

const CAP_SUBNET: &str = "192.168.174";

/// One tiny guest on an isolated network, at a reserved address the sandbox pings.
fn capture_lab() -> String {
    let g = guest_dir();
    format!(
        "apiVersion: topo/v1\nname: cap\nnetworks:\n  lan: {{ mode: isolated, subnet: {CAP_SUBNET}.0/24 }}\nvms:\n  c1:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet topo.ping={CAP_SUBNET}.1 }}\n    cloud_init: {{ enabled: false }}\n    nics: [{{ network: lan, ip: {CAP_SUBNET}.20 }}]\n"
    )
}

/// `tcpdump -n -r FILE`: one line per packet.
fn pcap_lines(file: &Path) -> Vec<String> {
    let out = Command::new("tcpdump").args(["-n", "-r"]).arg(file).output().expect("run tcpdump -r");
    assert!(out.status.success(), "tcpdump -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Every line an ICMP echo to or from the guest.
fn all_icmp_of_guest(lines: &[String]) {
    assert!(!lines.is_empty(), "no packet");
    for l in lines {
        assert!(l.contains("ICMP echo") && l.contains(&format!("{CAP_SUBNET}.20")), "{l}\n{lines:#?}");
    }
}

/// `topo capture` of the guest's NIC (its tap) into a file, of its network (the bridge) to a
/// pipe, a closed pipe and Ctrl-C: each a clean end (exit 0, "N packets captured"), and each
/// pcap read back by `tcpdump -r` holds the ICMP echoes between the sandbox and the guest.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_capture() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let lab = write(tmp.path(), "cap.yaml", &capture_lab());
    apply(&lab, 1);
    clock.step("apply: one guest");

    // ICMP through the tap and the bridge: the sandbox pings the guest 5 times a second.
    let mut ping = Command::new("ip")
        .args(["netns", "exec", &netns(), "busybox", "ping", "-q", "-i", "0.2", &format!("{CAP_SUBNET}.20")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ping");

    // The NIC, into a file, with a filter and a count.
    let nic = tmp.path().join("nic.pcap");
    let r = topo_ok(&["capture", "c1.eth0", path(&lab), "-w", path(&nic), "--count", "6", "icmp"]);
    assert!(r.stderr.contains("Capturing on vnet") && r.stderr.contains("(c1 eth0 ("), "{}", r.show());
    assert!(r.stderr.contains("6 packets captured"), "{}", r.show());
    let lines = pcap_lines(&nic);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    all_icmp_of_guest(&lines);
    clock.step("capture c1.eth0 -w FILE --count 6 icmp: 6 ICMP echoes in the file");

    // The network, to stdout (a pipe), read back from what came out.
    let o = topo_cmd(&["capture", "net:lan", path(&lab), "--count", "4", "icmp"]).output().expect("run topo");
    let r = Run::of(o.clone());
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("Capturing on") && r.stderr.contains("(network lan)"), "{}", r.show());
    let piped = tmp.path().join("net.pcap");
    std::fs::write(&piped, &o.stdout).expect("write");
    let lines = pcap_lines(&piped);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    all_icmp_of_guest(&lines);
    clock.step("capture net:lan --count 4 icmp | ...: 4 ICMP echoes on stdout");

    // A closed pipe: `| head -c 100` ends the capture, exit 0, no error.
    let line = format!(
        "ip netns exec '{}' '{}' -c {URI} --color never capture c1 '{}' </dev/null | head -c 100 > '{}'; echo \"status=${{PIPESTATUS[0]}}\"",
        netns(),
        topo_bin().display(),
        path(&lab),
        path(&tmp.path().join("head.out"))
    );
    let o = Command::new("bash").args(["-c", &line]).output().expect("bash");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("status=0"), "{line}\n{out}\n{err}");
    // `1 packet captured` or `N packets captured`: how many fit in 100 bytes varies.
    assert!(err.contains(" captured (the reader closed the pipe)"), "{err}");
    assert!(!err.contains("rror") && !err.contains("panic"), "{err}");
    assert_eq!(std::fs::metadata(tmp.path().join("head.out")).map(|m| m.len()).unwrap_or(0), 100);
    clock.step("capture | head -c 100: the closed pipe ends it, exit 0");

    // Ctrl-C: the file complete, exit 0, the count said.
    let sig = tmp.path().join("sigint.pcap");
    let r = interrupted_capture(&["capture", "c1.eth0", path(&lab), "-w", path(&sig), "icmp"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let n: usize = r
        .stderr
        .lines()
        .find_map(|l| l.strip_suffix(" packets captured").and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no count: {}", r.show()));
    let lines = pcap_lines(&sig);
    assert_eq!(lines.len(), n, "{lines:#?}");
    assert!(n >= 2, "{}", r.show());
    all_icmp_of_guest(&lines);
    clock.step("capture ... then SIGINT: exit 0, the file complete");

    let _ = ping.kill();
    let _ = ping.wait();
    topo_ok(&["destroy", "-y", "--shutdown-timeout", "2", path(&lab)]);
}

/// Runs `topo ARGS` until it says it is capturing, lets it capture 1.5 s, then sends SIGINT.
fn interrupted_capture(args: &[&str]) -> Run {
    use std::io::{BufRead, BufReader, Read};
    let mut child = topo_cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start topo capture");
    // `ip netns exec` execs topo in place: the child's PID is topo's.
    let pid = child.id() as i32;
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut stderr = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("read stderr") == 0 {
            break;
        }
        stderr.push_str(&line);
        if line.contains("Capturing on") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    err.read_to_string(&mut stderr).expect("read stderr");
    let mut stdout = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
    let code = child.wait().expect("wait").code().unwrap_or(-1);
    Run { code, stdout, stderr }
}
