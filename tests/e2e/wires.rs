//! Issue 19 end-to-end checks: point-to-point wires (`links:`) on real libvirt. Tiny guests
//! for the life of a wire (hot-plugged into running VMs, joined again after a VM restarted
//! by hand, unplugged when removed); the Debian cloud image for what a wire carries (each
//! end's address proven by ARP on its tap, LLDP, LACP and STP frames sent by one guest and
//! received by the other, the wire captured by `topo capture wire:NAME`).

use super::*;

const WIRE_SUBNET: &str = "192.168.176";

/// Two tiny guests on an isolated network, with `links` appended as written.
fn tiny_wire_lab(links: &str) -> String {
    let g = guest_dir();
    let vm = |name: &str| {
        format!(
            "  {name}:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    nics: [{{ network: lan }}]\n"
        )
    };
    format!(
        "apiVersion: topo/v1\nname: wtiny\nnetworks:\n  lan: {{ mode: isolated, subnet: {WIRE_SUBNET}.0/24 }}\nvms:\n{}{}{links}",
        vm("r1"),
        vm("r2")
    )
}

/// The `type='ethernet'` interfaces of domain `dom` (`virsh domiflist`): their taps.
fn ethernet_taps(dom: &str) -> Vec<String> {
    virsh_ok(&["domiflist", dom])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[1] == "ethernet").then(|| f[0].to_string())
        })
        .collect()
}

/// The ingress filter of `tap` in the sandbox: the device it redirects every frame to.
fn redirect_of(tap: &str) -> Option<String> {
    let o = Command::new("ip")
        .args(["netns", "exec", &netns(), "tc", "filter", "show", "dev", tap, "ingress"])
        .output()
        .expect("run tc");
    let text = String::from_utf8_lossy(&o.stdout);
    let at = text.find("Egress Redirect to device ")?;
    Some(text[at + "Egress Redirect to device ".len()..].split(')').next()?.to_string())
}

/// A wire added to two running tiny guests is hot-plugged (each VM updated in place, the
/// wire created), its taps redirect to each other, its ends are unproven (the guests have no
/// cloud-init) and nothing fails; a VM restarted by hand leaves the wire's redirect stale,
/// which verify reports as a cut wire at both ends, the next plan sees as drift and apply
/// joins again; the wire removed from the file
/// unplugs both NICs.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_wire_lifecycle() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let lab = write(tmp.path(), "wires.yaml", &tiny_wire_lab(""));
    apply(&lab, 2);
    clock.step("apply: two tiny guests, no wire");

    write(tmp.path(), "wires.yaml", &tiny_wire_lab("links:\n  - [r1, r2]\n"));
    let plan = plan_json(&lab);
    let ch = changes(&plan);
    assert_eq!(ch["vm.r1"]["action"], "update", "{plan:#}");
    assert_eq!(ch["vm.r2"]["action"], "update", "{plan:#}");
    assert_eq!(ch["wire.r1--r2"]["action"], "create", "{plan:#}");
    let r = topo(&["apply", "-y", "--timeout", "60", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("2 unproven"), "{}", r.show());
    assert!(r.stdout.contains(" 0 failed"), "{}", r.show());
    assert_converged(&lab);
    let (a, b) = (ethernet_taps("wtiny-r1"), ethernet_taps("wtiny-r2"));
    assert!(a.len() == 1 && b.len() == 1, "one wire NIC each: {a:?} {b:?}");
    let (ta, tb) = (a[0].clone(), b[0].clone());
    assert!(ta.starts_with("tw") && tb.starts_with("tw") && ta != tb, "{ta} {tb}");
    assert_eq!(redirect_of(&ta).as_deref(), Some(tb.as_str()));
    assert_eq!(redirect_of(&tb).as_deref(), Some(ta.as_str()));
    // Each guest saw its new NIC appear while it ran (no restart).
    let log = "/var/log/libvirt/qemu/wtiny-r2-console.log";
    let mut console = String::new();
    for _ in 0..60 {
        console = std::fs::read_to_string(log).unwrap_or_default();
        if console.contains("eth1 appeared (hot-plug)") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(console.contains("eth1 appeared (hot-plug)"), "{console}");
    clock.step("wire added to running VMs: hot-plugged, taps joined both ways, ends unproven");

    virsh_ok(&["destroy", "wtiny-r2"]);
    virsh_ok(&["start", "wtiny-r2"]);
    // The cut is the host's: verify fails both ends, whatever the guests hold.
    let r = topo(&["verify", "--timeout", "20", path(&lab)]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(r.stdout.matches("the wire is cut on the host").count(), 2, "{}", r.show());
    let plan = plan_json(&lab);
    let ch = changes(&plan);
    assert_eq!(ch.len(), 1, "only the wire: {plan:#}");
    assert_eq!(ch["wire.r1--r2"]["action"], "update", "{plan:#}");
    assert_eq!(ch["wire.r1--r2"]["reasons"][0]["kind"], "drift", "{plan:#}");
    let r = topo(&["apply", "-y", "--timeout", "60", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_converged(&lab);
    assert_eq!(redirect_of(&ta).as_deref(), Some(tb.as_str()));
    clock.step("r2 restarted by hand: the stale redirect is drift, apply joins the wire again");

    write(tmp.path(), "wires.yaml", &tiny_wire_lab(""));
    let r = topo(&["apply", "-y", "--timeout", "60", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_converged(&lab);
    for d in ["wtiny-r1", "wtiny-r2"] {
        assert_eq!(ethernet_taps(d), Vec::<String>::new(), "{d}");
    }
    clock.step("wire removed: both NICs unplugged");
    topo_ok(&["destroy", "-y", path(&lab)]);
}

/// A Python script for a guest (its `python3`, as root): sends 30 rounds of an LLDP frame,
/// a LACPDU and an STP configuration BPDU out of `eth1`, two a second: the link-local group
/// addresses a Linux bridge keeps to itself (01:80:c2:00:00:0e, :02, :00).
const SEND_L2: &str = r#"
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth1", 0))
me = bytes.fromhex(open("/sys/class/net/eth1/address").read().strip().replace(":", ""))
def tlv(t, v): return bytes([(t << 1) | (len(v) >> 8), len(v) & 255]) + v
lldp = tlv(1, b"\x04" + me) + tlv(2, b"\x05eth1") + tlv(3, b"\x00\x78") + b"\x00\x00"
frames = [
    bytes.fromhex("0180c200000e") + me + b"\x88\xcc" + lldp,
    bytes.fromhex("0180c2000002") + me + b"\x88\x09" + b"\x01\x01" + bytes(108),
    bytes.fromhex("0180c2000000") + me + (38).to_bytes(2, "big") + b"\x42\x42\x03" + bytes(35),
]
for i in range(30):
    for f in frames:
        s.send(f.ljust(60, b"\0"))
    time.sleep(0.5)
"#;

/// A Python script for a guest: listens on `eth1` (promiscuous, for the group addresses)
/// for up to 120 s and prints which of LLDP, LACP and STP arrived, and from which MAC.
const LISTEN_L2: &str = r#"
import socket, time, subprocess
subprocess.run(["ip", "link", "set", "eth1", "promisc", "on"])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth1", 0))
s.settimeout(1)
seen = {}
print("listening", flush=True)
end = time.time() + 120
while time.time() < end and len(seen) < 3:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    dst, src = f[0:6].hex(":"), f[6:12].hex(":")
    if dst == "01:80:c2:00:00:0e" and f[12:14] == b"\x88\xcc":
        seen["lldp"] = src
    if dst == "01:80:c2:00:00:02" and f[12:14] == b"\x88\x09":
        seen["lacp"] = src
    if dst == "01:80:c2:00:00:00" and f[14:17] == b"\x42\x42\x03":
        seen["stp"] = src
print(" ".join(k + "=" + v for k, v in sorted(seen.items())), flush=True)
"#;

/// A Python script for a guest: 20 ICMP echo requests to r2's wire address (the image has
/// no ping), 0.3 s apart; prints how many were answered.
const PING_R2: &str = r#"
import socket, struct, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.3)
got = 0
for i in range(20):
    body = b"topo-wire!"
    h = struct.pack("!BBHHH", 8, 0, 0, 0x7470, i)
    h = struct.pack("!BBHHH", 8, 0, csum(h + body), 0x7470, i)
    s.sendto(h + body, ("10.199.0.1", 0))
    try:
        d, a = s.recvfrom(1024)
        if a[0] == "10.199.0.1" and d[20] == 0:
            got += 1
    except socket.timeout:
        pass
    time.sleep(0.3)
print("replies", got)
"#;

/// `echo B64 | base64 -d | sudo python3 -` for `script`: ssh joins the words into one remote
/// shell command, and base64 keeps the script's quotes out of it.
fn python_cmd(script: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    ["echo", &b64, "|", "base64", "-d", "|", "sudo", "python3", "-"].iter().map(|s| s.to_string()).collect()
}

/// Two Debian routers joined by a wire, each also on a lab network (for `topo ssh`): all four
/// NICs proven, the wire ends by ARP on their own taps at the wire's /31 of `link_subnet`;
/// LLDP, LACP and STP frames sent by r1 arrive at r2 from r1's wire MAC (a bridge would have
/// dropped every one); `topo capture wire:r1--r2` holds the LLDP frames, read back by
/// `tcpdump -r`.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_wire_cloud_routers() {
    let clock = Clock(Instant::now());
    let bench = CloudBench::up(&clock);
    let (image, tmp, agent) = (&bench.image, &bench.tmp, &bench.agent);
    let key = &agent.public;
    let router = |name: &str| {
        format!(
            "  {name}:
    hypervisor: qemu
    memory: 512MiB
    boot:
      kernel: {image}/vmlinuz
      initrd: {image}/initrd.img
      cmdline: root=LABEL=cloudroot console=ttyS0
    disk:
      image: {image}/debian-12-cloud.qcow2
    nics: [{{ network: mgmt }}]
"
        )
    };
    let text = format!(
        "apiVersion: topo/v1
name: wcloud
cloud_init:
  ssh_authorized_keys: ['{key}']
networks:
  mgmt: {{ mode: isolated, subnet: {WIRE_SUBNET}.0/24 }}
vms:
{}{}link_subnet: 10.199.0.0/30
links:
  - [r1, r2]
",
        router("r1"),
        router("r2")
    );
    let lab = write(tmp.path(), "lab.yaml", &text);
    let r = topo(&["apply", "-y", "--timeout", "300", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("Verify: 4 verified, 0 failed"), "{}", r.show());
    assert_converged(&lab);
    clock.step("apply: two Debian routers and a wire, 4 NICs proven");

    let r = topo_ok(&["verify", "--json", path(&lab)]);
    let doc: Value = serde_json::from_str(&r.stdout).expect("verify JSON");
    let wire_rows: Vec<(String, String, String, String)> = doc["nics"]
        .as_array()
        .expect("nics")
        .iter()
        .filter(|n| n["network"] == "wire")
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (s("vm"), s("nic"), s("address"), s("state"))
        })
        .collect();
    assert_eq!(
        wire_rows,
        vec![
            ("r1".into(), "eth1".into(), "10.199.0.0".into(), "verified".into()),
            ("r2".into(), "eth1".into(), "10.199.0.1".into(), "verified".into()),
        ],
        "{}",
        r.stdout
    );
    let evidence: Vec<&str> = doc["nics"]
        .as_array()
        .expect("nics")
        .iter()
        .filter(|n| n["network"] == "wire")
        .filter_map(|n| n["evidence"].as_str())
        .collect();
    assert!(evidence.iter().all(|e| e.contains(" on tw")), "proven on the ends' taps: {evidence:?}");
    clock.step("both wire ends proven by ARP on their taps, at the wire's /31");

    // r2 listens; r1 sends; topo captures the wire meanwhile.
    // The sender starts once the listener says it listens (an ssh login into an emulated
    // guest takes from seconds to a minute).
    let mut c = topo_cmd(&["ssh", "r2", path(&lab), "--"]);
    c.args(python_cmd(LISTEN_L2)).env("SSH_AUTH_SOCK", &agent.sock).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut listener = c.spawn().expect("run topo ssh");
    let mut out = std::io::BufReader::new(listener.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).expect("read the listener");
    assert_eq!(first.trim(), "listening", "the listener on r2 did not start");
    let listen = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("read the listener");
        let status = listener.wait().expect("wait for the listener");
        (status.code().unwrap_or(-1), rest)
    });
    let pcap = tmp.path().join("wire.pcap");
    let capture = {
        let (lab, pcap) = (lab.clone(), pcap.clone());
        std::thread::spawn(move || {
            topo(&["capture", "wire:r1--r2", path(&lab), "-w", path(&pcap), "--count", "3", "ether proto 0x88cc"])
        })
    };
    let cmd = python_cmd(SEND_L2);
    let words: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let sent = ssh(&lab, agent, "r1", &words);
    assert_eq!(sent.code, 0, "{}", sent.show());
    let (code, heard) = listen.join().expect("listener");
    assert_eq!(code, 0, "{heard}");
    let r1_mac = doc["nics"]
        .as_array()
        .expect("nics")
        .iter()
        .find(|n| n["network"] == "wire" && n["vm"] == "r1")
        .and_then(|n| n["mac"].as_str())
        .unwrap_or_default()
        .to_string();
    let last = heard.lines().last().unwrap_or_default().to_string();
    assert_eq!(last, format!("lacp={r1_mac} lldp={r1_mac} stp={r1_mac}"), "{heard}");
    clock.step("LLDP, LACP and STP frames from r1 received by r2 across the wire");

    let cap = capture.join().expect("capture");
    assert_eq!(cap.code, 0, "{}", cap.show());
    assert!(cap.stderr.contains("(wire r1--r2)"), "{}", cap.show());
    let out = Command::new("tcpdump").args(["-n", "-e", "-r"]).arg(&pcap).output().expect("tcpdump -r");
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(lines.lines().all(|l| l.contains("LLDP") && l.contains(&r1_mac)), "{lines}");
    clock.step("topo capture wire:r1--r2: the LLDP frames in the pcap");

    // IPv4 across the wire: r1 pings r2's wire address while topo captures the wire.
    let icmp = tmp.path().join("icmp.pcap");
    let capture = {
        let (lab, icmp) = (lab.clone(), icmp.clone());
        std::thread::spawn(move || {
            topo(&["capture", "wire:r1--r2", path(&lab), "-w", path(&icmp), "--count", "4", "icmp"])
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cmd = python_cmd(PING_R2);
    let words: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pinged = ssh(&lab, agent, "r1", &words);
    assert_eq!(pinged.code, 0, "{}", pinged.show());
    let answered: usize =
        pinged.stdout.trim().strip_prefix("replies ").and_then(|n| n.parse().ok()).unwrap_or_default();
    assert!(answered >= 10, "r2 answered {answered} of 20 echoes across the wire: {}", pinged.show());
    let cap = capture.join().expect("capture");
    assert_eq!(cap.code, 0, "{}", cap.show());
    let out = Command::new("tcpdump").args(["-n", "-r"]).arg(&icmp).output().expect("tcpdump -r");
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(lines.contains("10.199.0.0 > 10.199.0.1: ICMP echo request"), "{lines}");
    assert!(lines.contains("10.199.0.1 > 10.199.0.0: ICMP echo reply"), "{lines}");
    clock.step("r1 pings r2 across the wire (its /31): answered; topo capture wire:r1--r2 holds the ICMP echoes");
    topo_ok(&["destroy", "-y", path(&lab)]);
    clock.step("destroyed");
}
