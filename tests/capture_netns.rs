//! Real captures (`topo::host::capture`) inside network namespaces this test creates:
//! `<ns>-h` holds bridge `br0` (10.98.0.1/24) with port `vh`, the host end of a veth pair
//! whose other end `vg` (10.98.0.5/24) is in `<ns>-g`, where `ping` runs. Captured on `vh`
//! (a VM's tap plays the same part) and on `br0` (a network's bridge), by libpcap in this
//! process and by the remote path's `tcpdump` script run through a local runner; each file is
//! read back by `tcpdump -r`. No frame touches the host's own interfaces.
//!
//! Needs root, iproute2, busybox (its ping) and tcpdump: without them the tests fail (they never skip).

use std::fs::File;
use std::num::NonZeroU64;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use topo::host::capture::{CaptureError, CaptureOptions, Captured, Ended, Filter, Sink, capture_local, capture_remote};
use topo::host::runner::LocalRunner;

fn require() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the capture namespace tests need root (network namespaces, raw capture)"
    );
    for (tool, arg) in [("ip", "-V"), ("tcpdump", "--version"), ("busybox", "true")] {
        let ok = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        assert!(ok, "the capture namespace tests need `{tool}` (apt-get install iproute2 tcpdump busybox-static)");
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The two namespaces, with the guest pinging the bridge 5 times a second; all deleted on
/// drop (also on panic).
struct TestNet {
    host: String,
    guest: String,
    ping: Option<Child>,
}

impl TestNet {
    fn new(tag: &str) -> Self {
        require();
        let base = format!("topo-cap-{}-{tag}", std::process::id());
        let mut net = TestNet { host: format!("{base}-h"), guest: format!("{base}-g"), ping: None };
        ip(&["netns", "add", &net.host]);
        ip(&["netns", "add", &net.guest]);
        let (h, g) = (net.host.as_str(), net.guest.as_str());
        ip(&["-n", h, "link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        ip(&["-n", h, "addr", "add", "10.98.0.1/24", "dev", "br0"]);
        ip(&["-n", h, "link", "set", "br0", "up"]);
        ip(&["-n", h, "link", "add", "vh", "type", "veth", "peer", "name", "vg", "netns", g]);
        ip(&["-n", h, "link", "set", "vh", "master", "br0"]);
        ip(&["-n", h, "link", "set", "vh", "up"]);
        ip(&["-n", g, "addr", "add", "10.98.0.5/24", "dev", "vg"]);
        ip(&["-n", g, "link", "set", "vg", "up"]);
        let ping = Command::new("ip")
            .args(["netns", "exec", g, "busybox", "ping", "-q", "-i", "0.2", "10.98.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        net.ping = Some(ping);
        net
    }

    /// Runs `f` on a fresh thread that has joined the host namespace (and so do the
    /// processes it starts).
    fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(format!("/run/netns/{}", self.host)).expect("open netns");
                setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Some(mut p) = self.ping.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in [&self.host, &self.guest] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn filter(text: &str) -> Option<Filter> {
    Filter::new(&text.split_whitespace().map(String::from).collect::<Vec<_>>()).expect("a valid filter")
}

fn opts(f: &str, count: Option<u64>) -> CaptureOptions {
    CaptureOptions { filter: filter(f), count: count.and_then(NonZeroU64::new) }
}

/// `tcpdump -n -r FILE`: the packets the file holds, one line each.
fn read_back(file: &Path) -> Vec<String> {
    let out = Command::new("tcpdump").args(["-n", "-r"]).arg(file).output().expect("run tcpdump -r");
    assert!(out.status.success(), "tcpdump -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Every line an ICMP echo between the guest and the bridge.
fn all_icmp(lines: &[String]) {
    assert!(!lines.is_empty());
    for l in lines {
        assert!(l.contains("ICMP echo"), "not an ICMP echo: {l}\n{lines:#?}");
        assert!(l.contains("10.98.0.5") && l.contains("10.98.0.1"), "{l}");
    }
}

/// A NIC's port (the veth end on the bridge, as a VM's tap is): `icmp` and a count of 6 give
/// a file of exactly 6 ICMP echoes, requests and replies.
#[test]
fn local_capture_on_a_port_with_filter_and_count() {
    let net = TestNet::new("port");
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("port.pcap");
    let cancel = AtomicBool::new(false);
    let t0 = Instant::now();
    let got = net
        .in_host(|| capture_local("vh", &opts("icmp", Some(6)), &Sink::File(file.clone()), &cancel))
        .expect("capture");
    assert_eq!(got, Captured { packets: 6, dropped: Some(0), ended: Ended::Count });
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let lines = read_back(&file);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    all_icmp(&lines);
    assert!(lines.iter().any(|l| l.contains("echo request")) && lines.iter().any(|l| l.contains("echo reply")));
}

/// A network's bridge: the filter keeps what it names (`arp` only here, not the pings), and
/// the stop flag ends a capture without a count cleanly, the file complete.
#[test]
fn local_capture_on_a_bridge_until_stopped() {
    let net = TestNet::new("br");
    let tmp = tempfile::tempdir().expect("temp dir");
    let (icmp, none) = (tmp.path().join("icmp.pcap"), tmp.path().join("none.pcap"));
    let cancel = AtomicBool::new(false);
    let (a, b) = net.in_host(|| {
        thread::scope(|s| {
            let a = s.spawn(|| capture_local("br0", &opts("icmp", None), &Sink::File(icmp.clone()), &cancel));
            let b = s.spawn(|| capture_local("br0", &opts("udp port 9", None), &Sink::File(none.clone()), &cancel));
            thread::sleep(Duration::from_millis(1500));
            cancel.store(true, Ordering::SeqCst);
            (a.join().expect("capture thread"), b.join().expect("capture thread"))
        })
    });
    let a = a.expect("capture");
    assert_eq!(a.ended, Ended::Interrupted);
    assert!(a.packets >= 4, "{a:?}");
    let lines = read_back(&icmp);
    assert_eq!(lines.len() as u64, a.packets, "{lines:#?}");
    all_icmp(&lines);
    let b = b.expect("capture");
    assert_eq!((b.packets, b.ended), (0, Ended::Interrupted));
    assert!(read_back(&none).is_empty(), "a complete file with no packet");
}

/// The reader of the output going away (a pipe closed by `head -c 100`) ends the capture
/// cleanly, `ReaderGone`, not an error.
#[test]
fn a_closed_pipe_ends_the_capture() {
    let net = TestNet::new("pipe");
    let tmp = tempfile::tempdir().expect("temp dir");
    let fifo = tmp.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let head = Command::new("head").arg("-c").arg("100").arg(&fifo).stdout(Stdio::piped()).spawn().expect("head");
    let cancel = AtomicBool::new(false);
    let got =
        net.in_host(|| capture_local("vh", &opts("", None), &Sink::File(fifo.clone()), &cancel)).expect("capture");
    assert_eq!(got.ended, Ended::ReaderGone, "{got:?}");
    let out = head.wait_with_output().expect("head");
    assert_eq!(out.stdout.len(), 100);
    // libpcap's savefile magic (microseconds, either byte order).
    assert!(out.stdout.starts_with(&[0xd4, 0xc3, 0xb2, 0xa1]) || out.stdout.starts_with(&[0xa1, 0xb2, 0xc3, 0xd4]));
}

/// The remote path, with its script run through a local runner (what `ssh` runs on another
/// host): `tcpdump` there filters and streams, topo counts and writes; a count, the stop
/// flag and a missing device each end it as on a local host, and the tcpdump is gone after.
#[test]
fn remote_path_through_a_runner() {
    let net = TestNet::new("rem");
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("rem.pcap");
    let cancel = AtomicBool::new(false);
    let got = net
        .in_host(|| capture_remote(&LocalRunner, "vh", &opts("icmp", Some(4)), &Sink::File(file.clone()), &cancel))
        .expect("capture");
    assert_eq!((got.packets, got.ended), (4, Ended::Count), "{got:?}");
    let lines = read_back(&file);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    all_icmp(&lines);

    let file = tmp.path().join("stopped.pcap");
    let got = net.in_host(|| {
        thread::scope(|s| {
            let c = s
                .spawn(|| capture_remote(&LocalRunner, "br0", &opts("icmp", None), &Sink::File(file.clone()), &cancel));
            thread::sleep(Duration::from_millis(1500));
            cancel.store(true, Ordering::SeqCst);
            c.join().expect("capture thread")
        })
    });
    let got = got.expect("capture");
    assert_eq!(got.ended, Ended::Interrupted);
    let lines = read_back(&file);
    assert_eq!(lines.len() as u64, got.packets);
    assert!(got.packets >= 2, "{got:?}");
    all_icmp(&lines);

    cancel.store(false, Ordering::SeqCst);
    let e = net
        .in_host(|| {
            capture_remote(&LocalRunner, "nosuch0", &opts("", None), &Sink::File(tmp.path().join("x")), &cancel)
        })
        .expect_err("no such device");
    assert!(
        matches!(&e, CaptureError::Remote { device, message, .. } if device == "nosuch0" && message.contains("nosuch0")),
        "{e:?}"
    );
    // No tcpdump of these captures is left running.
    let ps =
        Command::new("pgrep").args(["-f", "tcpdump -U -w - -s 262144 -i (vh|br0|nosuch0)"]).output().expect("pgrep");
    let left = String::from_utf8_lossy(&ps.stdout).into_owned();
    let mine: Vec<&str> = left.lines().filter(|pid| is_in_ns(pid, &net.host)).collect();
    assert!(mine.is_empty(), "tcpdump left running: {mine:?}");
}

/// Whether process `pid` is in network namespace `ns`.
fn is_in_ns(pid: &str, ns: &str) -> bool {
    let id = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
    id(&format!("/proc/{pid}/ns/net")).is_some()
        && id(&format!("/proc/{pid}/ns/net")) == id(&format!("/run/netns/{ns}"))
}

/// A device that is not there, and a capture without permission, are refused with their own
/// errors.
#[test]
fn refusals_on_this_machine() {
    let net = TestNet::new("ref");
    let cancel = AtomicBool::new(false);
    let tmp = tempfile::tempdir().expect("temp dir");
    let e = net
        .in_host(|| capture_local("vnet999", &opts("", None), &Sink::File(tmp.path().join("x")), &cancel))
        .expect_err("no such device");
    assert!(matches!(&e, CaptureError::NoDevice { device } if device == "vnet999"), "{e:?}");
    assert!(!tmp.path().join("x").exists(), "nothing written for a capture that did not start");
    // Without CAP_NET_RAW (a child with an empty capability set, through setpriv), libpcap is
    // refused: the binary says so. Here: the library's classification of that refusal.
    let e = net.in_host(|| {
        thread::scope(|s| {
            s.spawn(|| {
                drop_net_raw();
                capture_local("vh", &opts("", None), &Sink::File(tmp.path().join("y")), &cancel)
            })
            .join()
            .expect("thread")
        })
    });
    assert!(matches!(e, Err(CaptureError::PermissionDenied { .. })), "{e:?}");
}

/// Drops CAP_NET_RAW and CAP_NET_ADMIN from this thread's effective set (Linux capabilities
/// are per thread).
fn drop_net_raw() {
    // capset(2) through the raw syscall: version 3, this thread, effective and permitted
    // without bits 12 (NET_ADMIN) and 13 (NET_RAW).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words, as capabilities(7) says.
    unsafe {
        assert_eq!(libc_syscall(125, &mut h as *mut _ as usize, d.as_mut_ptr() as usize), 0, "capget");
        let mask = !((1u32 << 12) | (1u32 << 13));
        d[0].effective &= mask;
        d[0].permitted &= mask;
        assert_eq!(libc_syscall(126, &mut h as *mut _ as usize, d.as_mut_ptr() as usize), 0, "capset");
    }
}

unsafe extern "C" {
    fn syscall(n: i64, ...) -> i64;
}

/// syscall(2) with two arguments (x86_64 numbers: capget 125, capset 126).
unsafe fn libc_syscall(n: i64, a: usize, b: usize) -> i64 {
    // SAFETY: the caller passes what the system call expects.
    unsafe { syscall(n, a, b) }
}
