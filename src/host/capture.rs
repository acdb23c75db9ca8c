//! Packet capture on a network device of a host's machine (`topo capture`). On this machine,
//! in this process through libpcap (the `pcap` crate): the device opened promiscuous, the
//! filter compiled by libpcap's BPF compiler and set in the kernel, each packet written by
//! libpcap's savefile writer. On another machine, by `tcpdump -U -w -` there through the
//! host's [`Runner`], its pcap stream read back by libpcap and written by the same writer.
//! Either way the output is a pcap file (libpcap's format, link type Ethernet), flushed after
//! every packet so that a reader at the other end of a pipe (`wireshark -k -i -`) sees each
//! packet as it comes.
//!
//! A capture ends when the stop flag is set (a signal), after `count` packets, when the reader
//! of the output is gone (`EPIPE`: a closed pipe is the reader's way to say "enough"), or
//! when the source ends; each is a clean end ([`Ended`]) with the file complete.

use std::io::Read;
use std::num::NonZeroU64;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcap::{Activated, Capture, Linktype, Packet, Savefile};

use crate::host::runner::{EXIT_NOT_FOUND, RunError, Runner};

/// The longest part of a frame kept, in bytes: tcpdump's default snapshot length (tcpdump(1)
/// `-s`), so every frame is kept whole.
pub const SNAPLEN: i32 = 262_144;

/// How often a capture with nothing to read looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// How long a remote capture's `ssh` may take to end once asked to, before it is killed.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// The most of a remote `tcpdump`'s stderr kept for an error message, in bytes.
const STDERR_KEPT: usize = 16 * 1024;

/// ssh's exit status for its own failures (ssh(1) "EXIT STATUS").
const SSH_FAILED: i32 = 255;

/// A capture filter: a tcpdump/BPF expression (pcap-filter(7)) that libpcap's compiler
/// accepts for an Ethernet device, as every tap and bridge is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(String);

impl Filter {
    /// The filter of the words `words`, joined by spaces as tcpdump joins its trailing
    /// arguments; `None` when they say nothing (no filter: every packet).
    ///
    /// # Errors
    /// [`CaptureError::BadFilter`] with libpcap's compiler's message: checked here, before
    /// anything is opened, so a typo is refused the same way on a local and a remote host.
    pub fn new(words: &[String]) -> Result<Option<Self>, CaptureError> {
        let text = words.join(" ");
        if text.trim().is_empty() {
            return Ok(None);
        }
        let bad = |e: pcap::Error| CaptureError::BadFilter { filter: text.clone(), message: e.to_string() };
        let dead = Capture::dead(Linktype::ETHERNET).map_err(bad)?;
        dead.compile(&text, true).map_err(bad)?;
        Ok(Some(Self(text)))
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the pcap stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    /// Standard output (a pipe to wireshark or tcpdump -r -).
    Stdout,
    /// A file, created or truncated (`-w FILE`; a FIFO is written as it is).
    File(PathBuf),
}

impl Sink {
    /// For messages: `standard output` or the path.
    pub fn describe(&self) -> String {
        match self {
            Sink::Stdout => "standard output".into(),
            Sink::File(p) => p.display().to_string(),
        }
    }

    fn open(&self) -> Result<OwnedFd, CaptureError> {
        let err = |e: std::io::Error| CaptureError::Write { to: self.describe(), message: e.to_string() };
        match self {
            // A copy of fd 1: libpcap's writer closes what it is given.
            Sink::Stdout => nix::unistd::dup(std::io::stdout().as_fd()).map_err(|e| err(e.into())),
            Sink::File(p) => crate::files::create_output(p).map(OwnedFd::from).map_err(err),
        }
    }
}

/// What a capture takes besides its device and sink.
#[derive(Clone, Debug, Default)]
pub struct CaptureOptions {
    /// Only the packets this filter accepts; `None`: every packet.
    pub filter: Option<Filter>,
    /// Stop after this many packets; `None`: until stopped.
    pub count: Option<NonZeroU64>,
}

/// Why a capture ended (each a clean end: the output is a complete pcap file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stop flag was set (Ctrl-C, SIGTERM, SIGHUP).
    Interrupted,
    /// `count` packets were captured.
    Count,
    /// The reader of the output went away (`EPIPE`).
    ReaderGone,
    /// The source had no more packets (a remote `tcpdump` that ended by itself, cleanly).
    SourceEnded,
}

/// What a capture did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Packets written.
    pub packets: u64,
    /// Packets the kernel dropped (its buffer was full), when known.
    pub dropped: Option<u64>,
    pub ended: Ended,
}

/// Why a capture could not start or go on.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CaptureError {
    #[error("the capture filter `{filter}` is not valid: {message}")]
    #[diagnostic(
        code(topo::capture::filter),
        help(
            "a tcpdump expression (pcap-filter(7)), e.g. `icmp`, `arp or udp port 67`, `host 10.0.0.5 and tcp port 22`"
        )
    )]
    BadFilter { filter: String, message: String },
    #[error("device {device} is not on this machine (not in this network namespace)")]
    #[diagnostic(
        code(topo::capture::no_device),
        help("run topo where libvirtd runs its guests (with the sandbox: `ip netns exec topo-sbx topo capture ...`)")
    )]
    NoDevice { device: String },
    #[error("not allowed to capture on {device}")]
    #[diagnostic(
        code(topo::capture::permission),
        help("capturing needs root or the CAP_NET_RAW capability (`sudo topo capture ...`)")
    )]
    PermissionDenied { device: String },
    #[error("cannot capture on {device}: {message}")]
    #[diagnostic(code(topo::capture::open))]
    Open { device: String, message: String },
    #[error("the capture on {device} failed: {message}")]
    #[diagnostic(code(topo::capture::read))]
    Read { device: String, message: String },
    #[error("cannot write the capture to {to}: {message}")]
    #[diagnostic(code(topo::capture::write))]
    Write { to: String, message: String },
    #[error("tcpdump is not installed on {host}")]
    #[diagnostic(
        code(topo::capture::tcpdump_missing),
        help("install tcpdump on {host}: topo captures on another host's devices with its tcpdump")
    )]
    ToolMissing { host: String },
    #[error("ssh to {host} failed: {message}")]
    #[diagnostic(code(topo::capture::ssh), help("check that `ssh {host}` logs in without a prompt"))]
    Ssh { host: String, message: String },
    #[error("tcpdump on {host} failed on {device} (exit {code}): {message}")]
    #[diagnostic(code(topo::capture::remote))]
    Remote { host: String, device: String, code: i32, message: String },
}

impl CaptureError {
    /// Classifies libpcap's refusal to open `device` (its messages for
    /// `PCAP_ERROR_PERM_DENIED` and `PCAP_ERROR_NO_SUCH_DEVICE`, pcap_activate(3PCAP)).
    fn from_open(device: &str, e: &pcap::Error) -> Self {
        let message = e.to_string();
        let lower = message.to_lowercase();
        let device = device.to_owned();
        if lower.contains("permission") || lower.contains("operation not permitted") {
            CaptureError::PermissionDenied { device }
        } else if lower.contains("no such device") {
            CaptureError::NoDevice { device }
        } else {
            CaptureError::Open { device, message }
        }
    }
}

/// Writes packets to the sink, flushed one by one, and counts them.
struct Pump<'a> {
    out: Savefile,
    to: String,
    packets: u64,
    count: Option<NonZeroU64>,
    cancel: &'a AtomicBool,
}

impl<'a> Pump<'a> {
    /// The writer for packets of `cap` (its link type and snapshot length) into `sink`.
    fn open<T: Activated + ?Sized>(
        cap: &Capture<T>,
        sink: &Sink,
        opts: &CaptureOptions,
        cancel: &'a AtomicBool,
    ) -> Result<Self, CaptureError> {
        let fd = sink.open()?;
        let to = sink.describe();
        // SAFETY: the descriptor is ours alone (a fresh `dup` or a file just opened); the
        // writer's FILE takes it over and closes it when dropped.
        let out = unsafe { cap.savefile_raw_fd(fd.into_raw_fd()) }
            .map_err(|e| CaptureError::Write { to: to.clone(), message: e.to_string() })?;
        let mut pump = Self { out, to, packets: 0, count: opts.count, cancel };
        pump.flush()?;
        Ok(pump)
    }

    /// Flushes what was written; `Some(ReaderGone)` when the reader is gone.
    fn flush(&mut self) -> Result<Option<Ended>, CaptureError> {
        match self.out.flush() {
            Ok(()) => Ok(None),
            Err(pcap::Error::ErrnoError(e)) if e.0 == nix::errno::Errno::EPIPE as i32 => Ok(Some(Ended::ReaderGone)),
            Err(e) => Err(CaptureError::Write { to: self.to.clone(), message: e.to_string() }),
        }
    }

    /// Writes `packet`; `Some` when the capture is to end here.
    fn write(&mut self, packet: &Packet<'_>) -> Result<Option<Ended>, CaptureError> {
        self.out.write(packet);
        if let Some(end) = self.flush()? {
            return Ok(Some(end));
        }
        self.packets += 1;
        if self.count.is_some_and(|c| self.packets >= c.get()) {
            return Ok(Some(Ended::Count));
        }
        Ok(None)
    }

    fn stopped(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Writes every packet `cap` reads until the run is stopped, `--count` or the sink ends
    /// it, or `on_error` does: it sees each read error and says `Some(end)` to stop, `None` to
    /// read on.
    fn drain<T: pcap::Activated + ?Sized>(
        &mut self,
        cap: &mut Capture<T>,
        mut on_error: impl FnMut(&Capture<T>, pcap::Error) -> Result<Option<Ended>, CaptureError>,
    ) -> Result<Ended, CaptureError> {
        loop {
            if self.stopped() {
                return Ok(Ended::Interrupted);
            }
            match cap.next_packet() {
                Ok(p) => {
                    if let Some(end) = self.write(&p)? {
                        return Ok(end);
                    }
                }
                Err(e) => {
                    if let Some(end) = on_error(cap, e)? {
                        return Ok(end);
                    }
                }
            }
        }
    }
}

/// Captures on `device` of this machine into `sink` until `cancel` is set, `opts.count`
/// packets were written or the reader of the output is gone.
///
/// # Errors
/// The device cannot be opened (missing here, not permitted), the filter is refused, the
/// sink cannot be written, or reading fails (the device went away).
pub fn capture_local(
    device: &str,
    opts: &CaptureOptions,
    sink: &Sink,
    cancel: &AtomicBool,
) -> Result<Captured, CaptureError> {
    let open = |e: pcap::Error| CaptureError::from_open(device, &e);
    let cap = Capture::from_device(device)
        .map_err(open)?
        .promisc(true)
        .snaplen(SNAPLEN)
        .immediate_mode(true)
        .timeout(TICK.as_millis() as i32)
        .open()
        .map_err(open)?;
    let mut cap = cap.setnonblock().map_err(open)?;
    if let Some(f) = &opts.filter {
        cap.filter(f.as_str(), true)
            .map_err(|e| CaptureError::BadFilter { filter: f.as_str().to_owned(), message: e.to_string() })?;
    }
    let mut pump = Pump::open(&cap, sink, opts, cancel)?;
    let ended = pump.drain(&mut cap, |cap, e| match e {
        pcap::Error::TimeoutExpired => {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut fds = [PollFd::new(cap.as_fd(), PollFlags::POLLIN)];
            // EINTR (a signal) or a timeout: the loop looks at the flag either way.
            let _ = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
            Ok(None)
        }
        pcap::Error::NoMorePackets => Ok(Some(Ended::SourceEnded)),
        e => Err(CaptureError::Read { device: device.to_owned(), message: e.to_string() }),
    })?;
    let dropped = cap.stats().ok().map(|s| u64::from(s.dropped));
    Ok(Captured { packets: pump.packets, dropped, ended })
}

/// The script a remote capture runs: `tcpdump` writing pcap to stdout, each packet flushed
/// (`-U`), for as long as the script's stdin stays open. The background reader of stdin
/// (fd 3: an asynchronous list's own stdin is `/dev/null`, POSIX XCU 2.9.3) kills `tcpdump`
/// when topo closes its end, or when ssh ends with topo; the script's status is tcpdump's
/// (127: not installed). `$1` is the device, `$2` (if any) the filter.
const REMOTE_SCRIPT: &str = r#"d=$1; shift
exec 3<&0
tcpdump -U -w - -s 262144 -i "$d" "$@" </dev/null &
t=$!
{ cat <&3; kill "$t"; } >/dev/null 2>&1 &
wait "$t""#;

/// Captures on `device` of the machine `runner` reaches, by `tcpdump` there (its filter set
/// in that machine's kernel), relaying its pcap stream into `sink` as [`capture_local`]
/// does. The remote command (and the local `ssh`) are ended and reaped however the capture
/// ends.
///
/// # Errors
/// `tcpdump` is missing there or fails (its message), ssh fails, or the sink cannot be written.
pub fn capture_remote(
    runner: &dyn Runner,
    device: &str,
    opts: &CaptureOptions,
    sink: &Sink,
    cancel: &AtomicBool,
) -> Result<Captured, CaptureError> {
    let host = runner.describe();
    let mut argv = vec!["sh", "-c", REMOTE_SCRIPT, "topo-capture", device];
    if let Some(f) = &opts.filter {
        argv.push(f.as_str());
    }
    let mut child = runner.stream(&argv).map_err(|e| match e {
        RunError::Connect { host, message } => CaptureError::Ssh { host, message },
        RunError::Spawn { message, .. } => CaptureError::Ssh { host: host.clone(), message },
    })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut e) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let done = AtomicBool::new(false);
    let relayed = std::thread::scope(|s| {
        // Holds the remote command's stdin open until the capture is to end.
        s.spawn(|| {
            let _stdin = stdin;
            while !done.load(Ordering::SeqCst) && !cancel.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
            }
        });
        let r = relay(stdout, opts, sink, cancel);
        done.store(true, Ordering::SeqCst);
        r
    });
    let status = reap(&mut child);
    let message = errors.join().unwrap_or_default();
    let relayed = relayed?;
    let stopped = cancel.load(Ordering::SeqCst);
    let code = status.unwrap_or(-1);
    let failed = |code: i32| -> CaptureError {
        match code {
            EXIT_NOT_FOUND => CaptureError::ToolMissing { host: host.clone() },
            SSH_FAILED => CaptureError::Ssh { host: host.clone(), message: message.trim().to_owned() },
            _ => CaptureError::Remote {
                host: host.clone(),
                device: device.to_owned(),
                code,
                message: last_lines(&message),
            },
        }
    };
    match relayed {
        // No pcap stream came: tcpdump did not start, or was stopped before its header.
        None if stopped => {
            let dead = Capture::dead(Linktype::ETHERNET)
                .map_err(|e| CaptureError::Write { to: sink.describe(), message: e.to_string() })?;
            Pump::open(&dead, sink, opts, cancel)?;
            Ok(Captured { packets: 0, dropped: None, ended: Ended::Interrupted })
        }
        None => Err(failed(code)),
        Some(mut c) => {
            c.dropped = dropped_by_kernel(&message);
            if stopped {
                c.ended = Ended::Interrupted;
            } else if c.ended == Ended::SourceEnded && code != 0 {
                return Err(failed(code));
            }
            Ok(c)
        }
    }
}

/// Reads the pcap stream on `stdout` into `sink`; `None` when no stream came (the stream's
/// header could not be read).
fn relay(
    stdout: Option<std::process::ChildStdout>,
    opts: &CaptureOptions,
    sink: &Sink,
    cancel: &AtomicBool,
) -> Result<Option<Captured>, CaptureError> {
    let Some(stdout) = stdout else { return Ok(None) };
    // SAFETY: the pipe's descriptor is ours alone (taken from the child); libpcap's reader
    // takes it over and closes it when dropped.
    let Ok(mut cap) = (unsafe { Capture::from_raw_fd(stdout.into_raw_fd()) }) else { return Ok(None) };
    let mut pump = Pump::open(&cap, sink, opts, cancel)?;
    // The end of the stream, or a stream cut mid-packet (tcpdump killed): the packets
    // written so far stand.
    let ended = pump.drain(&mut cap, |_, _| Ok(Some(Ended::SourceEnded)))?;
    Ok(Some(Captured { packets: pump.packets, dropped: None, ended }))
}

/// Waits for `child` to end (its stdin and stdout closed, it should), killing it when it
/// has not within [`REAP_WAIT`]; its exit status (-1: ended by a signal or not known).
fn reap(child: &mut std::process::Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s.code().unwrap_or(-1)),
            Ok(None) if start.elapsed() < REAP_WAIT => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                return child.wait().ok().map(|s| s.code().unwrap_or(-1));
            }
        }
    }
}

/// tcpdump's "N packets dropped by kernel" line, when it printed one.
fn dropped_by_kernel(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| l.trim().strip_suffix(" packets dropped by kernel").and_then(|n| n.parse().ok()))
}

/// The last few lines of `text` (a failed tcpdump's stderr), without its "listening on" line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.contains("listening on")).collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libpcap's compiler decides: a tcpdump expression passes, a typo does not.
    #[test]
    fn filters_are_compiled_by_libpcap() {
        let f = |w: &[&str]| Filter::new(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&[]).unwrap(), None);
        assert_eq!(f(&[" "]).unwrap(), None);
        assert_eq!(f(&["icmp"]).unwrap().unwrap().as_str(), "icmp");
        assert_eq!(
            f(&["host", "10.0.0.5", "and", "tcp", "port", "22"]).unwrap().unwrap().as_str(),
            "host 10.0.0.5 and tcp port 22"
        );
        let e = f(&["icmpp"]).unwrap_err();
        assert!(matches!(e, CaptureError::BadFilter { .. }), "{e:?}");
        assert!(e.to_string().contains("`icmpp`"), "{e}");
        assert!(f(&["port", "99999"]).is_err());
        assert!(f(&["tcp", "and"]).is_err());
    }

    #[test]
    fn remote_messages() {
        let err = "tcpdump: listening on vnet0, link-type EN10MB\n3 packets captured\n4 packets received by filter\n2 packets dropped by kernel\n";
        assert_eq!(dropped_by_kernel(err), Some(2));
        assert_eq!(dropped_by_kernel(""), None);
        assert_eq!(
            last_lines("tcpdump: listening on x\ntcpdump: vnet9: No such device exists\n"),
            "tcpdump: vnet9: No such device exists"
        );
    }

    /// libpcap's words for a refused open name the kind of refusal.
    #[test]
    fn open_refusals() {
        let e = |m: &str| CaptureError::from_open("vnet0", &pcap::Error::PcapError(m.into()));
        assert!(matches!(
            e(
                "vnet0: You don't have permission to perform this capture on that device (socket: Operation not permitted)"
            ),
            CaptureError::PermissionDenied { .. }
        ));
        assert!(matches!(e("No such device exists (SIOCGIFINDEX: No such device)"), CaptureError::NoDevice { .. }));
        assert!(matches!(e("something else"), CaptureError::Open { .. }));
    }
}
