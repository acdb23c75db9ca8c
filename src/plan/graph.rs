//! The lab's dependency graph (petgraph): VMs depend on the networks their NICs use.
//!
//! One graph, two orders: `create_order` is a topological order (dependencies first) and
//! `delete_order` is exactly its reverse. Also renders the graph as DOT or Mermaid.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::lab::address::Address;
use crate::lab::model::{Lab, NetworkKind, NetworkName, VmName};

/// A resource of the lab, as a graph node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Network(NetworkName),
    Vm(VmName),
}

impl Node {
    /// The resource address used in plans and JSON: `network.NAME` or `vm.NAME`.
    pub fn address(&self) -> Address {
        match self {
            Node::Network(n) => Address::Network(n.clone()),
            Node::Vm(v) => Address::Vm(v.clone()),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address())
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GraphError {
    #[error("dependency cycle: {}", cycle.iter().map(|n| n.address().to_string()).chain(cycle.first().map(|n| n.address().to_string())).collect::<Vec<_>>().join(" -> "))]
    #[diagnostic(code(topo::plan::graph::cycle), help("remove one of the dependencies in the cycle"))]
    Cycle { cycle: Vec<Node> },
}

/// An edge from a dependency to its dependent; the label names the NICs that create it.
#[derive(Clone, Debug)]
pub struct Edge {
    pub nics: Vec<String>,
}

pub struct LabGraph {
    graph: DiGraph<Node, Edge>,
    order: Vec<Node>,
}

impl LabGraph {
    /// Builds the graph. Nodes are added in sorted order so every order derived from the
    /// graph is deterministic.
    pub fn build(lab: &Lab) -> Result<Self, GraphError> {
        let mut graph = DiGraph::new();
        let mut index = std::collections::BTreeMap::new();
        for name in lab.networks.keys() {
            let node = Node::Network(name.clone());
            index.insert(node.clone(), graph.add_node(node));
        }
        for name in lab.vms.keys() {
            let node = Node::Vm(name.clone());
            index.insert(node.clone(), graph.add_node(node));
        }
        for vm in lab.vms.values() {
            let mut by_net: std::collections::BTreeMap<&NetworkName, Vec<String>> = Default::default();
            for nic in &vm.nics {
                by_net.entry(&nic.network).or_default().push(nic.label());
            }
            for (net, nics) in by_net {
                // A NIC's network is declared: validation guarantees it, so a missing node
                // means a model built by hand is wrong; skip the edge rather than panic.
                if let (Some(&from), Some(&to)) =
                    (index.get(&Node::Network(net.clone())), index.get(&Node::Vm(vm.name.clone())))
                {
                    graph.add_edge(from, to, Edge { nics });
                }
            }
        }
        Self::from_graph(graph)
    }

    fn from_graph(graph: DiGraph<Node, Edge>) -> Result<Self, GraphError> {
        match toposort(&graph, None) {
            Ok(order) => {
                let order = stable_order(&graph, &order);
                Ok(Self { graph, order })
            }
            Err(_) => {
                // toposort names one node of a cycle; tarjan finds all of its members.
                let mut cycle: Vec<Node> = tarjan_scc(&graph)
                    .into_iter()
                    .find(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| graph[i].clone())
                    .collect();
                cycle.sort();
                Err(GraphError::Cycle { cycle })
            }
        }
    }

    /// Dependencies first (networks before the VMs on them); ties broken by address.
    pub fn create_order(&self) -> &[Node] {
        &self.order
    }

    /// Exactly the reverse of `create_order`.
    pub fn delete_order(&self) -> Vec<Node> {
        self.order.iter().rev().cloned().collect()
    }

    /// The nodes `node` depends on.
    pub fn dependencies(&self, node: &Node) -> Vec<Node> {
        let Some(i) = self.find(node) else { return Vec::new() };
        let mut v: Vec<Node> =
            self.graph.neighbors_directed(i, petgraph::Direction::Incoming).map(|j| self.graph[j].clone()).collect();
        v.sort();
        v
    }

    /// The nodes that depend on `node`.
    pub fn dependents(&self, node: &Node) -> Vec<Node> {
        let Some(i) = self.find(node) else { return Vec::new() };
        let mut v: Vec<Node> =
            self.graph.neighbors_directed(i, petgraph::Direction::Outgoing).map(|j| self.graph[j].clone()).collect();
        v.sort();
        v
    }

    fn find(&self, node: &Node) -> Option<NodeIndex> {
        self.graph.node_indices().find(|&i| &self.graph[i] == node)
    }

    /// Graphviz DOT: networks as ellipses (external ones dashed), VMs as boxes, one edge
    /// per VM and network labelled with the NICs.
    pub fn to_dot(&self, lab: &Lab) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph \"{}\" {{", lab.name);
        let _ = writeln!(s, "  rankdir=LR;");
        for node in &self.order {
            let _ = match node {
                Node::Network(n) => {
                    let (style, label) = network_label(lab, n);
                    writeln!(s, "  \"{}\" [shape=ellipse{style} label=\"{label}\"];", node.address())
                }
                Node::Vm(v) => writeln!(s, "  \"{}\" [shape=box label=\"{v}\"];", node.address()),
            };
        }
        for (from, to, nics) in self.edges() {
            let _ = writeln!(s, "  \"{from}\" -> \"{to}\" [label=\"{}\" dir=none];", nics.join(","));
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart of the same graph.
    pub fn to_mermaid(&self, lab: &Lab) -> String {
        // Mermaid ids are [A-Za-z0-9_]. Names are lowercase letters, digits, '-' and '_', so
        // '-' becomes `_H` (an uppercase letter no name has): `a-b` and `a_b` stay apart.
        let id = |n: &Node| mermaid_id(&n.address().to_string());
        let mut s = String::from("flowchart LR\n");
        for node in &self.order {
            let _ = match node {
                Node::Network(n) => {
                    let (_, label) = network_label(lab, n);
                    // Mermaid breaks lines with <br/>, not \n.
                    writeln!(s, "  {}((\"{}\"))", id(node), label.replace("\\n", "<br/>"))
                }
                Node::Vm(v) => writeln!(s, "  {}[\"{v}\"]", id(node)),
            };
        }
        for (from, to, nics) in self.edges() {
            let _ = writeln!(s, "  {} ---|{}| {}", id(&from), nics.join(","), id(&to));
        }
        s
    }

    fn edges(&self) -> Vec<(Node, Node, Vec<String>)> {
        let mut v: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (a, b) = self.graph.edge_endpoints(e)?;
                Some((self.graph[a].clone(), self.graph[b].clone(), self.graph[e].nics.clone()))
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }
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

/// A topological order made deterministic: Kahn's algorithm taking the smallest ready node
/// (by `Node` order) each time. `topo` is any valid topological order (proves acyclicity).
fn stable_order(graph: &DiGraph<Node, Edge>, topo: &[NodeIndex]) -> Vec<Node> {
    let mut indegree: Vec<usize> = vec![0; graph.node_count()];
    for e in graph.edge_indices() {
        if let Some((_, b)) = graph.edge_endpoints(e) {
            indegree[b.index()] += 1;
        }
    }
    let mut ready: BTreeSet<(Node, NodeIndex)> =
        topo.iter().filter(|i| indegree[i.index()] == 0).map(|&i| (graph[i].clone(), i)).collect();
    let mut out = Vec::with_capacity(topo.len());
    while let Some((node, i)) = ready.pop_first() {
        out.push(node);
        for j in graph.neighbors_directed(i, petgraph::Direction::Outgoing) {
            indegree[j.index()] -= 1;
            if indegree[j.index()] == 0 {
                ready.insert((graph[j].clone(), j));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Node {
        Node::Network(NetworkName::new(s).unwrap())
    }
    fn v(s: &str) -> Node {
        Node::Vm(VmName::new(s).unwrap())
    }

    #[test]
    fn cycle_names_every_member() {
        let mut g = DiGraph::new();
        let a = g.add_node(v("a"));
        let b = g.add_node(v("b"));
        let c = g.add_node(v("c"));
        let d = g.add_node(n("d"));
        g.add_edge(a, b, Edge { nics: vec![] });
        g.add_edge(b, c, Edge { nics: vec![] });
        g.add_edge(c, a, Edge { nics: vec![] });
        g.add_edge(d, a, Edge { nics: vec![] });
        let err = LabGraph::from_graph(g).err().expect("a cycle");
        assert_eq!(err.to_string(), "dependency cycle: vm.a -> vm.b -> vm.c -> vm.a");
    }

    #[test]
    fn order_is_dependencies_first_and_reverse_for_delete() {
        let mut g = DiGraph::new();
        let vm_a = g.add_node(v("a"));
        let net_z = g.add_node(n("z"));
        let net_b = g.add_node(n("b"));
        g.add_edge(net_z, vm_a, Edge { nics: vec!["eth0".into()] });
        g.add_edge(net_b, vm_a, Edge { nics: vec!["eth1".into()] });
        let lg = LabGraph::from_graph(g).unwrap();
        assert_eq!(lg.create_order(), &[n("b"), n("z"), v("a")]);
        assert_eq!(lg.delete_order(), vec![v("a"), n("z"), n("b")]);
        assert_eq!(lg.dependencies(&v("a")), vec![n("b"), n("z")]);
        assert_eq!(lg.dependents(&n("z")), vec![v("a")]);
    }

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
        let g = LabGraph::build(&lab).unwrap();
        let ids = |out: &str, decl: &dyn Fn(&str) -> Option<String>| -> Vec<String> {
            out.lines().filter_map(|l| decl(l.trim())).collect()
        };
        let mermaid = g.to_mermaid(&lab);
        let m_ids = ids(&mermaid, &|l| {
            (!l.contains("---") && l.contains(['[', '('])).then(|| l.split(['[', '(']).next().unwrap_or("").to_owned())
        });
        let dot = g.to_dot(&lab);
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
