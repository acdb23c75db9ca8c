//! The order of a plan's changes (`Change::after`).

use std::collections::{BTreeMap, BTreeSet};

use super::change::{Action, Change, Op};
use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::plan::graph::{LabGraph, Node};

/// Fills every change's `after`: deletions of VMs and volumes first (VMs before the
/// networks they use, in the graph's reverse order), network deletions after every VM
/// deletion and after the VM changes that unplug NICs from them, creations and updates
/// after every deletion and after the changes of what they depend on in the lab graph;
/// every change with a volume op after the pool step.
pub(super) fn order_changes(lab: &Lab, graph: Option<&LabGraph>, observed: &Observed, changes: &mut [Change]) {
    let is_delete = |c: &Change| c.action == Action::Delete;
    let vm_deletes: Vec<Address> = changes
        .iter()
        .filter(|c| is_delete(c) && matches!(c.address, Address::Vm(_) | Address::Volume(_)))
        .map(|c| c.address.clone())
        .collect();
    let all_deletes: Vec<Address> = changes.iter().filter(|c| is_delete(c)).map(|c| c.address.clone()).collect();
    let present: BTreeSet<Address> = changes.iter().map(|c| c.address.clone()).collect();
    let pool_step = changes.iter().find(|c| matches!(c.address, Address::Pool(_))).map(|c| c.address.clone());
    // VM changes that take a NIC off a network (by libvirt name): hot-unplugged, or left
    // out of the VM's new definition.
    let unplugs: Vec<(Address, String)> = changes
        .iter()
        .filter(|c| !is_delete(c))
        .filter_map(|c| match &c.address {
            Address::Vm(v) => Some((c, lab.vms.get(v)?, observed.domains.get(&c.libvirt_name)?)),
            _ => None,
        })
        .flat_map(|(c, vm, d)| {
            let wanted: BTreeSet<&str> =
                vm.nics.iter().filter_map(|n| lab.networks.get(&n.network)).map(|n| n.libvirt_name.as_str()).collect();
            d.interfaces
                .iter()
                .filter_map(|i| i.network.clone())
                .filter(|n| !wanted.contains(n.as_str()))
                .map(|n| (c.address.clone(), n))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut afters: Vec<Vec<Address>> = Vec::with_capacity(changes.len());
    for c in changes.iter() {
        let mut after: BTreeSet<Address> = BTreeSet::new();
        match (&c.address, is_delete(c)) {
            (Address::Vm(_) | Address::Volume(_), true) => {}
            (Address::Network(_), true) => {
                after.extend(vm_deletes.iter().cloned());
                after.extend(unplugs.iter().filter(|(_, n)| *n == c.libvirt_name).map(|(a, _)| a.clone()));
            }
            (Address::Pool(_), _) => {}
            (Address::Network(_), false) => after.extend(all_deletes.iter().cloned()),
            (Address::Vm(v), false) => {
                // Not after network deletions: a network deletion may wait for this VM to
                // unplug from it. A network the VM needs waits for them itself.
                after.extend(vm_deletes.iter().cloned());
                for dep in graph.map(|g| g.dependencies(&Node::Vm(v.clone()))).unwrap_or_default() {
                    after.insert(dep.address());
                }
            }
            (Address::Volume(_), false) => after.extend(all_deletes.iter().cloned()),
        }
        if let Some(p) = &pool_step
            && c.ops
                .iter()
                .any(|op| matches!(op, Op::CreateVolume { .. } | Op::DeleteVolume { .. } | Op::UploadSeed { .. }))
        {
            after.insert(p.clone());
        }
        after.remove(&c.address);
        after.retain(|a| present.contains(a));
        afters.push(after.into_iter().collect());
    }
    // A network deletion waits for VM changes that unplug from it, unless that VM change
    // waits (through its own dependencies) for the deletion: it needs a network that
    // reuses the bridge or subnet, and libvirt lets the network go from under it.
    let index: BTreeMap<Address, usize> = changes.iter().enumerate().map(|(i, c)| (c.address.clone(), i)).collect();
    for i in 0..changes.len() {
        if !(is_delete(&changes[i]) && matches!(changes[i].address, Address::Network(_))) {
            continue;
        }
        let deps = afters[i].clone();
        for d in deps {
            let Some(&j) = index.get(&d) else { continue };
            if !is_delete(&changes[j]) && waits_for(&afters, &index, j, i) {
                afters[i].retain(|a| *a != d);
            }
        }
    }
    for (c, after) in changes.iter_mut().zip(afters) {
        c.after = after;
    }
}

/// Whether change `from` (transitively) waits for change `to`.
pub(super) fn waits_for(afters: &[Vec<Address>], index: &BTreeMap<Address, usize>, from: usize, to: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if seen.insert(i) {
            stack.extend(afters[i].iter().filter_map(|a| index.get(a).copied()));
        }
    }
    false
}

/// Leaves out of networks' blast radius (deletion, replacement, restart) the domains the
/// same plan deletes: they are gone before the network changes.
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
