//! `--target ADDRESS`: a plan cut down to some resources, with Terraform's semantics. For
//! apply, the targets and everything they depend on (a VM's networks); for destroy, the
//! targets and everything that depends on them (the VMs with a NIC on a targeted network,
//! as the host has them). The cut plan records its targets, which renderers show as partial
//! and the convergence check after apply honours. Pure, like the planner.

use std::collections::BTreeSet;

use super::{Change, Op, Plan};
use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::plan::order::{Resource, ResourceGraph};

/// Which way targeting follows dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `plan`/`apply`: a target and what it depends on.
    Apply,
    /// `destroy`: a target and what depends on it.
    Destroy,
}

/// A target that names nothing topo could plan.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("--target {address}: lab {lab} has no such resource, and none by that address is on the host")]
#[diagnostic(code(topo::plan::target), help("{help}"))]
pub struct UnknownTarget {
    pub address: String,
    pub lab: String,
    pub help: String,
}

/// Checks that every target names a resource of the lab file or a change of `full` (owned
/// objects no longer in the file, orphaned volumes, the pool). All unknown targets are
/// reported, the first as the error, with the known addresses (and a likely typo) as help.
pub fn check(lab: &Lab, full: &Plan, targets: &[Address]) -> Result<(), UnknownTarget> {
    let mut known: BTreeSet<Address> = lab.networks.keys().map(|n| Address::Network(n.clone())).collect();
    known.extend(lab.vms.keys().map(|v| Address::Vm(v.clone())));
    known.extend(lab.wires.keys().map(|w| Address::Wire(w.clone())));
    // A stretched network's tunnels are the lab's whether or not the plan changes them.
    known.extend(lab.networks.values().filter(|n| lab.is_stretched(n)).map(|n| Address::Tunnel(n.name.clone())));
    known.extend(full.changes.iter().map(|c| c.address.clone()));
    let unknown: Vec<&Address> = targets.iter().filter(|t| !known.contains(t)).collect();
    let Some(first) = unknown.first() else { return Ok(()) };
    // A group (`vm.GROUP`, its members) is a target too, expanded before this check.
    let mut names: Vec<String> = known.iter().map(ToString::to_string).collect();
    names.extend(lab.groups.keys().map(|g| Address::Vm(g.clone()).to_string()));
    names.sort();
    names.dedup();
    let mut help = crate::diag::suggest(&first.to_string(), &names, "targets are", "targets are");
    if unknown.len() > 1 {
        let rest: Vec<String> = unknown[1..].iter().map(ToString::to_string).collect();
        help = format!("{help}; also unknown: {}", rest.join(", "));
    }
    Err(UnknownTarget { address: first.to_string(), lab: lab.name.to_string(), help })
}

/// The addresses `targets` reach in `direction`, one walk of the plan's resource graph
/// ([`ResourceGraph`], built from the lab file and the host): for apply, each target and what
/// it references in the lab file, directly or not (a VM's networks); for destroy, each target
/// and the domains of this lab that reference it on the host (the owned domains with a NIC
/// on a targeted network, whether or not they are still in the file).
pub fn closure(lab: &Lab, observed: &Observed, targets: &[Address], direction: Direction) -> BTreeSet<Address> {
    let graph = ResourceGraph::build(lab, observed, &[]);
    let mut out: BTreeSet<Address> = targets.iter().cloned().collect();
    for t in targets {
        let Some(node) = resource(lab, observed, t) else { continue };
        match direction {
            Direction::Apply => {
                out.extend(graph.desired_dependencies(&node).iter().filter_map(|r| lab_address(lab, r)))
            }
            Direction::Destroy => out.extend(graph.observed_dependents(&node).iter().filter_map(|r| match r {
                Resource::Vm(domain) => owned_address(lab, observed, domain),
                _ => None,
            })),
        }
    }
    out
}

/// The graph node of target `a`: a lab resource by its libvirt name; a network no longer in
/// the file by the libvirt name of its owner tag.
fn resource(lab: &Lab, observed: &Observed, a: &Address) -> Option<Resource> {
    match a {
        Address::Network(n) => Some(Resource::Network(
            lab.networks.get(n).map(|net| net.libvirt_name.to_string()).or_else(|| owned_name(observed, a))?,
        )),
        Address::Vm(v) => lab.vms.get(v).map(|vm| Resource::Vm(vm.libvirt_name.to_string())),
        Address::Tunnel(n) => {
            lab.networks.get(n).map(|net| Resource::Tunnel(crate::lab::hosts::tunnel_device(lab.vni(net))))
        }
        Address::Wire(w) => lab.wires.contains_key(w).then(|| Resource::Wire(w.to_string())),
        Address::Volume(_) | Address::Pool(_) => None,
    }
}

/// The lab address of resource `r` (a network or VM of the lab file).
fn lab_address(lab: &Lab, r: &Resource) -> Option<Address> {
    match r {
        Resource::Network(name) => {
            lab.networks.values().find(|n| n.libvirt_name == *name).map(|n| Address::Network(n.name.clone()))
        }
        Resource::Vm(name) => lab.vms.values().find(|v| v.libvirt_name == *name).map(|v| Address::Vm(v.name.clone())),
        Resource::Tunnel(device) => lab
            .networks
            .values()
            .find(|n| lab.is_stretched(n) && crate::lab::hosts::tunnel_device(lab.vni(n)) == *device)
            .map(|n| Address::Tunnel(n.name.clone())),
        Resource::Wire(name) => lab.wires.keys().find(|w| w.as_str() == name).map(|w| Address::Wire(w.clone())),
        Resource::Pool(_) | Resource::Volume(_) | Resource::Nic { .. } => None,
    }
}

/// The address in the owner tag of `domain`, when this lab owns it.
fn owned_address(lab: &Lab, observed: &Observed, domain: &str) -> Option<Address> {
    let tag = observed.domains.get(domain)?.owner.as_ref()?;
    (tag.lab == lab.name.as_str()).then(|| tag.resource.parse::<Address>().ok()).flatten()
}

/// The libvirt name of the network this lab owns under address `a`, from its owner tag.
fn owned_name(observed: &Observed, a: &Address) -> Option<String> {
    observed
        .networks
        .values()
        .find(|n| n.owner.as_ref().is_some_and(|t| t.resource.parse::<Address>().ok().as_ref() == Some(a)))
        .map(|n| n.name.clone())
}

/// `full` cut down to the changes of `closure`, plus the overlay pool step when a kept
/// change needs it; `after` keeps only kept changes; the plan records `targets`.
pub fn restrict(full: Plan, closure: &BTreeSet<Address>, targets: &[Address]) -> Plan {
    let uses_pool = |c: &Change| c.ops.iter().any(|op| matches!(op, Op::CreateVolume { .. } | Op::DeleteVolume { .. }));
    let needs_pool = full.changes.iter().filter(|c| closure.contains(&c.address)).any(uses_pool);
    let mut changes: Vec<Change> = full
        .changes
        .into_iter()
        .filter(|c| closure.contains(&c.address) || (needs_pool && matches!(c.address, Address::Pool(_))))
        .collect();
    let kept: BTreeSet<Address> = changes.iter().map(|c| c.address.clone()).collect();
    for c in &mut changes {
        c.after.retain(|a| kept.contains(a));
    }
    let mut targets = targets.to_vec();
    targets.sort();
    targets.dedup();
    Plan { lab: full.lab, changes, targets, warnings: full.warnings, hosts: Default::default() }
}

/// What the targets of a run reach on one observation ([`closure`]), computed once and used
/// by every cut made on that observation: the plan, its warnings, the convergence check,
/// the NICs verified. No targets: the whole lab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach(Option<BTreeSet<Address>>);

impl Reach {
    /// The whole lab (no `--target`).
    pub fn whole() -> Self {
        Reach(None)
    }

    /// What `targets` reach on `observed` in `direction`; [`Reach::whole`] when there are none.
    pub fn of(lab: &Lab, observed: &Observed, targets: &[Address], direction: Direction) -> Self {
        Reach((!targets.is_empty()).then(|| closure(lab, observed, targets, direction)))
    }

    /// Whether `a` is reached (always, for the whole lab).
    pub fn contains(&self, a: &Address) -> bool {
        self.0.as_ref().is_none_or(|r| r.contains(a))
    }

    /// The VMs reached; `None` for the whole lab.
    pub fn vms(&self) -> Option<BTreeSet<crate::lab::model::VmName>> {
        self.0.as_ref().map(reached_vms)
    }

    /// `full` cut to what is reached ([`restrict`]), recording `targets`; unchanged for the
    /// whole lab.
    pub fn cut(&self, full: Plan, targets: &[Address]) -> Plan {
        match &self.0 {
            Some(r) => restrict(full, r, targets),
            None => full,
        }
    }
}

/// Checks and applies `targets` to `full` (nothing to do when there are none).
pub fn targeted(
    lab: &Lab,
    observed: &Observed,
    full: Plan,
    targets: &[Address],
    direction: Direction,
) -> Result<Plan, UnknownTarget> {
    targeted_in(lab, observed, full, targets, &Reach::of(lab, observed, targets, direction))
}

/// [`targeted`] with what the targets reach on `observed` already known.
pub fn targeted_in(
    lab: &Lab,
    observed: &Observed,
    full: Plan,
    targets: &[Address],
    reach: &Reach,
) -> Result<Plan, UnknownTarget> {
    if targets.is_empty() {
        return Ok(full);
    }
    check(lab, &full, targets)?;
    let mut plan = reach.cut(full, targets);
    // Warnings about the VMs the plan reaches only.
    let file = lab.source.name();
    plan.warnings = super::paths::warnings_for(lab, observed, reach.vms().as_ref())
        .iter()
        .map(|w| crate::diag::JsonProblem::of(&file, &lab.source.text, w))
        .collect();
    Ok(plan)
}

/// The VMs among `reach`.
pub fn reached_vms(reach: &BTreeSet<Address>) -> BTreeSet<crate::lab::model::VmName> {
    reach
        .iter()
        .filter_map(|a| match a {
            Address::Vm(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}
