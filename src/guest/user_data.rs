//! user-data: the `#cloud-config` topo generates (login user, keys, hostname), merged with
//! the user's own `#cloud-config` file, or put beside the user's other kind of user-data (a
//! script, an include list, their own MIME multi-part, ...) in a MIME multi-part document.

use serde_json::{Map, Value, json};

use super::{GuestError, to_yaml};
use crate::lab::model::CloudInit;

/// The first line cloud-init needs to read user-data as cloud-config.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// What topo generates, before the merge: `hostname`, `manage_etc_hosts` and one user.
///
/// The user gets passwordless sudo, `/bin/bash`, a locked password (key-only login) and
/// the VM's keys. `users` lists only this user, so the image's default user (`debian`,
/// `ubuntu`) is not created.
fn generated(ci: &CloudInit) -> Value {
    json!({
        "hostname": ci.hostname,
        "manage_etc_hosts": true,
        "users": [{
            "name": ci.user,
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": true,
            "ssh_authorized_keys": ci.ssh_authorized_keys,
        }],
    })
}

/// What the user's own user-data file is, by its start, as cloud-init tells its kinds apart
/// (cloud-init 22.4, Debian 12: `INCLUSION_TYPES_MAP` in `cloudinit/handlers/__init__.py`
/// and the `mime-version:` test of `cloudinit/user_data.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserDataKind {
    /// `#cloud-config`: merged into topo's document (one `#cloud-config`).
    CloudConfig,
    /// Another kind cloud-init handles: a part of a MIME multi-part beside topo's
    /// `#cloud-config`, with this `Content-Type`.
    Part { content_type: &'static str },
    /// The user's own MIME message (`Content-Type:` or `MIME-Version:` first): put in whole
    /// as one part (its headers become the part's headers; cloud-init walks nested parts).
    Mime,
}

/// First-line prefixes and the content type cloud-init gives them, longest first where one
/// prefix starts another (`#include-once` before `#include`, `#cloud-config-archive` before
/// the plain `#cloud-config`, which is matched exactly before this table).
const PART_PREFIXES: [(&str, &str); 8] = [
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#!", "text/x-shellscript"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#part-handler", "text/part-handler"),
    ("## template: jinja", "text/jinja2"),
];

/// The first bytes of a gzip stream (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Tells what kind of user-data `text` is (see [`UserDataKind`]). Errors (a sentence that
/// follows the file's name) for what topo does not pass on: `#upstart-job` (its handler
/// writes an upstart job, and Debian and Ubuntu cloud images run systemd: it would never
/// run) and a start cloud-init does not recognise (cloud-init ignores such user-data).
pub fn user_data_kind(text: &str) -> Result<UserDataKind, String> {
    let first = text.lines().next().unwrap_or_default().trim_end();
    if first == CLOUD_CONFIG_HEADER {
        return Ok(UserDataKind::CloudConfig);
    }
    if let Some((_, content_type)) = PART_PREFIXES.iter().find(|(p, _)| first.starts_with(p)) {
        return Ok(UserDataKind::Part { content_type });
    }
    let lower = first.to_ascii_lowercase();
    if lower.starts_with("content-type:") || lower.starts_with("mime-version:") {
        return Ok(UserDataKind::Mime);
    }
    if first.starts_with("#upstart-job") {
        return Err("is an `#upstart-job`: cloud images run systemd, so cloud-init's upstart handler would \
                    never run it (use a `#!` script or `runcmd:`)"
            .into());
    }
    Err(format!(
        "starts with {first:?}, which cloud-init does not recognise as user-data (it would ignore the file): \
         start it with `#cloud-config`, `#!` (a script), `#include`, `#cloud-boothook`, `#part-handler`, \
         `#cloud-config-archive`, `## template: jinja` or MIME headers"
    ))
}

/// Parses the user's own user-data: the first line must be `#cloud-config`, the rest a
/// YAML mapping (an empty document counts as an empty mapping).
pub fn parse_user_file(text: &str) -> Result<Map<String, Value>, String> {
    let first = text.lines().next().unwrap_or_default().trim_end();
    if first != CLOUD_CONFIG_HEADER {
        return Err(format!("starts with {first:?}, not `{CLOUD_CONFIG_HEADER}`"));
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(format!("holds a YAML {}, not a mapping of cloud-config keys", kind(&other))),
    }
}

/// Checks the user's own user-data file as [`user_data`] will use it: a `#cloud-config`
/// must be a YAML mapping; the other kinds must be ones cloud-init handles
/// ([`user_data_kind`]). Returns what is wrong.
pub fn check_user_file(text: &str) -> Result<UserDataKind, String> {
    let kind = user_data_kind(text)?;
    if kind == UserDataKind::CloudConfig {
        let keys = parse_user_file(text)?;
        if let Some((key, why)) = IGNORED_KEYS.iter().find(|(k, _)| keys.contains_key(*k)) {
            let line = text
                .lines()
                .position(|l| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(':')))
                .map(|n| format!(" (line {})", n + 1))
                .unwrap_or_default();
            return Err(format!("has a top-level `{key}:` key{line}, which cloud-init ignores in user-data: {why}"));
        }
    }
    Ok(kind)
}

/// Top-level `#cloud-config` keys cloud-init reads from somewhere else, so in user-data they
/// are dropped without a word (cloud-init's schema only warns about keys it does not know),
/// with where they belong. `network`: cloud-init takes network configuration only from the
/// datasource (NoCloud's `network-config` file, which topo writes from the NICs) or
/// /etc/cloud/cloud.cfg.d, never from user-data (cloud-init docs, "Network configuration
/// sources"). `instance-id`, `local-hostname`: NoCloud meta-data keys (cloud-init
/// `DataSourceNoCloud`), which topo writes (the hostname from `cloud_init.hostname`).
pub const IGNORED_KEYS: [(&str, &str); 3] = [
    (
        "network",
        "network configuration comes only from the seed's network-config, which topo writes from the VM's `nics` \
         (set `ip:` on a NIC for a fixed address; docs/guests.md), so remove the key",
    ),
    ("instance-id", "it is a meta-data key, which topo writes; remove it"),
    ("local-hostname", "it is a meta-data key; set `hostname` under the VM's `cloud_init` instead"),
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

/// Merges `theirs` (the user's file) into `ours` (topo's): mappings merge key by key,
/// recursively; where both have a list, the user's items are appended after topo's (so a
/// `users:` or `runcmd:` of the user's adds to topo's); any other clash is won by the user's
/// value (e.g. their `hostname`). Keys keep their order: topo's first, then the user's new ones.
/// Done by topo (not by cloud-init's multi-part merging), so the seed holds one readable
/// document and the plan can show its diff.
pub fn merge(ours: &mut Value, theirs: Value) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

/// The user-data text of a VM: `#cloud-config`, then the merged mapping as YAML; or, when
/// the user's file is another kind ([`UserDataKind::Part`], [`UserDataKind::Mime`]), a MIME
/// multi-part holding topo's `#cloud-config` and then the user's file ([`multipart`]).
pub fn user_data(ci: &CloudInit) -> Result<String, GuestError> {
    let mut doc = generated(ci);
    let ours = |doc: &Value| -> Result<String, GuestError> {
        Ok(format!("{CLOUD_CONFIG_HEADER}\n{}", to_yaml("user-data", doc)?))
    };
    let Some(file) = &ci.user_data else { return ours(&doc) };
    let bad = |message| GuestError::UserData { path: file.path.display().to_string(), message };
    let part = match user_data_kind(&file.text).map_err(bad)? {
        UserDataKind::CloudConfig => {
            merge(&mut doc, Value::Object(parse_user_file(&file.text).map_err(bad)?));
            return ours(&doc);
        }
        UserDataKind::Part { content_type } => Part::Text { content_type, text: &file.text },
        UserDataKind::Mime => Part::Message(&file.text),
    };
    let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = ours(&doc)?;
    Ok(multipart(&[
        (Part::Text { content_type: "text/cloud-config", text: &text }, "topo-cloud-config"),
        (part, &name),
    ]))
}

/// One part of [`multipart`].
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    /// A text with its content type: headers are written for it.
    Text { content_type: &'static str, text: &'a str },
    /// A whole MIME message (headers, a blank line, a body): written as it is.
    Message(&'a str),
}

/// A MIME `multipart/mixed` message of `parts` (each with a file name), as cloud-init reads
/// multi-part user-data (it looks for `MIME-Version:` in the first 4096 characters, then
/// walks the parts, nested ones too, and hands each to the handler of its content type).
///
/// Deterministic: the boundary is `==topo-` + 16 hex digits of SHA-256 over the parts +
/// `==` (so it is in no part, and the same parts give the same bytes on every host); lines
/// end in `\n`, and each text keeps its last line break. An ASCII text is written as it is (`7bit`); a text with other characters
/// in base64 with `charset="utf-8"` (what cloud-init's own `make-mime` does: Python's
/// email parser would otherwise mangle them). File names keep `A-Z a-z 0-9 . _ -`, other
/// characters become `_`.
pub fn multipart(parts: &[(Part<'_>, &str)]) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut h = Sha256::new();
    for (p, name) in parts {
        match p {
            Part::Text { content_type, text } => h.update(format!("{content_type}\0{text}\0").as_bytes()),
            Part::Message(m) => h.update(format!("message\0{m}\0").as_bytes()),
        }
        h.update(name.as_bytes());
    }
    let digest: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let boundary = format!("==topo-{digest}==");
    let mut out = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    for (p, name) in parts {
        let _ = writeln!(out, "--{boundary}");
        match p {
            Part::Text { content_type, text } => {
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
                    .collect();
                let name = if name.is_empty() { "user-data".to_string() } else { name };
                let (charset, encoding, body) = if text.is_ascii() {
                    ("us-ascii", "7bit", text.to_string())
                } else {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                    let lines: Vec<&str> =
                        b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
                    ("utf-8", "base64", lines.join("\n"))
                };
                let _ = write!(
                    out,
                    "Content-Type: {content_type}; charset=\"{charset}\"\nMIME-Version: 1.0\n\
                     Content-Transfer-Encoding: {encoding}\nContent-Disposition: attachment; filename=\"{name}\"\n\n{body}"
                );
            }
            Part::Message(m) => out.push_str(m),
        }
        // The line break before a boundary belongs to the boundary (RFC 2046 5.1.1): one
        // more keeps a text's own last line break.
        if matches!(p, Part::Text { .. }) || !out.ends_with('\n') {
            out.push('\n');
        }
    }
    let _ = writeln!(out, "--{boundary}--");
    out
}
