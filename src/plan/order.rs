//! The one dependency graph of every resource a plan touches, and the order of its steps.
//!
//! Nodes are typed resources on the host ([`Resource`]: pool, volume, network, VM, NIC
//! attachment; per-host network instances and tunnels join here when labs span hosts). An
//! edge goes from a resource to one it references, and says whose reference it is: the lab
//! file's ([`Ref::Desired`]: a VM's NICs on its networks, the volumes a step makes in the
//! pool) or the host's ([`Ref::Observed`]: a domain's NICs on their networks as the host has
//! them, the volumes a step deletes). Every change of the plan is a step on one node.
//!
//! The order is OpenTofu's: a step that creates (create, update, replace, and the no-ops)
//! waits for the creating steps of what it references in the lab file; a step that deletes
//! (delete, and the delete half of a replace) waits for the deleting steps of what references
//! it on the host (the destroy-edge transform: the same edges, reversed). Besides references,
//! a creating step waits for the deletions in the same host namespace, which may free what it
//! takes ([`Namespace`]: a network's bridge, subnet and routes; a domain's MACs and volume
//! names), and every step that makes or deletes a volume waits for the pool step, which only
//! ever creates or starts the pool. A resource without a step of the side asked for is walked
//! through: a VM on an unchanged NIC attachment waits for the network behind it.
//!
//! No cycle can arise: deleting steps wait only for deleting steps (down the host's
//! references: domain -> NIC -> network, domain -> volume) and the pool step (which waits for
//! nothing); creating steps wait for creating steps (down the lab's references, which
//! validation keeps acyclic) and deleting steps. A cycle found all the same is a bug, reported
//! as [`PlanError::Cycle`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use super::change::{Action, Change, Op, PlanError};
use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::lab::ownership::OVERLAY_POOL;

/// A resource on the host, by its libvirt name: a node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A storage pool (the shared overlay pool).
    Pool(String),
    /// A volume of the overlay pool (a VM's overlay or seed, an orphan).
    Volume(String),
    /// A libvirt network, lab-managed or external.
    Network(String),
    /// A libvirt domain.
    Vm(String),
    /// A domain's NIC attachment to a network (plugged by a define or a hot-plug, unplugged by
    /// a define without it or a hot-unplug).
    Nic { domain: String, network: String },
    /// A stretched network's VXLAN device on the host's machine, by device name: a port of
    /// the network's bridge.
    Tunnel(String),
    /// A wire's join of two taps on the host's machine, by the wire's name.
    Wire(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Pool(n) => write!(f, "pool {n}"),
            Resource::Volume(n) => write!(f, "volume {n}"),
            Resource::Network(n) => write!(f, "network {n}"),
            Resource::Vm(n) => write!(f, "domain {n}"),
            Resource::Nic { domain, network } => write!(f, "NIC of {domain} on {network}"),
            Resource::Tunnel(n) => write!(f, "tunnel {n}"),
            Resource::Wire(n) => write!(f, "wire {n}"),
        }
    }
}

impl Resource {
    /// The node of change `c`.
    fn of(c: &Change) -> Self {
        let name = c.libvirt_name.clone();
        match c.address {
            Address::Network(_) => Resource::Network(name),
            Address::Vm(_) => Resource::Vm(name),
            Address::Volume(_) => Resource::Volume(name),
            Address::Pool(_) => Resource::Pool(name),
            Address::Tunnel(_) => Resource::Tunnel(name),
            Address::Wire(_) => Resource::Wire(name),
        }
    }

    /// Which creating steps may free what this resource takes, once deleted.
    fn namespace(&self) -> Option<Namespace> {
        match self {
            Resource::Network(_) => Some(Namespace::Network),
            Resource::Vm(_) | Resource::Volume(_) => Some(Namespace::Domain),
            Resource::Pool(_) | Resource::Nic { .. } | Resource::Tunnel(_) | Resource::Wire(_) => None,
        }
    }
}

/// A host namespace that a deletion frees and a creation takes from: a creating step waits
/// for the deleting steps of its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespace {
    /// Bridge names, subnets and the routes to them (libvirt refuses to start a network
    /// whose bridge name or subnet an active one has: `networkCheckRouteCollision`).
    Network,
    /// MAC addresses and volume names (a seed is uploaded under a partial name that an
    /// interrupted upload's leftover, deleted by the same plan, may hold).
    Domain,
}

/// Whose reference an edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// The lab file's (and the volumes a step makes): what creating steps follow.
    Desired,
    /// The host's (and the volumes a step deletes): what deleting steps follow, reversed.
    Observed,
    /// Both: a volume lives in its pool whether made or deleted.
    Both,
}

impl Ref {
    fn has(self, want: Ref) -> bool {
        self == Ref::Both || self == want
    }
}

/// The graph of every resource a plan touches.
pub struct ResourceGraph {
    graph: DiGraph<Resource, Ref>,
    index: BTreeMap<Resource, NodeIndex>,
}

impl ResourceGraph {
    /// The references of `lab` (each VM's NICs on its networks) and of `observed` (each
    /// domain's NICs on their networks), and the volumes the `changes` make or delete in the
    /// overlay pool.
    pub fn build(lab: &Lab, observed: &Observed, changes: &[Change]) -> Self {
        let mut g = ResourceGraph { graph: DiGraph::new(), index: BTreeMap::new() };
        for vm in lab.vms.values() {
            for nic in &vm.nics {
                let Some(net) = lab.networks.get(&nic.network) else { continue };
                g.attach(vm.libvirt_name.as_str(), net.libvirt_name.as_str(), Ref::Desired);
            }
        }
        for d in observed.domains.values() {
            for network in d.interfaces.iter().filter_map(|i| i.network.as_deref()) {
                g.attach(&d.name, network, Ref::Observed);
            }
        }
        // A stretched network's tunnel is a port of its bridge, and its VMs' frames to the
        // other hosts go through it: the network before the tunnel, the tunnel before the VMs
        // (and, deleting, the other way round).
        for t in lab.share_host().map(|h| lab.tunnels_on(h)).unwrap_or_default() {
            let Some(net) = lab.networks.get(&t.network) else { continue };
            let tunnel = Resource::Tunnel(t.spec.device.clone());
            g.edge(tunnel.clone(), Resource::Network(net.libvirt_name.to_string()), Ref::Desired);
            for vm in lab.vms.values().filter(|vm| vm.nics.iter().any(|n| n.network == t.network)) {
                g.edge(Resource::Vm(vm.libvirt_name.to_string()), tunnel.clone(), Ref::Desired);
            }
        }
        // A wire joins the taps of its two VMs' NICs: both VMs (started, their NICs
        // plugged) before it.
        for w in lab.wires.values() {
            for e in &w.ends {
                if let Some(vm) = lab.vms.get(&e.vm) {
                    g.edge(Resource::Wire(w.name.to_string()), Resource::Vm(vm.libvirt_name.to_string()), Ref::Desired);
                }
            }
        }
        for (device, network) in super::tunnel::owned(lab, observed) {
            let libvirt = format!("{}{network}", lab.prefix);
            g.edge(Resource::Tunnel(device.clone()), Resource::Network(libvirt), Ref::Observed);
        }
        let pool = Resource::Pool(OVERLAY_POOL.to_string());
        for c in changes {
            let node = Resource::of(c);
            for (volume, r) in c.ops.iter().filter_map(volume_of) {
                let v = Resource::Volume(volume.to_string());
                if node != v {
                    g.edge(node.clone(), v.clone(), r);
                }
                g.edge(v, pool.clone(), Ref::Both);
            }
        }
        g
    }

    fn node(&mut self, r: Resource) -> NodeIndex {
        if let Some(&i) = self.index.get(&r) {
            return i;
        }
        let i = self.graph.add_node(r.clone());
        self.index.insert(r, i);
        i
    }

    fn edge(&mut self, from: Resource, to: Resource, r: Ref) {
        let (a, b) = (self.node(from), self.node(to));
        match self.graph.find_edge(a, b) {
            Some(e) if self.graph[e] != r => self.graph[e] = Ref::Both,
            Some(_) => {}
            None => {
                self.graph.add_edge(a, b, r);
            }
        }
    }

    /// `domain` -> its NIC on `network` -> `network`.
    fn attach(&mut self, domain: &str, network: &str, r: Ref) {
        let nic = Resource::Nic { domain: domain.to_string(), network: network.to_string() };
        self.edge(Resource::Vm(domain.to_string()), nic.clone(), r);
        self.edge(nic, Resource::Network(network.to_string()), r);
    }

    /// The resources reached from `from` along the edges `follow` accepts (`Outgoing`: what
    /// it references; `Incoming`: what references it), stopping at those `hit` accepts and
    /// walking through the others: `(hits, every resource visited)`.
    fn reach(
        &self,
        from: &Resource,
        dir: Direction,
        follow: &dyn Fn(Ref) -> bool,
        hit: &dyn Fn(&Resource) -> bool,
    ) -> (Vec<Resource>, Vec<Resource>) {
        let (mut hits, mut visited) = (Vec::new(), Vec::new());
        let Some(&start) = self.index.get(from) else { return (hits, visited) };
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for e in self.graph.edges_directed(i, dir) {
                let j = if dir == Direction::Outgoing { e.target() } else { e.source() };
                if !follow(*e.weight()) || !seen.insert(j) {
                    continue;
                }
                visited.push(self.graph[j].clone());
                if hit(&self.graph[j]) {
                    hits.push(self.graph[j].clone());
                } else {
                    stack.push(j);
                }
            }
        }
        (hits, visited)
    }

    /// Everything `from` references in the lab file, directly or not.
    pub fn desired_dependencies(&self, from: &Resource) -> Vec<Resource> {
        self.reach(from, Direction::Outgoing, &|r| r.has(Ref::Desired), &|_| false).1
    }

    /// The domains that reference `from` on the host (a network's domains, through their NICs).
    pub fn observed_dependents(&self, from: &Resource) -> Vec<Resource> {
        self.reach(from, Direction::Incoming, &|r| r.has(Ref::Observed), &|r| !matches!(r, Resource::Nic { .. })).0
    }
}

/// Which sides a change has: a replace is a delete and a create in one step.
fn sides(c: &Change) -> (bool, bool) {
    match c.action {
        Action::Delete => (true, false),
        Action::Replace => (true, true),
        Action::Create | Action::Update | Action::NoOp => (false, true),
    }
}

/// The volume an op makes or deletes, with whose reference that is.
fn volume_of(op: &Op) -> Option<(&str, Ref)> {
    match op {
        Op::CreateVolume { volume } => Some((volume.name.as_str(), Ref::Desired)),
        Op::UploadSeed { name, .. } => Some((name.as_str(), Ref::Desired)),
        Op::DeleteVolume { name, .. } => Some((name.as_str(), Ref::Observed)),
        _ => None,
    }
}

/// Fills every change's `after` from the graph of `lab`, `observed` and the changes
/// themselves (see the module's rules). The order of `changes` is kept.
///
/// # Errors
/// [`PlanError::Cycle`] when the steps wait for each other in a cycle (a bug; their `after`
/// lists are filled all the same, and apply would report those steps as never started).
pub fn order(lab: &Lab, observed: &Observed, changes: &mut [Change]) -> Result<(), PlanError> {
    let graph = ResourceGraph::build(lab, observed, changes);
    let by_node: BTreeMap<Resource, usize> = changes.iter().enumerate().map(|(i, c)| (Resource::of(c), i)).collect();
    let deleting = |r: &Resource| by_node.get(r).is_some_and(|&i| changes[i].action == Action::Delete);
    let creating = |r: &Resource| by_node.get(r).is_some_and(|&i| sides(&changes[i]).1);
    let mut afters: Vec<BTreeSet<Address>> = Vec::with_capacity(changes.len());
    for c in changes.iter() {
        let node = Resource::of(c);
        let (deletes, creates) = sides(c);
        let mut after: BTreeSet<Resource> = BTreeSet::new();
        if deletes {
            after.extend(graph.reach(&node, Direction::Incoming, &|r| r.has(Ref::Observed), &deleting).0);
        }
        if creates {
            after.extend(graph.reach(&node, Direction::Outgoing, &|r| r.has(Ref::Desired), &creating).0);
            let ns = node.namespace();
            after.extend(by_node.keys().filter(|r| deleting(r) && ns.is_some() && r.namespace() == ns).cloned());
        }
        // Making or deleting a volume needs the pool active, whichever side.
        let pool = |r: &Resource| matches!(r, Resource::Pool(_)) && by_node.contains_key(r);
        after.extend(graph.reach(&node, Direction::Outgoing, &|_| true, &pool).0);
        after.remove(&node);
        afters.push(after.iter().filter_map(|r| by_node.get(r)).map(|&i| changes[i].address.clone()).collect());
    }
    for (c, after) in changes.iter_mut().zip(afters) {
        c.after = after.into_iter().collect();
    }
    check_acyclic(changes)
}

/// [`PlanError::Cycle`] when the `after` lists of `changes` wait for each other in a cycle.
pub fn check_acyclic(changes: &[Change]) -> Result<(), PlanError> {
    let mut g: DiGraph<&Address, ()> = DiGraph::new();
    let index: BTreeMap<&Address, NodeIndex> = changes.iter().map(|c| (&c.address, g.add_node(&c.address))).collect();
    for c in changes {
        for a in &c.after {
            if let (Some(&from), Some(&to)) = (index.get(a), index.get(&c.address)) {
                g.add_edge(from, to, ());
            }
        }
    }
    let Some(scc) = tarjan_scc(&g).into_iter().find(|s| s.len() > 1 || g.contains_edge(s[0], s[0])) else {
        return Ok(());
    };
    let mut cycle: Vec<String> = scc.iter().map(|&i| g[i].to_string()).collect();
    cycle.sort();
    if let Some(first) = cycle.first().cloned() {
        cycle.push(first);
    }
    Err(PlanError::Cycle { cycle })
}

/// Leaves out of networks' blast radius (deletion, replacement, restart) the domains the
/// same plan deletes: a network's deletion or replacement waits for theirs, and a start
/// re-plugs only the NICs of domains the lab keeps.
pub(super) fn prune_deleted_users(changes: &mut [Change]) {
    let deleted: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.action == Action::Delete && matches!(c.address, Address::Vm(_)))
        .map(|c| c.libvirt_name.clone())
        .collect();
    for c in changes.iter_mut() {
        if matches!(c.address, Address::Network(_)) {
            c.blast_radius.retain(|d| !deleted.contains(&d.domain));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::hypervisor::memory::MemoryHypervisor;
    use crate::plan::tests::{applied, lab};
    use crate::plan::{plan, plan_destroy};

    /// Two networks, a VM on each and one on both.
    const LAB: &str = "apiVersion: topo/v1
name: s
networks:
  a: {mode: isolated, subnet: 10.70.1.0/24}
  b: {mode: isolated, subnet: 10.70.2.0/24}
vms:
  x:
    boot: {kernel: KERNEL}
    nics: [{network: a, verify: none}]
  y:
    boot: {kernel: KERNEL}
    nics: [{network: b, verify: none}]
  z:
    boot: {kernel: KERNEL}
    nics: [{network: a, verify: none}, {network: b, verify: none}]
";

    fn afters(p: &crate::plan::Plan) -> Vec<(String, Vec<String>)> {
        p.changes.iter().map(|c| (c.address.to_string(), c.after.iter().map(ToString::to_string).collect())).collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn create_steps_wait_for_what_they_reference_in_the_lab_file() {
        let hv = MemoryHypervisor::new();
        let p = plan(&lab(LAB), &hv.observe().unwrap(), "mem").unwrap();
        assert_eq!(
            afters(&p),
            vec![
                ("network.a".into(), vec![]),
                ("network.b".into(), vec![]),
                ("vm.x".into(), s(&["network.a"])),
                ("vm.y".into(), s(&["network.b"])),
                ("vm.z".into(), s(&["network.a", "network.b"])),
            ]
        );
    }

    /// The destroy-edge transform: a network's deletion waits for the deletions of the domains
    /// on it (as the host has them), and for nothing else; domains wait for nothing.
    #[test]
    fn delete_steps_wait_for_the_deletions_of_what_references_them_on_the_host() {
        let hv = MemoryHypervisor::new();
        let l = lab(LAB);
        applied(&hv, &l);
        let p = plan_destroy(&l, &hv.observe().unwrap());
        let mut got = afters(&p);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("network.a".into(), s(&["vm.x", "vm.z"])),
                ("network.b".into(), s(&["vm.y", "vm.z"])),
                ("vm.x".into(), vec![]),
                ("vm.y".into(), vec![]),
                ("vm.z".into(), vec![]),
            ]
        );
    }

    /// x moves from network a (removed) to network c, which takes a's subnet: c waits for a's
    /// deletion (the same namespace), x's update for c; a's deletion does not wait for x's
    /// update (it is not a deletion), so no cycle arises, and apply converges.
    #[test]
    fn a_vm_moving_to_a_network_that_takes_a_removed_ones_subnet_makes_no_cycle() {
        let hv = MemoryHypervisor::new();
        applied(&hv, &lab(LAB));
        let moved = LAB
            .replace("  a: {mode: isolated, subnet: 10.70.1.0/24}\n", "  c: {mode: isolated, subnet: 10.70.1.0/24}\n")
            .replace("network: a", "network: c");
        let l = lab(&moved);
        let p = plan(&l, &hv.observe().unwrap(), "mem").unwrap();
        let got: BTreeMap<String, Vec<String>> = afters(&p).into_iter().collect();
        assert_eq!(got["network.c"], s(&["network.a"]));
        assert_eq!(got["network.a"], Vec::<String>::new());
        assert_eq!(got["vm.x"], s(&["network.c"]));
        applied(&hv, &l);
        assert!(plan(&l, &hv.observe().unwrap(), "mem").unwrap().is_empty());
    }

    #[test]
    fn a_cycle_is_an_error_naming_its_steps() {
        let hv = MemoryHypervisor::new();
        let mut p = plan(&lab(LAB), &hv.observe().unwrap(), "mem").unwrap();
        assert!(check_acyclic(&p.changes).is_ok());
        p.changes[0].after = vec![p.changes[4].address.clone()];
        let err = check_acyclic(&p.changes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: the plan's steps wait for each other in a cycle: network.a -> vm.z -> network.a"
        );
    }

    #[test]
    fn the_graph_holds_every_kind_with_typed_nodes() {
        let hv = MemoryHypervisor::new();
        let l = lab(LAB);
        applied(&hv, &l);
        let g = ResourceGraph::build(&l, &hv.observe().unwrap(), &[]);
        let mut deps = g.desired_dependencies(&Resource::Vm("s-z".into()));
        deps.sort();
        assert_eq!(
            deps,
            vec![
                Resource::Network("s-a".into()),
                Resource::Network("s-b".into()),
                Resource::Nic { domain: "s-z".into(), network: "s-a".into() },
                Resource::Nic { domain: "s-z".into(), network: "s-b".into() },
            ]
        );
        let mut users = g.observed_dependents(&Resource::Network("s-a".into()));
        users.sort();
        assert_eq!(users, vec![Resource::Vm("s-x".into()), Resource::Vm("s-z".into())]);
    }
}
