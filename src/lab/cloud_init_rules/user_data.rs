//! The user's own user-data file as cloud-init tells its kinds apart, and the
//! `#cloud-config` keys cloud-init ignores in user-data.

use serde_json::{Map, Value};

/// The first line cloud-init needs to read user-data as cloud-config.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

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
