//! A lab network stretched over several hosts by Linux VXLAN (RFC 7348): on each host, one
//! VXLAN device per lab network (one VNI), a port of the network's bridge, sending each
//! flooded frame by unicast UDP to every peer host's underlay address (one all-zero
//! forwarding entry per peer, `bridge fdb append 00:00:00:00:00:00 dev DEV dst PEER`) and
//! learning where remote MACs are from what comes back (the kernel's default `learning`,
//! which scripts/e2e-hosts-smoke.sh proves carries DHCP, ARP and full-size frames).
//!
//! Wanted ([`TunnelSpec`]) against found ([`ObservedTunnel`], read with `ip -d -j link show
//! type vxlan` and `bridge -j fdb show dev DEV`) gives the iproute2 commands that make the one
//! the other ([`ensure_commands`], pure). [`read_tunnels`], [`ensure_tunnel`],
//! [`delete_tunnel`] and [`read_addresses`] run them through a [`Runner`]: on this machine or
//! over ssh alike, one round trip per read and at most one per change (an `sh -c` script).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::host::runner::{MachineError, Runner, run_ok, script, shell_line};

pub use crate::lab::hosts::TunnelSpec;

/// A VXLAN device as found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedTunnel {
    /// Its name.
    pub device: String,
    /// Its alias, when it has one.
    pub alias: Option<String>,
    /// Its VNI.
    pub vni: u32,
    /// Its source address, when it has one.
    pub local: Option<Ipv4Addr>,
    /// Its UDP port.
    pub dstport: u16,
    /// The destinations of its all-zero forwarding entries (IPv4 ones).
    pub peers: BTreeSet<Ipv4Addr>,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// Its MTU in bytes.
    pub mtu: u32,
    /// Whether it is administratively up (`UP` among its flags).
    pub up: bool,
}

/// The all-zero MAC: a VXLAN forwarding entry for it is where unknown and broadcast frames go
/// (vxlan(4) "bridge fdb append ... 00:00:00:00:00:00").
const ALL_ZERO: &str = "00:00:00:00:00:00";

/// The longest network device name (IFNAMSIZ 16, with its NUL).
const MAX_DEVICE: usize = 15;

/// The longest device alias (IFALIASZ 256, with its NUL).
const MAX_ALIAS: usize = 255;

/// The largest VNI (24 bits).
const MAX_VNI: u32 = (1 << 24) - 1;

/// Whether the kernel takes `name` as a device name (net/core/dev.c `dev_valid_name`: not
/// empty, at most 15 bytes, not `.` or `..`, no `/`, `:` or white space).
pub fn valid_device(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DEVICE
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl TunnelSpec {
    /// Refuses what the kernel would: device and bridge names, an alias longer than 255
    /// bytes, a VNI of more than 24 bits, an MTU outside 68..=65535 (IPv4's minimum, the
    /// largest a VXLAN device takes).
    ///
    /// # Errors
    /// [`MachineError::Invalid`], naming the field.
    pub fn check(&self) -> Result<(), MachineError> {
        let bad = |m: String| Err(MachineError::Invalid(m));
        if !valid_device(&self.device) {
            return bad(format!("`{}` is not a network device name (1-15 bytes, no `/`, `:` or spaces)", self.device));
        }
        if !valid_device(&self.bridge) {
            return bad(format!("`{}` is not a bridge name", self.bridge));
        }
        if self.alias.len() > MAX_ALIAS || self.alias.contains('\n') {
            return bad(format!("the alias of {} is longer than {MAX_ALIAS} bytes or spans lines", self.device));
        }
        if self.vni > MAX_VNI {
            return bad(format!("VNI {} of {} does not fit in 24 bits", self.vni, self.device));
        }
        if !(68..=65535).contains(&self.mtu) {
            return bad(format!("MTU {} of {} is outside 68..=65535", self.mtu, self.device));
        }
        Ok(())
    }
}

/// The commands that make `now` (the device of that name as found, `None`: absent) what
/// `spec` wants, in order; none when it already is. A device with another VNI, source or port
/// is deleted and made again (the kernel changes none of them in place); otherwise the alias,
/// the peers (entries added and removed one by one, so traffic to the others goes on) and
/// master, MTU and up state are fixed where they differ.
pub fn ensure_commands(spec: &TunnelSpec, now: Option<&ObservedTunnel>) -> Vec<Vec<String>> {
    let dev = spec.device.as_str();
    let cmd = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let fdb = |op: &str, peer: &Ipv4Addr| cmd(&["bridge", "fdb", op, ALL_ZERO, "dev", dev, "dst", &peer.to_string()]);
    let set_link = || cmd(&["ip", "link", "set", dev, "mtu", &spec.mtu.to_string(), "master", &spec.bridge, "up"]);
    let mut out = Vec::new();
    let same = now.filter(|t| t.vni == spec.vni && t.local == Some(spec.local) && t.dstport == spec.dstport);
    let Some(t) = same else {
        if now.is_some() {
            out.push(cmd(&["ip", "link", "del", "dev", dev]));
        }
        let (vni, local, port) = (spec.vni.to_string(), spec.local.to_string(), spec.dstport.to_string());
        out.push(cmd(&["ip", "link", "add", dev, "type", "vxlan", "id", &vni, "local", &local, "dstport", &port]));
        out.push(cmd(&["ip", "link", "set", dev, "alias", &spec.alias]));
        out.extend(spec.peers.iter().map(|p| fdb("append", p)));
        out.push(set_link());
        return out;
    };
    if t.alias.as_deref() != Some(spec.alias.as_str()) {
        out.push(cmd(&["ip", "link", "set", dev, "alias", &spec.alias]));
    }
    out.extend(spec.peers.difference(&t.peers).map(|p| fdb("append", p)));
    out.extend(t.peers.difference(&spec.peers).map(|p| fdb("del", p)));
    if t.master.as_deref() != Some(spec.bridge.as_str()) || t.mtu != spec.mtu || !t.up {
        out.push(set_link());
    }
    out
}

/// One device of `ip -d -j link show` (the fields read).
#[derive(Deserialize)]
struct JsonLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    master: Option<String>,
    ifalias: Option<String>,
    linkinfo: Option<JsonLinkInfo>,
}

#[derive(Deserialize)]
struct JsonLinkInfo {
    info_kind: Option<String>,
    info_data: Option<JsonVxlan>,
}

#[derive(Deserialize)]
struct JsonVxlan {
    id: Option<u32>,
    local: Option<String>,
    port: Option<u16>,
}

/// One entry of `bridge -j fdb show`.
#[derive(Deserialize)]
struct JsonFdb {
    mac: String,
    dst: Option<String>,
}

/// The VXLAN devices of `ip -d -j link show type vxlan` output, without peers.
///
/// # Errors
/// The text is not that JSON (the message says why).
pub fn parse_vxlan_links(json: &str) -> Result<Vec<ObservedTunnel>, String> {
    let links: Vec<JsonLink> = serde_json::from_str(json.trim()).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .filter_map(|l| {
            let info = l.linkinfo?;
            if info.info_kind.as_deref() != Some("vxlan") {
                return None;
            }
            let data = info.info_data?;
            Some(ObservedTunnel {
                up: l.flags.iter().any(|f| f == "UP"),
                device: l.ifname,
                alias: l.ifalias.filter(|a| !a.is_empty()),
                vni: data.id?,
                local: data.local.and_then(|a| a.parse().ok()),
                dstport: data.port.unwrap_or(0),
                peers: BTreeSet::new(),
                master: l.master,
                mtu: l.mtu,
            })
        })
        .collect())
}

/// The IPv4 destinations of the all-zero entries in `bridge -j fdb show` output.
///
/// # Errors
/// The text is not that JSON.
pub fn parse_fdb_peers(json: &str) -> Result<BTreeSet<Ipv4Addr>, String> {
    let t = json.trim();
    if t.is_empty() {
        return Ok(BTreeSet::new());
    }
    let entries: Vec<JsonFdb> = serde_json::from_str(t).map_err(|e| e.to_string())?;
    Ok(entries.into_iter().filter(|e| e.mac == ALL_ZERO).filter_map(|e| e.dst?.parse().ok()).collect())
}

/// The marker line before each device's forwarding entries in [`READ_SCRIPT`]'s output.
const FDB_MARK: &str = "@fdb ";

/// Prints every VXLAN device (`ip -d -j link show type vxlan`), then for each, a line
/// `@fdb DEV` and its forwarding entries (`bridge -j fdb show dev DEV`). Device names hold no
/// white space (`valid_device`), so the word splitting is safe; globbing is off.
const READ_SCRIPT: &str = "set -e; set -f
ip -d -j link show type vxlan
for d in $(ip -o link show type vxlan | cut -d: -f2 | cut -d@ -f1); do
  printf '\\n@fdb %s\\n' \"$d\"
  bridge -j fdb show dev \"$d\"
done";

/// [`READ_SCRIPT`]'s output read: every VXLAN device with its peers.
///
/// # Errors
/// A part is not the JSON expected (the message says which).
pub fn parse_read_output(text: &str) -> Result<Vec<ObservedTunnel>, String> {
    let sep = format!("\n{FDB_MARK}");
    let mut parts = text.split(sep.as_str());
    let mut tunnels = parse_vxlan_links(parts.next().unwrap_or(""))?;
    for part in parts {
        let (dev, json) = part.split_once('\n').unwrap_or((part, ""));
        let peers = parse_fdb_peers(json).map_err(|e| format!("forwarding entries of {dev}: {e}"))?;
        if let Some(t) = tunnels.iter_mut().find(|t| t.device == dev.trim()) {
            t.peers = peers;
        }
    }
    Ok(tunnels)
}

/// Every VXLAN device on the machine of `r`, with its peers: one command.
///
/// # Errors
/// `ip` or `bridge` cannot run or fails (hint: install iproute2), or prints what cannot be read.
pub fn read_tunnels(r: &dyn Runner) -> Result<Vec<ObservedTunnel>, MachineError> {
    let argv = ["sh", "-c", READ_SCRIPT];
    let out = run_ok(r, "ip", &argv, None)?;
    parse_read_output(&out.text()).map_err(|message| MachineError::Output {
        host: r.describe(),
        command: "ip -d -j link show type vxlan; bridge -j fdb show dev DEV".into(),
        message,
    })
}

/// Makes the tunnel on the machine of `r` what `spec` wants ([`ensure_commands`]): one read,
/// then, when anything differs, one script of every change. Running it twice changes
/// nothing the second time.
///
/// # Errors
/// `spec` is refused ([`TunnelSpec::check`]); a read or a change fails (a device of that
/// name that is no VXLAN device: "File exists").
pub fn ensure_tunnel(r: &dyn Runner, spec: &TunnelSpec) -> Result<(), MachineError> {
    spec.check()?;
    let now = read_tunnels(r)?;
    let cmds = ensure_commands(spec, now.iter().find(|t| t.device == spec.device));
    if cmds.is_empty() {
        return Ok(());
    }
    let argv = script(&cmds);
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_ok(r, "ip", &words, None).map(|_| ()).map_err(|e| match e {
        MachineError::Failed { host, command, code, stderr, .. } => {
            let hint = stderr.contains("File exists").then(|| {
                format!(
                    "a device {} that is no VXLAN device (or another tunnel with the same VNI and port) is on {host}",
                    spec.device
                )
            });
            MachineError::Failed { host, command, code, stderr, hint }
        }
        e => e,
    })
}

/// Deletes `device` if it is a VXLAN device; nothing when there is no such device.
const DELETE_SCRIPT: &str = "out=$(ip -d -o link show dev \"$1\" 2>&1) || {
  case $out in *'does not exist'*) exit 0 ;; esac
  echo \"$out\" >&2; exit 1
}
case $out in *' vxlan id '*) ;; *) echo \"$1 is not a VXLAN device\" >&2; exit 3 ;; esac
ip link del dev \"$1\"";

/// Deletes VXLAN device `device` on the machine of `r`; an absent one is fine. A device of
/// that name that is no VXLAN device is left alone (an error).
///
/// # Errors
/// `device` is no device name; the device is no VXLAN device; `ip` cannot run or fails.
pub fn delete_tunnel(r: &dyn Runner, device: &str) -> Result<(), MachineError> {
    if !valid_device(device) {
        return Err(MachineError::Invalid(format!("`{device}` is not a network device name")));
    }
    run_ok(r, "ip", &["sh", "-c", DELETE_SCRIPT, "sh", device], None).map(|_| ())
}

/// One device of `ip -j addr show` (its name, MTU and addresses).
#[derive(Deserialize)]
struct JsonAddrLink {
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

/// The device that holds one of the machine's addresses: what a tunnel sending from that
/// address (its underlay) goes out on, and the largest IP packet that device carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddress {
    /// The device's name (`eth0`).
    pub device: String,
    /// The device's MTU in bytes (`ip link`'s `mtu`; 0 when not shown).
    pub mtu: u32,
}

#[derive(Deserialize)]
struct JsonAddr {
    local: Option<String>,
}

/// Every address of `ip -j addr show` output (IPv4 and IPv6), each with the device that
/// holds it.
///
/// # Errors
/// The text is not that JSON.
pub fn parse_addresses(json: &str) -> Result<BTreeMap<IpAddr, HostAddress>, String> {
    let links: Vec<JsonAddrLink> = serde_json::from_str(json.trim()).map_err(|e| e.to_string())?;
    Ok(links
        .iter()
        .flat_map(|l| {
            let at = HostAddress { device: l.ifname.clone(), mtu: l.mtu };
            l.addr_info.iter().filter_map(move |a| Some((a.local.as_deref()?.parse().ok()?, at.clone())))
        })
        .collect())
}

/// The machine's own addresses (`ip -j addr show`), each with the device that holds it;
/// `None` when they cannot be read.
pub fn read_addresses(r: &dyn Runner) -> Option<BTreeMap<IpAddr, HostAddress>> {
    let out = run_ok(r, "ip", &["ip", "-j", "addr", "show"], None).ok()?;
    parse_addresses(&out.text()).ok()
}

/// The commands of [`ensure_commands`] as shell lines (messages, tests).
pub fn command_lines(cmds: &[Vec<String>]) -> Vec<String> {
    cmds.iter().map(|c| shell_line(&c.iter().map(String::as_str).collect::<Vec<_>>())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{FakeRunner, Output};

    fn spec() -> TunnelSpec {
        TunnelSpec {
            device: "vx10".into(),
            alias: "topo lab/lan".into(),
            vni: 10,
            local: Ipv4Addr::new(10, 77, 0, 11),
            dstport: 4789,
            peers: [Ipv4Addr::new(10, 77, 0, 12), Ipv4Addr::new(10, 77, 0, 13)].into(),
            bridge: "br-lan".into(),
            mtu: 1450,
        }
    }

    fn as_found(s: &TunnelSpec) -> ObservedTunnel {
        ObservedTunnel {
            device: s.device.clone(),
            alias: Some(s.alias.clone()),
            vni: s.vni,
            local: Some(s.local),
            dstport: s.dstport,
            peers: s.peers.clone(),
            master: Some(s.bridge.clone()),
            mtu: s.mtu,
            up: true,
        }
    }

    #[test]
    fn an_absent_tunnel_is_created_with_alias_peers_and_port() {
        insta::assert_snapshot!(command_lines(&ensure_commands(&spec(), None)).join("\n"), @r"
        ip link add vx10 type vxlan id 10 local 10.77.0.11 dstport 4789
        ip link set vx10 alias 'topo lab/lan'
        bridge fdb append 00:00:00:00:00:00 dev vx10 dst 10.77.0.12
        bridge fdb append 00:00:00:00:00:00 dev vx10 dst 10.77.0.13
        ip link set vx10 mtu 1450 master br-lan up
        ");
    }

    #[test]
    fn a_tunnel_as_wanted_needs_nothing() {
        assert!(ensure_commands(&spec(), Some(&as_found(&spec()))).is_empty());
    }

    #[test]
    fn peers_are_added_and_removed_one_by_one_and_link_settings_fixed() {
        let mut t = as_found(&spec());
        t.peers = [Ipv4Addr::new(10, 77, 0, 12), Ipv4Addr::new(10, 77, 0, 99)].into();
        t.up = false;
        t.alias = None;
        insta::assert_snapshot!(command_lines(&ensure_commands(&spec(), Some(&t))).join("\n"), @r"
        ip link set vx10 alias 'topo lab/lan'
        bridge fdb append 00:00:00:00:00:00 dev vx10 dst 10.77.0.13
        bridge fdb del 00:00:00:00:00:00 dev vx10 dst 10.77.0.99
        ip link set vx10 mtu 1450 master br-lan up
        ");
        let mut t = as_found(&spec());
        t.mtu = 1500;
        assert_eq!(command_lines(&ensure_commands(&spec(), Some(&t))), ["ip link set vx10 mtu 1450 master br-lan up"]);
    }

    #[test]
    fn another_vni_source_or_port_means_delete_and_create() {
        for change in [
            |t: &mut ObservedTunnel| t.vni = 11,
            |t: &mut ObservedTunnel| t.local = None,
            |t: &mut ObservedTunnel| t.dstport = 8472,
        ] {
            let mut t = as_found(&spec());
            change(&mut t);
            let lines = command_lines(&ensure_commands(&spec(), Some(&t)));
            assert_eq!(lines[0], "ip link del dev vx10");
            assert_eq!(lines[1], "ip link add vx10 type vxlan id 10 local 10.77.0.11 dstport 4789");
            assert_eq!(lines.len(), 6, "{lines:?}");
        }
    }

    #[test]
    fn specs_the_kernel_would_refuse_are_refused_first() {
        assert_eq!(spec().check(), Ok(()));
        let cases: [fn(&mut TunnelSpec); 6] = [
            |s| s.device = "a-name-too-long-x".into(),
            |s| s.device = "a b".into(),
            |s| s.bridge = "../br".into(),
            |s| s.vni = 1 << 24,
            |s| s.mtu = 67,
            |s| s.alias = "x".repeat(256),
        ];
        for c in cases {
            let mut s = spec();
            c(&mut s);
            assert!(matches!(s.check(), Err(MachineError::Invalid(_))), "{s:?}");
        }
    }

    /// Real output of iproute2 6.1 (a VXLAN device on a bridge with two peers, and a bridge
    /// that is no VXLAN device).
    const LINKS: &str = r#"[{"ifindex":3,"ifname":"vx1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"qdisc":"noqueue","master":"br0","operstate":"UNKNOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"6a:09:4b:50:3c:16","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":1,"allmulti":1,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"vxlan","info_data":{"id":7,"local":"10.1.0.1","port_range":{"low":0,"high":0},"port":4789,"learning":true,"ttl":0,"df":"unset","ageing":300,"udp_csum":true},"info_slave_kind":"bridge","info_slave_data":{"state":"disabled"}},"ifalias":"topo lab x"},
        {"ifindex":2,"ifname":"br0","flags":["BROADCAST"],"mtu":1500,"linkinfo":{"info_kind":"bridge","info_data":{}}}]"#;
    const FDB: &str = r#"[{"mac":"6a:09:4b:50:3c:16","flags":[],"master":"br0","state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"10.1.0.2","flags":["self"],"state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"10.1.0.3","flags":["self"],"state":"permanent"},{"mac":"52:54:00:00:00:01","dst":"10.1.0.2","flags":["self"]}]"#;

    #[test]
    fn tunnels_are_read_from_ip_and_bridge_json() {
        let text = format!("{LINKS}\n\n@fdb vx1\n{FDB}\n");
        let got = parse_read_output(&text).unwrap();
        assert_eq!(
            got,
            [ObservedTunnel {
                device: "vx1".into(),
                alias: Some("topo lab x".into()),
                vni: 7,
                local: Some(Ipv4Addr::new(10, 1, 0, 1)),
                dstport: 4789,
                peers: [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)].into(),
                master: Some("br0".into()),
                mtu: 1450,
                up: true,
            }]
        );
        assert_eq!(parse_read_output("[]\n").unwrap(), []);
        assert!(parse_read_output("Object \"link\" is unknown").is_err());
        assert!(parse_read_output(&format!("{LINKS}\n@fdb vx1\n{{")).unwrap_err().contains("vx1"));
    }

    #[test]
    fn addresses_are_read_from_ip_json() {
        let j = r#"[{"ifname":"lo","mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1"}]},{"ifname":"br0","addr_info":[]},{"ifname":"eth0","mtu":1400,"addr_info":[{"family":"inet","local":"10.77.0.11"}]},{"ifname":"x"}]"#;
        let got: Vec<String> =
            parse_addresses(j).unwrap().iter().map(|(a, h)| format!("{a} {} {}", h.device, h.mtu)).collect();
        assert_eq!(got, ["10.77.0.11 eth0 1400", "127.0.0.1 lo 65536", "::1 lo 65536"]);
    }

    /// Through a runner: one read, then one script of the changes; nothing more when it is as
    /// wanted; a device of that name that is no VXLAN device gets a hint; delete is one script.
    #[test]
    fn ensure_reads_once_and_changes_in_one_script() {
        let found = format!("{LINKS}\n\n@fdb vx1\n{FDB}\n");
        let f = FakeRunner::new("root@h1")
            .on(&["sh", "-c", READ_SCRIPT], Ok(Output::ok("[]")))
            .on(&["sh", "-c", READ_SCRIPT], Ok(Output::ok(found.clone())))
            .on(&["sh", "-c", "set -e\n"], Ok(Output::ok("")));
        ensure_tunnel(&f, &spec()).unwrap();
        let calls = f.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1][2].lines().count(), 6, "set -e and five commands: {}", calls[1][2]);
        let mut s = spec();
        (s.device, s.vni, s.local, s.alias, s.bridge) =
            ("vx1".into(), 7, Ipv4Addr::new(10, 1, 0, 1), "topo lab x".into(), "br0".into());
        s.peers = [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)].into();
        ensure_tunnel(&f, &s).unwrap();
        assert_eq!(f.calls().len(), 3, "as wanted: only the read");

        let f = FakeRunner::new("root@h1")
            .on(&["sh", "-c", READ_SCRIPT], Ok(Output::ok("[]")))
            .on(&["sh", "-c", "set -e\n"], Ok(Output::failed(2, "RTNETLINK answers: File exists")));
        let e = ensure_tunnel(&f, &spec()).unwrap_err();
        assert!(e.hint().is_some_and(|h| h.contains("no VXLAN device")), "{e:?}");

        let f = FakeRunner::new("h").on(&["sh", "-c", DELETE_SCRIPT, "sh", "vx10"], Ok(Output::ok("")));
        delete_tunnel(&f, "vx10").unwrap();
        assert!(matches!(delete_tunnel(&f, "a/b"), Err(MachineError::Invalid(_))));
    }

    #[test]
    fn a_missing_iproute2_says_what_to_install() {
        let f = FakeRunner::new("root@h2");
        let e = read_tunnels(&f).unwrap_err();
        assert_eq!(e.hint(), Some("install iproute2 on root@h2"), "{e}");
        assert_eq!(read_addresses(&f), None);
    }
}
