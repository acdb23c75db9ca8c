//! Guests: the cloud-init NoCloud seed topo gives each cloud-image VM (meta-data, user-data,
//! network-config) and the FAT image that carries it.
//!
//! Everything here is pure: the seed of a VM depends only on the validated lab (with the
//! SSH keys filled in), so the same lab gives the same seed bytes on every host. The rules
//! are written down in docs/guests.md.

mod fat;
mod network;
mod user_data;

use std::path::Path;

use serde_json::Value;

use crate::lab::model::{Lab, Vm};

pub use fat::{SEED_LABEL, fat_image, read_fat_files};
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
        crate::lab::ownership::volume_name(lab.name.as_str(), &stem, "img")
    }
}

pub use crate::lab::ownership::SEED_MARK;

/// Whether volume `name` is a seed volume topo made (see [`Seed::volume_name`]).
pub fn is_seed_volume(name: &str) -> bool {
    name.contains(SEED_MARK) && name.ends_with(".img")
}

/// What a seed volume's name ends with while it is being uploaded (see [`partial_seed_name`]).
pub const PARTIAL_SUFFIX: &str = "-partial";

/// The name a seed is uploaded under before it gets its own: `<seed name>-partial`
/// (`…cidata-1a2b3c4d.<tag>.img-partial`). libvirt volumes cannot be renamed, and a stream
/// upload killed half-way leaves a volume of the full capacity with only part of the bytes
/// written, which nothing on the host tells from a whole one. So apply uploads here, then
/// has libvirtd copy the volume to the seed's own name (`virStorageVolCreateXMLFrom`: the copy
/// runs inside the daemon, a kill of topo does not cut it short) and deletes this one: a seed
/// volume under its own name is always complete. The name keeps the lab's tag
/// (`ownership::volume_owned_by` holds), so a leftover is planned for deletion with reason
/// `interrupted-upload`.
pub fn partial_seed_name(seed: &str) -> String {
    format!("{seed}{PARTIAL_SUFFIX}")
}

/// Whether volume `name` is a seed upload that has not got its own name ([`partial_seed_name`]).
pub fn is_partial_seed(name: &str) -> bool {
    name.strip_suffix(PARTIAL_SUFFIX).is_some_and(is_seed_volume)
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

/// Key types OpenSSH's sshd accepts in authorized_keys (sshd(8), AUTHORIZED_KEYS FILE
/// FORMAT: "sk-ecdsa-sha2-nistp256@openssh.com, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384,
/// ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, ssh-ed25519, ssh-dss or ssh-rsa"), and
/// their certificates (sshkey.c `keyimpl`, `*-cert-v01@openssh.com`, for `cert-authority`
/// lines' peers). `ssh-dss` is left out: sshd reads the line but has not accepted DSA keys
/// by default since OpenSSH 7.0 (`PubkeyAcceptedAlgorithms`), and 9.8 builds without DSA, so
/// the login would fail with no word why.
pub const KEY_TYPES: [&str; 14] = [
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
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

/// The options sshd(8) knows at the start of an authorized_keys line (AUTHORIZED_KEYS FILE
/// FORMAT; auth-options.c `sshauthopt_parse`), `true` for those that take `="value"`.
/// sshd skips a line with any other option ("bad key options"), so topo refuses it.
pub const KEY_OPTIONS: [(&str, bool); 22] = [
    ("agent-forwarding", false),
    ("cert-authority", false),
    ("command", true),
    ("environment", true),
    ("expiry-time", true),
    ("from", true),
    ("no-agent-forwarding", false),
    ("no-port-forwarding", false),
    ("no-pty", false),
    ("no-user-rc", false),
    ("no-x11-forwarding", false),
    ("permitlisten", true),
    ("permitopen", true),
    ("port-forwarding", false),
    ("principals", true),
    ("pty", false),
    ("no-touch-required", false),
    ("verify-required", false),
    ("restrict", false),
    ("tunnel", true),
    ("user-rc", false),
    ("x11-forwarding", false),
];

/// Splits the options field off an authorized_keys line as sshd(8) reads it: when the line
/// does not start with a key type, the options run to the first space or tab outside double
/// quotes (auth2-pubkeyfile.c `auth_check_authkey_line`). Returns (options, rest).
fn split_options(line: &str) -> Result<(Option<&str>, &str), String> {
    let first = line.split_whitespace().next().unwrap_or_default();
    if KEY_TYPES.contains(&first) || first == "ssh-dss" {
        return Ok((None, line));
    }
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Ok((Some(&line[..i]), line[i..].trim_start())),
            _ => {}
        }
    }
    if quoted {
        return Err("has an unclosed '\"' in its options".into());
    }
    Ok((Some(line), ""))
}

/// Checks the comma-separated options of an authorized_keys line against sshd(8)'s list
/// ([`KEY_OPTIONS`]; names are case-insensitive, values in double quotes).
fn check_options(options: &str) -> Result<(), String> {
    let mut rest = options;
    while !rest.is_empty() {
        let name_end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let Some(&(_, takes_value)) = KEY_OPTIONS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) else {
            if KEY_TYPES.iter().any(|t| name.starts_with(t)) || name.is_empty() {
                return Err("has options sshd cannot read".into());
            }
            return Err(format!(
                "starts with {name:?}, which is not an SSH key type (expected e.g. `ssh-ed25519 AAAA... comment`) nor an option sshd knows (`from=\"...\"`, `cert-authority`, `restrict`, `command=\"...\"`, ...)"
            ));
        };
        rest = &rest[name_end..];
        if let Some(v) = rest.strip_prefix('=') {
            if !takes_value {
                return Err(format!("gives option `{name}` a value; sshd's `{name}` takes none"));
            }
            let Some(body) = v.strip_prefix('"') else {
                return Err(format!(
                    "gives option `{name}` a value without double quotes; sshd reads `{name}=\"...\"`"
                ));
            };
            let Some(close) = body.find('"') else { return Err("has an unclosed '\"' in its options".into()) };
            rest = &body[close + 1..];
        } else if takes_value {
            return Err(format!("gives option `{name}` no value; sshd reads `{name}=\"...\"`"));
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err("has options sshd cannot read (a value must be followed by `,` or a space)".into()),
        }
    }
    Ok(())
}

/// Checks one authorized_keys line as sshd(8) reads it (AUTHORIZED_KEYS FILE FORMAT):
/// optional comma-separated options ([`KEY_OPTIONS`]), then `<type> <base64> [comment]` with
/// a type sshd accepts ([`KEY_TYPES`]), the base64 body decoding (padded, as sshd's
/// `b64_pton`) to a key blob whose own type string is the line's (sshkey.c
/// `sshkey_from_blob`: "key type mismatch"), an ssh-ed25519 body exactly 32 key bytes long.
/// sshd skips a line that fails any of these, so the login would fail. Returns what is wrong.
pub fn check_public_key(line: &str) -> Result<(), String> {
    use base64::Engine as _;
    if line.contains(['\n', '\r']) {
        return Err("spans several lines; give one key per entry".into());
    }
    if line.trim().is_empty() {
        return Err("is empty".into());
    }
    let (options, rest) = split_options(line.trim())?;
    if let Some(o) = options {
        check_options(o)?;
    }
    let mut parts = rest.split_whitespace();
    let kind = parts.next().ok_or("has no key after its options")?;
    if kind == "ssh-dss" {
        return Err("is a DSA key (`ssh-dss`): sshd has refused DSA keys by default since OpenSSH 7.0 \
                    (PubkeyAcceptedAlgorithms), so the login would fail; use an ed25519 key (`ssh-keygen -t ed25519`)"
            .into());
    }
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "starts with {kind:?}, which is not an SSH key type (expected e.g. `ssh-ed25519 AAAA... comment`)"
        ));
    }
    let body = parts.next().ok_or("has a key type but no key")?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "has no base64 key after the key type".to_owned())?;
    let len = blob.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let inner = len.and_then(|n| blob.get(4..4 + n));
    if inner != Some(kind.as_bytes()) {
        return Err(format!(
            "has a base64 key that is not a {kind} key (its blob names another type or is cut short); copy the whole line of the `.pub` file"
        ));
    }
    // string "ssh-ed25519", string key (32 bytes): RFC 8709 section 4.
    if kind == "ssh-ed25519" && blob.len() != 4 + kind.len() + 4 + 32 {
        return Err(
            "has an ssh-ed25519 key that is not 32 bytes long (RFC 8709); copy the whole line of the `.pub` file"
                .into(),
        );
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
    if SYSTEM_USERS.contains(&u) || u.starts_with("systemd-") {
        return Err("is a system account the image already has (Debian base-passwd, or a package of a cloud image): \
                    cloud-init skips creating an existing user (\"User ... already exists, skipping\") and its shell \
                    is nologin, so the SSH login would fail"
            .into());
    }
    Ok(())
}

/// System accounts a Debian or Ubuntu cloud image already has: Debian's base-passwd
/// (`/usr/share/base-passwd/passwd.master`) and those its packages add (`_apt`, openssh's
/// `sshd`, dbus's `messagebus`, `systemd-*`, chrony's `_chrony`, tpm's `tss`, Ubuntu's
/// `syslog`, `uuidd`, `landscape`, `pollinate`, `lxd`). cloud-init's `create_user` skips a
/// user that exists ("already exists, skipping") and then adds topo's keys and sudo rule to
/// it; its shell is `nologin` (or `/bin/sync`), so no one can log in.
pub const SYSTEM_USERS: [&str; 29] = [
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "_apt",
    "sshd",
    "messagebus",
    "_chrony",
    "tss",
    "syslog",
    "uuidd",
    "landscape",
    "pollinate",
    "lxd",
    "dnsmasq",
    "tcpdump",
];

#[cfg(test)]
mod tests;
