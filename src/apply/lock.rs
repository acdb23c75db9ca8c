//! Who may change a host at a time: the per-lab lock (one apply or destroy per lab and host)
//! and the host lock (one run at a time in the phase that checks host conflicts and creates
//! networks), both `flock`ed files naming their holder, keyed on the host as libvirt names it.
//!
//! Both are advisory `flock(2)` locks (std's `File::try_lock` and `File::lock`, which are
//! `flock` on Linux) on files in [`lock_dir`]. The kernel releases them when
//! the process exits, however it exits (kill -9 included), so a crash never leaves a stale
//! lock. They serialise topo runs on this machine (and, for the host lock, runs of the same
//! user, see [`lock_dir`]); they cannot see a topo running on another machine against the
//! same remote libvirt host.
//!
//! Waiting for the host lock is not a sleep-poll loop: a helper thread blocks in
//! `File::lock`, which the kernel wakes when the holder's lock goes, and hands the locked
//! file over a channel, received with a timeout (std has no `flock` with a timeout, and a
//! retry loop would wake every few milliseconds and could lose the race to a newcomer each
//! time). After a timeout the helper thread stays blocked until the holder lets go, then
//! finds nobody waiting and closes the file, which releases the lock at once.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Folder of the lock files of root: `/run/topo` (a tmpfs, emptied at boot).
pub const LOCK_DIR: &str = "/run/topo";

/// Where lock files live: `$TOPO_LOCK_DIR` when set (tests); for root `/run/topo`, shared by
/// every root run on the machine; for any other user `$XDG_RUNTIME_DIR/topo` (the user's own
/// runtime folder, created by the login manager, emptied at logout) when that is set to an
/// absolute path, else `<temp dir>/topo-<uid>`. Whichever it is, the folder must be a real
/// folder owned by this user that nobody else may write to (`files::ensure_private_dir`):
/// in a shared temp dir another user could have made `topo-<uid>` first. Lock files are
/// opened without following symlinks (`files::open_private_rw`). Two users applying to the same
/// `qemu:///system` therefore do not see each other's locks unless both run as root.
pub fn lock_dir() -> PathBuf {
    choose_lock_dir(
        std::env::var_os("TOPO_LOCK_DIR"),
        nix::unistd::geteuid().as_raw(),
        std::env::var_os("XDG_RUNTIME_DIR"),
        &std::env::temp_dir(),
    )
}

/// [`lock_dir`] as a pure function of the environment it reads.
fn choose_lock_dir(explicit: Option<OsString>, uid: u32, xdg: Option<OsString>, tmp: &Path) -> PathBuf {
    if let Some(d) = explicit.filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if uid == 0 {
        return PathBuf::from(LOCK_DIR);
    }
    match xdg.map(PathBuf::from) {
        Some(x) if x.is_absolute() => x.join("topo"),
        _ => tmp.join(format!("topo-{uid}")),
    }
}

/// The host a connection reaches, as libvirt names it once connected: the host name the
/// daemon reports (`virConnectGetHostname`) and the driver and instance of the canonical URI
/// (`virConnectGetURI`), with the transport and host part of the URI dropped. So
/// `qemu:///system`, `qemu+unix:///system` and `qemu+tcp://127.0.0.1/system` reaching one
/// daemon are one host; `qemu:///session` of two users are two.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId {
    /// The daemon's host name.
    pub hostname: String,
    /// The driver: the URI scheme without its `+transport` (`qemu`, `test`, `xen`), lowercase.
    pub driver: String,
    /// The driver instance: the URI path without a trailing `/` (`/system`, `/session`,
    /// `/default`); for a `/session` URI also the user (the URI's `user@`, else this
    /// process's uid), since each user has a session daemon of their own.
    pub instance: String,
}

impl HostId {
    /// From the daemon's host name and the connection's canonical URI.
    pub fn new(hostname: &str, uri: &str) -> Self {
        let (scheme, rest) = uri.split_once(':').unwrap_or((uri, ""));
        let driver = scheme.split('+').next().unwrap_or(scheme).to_ascii_lowercase();
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        // `//authority/path` or `/path` (or nothing: `test:` style URIs)
        let (authority, path) = match rest.strip_prefix("//") {
            Some(r) => match r.find('/') {
                Some(i) => (&r[..i], &r[i..]),
                None => (r, ""),
            },
            None => ("", rest),
        };
        let mut instance = path.trim_end_matches('/').to_string();
        if instance.is_empty() {
            instance.push('/');
        }
        if instance.ends_with("/session") {
            let user = match authority.rsplit_once('@') {
                Some((u, _)) if !u.is_empty() => u.to_string(),
                _ => format!("uid {}", nix::unistd::geteuid()),
            };
            instance = format!("{instance} ({user})");
        }
        Self { hostname: hostname.to_string(), driver, instance }
    }

    /// First 12 hex digits of the SHA-256 of the host id: the part of lock file names that
    /// says which host.
    pub fn digest(&self) -> String {
        let text = format!("{}\0{}\0{}", self.hostname, self.driver, self.instance);
        crate::plan::saved::sha256_hex(text.as_bytes())[..12].to_string()
    }
}

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}{}", self.hostname, self.driver, self.instance)
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("lab {lab} on {uri} is locked by another topo run ({holder})")]
    #[diagnostic(
        code(topo::apply::locked),
        help("wait for it to finish; if no such process exists any more, the lock is released by itself")
    )]
    Held { lab: String, uri: String, holder: String },
    #[error("host {host} is still busy after {waited_s} s: another topo run ({holder}) is creating networks there")]
    #[diagnostic(
        code(topo::apply::host_busy),
        help("run again when it has finished; if no such process exists any more, the lock is released by itself")
    )]
    HostBusy { host: String, holder: String, waited_s: u64 },
    #[error("cannot use the lock file {path}: {source}")]
    #[diagnostic(
        code(topo::apply::lock_io),
        help(
            "topo keeps its lock files in /run/topo (root), $XDG_RUNTIME_DIR/topo or the temp dir; set TOPO_LOCK_DIR to a writable folder"
        )
    )]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing the lock folder {path}: it {why}")]
    #[diagnostic(
        code(topo::apply::lock_dir),
        help(
            "topo's lock folder must be a folder of yours that no one else may write to (another user could swap the lock files in it for links to your files); remove it or set TOPO_LOCK_DIR to a folder of yours"
        )
    )]
    DirNotPrivate { path: String, why: String },
}

/// An exclusive lock (`std::fs::File::try_lock`/`lock`: `flock(2)` on Linux) on a file that
/// names its holder (`topo apply pid 1234`). Released when the file is closed (on drop).
struct Held {
    _file: File,
    path: PathBuf,
}

enum Try {
    Got(Held),
    /// Someone else holds it: their description.
    Busy(String),
}

/// Opens the lock file at `path` (its folder made private first): not through a symlink
/// (another user could point it at the victim's file), not a FIFO, never truncated before
/// the lock is held.
fn open_lock_file(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent() {
        crate::files::ensure_private_dir(dir).map_err(|e| match e {
            crate::files::FileError::Io(source) => LockError::Io { path: dir.display().to_string(), source },
            other => LockError::DirNotPrivate { path: dir.display().to_string(), why: other.to_string() },
        })?;
    }
    crate::files::open_private_rw(path).map_err(|source| LockError::Io { path: path.display().to_string(), source })
}

/// Writes `holder` into the locked `file` (best effort: the description is for messages
/// only, the lock is the lock).
fn claim(mut file: File, path: &Path, holder: &str) -> Held {
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{holder}");
    let _ = file.flush();
    Held { _file: file, path: path.to_path_buf() }
}

/// The holder's description written in a lock file someone else holds.
fn holder_of(mut file: &File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() { "unknown process".into() } else { text.to_string() }
}

fn try_lock(path: &Path, holder: &str) -> Result<Try, LockError> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Try::Got(claim(file, path, holder))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Try::Busy(holder_of(&file))),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path: path.display().to_string(), source }),
    }
}

/// Held for the duration of an apply or destroy of one lab on one host; released on drop.
pub struct LabLock {
    _held: Held,
    pub path: PathBuf,
}

/// `<dir>/<lab>-<host digest>.lock`.
pub fn lab_lock_path(dir: &Path, lab: &str, host: &HostId) -> PathBuf {
    dir.join(format!("{lab}-{}.lock", host.digest()))
}

/// `<dir>/host-<host digest>.hostlock` (another extension than lab locks, so no lab name can
/// collide with it).
pub fn host_lock_path(dir: &Path, host: &HostId) -> PathBuf {
    dir.join(format!("host-{}.hostlock", host.digest()))
}

impl LabLock {
    /// Takes the lock of `lab` on `host` in [`lock_dir`], or fails at once naming the holder.
    /// `uri` is only for the message; `what` describes this run (`topo apply`).
    pub fn acquire(lab: &str, host: &HostId, uri: &str, what: &str) -> Result<Self, LockError> {
        Self::acquire_in(&lock_dir(), lab, host, uri, what)
    }

    /// As [`LabLock::acquire`], in `dir`.
    pub fn acquire_in(dir: &Path, lab: &str, host: &HostId, uri: &str, what: &str) -> Result<Self, LockError> {
        let path = lab_lock_path(dir, lab, host);
        match try_lock(&path, &format!("{what} pid {}", std::process::id()))? {
            Try::Got(held) => Ok(Self { path: held.path.clone(), _held: held }),
            Try::Busy(holder) => Err(LockError::Held { lab: lab.into(), uri: uri.into(), holder }),
        }
    }
}

/// Held while a run checks the host for conflicts (subnets, bridges, names claimed by other
/// labs) and creates or changes networks, so two labs cannot both claim the same thing: the
/// second observes the first's networks and gets the normal plan refusal. Released on drop.
pub struct HostLock {
    _held: Held,
    pub path: PathBuf,
}

impl HostLock {
    /// Takes the lock of `host` in [`lock_dir`], waiting up to `timeout` while another run
    /// holds it (`on_wait` is called once, with the holder's description, when it has to
    /// wait). `what` describes this run (`topo apply lab e2e`).
    pub fn acquire(
        host: &HostId,
        what: &str,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        Self::acquire_in(&lock_dir(), host, what, timeout, on_wait)
    }

    /// As [`HostLock::acquire`], in `dir`.
    pub fn acquire_in(
        dir: &Path,
        host: &HostId,
        what: &str,
        timeout: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Self, LockError> {
        let path = host_lock_path(dir, host);
        let me = format!("{what} pid {}", std::process::id());
        let t0 = Instant::now();
        let holder = match try_lock(&path, &me)? {
            Try::Got(held) => return Ok(Self { path: held.path.clone(), _held: held }),
            Try::Busy(holder) => holder,
        };
        on_wait(&holder);
        // No sleep-poll: a helper thread blocks in `File::lock` (the kernel wakes it when the
        // holder's lock goes) and hands the locked file over; this thread waits for it at most
        // `timeout`. After a timeout the helper stays blocked until the holder is done, then
        // finds nobody waiting and drops the file, which releases the lock at once.
        let file = open_lock_file(&path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let locked = file.lock().map(|()| file);
            let _ = tx.send(locked);
        });
        match rx.recv_timeout(timeout.saturating_sub(t0.elapsed())) {
            Ok(Ok(file)) => {
                let held = claim(file, &path, &me);
                Ok(Self { path: held.path.clone(), _held: held })
            }
            Ok(Err(source)) => Err(LockError::Io { path: path.display().to_string(), source }),
            Err(_) => Err(LockError::HostBusy { host: host.to_string(), holder, waited_s: t0.elapsed().as_secs() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostId {
        HostId::new("h1", "qemu:///system")
    }

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let uri = "qemu:///system";
        let first = LabLock::acquire_in(dir.path(), "seedlab", &host(), uri, "apply").unwrap();
        // flock locks belong to the open file description: a second open conflicts even in-process.
        let err = LabLock::acquire_in(dir.path(), "seedlab", &host(), uri, "destroy").err().unwrap();
        assert!(err.to_string().contains(&format!("(apply pid {})", std::process::id())), "{err}");
        assert!(LabLock::acquire_in(dir.path(), "other", &host(), uri, "apply").is_ok());
        assert!(LabLock::acquire_in(dir.path(), "seedlab", &HostId::new("h2", uri), uri, "apply").is_ok());
        drop(first);
        assert!(LabLock::acquire_in(dir.path(), "seedlab", &host(), uri, "apply").is_ok());
    }

    /// Two spellings of one URI reaching one daemon are one host, so they share a lock.
    #[test]
    fn host_id_is_independent_of_the_uri_spelling() {
        let id = |h: &str, u: &str| HostId::new(h, u);
        let sys = id("lab-host", "qemu:///system");
        for u in [
            "qemu+unix:///system",
            "qemu+tcp://127.0.0.1/system",
            "QEMU+ssh://root@lab-host:22/system?keyfile=/k",
            "qemu:///system/",
        ] {
            assert_eq!(id("lab-host", u), sys, "{u}");
        }
        assert_eq!(sys.to_string(), "lab-host qemu/system");
        assert_ne!(id("other-host", "qemu:///system"), sys);
        assert_ne!(id("lab-host", "xen:///system"), sys);
        assert_ne!(id("lab-host", "qemu:///session"), sys);
        assert_ne!(id("lab-host", "qemu+ssh://alice@h/session"), id("lab-host", "qemu+ssh://bob@h/session"));
        assert_eq!(id("h", "test:///default").instance, "/default");
        let dir = tempfile::tempdir().unwrap();
        let _a = LabLock::acquire_in(dir.path(), "lab", &id("lab-host", "qemu:///system"), "a", "apply").unwrap();
        let err = LabLock::acquire_in(dir.path(), "lab", &id("lab-host", "qemu+tcp://127.0.0.1/system"), "b", "apply");
        assert!(matches!(err, Err(LockError::Held { .. })));
    }

    #[test]
    fn host_lock_waits_for_the_holder_then_times_out_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::acquire_in(dir.path(), &host(), "topo apply lab a", Duration::ZERO, |_| {}).unwrap();
        let mut seen = None;
        let t0 = Instant::now();
        let err = HostLock::acquire_in(dir.path(), &host(), "topo apply lab b", Duration::from_millis(200), |h| {
            seen = Some(h.to_string())
        })
        .err()
        .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let me = format!("topo apply lab a pid {}", std::process::id());
        assert_eq!(seen.as_deref(), Some(me.as_str()));
        assert!(err.to_string().contains(&me), "{err}");
        // Another host is independent; the lab lock of the same host is another file.
        assert!(
            HostLock::acquire_in(dir.path(), &HostId::new("h2", "qemu:///system"), "x", Duration::ZERO, |_| {}).is_ok()
        );
        assert!(LabLock::acquire_in(dir.path(), "host", &host(), "u", "apply").is_ok());
        // The waiter gets it as soon as the holder lets go.
        let dir2 = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            HostLock::acquire_in(&dir2, &host(), "topo apply lab b", Duration::from_secs(10), |_| {}).is_ok()
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
        assert!(t.join().unwrap());
    }

    /// The lock folder follows the user: root's is shared, others' are their own.
    #[test]
    fn lock_folder_by_user() {
        let tmp = Path::new("/tmp");
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(choose_lock_dir(None, 0, os("/run/user/0"), tmp), PathBuf::from("/run/topo"));
        assert_eq!(choose_lock_dir(None, 1000, os("/run/user/1000"), tmp), PathBuf::from("/run/user/1000/topo"));
        assert_eq!(choose_lock_dir(None, 1000, None, tmp), PathBuf::from("/tmp/topo-1000"));
        assert_eq!(choose_lock_dir(None, 1000, os("relative"), tmp), PathBuf::from("/tmp/topo-1000"));
        assert_eq!(choose_lock_dir(os("/x"), 0, None, tmp), PathBuf::from("/x"));
        assert_eq!(choose_lock_dir(os(""), 0, None, tmp), PathBuf::from("/run/topo"));
    }

    #[test]
    fn lock_files_in_a_folder_topo_creates() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("xdg/topo");
        let l = LabLock::acquire_in(&nested, "lab", &host(), "u", "apply").unwrap();
        assert!(l.path.starts_with(&nested));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o700);
    }

    /// The attack of a shared temp dir: another user made the lock folder first (here: a
    /// folder others may write to) or put a symlink where the lock file goes. topo refuses
    /// the folder, and never opens the lock file through a link (the victim stays intact).
    #[test]
    fn a_lock_folder_others_may_write_or_a_linked_lock_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("topo-1000");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = LabLock::acquire_in(&shared, "lab", &host(), "u", "apply").err().unwrap();
        assert!(matches!(e, LockError::DirNotPrivate { .. }), "{e}");
        assert!(e.to_string().contains("others may write"), "{e}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, lab_lock_path(&shared, "lab", &host())).unwrap();
        let e = LabLock::acquire_in(&shared, "lab", &host(), "u", "apply").err().unwrap();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
