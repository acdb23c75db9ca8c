//! cloud-init rules: the lab-level `cloud_init` defaults and each VM's overrides, merged key
//! by key; user names, hostnames and SSH keys as the guest's tools accept them; key files
//! and the user's own user-data read and checked here (relative paths start at the lab
//! file's folder, `~/` is the invoking user's home).

use std::path::{Path, PathBuf};

use super::Checker;
use crate::diag::Code;
use crate::guest;
use crate::model::{self, DEFAULT_USER};
use crate::spec::{CloudInitSpec, Spanned};

/// Largest user-data file topo reads (the seed is a small disk; cloud-init reads it whole).
pub const MAX_USER_DATA: u64 = 1024 * 1024;

/// The lab-level section, checked once: what each VM inherits.
#[derive(Clone, Debug, Default)]
pub(super) struct Defaults<'s> {
    spec: Option<&'s CloudInitSpec>,
    keys: Option<Vec<String>>,
    key_files: Option<Vec<String>>,
    user_data: Option<model::UserData>,
}

/// Checks the lab-level `cloud_init` (reporting its problems once).
pub(super) fn check_lab<'s>(c: &mut Checker, spec: Option<&'s Spanned<CloudInitSpec>>) -> Defaults<'s> {
    let Some(s) = spec else { return Defaults::default() };
    let s = &s.value;
    if let Some(h) = &s.hostname {
        c.at(
            Code::CloudInit,
            h,
            "`hostname` is set in the lab-level `cloud_init`",
            "per VM only",
            "set `cloud_init: {hostname: ...}` on the VM instead (each VM needs its own hostname)",
        );
    }
    if let Some(u) = &s.user {
        check_user(c, u);
    }
    Defaults {
        spec: Some(s),
        keys: s.ssh_authorized_keys.as_ref().map(|k| inline_keys(c, k)),
        key_files: s.ssh_authorized_keys_files.as_ref().map(|f| key_files(c, f)),
        user_data: s.user_data.as_ref().and_then(|u| user_data(c, u)),
    }
}

/// The cloud-init of one VM: its own keys over the lab's, over the defaults. `Ok(None)` when
/// cloud-init is off for it; `Err(())` when a problem was recorded.
pub(super) fn check_vm(
    c: &mut Checker,
    lab: &Defaults<'_>,
    spec: Option<&Spanned<CloudInitSpec>>,
    vm_name: &str,
    has_disk: bool,
) -> Result<Option<model::CloudInit>, ()> {
    let before = c.count();
    let own = spec.map(|s| &s.value);
    let enabled = own
        .and_then(|s| s.enabled.as_ref())
        .or_else(|| lab.spec.and_then(|s| s.enabled.as_ref()))
        .map_or(has_disk, |e| e.value);
    // Checked even when off, so a mistake does not wait for the day it is switched on.
    let user = match own.and_then(|s| s.user.as_ref()) {
        Some(u) => check_user(c, u),
        None => Some(lab.spec.and_then(|s| s.user.as_ref()).map_or(DEFAULT_USER.to_owned(), |u| u.value.clone())),
    };
    let hostname = match own.and_then(|s| s.hostname.as_ref()) {
        Some(h) => match guest::check_hostname(&h.value) {
            Ok(()) => Some(h.value.clone()),
            Err(why) => {
                c.at(
                    Code::CloudInit,
                    h,
                    format!("hostname `{}` {why}", h.value),
                    "not a valid hostname",
                    "use letters, digits and '-' (RFC 1123), e.g. `deb1` or `deb1.lab.example`",
                );
                None
            }
        },
        None => Some(guest::default_hostname(vm_name)),
    };
    let keys = match own.and_then(|s| s.ssh_authorized_keys.as_ref()) {
        Some(k) => Some(inline_keys(c, k)),
        None => lab.keys.clone(),
    };
    let files = match own.and_then(|s| s.ssh_authorized_keys_files.as_ref()) {
        Some(f) => Some(key_files(c, f)),
        None => lab.key_files.clone(),
    };
    let user_data = match own.and_then(|s| s.user_data.as_ref()) {
        Some(u) => user_data(c, u),
        None => lab.user_data.clone(),
    };
    if c.count() > before {
        return Err(());
    }
    if !enabled {
        return Ok(None);
    }
    let default_keys = keys.is_none() && files.is_none();
    let ssh_authorized_keys = keys.into_iter().chain(files).flatten().collect();
    Ok(Some(model::CloudInit {
        user: user.unwrap_or_default(),
        ssh_authorized_keys,
        default_keys,
        hostname: hostname.unwrap_or_default(),
        user_data,
    }))
}

fn check_user(c: &mut Checker, u: &Spanned<String>) -> Option<String> {
    match guest::check_user_name(&u.value) {
        Ok(()) => Some(u.value.clone()),
        Err(why) => {
            c.at(
                Code::CloudInit,
                u,
                format!("user `{}` {why}", u.value),
                "not a usable login name",
                format!("use lowercase letters, digits, '-' and '_', starting with a letter; the default is `{DEFAULT_USER}`"),
            );
            None
        }
    }
}

fn inline_keys(c: &mut Checker, keys: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        match guest::check_public_key(k.value.trim()) {
            Ok(()) => out.push(k.value.trim().to_owned()),
            Err(why) => c.at(
                Code::SshKey,
                k,
                format!("SSH public key {why}"),
                "not an OpenSSH public key line",
                "paste the whole line of a `.pub` file (`ssh-ed25519 AAAA... comment`), or list the file under `ssh_authorized_keys_files`",
            ),
        }
    }
    out
}

/// `~/x` under $HOME, a relative path under the lab file's folder.
fn resolve(c: &Checker, s: &str) -> PathBuf {
    let p = match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(s),
    };
    let joined = if p.is_absolute() { p } else { c.source.dir.join(p) };
    std::path::absolute(&joined).unwrap_or(joined)
}

fn read_file(c: &mut Checker, s: &Spanned<String>, what: &str, max: u64) -> Option<(PathBuf, String)> {
    let path = resolve(c, &s.value);
    let problem = match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Some(("is not a regular file".to_owned(), "not a file")),
        Ok(m) if m.len() > max => Some((format!("is {} bytes, more than {max}", m.len()), "too large")),
        Ok(_) => match std::fs::read_to_string(&path) {
            Ok(text) => return Some((path, text)),
            Err(e) => Some((format!("cannot be read as UTF-8 text ({})", e.kind()), "unreadable")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(("does not exist".to_owned(), "file not found")),
        Err(e) => Some((format!("cannot be read ({})", e.kind()), "unreadable")),
    };
    if let Some((why, label)) = problem {
        c.at(
            Code::MissingFile,
            s,
            format!("{what} `{}` {why}", s.value),
            label,
            "check the path; relative paths start at the lab file's folder, `~/` at your home",
        );
    }
    None
}

fn key_files(c: &mut Checker, files: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let Some((_, text)) = read_file(c, f, "SSH key file", 64 * 1024) else { continue };
        let lines = guest::key_lines(&text);
        if lines.is_empty() {
            c.at(
                Code::SshKey,
                f,
                format!("SSH key file `{}` holds no key", f.value),
                "no key line",
                "point to a public key file (`.pub`), one key per line",
            );
        }
        for (n, line) in lines.iter().enumerate() {
            match guest::check_public_key(line) {
                Ok(()) => out.push(line.clone()),
                Err(why) => c.at(
                    Code::SshKey,
                    f,
                    format!("key {} of SSH key file `{}` {why}", n + 1, f.value),
                    "not a public key file",
                    "point to the public key (`id_ed25519.pub`), never the private key",
                ),
            }
        }
    }
    out
}

fn user_data(c: &mut Checker, s: &Spanned<String>) -> Option<model::UserData> {
    let (path, text) = read_file(c, s, "user-data file", MAX_USER_DATA)?;
    match guest::parse_user_file(&text) {
        Ok(_) => Some(model::UserData { path, text }),
        Err(why) => {
            c.at(
                Code::UserData,
                s,
                format!("user-data file `{}` {why}", s.value),
                "not a #cloud-config mapping",
                "start the file with the line `#cloud-config`, then a YAML mapping of cloud-config keys",
            );
            None
        }
    }
}
