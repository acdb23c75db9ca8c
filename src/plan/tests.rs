//! Planner unit tests: op order of in-place changes, on labs written as lab files.

use std::path::Path;

use super::*;
use crate::apply::{Options, apply};
use crate::hypervisor::Hypervisor;
use crate::hypervisor::memory::MemoryHypervisor;
use crate::source::SourceFile;

fn lab(text: &str) -> Lab {
    let text = text.replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    crate::validate::load(&SourceFile::from_text(Path::new("lab.yaml"), text)).expect("valid lab")
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

fn applied(hv: &MemoryHypervisor, l: &Lab) {
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
