//! `topo graph`: the lab file's resources and references drawn as DOT or Mermaid.
//!
//! A picture, not an order: networks, VMs and an edge from each network to each VM with a
//! NIC on it, labelled with those NICs. The order of steps lives in the one resource graph
//! ([`crate::plan::order::ResourceGraph`]). Nodes come networks first, then VMs, each by
//! name; edges by (network, VM).

use std::fmt::Write as _;

use crate::lab::address::Address;
use crate::lab::model::{Lab, NetworkKind, NetworkName, VmName};

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
/// and the labels of those NICs, sorted by (network, VM).
fn edges(lab: &Lab) -> Vec<(Address, Address, Vec<String>)> {
    let mut by_pair: std::collections::BTreeMap<(&NetworkName, &VmName), Vec<String>> = Default::default();
    for vm in lab.vms.values() {
        for nic in vm.nics.iter().filter(|n| lab.networks.contains_key(&n.network)) {
            by_pair.entry((&nic.network, &vm.name)).or_default().push(nic.label());
        }
    }
    by_pair.into_iter().map(|((n, v), nics)| (Address::Network(n.clone()), Address::Vm(v.clone()), nics)).collect()
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

fn network_label(lab: &Lab, n: &NetworkName) -> (&'static str, String) {
    match lab.networks.get(n).map(|net| &net.kind) {
        Some(NetworkKind::Managed(m)) => {
            let subnet = m.subnet.map(|s| format!("\\n{s}")).unwrap_or_default();
            ("", format!("{n}\\n{}{subnet}", m.mode))
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
}
