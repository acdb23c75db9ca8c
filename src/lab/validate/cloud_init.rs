//! cloud-init rules: the lab-level `cloud_init` defaults and each VM's overrides, merged key
//! by key; user names, hostnames and SSH keys as the guest's tools accept them; key files
//! and the user's own user-data read and checked here (relative paths start at the lab
//! file's folder, `~/` is the invoking user's home).

use std::path::{Path, PathBuf};

use super::Checker;
use crate::diag::Code;
use crate::lab::cloud_init_rules as rules;
use crate::lab::model::{self, DEFAULT_USER};
use crate::lab::spec::{CloudInitSpec, Spanned};

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
        Some(h) => match rules::check_hostname(&h.value) {
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
        None => Some(rules::default_hostname(vm_name)),
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
    if !enabled && let Some(own) = own {
        unused_keys(c, own, spec, vm_name, has_disk, lab.spec.and_then(|s| s.enabled.as_ref()).is_some());
    }
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

/// A VM's own cloud-init keys that would do nothing because cloud-init is off for it (no
/// seed disk is made): refused, so a `user_data` is never silently ignored. Keys the VM
/// inherits from the lab-level `cloud_init` are not: they are defaults for the VMs that use
/// cloud-init.
fn unused_keys(
    c: &mut Checker,
    own: &CloudInitSpec,
    spec: Option<&Spanned<CloudInitSpec>>,
    vm_name: &str,
    has_disk: bool,
    lab_sets_enabled: bool,
) {
    let CloudInitSpec { enabled, user, ssh_authorized_keys, ssh_authorized_keys_files, hostname, user_data } = own;
    let whole = spec.map(|s| c.span(s));
    let first = |v: &Option<Vec<Spanned<String>>>| -> Option<Option<miette::SourceSpan>> {
        v.as_ref().map(|v| v.first().map(|x| c.span(x)).or(whole))
    };
    let given: Vec<(&str, Option<miette::SourceSpan>)> = [
        ("user", user.as_ref().map(|v| Some(c.span(v)))),
        ("ssh_authorized_keys", first(ssh_authorized_keys)),
        ("ssh_authorized_keys_files", first(ssh_authorized_keys_files)),
        ("hostname", hostname.as_ref().map(|v| Some(c.span(v)))),
        ("user_data", user_data.as_ref().map(|v| Some(c.span(v)))),
    ]
    .into_iter()
    .filter_map(|(k, at)| at.map(|at| (k, at)))
    .collect();
    let why = if enabled.is_some() {
        "its `cloud_init` says `enabled: false`"
    } else if lab_sets_enabled {
        "the lab-level `cloud_init` says `enabled: false`"
    } else if !has_disk {
        "it boots a kernel only (no `disk`), where cloud-init is off unless `enabled: true`"
    } else {
        "cloud-init is off for it"
    };
    for (key, at) in given {
        let Some(at) = at else { continue };
        c.push(
            Code::CloudInit,
            format!("vm `{vm_name}` sets `cloud_init.{key}`, but cloud-init is off for it: {why}"),
            vec![miette::LabeledSpan::at(at, "would be ignored: no seed disk is made")],
            format!(
                "set `enabled: true` in the VM's `cloud_init` (its image or initrd must run cloud-init), or remove `{key}`"
            ),
        );
    }
}

fn check_user(c: &mut Checker, u: &Spanned<String>) -> Option<String> {
    match rules::check_user_name(&u.value) {
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
        match rules::check_public_key(k.value.trim()) {
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

/// `~/x` under $HOME, a relative path under the lab file's folder; canonical, as every path
/// of a lab (`source::resolve_path`), so nothing depends on how the lab file was reached.
fn resolve(c: &Checker, s: &str) -> PathBuf {
    let p = match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(s),
    };
    crate::lab::source::resolve_path(&c.source.dir, &p)
}

/// The bytes of file `s` names (resolved with [`resolve`]), read with
/// [`crate::files::read_bounded`] (a regular file of at most `max` bytes; a FIFO or device
/// never blocks or feeds the read). What is wrong is a problem at `s` (unless the command
/// opens no file: `Files::NotOpened`, where the file is just left out): `missing_file` when
/// it does not exist or cannot be read, `not_a_file` for a FIFO, device or folder,
/// `file_too_large` over `max`.
fn read_bytes(c: &mut Checker, s: &Spanned<String>, what: &str, max: u64) -> Option<(PathBuf, Vec<u8>)> {
    use crate::files::FileError;
    let path = resolve(c, &s.value);
    let err = match crate::files::read_bounded(&path, max) {
        Ok(bytes) => return Some((path, bytes)),
        Err(e) => e,
    };
    if c.files == super::Files::NotOpened {
        return None;
    }
    let (code, label, help) = match &err {
        FileError::NotRegular { .. } => (
            Code::NotAFile,
            "not a regular file",
            "name a regular file: topo reads no FIFO, device or folder (save what a pipe gives to a file first)",
        ),
        FileError::TooLarge { .. } => (Code::FileTooLarge, "too large", "check that this is the right file"),
        FileError::NotFound => (
            Code::MissingFile,
            "file not found",
            "check the path; relative paths start at the lab file's folder, `~/` at your home",
        ),
        FileError::NotUtf8 | FileError::NotPrivate { .. } | FileError::Io(_) => {
            (Code::MissingFile, "unreadable", "check that you may read the file")
        }
    };
    c.at(code, s, format!("{what} `{}` {err}", s.value), label, help);
    None
}

/// [`read_bytes`] as UTF-8 text (else a `missing_file` problem saying so).
fn read_file(c: &mut Checker, s: &Spanned<String>, what: &str, max: u64) -> Option<(PathBuf, String)> {
    let (path, bytes) = read_bytes(c, s, what, max)?;
    Some((path, utf8(c, s, what, bytes)?))
}

/// `bytes` as text, else a `missing_file` problem at `s` (none when no file is opened).
fn utf8(c: &mut Checker, s: &Spanned<String>, what: &str, bytes: Vec<u8>) -> Option<String> {
    let Ok(text) = String::from_utf8(bytes) else {
        if c.files != super::Files::NotOpened {
            c.at(
                Code::MissingFile,
                s,
                format!("{what} `{}` cannot be read as UTF-8 text", s.value),
                "unreadable",
                "save the file as UTF-8 text",
            );
        }
        return None;
    };
    Some(text)
}

fn key_files(c: &mut Checker, files: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let Some((_, text)) = read_file(c, f, "SSH key file", rules::MAX_KEY_FILE) else { continue };
        let lines = rules::key_lines(&text);
        if lines.is_empty() {
            c.at(
                Code::SshKey,
                f,
                format!("SSH key file `{}` holds no key", f.value),
                "no key line",
                "point to a public key file (`.pub`), one key per line",
            );
        }
        if text.contains("PRIVATE KEY") {
            c.at(
                Code::SshKey,
                f,
                format!("SSH key file `{}` is a private key", f.value),
                "a private key",
                "point to the public key (`id_ed25519.pub`), never the private key",
            );
            continue;
        }
        // The first bad line is reported (one problem per file).
        let checked: Result<Vec<String>, (usize, String)> = lines
            .iter()
            .enumerate()
            .map(|(n, l)| rules::check_public_key(l).map(|()| l.clone()).map_err(|why| (n + 1, why)))
            .collect();
        match checked {
            Ok(keys) => out.extend(keys),
            Err((n, why)) => c.at(
                Code::SshKey,
                f,
                format!("key line {n} of SSH key file `{}` {why}", f.value),
                "not a public key file",
                "list public key files (`.pub`), one OpenSSH key per line",
            ),
        }
    }
    out
}

fn user_data(c: &mut Checker, s: &Spanned<String>) -> Option<model::UserData> {
    // gzip: cloud-init would take it, topo does not (the seed is text that plans show as a
    // diff); said before the UTF-8 check, which it would fail.
    let (path, bytes) = read_bytes(c, s, "user-data file", MAX_USER_DATA)?;
    if bytes.starts_with(&rules::GZIP_MAGIC) {
        c.at(
            Code::UserData,
            s,
            format!(
                "user-data file `{}` is gzip-compressed: topo writes the seed as text and shows it in plans",
                s.value
            ),
            "gzip",
            "give the uncompressed file (`gunzip -k FILE`); the seed has room for it",
        );
        return None;
    }
    let text = utf8(c, s, "user-data file", bytes)?;
    match rules::check_user_file(&text) {
        Ok(_) => Some(model::UserData { path, text }),
        Err(why) => {
            c.at(
                Code::UserData,
                s,
                format!("user-data file `{}` {why}", s.value),
                "not user-data cloud-init runs",
                "a `#cloud-config` file (merged with topo's) holds a YAML mapping of cloud-config keys; \
                 a script (`#!`), `#include`, `#cloud-boothook` or MIME file goes beside topo's in a \
                 multi-part (docs/guests.md)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::lab::source::SourceFile;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtopoTestKeyNotARealOneXXXXXXXXXXXXXXXXXXXX a@b";

    /// Validates `text` as `dir/lab.yaml` (relative paths start at `dir`).
    fn load(dir: &Path, text: &str) -> Result<crate::lab::model::Lab, crate::lab::validate::ValidateError> {
        let text = text.replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        crate::lab::validate::load(&SourceFile::from_text(&dir.join("lab.yaml"), text))
    }

    const HEAD: &str = "apiVersion: topo/v1\nname: t\n";

    #[test]
    fn on_for_disk_vms_off_for_kernel_only_vms() {
        let d = tempfile::tempdir().unwrap();
        let lab = load(
            d.path(),
            &format!("{HEAD}vms:\n  my_vm:\n    disk: {{image: KERNEL}}\n  k:\n    boot: {{kernel: KERNEL}}\n"),
        )
        .unwrap();
        let ci = lab.vms.values().find(|v| v.name.as_str() == "my_vm").unwrap().cloud_init.clone().unwrap();
        assert_eq!(ci.user, "topo");
        assert_eq!(ci.hostname, "my-vm");
        assert!(ci.default_keys && ci.ssh_authorized_keys.is_empty() && ci.user_data.is_none());
        assert_eq!(lab.vms.values().find(|v| v.name.as_str() == "k").unwrap().cloud_init, None);
    }

    #[test]
    fn vms_inherit_the_lab_level_key_by_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keys.pub"), format!("# mine\n{KEY}\n")).unwrap();
        std::fs::write(d.path().join("own.yaml"), "#cloud-config\npackages: [tcpdump]\n").unwrap();
        let text = format!(
            "{HEAD}cloud_init:\n  user: alice\n  ssh_authorized_keys_files: [keys.pub]\n  user_data: own.yaml\n\
             vms:\n  a:\n    disk: {{image: KERNEL}}\n  b:\n    disk: {{image: KERNEL}}\n    cloud_init:\n      \
             user: bob\n      hostname: b.lab.example\n      ssh_authorized_keys: ['{KEY} inline']\n  \
             c:\n    disk: {{image: KERNEL}}\n    cloud_init: {{enabled: false}}\n  \
             k:\n    boot: {{kernel: KERNEL}}\n    cloud_init: {{enabled: true}}\n"
        );
        let lab = load(d.path(), &text).unwrap();
        let ci = |n: &str| lab.vms.values().find(|v| v.name.as_str() == n).unwrap().cloud_init.clone();
        let a = ci("a").unwrap();
        assert_eq!((a.user.as_str(), a.hostname.as_str(), a.default_keys), ("alice", "a", false));
        assert_eq!(a.ssh_authorized_keys, [KEY]);
        assert_eq!(a.user_data.unwrap().path, d.path().join("own.yaml"));
        let b = ci("b").unwrap();
        assert_eq!((b.user.as_str(), b.hostname.as_str()), ("bob", "b.lab.example"));
        // The VM's inline keys, then the lab's key files (not overridden by the VM).
        assert_eq!(b.ssh_authorized_keys, [format!("{KEY} inline"), KEY.to_string()]);
        assert_eq!(ci("c"), None);
        assert!(ci("k").is_some(), "enabled: true on a kernel-only VM");
    }

    #[test]
    fn every_mistake_at_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("id_ed25519"), "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
        std::fs::write(d.path().join("empty.pub"), "\n# nothing\n").unwrap();
        std::fs::write(d.path().join("script.sh"), "echo hi\n").unwrap();
        let text = format!(
            "{HEAD}cloud_init:\n  hostname: all\n  user: Root\nvms:\n  a:\n    disk: {{image: KERNEL}}\n    \
             cloud_init:\n      hostname: bad_name\n      ssh_authorized_keys: [not-a-key]\n      \
             ssh_authorized_keys_files: [id_ed25519, empty.pub, missing.pub]\n      user_data: script.sh\n  \
             b:\n    disk: {{image: KERNEL}}\n    cloud_init: {{user_data: nowhere.yaml, enabled: false}}\n"
        );
        let e = load(d.path(), &text).unwrap_err();
        assert_eq!(
            e.codes(),
            [
                "topo::lab::cloud_init",
                "topo::lab::cloud_init",
                "topo::lab::cloud_init",
                "topo::lab::ssh_key",
                "topo::lab::ssh_key",
                "topo::lab::ssh_key",
                "topo::lab::missing_file",
                "topo::lab::user_data",
                "topo::lab::missing_file",
                // b: `user_data` with `enabled: false` would be ignored.
                "topo::lab::cloud_init",
            ],
            "{:#?}",
            e.problems.iter().map(|p| p.message.clone()).collect::<Vec<_>>()
        );
        let text = e.problems.iter().map(|p| p.message.clone()).collect::<Vec<_>>().join("\n");
        for says in [
            "lab-level",
            "`Root` must start with a lowercase letter",
            "contains '_'",
            "not an SSH key type",
            "holds no key",
            "is a private key",
            "does not exist",
            "does not recognise",
        ] {
            assert!(text.contains(says), "{says:?} not in\n{text}");
        }
    }

    /// A script is taken (it goes beside topo's cloud-config in a MIME multi-part); a gzip
    /// file is refused at its place, before the UTF-8 check it would fail.
    #[test]
    fn scripts_pass_gzip_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(d.path().join("own.gz"), [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff]).unwrap();
        let ok = format!("{HEAD}vms:\n  a:\n    disk: {{image: KERNEL}}\n    cloud_init: {{user_data: run.sh}}\n");
        let lab = load(d.path(), &ok).unwrap();
        let ud = lab.vms.values().next().unwrap().cloud_init.as_ref().unwrap().user_data.as_ref().unwrap();
        assert!(ud.text.starts_with("#!/bin/sh"));
        let bad = ok.replace("run.sh", "own.gz");
        let e = load(d.path(), &bad).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::user_data"]);
        assert!(e.problems[0].message.contains("gzip-compressed"), "{}", e.problems[0].message);
    }
}
