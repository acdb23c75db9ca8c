//! The human plan (`topo plan`) for each kind of change, and the refusals, pinned as insta
//! snapshots. Host states are reached by applying labs to the strict memory double and then
//! changing the file or the host.

mod common;

use common::*;
use topo::host::hypervisor::Hypervisor;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::plan::render::{Style, render};
use topo::plan::{self, Action, Reason};

/// The plain human plan, with the checkout's absolute path (kernel paths) redacted, and the
/// overlay names' hashes, which hash the canonical (so checkout-dependent) image path.
fn plain(p: &topo::plan::Plan) -> String {
    redact_overlay_hashes(&render(p, "lab.yaml", Style::Plain).replace(env!("CARGO_MANIFEST_DIR"), "[CRATE]"))
}

/// `NAME-1234abcd.5678ef90.qcow2` -> `NAME-[HASH].qcow2`.
fn redact_overlay_hashes(text: &str) -> String {
    let hex = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(".qcow2") {
        let (head, tail) = rest.split_at(i);
        match head.len().checked_sub(18).map(|s| &head[s..]) {
            Some(h) if h.starts_with('-') && hex(&h[1..9]) && &h[9..10] == "." && hex(&h[10..]) => {
                out.push_str(&head[..head.len() - 17]);
                out.push_str("[HASH]");
            }
            _ => out.push_str(head),
        }
        out.push_str(".qcow2");
        rest = &tail[".qcow2".len()..];
    }
    out.push_str(rest);
    out
}

fn shown(lab: &topo::lab::model::Lab, hv: &MemoryHypervisor) -> String {
    let (p, _) = plan_on(lab, hv);
    plain(&p)
}

/// A host where BASE has been applied.
fn applied() -> MemoryHypervisor {
    let hv = host();
    apply_ok(&lab(BASE), &hv);
    hv
}

#[test]
fn create_from_empty() {
    let hv = host();
    insta::assert_snapshot!(shown(&lab(BASE), &hv));
}

#[test]
fn no_change() {
    let hv = applied();
    let out = shown(&lab(BASE), &hv);
    assert_eq!(out, "No changes. Lab demo matches lab.yaml.\n");
}

#[test]
fn update_in_place() {
    let hv = applied();
    let mut text = edit(BASE, "    autostart: true\n", "    autostart: false\n");
    text = edit(&text, "ip: 10.50.0.20", "ip: 10.50.0.21");
    text = edit(
        &text,
        "    nics:\n      - network: back\n        ip: 10.51.0.30\n",
        "    nics:\n      - network: back\n        ip: 10.51.0.30\n      - network: lan\n",
    );
    text = edit(
        &text,
        "  db:\n    hypervisor: qemu\n    memory: 256MiB",
        "  db:\n    hypervisor: qemu\n    memory: 512MiB",
    );
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let actions: Vec<(String, Action)> = p.changes.iter().map(|c| (c.address.to_string(), c.action)).collect();
    // web's reservation moves while it runs: its NIC is plugged in again (`nic[MAC].ip`).
    assert_eq!(
        actions,
        [
            ("network.lan".to_string(), Action::Update),
            ("vm.db".to_string(), Action::Update),
            ("vm.web".to_string(), Action::Update)
        ],
    );
    insta::assert_snapshot!(plain(&p));
}

/// A kernel command line changed in the file: a diff of its parameters, one per line.
#[test]
fn kernel_command_line_as_a_parameter_diff() {
    let hv = applied();
    let text = edit(BASE, "cmdline: console=ttyS0}", "cmdline: console=ttyS0 loglevel=7 ip=dhcp}");
    insta::assert_snapshot!(shown(&lab(&text), &hv));
}

#[test]
fn replace_network_lists_blast_radius() {
    let hv = applied();
    // Someone else's running VM on the lab's network: topo cannot re-plug it.
    hv.define_domain(&foreign_domain_xml("stranger", &[("52:54:00:ee:00:01", "demo-lan")])).unwrap();
    hv.start_domain("stranger").unwrap();
    let text = BASE.replace("10.50.0.", "10.60.0.").replace("10.50.0.0/24", "10.60.0.0/24");
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let lan = p.changes.iter().find(|c| c.address == "network.lan").unwrap();
    assert_eq!(lan.action, Action::Replace);
    let radius: Vec<(&str, bool)> = lan.blast_radius.iter().map(|d| (d.domain.as_str(), d.reattached)).collect();
    assert_eq!(radius, [("demo-router", true), ("demo-web", true), ("stranger", false)]);
    insta::assert_snapshot!(plain(&p));
}

#[test]
fn drift_on_the_host() {
    let hv = applied();
    let l = lab(BASE);
    // Redefine the lab's network by hand: same identity and owner tag, other DHCP range.
    let obs = hv.observe().unwrap();
    let uuid = obs.networks["demo-lan"].uuid.clone().unwrap();
    let net = &l.networks[&"lan".parse().unwrap()];
    let topo::lab::model::NetworkKind::Managed(m) = &net.kind else { panic!("lan is a lab network") };
    let hash = topo::plan::fields::spec_hash(&topo::plan::fields::desired_network(m));
    let xml = topo::host::xml::network_xml(&l, net, &hash).unwrap().xml;
    let xml = edit(&xml, "</name>", &format!("</name><uuid>{uuid}</uuid>"));
    let xml = edit(&xml, "10.50.0.199", "10.50.0.150");
    hv.define_network(&xml).unwrap();
    let (p, _) = plan_on(&l, &hv);
    let lan = p.changes.iter().find(|c| c.address == "network.lan").unwrap();
    assert!(lan.reasons.contains(&Reason::Drift), "{:?}", lan.reasons);
    insta::assert_snapshot!(plain(&p));
}

#[test]
fn vm_removed_from_file_is_deleted() {
    let hv = applied();
    let text = BASE.split("  db:\n").next().unwrap().to_string();
    insta::assert_snapshot!(shown(&lab(&text), &hv));
}

#[test]
fn inactive_network_and_stopped_vms_are_started() {
    let hv = applied();
    hv.destroy_domain("demo-web").unwrap();
    hv.destroy_domain("demo-db").unwrap();
    hv.stop_network("demo-back").unwrap();
    insta::assert_snapshot!(shown(&lab(BASE), &hv));
}

#[test]
fn stopped_vm_is_started() {
    let hv = applied();
    hv.shutdown_domain("demo-router").unwrap();
    insta::assert_snapshot!(shown(&lab(BASE), &hv));
}

#[test]
fn destroy_plan() {
    let hv = applied();
    let l = lab(BASE);
    let p = plan::plan_destroy(&l, &hv.observe().unwrap());
    insta::assert_snapshot!(plain(&p));
}

// ---- refusals ----------------------------------------------------------------------------

fn refusal(yaml: &str, hv: &MemoryHypervisor) -> String {
    let l = lab(yaml);
    let observed = hv.observe().unwrap();
    match plan::plan(&l, &observed, &hv.uri()) {
        Ok(p) => panic!("expected a refusal, got:\n{}", render(&p, "lab.yaml", Style::Plain)),
        Err(e) => render_diag(&e),
    }
}

#[test]
fn refuses_names_taken_by_unowned_objects() {
    let hv = host()
        .with_network_xml(&foreign_network_xml("demo-lan", "xbr0", "10.90.0.1", "255.255.255.0"), true, false)
        .unwrap()
        .with_domain_xml(&foreign_domain_xml("demo-web", &[("52:54:00:ee:00:02", "default")]), true)
        .unwrap();
    insta::assert_snapshot!(refusal(BASE, &hv));
}

#[test]
fn refuses_names_taken_by_another_lab() {
    let hv = host();
    let other = "\
apiVersion: topo/v1
name: other
prefix: demo-
networks:
  lan:
    mode: isolated
    subnet: 10.70.0.0/24
vms:
  web:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    nics: [{network: lan, ip: 10.70.0.5}]
";
    apply_ok(&lab(other), &hv);
    insta::assert_snapshot!(refusal(BASE, &hv));
}

#[test]
fn refuses_missing_external_network() {
    let hv = MemoryHypervisor::new();
    insta::assert_snapshot!(refusal(BASE, &hv));
}

#[test]
fn refuses_inactive_external_network() {
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, false, false).unwrap();
    insta::assert_snapshot!(refusal(BASE, &hv));
}

#[test]
fn refuses_subnet_overlapping_a_host_network() {
    let text = BASE.replace("10.51.0.", "192.168.122.");
    insta::assert_snapshot!(refusal(&text, &host()));
}

#[test]
fn refuses_bridge_used_by_a_host_network() {
    let text = edit(BASE, "bridge: demo-lan", "bridge: virbr0");
    insta::assert_snapshot!(refusal(&text, &host()));
}

#[test]
fn network_stopped_under_running_vms_is_started_and_nics_replugged() {
    let hv = applied();
    hv.stop_network("demo-lan").unwrap();
    insta::assert_snapshot!(shown(&lab(BASE), &hv));
}

/// A VM with a disk on a host without the overlay pool: the pool is its own step. A tagged
/// overlay no domain uses (a define libvirt refused after it was made) is an orphan.
#[test]
fn overlay_pool_and_orphaned_volume() {
    // The overlay name hashes the image's canonical path: a fixed path outside the checkout
    // keeps the name, and so the order of the two orphans below, the same in every clone.
    let dir = std::path::Path::new("/tmp/topo-plan-snapshots");
    std::fs::create_dir_all(dir).unwrap();
    let image = dir.join("base.qcow2");
    std::fs::copy("tests/fixtures/images/base.qcow2", &image).unwrap();
    let text = DISK_LAB.replace("images/base.qcow2", &image.display().to_string());
    let hv = MemoryHypervisor::new();
    let l = lab(&text);
    hv.fail_on(
        "define_domain",
        "disky-box",
        topo::host::hypervisor::HvError {
            op: "define domain".into(),
            object: "disky-box".into(),
            message: "refused".into(),
            kind: topo::host::hypervisor::HvErrorKind::InvalidXml,
            hint: None,
        },
    );
    let (first, _) = plan_on(&l, &hv);
    let first = plain(&first);
    apply_with(&l, &hv, 1);
    let out = format!("{first}\n----- after the refused define -----\n\n{}", shown(&l, &hv));
    insta::assert_snapshot!(redact_overlay_hash(&out));
}

/// Overlay names hash the backing image's absolute path, which is the checkout's: the
/// `HASH.HASH` after `disky-box-` differs per clone, so it is redacted.
fn redact_overlay_hash(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("disky-box-") {
        let (head, tail) = rest.split_at(i + "disky-box-".len());
        out.push_str(head);
        let hash = tail
            .get(..17)
            .filter(|h| h.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'.' } else { b.is_ascii_hexdigit() }));
        match hash {
            Some(_) => {
                out.push_str("[HASH]");
                rest = &tail[17..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `dhcp: false` on a network with a subnet: libvirt still runs dnsmasq with the `<host>`
/// entries, so the plan says what dnsmasq will do ("reservations only"), in text and JSON.
#[test]
fn dhcp_false_is_reservations_only() {
    let hv = applied();
    let mut text =
        edit(BASE, "    subnet: 10.51.0.0/24\n    dhcp: true\n", "    subnet: 10.51.0.0/24\n    dhcp: false\n");
    text = edit(&text, "      - network: back\n  db:", "      - network: back\n        verify: none\n  db:");
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let back = p.changes.iter().find(|c| c.address == "network.back").expect("network.back changes");
    let dhcp = back.fields.iter().find(|f| f.path == topo::plan::fields::Field::Dhcp).expect("dhcp field");
    assert_eq!(dhcp.before.as_deref(), Some("10.51.0.2 - 10.51.0.254"));
    assert_eq!(dhcp.after.as_deref(), Some("reservations only"));
    let json = topo::plan::json::to_json(&p).to_string();
    assert!(json.contains("\"after\":\"reservations only\""), "{json}");
    let out = plain(&p);
    assert!(out.contains("reservations only"), "{out}");
    insta::assert_snapshot!(out);
}

/// A guest outside the lab with the NIC's MAC on the same network is refused in plan, as
/// taken names, subnets and bridges are: whether it is attached by network name or
/// directly to the network's bridge, and whether it is hand-made or another lab's.
#[test]
fn refuses_mac_used_by_a_guest_outside_the_lab() {
    let text = edit(BASE, "      - network: default\n", "      - network: default\n        mac: 52:54:00:ee:00:09\n");
    let by_network =
        host().with_domain_xml(&foreign_domain_xml("stranger", &[("52:54:00:ee:00:09", "default")]), false).unwrap();
    insta::assert_snapshot!(refusal(&text, &by_network));

    let on_bridge = "<domain type='qemu'><name>bridged</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
        <os><type arch='x86_64'>hvm</type></os><devices><interface type='bridge'><mac address='52:54:00:ee:00:09'/>\
        <source bridge='virbr0'/></interface></devices></domain>";
    let hv = host().with_domain_xml(on_bridge, false).unwrap();
    assert!(refusal(&text, &hv).contains("topo::plan::mac_taken"));

    // The same MAC on another network is no conflict.
    let elsewhere = host()
        .with_network_xml(&foreign_network_xml("other", "xbr9", "10.99.0.1", "255.255.255.0"), true, false)
        .unwrap()
        .with_domain_xml(&foreign_domain_xml("stranger", &[("52:54:00:ee:00:09", "other")]), false)
        .unwrap();
    let (p, _) = plan_on(&lab(&text), &elsewhere);
    assert!(!p.is_empty());
}

/// A NIC whose MAC is its network's bridge's own MAC (`<mac address>` in the network XML;
/// libvirt generates one at define) is refused in plan: the Linux bridge keeps frames to its
/// own address for the host (net/bridge/br_input.c `br_handle_frame_finish`, a local fdb
/// entry is passed up, never forwarded to a port) and warns on frames from it
/// (net/bridge/br_fdb.c `br_fdb_update`: "received packet on ... with own address as source
/// address"), so the guest gets no DHCP or ARP reply. For external networks and the lab's own
/// alike; the same MAC as another network's bridge is no conflict (another segment).
#[test]
fn refuses_the_mac_of_the_networks_bridge() {
    let text = edit(BASE, "      - network: default\n", "      - network: default\n        mac: 52:54:00:ee:00:0b\n");
    let with_mac = |mac: &str| DEFAULT_NET.replacen("</name>", &format!("</name><mac address='{mac}'/>"), 1);
    let hv = MemoryHypervisor::new().with_network_xml(&with_mac("52:54:00:ee:00:0b"), true, true).unwrap();
    insta::assert_snapshot!(refusal(&text, &hv));
    let other = MemoryHypervisor::new().with_network_xml(&with_mac("52:54:00:ee:00:0c"), true, true).unwrap();
    plan_on(&lab(&text), &other);

    // Any address the bridge holds as its own counts alike: a port's (a host NIC enslaved
    // to the bridge of a `<forward mode='bridge'/>` network has no `<mac>` in libvirt),
    // seen in /sys/class/net on a local host; a remote host's bridges are not seen.
    let port = edit(BASE, "      - network: default\n", "      - network: default\n        mac: 02:00:00:aa:bb:cc\n");
    let local = host().with_host_interfaces(&["eth0"]).with_bridge_macs("virbr0", &["02:00:00:aa:bb:cc"]);
    let r = refusal(&port, &local);
    assert!(r.contains("topo::plan::bridge_mac") && r.contains("bridge `virbr0` of network `default`"), "{r}");
    let remote = host().with_bridge_macs("virbr0", &["02:00:00:aa:bb:cc"]);
    plan_on(&lab(&port), &remote);

    // The lab's own network, whose MAC libvirt picked at random at define.
    let l = lab(BASE);
    let hv = applied();
    let mut observed = hv.observe().unwrap();
    let vm = |n: &str| l.vms.values().find(|v| v.name.as_str() == n).unwrap();
    let web = vm("web");
    observed.networks.get_mut("demo-lan").unwrap().mac = Some(web.nics[0].mac);
    let codes = match plan::plan(&l, &observed, &hv.uri()) {
        Err(plan::PlanError::Refused { problems, .. }) => problems.iter().map(|p| p.code.as_str()).collect::<Vec<_>>(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(codes, ["topo::plan::bridge_mac"]);
    // On another network than the one whose bridge has it: no conflict.
    observed.networks.get_mut("demo-lan").unwrap().mac = Some(vm("db").nics[0].mac);
    assert!(plan::plan(&l, &observed, &hv.uri()).is_ok());
}

/// Two NICs whose MACs differ only in the first byte get the same tap MAC on the host
/// (libvirt src/util/virnetdevtap.c `virNetDevTapCreateInBridgePort` sets the tap's MAC to
/// the guest's with the first byte 0xFE). Nothing below refuses or breaks it: both taps are
/// bridge ports whose own address is one shared local fdb entry (net/bridge/br_fdb.c keeps
/// it while any port has it), and no frame is ever addressed to a tap's MAC (guests use
/// their own; a guest MAC cannot start with 0xFE, `bad_mac`). So topo accepts it.
#[test]
fn macs_sharing_a_tap_mac_are_accepted() {
    let text =
        edit(BASE, "      - network: back\n  db:", "      - network: back\n        mac: 02:54:00:ee:00:0d\n  db:");
    let text = edit(
        &text,
        "      - network: back\n        ip: 10.51.0.30",
        "      - network: back\n        mac: 52:54:00:ee:00:0d\n        ip: 10.51.0.30",
    );
    let hv = host();
    apply_ok(&lab(&text), &hv);
}

/// A bridge name that exists on a local host as an interface no libvirt network has (a
/// physical NIC, a hand-made bridge): the kernel would refuse to create it at start.
#[test]
fn refuses_bridge_that_is_a_host_interface() {
    let hv = host().with_host_interfaces(&["eth0", "demo-lan"]);
    insta::assert_snapshot!(refusal(BASE, &hv));

    // The lab's own running bridge is on the host too, and is no conflict.
    let own = host().with_host_interfaces(&["eth0"]);
    apply_ok(&lab(BASE), &own);
    assert!(own.observe().unwrap().host_interfaces.unwrap().contains("demo-lan"));
    let (p, _) = plan_on(&lab(BASE), &own);
    assert!(p.is_empty(), "{}", plain(&p));

    // A host whose interfaces topo cannot see (remote, test driver) is not checked here;
    // libvirt reports the clash when it starts the network.
    let (p, _) = plan_on(&lab(BASE), &host());
    assert!(!p.is_empty());
}

/// `mtu:` added to a lab network whose VMs run: libvirt cannot change a running network's
/// MTU, so the network is replaced (field `mtu`) and its running NICs plugged in again, now
/// with the MTU in their `<interface>`; each VM's config shows `nic[MAC].mtu` and is written
/// again, without a re-plug of its own (the replacement did it). After apply, network and
/// NICs carry 1450 and the plan is empty.
#[test]
fn network_mtu_replaces_the_network_and_its_nics_follow() {
    let hv = applied();
    let text = edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    mtu: 1450\n");
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let lan = p.changes.iter().find(|c| c.address == "network.lan").unwrap();
    assert_eq!(lan.action, Action::Replace);
    assert!(
        lan.reasons.contains(&Reason::RequiresReplace { fields: vec![topo::plan::fields::Field::Mtu] }),
        "{:?}",
        lan.reasons
    );
    for vm in ["vm.router", "vm.web"] {
        let c = p.changes.iter().find(|c| c.address == vm).unwrap();
        assert_eq!(c.action, Action::Update, "{vm}");
        assert!(!c.reasons.iter().any(|r| matches!(r, Reason::Replugged { .. })), "{vm}: {:?}", c.reasons);
        let kinds: Vec<&str> = c.ops.iter().map(|o| o.name()).collect();
        assert_eq!(kinds, ["define-domain"], "{vm}");
    }
    insta::assert_snapshot!(plain(&p));
    apply_ok(&l, &hv);
    let o = converged(&l, &hv).unwrap();
    assert_eq!(o.networks["demo-lan"].mtu, Some(1450));
    let mtus: Vec<(String, Option<u32>)> = o
        .domains
        .values()
        .flat_map(|d| d.interfaces.iter().map(move |i| (format!("{} {}", d.name, i.network.clone().unwrap()), i.mtu)))
        .collect();
    assert_eq!(
        mtus,
        [
            ("demo-db demo-back".to_string(), None),
            ("demo-router default".to_string(), None),
            ("demo-router demo-lan".to_string(), Some(1450)),
            ("demo-web demo-lan".to_string(), Some(1450)),
            ("demo-web demo-back".to_string(), None),
        ]
    );
}

/// A running VM's NIC whose MTU is not its network's (its `<interface>` lost the `<mtu>`
/// outside topo, or was made by a topo that did not write it): libvirt cannot change it on the
/// running NIC, so the NIC is unplugged and plugged in again with it (reason `replugged`,
/// field `nic[MAC].mtu`), no restart; the network is left alone.
#[test]
fn a_running_nic_without_its_networks_mtu_is_plugged_in_again() {
    let hv = host();
    let text = edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    mtu: 9000\n");
    let l = lab(&text);
    apply_ok(&l, &hv);
    let web = &l.vms[&"web".parse().unwrap()];
    let eth0 = web.nics[0].mac;
    let plain_nic = topo::host::xml::plain_interface_xml(eth0, "demo-lan");
    hv.detach_device("demo-web", &plain_nic).unwrap();
    hv.attach_device("demo-web", &plain_nic).unwrap();
    let (p, _) = plan_on(&l, &hv);
    let kinds: Vec<(String, Vec<&str>)> =
        p.changes.iter().map(|c| (c.address.to_string(), c.ops.iter().map(|o| o.name()).collect())).collect();
    assert_eq!(kinds, [("vm.web".to_string(), vec!["detach-nic", "attach-nic", "define-domain"])]);
    let field = topo::plan::fields::Field::NicMtu(eth0);
    assert!(p.changes[0].reasons.contains(&Reason::Replugged { fields: vec![field] }), "{:?}", p.changes[0].reasons);
    insta::assert_snapshot!(plain(&p));
    apply_ok(&l, &hv);
    let o = converged(&l, &hv).unwrap();
    assert_eq!(o.domains["demo-web"].interfaces.iter().find(|i| i.mac == Some(eth0)).unwrap().mtu, Some(9000));
}

/// A network's MTU changed under a stopped VM: the network is replaced (nothing to re-plug),
/// the VM's config is written again with the new MTU; it takes it at its next start.
#[test]
fn a_stopped_vm_gets_its_networks_new_mtu_in_its_config() {
    let hv = host();
    let stopped = edit(BASE, "  db:\n    hypervisor: qemu\n", "  db:\n    state: stopped\n    hypervisor: qemu\n");
    apply_ok(&lab(&stopped), &hv);
    let text = edit(&stopped, "    mode: isolated\n", "    mode: isolated\n    mtu: 1280\n");
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    let db = p.changes.iter().find(|c| c.address == "vm.db").unwrap();
    assert_eq!(db.ops.iter().map(|o| o.name()).collect::<Vec<_>>(), ["define-domain"]);
    let back = p.changes.iter().find(|c| c.address == "network.back").unwrap();
    assert_eq!(back.action, Action::Replace);
    apply_ok(&l, &hv);
    let o = converged(&l, &hv).unwrap();
    assert_eq!(o.domains["demo-db"].state, topo::host::observed::DomainState::Shutoff);
    assert_eq!(o.domains["demo-db"].interfaces[0].mtu, Some(1280));
}

/// The multi-host code sets a network's MTU on the model (`Lab::set_network_mtu`), not in the
/// file: the plan is the one the file's `mtu:` gives, NICs included.
#[test]
fn an_mtu_set_on_the_model_plans_as_the_files() {
    let hv = applied();
    let mut l = lab(BASE);
    l.set_network_mtu(&"lan".parse().unwrap(), Some(1450)).unwrap();
    let from_file = lab(&edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    mtu: 1450\n"));
    assert_eq!(shown(&l, &hv), shown(&from_file, &hv));
}

/// `mtu:` removed: the network is replaced without `<mtu>` (field `mtu` removed) and its NICs
/// are plugged in again without it; apply converges to libvirt's defaults.
#[test]
fn removing_mtu_goes_back_to_the_defaults() {
    let hv = host();
    let with = lab(&edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    mtu: 9000\n"));
    apply_ok(&with, &hv);
    let l = lab(BASE);
    let (p, _) = plan_on(&l, &hv);
    let lan = p.changes.iter().find(|c| c.address == "network.lan").unwrap();
    assert_eq!(lan.action, Action::Replace);
    let mtu = lan.fields.iter().find(|f| f.path == topo::plan::fields::Field::Mtu).unwrap();
    assert_eq!((mtu.before.as_deref(), mtu.after.as_deref(), mtu.forces_replacement), (Some("9000"), None, true));
    apply_ok(&l, &hv);
    let o = converged(&l, &hv).unwrap();
    assert_eq!(o.networks["demo-lan"].mtu, None);
    assert!(o.domains.values().flat_map(|d| &d.interfaces).all(|i| i.mtu.is_none()));
}

/// Every NIC's address in the plan: written (`ip: 10.50.0.10`), derived (web's NIC on back,
/// no `ip:`) and `ip: dynamic` (db's NIC on lan: no host entry), text and JSON. The derived
/// one is a `dhcp_host` entry as a written one (docs/addressing.md).
#[test]
fn derived_written_and_dynamic_addresses() {
    let text = edit(
        BASE,
        "      - network: back\n        ip: 10.51.0.30\n",
        "      - network: back\n        ip: 10.51.0.30\n      - network: lan\n        ip: dynamic\n",
    );
    let hv = host();
    let l = lab(&text);
    let (p, _) = plan_on(&l, &hv);
    insta::assert_snapshot!("derived_written_and_dynamic_addresses_text", plain(&p));
    let mut json = topo::plan::json::to_json(&p);
    // Only the networks' fields: the VMs' carry checkout paths.
    json["changes"] = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["address"].as_str().unwrap().starts_with("network."))
        .cloned()
        .collect();
    insta::assert_snapshot!("derived_written_and_dynamic_addresses_json", serde_json::to_string_pretty(&json).unwrap());
}

/// `subnet6` added to a running network replaces it (as a `subnet` change does): the plan
/// shows `subnet6` and `gateway6` and the NICs re-attached.
#[test]
fn subnet6_added_replaces_the_network() {
    let hv = applied();
    let text = edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    subnet6: fd00:50::/64\n");
    let (p, _) = plan_on(&lab(&text), &hv);
    let text_plan = plain(&p);
    assert!(text_plan.contains("subnet6") && text_plan.contains("fd00:50::/64"), "{text_plan}");
    assert!(text_plan.contains("gateway6") && text_plan.contains("fd00:50::1"), "{text_plan}");
    insta::assert_snapshot!(text_plan);
    // Applied, the network reads back with the same prefix: nothing left to do.
    apply_ok(&lab(&text), &hv);
    let (p, _) = plan_on(&lab(&text), &hv);
    assert!(p.changes.iter().all(|c| c.action == Action::NoOp), "{}", plain(&p));
}

/// A lab prefix that another lab's network on the host already has is refused, naming it.
#[test]
fn refuses_subnet6_overlapping_a_host_network() {
    let hv = host();
    let other = "apiVersion: topo/v1\nname: other\nnetworks:\n  v6: {mode: isolated, subnet6: fd00:50::/64}\n";
    apply_ok(&lab(other), &hv);
    let text = edit(BASE, "    bridge: demo-lan\n", "    bridge: demo-lan\n    subnet6: fd00:50::/64\n");
    let shown = refusal(&text, &hv);
    assert!(shown.contains("subnet6 fd00:50::/64 of network `lan` overlaps network `other-v6`"), "{shown}");
}
