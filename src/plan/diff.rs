//! Field differences, the skeletons of changes that create or delete an object, and the
//! owner-tag facts every planner shares (drift, retag, the address of an owned object).

use std::collections::BTreeSet;

use super::change::{Action, Change, FieldChange, Op, Reason};
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::plan::fields::{self, Field, FieldClass, Fields};

pub(super) fn diff(desired: &Fields, observed: &Fields) -> Vec<FieldChange> {
    let keys: BTreeSet<&Field> = desired.keys().chain(observed.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let d = desired.get(k);
            let o = observed.get(k);
            if d.map(|v| &v.value) == o.map(|v| &v.value) {
                return None;
            }
            let class = d.or(o).map(|v| v.class).unwrap_or(FieldClass::InPlace);
            Some(FieldChange {
                path: k.clone(),
                before: o.map(|v| v.value.clone()),
                after: d.map(|v| v.value.clone()),
                forces_replacement: class == FieldClass::Replace,
                restarts: class == FieldClass::Restart,
            })
        })
        .collect()
}

pub(super) fn all_fields(f: &Fields, created: bool) -> Vec<FieldChange> {
    f.iter()
        .filter(|(_, v)| v.class != FieldClass::State)
        .map(|(k, v)| FieldChange {
            path: k.clone(),
            before: (!created).then(|| v.value.clone()),
            after: created.then(|| v.value.clone()),
            forces_replacement: false,
            restarts: false,
        })
        .collect()
}

/// A change that creates an object: every desired field is new.
pub(super) fn creation(address: Address, libvirt_name: &str, desired: &Fields, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Create,
        reasons: vec![Reason::NotOnHost],
        fields: all_fields(desired, true),
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }
}

/// A change that deletes an owned object no longer in the lab file.
pub(super) fn deletion(address: Address, libvirt_name: &str, fields: Vec<FieldChange>, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Delete,
        reasons: vec![Reason::NotInLabFile],
        fields,
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }
}

/// Whether the host differs from the last apply while the file did not change.
pub(super) fn drifted(owner: Option<&crate::host::observed::OwnerTag>, desired: &Fields) -> bool {
    owner.is_some_and(|t| t.spec_hash == fields::spec_hash(desired))
}

/// The owner tag change when an object of this lab carries a tag other than the one this
/// instance writes: adopted from an older topo (no lab file recorded), or taken over from
/// another lab file (`--take-over`). The object is defined again with the new tag, in place.
pub(super) fn retag(lab: &Lab, owner: Option<&crate::host::observed::OwnerTag>) -> Option<(Reason, FieldChange)> {
    let t = owner?;
    let me = lab.instance();
    if t.is_of(&me) {
        return None;
    }
    let reason = match &t.file {
        Some(file) => Reason::TakenOver { from: file.clone() },
        None => Reason::Adopted,
    };
    let before = match &t.file {
        Some(file) => format!("lab {} from {file}", t.lab),
        None => format!("lab {} (no lab file recorded)", t.lab),
    };
    let field = FieldChange {
        path: Field::Owner,
        before: Some(before),
        after: Some(format!("lab {} from {}", me.lab, me.file)),
        forces_replacement: false,
        restarts: false,
    };
    Some((reason, field))
}

/// The address an object this lab owns is planned under: its owner tag's resource.
pub(super) fn owner_address(owner: Option<&crate::host::observed::OwnerTag>) -> Address {
    // Invariant: only objects of this lab are planned by their tag, and `Ownership::of`
    // counts an object as this lab's only when its tag's resource parses as an address.
    owner.and_then(|t| t.resource.parse().ok()).expect("an owned object's tag names its address")
}
