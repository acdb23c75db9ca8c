//! Issue 15 end-to-end checks (guards): see the module list at the end of tests/e2e.rs.
//!
//! Section 3, "guards on every path", on real libvirt: a copy of a lab VM started with its
//! MAC on the lab network is a duplicate that `topo verify` reports naming both domains, and
//! a network replacement under a running domain the lab does not own is refused unless
//! `--disconnect-foreign`, which then leaves that domain exactly as it was, its tap on no
//! bridge (docs/apply.md, "Blast radius of a network replacement").

use super::*;

const GRD: &str = "grd";

/// Lab `grd`: one isolated network on `subnet` (`a.b.c` of a /24) and one tiny guest.
fn guard_lab(subnet: &str) -> String {
    let g = guest_dir();
    format!(
        "apiVersion: topo/v1\nname: {GRD}\nnetworks:\n  lan:\n    mode: isolated\n    subnet: {subnet}.0/24\nvms:\n  v1:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    nics: [{{ network: lan }}]\n"
    )
}

/// `xml` without every attribute `name='...'` (libvirt's live-only `portid` of a NIC).
fn without_attr(xml: &str, name: &str) -> String {
    let pat = format!(" {name}='");
    let mut out = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i]);
        let after = &rest[i + pat.len()..];
        rest = after.find('\'').map_or("", |j| &after[j + 1..]);
    }
    out.push_str(rest);
    out
}

/// Defines and starts a copy of the running `grd-v1` as `name`, from its live XML (`virsh
/// dumpxml`): new name, no UUID (libvirt makes one), its own console log, and the NIC's MAC
/// replaced by `mac` unless `None` (then the copy keeps the lab VM's MAC).
fn start_copy(dir: &Path, name: &str, mac: Option<&str>) {
    let xml = virsh_ok(&["dumpxml", "grd-v1"]);
    let lab_mac = super::mac(GRD, "v1", 0);
    assert!(xml.contains(&lab_mac), "{xml}");
    let copy: String = without_attr(&xml, "portid")
        .lines()
        .filter(|l| !l.trim_start().starts_with("<uuid>"))
        .map(|l| {
            let l = l.replace("<name>grd-v1</name>", &format!("<name>{name}</name>"));
            let l = l.replace("grd-v1-console", &format!("{name}-console"));
            match mac {
                Some(m) => l.replace(&lab_mac, m),
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let f = write(dir, &format!("{name}.xml"), &copy);
    virsh_ok(&["define", path(&f)]);
    virsh_ok(&["start", name]);
}

fn remove_domain(name: &str) {
    let _ = virsh(&["destroy", name]);
    virsh_ok(&["undefine", name]);
}

/// 1. A copy of the running lab VM, same MAC, started under a non-lab name: `topo verify`
///    fails the NIC as a duplicate MAC naming both domains (table and `--json`), never a
///    pass, though the lab VM answers ARP; with the copy gone, verify passes again.
/// 2. A running domain of no lab (another MAC) on the lab network: a new subnet (a network
///    replacement) is refused, nothing touched; with `--disconnect-foreign` the lab's NIC is
///    re-plugged and verified in the new subnet, and the foreign domain is left as it was:
///    running, same definition, its tap on no bridge (libvirt does not re-plug it).
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_guards_duplicate_mac_and_replace_under_a_foreign_vm() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let lab = write(tmp.path(), "lab.yaml", &guard_lab("192.168.176"));
    apply(&lab, 1);
    clock.step("lab grd applied, 1 NIC verified");

    // 1. the copy with the lab VM's MAC
    start_copy(tmp.path(), "twin-v1", None);
    assert_converged(&lab); // the copy is not the lab's: nothing to plan
    let r = topo(&["verify", "--json", "--timeout", "20", path(&lab)]);
    assert_eq!(r.code, 1, "a duplicate MAC fails verify:\n{}", r.show());
    let doc: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("verify JSON: {e}\n{}", r.show()));
    let nic = &doc["nics"][0];
    assert_eq!(nic["state"], "failed", "{doc:#}");
    assert_eq!(nic["same_mac"], serde_json::json!(["grd-v1", "twin-v1"]), "{doc:#}");
    assert!(nic["reason"].as_str().is_some_and(|t| t.contains("grd-v1 and twin-v1")), "{doc:#}");
    assert_eq!(nic["address"], Value::Null, "{doc:#}");
    let r = topo(&["verify", "--timeout", "20", path(&lab)]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.stdout.contains("grd-v1 and twin-v1"), "the table names both:\n{}", r.show());
    clock.step("a running copy with the lab VM's MAC: verify reports the duplicate, naming both");
    remove_domain("twin-v1");
    let r = topo(&["verify", "--timeout", "20", path(&lab)]);
    assert_eq!(r.code, 0, "without the copy the NIC is verified again:\n{}", r.show());
    clock.step("copy removed: verified again");

    // 2. a foreign VM on the lab network, then a new subnet
    let foreign_mac = "52:54:00:ee:01:76";
    start_copy(tmp.path(), "stranger", Some(foreign_mac));
    let bridge = info(&["net-info", "grd-lan"]).get("Bridge").cloned().expect("bridge name");
    assert_eq!(taps_on("stranger", &bridge).iter().filter(|(_, on)| *on).count(), 1, "stranger on the bridge");
    let defined = virsh_ok(&["dumpxml", "--inactive", "stranger"]);
    std::fs::write(&lab, guard_lab("192.168.177")).expect("edit lab");
    let r = topo(&["apply", "-y", "--timeout", "60", path(&lab)]);
    assert_eq!(r.code, 1, "a replace under a foreign VM is refused:\n{}", r.show());
    let err = r.err_flat();
    assert!(err.contains("would replace a network"), "{}", r.show());
    assert!(err.contains("under running stranger") && err.contains("--disconnect-foreign"), "{}", r.show());
    assert!(virsh_ok(&["net-dumpxml", "grd-lan"]).contains("192.168.176.1"), "the refused replace changed the network");
    assert!(taps_on("stranger", &bridge).iter().all(|(_, on)| *on), "the refused replace cut stranger off");
    clock.step("replace under a running foreign VM: refused, nothing touched");

    let r = topo(&["apply", "-y", "--disconnect-foreign", "--timeout", "90", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.contains("Verify: 1 verified, 0 failed"), "{}", r.show());
    assert_converged(&lab);
    assert!(virsh_ok(&["net-dumpxml", "grd-lan"]).contains("192.168.177.1"));
    let bridge = info(&["net-info", "grd-lan"]).get("Bridge").cloned().expect("bridge name");
    assert!(taps_on("grd-v1", &bridge).iter().all(|(_, on)| *on), "lab VM re-plugged");
    assert_eq!(virsh_ok(&["domstate", "stranger"]).trim(), "running");
    assert_eq!(virsh_ok(&["dumpxml", "--inactive", "stranger"]), defined, "the foreign definition changed");
    let cut = taps_on("stranger", &bridge);
    assert!(!cut.is_empty() && cut.iter().all(|(_, on)| !on), "stranger's tap is on no bridge: {cut:?}");
    clock.step("--disconnect-foreign: lab NIC re-plugged and verified; stranger untouched, its tap on no bridge");

    remove_domain("stranger");
    topo_ok(&["destroy", "-y", path(&lab)]);
    assert_eq!(leftovers(GRD), Vec::<String>::new());
}

/// `ip -n NS ARGS` in the sandbox namespace, which must succeed.
fn ip_ns(args: &[&str]) {
    let o = Command::new("ip").args(["-n", &netns()]).args(args).output().expect("run ip");
    assert!(o.status.success(), "ip -n {} {args:?}: {}", netns(), String::from_utf8_lossy(&o.stderr));
}

/// A subnet that a route of the host already has (here a bridge `topo-vpn0`, as docker0, with
/// 192.168.179.1/24 in the daemon's namespace, as a VPN would add): libvirt refuses to start
/// a network on it (bridge_driver_linux.c `networkCheckRouteCollision`, "Network is already
/// in use by interface topo-vpn0").
/// 1. topo in the daemon's namespace sees the route: the replacement onto that subnet is
///    refused at plan time (`topo::plan::route_taken`, naming the device), nothing touched;
/// 2. topo run from another namespace (the host's) cannot see it: apply stops the working
///    network, libvirt refuses the new one's start, and apply brings the old one back (old
///    subnet, active, the lab VM's tap on its bridge again) and fails saying so;
/// 3. the route gone, apply replaces the network and the NIC is verified in the new subnet.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_guards_host_route_refused_and_old_network_brought_back() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let lab = write(tmp.path(), "lab.yaml", &guard_lab("192.168.178"));
    apply(&lab, 1);
    let bridge = info(&["net-info", "grd-lan"]).get("Bridge").cloned().expect("bridge name");
    clock.step("lab grd applied on 192.168.178.0/24");

    ip_ns(&["link", "add", "topo-vpn0", "type", "bridge"]);
    ip_ns(&["addr", "add", "192.168.179.1/24", "dev", "topo-vpn0"]);
    ip_ns(&["link", "set", "topo-vpn0", "up"]);
    std::fs::write(&lab, guard_lab("192.168.179")).expect("edit lab");
    let r = topo(&["plan", path(&lab)]);
    assert_eq!(r.code, 1, "{}", r.show());
    let err = r.err_flat();
    assert!(err.contains("topo::plan::route_taken") && err.contains("through `topo-vpn0`"), "{}", r.show());
    assert!(virsh_ok(&["net-dumpxml", "grd-lan"]).contains("192.168.178.1"));
    clock.step("a replacement onto a routed subnet: refused at plan time, naming topo-vpn0");

    // From the host's namespace the route is not visible: libvirt refuses the start.
    let out = Command::new(topo_bin())
        .args(["-c", URI, "--color", "never", "apply", "-y", "--no-verify", path(&lab)])
        .stdin(Stdio::null())
        .output()
        .expect("run topo");
    let r = Run::of(out);
    assert_eq!(r.code, 1, "{}", r.show());
    let err = r.err_flat();
    assert!(err.contains("Network is already in use by interface topo-vpn0"), "{}", r.show());
    assert!(err.contains("the network as it was before was brought back"), "{}", r.show());
    assert!(virsh_ok(&["net-dumpxml", "grd-lan"]).contains("192.168.178.1"), "the old network is back");
    assert_eq!(info(&["net-info", "grd-lan"]).get("Active").map(String::as_str), Some("yes"));
    let bridge_now = info(&["net-info", "grd-lan"]).get("Bridge").cloned().expect("bridge name");
    assert_eq!(bridge_now, bridge);
    assert!(taps_on("grd-v1", &bridge).iter().all(|(_, on)| *on), "the lab VM's NIC is back on the bridge");
    std::fs::write(&lab, guard_lab("192.168.178")).expect("lab as before");
    assert_converged(&lab);
    let r = topo(&["verify", "--timeout", "30", path(&lab)]);
    assert_eq!(r.code, 0, "the lab runs as before:\n{}", r.show());
    clock.step("libvirt refused the start: old network brought back, the lab verified as before");

    ip_ns(&["link", "del", "topo-vpn0"]);
    std::fs::write(&lab, guard_lab("192.168.179")).expect("edit lab");
    apply(&lab, 1);
    assert_converged(&lab);
    assert!(virsh_ok(&["net-dumpxml", "grd-lan"]).contains("192.168.179.1"));
    clock.step("the route gone: replaced and verified in the new subnet");
    topo_ok(&["destroy", "-y", path(&lab)]);
    assert_eq!(leftovers(GRD), Vec::<String>::new());
}
