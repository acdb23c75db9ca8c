//! Planner unit tests: op order of in-place changes, on labs written as lab files.

use std::path::Path;

use super::*;
use crate::apply::{Options, apply};
use crate::host::hypervisor::Hypervisor;
use crate::host::hypervisor::memory::MemoryHypervisor;
use crate::lab::impair::{Netem, Rate};
use crate::lab::model::MacAddr;
use crate::lab::source::SourceFile;

pub(super) fn lab(text: &str) -> Lab {
    let text = text.replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    crate::lab::validate::load(&SourceFile::from_text(Path::new("lab.yaml"), text)).expect("valid lab")
}

const LAB: &str = "apiVersion: topo/v1
name: t
networks:
  iso:
    mode: isolated
    subnet: 192.168.152.0/24
vms:
  a:
    boot: {kernel: KERNEL}
    nics:
      - network: iso
        ip: IP
";

pub(super) fn applied(hv: &MemoryHypervisor, l: &Lab) {
    let p = plan(l, &hv.observe().unwrap(), "mem").unwrap();
    let r = apply(&p, hv, &Options::default(), &Default::default(), &crate::apply::progress::Silent);
    assert!(!r.failed(), "{r:?}");
}

/// A changed reservation is deleted and added on the live network and its config together;
/// the config must still hold the old entry then, so the redefinition comes last
/// (libvirt 9.0: "couldn't locate a matching dhcp host entry" otherwise).
#[test]
fn changed_reservation_updates_hosts_before_redefining() {
    let hv = MemoryHypervisor::new();
    applied(&hv, &lab(&LAB.replace("IP", "192.168.152.62")));
    let l2 = lab(&LAB.replace("IP", "192.168.152.63"));
    let p = plan(&l2, &hv.observe().unwrap(), "mem").unwrap();
    let net = p.changes.iter().find(|c| c.address == "network.iso").expect("network change");
    assert_eq!(net.action, Action::Update);
    let kinds: Vec<&str> = net
        .ops
        .iter()
        .map(|o| match o {
            Op::DeleteDhcpHost { .. } => "delete",
            Op::AddDhcpHost { .. } => "add",
            Op::DefineNetwork { .. } => "define",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["delete", "add", "define"]);
    applied(&hv, &l2);
    assert!(plan(&l2, &hv.observe().unwrap(), "mem").unwrap().is_empty());
}

/// A NIC on an external network that has no IPv4 address in libvirt (a bridge to a LAN)
/// cannot be proven by ARP: refused at plan time unless the NIC says `verify: none` or the
/// network declares the LAN's subnet (which must then match libvirt's when it has one).
#[test]
fn an_external_network_without_a_subnet_needs_verify_none_or_a_declared_subnet() {
    const BRIDGED: &str = "<network><name>lan</name><forward mode='bridge'/><bridge name='br-lan'/></network>";
    const NAT: &str = "<network><name>nat</name><forward mode='nat'/><bridge name='virbr9'/>\
        <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>";
    let hv = MemoryHypervisor::new()
        .with_network_xml(BRIDGED, true, true)
        .unwrap()
        .with_network_xml(NAT, true, true)
        .unwrap();
    let observed = hv.observe().unwrap();
    let text = |lan: &str, verify: &str| {
        format!(
            "apiVersion: topo/v1\nname: t\nnetworks:\n  lan:\n    external: true\n{lan}  nat:\n    external: true\nvms:\n  a:\n    boot: {{kernel: KERNEL}}\n    nics:\n      - network: lan\n{verify}      - network: nat\n"
        )
    };
    let refused = |l: &Lab| match plan(l, &observed, "mem") {
        Err(PlanError::Refused { problems, .. }) => problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        other => panic!("not refused: {other:?}"),
    };
    let problems = refused(&lab(&text("", "")));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("eth0 of vm `a` is on external network `lan`, which has no IPv4 address"));
    // Either fix is enough; the NAT network's NIC never needed one.
    assert!(plan(&lab(&text("", "        verify: none\n")), &observed, "mem").is_ok());
    assert!(plan(&lab(&text("    subnet: 192.168.1.0/24\n", "")), &observed, "mem").is_ok());
    // A declared subnet must be libvirt's where libvirt has one.
    let wrong =
        text("", "").replace("  nat:\n    external: true\n", "  nat:\n    external: true\n    subnet: 10.0.0.0/24\n");
    let problems = refused(&lab(&wrong));
    assert!(
        problems.iter().any(|p| p.contains("declared with subnet 10.0.0.0/24, but libvirt reports 192.168.122.0/24"))
    );
}

/// NICs that ARP verification could only fail 120 s after apply are refused at plan time,
/// at the NIC, unless they say `verify: none`: on a macvtap network (libvirt
/// bridge_driver.c `networkAllocatePort` makes a `direct` interface for forward modes
/// private, vepa, passthrough, and bridge without `<bridge name>`), a hostdev network, and a
/// network whose `<ip>` has no `<dhcp>` (bridge_driver.c `networkDnsmasqConfContents`:
/// `dhcp-range` only from `<range>`), unless a `<host>` entry serves the NIC's MAC.
#[test]
fn external_networks_verification_cannot_prove() {
    const NETS: [&str; 5] = [
        "<network><name>mvt</name><forward mode='bridge'><interface dev='eth0'/></forward></network>",
        "<network><name>vepa</name><forward mode='vepa'><interface dev='eth1'/></forward></network>",
        "<network><name>vf</name><forward mode='hostdev' managed='yes'><pf dev='eth2'/></forward></network>",
        "<network><name>nodhcp</name><bridge name='virbr7'/><ip address='10.7.0.1' netmask='255.255.255.0'/></network>",
        "<network><name>hosts</name><bridge name='virbr8'/><ip address='10.8.0.1' netmask='255.255.255.0'><dhcp>\
         <host mac='52:54:00:aa:00:01' ip='10.8.0.5'/></dhcp></ip></network>",
    ];
    let mut hv = MemoryHypervisor::new();
    for x in NETS {
        hv = hv.with_network_xml(x, true, true).unwrap();
    }
    let observed = hv.observe().unwrap();
    let nics = |verify: &str| {
        ["mvt", "vepa", "vf", "nodhcp", "hosts"]
            .iter()
            .map(|n| format!("      - {{network: {n}{verify}}}\n"))
            .collect::<String>()
            + "      - {network: hosts, mac: '52:54:00:aa:00:01'}\n"
    };
    let text = |verify: &str| {
        format!(
            "apiVersion: topo/v1\nname: t\nnetworks:\n  mvt: {{external: true, subnet: 10.1.0.0/24}}\n  vepa: {{external: true}}\n  vf: {{external: true}}\n  nodhcp: {{external: true}}\n  hosts: {{external: true}}\nvms:\n  a:\n    boot: {{kernel: KERNEL}}\n    nics:\n{}",
            nics(verify)
        )
    };
    let l = lab(&text(""));
    let problems = match plan(&l, &observed, "mem") {
        Err(PlanError::Refused { problems, .. }) => problems,
        other => panic!("not refused: {other:?}"),
    };
    let got: Vec<(&str, String)> = problems.iter().map(|p| (p.code.as_str(), p.message.clone())).collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(got.iter().all(|(c, _)| *c == "topo::plan::external_unprovable"), "{got:#?}");
    for says in [
        "eth0 of vm `a` is on external network `mvt`, which forwards by macvtap (`<forward mode='bridge'>`",
        "eth1 of vm `a` is on external network `vepa`, which forwards by macvtap (`<forward mode='vepa'>`",
        "eth2 of vm `a` is on external network `vf`, which hands each guest a host PCI device",
        "eth3 of vm `a` is on external network `nodhcp`, which has an IPv4 address in libvirt (10.7.0.1/24) but no DHCP range:",
        "eth4 of vm `a` is on external network `hosts`, which has an IPv4 address in libvirt (10.8.0.1/24) but no DHCP range and no `<host>` entry for this NIC's MAC",
    ] {
        assert!(got.iter().any(|(_, m)| m.starts_with(says)), "{says}\n{got:#?}");
    }
    // Each at its NIC, with the fix; `verify: none` plans.
    assert!(problems.iter().all(|p| p.help.as_deref().unwrap().starts_with("set `verify: none` on this NIC")));
    let mvt = problems.iter().find(|p| p.message.contains("`mvt`")).unwrap();
    let span = mvt.labels[0].inner();
    assert!(l.source.text[span.offset()..].starts_with("mvt}"), "{}", &l.source.text[span.offset()..]);
    assert!(plan(&lab(&text(", verify: none")), &observed, "mem").is_ok());
}

/// A lab network gets the bridge MAC topo derives (`MacAddr::derived_bridge`) at create.
/// Afterwards the MAC is never compared or changed, like a computed attribute in Terraform:
/// a network defined by an older topo, whose XML had no `<mac>` (so libvirt generated a
/// random one, src/conf/network_conf.c `virNetworkSetBridgeMacAddr`), is not replaced for
/// it, and redefining it (an in-place change or a replace for another field) keeps it.
#[test]
fn the_bridge_mac_is_derived_at_create_and_kept_after() {
    let bridge_mac = |hv: &MemoryHypervisor| hv.observe().unwrap().networks["t-iso"].mac;
    let define_xml = |p: &Plan| {
        p.changes.iter().filter(|c| c.address == "network.iso").flat_map(|c| &c.ops).find_map(|o| match o {
            Op::DefineNetwork { xml } => Some(xml.clone()),
            _ => None,
        })
    };
    let l = lab(&LAB.replace("IP", "192.168.152.62"));
    let derived = MacAddr::derived_bridge(&l.name, &crate::lab::model::NetworkName::new("iso").unwrap());

    // Fresh: the derived MAC, on any host.
    let fresh = MemoryHypervisor::new();
    applied(&fresh, &l);
    assert_eq!(bridge_mac(&fresh), Some(derived));

    // As an older topo made it: the same XML without `<mac>`.
    let hv = MemoryHypervisor::new();
    let p = plan(&l, &hv.observe().unwrap(), "mem").unwrap();
    let xml = define_xml(&p).expect("a define");
    let tag = format!("<mac address=\"{derived}\"/>");
    assert!(xml.contains(&tag), "{xml}");
    hv.define_network(&xml.replace(&tag, "")).unwrap();
    hv.start_network("t-iso").unwrap();
    hv.set_network_autostart("t-iso", true).unwrap();
    let random = bridge_mac(&hv).expect("libvirt generates one");
    assert_ne!(random, derived);
    let p = plan(&l, &hv.observe().unwrap(), "mem").unwrap();
    assert!(p.changes.iter().all(|c| c.address != "network.iso"), "no change for the bridge MAC: {p:?}");
    applied(&hv, &l);
    assert!(plan(&l, &hv.observe().unwrap(), "mem").unwrap().is_empty());

    // Redefined in place (a reservation changes), then replaced (stp): the MAC stays.
    for text in [
        LAB.replace("IP", "192.168.152.63"),
        LAB.replace("IP", "192.168.152.63").replace("mode: isolated", "mode: isolated\n    stp: true"),
    ] {
        let l2 = lab(&text);
        let p = plan(&l2, &hv.observe().unwrap(), "mem").unwrap();
        let xml = define_xml(&p).expect("a define");
        assert!(xml.contains(&format!("<mac address=\"{random}\"/>")), "{xml}");
        applied(&hv, &l2);
        assert_eq!(bridge_mac(&hv), Some(random));
        assert!(plan(&l2, &hv.observe().unwrap(), "mem").unwrap().is_empty());
    }
}

/// The link ops survive a saved plan's JSON; a re-plug saved before `NicPlug::netem`
/// existed reads as one without netem.
#[test]
fn link_ops_round_trip_and_old_replugs_read() {
    let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    let netem = Netem { delay: crate::lab::impair::Micros::parse("50ms").ok(), ..Netem::default() };
    let ops = vec![
        Op::SetBandwidth { mac, rate: Rate::parse("10Mbit").ok() },
        Op::SetBandwidth { mac, rate: None },
        Op::SetNetem { mac, netem: Some(netem) },
        Op::SetNetem { mac, netem: None },
        Op::ReattachNics {
            nics: vec![NicPlug { domain: "d".into(), mac, xml: "<interface/>".into(), netem: Some(netem) }],
        },
    ];
    let text = serde_json::to_string(&ops).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Op>>(&text).unwrap(), ops);
    let old = r#"{"op":"reattach-nics","nics":[{"domain":"d","mac":"52:54:00:00:00:01","xml":"<interface/>"}]}"#;
    assert_eq!(
        serde_json::from_str::<Op>(old).unwrap(),
        Op::ReattachNics { nics: vec![NicPlug { domain: "d".into(), mac, xml: "<interface/>".into(), netem: None }] }
    );
}

/// A definition that cannot be rendered refuses the plan, naming the resource and the
/// renderer's error, instead of planning the VM without its define. A validated lab always
/// renders (its paths come from YAML text, so they are UTF-8); the failure is forced here by
/// giving the validated VM a kernel path libvirt's XML cannot carry (not UTF-8).
#[cfg(unix)]
#[test]
fn a_definition_that_cannot_be_rendered_refuses_the_plan() {
    use std::os::unix::ffi::OsStrExt;
    let hv = MemoryHypervisor::new();
    let mut l = lab(&LAB.replace("IP", "192.168.152.62"));
    let vm = l.vms.values_mut().next().expect("one vm");
    let boot = vm.boot.as_mut().expect("boots a kernel");
    boot.kernel = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/boot/vmlinuz-\xff"));
    let problems = match plan(&l, &hv.observe().unwrap(), "mem") {
        Err(PlanError::RenderFailed { problems, .. }) => problems,
        other => panic!("expected a render refusal, got {other:?}"),
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, crate::diag::Code::RenderFailed);
    let message = problems[0].to_string();
    assert!(message.starts_with("could not render the domain XML of vm.a (t-a): "), "{message}");
    assert!(message.contains("not valid UTF-8"), "{message}");
}

/// The refusal of a renderer's error: its code, its message naming what and why, located
/// where the resource is written.
#[test]
fn a_rendering_failure_is_a_problem_at_the_resource() {
    let err = crate::host::xml::XmlError::Serialize { what: "network", message: "boom".into() };
    let p = change::render_failed(miette::SourceSpan::from((3, 4)), "the network XML of network.lan (t-lan)", err);
    assert_eq!(p.code, crate::diag::Code::RenderFailed);
    assert_eq!(
        p.to_string(),
        "could not render the network XML of network.lan (t-lan): could not serialize network XML: boom"
    );
    assert_eq!(p.labels[0].offset(), 3);
}
