//! Guests: the cloud-init NoCloud seed topo gives each cloud-image VM (meta-data, user-data,
//! network-config) and the FAT image that carries it.
//!
//! Everything here is pure: the seed of a VM depends only on the validated lab (with the
//! SSH keys filled in), so the same lab gives the same seed bytes on every host. The rules
//! are written down in docs/guests.md.

mod fat;
mod inventory;
mod network;
mod user_data;

use std::path::Path;

use serde_json::Value;

use crate::model::{Lab, Vm};

pub use fat::{SEED_LABEL, fat_image, read_fat_files};
pub use inventory::{InvHost, InvNic, Inventory, SSH_OPTIONS};
pub use network::network_config;
pub use user_data::{
    GZIP_MAGIC, Part, UserDataKind, check_user_file, merge, multipart, parse_user_file, user_data, user_data_kind,
};

/// Why a seed could not be generated.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GuestError {
    /// The user's own user-data file is a `#cloud-config` that is not a YAML mapping, or a
    /// kind cloud-init would not run.
    #[error("user-data file {path}: {message}")]
    #[diagnostic(
        code(topo::guest::user_data),
        help(
            "a `#cloud-config` file holds a YAML mapping; other kinds start as cloud-init expects (see docs/guests.md)"
        )
    )]
    UserData { path: String, message: String },
    /// YAML output failed (an internal error: the values are plain data).
    #[error("could not write {what} as YAML: {message}")]
    #[diagnostic(code(topo::guest::yaml))]
    Yaml { what: &'static str, message: String },
    /// A NIC names a network the lab does not have (the lab was not validated).
    #[error("vm {vm} uses network {network}, which is not in the lab")]
    #[diagnostic(code(topo::guest::unknown_network))]
    UnknownNetwork { vm: String, network: String },
    /// Writing the FAT image failed.
    #[error("could not write the seed image: {0}")]
    #[diagnostic(code(topo::guest::image))]
    Image(#[from] std::io::Error),
}

/// The three files of a NoCloud seed, as text, plus the instance id in `meta_data`.
/// A plan step carries it (the image is made from it at apply time, byte for byte the same).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    /// `instance-id` in meta-data: `iid-` + 16 hex digits of SHA-256 over the lab name, the
    /// VM name and the other seed files (see [`instance_id`]). cloud-init runs its
    /// per-instance modules again whenever it changes.
    pub instance_id: String,
    /// `meta-data`: instance-id and local-hostname.
    pub meta_data: String,
    /// `user-data`: `#cloud-config` with the login user, its keys and the hostname, merged
    /// with the user's own `#cloud-config` file, or a MIME multi-part of it and the user's
    /// other kind of file.
    pub user_data: String,
    /// `network-config`: version 2, one entry per NIC matched by MAC.
    pub network_config: String,
}

impl Seed {
    /// The seed of `vm`, or `None` when cloud-init is off for it.
    ///
    /// Errors: the user's user-data file is not a `#cloud-config` mapping; a NIC names a
    /// network outside the lab.
    pub fn of(lab: &Lab, vm: &Vm) -> Result<Option<Seed>, GuestError> {
        let Some(ci) = &vm.cloud_init else { return Ok(None) };
        let user_data = user_data(ci)?;
        let network_config = to_yaml("network-config", &network_config(lab, vm)?)?;
        let instance_id = instance_id(lab, vm, &ci.hostname, &user_data, &network_config);
        let meta = serde_json::json!({ "instance-id": instance_id, "local-hostname": ci.hostname });
        let meta_data = to_yaml("meta-data", &meta)?;
        Ok(Some(Seed { instance_id, meta_data, user_data, network_config }))
    }

    /// The files in the order they are written to the image: `(name, text)`.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [("meta-data", &self.meta_data), ("user-data", &self.user_data), ("network-config", &self.network_config)]
    }

    /// The seed as a FAT image labelled `CIDATA` (see [`fat_image`]).
    pub fn image(&self) -> Result<Vec<u8>, GuestError> {
        Ok(fat_image(&self.files(), volume_id(&self.instance_id))?)
    }

    /// The seed volume's name: `<libvirt name>-cidata-<8 hex>.<lab tag>.img`. The hex
    /// digits come from the instance id, so changed seed data gives a new volume (and shows
    /// in the domain's disk list); the tag marks the volume as the lab's
    /// (`ownership::volume_name`), so an orphaned seed is found and deleted like an overlay.
    pub fn volume_name(&self, lab: &Lab, vm: &Vm) -> String {
        let hex = self.instance_id.trim_start_matches("iid-");
        let stem = format!("{}{SEED_MARK}{}", vm.libvirt_name, &hex[..8.min(hex.len())]);
        crate::ownership::volume_name(lab.name.as_str(), &stem, "img")
    }
}

/// What every seed volume name holds after the VM's libvirt name.
pub const SEED_MARK: &str = "-cidata-";

/// Whether volume `name` is a seed volume topo made (see [`Seed::volume_name`]).
pub fn is_seed_volume(name: &str) -> bool {
    name.contains(SEED_MARK) && name.ends_with(".img")
}

/// `iid-` + the first 16 hex digits of SHA-256("topo-seed-v1\0" + lab + "\0" + vm + "\0" +
/// hostname + "\0" + user-data + "\0" + network-config).
pub fn instance_id(lab: &Lab, vm: &Vm, hostname: &str, user_data: &str, network_config: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [b"topo-seed-v1".as_slice(), lab.name.as_str().as_bytes(), vm.name.as_str().as_bytes()] {
        h.update(part);
        h.update(b"\0");
    }
    h.update(hostname.as_bytes());
    h.update(b"\0");
    h.update(user_data.as_bytes());
    h.update(b"\0");
    h.update(network_config.as_bytes());
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("iid-{hex}")
}

/// The FAT volume serial number: the first 8 hex digits of the instance id.
fn volume_id(instance_id: &str) -> u32 {
    u32::from_str_radix(instance_id.trim_start_matches("iid-").get(..8).unwrap_or("0"), 16).unwrap_or(0)
}

/// YAML text of `v`, keys in insertion order. Strings that YAML 1.1 readers (cloud-init
/// uses PyYAML) would read as something else (`yes`, `52:54:00:12:34:56` as a base-60
/// number) are quoted by the serializer. Long one-line strings (SSH keys) stay on one line;
/// text with newlines is written as a literal block (`|`).
pub(crate) fn to_yaml(what: &'static str, v: &Value) -> Result<String, GuestError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 1 << 20 };
    serde_saphyr::to_string_with_options(v, options).map_err(|e| GuestError::Yaml { what, message: e.to_string() })
}

/// Largest SSH public key file topo reads (64 KiB: a `.pub` file is one line of at most a
/// few KiB, even for a 16384-bit RSA key; `authorized_keys`-style lists of many keys fit).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// The invoking user's public keys: every line of `<home>/.ssh/*.pub` (files in name order)
/// that holds a key. Each file is read with [`crate::files::read_bounded`] (regular files of
/// at most [`MAX_KEY_FILE`]); one that is not, or cannot be read, is skipped. This is the
/// default when a lab file names no key.
pub fn invoking_user_keys(home: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(home.join(".ssh")) else { return Vec::new() };
    let mut files: Vec<_> =
        dir.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "pub")).collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| crate::files::read_text_bounded(p, MAX_KEY_FILE).ok())
        .flat_map(|t| key_lines(&t))
        .collect()
}

/// The key lines of an OpenSSH public key file: trimmed, blank lines and `#` comments left out.
pub fn key_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// Key types OpenSSH's sshd accepts in authorized_keys (sshd(8), AUTHORIZED_KEYS FILE FORMAT).
pub const KEY_TYPES: [&str; 11] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-dss",
];

/// Checks one public key line: `<type> <base64> [comment]` with a type sshd knows, as
/// sshd(8) reads authorized_keys (leading options are not accepted here). Returns what is wrong.
pub fn check_public_key(line: &str) -> Result<(), String> {
    let mut parts = line.split_whitespace();
    let kind = parts.next().ok_or("is empty")?;
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "starts with {kind:?}, which is not an SSH key type (expected e.g. `ssh-ed25519 AAAA... comment`)"
        ));
    }
    let body = parts.next().ok_or("has a key type but no key")?;
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if !body.starts_with("AAAA") || !body.chars().all(base64) {
        return Err("has no base64 key after the key type".into());
    }
    if line.contains(['\n', '\r']) {
        return Err("spans several lines; give one key per entry".into());
    }
    Ok(())
}

/// The hostname a VM gets by default: its name with `_` turned into `-` (host names allow
/// letters, digits and `-` only, RFC 1123).
pub fn default_hostname(vm: &str) -> String {
    vm.replace('_', "-")
}

/// Checks a hostname: dot-separated labels of ASCII letters, digits and `-`, each 1-63
/// characters and not starting or ending with `-` (RFC 1123), at most 64 characters in all
/// (Linux HOST_NAME_MAX). Returns what is wrong.
pub fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("is empty".into());
    }
    if h.len() > 64 {
        return Err(format!("is {} characters long; Linux allows at most 64", h.len()));
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty label or one longer than 63 characters".into());
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!("contains {c:?}; host names use letters, digits and '-' only"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'".into());
        }
    }
    Ok(())
}

/// Checks a login user name as Debian's `useradd` does by default (NAME_REGEX
/// `^[a-z][-a-z0-9_]*$`, at most 32 characters). Returns what is wrong.
pub fn check_user_name(u: &str) -> Result<(), String> {
    let first = u.chars().next().ok_or("is empty")?;
    if u.len() > 32 {
        return Err(format!("is {} characters long; useradd allows at most 32", u.len()));
    }
    if !first.is_ascii_lowercase() {
        return Err("must start with a lowercase letter (useradd's rule)".into());
    }
    if let Some(c) = u.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))) {
        return Err(format!("contains {c:?}; user names use lowercase letters, digits, '-' and '_'"));
    }
    if u == "root" {
        return Err("is the superuser: topo creates its own login user, with passwordless sudo".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
