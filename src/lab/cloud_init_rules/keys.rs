//! SSH public keys as OpenSSH's sshd reads them in authorized_keys (sshd(8), AUTHORIZED_KEYS
//! FILE FORMAT): the key types and options it accepts, and the key files topo reads them from.

/// Largest SSH public key file topo reads (64 KiB: a `.pub` file is one line of at most a
/// few KiB, even for a 16384-bit RSA key; `authorized_keys`-style lists of many keys fit).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

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
