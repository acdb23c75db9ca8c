//! `topo graph`: the lab file's resources and references drawn as DOT or Mermaid.
//!
//! A picture, not an order: networks, VMs and an edge from each network to each VM with a
//! NIC on it, labelled with those NICs, and one between the two VMs of each wire
//! (`links:`), labelled with the NICs at its ends. The order of steps lives in the one resource graph
//! ([`crate::plan::order::ResourceGraph`]). Nodes come networks first, then VMs, each by
//! name; edges by (network, VM).

use std::fmt::Write as _;

use crate::lab::address::Address;
use crate::lab::model::{HostName, Lab, NetworkKind, NetworkName, VmName, nic_label};

/// A drawn node: a network or a VM of the lab file.
enum Node<'l> {
    Network(&'l NetworkName),
    Vm(&'l VmName),
}

impl Node<'_> {
    fn address(&self) -> Address {
        match self {
            Node::Network(n) => Address::Network((*n).clone()),
            Node::Vm(v) => Address::Vm((*v).clone()),
        }
    }
}

/// Every node, networks first, then VMs, each by name.
fn nodes(lab: &Lab) -> impl Iterator<Item = Node<'_>> {
    lab.networks.keys().map(Node::Network).chain(lab.vms.keys().map(Node::Vm))
}

/// One edge per (network, VM) with a NIC of the VM on the network: the addresses of both ends
/// and the labels of those NICs, sorted by (network, VM); then one per wire, by wire name.
fn edges(lab: &Lab) -> Vec<(Address, Address, Vec<String>)> {
    let mut by_pair: std::collections::BTreeMap<(&NetworkName, &VmName), Vec<String>> = Default::default();
    for vm in lab.vms.values() {
        for nic in vm.nics.iter().filter(|n| lab.networks.contains_key(&n.network)) {
            by_pair.entry((&nic.network, &vm.name)).or_default().push(nic.label());
        }
    }
    let mut out: Vec<(Address, Address, Vec<String>)> =
        by_pair.into_iter().map(|((n, v), nics)| (Address::Network(n.clone()), Address::Vm(v.clone()), nics)).collect();
    // A wire (`links:`): an edge between its two VMs, labelled with the NICs at each end.
    for w in lab.wires.values() {
        let [a, b] = &w.ends;
        let label = format!("{} - {}", nic_label(a.index), nic_label(b.index));
        out.push((Address::Vm(a.vm.clone()), Address::Vm(b.vm.clone()), vec![label]));
    }
    out
}

/// `lab` as a Graphviz DOT digraph: networks as ellipses (dashed when external), VMs as boxes,
/// undirected edges labelled with the NICs.
pub fn to_dot(lab: &Lab) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", lab.name);
    let _ = writeln!(s, "  rankdir=LR;");
    for node in nodes(lab) {
        let _ = match node {
            Node::Network(n) => {
                let (style, label) = network_label(lab, n);
                writeln!(s, "  \"{}\" [shape=ellipse{style} label=\"{label}\"];", node.address())
            }
            Node::Vm(v) => writeln!(s, "  \"{}\" [shape=box label=\"{v}\"];", node.address()),
        };
    }
    // A lab across hosts: each host a cluster around its VMs.
    for (host, vms) in by_host(lab) {
        let _ = writeln!(s, "  subgraph \"cluster_{host}\" {{ label=\"host {host}\";");
        for v in vms {
            let _ = writeln!(s, "    \"{}\";", Address::Vm(v.clone()));
        }
        s.push_str("  }\n");
    }
    for (from, to, nics) in edges(lab) {
        let _ = writeln!(s, "  \"{from}\" -> \"{to}\" [label=\"{}\" dir=none];", nics.join(","));
    }
    s.push_str("}\n");
    s
}

/// `lab` as a Mermaid flowchart, the same nodes and edges as [`to_dot`].
pub fn to_mermaid(lab: &Lab) -> String {
    // Mermaid ids are [A-Za-z0-9_]. Names are lowercase letters, digits, '-' and '_', so
    // '-' becomes `_H` (an uppercase letter no name has): `a-b` and `a_b` stay apart.
    let id = |a: &Address| mermaid_id(&a.to_string());
    let mut s = String::from("flowchart LR\n");
    for node in nodes(lab) {
        let _ = match node {
            Node::Network(n) => {
                let (_, label) = network_label(lab, n);
                // Mermaid breaks lines with <br/>, not \n.
                writeln!(s, "  {}((\"{}\"))", id(&node.address()), label.replace("\\n", "<br/>"))
            }
            Node::Vm(v) => writeln!(s, "  {}[\"{v}\"]", id(&node.address())),
        };
    }
    for (host, vms) in by_host(lab) {
        let _ = writeln!(s, "  subgraph host_{}[\"host {host}\"]", host.as_str().replace('-', "_H"));
        for v in vms {
            let _ = writeln!(s, "    {}", id(&Address::Vm(v.clone())));
        }
        s.push_str("  end\n");
    }
    for (from, to, nics) in edges(lab) {
        let _ = writeln!(s, "  {} ---|{}| {}", id(&from), nics.join(","), id(&to));
    }
    s
}

/// A Mermaid node id for an address (`vm.a-b` -> `vm_a_Hb`): injective over addresses,
/// whose kind word and name never contain an uppercase letter or a second '.'.
fn mermaid_id(address: &str) -> String {
    address.replacen('.', "_", 1).replace('-', "_H")
}

/// A lab across hosts: each host with its VMs, by host name (empty for a lab on one host).
fn by_host(lab: &Lab) -> Vec<(&HostName, Vec<&VmName>)> {
    lab.hosts.keys().map(|h| (h, lab.vms.values().filter(|vm| vm.host == *h).map(|vm| &vm.name).collect())).collect()
}

fn network_label(lab: &Lab, n: &NetworkName) -> (&'static str, String) {
    match lab.networks.get(n).map(|net| (net, &net.kind)) {
        Some((net, NetworkKind::Managed(m))) => {
            let subnet = m.subnet.map(|s| format!("\\n{s}")).unwrap_or_default();
            // Across hosts: where it exists, and which host serves it.
            let hosts = if lab.is_multi_host() {
                let on: Vec<String> = lab.network_hosts(net).iter().map(ToString::to_string).collect();
                format!("\\non {} (served by {})", on.join(", "), net.host)
            } else {
                String::new()
            };
            ("", format!("{n}\\n{}{subnet}{hosts}", m.mode))
        }
        _ => (" style=dashed", format!("{n}\\nexternal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node gets its own id in every format, whatever '-' and '_' the names use
    /// (Mermaid ids allow [A-Za-z0-9_] only; `a-b` and `a_b` once both became `a_b`).
    #[test]
    fn a_wire_is_an_edge_between_its_vms() {
        let l = crate::plan::tests::lab(
            "apiVersion: topo/v1\nname: g\nnetworks:\n  lan: {subnet: 10.9.0.0/24}\nvms:\n  r1: {boot: {kernel: /etc/hostname}, nics: [{network: lan}]}\n  r2: {boot: {kernel: /etc/hostname}}\nlinks:\n  - [r1, r2]\n",
        );
        assert!(to_dot(&l).contains("\"vm.r1\" -> \"vm.r2\" [label=\"eth1 - eth0\" dir=none];"), "{}", to_dot(&l));
        assert!(to_mermaid(&l).contains("vm_r1 ---|eth1 - eth0| vm_r2"), "{}", to_mermaid(&l));
    }

    #[test]
    fn node_ids_are_unique_in_every_format() {
        let text = "apiVersion: topo/v1\nname: ids\nnetworks:\n  n-1: {mode: isolated}\n  n_1: {mode: isolated}\n\
                    vms:\n  a-b:\n    boot: {kernel: /etc/hostname}\n    nics: [{network: n-1, verify: none}]\n  \
                    a_b:\n    boot: {kernel: /etc/hostname}\n    nics: [{network: n_1, verify: none}]\n  \
                    a_hb:\n    boot: {kernel: /etc/hostname}\n";
        let lab = crate::lab::validate::load(&crate::lab::source::SourceFile::from_text(
            std::path::Path::new("/tmp/ids.yaml"),
            text.to_owned(),
        ))
        .expect("valid lab");
        let ids = |out: &str, decl: &dyn Fn(&str) -> Option<String>| -> Vec<String> {
            out.lines().filter_map(|l| decl(l.trim())).collect()
        };
        let mermaid = to_mermaid(&lab);
        let m_ids = ids(&mermaid, &|l| {
            (!l.contains("---") && l.contains(['[', '('])).then(|| l.split(['[', '(']).next().unwrap_or("").to_owned())
        });
        let dot = to_dot(&lab);
        let d_ids = ids(&dot, &|l| {
            (l.starts_with('"') && !l.contains("->")).then(|| l.split('"').nth(1).unwrap_or("").to_owned())
        });
        for (what, list) in [("mermaid", &m_ids), ("dot", &d_ids)] {
            assert_eq!(list.len(), 5, "{what}: {list:?}");
            let unique: std::collections::BTreeSet<_> = list.iter().collect();
            assert_eq!(unique.len(), list.len(), "{what} ids collide: {list:?}");
        }
        assert!(m_ids.contains(&"vm_a_Hb".to_owned()) && m_ids.contains(&"vm_a_b".to_owned()), "{m_ids:?}");
    }

    /// A lab across hosts: each host a cluster (DOT) or subgraph (Mermaid) around its VMs,
    /// each network labelled with the hosts it is on and the one that serves it.
    #[test]
    fn a_lab_across_hosts_groups_vms_by_host() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/valid/multihost.yaml"));
        let lab = crate::lab::validate::load(&crate::lab::source::SourceFile::read(path).unwrap()).unwrap();
        let dot = to_dot(&lab);
        assert!(dot.contains("subgraph \"cluster_h1\" { label=\"host h1\";\n    \"vm.g1\";\n  }"), "{dot}");
        assert!(dot.contains("subgraph \"cluster_h2\" { label=\"host h2\";\n    \"vm.g2\";\n  }"), "{dot}");
        assert!(dot.contains("lan\\nisolated\\n10.10.0.0/24\\non h1, h2 (served by h1)"), "{dot}");
        let mermaid = to_mermaid(&lab);
        assert!(mermaid.contains("  subgraph host_h2[\"host h2\"]\n    vm_g2\n  end\n"), "{mermaid}");
    }
}
