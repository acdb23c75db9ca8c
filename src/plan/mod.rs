//! The planner: a pure function from (desired lab, observed host) to a `Plan`, and the
//! refusals found on the way. No I/O happens here.

mod change;
mod conflicts;
mod diff;
pub mod fields;
pub mod graph;
pub mod json;
mod network;
pub mod order;
pub mod paths;
pub mod render;
pub mod saved;
pub mod target;
mod tools;
mod tunnel;
mod vm;
mod volume;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::host::observed::{Observed, Ownership};
use crate::lab::address::Address;
use crate::lab::model::{Lab, NetworkKind};

pub use change::{
    Action, Change, Detached, FieldChange, NicPlug, NicTap, Op, Plan, PlanError, Reason, Shutdown, Summary,
};
use conflicts::{check_conflicts, refused};
pub use conflicts::{check_executable, check_foreign, check_instances, other_instances};
use network::{delete_network, is_replaced, plan_network, release_network};
use order::prune_deleted_users;
use vm::{delete_domain, plan_vm};
use volume::{Pool, disks_in_use, orphaned_volumes};

/// Plans `lab` against `observed`. Pure: reads its arguments only. `uri` is for messages.
pub fn plan(lab: &Lab, observed: &Observed, uri: &str) -> Result<Plan, PlanError> {
    check_conflicts(lab, observed, uri)?;
    let pool = Pool::of(observed);
    let mut changes = Vec::new();
    // Owned objects no longer in the file: VMs first, then networks (reverse dependency).
    let desired_domains: BTreeSet<&str> = lab.vms.values().map(|v| v.libvirt_name.as_str()).collect();
    let desired_networks: BTreeSet<&str> = lab
        .networks
        .values()
        .filter(|n| matches!(n.kind, NetworkKind::Managed(_)))
        .map(|n| n.libvirt_name.as_str())
        .collect();
    for d in observed.domains.values() {
        if d.ownership(lab) == Ownership::ThisLab && !desired_domains.contains(d.name.as_str()) {
            changes.push(delete_domain(lab, d, observed, &pool, Shutdown::Force));
        }
    }
    changes.extend(orphaned_volumes(lab, observed, &changes, false));
    for n in observed.networks.values() {
        if n.ownership(lab) == Ownership::ThisLab && !desired_networks.contains(n.name.as_str()) {
            // Re-declared `external: true`: the lab stops owning it, and it stays, with
            // the VMs on it.
            let external =
                lab.networks.values().find(|l| l.libvirt_name == n.name && matches!(l.kind, NetworkKind::External));
            changes.push(match external {
                Some(l) => release_network(l, n),
                None => delete_network(lab, n, observed),
            });
        }
    }

    let replaced_networks: BTreeSet<String> = lab
        .networks
        .values()
        .filter_map(|n| match (&n.kind, observed.networks.get(n.libvirt_name.as_str())) {
            (NetworkKind::Managed(m), Some(o)) => is_replaced(m, o).then(|| n.libvirt_name.to_string()),
            _ => None,
        })
        .collect();

    // A definition that cannot be rendered refuses the plan (one problem per resource),
    // never a change planned without its step.
    let mut unrendered = Vec::new();
    // Creation in the lab file's order (networks, then VMs, each by name): the steps' order is
    // their `after` lists, from the resource graph; this order is only the plan's display.
    let networks = lab.networks.values().map(|net| plan_network(lab, net, observed, &replaced_networks));
    let vms = lab.vms.values().map(|vm| plan_vm(lab, vm, observed, &pool, &replaced_networks));
    for change in networks.chain(vms) {
        match change {
            Ok(Some(c)) => changes.push(c),
            Ok(None) => {}
            Err(problem) => unrendered.push(problem),
        }
    }
    // Shown after the networks, before the VMs (the steps' order is the graph's).
    let tunnels = tunnel::plan(lab, observed, &changes);
    let at = changes.iter().rposition(|c| matches!(c.address, Address::Network(_))).map_or(changes.len(), |i| i + 1);
    changes.splice(at..at, tunnels);
    // Shown after the VMs they join.
    let wires = wire::plan(lab, observed, &changes);
    changes.extend(wires);
    if !unrendered.is_empty() {
        let src = Arc::new(lab.source.named_source());
        return Err(PlanError::RenderFailed { lab: lab.name.to_string(), problems: unrendered, src });
    }
    if let Some(c) = pool.change(&changes) {
        // After the deletions, before every creation: the pool has no dependencies.
        let at = changes.iter().position(|c| c.action != Action::Delete).unwrap_or(changes.len());
        changes.insert(at, c);
    }
    prune_deleted_users(&mut changes);
    refused(lab, uri, disks_in_use(lab, observed, &changes))?;
    order::order(lab, observed, &mut changes)?;
    let file = lab.source.name();
    let warnings = paths::warnings(lab, observed)
        .iter()
        .map(|w| crate::diag::JsonProblem::of(&file, &lab.source.text, w))
        .collect();
    Ok(Plan { lab: lab.name.to_string(), changes, targets: Vec::new(), warnings, hosts: Default::default() })
}

/// The destroy plan: every object this lab owns on the host, whether or not it is still in
/// the lab file; VMs (forced off with `Shutdown::Force`, as `topo destroy` does unless asked
/// for `--graceful`) and their volumes first, then orphaned volumes, then networks. Objects
/// in the file go in the reverse of the plan's creation order; owned objects no longer in
/// the file go first within their kind, by name. The steps' order is their `after` lists,
/// from the resource graph (the destroy-edge transform, [`order`]). Pure, like `plan`.
pub fn plan_destroy(lab: &Lab, observed: &Observed) -> Plan {
    plan_destroy_with(lab, observed, Shutdown::Force)
}

/// [`plan_destroy`] with the given way of stopping running VMs.
pub fn plan_destroy_with(lab: &Lab, observed: &Observed, shutdown: Shutdown) -> Plan {
    let pool = Pool::of(observed);
    // Objects in the file go in reverse creation order (VMs, then networks, each by name
    // descending); owned objects no longer in the file (rank 0) go first within their kind.
    let rank = delete_rank(lab);
    let by_rank = |c: &Change| rank.get(&c.address).copied().unwrap_or(0);
    let mut changes: Vec<Change> = observed
        .domains
        .values()
        .filter(|d| d.ownership(lab) == Ownership::ThisLab)
        .map(|d| delete_domain(lab, d, observed, &pool, shutdown))
        .collect();
    changes.sort_by_key(by_rank); // stable: ties (not in the file) stay in name order
    let orphans = orphaned_volumes(lab, observed, &changes, true);
    changes.extend(orphans);
    changes.extend(tunnel::deletions(lab, observed));
    let mut networks: Vec<Change> = observed
        .networks
        .values()
        .filter(|n| n.ownership(lab) == Ownership::ThisLab)
        .map(|n| delete_network(lab, n, observed))
        .collect();
    networks.sort_by_key(by_rank);
    changes.extend(networks);
    for c in &mut changes {
        if lab_has(lab, &c.address) {
            // Why it goes; the other reasons (its snapshots) say what else happens.
            c.reasons.retain(|r| *r != Reason::NotInLabFile);
            c.reasons.insert(0, Reason::DestroyRequested);
        }
    }
    if let Some(c) = pool.change(&changes) {
        changes.insert(0, c);
    }
    prune_deleted_users(&mut changes);
    // The destroy plan's steps are deletions (and the pool step): they wait only for
    // deletions, so no cycle can arise; were one found (a bug), apply reports its steps as
    // never started, naming the cycle.
    if let Err(e) = order::order(lab, observed, &mut changes) {
        tracing::error!("{e}");
    }
    Plan { lab: lab.name.to_string(), changes, targets: Vec::new(), warnings: Vec::new(), hosts: Default::default() }
}

/// The position of each lab resource in the reverse of the plan's creation order, from 1.
fn delete_rank(lab: &Lab) -> BTreeMap<Address, usize> {
    let vms = lab.vms.keys().rev().map(|v| Address::Vm(v.clone()));
    let networks = lab.networks.keys().rev().map(|n| Address::Network(n.clone()));
    vms.chain(networks).enumerate().map(|(i, a)| (a, i + 1)).collect()
}

fn lab_has(lab: &Lab, address: &Address) -> bool {
    match address {
        Address::Network(n) => lab.networks.contains_key(n),
        Address::Vm(v) => lab.vms.contains_key(v),
        Address::Tunnel(n) => lab.networks.get(n).is_some_and(|net| lab.is_stretched(net)),
        Address::Wire(w) => lab.wires.contains_key(w),
        Address::Volume(_) | Address::Pool(_) => false,
    }
}

#[cfg(test)]
mod tests;
