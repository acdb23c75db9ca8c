//! Running commands on the machine of a libvirt host: [`Runner`], with [`LocalRunner`] (this
//! machine, `std::process::Command`) and [`SshRunner`] (another machine, through the `ssh`
//! client and the user, host, port and key of a libvirt `qemu+ssh://` URI: [`SshTarget`]).
//! What libvirt cannot do on a host (VXLAN devices, `tc`, ARP probes with `arping`) topo does
//! by running iproute2's and iputils' commands through a runner.
//!
//! The errors of the module: [`RunError`] (a command could not be run at all) and
//! [`MachineError`] (what a machine operation made of a command that could not run, failed
//! or printed what cannot be read, with a hint).
//!
//! Quoting: an `ssh` command line is one string the remote login shell splits again, so every
//! argument is quoted for a POSIX shell ([`shell_quote`]); several commands meant as one
//! round trip go as one `sh -c` script ([`script`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a command did: its exit status and its output, whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit status (0 is success); -1 when it was ended by a signal.
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// Everything it printed on stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// A successful run that printed `stdout` (tests and doubles).
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self { code: 0, stdout: stdout.into(), stderr: Vec::new() }
    }

    /// A failed run with exit status `code` that printed `stderr` (tests and doubles).
    pub fn failed(code: i32, stderr: &str) -> Self {
        Self { code, stdout: Vec::new(), stderr: stderr.as_bytes().to_vec() }
    }

    /// stdout as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy UTF-8), trimmed.
    pub fn error_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// The exit status POSIX shells give a command that is not installed (sh "command not found").
pub const EXIT_NOT_FOUND: i32 = 127;

/// A command could not be run at all (its own failure is an [`Output`] with a non-zero code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The local process (the command itself, or `ssh`) could not be started.
    #[error("cannot start {program}: {message}")]
    Spawn {
        /// The program that could not start.
        program: String,
        /// How it failed (`NotFound`: not installed on this machine).
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// `ssh` could not reach or log in to the host (ssh's own exit status 255).
    #[error("ssh to {host} failed: {message}")]
    Connect {
        /// `[user@]host`.
        host: String,
        /// ssh's stderr.
        message: String,
    },
}

/// Runs commands on one machine. Narrow on purpose: one call is one command (or one `sh -c`
/// script), one round trip to the machine.
pub trait Runner: Send + Sync {
    /// Runs `argv` (program and arguments, no shell) with `stdin` as its standard input (none:
    /// empty), waits for it, and returns what it did, whatever its exit status.
    ///
    /// # Errors
    /// It could not be run at all ([`RunError`]).
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, RunError>;

    /// The machine, for messages: `this machine` or `[user@]host`.
    fn describe(&self) -> String;

    /// Starts `argv` on the machine and leaves it running, its stdin and stdout piped to
    /// topo: what holds something there for as long as topo runs ([`HostLockOn`]). Over ssh
    /// the remote command sees its stdin end when topo's end does, however topo ends.
    ///
    /// # Errors
    /// It could not be started; a runner that cannot keep a process (a test double) says so
    /// as [`RunError::Spawn`] with kind `Unsupported`.
    fn start(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        Err(RunError::Spawn {
            program: argv.first().copied().unwrap_or_default().to_owned(),
            kind: std::io::ErrorKind::Unsupported,
            message: format!("{} cannot keep a process running", self.describe()),
        })
    }

    /// Starts `argv` on the machine as [`Runner::start`] does, with its stderr piped too: a
    /// command whose output topo relays as it comes (`topo capture`'s `tcpdump`), and whose
    /// error message topo shows when it fails.
    ///
    /// # Errors
    /// As [`Runner::start`].
    fn stream(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        Err(RunError::Spawn {
            program: argv.first().copied().unwrap_or_default().to_owned(),
            kind: std::io::ErrorKind::Unsupported,
            message: format!("{} cannot keep a process running", self.describe()),
        })
    }
}

/// Starts `cmd` with stdin and stdout piped, stderr discarded.
fn start_piped(program: &str, cmd: &mut Command) -> Result<std::process::Child, RunError> {
    start_with(program, cmd, Stdio::null())
}

/// Starts `cmd` with stdin and stdout piped, stderr to `stderr`.
fn start_with(program: &str, cmd: &mut Command, stderr: Stdio) -> Result<std::process::Child, RunError> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().map_err(|e| RunError::Spawn {
        program: program.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    })
}

/// Where a host's lock lives on the host itself (`/run/lock`: cleared at boot, like the lock
/// of a run that cannot outlive it).
pub const HOST_LOCK_ON_HOST: &str = "/run/lock/topo-host.lock";

/// The shell script that holds [`HOST_LOCK_ON_HOST`] on a host: `flock(1)` takes it (at once,
/// or after printing `waiting` and waiting up to `$1` seconds), prints `locked`, and keeps it
/// while its stdin stays open (`cat`); exit 1 when the wait timed out, 127 without `flock`.
const HOLD_SCRIPT: &str = r#"f=/run/lock/topo-host.lock; mkdir -p /run/lock || exit 1
hold='echo locked; exec cat >/dev/null'
flock -n "$f" sh -c "$hold" && exit 0
[ $? -eq 127 ] && exit 127
echo waiting
exec flock -w "$1" "$f" sh -c "$hold""#;

/// A host's lock held on the host itself, by a process that keeps `flock` there: released
/// when dropped (its stdin closed, the remote `cat` ends, `flock` lets go), or when topo dies
/// in any way (the pipe closes with it).
#[derive(Debug)]
pub struct HostLockOn {
    child: std::process::Child,
    /// `[user@]host`, for messages.
    pub host: String,
}

/// Why a host's lock could not be taken on the host.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum HostLockError {
    #[error("cannot take the host's lock: {0}")]
    #[diagnostic(code(topo::host::lock))]
    Run(#[from] RunError),
    #[error("another topo run holds the lock of {host} ({path} there) and did not let go within {seconds} s")]
    #[diagnostic(
        code(topo::host::locked),
        help("wait for the other run to finish, then run again: nothing was changed")
    )]
    Timeout { host: String, path: &'static str, seconds: u64 },
    #[error("cannot take the lock of {host} ({path} there): {message}")]
    #[diagnostic(code(topo::host::lock))]
    Failed { host: String, path: &'static str, message: String },
}

impl HostLockOn {
    /// Takes the host lock on the machine of `runner`, waiting up to `timeout` while another
    /// run holds it (`on_wait` is called once when it has to wait).
    ///
    /// # Errors
    /// It cannot be started (ssh fails, no `flock`: util-linux), or the wait timed out.
    pub fn acquire(
        runner: &dyn Runner,
        timeout: std::time::Duration,
        on_wait: impl FnOnce(),
    ) -> Result<Self, HostLockError> {
        use std::io::BufRead;
        let host = runner.describe();
        let secs = timeout.as_secs().max(1).to_string();
        let mut child = runner.start(&["sh", "-c", HOLD_SCRIPT, "topo-hold", &secs])?;
        let failed = |message: String| HostLockError::Failed { host: host.clone(), path: HOST_LOCK_ON_HOST, message };
        let Some(out) = child.stdout.take() else { return Err(failed("no output pipe".into())) };
        let mut lines = std::io::BufReader::new(out).lines();
        let mut on_wait = Some(on_wait);
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "locked" => return Ok(Self { child, host }),
                Some(Ok(l)) if l == "waiting" => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(failed(e.to_string())),
                None => {
                    let code = child.wait().ok().and_then(|s| s.code());
                    return Err(match code {
                        Some(1) if on_wait.is_none() => {
                            HostLockError::Timeout { host, path: HOST_LOCK_ON_HOST, seconds: timeout.as_secs() }
                        }
                        Some(127) => failed("`flock` is not installed there (util-linux)".into()),
                        Some(255) => failed("ssh could not reach the host".into()),
                        c => failed(format!("the lock holder ended with status {c:?}")),
                    });
                }
            }
        }
    }
}

impl Drop for HostLockOn {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// This machine: each command a child process (`PATH` lookup as `execvp`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalRunner;

impl Runner for LocalRunner {
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, RunError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::Spawn {
                program: String::new(),
                kind: std::io::ErrorKind::InvalidInput,
                message: "empty command".into(),
            });
        };
        spawn(program, Command::new(program).args(args), stdin)
    }

    fn describe(&self) -> String {
        "this machine".into()
    }

    fn start(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::Spawn {
                program: String::new(),
                kind: std::io::ErrorKind::InvalidInput,
                message: "empty command".into(),
            });
        };
        start_piped(program, Command::new(program).args(args))
    }

    fn stream(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::Spawn {
                program: String::new(),
                kind: std::io::ErrorKind::InvalidInput,
                message: "empty command".into(),
            });
        };
        start_with(program, Command::new(program).args(args), Stdio::piped())
    }
}

/// Runs `cmd` (whose program is `program`), feeding it `stdin`, and collects its output.
fn spawn(program: &str, cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, RunError> {
    let start = std::time::Instant::now();
    let err =
        |e: std::io::Error| RunError::Spawn { program: program.to_owned(), kind: e.kind(), message: e.to_string() };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(err)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading its input closes the pipe: not an error here,
        // its exit status tells.
        let _ = pipe.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(err)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(program, ms = format_args!("{ms:.3}"), status = out.status.code(), "run");
    Ok(Output { code: out.status.code().unwrap_or(-1), stdout: out.stdout, stderr: out.stderr })
}

/// Quotes `arg` as one word for a POSIX shell: as it is when it holds only characters no
/// shell treats specially (letters, digits, `_@%+=:,./-`), else in single quotes, each `'`
/// written `'\''` (POSIX.1-2017 XCU 2.2.3: nothing is special inside single quotes).
pub fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// `argv` as one shell command line, each word quoted ([`shell_quote`]).
pub fn shell_line(argv: &[&str]) -> String {
    argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

/// Several commands as one `sh -c` argv, run in order and stopped at the first that fails
/// (`set -e`): one round trip for all of them. The failing command's stderr and exit status
/// are the script's.
pub fn script(commands: &[Vec<String>]) -> Vec<String> {
    let mut text = String::from("set -e\n");
    for c in commands {
        let words: Vec<&str> = c.iter().map(String::as_str).collect();
        text.push_str(&shell_line(&words));
        text.push('\n');
    }
    vec!["sh".into(), "-c".into(), text]
}

/// Where topo reaches a libvirt host over ssh, read from its URI as libvirt reads it
/// (libvirt's "Remote support" URIs: `driver+ssh://[user@]host[:port]/path[?params]`, also
/// `+libssh` and `+libssh2`; the `keyfile` and `no_verify` parameters of
/// `src/remote/remote_driver.c`). Anything the URI does not say is left to ssh's own config
/// and agent, as libvirt's ssh transport leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshTarget {
    /// The login user, when the URI names one.
    pub user: Option<String>,
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The ssh port, when the URI names one.
    pub port: Option<u16>,
    /// `keyfile=`: the private key to log in with.
    pub keyfile: Option<String>,
    /// `no_verify=1`: do not check the host's key.
    pub no_verify: bool,
}

impl SshTarget {
    /// The target of a URI whose transport is ssh; `None` for a local or non-ssh URI (or one
    /// with no host, or an unreadable port).
    pub fn from_uri(uri: &str) -> Option<Self> {
        let (scheme, rest) = uri.split_once("://")?;
        let transport = scheme.split_once('+')?.1;
        if !matches!(transport, "ssh" | "libssh" | "libssh2") {
            return None;
        }
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(percent_decode(u)), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port.filter(|p| !p.is_empty()) {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        let mut t = SshTarget { user, host: host.to_owned(), port, keyfile: None, no_verify: false };
        if let Some((_, query)) = tail.split_once('?') {
            for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                match k {
                    "keyfile" => t.keyfile = Some(percent_decode(v)),
                    "no_verify" => t.no_verify = v != "0",
                    _ => {}
                }
            }
        }
        Some(t)
    }

    /// `[user@]host`, as ssh takes it (an IPv6 address bare).
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `[user@]host[:port]`, as ssh's `ProxyJump` takes it (an IPv6 address in brackets).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let mut s = match &self.user {
            Some(u) => format!("{u}@{host}"),
            None => host,
        };
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

/// `%XX` escapes of a URI component decoded (RFC 3986 2.1); a malformed escape stays as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
        {
            // Two hex digits make at most 0xff: the cast loses nothing.
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How long ssh waits for the TCP connection and the login, in seconds (`ConnectTimeout`).
const SSH_CONNECT_TIMEOUT_S: u32 = 10;

/// How long an idle connection-sharing master stays, in seconds (`ControlPersist`).
const SSH_PERSIST_S: u32 = 60;

/// Another machine, through the `ssh` client from `PATH`: each command one `ssh` process,
/// sharing one connection per host (`ControlMaster=auto`, a control socket in a private
/// folder, kept 60 s after the last use), so a command costs a round trip, not a login.
/// Never asks for a password (`BatchMode=yes`): the key, agent or config must log in.
#[derive(Clone, Debug)]
pub struct SshRunner {
    /// Where and how to log in.
    pub target: SshTarget,
    /// The folder of the control sockets; `None`: no connection sharing.
    pub control_dir: Option<PathBuf>,
}

impl SshRunner {
    /// The runner for the libvirt host at `uri` when its transport is ssh
    /// ([`SshTarget::from_uri`]), sharing connections through [`control_dir`] when that
    /// folder can be made private.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let target = SshTarget::from_uri(uri)?;
        let dir = control_dir();
        let control_dir = crate::files::ensure_private_dir(&dir).ok().map(|()| dir);
        Some(Self { target, control_dir })
    }

    /// The `ssh` argv that runs `argv` on the target: options, destination, `--`, then the
    /// command line as one string for the remote shell (each word quoted). Its exit status is
    /// the command's, except that a command's own 255 comes back as 254 so that 255 is only
    /// ever ssh's own failure ([`RunError::Connect`]).
    pub fn ssh_argv(&self, argv: &[&str]) -> Vec<String> {
        let t = &self.target;
        let mut a: Vec<String> = vec!["ssh".into(), "-T".into()];
        if let Some(p) = t.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(k) = &t.keyfile {
            a.extend(["-i".into(), k.clone()]);
        }
        if t.no_verify {
            a.extend(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"].map(String::from));
        }
        a.extend(["-o".into(), "BatchMode=yes".into()]);
        a.extend(["-o".into(), format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_S}")]);
        if let Some(d) = &self.control_dir {
            a.extend(["-o".into(), "ControlMaster=auto".into()]);
            a.extend(["-o".into(), format!("ControlPath={}/%C", d.display())]);
            a.extend(["-o".into(), format!("ControlPersist={SSH_PERSIST_S}")]);
        }
        a.push(t.destination());
        a.push("--".into());
        a.push(format!("{}; s=$?; [ $s -ne 255 ] || s=254; exit $s", shell_line(argv)));
        a
    }
}

/// The folder of topo's ssh control sockets: `/run/topo/ssh` for root, else
/// `$XDG_RUNTIME_DIR/topo/ssh` (an absolute path), else `<temp dir>/topo-<uid>/ssh`; short,
/// as a socket path must be (108 bytes with ssh's temporary suffix).
pub fn control_dir() -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/topo/ssh");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(x) if x.is_absolute() => x.join("topo/ssh"),
        _ => std::env::temp_dir().join(format!("topo-{uid}/ssh")),
    }
}

/// ssh's exit status for its own failures (ssh(1) "EXIT STATUS").
const SSH_FAILED: i32 = 255;

impl Runner for SshRunner {
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, RunError> {
        let a = self.ssh_argv(argv);
        let out = spawn("ssh", Command::new(&a[0]).args(&a[1..]), stdin)?;
        if out.code == SSH_FAILED {
            return Err(RunError::Connect { host: self.target.destination(), message: out.error_text() });
        }
        Ok(out)
    }

    fn start(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        let a = self.ssh_argv(argv);
        start_piped("ssh", Command::new(&a[0]).args(&a[1..]))
    }

    fn stream(&self, argv: &[&str]) -> Result<std::process::Child, RunError> {
        let a = self.ssh_argv(argv);
        start_with("ssh", Command::new(&a[0]).args(&a[1..]), Stdio::piped())
    }

    fn describe(&self) -> String {
        self.target.destination()
    }
}

/// A machine operation failed (VXLAN tunnels, addresses): the command, the machine, what went
/// wrong and, where one helps, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// The command could not be run at all, or is not installed on the machine.
    #[error("cannot run `{command}` on {host}: {message}")]
    Unavailable {
        host: String,
        command: String,
        message: String,
        /// E.g. "install iproute2 on HOST".
        hint: Option<String>,
    },
    /// The command ran and failed.
    #[error("`{command}` failed on {host} (exit {code}): {stderr}")]
    Failed { host: String, command: String, code: i32, stderr: String, hint: Option<String> },
    /// The command printed what cannot be read.
    #[error("`{command}` on {host} printed what topo cannot read: {message}")]
    Output { host: String, command: String, message: String },
    /// What was asked is refused before anything runs (e.g. a device name the kernel would not
    /// take).
    #[error("{0}")]
    Invalid(String),
}

impl MachineError {
    /// What to do about it, when something helps.
    pub fn hint(&self) -> Option<&str> {
        match self {
            MachineError::Unavailable { hint, .. } | MachineError::Failed { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// The Debian package that installs `program` (for hints).
fn package_of(program: &str) -> &str {
    match program {
        "ip" | "bridge" | "tc" => "iproute2",
        "arping" => "iputils-arping",
        "ssh" => "openssh-client",
        "base64" | "head" | "stat" | "cat" => "coreutils",
        other => other,
    }
}

/// Runs `argv` on `r` and wants it to succeed; `program` names the tool the hint is about
/// (`ip` in an `sh -c` script of `ip` commands).
///
/// # Errors
/// [`MachineError::Unavailable`] when it cannot run or is not installed (exit 127),
/// [`MachineError::Failed`] when it exits non-zero.
pub fn run_ok(r: &dyn Runner, program: &str, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output, MachineError> {
    let host = r.describe();
    let command = shell_line(argv);
    let install = || Some(format!("install {} on {host}", package_of(program)));
    match r.run(argv, stdin) {
        Err(RunError::Spawn { kind, message, program: p }) => {
            let hint =
                if kind == std::io::ErrorKind::NotFound { Some(format!("install {}", package_of(&p))) } else { None };
            Err(MachineError::Unavailable { host, command, message, hint })
        }
        Err(RunError::Connect { message, .. }) => Err(MachineError::Unavailable {
            command,
            message: format!("ssh: {message}"),
            hint: Some(format!("check that `ssh {host}` logs in without a prompt")),
            host,
        }),
        Ok(o) if o.code == EXIT_NOT_FOUND => {
            Err(MachineError::Unavailable { message: o.error_text(), hint: install(), host, command })
        }
        Ok(o) if o.code != 0 => {
            Err(MachineError::Failed { code: o.code, stderr: o.error_text(), hint: None, host, command })
        }
        Ok(o) => Ok(o),
    }
}

#[cfg(any(test, feature = "testing"))]
pub use fake::FakeRunner;

/// The scripted runner (tests only: `cfg(test)` or the `testing` feature).
#[cfg(any(test, feature = "testing"))]
mod fake {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::{Output, RunError, Runner};

    /// The answers for one key (an argv prefix), used in turn.
    type Answers = (Vec<String>, VecDeque<Result<Output, RunError>>);

    /// Answers each command with the output given for it (by a prefix of its argv, whose
    /// last word may itself be a prefix of the argv's word at that place, e.g. the start of
    /// an `sh -c` script: the first match in the order given wins; several answers for one key are used
    /// in turn, the last one repeated), and records every call. A command nothing matches
    /// exits 127, as a shell's unknown command.
    #[derive(Debug, Default)]
    pub struct FakeRunner {
        answers: Mutex<Vec<Answers>>,
        calls: Mutex<Vec<Vec<String>>>,
        /// What `describe` says.
        pub name: String,
    }

    impl FakeRunner {
        /// A fake named `host`.
        pub fn new(host: &str) -> Self {
            Self { name: host.to_owned(), ..Self::default() }
        }

        /// Answers commands starting with `prefix` with `out` (after earlier answers for it).
        pub fn on(self, prefix: &[&str], out: Result<Output, RunError>) -> Self {
            self.answer(prefix, out);
            self
        }

        /// [`FakeRunner::on`] on a shared fake.
        pub fn answer(&self, prefix: &[&str], out: Result<Output, RunError>) {
            let key: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
            let mut a = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match a.iter_mut().find(|(k, _)| *k == key) {
                Some((_, q)) => q.push_back(out),
                None => a.push((key, VecDeque::from([out]))),
            }
        }

        /// Every argv run so far, in order.
        pub fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        }
    }

    impl Runner for FakeRunner {
        fn run(&self, argv: &[&str], _stdin: Option<&[u8]>) -> Result<Output, RunError> {
            let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
            self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(argv.clone());
            let mut a = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let matches = |k: &[String]| {
                k.len() <= argv.len()
                    && k.iter()
                        .zip(&argv)
                        .enumerate()
                        .all(|(i, (k1, a))| if i + 1 == k.len() { a.starts_with(k1.as_str()) } else { a == k1 })
            };
            let Some((_, q)) = a.iter_mut().find(|(k, _)| matches(k)) else {
                return Ok(Output::failed(127, &format!("sh: 1: {}: not found", argv.join(" "))));
            };
            if q.len() > 1 {
                // Invariant: the queue holds more than one answer, so there is a front.
                q.pop_front().expect("a queued answer")
            } else {
                q.front().cloned().expect("every key is added with one answer")
            }
        }

        fn describe(&self) -> String {
            self.name.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host lock held on a machine by a kept process: a second run waits (told once),
    /// times out while the first holds it, and takes it once the first lets go (its stdin
    /// closed), as happens when a topo run ends or dies. Here on this machine through the
    /// local runner (the ssh runner keeps the same process on a remote host: tier 4).
    #[test]
    fn the_host_lock_on_a_host_is_held_by_a_kept_process() {
        let first = HostLockOn::acquire(&LocalRunner, std::time::Duration::from_secs(5), || panic!("free: no wait"))
            .expect("the first run takes the lock");
        let mut told = false;
        let second = HostLockOn::acquire(&LocalRunner, std::time::Duration::from_secs(1), || told = true);
        assert!(matches!(second, Err(HostLockError::Timeout { seconds: 1, .. })), "{second:?}");
        assert!(told, "the waiting run is told once");
        drop(first);
        let third =
            HostLockOn::acquire(&LocalRunner, std::time::Duration::from_secs(5), || panic!("released: no wait"));
        assert!(third.is_ok(), "{third:?}");
    }

    #[test]
    fn shell_quoting_keeps_plain_words_and_single_quotes_the_rest() {
        assert_eq!(shell_quote("br-lan"), "br-lan");
        assert_eq!(shell_quote("10.77.0.11"), "10.77.0.11");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("topo lab"), "'topo lab'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_line(&["ip", "link", "set", "vx1", "alias", "a b;c"]), "ip link set vx1 alias 'a b;c'");
    }

    /// What a POSIX shell makes of the quoted line is the argv again, for hostile words too.
    #[test]
    fn a_quoted_line_splits_back_into_the_same_words() {
        let words = ["a", "", "b c", "it's", "\"x\"", "$HOME", "`id`", "*", "\\n", "new\nline", "-- --"];
        let line = format!("printf '%s\\0' {}", shell_line(&words));
        let out = LocalRunner.run(&["sh", "-c", &line], None).unwrap();
        let got: Vec<String> = out.text().split_terminator('\0').map(str::to_owned).collect();
        assert_eq!(got, words);
    }

    #[test]
    fn a_script_runs_its_commands_in_order_and_stops_at_the_first_failure() {
        let cmds: Vec<Vec<String>> = [["echo", "one"], ["false", ""], ["echo", "two"]]
            .iter()
            .map(|c| c.iter().filter(|w| !w.is_empty()).map(|w| (*w).to_owned()).collect())
            .collect();
        let argv = script(&cmds);
        assert_eq!(argv[2], "set -e\necho one\nfalse\necho two\n");
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = LocalRunner.run(&words, None).unwrap();
        assert_eq!((out.code, out.text().as_str()), (1, "one\n"));
    }

    #[test]
    fn the_local_runner_feeds_stdin_and_reports_exit_status_and_missing_programs() {
        let out = LocalRunner.run(&["sh", "-c", "cat; echo err >&2; exit 3"], Some(b"in")).unwrap();
        assert_eq!((out.code, out.text().as_str(), out.error_text().as_str()), (3, "in", "err"));
        let e = LocalRunner.run(&["topo-no-such-program"], None).unwrap_err();
        assert!(matches!(e, RunError::Spawn { kind: std::io::ErrorKind::NotFound, .. }), "{e:?}");
        let e = run_ok(&LocalRunner, "ip", &["sh", "-c", "exit 127"], None).unwrap_err();
        assert_eq!(e.hint(), Some("install iproute2 on this machine"), "{e}");
    }

    /// libvirt's URI forms: user, host, port, IPv6, keyfile (percent-decoded), no_verify;
    /// not ssh -> none.
    #[test]
    fn ssh_targets_from_libvirt_uris() {
        let t = SshTarget::from_uri("qemu+ssh://root@10.77.0.11/system?keyfile=/var/lib/k%20x&no_verify=1").unwrap();
        assert_eq!(
            t,
            SshTarget {
                user: Some("root".into()),
                host: "10.77.0.11".into(),
                port: None,
                keyfile: Some("/var/lib/k x".into()),
                no_verify: true
            }
        );
        let t = SshTarget::from_uri("qemu+libssh2://admin@[fd00::5]:2222/system").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority().as_str()), ("fd00::5", Some(2222), "admin@[fd00::5]:2222"));
        let t = SshTarget::from_uri("qemu+libssh://h2/session?no_verify=0").unwrap();
        assert_eq!((t.user.clone(), t.destination(), t.no_verify), (None, "h2".into(), false));
        for none in
            ["qemu:///system", "qemu+tcp://h/system", "test:///default", "qemu+ssh:///system", "qemu+ssh://h:x/"]
        {
            assert_eq!(SshTarget::from_uri(none), None, "{none}");
        }
    }

    #[test]
    fn the_ssh_command_line() {
        let r = SshRunner {
            target: SshTarget::from_uri("qemu+ssh://root@h1:2200/system?keyfile=/k&no_verify=1").unwrap(),
            control_dir: Some(PathBuf::from("/run/topo/ssh")),
        };
        insta::assert_snapshot!(r.ssh_argv(&["ip", "link", "set", "vx1", "alias", "lab x"]).join(" "), @"ssh -T -p 2200 -i /k -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 -o ControlMaster=auto -o ControlPath=/run/topo/ssh/%C -o ControlPersist=60 root@h1 -- ip link set vx1 alias 'lab x'; s=$?; [ $s -ne 255 ] || s=254; exit $s");
        let r = SshRunner { target: SshTarget::from_uri("qemu+ssh://h2/system").unwrap(), control_dir: None };
        assert_eq!(
            r.ssh_argv(&["true"]).join(" "),
            "ssh -T -o BatchMode=yes -o ConnectTimeout=10 h2 -- true; s=$?; [ $s -ne 255 ] || s=254; exit $s"
        );
    }

    /// The remote wrapper keeps a command's exit status, except 255 (ssh's own), checked with
    /// a local shell standing in for the remote one.
    #[test]
    fn the_remote_wrapper_keeps_exit_statuses_but_255() {
        let r = SshRunner { target: SshTarget { host: "h".into(), ..SshTarget::default() }, control_dir: None };
        for (code, want) in [(0, 0), (3, 3), (255, 254)] {
            let a = r.ssh_argv(&["sh", "-c", &format!("exit {code}")]);
            let line = a.last().unwrap();
            assert_eq!(LocalRunner.run(&["sh", "-c", line], None).unwrap().code, want, "{line}");
        }
    }

    #[test]
    fn the_fake_runner_answers_by_prefix_in_turn_and_records() {
        let f = FakeRunner::new("h1")
            .on(&["ip", "-j"], Ok(Output::ok("[]")))
            .on(&["ip", "-j"], Ok(Output::ok("[1]")))
            .on(&["ip"], Ok(Output::failed(2, "no")));
        assert_eq!(f.run(&["ip", "-j", "link"], None).unwrap().text(), "[]");
        assert_eq!(f.run(&["ip", "-j", "link"], None).unwrap().text(), "[1]");
        assert_eq!(f.run(&["ip", "-j", "link"], None).unwrap().text(), "[1]");
        assert_eq!(f.run(&["ip", "link"], None).unwrap().code, 2);
        assert_eq!(f.run(&["tc"], None).unwrap().code, 127);
        assert_eq!(f.calls().len(), 5);
    }
}
