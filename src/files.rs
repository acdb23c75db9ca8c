//! Every file topo reads or writes on this machine, handled as a careful Unix tool does:
//! reads are of regular files only, of bounded size, opened so that neither a FIFO nor a
//! device can block or feed them forever; private writes are `0600`, atomic and never follow
//! a symlink; private folders are the user's own and writable by nobody else. See docs/files.md.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Why a file could not be read (or a private folder not used).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No file at the path (or a folder on the way is missing).
    #[error("does not exist")]
    NotFound,
    /// The file exists but is not a regular file: `kind` names what it is (`a FIFO`, `a
    /// character device`, `a folder`, `a socket`, `a block device`, `a symbolic link`).
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    /// A regular file of `size` bytes, over the `max` bytes this kind of file may have.
    #[error("is {size} bytes, more than the {max} bytes topo reads of it")]
    TooLarge { size: u64, max: u64 },
    /// The bytes are not UTF-8 text.
    #[error("is not UTF-8 text")]
    NotUtf8,
    /// A private folder that another user owns, or that other users may write to.
    #[error("is not private: {why}")]
    NotPrivate { why: String },
    /// Any other error of the system call (permission denied, I/O error).
    #[error("cannot be read ({0})")]
    Io(#[source] std::io::Error),
}

impl FileError {
    fn from_open(e: std::io::Error) -> Self {
        match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::NotFound, _) => FileError::NotFound,
            // open(2) with O_NOFOLLOW on a symbolic link fails with ELOOP.
            (_, Some(libc_eloop)) if libc_eloop == nix::errno::Errno::ELOOP as i32 => {
                FileError::NotRegular { kind: "a symbolic link" }
            }
            _ => FileError::Io(e),
        }
    }
}

/// What a file type is, in words, for a file that is not a regular one.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// The one way topo reads a file: the bytes of the regular file at `path`, at most `max`
/// bytes.
///
/// `path` is first resolved canonically (`realpath(3)`: a lab file or key file may
/// legitimately be a symlink), then the resolved path is opened with `O_NOFOLLOW` (no link
/// swapped in since is followed), `O_NONBLOCK` (opening a FIFO for reading without a writer
/// would otherwise block in open(2) itself, fifo(7)), `O_NOCTTY` and `O_CLOEXEC`. The opened
/// descriptor is `fstat`ed: it must be a regular file (a FIFO, `/dev/zero`, `/dev/stdin` on a
/// terminal, a folder are refused before one byte is read) of at most `max` bytes; then at
/// most `max + 1` bytes are read, so a file growing meanwhile is still refused in bounded
/// memory.
///
/// # Errors
/// [`FileError::NotFound`], [`FileError::NotRegular`], [`FileError::TooLarge`] or
/// [`FileError::Io`].
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > max {
        return Err(FileError::TooLarge { size: meta.len(), max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes).map_err(FileError::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { size: bytes.len() as u64, max });
    }
    Ok(bytes)
}

/// The regular file at `path`, opened for reading as [`read_bounded`] opens it (canonical
/// path, `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`), with its `fstat` metadata; for a
/// reader that takes only part of a large file (a base image's header, `image`). Nothing is
/// read.
///
/// # Errors
/// [`FileError::NotFound`], [`FileError::NotRegular`] or [`FileError::Io`].
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), FileError> {
    let real = std::fs::canonicalize(path).map_err(FileError::from_open)?;
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(&real).map_err(FileError::from_open)?;
    let meta = file.metadata().map_err(FileError::Io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular { kind: kind_of(meta.file_type()) });
    }
    Ok((file, meta))
}

/// [`read_bounded`], as UTF-8 text ([`FileError::NotUtf8`] otherwise).
pub fn read_text_bounded(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read_bounded(path, max)?).map_err(|_| FileError::NotUtf8)
}

/// Writes `bytes` to `path` as a private file (`0600`), atomically: into a new file in the
/// same folder (created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing that exists, link or
/// not, is opened), flushed to disk, then renamed over `path`. rename(2) replaces a symlink
/// at `path` itself, never the file it points to; readers see the old file or the whole new
/// one, never a part.
///
/// # Errors
/// The I/O error of any step (the temporary file is removed again).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp = dir.join(format!(".{}.topo-{}.tmp", name.to_string_lossy(), std::process::id()));
    let mut n = 0u32;
    let mut file = loop {
        let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(flags.bits()).open(&tmp)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
                tmp = dir.join(format!(".{}.topo-{}-{n}.tmp", name.to_string_lossy(), std::process::id()));
            }
            Err(e) => return Err(e),
        }
    };
    let done = (|| {
        // The umask cannot widen 0600, but a narrower umask must not leave it unreadable to us.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Makes sure `dir` is a private folder of this user: created (with its missing parents)
/// mode `0700` when absent; when present, it must be a real folder (not a symlink), owned by
/// this process's effective user, and writable by nobody else (no group or other write bit),
/// as ssh(1) requires of `~/.ssh`. A folder another local user made first (in a shared temp
/// dir) is refused, never used: its owner could swap the files in it.
///
/// # Errors
/// [`FileError::NotPrivate`] (the message says which rule) or [`FileError::Io`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(FileError::Io(e)),
    }
    check_private_dir(dir, nix::unistd::geteuid().as_raw())
}

/// The rule of [`ensure_private_dir`] for an existing `dir` and user `uid`.
fn check_private_dir(dir: &Path, uid: u32) -> Result<(), FileError> {
    let meta = std::fs::symlink_metadata(dir).map_err(FileError::from_open)?;
    let not_private = |why: String| Err(FileError::NotPrivate { why });
    if meta.file_type().is_symlink() {
        return not_private("it is a symbolic link".into());
    }
    if !meta.is_dir() {
        return not_private(format!("it is {}", kind_of(meta.file_type())));
    }
    if meta.uid() != uid {
        return not_private(format!("it belongs to uid {}, not to this user (uid {uid})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return not_private(format!("others may write to it (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// Opens (creating, `0600`) the file `path` for reading and writing without following a
/// symlink at `path` and without truncating it; it must be a regular file.
///
/// # Errors
/// The open error (`ELOOP` for a symlink), or `InvalidInput` when it is not a regular file.
pub fn open_private_rw(path: &Path) -> std::io::Result<File> {
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags.bits())
        .open(path)?;
    let t = file.metadata()?.file_type();
    if !t.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("it is {}", kind_of(t))));
    }
    Ok(file)
}

/// Opens `path` to write a stream into it (`topo capture -w FILE`): a regular file is created
/// (`0600`: captured packets may hold what others should not read) or truncated, a FIFO is
/// written as it is (`wireshark -k -i FIFO`); a symlink at `path` is refused, never followed,
/// as for every file topo writes; a device or a folder is refused.
///
/// # Errors
/// The open error (`ELOOP` for a symlink), or `InvalidInput` when it is neither a regular
/// file nor a FIFO.
pub fn create_output(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::FileTypeExt;
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(flags.bits())
        .open(path)?;
    let t = file.metadata()?.file_type();
    if !t.is_file() && !t.is_fifo() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("it is {}", kind_of(t))));
    }
    Ok(file)
}

/// The folder of topo's state files kept across runs (the known_hosts files):
/// `$XDG_STATE_HOME/topo` when that is an absolute path, else `$HOME/.local/state/topo`
/// (XDG Base Directory Specification 0.8); `None` without either.
pub fn state_dir() -> Option<PathBuf> {
    choose_state_dir(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn choose_state_dir(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Option<PathBuf> {
    match xdg.map(PathBuf::from) {
        Some(x) if x.is_absolute() => Some(x.join("topo")),
        _ => home.map(PathBuf::from).filter(|h| h.is_absolute()).map(|h| h.join(".local/state/topo")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO is not a regular file (fifo(7)): refused from the fstat of the opened
    /// descriptor. Opening it with O_NONBLOCK returns at once without a writer, where a plain
    /// open(2) for reading would block forever (the test would hang, not fail).
    #[test]
    fn a_fifo_is_refused_without_blocking_the_open() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("user-data");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(read_bounded(&f, 1024)).unwrap());
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the open of a FIFO must not block");
        assert!(matches!(got, Err(FileError::NotRegular { kind: "a FIFO (named pipe)" })), "{got:?}");
    }

    /// `/dev/zero` is a character device that never ends: refused before one byte is read
    /// (the old unbounded read ate memory).
    #[test]
    fn dev_zero_and_dev_null_are_character_devices() {
        for dev in ["/dev/zero", "/dev/null"] {
            let got = read_bounded(Path::new(dev), 1024);
            assert!(matches!(got, Err(FileError::NotRegular { kind: "a character device" })), "{dev}: {got:?}");
        }
    }

    #[test]
    fn a_folder_is_not_a_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        let got = read_bounded(tmp.path(), 1024);
        assert!(matches!(got, Err(FileError::NotRegular { kind: "a folder" })), "{got:?}");
    }

    /// The size comes from fstat: a sparse 3 GiB file is refused without reading it (the
    /// old code read it whole and then reported `missing_file`).
    #[test]
    fn a_large_file_is_refused_by_its_size_before_it_is_read() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(3 << 30).unwrap();
        let got = read_bounded(tmp.path(), 1024 * 1024);
        assert!(matches!(got, Err(FileError::TooLarge { size, max: 1048576 }) if size == 3 << 30), "{got:?}");
    }

    #[test]
    fn regular_files_and_symlinks_to_them_are_read_within_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("lab.yaml");
        std::fs::write(&f, "name: x\n").unwrap();
        std::os::unix::fs::symlink(&f, tmp.path().join("link.yaml")).unwrap();
        assert_eq!(read_text_bounded(&f, 8).unwrap(), "name: x\n");
        assert_eq!(read_text_bounded(&tmp.path().join("link.yaml"), 8).unwrap(), "name: x\n");
        assert!(matches!(read_bounded(&f, 7), Err(FileError::TooLarge { size: 8, max: 7 })));
        assert!(matches!(read_bounded(&tmp.path().join("none"), 7), Err(FileError::NotFound)));
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text_bounded(&f, 8), Err(FileError::NotUtf8)));
        // A symlink to a FIFO is resolved first, then refused as the FIFO it is.
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&fifo, tmp.path().join("to-fifo")).unwrap();
        assert!(matches!(read_bounded(&tmp.path().join("to-fifo"), 8), Err(FileError::NotRegular { .. })));
    }

    /// A private write is 0600 whatever the umask allows, and replaces a symlink at the
    /// path instead of writing through it (the victim file is untouched).
    #[test]
    fn private_writes_are_0600_atomic_and_do_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = tmp.path().join("plan.json");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_private_atomic(&out, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&out).unwrap();
        assert!(meta.is_file(), "the link itself was replaced");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    }

    /// The lock folder rule (as ssh's for ~/.ssh): own, not a link, nobody else may write.
    #[test]
    fn private_folders_are_owned_and_not_writable_by_others() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let d = tmp.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(ensure_private_dir(&d), Err(FileError::NotPrivate { .. })), "world-writable");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d).unwrap();
        let e = check_private_dir(&d, me + 1).unwrap_err();
        assert!(e.to_string().contains("belongs to uid"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(matches!(check_private_dir(&link, me), Err(FileError::NotPrivate { .. })), "a symlink");
    }

    #[test]
    fn private_files_open_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let lock = tmp.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let e = open_private_rw(&lock).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::ELOOP as i32), "{e}");
        let fifo = tmp.path().join("fifo.lock");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(open_private_rw(&fifo).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        let f = tmp.path().join("new.lock");
        open_private_rw(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn state_dir_follows_xdg() {
        assert_eq!(choose_state_dir(Some("/x".into()), Some("/h".into())), Some(PathBuf::from("/x/topo")));
        assert_eq!(
            choose_state_dir(Some("rel".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.local/state/topo"))
        );
        assert_eq!(choose_state_dir(None, None), None);
    }
}
