//! SSH host keys of lab VMs: pinned on first contact in a known_hosts file per lab and
//! host that topo owns, and checked on every later one, as ssh(1) does.
//!
//! `topo ssh` and `topo inventory --format ssh-config` (and `ansible`) run ssh with
//! `UserKnownHostsFile=<state dir>/known_hosts/<lab>-<host digest>`,
//! `StrictHostKeyChecking=accept-new` and `HostKeyAlias=<VM libvirt name>.<domain UUID>`:
//! the first login (after topo proved the VM's address by ARP) records the key under the
//! alias; a different key for the same alias is refused by ssh ("REMOTE HOST IDENTIFICATION
//! HAS CHANGED"). A VM destroyed and created again is a new domain with a new UUID, so a new
//! alias; a VM that apply replaces keeps its domain UUID, so apply forgets its key first
//! ([`forget_vms`]); keys of domains gone are forgotten before each use
//! ([`forget_all_but`]). `topo destroy` deletes the lab's file ([`remove`]). See
//! docs/files.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::apply::lock::HostId;
use crate::files::FileError;

/// Largest known_hosts file topo reads back to forget replaced VMs (1 MiB: one line per VM
/// key type is a few hundred bytes).
pub const MAX_KNOWN_HOSTS: u64 = 1024 * 1024;

/// Why the known_hosts file of a lab cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum KnownHostsError {
    #[error("no folder for topo's known_hosts files: neither XDG_STATE_HOME nor HOME is set to an absolute path")]
    #[diagnostic(code(topo::ssh::no_state_dir), help("set HOME (or XDG_STATE_HOME) to your home folder"))]
    NoStateDir,
    #[error("cannot use {path} for topo's known_hosts files: it {source}")]
    #[diagnostic(
        code(topo::ssh::known_hosts),
        help(
            "topo keeps the lab VMs' host keys in a folder of yours that no one else may write to (mode 0700); fix or remove it"
        )
    )]
    Dir {
        path: String,
        #[source]
        source: FileError,
    },
    #[error("cannot update {path}: {source}")]
    #[diagnostic(code(topo::ssh::known_hosts_write), help("check that you may write to the folder"))]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `<state dir>/known_hosts/<lab>-<host digest>` (the same host digest as the lock files:
/// one file per lab and libvirt host).
pub fn path_in(state_dir: &Path, lab: &str, host: &HostId) -> PathBuf {
    state_dir.join("known_hosts").join(format!("{lab}-{}", host.digest()))
}

/// The file of `lab` on `host` under [`crate::files::state_dir`], its folder made private
/// (`0700`, the user's own: [`crate::files::ensure_private_dir`]).
///
/// # Errors
/// [`KnownHostsError::NoStateDir`], [`KnownHostsError::Dir`].
pub fn prepare(lab: &str, host: &HostId) -> Result<PathBuf, KnownHostsError> {
    let state = crate::files::state_dir().ok_or(KnownHostsError::NoStateDir)?;
    let path = path_in(&state, lab, host);
    for dir in [state.as_path(), path.parent().unwrap_or(&state)] {
        crate::files::ensure_private_dir(dir)
            .map_err(|source| KnownHostsError::Dir { path: dir.display().to_string(), source })?;
    }
    Ok(path)
}

/// The name a VM's host key is recorded under: `<libvirt name>.<domain UUID>`. A VM created
/// again (after a destroy, or by another lab of the same name) is a new domain with a new
/// UUID (libvirt gives every define of a new domain one), so its host key is a first
/// contact, not a changed key. A replace keeps the UUID: see [`forget_vms`].
pub fn alias(libvirt_name: &str, uuid: &str) -> String {
    format!("{libvirt_name}.{uuid}")
}

/// Drops from the known_hosts file at `path` every line whose host names none of `keep`
/// (the aliases of the lab's current domains): keys of destroyed VMs are forgotten.
/// Comments and blank lines stay. A missing file is fine. Written back only when something
/// changed (`0600`, atomically: [`crate::files::write_private_atomic`]).
///
/// # Errors
/// [`KnownHostsError::Write`]; a file that cannot be read (not a regular file, too large)
/// is emptied.
pub fn forget_all_but(path: &Path, keep: &BTreeSet<String>) -> Result<(), KnownHostsError> {
    retain(path, |host| keep.contains(host))
}

/// Forgets the pinned keys of the domains `libvirt_names` of `lab` on `host` (every alias
/// `<libvirt name>.<UUID>`): apply calls it before it replaces those VMs. A replace keeps
/// the domain's UUID (and so its alias) but gives the VM a new disk, whose cloud-init makes
/// new host keys. Nothing to do without a state folder or file.
///
/// # Errors
/// [`KnownHostsError::Write`].
pub fn forget_vms(lab: &str, host: &HostId, libvirt_names: &[&str]) -> Result<(), KnownHostsError> {
    let Some(state) = crate::files::state_dir() else { return Ok(()) };
    if libvirt_names.is_empty() {
        return Ok(());
    }
    forget_vms_in(&path_in(&state, lab, host), libvirt_names)
}

/// [`forget_vms`] in the known_hosts file at `path`.
fn forget_vms_in(path: &Path, libvirt_names: &[&str]) -> Result<(), KnownHostsError> {
    let prefixes: Vec<String> = libvirt_names.iter().map(|n| format!("{n}.")).collect();
    retain(path, |h| !prefixes.iter().any(|p| h.starts_with(p.as_str())))
}

/// Keeps the lines of the known_hosts file at `path` that name a host `keep` accepts.
fn retain(path: &Path, keep: impl Fn(&str) -> bool) -> Result<(), KnownHostsError> {
    let text = match crate::files::read_text_bounded(path, MAX_KNOWN_HOSTS) {
        Ok(t) => t,
        Err(FileError::NotFound) => return Ok(()),
        Err(_) => String::from("# topo: the previous file was unreadable and was replaced\n"),
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                return true;
            }
            // `[@marker] hosts keytype key [comment]`, hosts comma separated (sshd(8)
            // SSH_KNOWN_HOSTS FILE FORMAT).
            let mut words = t.split_whitespace();
            let first = words.next().unwrap_or_default();
            let hosts = if first.starts_with('@') { words.next().unwrap_or_default() } else { first };
            hosts.split(',').any(&keep)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    if kept == text {
        return Ok(());
    }
    crate::files::write_private_atomic(path, kept.as_bytes())
        .map_err(|source| KnownHostsError::Write { path: path.display().to_string(), source })
}

/// Deletes the known_hosts file of `lab` on `host` (`topo destroy`); a missing file or state
/// folder is fine.
pub fn remove(lab: &str, host: &HostId) -> std::io::Result<()> {
    let Some(state) = crate::files::state_dir() else { return Ok(()) };
    match std::fs::remove_file(path_in(&state, lab, host)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The ssh options that pin a VM's host key: `(option, value)` pairs for `-o` or an
/// ssh_config `Host` block. `GlobalKnownHostsFile /dev/null` keeps the system's file out;
/// `HashKnownHosts no` overrides a system-wide `yes` (Debian's /etc/ssh/ssh_config sets it),
/// which would store the aliases hashed where [`forget_all_but`] cannot read them (they
/// name domains, not hosts a reader could learn anything from).
pub fn ssh_options(known_hosts: &Path, alias: &str) -> Vec<(&'static str, String)> {
    vec![
        ("UserKnownHostsFile", ssh_quote(&known_hosts.display().to_string())),
        ("GlobalKnownHostsFile", "/dev/null".into()),
        ("StrictHostKeyChecking", "accept-new".into()),
        ("HostKeyAlias", alias.to_string()),
        ("HashKnownHosts", "no".into()),
        ("LogLevel", "ERROR".into()),
    ]
}

/// A path as one ssh_config(5) argument: in double quotes when it holds a space (the state
/// folder is under the user's home, which may).
fn ssh_quote(s: &str) -> String {
    if s.contains([' ', '\t']) { format!("\"{s}\"") } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_lab_and_host() {
        let h1 = HostId::new("h1", "qemu:///system");
        let h2 = HostId::new("h2", "qemu:///system");
        let a = path_in(Path::new("/s"), "lab", &h1);
        assert!(a.starts_with("/s/known_hosts") && a.file_name().unwrap().to_str().unwrap().starts_with("lab-"));
        assert_ne!(a, path_in(Path::new("/s"), "lab", &h2));
        assert_ne!(a, path_in(Path::new("/s"), "lab2", &h1));
    }

    /// Keys of domains no longer there (a replaced VM has a new UUID) are forgotten; the
    /// current ones, comments and marker lines naming a kept alias stay.
    #[test]
    fn replaced_vms_are_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("kh");
        let old = alias("lab-a", "1111");
        let new = alias("lab-a", "2222");
        let b = alias("lab-b", "3333");
        std::fs::write(
            &f,
            format!(
                "# c\n{old} ssh-ed25519 AAAAold\n{new} ssh-ed25519 AAAAnew\n{b},x ecdsa-sha2-nistp256 AAAAb\n@revoked {old} ssh-rsa AAAAr\n"
            ),
        )
        .unwrap();
        forget_all_but(&f, &[new.clone(), b.clone()].into()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            format!("# c\n{new} ssh-ed25519 AAAAnew\n{b},x ecdsa-sha2-nistp256 AAAAb\n")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        forget_all_but(&tmp.path().join("none"), &BTreeSet::new()).unwrap();
    }

    /// Before a replace, the replaced VM's key goes (its UUID stays, its disk and so its
    /// host keys are new); another VM whose name starts alike stays.
    #[test]
    fn a_replaced_vm_is_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("kh");
        std::fs::write(&f, "lab-a.1111 ssh-ed25519 AAAAa\nlab-ab.2222 ssh-ed25519 AAAAb\n").unwrap();
        forget_vms_in(&f, &["lab-a"]).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "lab-ab.2222 ssh-ed25519 AAAAb\n");
    }

    #[test]
    fn options_pin_the_key_under_the_alias() {
        let o = ssh_options(Path::new("/home/a b/kh"), "lab-a.1111");
        assert!(o.contains(&("StrictHostKeyChecking", "accept-new".into())));
        assert!(o.contains(&("HostKeyAlias", "lab-a.1111".into())));
        assert!(o.contains(&("UserKnownHostsFile", "\"/home/a b/kh\"".into())));
    }
}
