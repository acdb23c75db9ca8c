//! The wires of the lab (`links:`, [`crate::lab::wire`]): each joined on the host once both
//! its VMs run, planned from where each end's tap sends its guest's frames
//! (`Observed::wire_redirects`). A wire has no object of its own to delete: its NICs go
//! with the wire (`plan::vm` unplugs them) and the host's filters with their taps.

use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::{Lab, VmState};
use crate::lab::wire::Wire;

use super::change::{Action, Change, FieldChange, Op, Reason};
use super::fields::Field;

/// The joins the plan makes: a wire whose two VMs are to run, and whose taps do not send to
/// each other now (never joined, or joined to a tap since made again), or whose taps this
/// plan makes anew (`planned` starts one of its VMs or plugs one of its NICs).
pub(super) fn plan(lab: &Lab, observed: &Observed, planned: &[Change]) -> Vec<Change> {
    let mut out = Vec::new();
    for w in lab.wires.values() {
        let runs = w.ends.iter().all(|e| lab.vms.get(&e.vm).is_some_and(|vm| vm.state == VmState::Running));
        if !runs {
            continue;
        }
        let [a, b] = [&w.ends[0].tap, &w.ends[1].tap];
        let now = |t: &str| observed.wire_redirects.get(t).cloned().flatten();
        let joined = now(a).as_deref() == Some(b.as_str()) && now(b).as_deref() == Some(a.as_str());
        let any = now(a).is_some() || now(b).is_some();
        let renewed = renews(lab, w, planned);
        let (action, reason) = match (joined, renewed, any) {
            (true, false, _) => continue,
            (true, true, _) => (Action::Update, Reason::WireEndRenewed),
            (false, true, _) | (false, false, false) => (Action::Create, Reason::NotOnHost),
            (false, false, true) => (Action::Update, Reason::Drift),
        };
        let ends = |k: usize| {
            let e = &w.ends[k];
            let nic = crate::lab::model::nic_label(e.index);
            format!("{}.{nic} ({}, {})", e.vm, e.tap, e.ip)
        };
        let want = format!("{} <-> {}", ends(0), ends(1));
        let before = match (now(a), now(b)) {
            (None, None) => None,
            (x, y) => Some(format!(
                "{a} -> {}, {b} -> {}",
                x.unwrap_or_else(|| "none".into()),
                y.unwrap_or_else(|| "none".into())
            )),
        };
        let fields = if joined {
            Vec::new()
        } else {
            vec![FieldChange {
                path: Field::Ends,
                before,
                after: Some(want),
                forces_replacement: false,
                restarts: false,
            }]
        };
        out.push(Change {
            address: Address::Wire(w.name.clone()),
            libvirt_name: w.name.to_string(),
            action,
            reasons: vec![reason],
            fields,
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops: vec![Op::JoinWire { a: a.clone(), b: b.clone() }],
        });
    }
    out
}

/// Whether `planned` makes a tap of `w` anew: starts one of its VMs (a create, a replace, a
/// restart or a start) or plugs one of its NICs.
fn renews(lab: &Lab, w: &Wire, planned: &[Change]) -> bool {
    w.ends.iter().any(|e| {
        let Some(vm) = lab.vms.get(&e.vm) else { return false };
        planned.iter().filter(|c| c.address == Address::Vm(vm.name.clone())).any(|c| {
            c.ops.iter().any(|op| match op {
                Op::StartDomain => true,
                Op::AttachNic { mac, .. } => *mac == e.mac,
                _ => false,
            })
        })
    })
}
