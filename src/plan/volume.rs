//! Volumes and the shared overlay pool: what goes with a deleted VM, orphans, disks in use.

use std::collections::BTreeSet;

use super::change::{Action, Change, FieldChange, Op, Reason};
use crate::diag::{Code, Problem};
use crate::host::observed::{DomainState, Observed, ObservedDomain, ObservedPool, Ownership};
use crate::lab::address::Address;
use crate::lab::model::{Lab, PoolName, Vm, VolumeName};
use crate::lab::ownership::{DEFAULT_OVERLAY_DIR, OVERLAY_POOL, overlay_pool, volume_owned_by};
use crate::plan::fields::Field;

/// The shared overlay pool as the plan sees it: where volumes go, and whether a step must
/// create or start it first.
pub(super) struct Pool {
    pub(super) path: String,
    pub(super) observed: Option<(PoolName, bool)>,
}

impl Pool {
    pub(super) fn of(observed: &Observed) -> Self {
        match &observed.pool {
            Some(p) => Pool { path: p.path.clone(), observed: Some((pool_name(p), p.active)) },
            None => Pool { path: DEFAULT_OVERLAY_DIR.to_string(), observed: None },
        }
    }

    /// Full path of volume `name` in the pool.
    pub(super) fn volume_path(&self, name: &str) -> String {
        format!("{}/{name}", self.path.trim_end_matches('/'))
    }

    /// A step that creates or starts the pool, when a change of `changes` needs it.
    pub(super) fn change(&self, changes: &[Change]) -> Option<Change> {
        let needed = changes
            .iter()
            .flat_map(|c| &c.ops)
            .any(|op| matches!(op, Op::CreateVolume { .. } | Op::DeleteVolume { .. } | Op::UploadSeed { .. }));
        let (action, reasons) = match &self.observed {
            _ if !needed => return None,
            Some((_, true)) => return None,
            Some((_, false)) => (Action::Update, vec![Reason::PoolNeeded]),
            None => (Action::Create, vec![Reason::PoolNeeded]),
        };
        let fields = vec![FieldChange {
            path: Field::Path,
            before: (action == Action::Update).then(|| self.path.clone()),
            after: Some(self.path.clone()),
            forces_replacement: false,
            restarts: false,
        }];
        Some(Change {
            address: Address::Pool(overlay_pool()),
            libvirt_name: OVERLAY_POOL.to_string(),
            action,
            reasons,
            fields,
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops: vec![Op::EnsurePool { name: overlay_pool(), path: self.path.clone() }],
        })
    }
}

/// The observed overlay pool's name. It is looked up by [`OVERLAY_POOL`], and a name the
/// host reports always passed libvirt's rule, so the fallback is never taken.
fn pool_name(p: &ObservedPool) -> PoolName {
    PoolName::new(&p.name).unwrap_or_else(|_| overlay_pool())
}

/// The volumes deleted with domain `d` (deleted or replaced): walking each disk's backing
/// chain from its source down, every file that is a volume of the overlay pool (by identity,
/// [`Observed::same_file`]) and that no other domain may use, down to and including the
/// first one tagged as this lab's (its overlay or seed). So the layers of external snapshots
/// stacked on the lab's overlay go with it. Never a file below a lab volume (a base image),
/// never one outside the overlay pool, never one that another domain may use (running or
/// not, its whole chain), never a lab VM's base image; top layers first.
pub(super) fn domain_volumes(lab: &Lab, d: &ObservedDomain, observed: &Observed, pool: &Pool) -> Vec<Op> {
    let Some((pool_name, _)) = &pool.observed else { return Vec::new() };
    let lab_name = lab.name.as_str();
    let bases: Vec<String> =
        lab.vms.values().filter_map(|v| v.disk.as_ref()).map(|x| x.image.display().to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for i in 0..d.disks.len() {
        let mut below_lab = false;
        for file in d.chain(i) {
            // The pool volume this file is: by identity in an active pool (a tagged lab
            // volume also when only its name says so); in an inactive pool, which lists no
            // volumes, a file in its folder.
            let volume = observed
                .volumes
                .values()
                .find(|v| match observed.same_file(&v.path, file) {
                    crate::host::observed::Same::Yes => true,
                    crate::host::observed::Same::Maybe => volume_owned_by(lab_name, &v.name),
                    crate::host::observed::Same::No => false,
                })
                .map(|v| (v.name.clone(), v.path.clone()))
                .or_else(|| {
                    let p = std::path::Path::new(file);
                    (observed.volumes.is_empty()
                        && p.parent().is_some_and(|dir| dir == std::path::Path::new(&pool.path)))
                    .then(|| (file.rsplit('/').next().unwrap_or_default().to_string(), file.to_string()))
                });
            let Some((name, path)) = volume else {
                continue; // outside the pool: not topo's; the layers below may still be
            };
            let shared = observed.domains.values().any(|o| o.name != d.name && o.may_use(observed, &path));
            let base = bases.iter().any(|b| observed.same_file(b, &path) != crate::host::observed::Same::No);
            let tagged = volume_owned_by(lab_name, &name);
            // Under a lab volume only lab volumes go (a layer named by libvirt after the
            // overlay keeps its tag: `NAME.TAG.s1`); the first other one is a base.
            if shared || base || (below_lab && !tagged) {
                break; // it and everything under it stay
            }
            below_lab |= tagged;
            if !out.contains(&name) {
                out.push(name.clone());
            }
        }
    }
    // A volume the pool lists, or a file name in its folder: always a volume name.
    out.into_iter()
        .filter_map(|name| VolumeName::new(&name).ok())
        .map(|name| Op::DeleteVolume { pool: pool_name.clone(), name })
        .collect()
}

/// Volumes the plan makes anew (`CreateVolume`, `UploadSeed`) that are there, are not
/// deleted first by the plan, and are files another domain may use: a create would fail on
/// "exists" after the VM it replaces is gone, and an upload deletes the old volume first,
/// under that domain. Refused before anything is touched, with the commands that free it.
pub(super) fn disks_in_use(lab: &Lab, observed: &Observed, changes: &[Change]) -> Vec<Problem> {
    let deleted: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| &c.ops)
        .filter_map(|op| match op {
            Op::DeleteVolume { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for c in changes {
        let Address::Vm(vm_name) = &c.address else { continue };
        let Some(vm) = lab.vms.get(vm_name) else { continue };
        for op in &c.ops {
            let name = match op {
                Op::CreateVolume { volume } => volume.name.as_str(),
                Op::UploadSeed { name, .. } => name.as_str(),
                _ => continue,
            };
            let Some(v) = observed.volumes.get(name) else { continue };
            if deleted.contains(name) {
                continue;
            }
            let users: Vec<&ObservedDomain> = observed
                .domains
                .values()
                .filter(|d| vm.libvirt_name != d.name)
                .filter(|d| d.may_use(observed, &v.path))
                .collect();
            let Some(user) = users.first() else { continue };
            let how = if user.state == DomainState::Running {
                format!("`virsh blockpull {} <disk> --wait` (copies the data into its top layer)", user.name)
            } else {
                format!(
                    "`qemu-img rebase -b '' <its top layer>` while it is shut off, or `virsh undefine {}`",
                    user.name
                )
            };
            out.push(Problem::at(
                Code::DiskInUse,
                vm.span,
                format!(
                    "vm {}: volume {name} ({}) must be made anew, but domain `{}` uses it (a layer of its disk's backing chain): topo never deletes a disk under a domain",
                    vm.name, v.path, user.name
                ),
                "this VM's disk",
                format!("make {} stop using it first: {how}; then plan again", user.name),
            ));
        }
    }
    out
}

/// The snapshot metadata removal of a VM that is deleted or replaced, with its reason and
/// field; nothing when it has no snapshots.
pub(super) fn snapshot_removal(d: &ObservedDomain) -> Option<(Op, Reason, FieldChange)> {
    if d.snapshots.is_empty() {
        return None;
    }
    Some((
        Op::DeleteSnapshotMetadata { names: d.snapshots.clone() },
        Reason::Snapshots { names: d.snapshots.clone() },
        FieldChange {
            path: Field::Snapshots,
            before: Some(d.snapshots.join(", ")),
            after: None,
            forces_replacement: false,
            restarts: false,
        },
    ))
}

/// Volumes of this lab instance ([`volume_is_ours`]) that are not deleted by `changes` and
/// that no domain left after `changes` may use (with `all`, for destroy: no domain but this
/// lab's): one deletion each. "Use" is decided by identity over each domain's whole backing
/// chain, running or not ([`ObservedDomain::may_use`]): a file reached through another path
/// (a pool folder moved, a symlink at the old path) or below an external snapshot's layer
/// is in use.
pub(super) fn orphaned_volumes(lab: &Lab, observed: &Observed, changes: &[Change], all: bool) -> Vec<Change> {
    let Some(pool) = &observed.pool else { return Vec::new() };
    let deleted: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| &c.ops)
        .filter_map(|op| match op {
            Op::DeleteVolume { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let gone: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.action == Action::Delete && matches!(c.address, Address::Vm(_)))
        .map(|c| c.libvirt_name.as_str())
        .collect();
    let users: Vec<&ObservedDomain> = observed
        .domains
        .values()
        .filter(|d| !gone.contains(d.name.as_str()) && (!all || d.ownership(lab) != Ownership::ThisLab))
        .collect();
    observed
        .volumes
        .values()
        .filter(|v| volume_is_ours(lab, observed, &v.name) && !deleted.contains(v.name.as_str()))
        .filter(|v| !users.iter().any(|d| d.may_use(observed, &v.path)))
        // A volume the pool lists always has a name libvirt accepted.
        .filter_map(|v| Some((v, VolumeName::new(&v.name).ok()?)))
        .map(|(v, name)| Change {
            address: Address::Volume(name.clone()),
            libvirt_name: v.name.clone(),
            action: Action::Delete,
            reasons: vec![if crate::guest::is_partial_seed(&v.name) {
                Reason::InterruptedUpload
            } else {
                Reason::Orphaned
            }],
            fields: vec![FieldChange {
                path: Field::Path,
                before: Some(v.path.clone()),
                after: None,
                forces_replacement: false,
                restarts: false,
            }],
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops: vec![Op::DeleteVolume { pool: pool_name(pool), name }],
        })
        .collect()
}

/// Whether tagged volume `name` is this lab instance's. Volumes carry no metadata, only a
/// checksum of the lab name in their name (`ownership::volume_name`), which every instance
/// of a lab name shares; so a volume is also checked against the VM it was made for
/// (`ownership::volume_domain`): that name must carry this instance's prefix, and a domain
/// of that name, if there is one, must be this instance's. Another instance's volumes (a
/// copy of the lab under another prefix, or another lab file holding the VM) are never
/// deleted. Left ambiguous, and documented: an orphan (no domain) of a lab with the same
/// name whose prefix starts with this one's (`prefix: ""` beside `demo-`).
pub(super) fn volume_is_ours(lab: &Lab, observed: &Observed, name: &str) -> bool {
    volume_owned_by(lab.name.as_str(), name)
        && crate::lab::ownership::volume_domain(name).is_some_and(|vm| {
            vm.starts_with(lab.prefix.as_str())
                && observed.domains.get(vm).is_none_or(|d| d.ownership(lab) == Ownership::ThisLab)
        })
}

/// The file a disk of the domain opens now, when it is not `volume`'s path in the pool but
/// its chain holds that volume: the top layer of external snapshots above it, or the
/// volume by another path to the same file (a pool folder moved, a symlink left at the old
/// path). `None` when the disk is the volume's path, or no disk's chain holds it.
pub(super) fn kept_top(o: &ObservedDomain, observed: &Observed, pool: &Pool, volume: &str) -> Option<String> {
    let overlay = pool.volume_path(volume);
    let name = volume.to_owned();
    (0..o.disks.len()).find_map(|i| {
        let chain = o.chain(i);
        let top = chain.first()?;
        if *top == overlay {
            return None;
        }
        chain
            .iter()
            .any(|f| match observed.same_file(f, &overlay) {
                crate::host::observed::Same::Yes => true,
                // No identity known: the lab's tagged name says it.
                crate::host::observed::Same::Maybe => f.rsplit('/').next() == Some(name.as_str()),
                crate::host::observed::Same::No => false,
            })
            .then(|| top.to_string())
    })
}

/// The volumes of the VM that its domain uses under the names the lab file asks for but
/// that the overlay pool no longer has (deleted outside topo): `(Field::Disk, overlay name)`,
/// `(Field::CloudInit, seed name)` (`seed`: the seed's volume name, when cloud-init is on).
/// Only an active pool lists its volumes: with the pool
/// inactive or missing nothing is known (the pool is started or created by the plan, and
/// the next plan looks again).
pub(super) fn deleted_volumes(
    lab: &Lab,
    vm: &Vm,
    o: &ObservedDomain,
    observed: &Observed,
    seed: Option<VolumeName>,
) -> Vec<(Field, VolumeName)> {
    let Some(pool) = observed.pool.as_ref().filter(|p| p.active) else { return Vec::new() };
    let path = |name: &str| format!("{}/{name}", pool.path.trim_end_matches('/'));
    let overlay = vm.overlay_name(&lab.name).map(|n| (Field::Disk, n));
    let seed = seed.map(|n| (Field::CloudInit, n));
    overlay
        .into_iter()
        .chain(seed)
        .filter(|(_, name)| {
            !observed.volumes.contains_key(name.as_str()) && o.files().any(|f| f == path(name.as_str()))
        })
        .collect()
}
