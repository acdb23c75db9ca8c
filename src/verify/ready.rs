//! Readiness beyond ARP: after a VM's NICs are proven, its `ready:` conditions (an SSH
//! banner, cloud-init finished, a TCP port, a console line) are waited for, each VM at once,
//! up to a bound; each VM's time to ready and, for one that never got there, the condition
//! and the last thing seen are reported (docs/verify.md, "Readiness").
//!
//! Where the checks run: TCP from this machine for a local host (topo runs beside the
//! bridges, as for ARP), the console log file of the VM (`/var/log/libvirt/qemu/DOMAIN-console.log`,
//! which topo's domains keep) read here; for a host reached over ssh both run there through
//! its [`Runner`] (bash's `/dev/tcp`, `tail`).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use super::state::{ConditionOutcome, ReadyState, VmReadiness};
use super::state::{NicState, VerifyReport};
use crate::host::runner::Runner;
use crate::host::xml::console_log_path;
use crate::lab::model::{HostName, Lab, ReadyCondition, VmName, VmState};

/// How long one TCP connection attempt waits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the SSH banner is waited for once connected (sshd sends it at once; RFC 4253
/// 4.2 lets a server send other lines first, which topo skips up to the banner).
pub const BANNER_TIMEOUT: Duration = Duration::from_secs(3);
/// The pause between two rounds of checks.
pub const POLL: Duration = Duration::from_secs(1);
/// How much of the end of a console log is read per check.
pub const CONSOLE_TAIL: u64 = 64 * 1024;
/// The longest "last seen" text kept for a report.
const SEEN_MAX: usize = 160;

/// What a VM's readiness is checked on: TCP connections to its address and its console.
pub trait ReadyProbe: Send + Sync {
    /// Connects to `addr:port`. With `banner`, also reads lines until one starts with `SSH-`
    /// (within [`BANNER_TIMEOUT`]) and returns it.
    ///
    /// # Errors
    /// What failed, in words (`connection refused`, `timed out`, `no SSH banner: ...`).
    fn connect(&self, addr: Ipv4Addr, port: u16, banner: bool) -> Result<Option<String>, String>;

    /// The end of the VM's serial console output since its start (at most [`CONSOLE_TAIL`]
    /// bytes, lossily decoded).
    ///
    /// # Errors
    /// The console log cannot be read, in words.
    fn console(&self, domain: &str) -> Result<String, String>;
}

/// The probe on this machine: TCP from here, the console log read here.
#[derive(Debug, Default)]
pub struct LocalProbe;

impl ReadyProbe for LocalProbe {
    fn connect(&self, addr: Ipv4Addr, port: u16, banner: bool) -> Result<Option<String>, String> {
        let stream =
            TcpStream::connect_timeout(&SocketAddr::from((addr, port)), CONNECT_TIMEOUT).map_err(|e| io_words(&e))?;
        if !banner {
            return Ok(None);
        }
        stream.set_read_timeout(Some(BANNER_TIMEOUT)).map_err(|e| io_words(&e))?;
        let mut lines = BufReader::new(stream.take(8 * 1024));
        let mut last = String::new();
        loop {
            let mut line = String::new();
            match lines.read_line(&mut line) {
                Ok(0) => return Err(no_banner(&last, "the connection was closed")),
                Ok(_) if line.starts_with("SSH-") => return Ok(Some(line.trim_end().to_owned())),
                Ok(_) => last = line,
                Err(e) => return Err(no_banner(&last, &io_words(&e))),
            }
        }
    }

    fn console(&self, domain: &str) -> Result<String, String> {
        use std::io::{Read, Seek, SeekFrom};
        let path = console_log_path(domain);
        let mut f = std::fs::File::open(&path).map_err(|e| format!("cannot read {path}: {}", io_words(&e)))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > CONSOLE_TAIL {
            f.seek(SeekFrom::Start(len - CONSOLE_TAIL)).map_err(|e| io_words(&e))?;
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| format!("cannot read {path}: {}", io_words(&e)))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

use std::io::Read as _;

/// `no SSH banner (the connection was closed; last line: ...)`.
fn no_banner(last: &str, why: &str) -> String {
    let last = last.trim();
    if last.is_empty() { format!("no SSH banner ({why})") } else { format!("no SSH banner ({why}; got {last:?})") }
}

/// An I/O error in a few words: `connection refused`, `timed out`, ...
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".into(),
        std::io::ErrorKind::NotFound => "not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The probe on a host reached over ssh: the same checks run there, by one command each.
pub struct RunnerProbe {
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for RunnerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerProbe").field("on", &self.runner.describe()).finish()
    }
}

impl RunnerProbe {
    /// Checks on the machine `runner` runs commands on.
    pub fn over(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }
}

/// The TCP check on a remote host. `$1` address, `$2` port, `$3` `banner` or `open`.
/// Prints `@nobash`, or `@open` once connected then (for `banner`) what the server sent
/// first, then `@rc STATUS`.
const TCP_SCRIPT: &str = r#"command -v bash >/dev/null 2>&1 || { echo @nobash; exit 0; }
timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 3; echo @open; [ "$2" = banner ] || exit 0; head -c 1024 <&3' "$1" "$2" "$3" 2>&1
echo "@rc $?""#;

impl ReadyProbe for RunnerProbe {
    fn connect(&self, addr: Ipv4Addr, port: u16, banner: bool) -> Result<Option<String>, String> {
        let (a, p) = (addr.to_string(), port.to_string());
        let mode = if banner { "banner" } else { "open" };
        let out = self
            .runner
            .run(&["sh", "-c", TCP_SCRIPT, "sh", &a, &p, mode], None)
            .map_err(|e| format!("cannot run the check on {}: {e}", self.runner.describe()))?;
        parse_tcp(&String::from_utf8_lossy(&out.stdout), banner, &self.runner.describe())
    }

    fn console(&self, domain: &str) -> Result<String, String> {
        let path = console_log_path(domain);
        let tail = CONSOLE_TAIL.to_string();
        let out = self
            .runner
            .run(&["tail", "-c", &tail, &path], None)
            .map_err(|e| format!("cannot read {path} on {}: {e}", self.runner.describe()))?;
        if out.code != 0 {
            return Err(format!(
                "cannot read {path} on {}: {}",
                self.runner.describe(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Reads [`TCP_SCRIPT`]'s output.
fn parse_tcp(text: &str, banner: bool, on: &str) -> Result<Option<String>, String> {
    if text.lines().any(|l| l == "@nobash") {
        return Err(format!("cannot check TCP on {on}: it has no bash (Debian/Ubuntu package bash)"));
    }
    let open = text.lines().any(|l| l == "@open");
    if !open {
        let why = text
            .lines()
            .filter(|l| !l.starts_with('@'))
            .map(|l| l.rsplit(": ").next().unwrap_or(l).trim())
            .find(|l| !l.is_empty())
            .map(|l| l.to_ascii_lowercase())
            .unwrap_or_else(|| "timed out".into());
        return Err(why);
    }
    if !banner {
        return Ok(None);
    }
    let after: Vec<&str> =
        text.lines().skip_while(|l| *l != "@open").skip(1).filter(|l| !l.starts_with("@rc")).collect();
    match after.iter().find(|l| l.starts_with("SSH-")) {
        Some(l) => Ok(Some(l.trim_end().to_owned())),
        None => Err(no_banner(after.last().copied().unwrap_or(""), "none within 5 s")),
    }
}

/// One VM whose readiness is waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyTarget {
    pub vm: VmName,
    /// Its host, in a lab across hosts (for the table's HOST column and the JSON).
    pub host: Option<HostName>,
    /// Its libvirt domain name (the console log's name).
    pub domain: String,
    pub conditions: Vec<ReadyCondition>,
    /// The address TCP conditions connect to: the VM's first proven IPv4 address, in NIC
    /// order. `None` when none of its NICs was proven.
    pub address: Option<Ipv4Addr>,
}

/// The VMs of `lab` that have conditions, are meant to run, and that `keep` accepts, each
/// with its first IPv4 address proven in `report`.
pub fn targets(lab: &Lab, report: &VerifyReport, keep: &dyn Fn(&VmName) -> bool) -> Vec<ReadyTarget> {
    lab.vms
        .values()
        .filter(|vm| !vm.ready.is_empty() && vm.state == VmState::Running && keep(&vm.name))
        .map(|vm| {
            let rows = report.nics.iter().filter(|n| n.target.vm == vm.name);
            let address = rows.clone().find_map(|n| match &n.state {
                NicState::Verified { ip: std::net::IpAddr::V4(ip), .. } => Some(*ip),
                _ => None,
            });
            // A VM without NICs in a lab across hosts still has its host.
            let host = rows
                .clone()
                .find_map(|n| n.target.host.clone())
                .or_else(|| (!lab.hosts.is_empty()).then(|| vm.host.clone()));
            ReadyTarget {
                vm: vm.name.clone(),
                host,
                domain: vm.libvirt_name.to_string(),
                conditions: vm.ready.clone(),
                address,
            }
        })
        .collect()
}

/// Whether `condition` holds for `t`: `Ok(())`, or what was seen.
fn check(probe: &dyn ReadyProbe, t: &ReadyTarget, condition: &ReadyCondition) -> Result<(), String> {
    let address =
        || t.address.ok_or_else(|| "no proven IPv4 address to connect to (its NICs failed verification)".to_owned());
    match condition {
        ReadyCondition::Ssh => probe.connect(address()?, 22, true).map(drop),
        ReadyCondition::Tcp(port) => probe.connect(address()?, *port, false).map(drop),
        ReadyCondition::CloudInit => {
            let text = probe.console(&t.domain)?;
            if text.lines().any(|l| l.contains("Cloud-init v. ") && l.contains(" finished at ")) {
                Ok(())
            } else {
                Err(last_line(&text))
            }
        }
        ReadyCondition::Console(want) => {
            let text = probe.console(&t.domain)?;
            if text.lines().any(|l| l.contains(want.as_str())) { Ok(()) } else { Err(last_line(&text)) }
        }
    }
}

/// The console's last non-empty line, cut to [`SEEN_MAX`] characters, as "last seen".
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c.is_control()))
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() {
        return "the console has printed nothing yet".into();
    }
    let cut: String = line.chars().take(SEEN_MAX).collect();
    format!("console: {cut:?}")
}

/// What checks a target's conditions, or why nothing can.
pub type ProbeFor = Result<Arc<dyn ReadyProbe>, String>;

/// Waits until every condition of every target holds, `timeout` passes, or `cancel` is set:
/// each round checks every VM's unmet conditions (each VM in its own thread), then pauses
/// [`POLL`]. `since(vm)` is the instant a VM's times count from; `tell` hears each VM once
/// it is ready or given up on. A VM whose host `probe_of` cannot check (`Err(why)`) is
/// [`ReadyState::Unchecked`] at once, each condition saying why.
pub fn wait_ready(
    targets: &[ReadyTarget],
    probe_of: &(dyn Fn(&ReadyTarget) -> ProbeFor + Sync),
    timeout: Duration,
    cancel: &AtomicBool,
    since: &(dyn Fn(&ReadyTarget) -> Instant + Sync),
    tell: &(dyn Fn(&VmReadiness) + Sync),
) -> Vec<VmReadiness> {
    let deadline = Instant::now() + timeout;
    let mut state: Vec<VmReadiness> = targets
        .iter()
        .map(|t| VmReadiness {
            vm: t.vm.clone(),
            host: t.host.clone(),
            state: ReadyState::NotReady,
            seconds: None,
            conditions: t
                .conditions
                .iter()
                .map(|c| ConditionOutcome { condition: c.to_string(), met: false, seconds: None, last_seen: None })
                .collect(),
        })
        .collect();
    let mut probes = Vec::new();
    for (t, r) in targets.iter().zip(state.iter_mut()) {
        match probe_of(t) {
            Ok(p) => probes.push(Some(p)),
            Err(why) => {
                r.state = ReadyState::Unchecked;
                r.conditions.iter_mut().for_each(|c| c.last_seen = Some(why.clone()));
                tell(r);
                probes.push(None);
            }
        }
    }
    loop {
        std::thread::scope(|s| {
            for ((t, r), probe) in targets.iter().zip(state.iter_mut()).zip(&probes) {
                if r.state != ReadyState::NotReady {
                    continue;
                }
                let Some(probe) = probe.clone() else { continue };
                s.spawn(move || {
                    for (cond, out) in t.conditions.iter().zip(r.conditions.iter_mut()) {
                        if out.met {
                            continue;
                        }
                        match check(probe.as_ref(), t, cond) {
                            Ok(()) => {
                                out.met = true;
                                out.seconds = Some(since(t).elapsed().as_secs_f64());
                                out.last_seen = None;
                            }
                            Err(seen) => out.last_seen = Some(seen),
                        }
                    }
                    if r.conditions.iter().all(|c| c.met) {
                        r.state = ReadyState::Ready;
                        r.seconds = r.conditions.iter().filter_map(|c| c.seconds).reduce(f64::max).or(Some(0.0));
                        tell(r);
                    }
                });
            }
        });
        if state.iter().all(|r| r.state != ReadyState::NotReady) {
            break;
        }
        if Instant::now() >= deadline || cancel.load(Ordering::Relaxed) {
            let interrupted = cancel.load(Ordering::Relaxed);
            for r in state.iter_mut().filter(|r| r.state == ReadyState::NotReady) {
                if interrupted {
                    for c in r.conditions.iter_mut().filter(|c| !c.met) {
                        let seen = c.last_seen.take().unwrap_or_else(|| "nothing".into());
                        c.last_seen = Some(format!("interrupted before it held (last seen: {seen})"));
                    }
                }
                tell(r);
            }
            break;
        }
        let pause_until = (Instant::now() + POLL).min(deadline);
        while Instant::now() < pause_until && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A probe whose console and ports are set by the test, changing after some checks.
    #[derive(Default)]
    struct Fake {
        console: Mutex<BTreeMap<String, Vec<String>>>,
        open_after: Mutex<BTreeMap<u16, u32>>,
        calls: Mutex<u32>,
    }

    impl ReadyProbe for Fake {
        fn connect(&self, _addr: Ipv4Addr, port: u16, banner: bool) -> Result<Option<String>, String> {
            let mut open = self.open_after.lock().unwrap();
            match open.get_mut(&port) {
                Some(0) => Ok(banner.then(|| "SSH-2.0-OpenSSH_9.2".to_owned())),
                Some(n) => {
                    *n -= 1;
                    Err("connection refused".into())
                }
                None => Err("connection refused".into()),
            }
        }
        fn console(&self, domain: &str) -> Result<String, String> {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            let c = self.console.lock().unwrap();
            let lines = c.get(domain).ok_or_else(|| "cannot read the log: not found".to_owned())?;
            // One more line per call: the console grows.
            Ok(lines.iter().take(*calls as usize).cloned().collect::<Vec<_>>().join("\n"))
        }
    }

    fn target(vm: &str, conditions: Vec<ReadyCondition>, address: Option<Ipv4Addr>) -> ReadyTarget {
        ReadyTarget { vm: VmName::new(vm).unwrap(), host: None, domain: format!("lab-{vm}"), conditions, address }
    }

    fn run(fake: Arc<Fake>, targets: &[ReadyTarget], timeout: Duration) -> Vec<VmReadiness> {
        let t0 = Instant::now();
        let probe: Arc<dyn ReadyProbe> = fake;
        wait_ready(targets, &|_| Ok(probe.clone()), timeout, &AtomicBool::new(false), &|_| t0, &|_| {})
    }

    #[test]
    fn every_condition_met_in_time_gives_a_time_to_ready() {
        let fake = Arc::new(Fake::default());
        fake.open_after.lock().unwrap().extend([(22, 1), (80, 0)]);
        fake.console.lock().unwrap().insert(
            "lab-a".into(),
            vec![
                "[    1.0] booting".into(),
                "Cloud-init v. 22.4.2 running 'modules:final'".into(),
                "Cloud-init v. 22.4.2 finished at Mon, 07 Dec 2026 20:00:00 +0000. Datasource DataSourceNoCloud.  Up 41.20 seconds".into(),
            ],
        );
        let t = target(
            "a",
            vec![ReadyCondition::Ssh, ReadyCondition::CloudInit, ReadyCondition::Tcp(80)],
            Some(Ipv4Addr::new(10, 0, 0, 5)),
        );
        let r = run(fake, &[t], Duration::from_secs(10));
        assert_eq!(r[0].state, ReadyState::Ready, "{r:?}");
        assert!(r[0].seconds.is_some_and(|s| s >= 1.0), "the second round at the earliest: {r:?}");
        assert!(r[0].conditions.iter().all(|c| c.met && c.last_seen.is_none()));
    }

    #[test]
    fn a_vm_that_never_gets_ready_names_the_condition_and_the_last_thing_seen() {
        let fake = Arc::new(Fake::default());
        fake.console.lock().unwrap().insert("lab-b".into(), vec!["Debian GNU/Linux 12 b ttyS0".into(), "".into()]);
        let t = target(
            "b",
            vec![ReadyCondition::Console("login:".into()), ReadyCondition::Ssh],
            Some(Ipv4Addr::new(10, 0, 0, 6)),
        );
        let r = run(fake, &[t], Duration::from_millis(300));
        assert_eq!(r[0].state, ReadyState::NotReady);
        assert_eq!(r[0].seconds, None);
        let unmet = r[0].unmet().unwrap();
        assert_eq!(unmet.condition, "console:\"login:\"");
        assert_eq!(unmet.last_seen.as_deref(), Some("console: \"Debian GNU/Linux 12 b ttyS0\""));
        assert_eq!(r[0].conditions[1].last_seen.as_deref(), Some("connection refused"));
    }

    #[test]
    fn tcp_without_a_proven_address_says_so() {
        let r = run(Arc::new(Fake::default()), &[target("c", vec![ReadyCondition::Tcp(443)], None)], Duration::ZERO);
        assert_eq!(
            r[0].conditions[0].last_seen.as_deref().map(|s| s.starts_with("no proven IPv4 address")),
            Some(true)
        );
    }

    #[test]
    fn cancel_stops_the_wait() {
        let fake: Arc<dyn ReadyProbe> = Arc::new(Fake::default());
        let t = target("d", vec![ReadyCondition::Ssh], Some(Ipv4Addr::LOCALHOST));
        let t0 = Instant::now();
        let cancel = AtomicBool::new(true);
        let r = wait_ready(&[t], &|_| Ok(fake.clone()), Duration::from_secs(60), &cancel, &|_| t0, &|_| {});
        assert_eq!(r[0].state, ReadyState::NotReady);
        assert!(t0.elapsed() < Duration::from_secs(5));
        let seen = r[0].conditions[0].last_seen.as_deref().unwrap_or_default();
        assert!(seen.starts_with("interrupted before it held (last seen: "), "{seen}");
    }

    /// A host topo cannot check on: unchecked at once, each condition saying why; no wait.
    #[test]
    fn a_host_without_a_probe_is_unchecked() {
        let t = target("e", vec![ReadyCondition::Ssh, ReadyCondition::CloudInit], Some(Ipv4Addr::LOCALHOST));
        let t0 = Instant::now();
        let r = wait_ready(
            &[t],
            &|_| Err("libvirt's test driver has no guests to check".into()),
            Duration::from_secs(60),
            &AtomicBool::new(false),
            &|_| t0,
            &|_| {},
        );
        assert_eq!(r[0].state, ReadyState::Unchecked);
        assert!(
            r[0].conditions
                .iter()
                .all(|c| c.last_seen.as_deref() == Some("libvirt's test driver has no guests to check"))
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn remote_tcp_output_is_read() {
        assert_eq!(parse_tcp("@open\n@rc 0\n", false, "h2"), Ok(None));
        assert_eq!(
            parse_tcp("@open\nSSH-2.0-OpenSSH_9.2p1 Debian-2\n@rc 124\n", true, "h2"),
            Ok(Some("SSH-2.0-OpenSSH_9.2p1 Debian-2".into()))
        );
        assert_eq!(
            parse_tcp(
                "bash: connect: Connection refused\nbash: line 1: /dev/tcp/10.0.0.5/22: Connection refused\n@rc 3\n",
                true,
                "h2"
            ),
            Err("connection refused".into())
        );
        assert_eq!(parse_tcp("@rc 124\n", false, "h2"), Err("timed out".into()));
        assert!(parse_tcp("@nobash\n", false, "h2").unwrap_err().contains("no bash"));
        assert!(parse_tcp("@open\nHTTP/1.0 400\n@rc 0\n", true, "h2").unwrap_err().starts_with("no SSH banner"));
    }

    /// The real probe against a listener on loopback: a port that answers with a banner, one
    /// that answers without, and one where nothing listens.
    #[test]
    fn local_probe_on_loopback() {
        use std::io::Write;
        let ssh = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (sp, pp) = (ssh.local_addr().unwrap().port(), plain.local_addr().unwrap().port());
        let server = std::thread::spawn(move || {
            let (mut c, _) = ssh.accept().unwrap();
            c.write_all(b"SSH-2.0-test_1.0\r\n").unwrap();
            let (mut c, _) = plain.accept().unwrap();
            c.write_all(b"hello\r\n").unwrap();
        });
        let p = LocalProbe;
        assert_eq!(p.connect(Ipv4Addr::LOCALHOST, sp, true), Ok(Some("SSH-2.0-test_1.0".into())));
        let e = p.connect(Ipv4Addr::LOCALHOST, pp, true).unwrap_err();
        assert!(e.starts_with("no SSH banner") && e.contains("hello"), "{e}");
        server.join().unwrap();
        drop(p.connect(Ipv4Addr::LOCALHOST, pp, false));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert_eq!(p.connect(Ipv4Addr::LOCALHOST, port, false), Err("connection refused".into()));
    }
}
