//! One apply or destroy per lab and host at a time: an exclusive lock file naming its holder.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};

/// Folder of the lock files (one per lab and connection URI).
pub const LOCK_DIR: &str = "/run/topo";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("lab {lab} on {uri} is locked by another topo run ({holder})")]
    #[diagnostic(
        code(topo::apply::locked),
        help("wait for it to finish; if no such process exists any more, the lock is released by itself")
    )]
    Held { lab: String, uri: String, holder: String },
    #[error("cannot create the lock file {path}: {source}")]
    #[diagnostic(code(topo::apply::lock_io))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the duration of an apply or destroy; released on drop (and by the kernel if the
/// process dies, so a crash never leaves a stale lock).
pub struct LabLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

fn lock_path(dir: &std::path::Path, lab: &str, uri: &str) -> PathBuf {
    let h = crate::plan::saved::sha256_hex(uri.as_bytes());
    dir.join(format!("{lab}-{}.lock", &h[..12]))
}

impl LabLock {
    pub fn acquire(lab: &str, uri: &str, what: &str) -> Result<Self, LockError> {
        Self::acquire_in(std::path::Path::new(LOCK_DIR), lab, uri, what)
    }

    pub fn acquire_in(dir: &std::path::Path, lab: &str, uri: &str, what: &str) -> Result<Self, LockError> {
        let path = lock_path(dir, lab, uri);
        let io = |source| LockError::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = write!(lock, "{what} pid {}", std::process::id());
                let _ = lock.flush();
                Ok(Self { _lock: lock, path })
            }
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder =
                    if holder.trim().is_empty() { "unknown process".into() } else { holder.trim().to_string() };
                Err(LockError::Held { lab: lab.into(), uri: uri.into(), holder })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = LabLock::acquire_in(dir.path(), "seedlab", "qemu:///system", "apply").unwrap();
        // flock locks belong to the open file description: a second open conflicts even in-process.
        let err = LabLock::acquire_in(dir.path(), "seedlab", "qemu:///system", "destroy").err().unwrap();
        assert!(err.to_string().contains(&format!("apply pid {}", std::process::id())), "{err}");
        assert!(LabLock::acquire_in(dir.path(), "other", "qemu:///system", "apply").is_ok());
        drop(first);
        assert!(LabLock::acquire_in(dir.path(), "seedlab", "qemu:///system", "apply").is_ok());
    }
}
