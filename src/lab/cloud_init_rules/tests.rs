//! The rules as the guest's tools apply them: sshd's authorized_keys lines, RFC 1123 host
//! names, useradd's user names, cloud-init's kinds of user-data and the keys it ignores.

use super::*;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtopoTestKeyNotARealOneXXXXXXXXXXXXXXXXXXXX user@host";

#[test]
fn user_data_kinds_as_cloud_init_tells_them() {
    use UserDataKind::*;
    for (first, want) in [
        ("#cloud-config", CloudConfig),
        ("#cloud-config  ", CloudConfig),
        ("#cloud-config-archive", Part { content_type: "text/cloud-config-archive" }),
        ("#cloud-config-jsonp", Part { content_type: "text/cloud-config-jsonp" }),
        ("#!/bin/bash", Part { content_type: "text/x-shellscript" }),
        ("#!/usr/bin/env python3", Part { content_type: "text/x-shellscript" }),
        ("#include", Part { content_type: "text/x-include-url" }),
        ("#include-once", Part { content_type: "text/x-include-once-url" }),
        ("#cloud-boothook", Part { content_type: "text/cloud-boothook" }),
        ("#part-handler", Part { content_type: "text/part-handler" }),
        ("## template: jinja", Part { content_type: "text/jinja2" }),
        ("Content-Type: multipart/mixed; boundary=\"b\"", Mime),
        ("MIME-Version: 1.0", Mime),
        ("content-type: text/x-shellscript", Mime),
    ] {
        assert_eq!(user_data_kind(&format!("{first}\nrest\n")), Ok(want), "{first}");
    }
    for (text, says) in [
        ("#upstart-job\n", "systemd"),
        ("echo hi\n", "does not recognise"),
        ("", "does not recognise"),
        ("# cloud-config\n", "does not recognise"),
    ] {
        let e = user_data_kind(text).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
    }
}

/// cloud-init reads network configuration only from the datasource (NoCloud's
/// network-config; docs "Network configuration sources"), and `instance-id` /
/// `local-hostname` only from meta-data: in user-data they are dropped silently, so refused,
/// with the line.
#[test]
fn user_data_keys_cloud_init_ignores() {
    let e = user_data::check_user_file("#cloud-config\npackages: [jq]\nnetwork:\n  version: 2\n").unwrap_err();
    assert!(e.contains("top-level `network:` key (line 3), which cloud-init ignores in user-data"), "{e}");
    assert!(e.contains("`ip:`"), "{e}");
    let e = user_data::check_user_file("#cloud-config\nlocal-hostname : x\n").unwrap_err();
    assert!(e.contains("`local-hostname:` key (line 2)") && e.contains("`hostname`"), "{e}");
    assert!(user_data::check_user_file("#cloud-config\nwrite_files: [{path: /n, content: 'network: 1'}]\n").is_ok());
}

#[test]
fn field_checks() {
    assert!(check_public_key(KEY).is_ok());
    assert!(check_public_key("ssh-ed25519").unwrap_err().contains("no key"));
    assert!(check_public_key("ssh-foo AAAA").unwrap_err().contains("not an SSH key type"));
    assert!(check_public_key("ssh-rsa notbase64!").unwrap_err().contains("base64"));
}

/// A key blob of type `kind` with `rest` after its type string, base64 (RFC 4253 6.6).
fn blob(kind: &str, rest: &[u8]) -> String {
    use base64::Engine as _;
    let mut b = (kind.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind.as_bytes());
    b.extend_from_slice(rest);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// sshd(8) AUTHORIZED_KEYS FILE FORMAT: options precede the key type (comma-separated, no
/// spaces outside double quotes; auth-options.c `sshauthopt_parse` refuses unknown ones),
/// the key types sshd accepts, and a base64 body whose blob names the line's type (sshkey.c
/// `sshkey_from_blob`); an ed25519 key is 32 bytes (RFC 8709).
#[test]
fn authorized_keys_lines_as_sshd_reads_them() {
    let ed = KEY.split_whitespace().nth(1).unwrap();
    for ok in [
        format!("from=\"10.0.0.0/8,192.168.1.*\" ssh-ed25519 {ed} c"),
        format!("cert-authority ssh-ed25519 {ed}"),
        format!("restrict,pty,command=\"echo a b\" ssh-ed25519 {ed} me@x"),
        format!("no-X11-forwarding,environment=\"A=b\",tunnel=\"0\"\tssh-ed25519 {ed}"),
        format!("ecdsa-sha2-nistp256 {} c", blob("ecdsa-sha2-nistp256", b"\0\0\0\x08nistp256")),
        format!("sk-ssh-ed25519@openssh.com {}", blob("sk-ssh-ed25519@openssh.com", &[0; 40])),
        format!("ssh-rsa {}", blob("ssh-rsa", &[0, 0, 0, 1, 3])),
    ] {
        assert_eq!(check_public_key(&ok), Ok(()), "{ok}");
    }
    let err = |l: String| check_public_key(&l).unwrap_err();
    assert!(err(format!("frum=\"x\" ssh-ed25519 {ed}")).contains("nor an option sshd knows"));
    assert!(err(format!("from=x ssh-ed25519 {ed}")).contains("without double quotes"));
    assert!(err(format!("from=\"x ssh-ed25519 {ed}")).contains("unclosed"));
    assert!(err(format!("from ssh-ed25519 {ed}")).contains("no value"));
    assert!(err(format!("no-pty=\"1\" ssh-ed25519 {ed}")).contains("takes none"));
    assert!(err("cert-authority".into()).contains("no key after its options"));
    assert!(err(format!("ssh-dss {}", blob("ssh-dss", &[0; 8]))).contains("DSA"));
    assert!(err(format!("ssh-rsa {ed}")).contains("not a ssh-rsa key"));
    assert!(err("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5".into()).contains("not 32 bytes"));
    assert!(err("ssh-ed25519 AAAAC3NzaC1lZDI1NTE".into()).contains("base64"), "unpadded: b64_pton refuses it");
    assert!(err(format!("ssh-ed25519 {ed}\nssh-ed25519 {ed}")).contains("several lines"));
    assert!(check_hostname("deb1").is_ok());
    assert!(check_hostname("deb1.lab.example").is_ok());
    assert!(check_hostname("db_1").unwrap_err().contains("'_'"));
    assert!(check_hostname("-a").is_err());
    assert!(check_hostname(&"a".repeat(65)).is_err());
    assert!(check_user_name("topo").is_ok());
    assert!(check_user_name("Topo").is_err());
    assert!(check_user_name("root").is_err());
    // cloud-init skips an existing user and the image's system accounts have no login shell.
    assert!(check_user_name("daemon").unwrap_err().contains("already exists, skipping"));
    assert!(check_user_name("systemd-network").is_err());
    assert!(check_user_name("sshd").is_err());
    assert!(check_user_name("a b").is_err());
    assert!(check_user_name(&"a".repeat(33)).is_err());
}
