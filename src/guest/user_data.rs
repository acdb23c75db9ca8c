//! user-data: the `#cloud-config` topo generates (login user, keys, hostname), merged with
//! the user's own `#cloud-config` file, or put beside the user's other kind of user-data (a
//! script, an include list, their own MIME multi-part, ...) in a MIME multi-part document.

use serde_json::{Value, json};

use super::{GuestError, to_yaml};
use crate::lab::cloud_init_rules::{CLOUD_CONFIG_HEADER, UserDataKind, parse_user_file, user_data_kind};
use crate::lab::model::CloudInit;

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
