//! Seed generation: snapshots of every case (DHCP, static, several NICs, no key, user-data
//! merge, a script or a MIME file beside topo's cloud-config) and the rules behind them.

use std::path::{Path, PathBuf};

use super::*;
use crate::lab::cloud_init_rules::default_hostname;
use crate::lab::model::{CloudInit, DEFAULT_USER, Lab, UserData};
use crate::lab::source::SourceFile;
use crate::verify::inventory::Inventory;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtopoTestKeyNotARealOneXXXXXXXXXXXXXXXXXXXX user@host";

/// The seed lab of docs/guests.md: `default` (external NAT), `local_net` (isolated, DHCP),
/// `static_net` (routed, no DHCP), `plain` (no subnet).
fn lab() -> Lab {
    let text = "apiVersion: topo/v1
name: seedlab
networks:
  default: {external: true}
  local_net: {mode: isolated, subnet: 192.168.152.0/24}
  static_net: {mode: routed, subnet: 10.20.0.0/24, dhcp: false}
  plain: {mode: isolated}
vms:
  deb1:
    boot: {kernel: KERNEL}
    nics: [{network: default}, {network: local_net}]
  deb2:
    boot: {kernel: KERNEL}
    nics: [{network: local_net, ip: 192.168.152.20}]
  deb3:
    boot: {kernel: KERNEL}
    nics: [{network: local_net}, {network: static_net, ip: 10.20.0.30}, {network: plain, verify: none}]
  db_1:
    boot: {kernel: KERNEL}
    nics: [{network: static_net, ip: 10.20.0.40}]
"
    .replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let mut lab =
        crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/lab.yaml"), text)).expect("valid lab");
    for vm in lab.vms.values_mut() {
        vm.cloud_init = Some(cloud_init(vm.name.as_str(), vec![KEY.to_string()]));
    }
    lab
}

fn cloud_init(vm: &str, keys: Vec<String>) -> CloudInit {
    CloudInit {
        user: DEFAULT_USER.into(),
        ssh_authorized_keys: keys,
        default_keys: false,
        hostname: default_hostname(vm),
        user_data: None,
    }
}

fn seed(lab: &Lab, vm: &str) -> Seed {
    let vm = lab.vms.values().find(|v| v.name.as_str() == vm).expect("vm in lab");
    Seed::of(lab, vm).expect("seed").expect("cloud-init on")
}

fn show(s: &Seed) -> String {
    s.files().iter().map(|(n, t)| format!("--- {n}\n{t}")).collect()
}

#[test]
fn dhcp_on_two_networks() {
    insta::assert_snapshot!(show(&seed(&lab(), "deb1")));
}

/// Two NICs that get a default route by DHCP would each install one (the guest then uses
/// whichever link came up first): the first in `nics` order gets route metric 100, the next
/// 200, as `dhcp4-overrides: {route-metric}`, the one override cloud-init 22.4's v2 reader
/// keeps for every renderer (network_state.py `_v2_to_v1_ipcfg`; eni.py writes it as
/// `metric`). A DHCP NIC on an isolated network gets no router from libvirt's dnsmasq and
/// no metric; a VM with one routed DHCP NIC keeps the plain `dhcp4: true`.
#[test]
fn one_default_route_among_dhcp_nics() {
    let text = "apiVersion: topo/v1\nname: r\nnetworks:\n  default: {external: true}\n  nat: {mode: nat, subnet: 10.30.0.0/24}\n  iso: {mode: isolated, subnet: 10.31.0.0/24}\nvms:\n  a:\n    boot: {kernel: KERNEL}\n    nics: [{network: iso}, {network: nat}, {network: default}]\n  b:\n    boot: {kernel: KERNEL}\n    nics: [{network: iso}, {network: nat}]\n"
        .replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let lab = crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/r.yaml"), text)).expect("valid lab");
    let vm = |n: &str| lab.vms.values().find(|v| v.name.as_str() == n).unwrap();
    let nc = network::network_config(&lab, vm("a")).unwrap();
    let e = &nc["ethernets"];
    assert_eq!(e["eth0"].get("dhcp4-overrides"), None);
    assert_eq!(e["eth1"]["dhcp4-overrides"], serde_json::json!({"route-metric": 100}));
    assert_eq!(e["eth2"]["dhcp4-overrides"], serde_json::json!({"route-metric": 200}));
    let nc = network::network_config(&lab, vm("b")).unwrap();
    assert!(nc["ethernets"].as_object().unwrap().values().all(|e| e.get("dhcp4-overrides").is_none()), "{nc}");
}

/// A NIC on a network with `subnet6` gets `accept-ra: true` and its address (netplan v2) beside its IPv4
/// settings, unchanged: DHCPv4 on a network with both, link only (plus RAs) on an IPv6-only
/// one; a NIC on a network without `subnet6` has no `accept-ra` key (docs/addressing.md,
/// section IPv6).
#[test]
fn accept_ra_on_networks_with_subnet6() {
    let text = "apiVersion: topo/v1\nname: r\nnetworks:\n  both: {subnet: 10.30.0.0/24, subnet6: fd00:30::/64}\n  v6: {mode: isolated, subnet6: fd00:31::/64}\n  v4: {mode: isolated, subnet: 10.32.0.0/24}\nvms:\n  a:\n    boot: {kernel: KERNEL}\n    nics: [{network: both}, {network: v6}, {network: v4}]\n"
        .replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let lab = crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/r.yaml"), text)).expect("valid lab");
    let vm = lab.vms.values().next().expect("one vm");
    let nc = network::network_config(&lab, vm).expect("network-config");
    let e = &nc["ethernets"];
    assert_eq!((&e["eth0"]["accept-ra"], &e["eth0"]["dhcp4"]), (&serde_json::json!(true), &serde_json::json!(true)));
    assert_eq!((&e["eth1"]["accept-ra"], &e["eth1"]["dhcp4"]), (&serde_json::json!(true), &serde_json::json!(false)));
    assert_eq!(e["eth2"].get("accept-ra"), None);
    // Each IPv6 NIC's SLAAC address is written (an IPv6-only NIC with no address would stay
    // down under Debian's eni renderer); an IPv4-only NIC gets none.
    let a6 = |i: usize, p: &str| {
        let mac = vm.nics[i].mac;
        format!("{}/64", crate::lab::ipv6::slaac_address(p.parse().unwrap(), mac))
    };
    assert_eq!(e["eth0"]["addresses"], serde_json::json!([a6(0, "fd00:30::/64")]));
    assert_eq!(e["eth1"]["addresses"], serde_json::json!([a6(1, "fd00:31::/64")]));
    assert_eq!(e["eth2"].get("addresses"), None);
}

/// A static IPv4 NIC on a dual-stack network: both addresses, IPv4 first.
#[test]
fn static_ipv4_and_ipv6_on_one_nic() {
    let text = "apiVersion: topo/v1\nname: r\nnetworks:\n  both: {mode: isolated, subnet: 10.30.0.0/24, subnet6: fd00:30::/64, dhcp: false}\nvms:\n  a:\n    boot: {kernel: KERNEL}\n    nics: [{network: both, ip: 10.30.0.7}]\n"
        .replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let lab = crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/r.yaml"), text)).expect("valid lab");
    let vm = lab.vms.values().next().expect("one vm");
    let nc = network::network_config(&lab, vm).expect("network-config");
    let six = crate::lab::ipv6::slaac_address("fd00:30::/64".parse().unwrap(), vm.nics[0].mac);
    assert_eq!(nc["ethernets"]["eth0"]["addresses"], serde_json::json!(["10.30.0.7/24", format!("{six}/64")]));
    assert_eq!(nc["ethernets"]["eth0"]["accept-ra"], serde_json::json!(true));
}

#[test]
fn reservation_on_a_dhcp_network_is_still_dhcp() {
    insta::assert_snapshot!(seed(&lab(), "deb2").network_config);
}

#[test]
fn static_beside_dhcp_and_a_plain_link() {
    // The isolated DHCP network gives no default route, so the routed static NIC takes the gateway.
    insta::assert_snapshot!(seed(&lab(), "deb3").network_config);
}

#[test]
fn static_only_with_gateway_and_dns() {
    // `db_1`: the hostname turns `_` into `-`.
    insta::assert_snapshot!(show(&seed(&lab(), "db_1")));
}

#[test]
fn no_key() {
    let mut lab = lab();
    for vm in lab.vms.values_mut() {
        vm.cloud_init = Some(cloud_init(vm.name.as_str(), vec![]));
    }
    insta::assert_snapshot!(seed(&lab, "deb2").user_data);
}

#[test]
fn user_data_merge() {
    let mut lab = lab();
    let own = "#cloud-config
# the user's own file
packages: [tcpdump, 'yes']
runcmd:
  - [touch, /tmp/hello]
users:
  - name: alice
    groups: [adm]
hostname: custom
write_files:
  - path: /etc/motd
    content: |
      lab machine
";
    let ci = lab.vms.values_mut().next().and_then(|v| v.cloud_init.as_mut()).unwrap();
    ci.user_data = Some(UserData { path: PathBuf::from("/labs/own.yaml"), text: own.into() });
    insta::assert_snapshot!(seed(&lab, "db_1").user_data);
}

#[test]
fn merge_rule() {
    let mut ours = serde_json::json!({"a": {"x": 1, "l": [1]}, "b": [1], "c": "topo"});
    merge(&mut ours, serde_json::json!({"a": {"y": 2, "l": [2]}, "b": [2], "c": "user", "d": null}));
    assert_eq!(ours, serde_json::json!({"a": {"x": 1, "l": [1, 2], "y": 2}, "b": [1, 2], "c": "user", "d": null}));
}

/// A shell script: a MIME multi-part of topo's `#cloud-config` (not merged) and the script.
#[test]
fn user_data_script_beside_topos_cloud_config() {
    let mut lab = lab();
    let ci = lab.vms.values_mut().next().and_then(|v| v.cloud_init.as_mut()).unwrap();
    ci.user_data = Some(UserData {
        path: PathBuf::from("/labs/set up \"lab\".sh"),
        text: "#!/bin/sh\necho ready > /etc/motd\n".into(),
    });
    let text = seed(&lab, "db_1").user_data;
    insta::assert_snapshot!(text);
    assert!(text[..4096.min(text.len())].to_ascii_lowercase().contains("mime-version:"), "cloud-init's MIME test");
    assert_eq!(seed(&lab, "db_1").user_data, text, "byte-identical on every run");
}

/// The user's own MIME message goes in whole as one part; a non-ASCII text is base64.
#[test]
fn user_data_mime_and_non_ascii() {
    let mut lab = lab();
    let own = "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\n\
               Content-Type: text/x-shellscript\n\n#!/bin/sh\ntrue\n--XX--\n";
    let ci = lab.vms.values_mut().next().and_then(|v| v.cloud_init.as_mut()).unwrap();
    ci.user_data = Some(UserData { path: PathBuf::from("/labs/own.mime"), text: own.into() });
    let text = seed(&lab, "db_1").user_data;
    assert!(text.contains(&format!("==\n{own}--==topo-")), "the user's message as it is:\n{text}");
    let parts = multipart(&[(Part::Text { content_type: "text/x-shellscript", text: "#!/bin/sh\necho é\n" }, "é.sh")]);
    insta::assert_snapshot!("user_data_non_ascii_part", parts);
}

#[test]
fn user_file_must_be_cloud_config_mapping() {
    let lab = lab();
    let mut vm = lab.vms.values().next().unwrap().clone();
    for (text, says) in [
        ("hello\n", "does not recognise"),
        ("#cloud-config\n- a\n- b\n", "list"),
        ("#cloud-config\na: [\n", "not valid YAML"),
    ] {
        let ci = vm.cloud_init.as_mut().unwrap();
        ci.user_data = Some(UserData { path: "/u".into(), text: text.into() });
        let err = Seed::of(&lab, &vm).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn same_lab_same_bytes_and_any_change_changes_the_instance() {
    let (a, b) = (lab(), lab());
    let (sa, sb) = (seed(&a, "deb1"), seed(&b, "deb1"));
    assert_eq!(sa, sb);
    assert_eq!(sa.image().unwrap(), sb.image().unwrap());
    let vm = a.vms.values().find(|v| v.name.as_str() == "deb1").unwrap();
    let name = sa.volume_name(&a, vm).to_string();
    assert!(name.starts_with(&format!("seedlab-deb1-cidata-{}.", &sa.instance_id[4..12])), "{name}");
    assert!(is_seed_volume(&name) && crate::lab::ownership::volume_owned_by("seedlab", &name), "{name}");

    let mut c = lab();
    let vm = c.vms.values_mut().find(|v| v.name.as_str() == "deb1").unwrap();
    vm.cloud_init.as_mut().unwrap().user = "bob".into();
    assert_ne!(seed(&c, "deb1").instance_id, sa.instance_id, "user-data changed");
    let mut d = lab();
    let vm = d.vms.values_mut().find(|v| v.name.as_str() == "deb1").unwrap();
    vm.nics.swap(0, 1);
    assert_ne!(seed(&d, "deb1").instance_id, sa.instance_id, "network-config changed");
}

#[test]
fn cloud_init_off_means_no_seed() {
    let mut lab = lab();
    let vm = lab.vms.values_mut().next().unwrap();
    vm.cloud_init = None;
    let vm = vm.clone();
    assert_eq!(Seed::of(&lab, &vm).unwrap(), None);
}

#[test]
fn yaml_1_1_readers_get_strings() {
    // PyYAML (YAML 1.1) reads an unquoted 52:54:00:12:34:56 as a base-60 integer and `yes`
    // as true: both must come out quoted.
    let text = to_yaml("t", &serde_json::json!({"mac": "52:54:00:12:34:56", "w": "yes", "n": "0755"})).unwrap();
    for line in text.lines() {
        let value = line.split_once(": ").map(|(_, v)| v).unwrap_or_default();
        assert!(value.starts_with('"') || value.starts_with('\''), "unquoted: {line}");
    }
}

#[test]
fn keys_from_the_invoking_users_ssh_folder() {
    let home = tempfile::tempdir().unwrap();
    assert!(invoking_user_keys(home.path()).is_empty(), "no ~/.ssh: no keys");
    let ssh = home.path().join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    std::fs::write(ssh.join("id_rsa.pub"), "ssh-rsa AAAAB3Nza rsa@host\n").unwrap();
    std::fs::write(ssh.join("id_ed25519.pub"), format!("# comment\n\n{KEY}\n")).unwrap();
    std::fs::write(ssh.join("id_ed25519"), "PRIVATE").unwrap();
    assert_eq!(invoking_user_keys(home.path()), vec![KEY.to_string(), "ssh-rsa AAAAB3Nza rsa@host".to_string()]);
}

#[test]
fn use_default_keys_fills_only_unset_vms() {
    let mut lab = lab();
    for vm in lab.vms.values_mut() {
        let ci = vm.cloud_init.as_mut().unwrap();
        if vm.name.as_str() != "deb1" {
            ci.ssh_authorized_keys.clear();
            ci.default_keys = vm.name.as_str() == "deb2";
        }
    }
    let keyless = lab.use_default_keys(&["ssh-ed25519 AAAAdefault".into()]);
    let names: Vec<&str> = keyless.iter().map(|v| v.as_str()).collect();
    assert_eq!(names, ["db_1", "deb3"]);
    let keys = |n: &str| lab.vms.values().find(|v| v.name.as_str() == n).unwrap().cloud_init.clone().unwrap();
    assert_eq!(keys("deb1").ssh_authorized_keys, [KEY]);
    assert_eq!(keys("deb2").ssh_authorized_keys, ["ssh-ed25519 AAAAdefault"]);
}

/// A verification report over `lab()`: deb1 both NICs verified, deb2 verified, deb3 eth0 and
/// the static eth1 verified and eth2 skipped, db_1 failed.
fn report(lab: &Lab) -> crate::verify::VerifyReport {
    use crate::verify::{Evidence, FailReason, NicOutcome, NicState, NicTarget};
    let ip = |s: &str| s.parse().unwrap();
    let proven = [
        ("deb1", "eth0", "192.168.122.57"),
        ("deb1", "eth1", "192.168.152.2"),
        ("deb2", "eth0", "192.168.152.20"),
        ("deb3", "eth0", "192.168.152.3"),
        ("deb3", "eth1", "10.20.0.30"),
    ];
    let nics = lab
        .nics()
        .map(|(vm, nic)| {
            let net = &lab.networks[&nic.network];
            let target = NicTarget::from_model(vm, nic, net, None, true, crate::verify::HostAccess::Local);
            let state = match proven.iter().find(|(v, n, _)| *v == vm.name.as_str() && *n == nic.label()) {
                Some((_, _, a)) => NicState::Verified {
                    ip: ip(a),
                    evidence: Evidence { mac: nic.mac, bridge: "virbr1".into(), ndp: false },
                    seconds: 1.0,
                    rtt_ms: None,
                },
                None if nic.verify == crate::lab::model::Verify::None => NicState::Skipped,
                None => NicState::Failed { reason: FailReason::NoDhcpNoReservation },
            };
            NicOutcome { target, state }
        })
        .collect();
    crate::verify::VerifyReport { nics, ready: Vec::new() }
}

fn inventory() -> Inventory {
    let mut lab = lab();
    let vm = lab.vms.values_mut().find(|v| v.name.as_str() == "deb3").unwrap();
    vm.cloud_init.as_mut().unwrap().hostname = "deb3.lab.example".into();
    lab.vms.values_mut().find(|v| v.name.as_str() == "deb2").unwrap().cloud_init = None;
    let r = report(&lab);
    let mut inv = Inventory::new(&lab, &r);
    let aliases = lab
        .vms
        .values()
        .map(|vm| {
            (
                vm.name.to_string(),
                crate::verify::known_hosts::alias(vm.libvirt_name.as_str(), "00000000-0000-4000-8000-000000000001"),
            )
        })
        .collect();
    inv.pin_host_keys("/home/u/.local/state/topo/known_hosts/lab-0123456789ab".into(), &aliases);
    inv
}

#[test]
fn inventory_ssh_config() {
    insta::assert_snapshot!(inventory().ssh_config());
}

#[test]
fn inventory_hosts() {
    insta::assert_snapshot!(inventory().hosts());
}

#[test]
fn inventory_ansible() {
    insta::assert_snapshot!(inventory().ansible().unwrap());
}

#[test]
fn inventory_json() {
    insta::assert_snapshot!(inventory().json());
}

/// On a libvirt host reached over ssh, the VMs' addresses are on that host's networks: ssh
/// jumps through it (the URI's `[user@]host[:port]`, which libvirt's own ssh reaches), in
/// `topo ssh`'s arguments, the ssh_config and the Ansible inventory alike; never for a local
/// or a TCP/TLS URI.
#[test]
fn a_remote_ssh_host_is_the_jump_host() {
    use crate::verify::inventory::jump_host;
    assert_eq!(jump_host("qemu+ssh://root@h1/system?keyfile=/k&no_verify=1").as_deref(), Some("root@h1"));
    assert_eq!(jump_host("qemu+libssh2://admin@10.0.0.5:2222/system").as_deref(), Some("admin@10.0.0.5:2222"));
    assert_eq!(jump_host("qemu+ssh://h2/session").as_deref(), Some("h2"));
    for none in
        ["qemu:///system", "qemu+tcp://h1/system", "qemu+tls://h1/system", "test:///default", "qemu+ssh:///system"]
    {
        assert_eq!(jump_host(none), None, "{none}");
    }
    let mut inv = inventory();
    inv.jump_through(|_, _| jump_host("qemu+ssh://root@h1/system"));
    let h = inv.host("deb1").unwrap();
    assert!(inv.ssh_args(h, h.address.unwrap()).join(" ").contains("-o ProxyJump=root@h1"));
    assert!(inv.ssh_config().contains("\n  ProxyJump root@h1\n"), "{}", inv.ssh_config());
    assert!(inv.ansible().unwrap().contains("ProxyJump=root@h1"));
    assert!(!inventory().ssh_config().contains("ProxyJump"));
}

/// Host keys are pinned in the lab's own file under the VM's alias, accepted on first
/// contact and checked after (ssh_config(5) StrictHostKeyChecking=accept-new), never turned off.
#[test]
fn ssh_args_use_the_user_and_pin_the_host_key() {
    let inv = inventory();
    let h = inv.host("deb1").unwrap();
    let args = inv.ssh_args(h, h.address.unwrap()).join(" ");
    assert_eq!(
        args,
        "-o UserKnownHostsFile=/home/u/.local/state/topo/known_hosts/lab-0123456789ab \
         -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=accept-new \
         -o HostKeyAlias=seedlab-deb1.00000000-0000-4000-8000-000000000001 -o HashKnownHosts=no \
         -o LogLevel=ERROR -o ConnectionAttempts=180 -l topo 192.168.122.57"
    );
    assert!(!args.contains("StrictHostKeyChecking=no"), "{args}");
    let h = inv.host("deb2").unwrap();
    assert!(!inv.ssh_args(h, h.address.unwrap()).contains(&"-l".to_string()), "no cloud-init: no user");
}

/// A lab across a local host (h1) and one reached over ssh (h2), every NIC proven: each VM
/// is reached through the host that serves the network of its login address (g3, on `wan`
/// served by h2, jumps through h2; g2, on h2 but logging in on `lan` served by h1, and g1 are
/// reached directly from h1: the bridge of `lan` has no address on h2), its key pinned in
/// the lab's file for its own host, and the VM's host is named in the JSON and Ansible.
#[test]
fn inventory_across_a_local_and_a_remote_host() {
    use crate::verify::inventory::jump_host;
    use crate::verify::{Evidence, NicOutcome, NicState, NicTarget};
    let text = "apiVersion: topo/v1
name: mh
hosts:
  h1: {uri: \"qemu:///system\", underlay: 10.77.0.11}
  h2: {uri: \"qemu+ssh://root@h2/system\", underlay: 10.77.0.12}
networks:
  lan: {mode: isolated, subnet: 10.10.0.0/24}
  wan: {mode: nat, subnet: 10.20.0.0/24, host: h2}
vms:
  g1: {boot: {kernel: KERNEL}, nics: [{network: lan}]}
  g2:
    host: h2
    boot: {kernel: KERNEL}
    nics: [{network: lan, ip: 10.10.0.20}, {network: wan}]
  g3:
    host: h2
    boot: {kernel: KERNEL}
    nics: [{network: wan}]
"
    .replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let mut lab =
        crate::lab::validate::load(&SourceFile::from_text(Path::new("/labs/mh.yaml"), text)).expect("valid lab");
    for vm in lab.vms.values_mut() {
        vm.cloud_init = Some(cloud_init(vm.name.as_str(), vec![KEY.to_string()]));
    }
    let ips = [
        ("g1", "eth0", "10.10.0.57"),
        ("g2", "eth0", "10.10.0.20"),
        ("g2", "eth1", "10.20.0.33"),
        ("g3", "eth0", "10.20.0.34"),
    ];
    let nics = lab
        .nics()
        .map(|(vm, nic)| {
            let net = &lab.networks[&nic.network];
            let mut target = NicTarget::from_model(vm, nic, net, None, true, crate::verify::HostAccess::Local);
            target.host = Some(vm.host.clone());
            let (_, _, ip) = ips.iter().find(|(v, n, _)| *v == vm.name.as_str() && *n == nic.label()).unwrap();
            let state = NicState::Verified {
                ip: ip.parse().unwrap(),
                evidence: Evidence { mac: nic.mac, bridge: "topobr0".into(), ndp: false },
                seconds: 1.0,
                rtt_ms: None,
            };
            NicOutcome { target, state }
        })
        .collect();
    let mut inv = Inventory::new(&lab, &crate::verify::VerifyReport { nics, ready: Vec::new() });
    let uris: std::collections::BTreeMap<String, String> =
        lab.hosts.iter().map(|(n, h)| (n.to_string(), h.uri.clone())).collect();
    inv.jump_through(|vm, nic| Inventory::reached_from(&lab, vm, nic).and_then(|via| jump_host(&uris[&via])));
    for host in ["h1", "h2"] {
        let aliases = lab
            .vms
            .values()
            .filter(|vm| vm.host.as_str() == host)
            .map(|vm| {
                let alias =
                    crate::verify::known_hosts::alias(vm.libvirt_name.as_str(), "00000000-0000-4000-8000-00000000000a");
                (vm.name.to_string(), alias)
            })
            .collect();
        inv.pin_host_keys(format!("/home/u/.local/state/topo/known_hosts/mh-{host}digest").into(), &aliases);
    }
    let ssh_config = inv.ssh_config();
    let g1 = ssh_config.split("\nHost ").find(|b| b.starts_with("g1\n")).unwrap();
    let g2 = ssh_config.split("\nHost ").find(|b| b.starts_with("g2\n")).unwrap();
    let g3 = ssh_config.split("\nHost ").find(|b| b.starts_with("g3\n")).unwrap();
    assert!(!g1.contains("ProxyJump") && g1.contains("mh-h1digest"), "{g1}");
    assert!(!g2.contains("ProxyJump") && g2.contains("mh-h2digest"), "{g2}");
    assert!(g3.contains("\n  ProxyJump root@h2\n") && g3.contains("mh-h2digest"), "{g3}");
    let h = inv.host("g3").unwrap();
    assert!(inv.ssh_args(h, h.address.unwrap()).join(" ").contains("-o ProxyJump=root@h2"));
    // g2's wan address is h2's network's: that entry jumps through h2, its lan one does not.
    let h = inv.host("g2").unwrap();
    assert!(inv.ssh_args(h, "10.20.0.33".parse().unwrap()).join(" ").contains("-o ProxyJump=root@h2"));
    assert!(!inv.ssh_args(h, "10.10.0.20".parse().unwrap()).join(" ").contains("ProxyJump"));
    let g2_eth1 = ssh_config.split("\nHost ").find(|b| b.starts_with("g2-eth1\n")).unwrap();
    assert!(g2_eth1.contains("\n  ProxyJump root@h2\n"), "{g2_eth1}");
    let h = inv.host("g1").unwrap();
    assert!(!inv.ssh_args(h, h.address.unwrap()).join(" ").contains("ProxyJump"));
    insta::assert_snapshot!(format!(
        "{ssh_config}\n---- hosts\n{}\n---- ansible\n{}\n---- json\n{}",
        inv.hosts(),
        inv.ansible().unwrap(),
        inv.json()
    ));
}

/// A guest on a host that holds a stretched network without serving it (a bare bridge
/// there, DHCP served across the tunnel by the serving host) is told to ask for DHCP, as a
/// guest on the serving host is: its network-config follows the network as served, not the
/// bridge of its own host (found with a cloud-init guest on the multi-host harness, which
/// came up with `dhcp4: false` and no address).
#[test]
fn a_guest_on_a_host_that_does_not_serve_its_network_asks_for_dhcp() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/valid/multihost.yaml"));
    let lab = crate::lab::validate::load(&SourceFile::read(path).unwrap()).unwrap();
    let h2 = crate::lab::model::HostName::new("h2").unwrap();
    let share = lab.on_host(&h2);
    let lan = crate::lab::model::NetworkName::new("lan").unwrap();
    assert!(matches!(&share.networks[&lan].kind, crate::lab::model::NetworkKind::Managed(m) if m.dhcp.is_none()));
    let g2 = &share.vms[&crate::lab::model::VmName::new("g2").unwrap()];
    let nc = network::network_config(&share, g2).unwrap();
    let eth0 = &nc["ethernets"]["eth0"];
    assert_eq!(eth0["dhcp4"], serde_json::json!(true), "{nc}");
}
