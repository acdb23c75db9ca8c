//! The rules of the guest's own tools that a lab's `cloud_init` section must meet: host names
//! (RFC 1123, Linux), login user names (Debian's `useradd`, the image's system accounts), SSH
//! keys (OpenSSH's sshd, in [`keys`]) and the user's own user-data (cloud-init, in
//! [`user_data`]). Validation checks a lab against them; `guest` writes the seed by them.

pub mod keys;
pub mod user_data;

pub use keys::{KEY_OPTIONS, KEY_TYPES, MAX_KEY_FILE, check_public_key, key_lines};
pub use user_data::{
    CLOUD_CONFIG_HEADER, GZIP_MAGIC, IGNORED_KEYS, UserDataKind, check_user_file, parse_user_file, user_data_kind,
};

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
