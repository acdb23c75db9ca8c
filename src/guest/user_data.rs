//! user-data: the `#cloud-config` topo generates (login user, keys, hostname), merged with
//! the user's own `#cloud-config` file.

use serde_json::{Map, Value, json};

use super::{GuestError, to_yaml};
use crate::model::CloudInit;

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

/// Parses the user's own user-data: the first line must be `#cloud-config`, the rest a
/// YAML mapping (an empty document counts as an empty mapping).
pub fn parse_user_file(text: &str) -> Result<Map<String, Value>, String> {
    let first = text.lines().next().unwrap_or_default().trim_end();
    if first != CLOUD_CONFIG_HEADER {
        return Err(format!(
            "starts with {first:?}, not `{CLOUD_CONFIG_HEADER}`: topo merges cloud-config files only \
             (a shell script can go under `runcmd:` in a #cloud-config file)"
        ));
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("is not valid YAML: {e}"))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(format!("holds a YAML {}, not a mapping of cloud-config keys", kind(&other))),
    }
}

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

/// The user-data text of a VM: `#cloud-config`, then the merged mapping as YAML.
pub fn user_data(ci: &CloudInit) -> Result<String, GuestError> {
    let mut doc = generated(ci);
    if let Some(file) = &ci.user_data {
        let theirs = parse_user_file(&file.text)
            .map_err(|message| GuestError::UserData { path: file.path.display().to_string(), message })?;
        merge(&mut doc, Value::Object(theirs));
    }
    Ok(format!("{CLOUD_CONFIG_HEADER}\n{}", to_yaml("user-data", &doc)?))
}
