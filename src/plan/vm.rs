//! Planning one lab VM: create, update in place (NICs, rates, netem, run state), restart,
//! replace, delete.

use std::collections::{BTreeMap, BTreeSet};

use super::change::{Action, Change, FieldChange, NicPlug, NicTap, Op, Reason, Shutdown, render_failed};
use super::diff::{all_fields, creation, deletion, diff, drifted, owner_address, retag};
use super::volume::{Pool, deleted_volumes, domain_volumes, kept_top, snapshot_removal};
use crate::diag::Problem;
use crate::host::hypervisor::VolumeSpec;
use crate::host::observed::{DomainState, LiveConfig, Observed, ObservedDomain};
use crate::lab::address::Address;
use crate::lab::impair::Netem;
use crate::lab::model::{Lab, MacAddr, Nic, Vm, VmState, VolumeName};
use crate::lab::ownership::{OVERLAY_POOL, overlay_pool};
use crate::plan::fields::{self, Field, Fields};

pub(super) fn delete_domain(
    lab: &Lab,
    d: &ObservedDomain,
    observed: &Observed,
    pool: &Pool,
    shutdown: Shutdown,
) -> Change {
    // What is destroyed, as the host has it (shown like a created VM's fields).
    let mut fields = all_fields(&fields::observed_vm(lab, d, &Fields::new()), false);
    let mut ops = Vec::new();
    let snapshots = snapshot_removal(d);
    if let Some((op, _, field)) = &snapshots {
        // First, while the VM still runs: should it fail, the VM is left as it was.
        ops.push(op.clone());
        fields.push(field.clone());
        fields.sort_by(|a, b| a.path.cmp(&b.path));
    }
    if d.state != DomainState::Shutoff {
        ops.push(Op::StopDomain { shutdown });
    }
    ops.push(Op::UndefineDomain);
    ops.extend(domain_volumes(lab, d, observed, pool));
    let mut c = deletion(owner_address(d.owner.as_ref()), &d.name, fields, ops);
    c.reasons.extend(snapshots.map(|(_, r, _)| r));
    c
}

/// A VM as the planner wants it: the lab file's fields and its cloud-init seed with the
/// seed's volume name, each rendered once.
struct Wanted<'a> {
    lab: &'a Lab,
    vm: &'a Vm,
    pool: &'a Pool,
    desired: Fields,
    seed: Option<(crate::guest::Seed, VolumeName)>,
    /// `state: running`; else `stopped`: defined, disk kept, not running.
    run: bool,
}

impl<'a> Wanted<'a> {
    /// # Errors
    /// The VM's cloud-init seed cannot be rendered ([`render_failed`]).
    fn of(lab: &'a Lab, vm: &'a Vm, pool: &'a Pool) -> Result<Self, Problem> {
        let seed = crate::guest::Seed::of(lab, vm)
            .map_err(|e| render_failed(vm.span, &format!("the cloud-init seed of {}", who(vm)), e))?
            .map(|seed| {
                let name = seed.volume_name(lab, vm);
                (seed, name)
            });
        let desired = fields::desired_vm(lab, vm);
        Ok(Wanted { lab, vm, pool, desired, seed, run: vm.state == VmState::Running })
    }

    /// The seed's volume name, when cloud-init is on for the VM.
    fn seed_name(&self) -> Option<VolumeName> {
        self.seed.as_ref().map(|(_, name)| name.clone())
    }

    /// The seed volume the VM needs, if cloud-init is on for it.
    fn seed_volume(&self) -> Option<Op> {
        let (seed, name) = self.seed.clone()?;
        Some(Op::UploadSeed { pool: overlay_pool(), name, seed })
    }

    /// The domain XML to define, keeping the observed UUID; its disk and seed disk open
    /// `kept` when given ([`kept_top`]), else the overlay and the seed in the pool.
    ///
    /// # Errors
    /// The XML cannot be rendered ([`render_failed`]).
    fn define(&self, o: Option<&ObservedDomain>, kept: (Option<String>, Option<String>)) -> Result<Op, Problem> {
        let (lab, vm, pool) = (self.lab, self.vm, self.pool);
        let disk = kept.0.or_else(|| vm.overlay_name(&lab.name).map(|f| pool.volume_path(f.as_str())));
        let seed = kept.1.or_else(|| self.seed_name().map(|name| pool.volume_path(name.as_str())));
        let hash = fields::spec_hash(&self.desired);
        let uuid = o.and_then(|o| o.uuid.as_deref());
        let xml = crate::host::xml::domain_xml_with_seed(lab, vm, disk.as_deref(), seed.as_deref(), &hash, uuid)
            .map_err(|e| render_failed(vm.span, &format!("the domain XML of {}", who(vm)), e))?;
        Ok(Op::DefineDomain { xml: xml.xml })
    }
}

/// `vm.NAME (libvirt name)`, for messages.
fn who(vm: &Vm) -> String {
    format!("{} ({})", Address::Vm(vm.name.clone()), vm.libvirt_name)
}

/// The `<interface>` XML of `nic` of `vm`.
///
/// # Errors
/// The XML cannot be rendered ([`render_failed`], at the NIC).
pub(super) fn interface_xml(lab: &Lab, vm: &Vm, nic: &Nic) -> Result<String, Problem> {
    crate::host::xml::interface_xml(lab, vm, nic)
        .map_err(|e| render_failed(nic.span, &format!("the interface XML of {} of {}", nic.label(), who(vm)), e))
}

/// The overlay volume `vm` needs, if it has a disk.
pub(super) fn overlay_volume(lab: &Lab, vm: &Vm) -> Option<Op> {
    let d = vm.disk.as_ref()?;
    Some(Op::CreateVolume {
        volume: VolumeSpec {
            pool: OVERLAY_POOL.to_string(),
            name: vm.overlay_name(&lab.name)?.to_string(),
            backing: d.image.display().to_string(),
            backing_format: d.format,
            size: d.size.map(|s| s.bytes()),
        },
    })
}

/// Restart-bound fields whose running value differs from the desired one even though the
/// persistent config may already match (a define done without the restart that follows).
pub(super) fn pending_restart(lab: &Lab, o: &ObservedDomain, desired: &Fields) -> Vec<FieldChange> {
    let Some(live) = &o.live else { return Vec::new() };
    if *live == LiveConfig::of(o) {
        return Vec::new();
    }
    let running = ObservedDomain {
        virt_type: live.virt_type.clone(),
        memory_kib: live.memory_kib,
        vcpus: live.vcpus,
        kernel: live.kernel.clone(),
        initrd: live.initrd.clone(),
        cmdline: live.cmdline.clone(),
        ..o.clone()
    };
    diff(desired, &fields::observed_vm(lab, &running, desired)).into_iter().filter(|f| f.restarts).collect()
}

/// The NICs of a running lab VM that are off their network's bridge, as observed where each
/// tap is plugged (`ObservedDomain::links`): the plug op, the field shown, and the NIC as the
/// reason names it, for each. NICs are left out when nothing is known (remote host, taps not visible),
/// when their network is inactive or replaced by this plan (that change plugs them in), or
/// when their network changes (hot-plugged anyway).
///
/// # Errors
/// A NIC's XML cannot be rendered ([`render_failed`]).
pub(super) fn unplugged_nics(
    lab: &Lab,
    vm: &Vm,
    o: &ObservedDomain,
    observed: &Observed,
    replaced: &BTreeSet<String>,
) -> Result<Vec<(NicPlug, FieldChange, NicTap)>, Problem> {
    let (DomainState::Running, Some(links)) = (o.state, &o.links) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for nic in &vm.nics {
        let Some(net) = lab.networks.get(&nic.network) else { continue };
        let Some(on) = observed.networks.get(net.libvirt_name.as_str()).filter(|n| n.active) else { continue };
        let Some(want) = on.live_bridge.as_ref().or(on.bridge.as_ref()) else { continue };
        let same_network = o
            .interfaces
            .iter()
            .any(|i| i.mac == Some(nic.mac) && i.network.as_deref() == Some(net.libvirt_name.as_str()));
        if replaced.contains(net.libvirt_name.as_str()) || !same_network {
            continue;
        }
        let Some(link) = links.iter().find(|l| l.mac == nic.mac) else { continue };
        if link.bridge.as_ref() == Some(want) {
            continue;
        }
        let xml = interface_xml(lab, vm, nic)?;
        let field = FieldChange {
            path: Field::NicBridge(nic.mac),
            before: Some(link.bridge.clone().unwrap_or_else(|| "none".into())),
            after: Some(want.clone()),
            forces_replacement: false,
            restarts: false,
        };
        let why = NicTap { index: nic.index, mac: nic.mac, tap: link.tap.clone() };
        out.push((
            NicPlug { domain: vm.libvirt_name.to_string(), mac: nic.mac, xml, netem: wanted_netem(nic) },
            field,
            why,
        ));
    }
    Ok(out)
}

/// The netem settings the lab file asks for on `nic`; `None` when it asks for none, or for
/// settings that do nothing (`delay: 0ms`).
pub(super) fn wanted_netem(nic: &crate::lab::model::Nic) -> Option<Netem> {
    nic.impairment.netem.map(|n| n.normalized()).filter(|n| !n.is_none())
}

/// Live rate changes of the running VM's NICs that stay plugged where they are (a NIC
/// plugged in by `ops` gets its rate from its XML): one `SetBandwidth` per NIC whose
/// `nic[MAC].rate` field is in `changed`.
pub(super) fn bandwidth_ops(vm: &Vm, changed: &[FieldChange], ops: &[Op]) -> Vec<Op> {
    vm.nics
        .iter()
        .filter(|nic| changed.iter().any(|f| f.path == Field::NicRate(nic.mac)))
        .filter(|nic| !ops.iter().any(|op| matches!(op, Op::AttachNic { mac, .. } if *mac == nic.mac)))
        .map(|nic| Op::SetBandwidth { mac: nic.mac, rate: nic.impairment.rate })
        .collect()
}

/// The netem steps of a VM after `ops` ran: on a tap that `ops` makes new (the VM is started
/// or resumed, the NIC hot-plugged) the lab file's settings are set when it has any; on a tap
/// that stays, they are set when they differ from what `tc` shows there
/// (`ObservedDomain::links`), with the field and the NIC as the reason names it, and
/// also, unchanged, after its rate is set live (libvirt then clears the tap's qdiscs). NICs
/// re-plugged by `ReattachNics` get theirs from their `NicPlug`. Nothing for a VM that does
/// not run afterwards.
pub(super) fn netem_ops(vm: &Vm, o: Option<&ObservedDomain>, ops: &[Op]) -> (Vec<Op>, Vec<FieldChange>, Vec<NicTap>) {
    let starts = ops.iter().any(|op| matches!(op, Op::StartDomain | Op::ResumeDomain));
    let stops = ops.iter().any(|op| matches!(op, Op::StopDomain { .. }));
    let runs = o.is_some_and(|o| o.state == DomainState::Running);
    let (mut out, mut fields, mut why) = (Vec::new(), Vec::new(), Vec::new());
    if !(starts || (runs && !stops)) {
        return (out, fields, why);
    }
    for nic in &vm.nics {
        let want = wanted_netem(nic);
        let replugged =
            ops.iter().any(|op| matches!(op, Op::ReattachNics { nics } if nics.iter().any(|p| p.mac == nic.mac)));
        if replugged {
            continue;
        }
        let new_tap = starts || ops.iter().any(|op| matches!(op, Op::AttachNic { mac, .. } if *mac == nic.mac));
        if new_tap {
            if want.is_some() {
                out.push(Op::SetNetem { mac: nic.mac, netem: want });
            }
            continue;
        }
        // A rate set live on a tap that stays: libvirt clears the tap's qdiscs, so the lab's
        // netem is set again whether or not it changed; a change is still shown as one.
        let rate_set = ops.iter().any(|op| matches!(op, Op::SetBandwidth { mac, .. } if *mac == nic.mac));
        let set_again = |out: &mut Vec<Op>| {
            if rate_set && want.is_some() {
                out.push(Op::SetNetem { mac: nic.mac, netem: want });
            }
        };
        let Some(link) = o.and_then(|o| o.links.as_ref()).and_then(|l| l.iter().find(|l| l.mac == nic.mac)) else {
            // Not known here: refused before planning when netem is asked (find_conflicts).
            set_again(&mut out);
            continue;
        };
        let have = match &link.qdiscs {
            Some(q) => q.netem.map(|(_, n)| n),
            None if want.is_none() => continue,
            None => None, // tc's view could not be read: set it (apply reports tc's error)
        };
        if have == want {
            set_again(&mut out);
            continue;
        }
        let show = |n: Option<Netem>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
        fields.push(FieldChange {
            path: Field::NicNetem(nic.mac),
            before: Some(if link.qdiscs.is_some() { show(have) } else { "unknown (tc could not read the tap)".into() }),
            after: Some(show(want)),
            forces_replacement: false,
            restarts: false,
        });
        why.push(NicTap { index: nic.index, mac: nic.mac, tap: link.tap.clone() });
        out.push(Op::SetNetem { mac: nic.mac, netem: want });
    }
    (out, fields, why)
}

/// The change that brings lab VM `vm` to what the lab file asks, `None` when the domain
/// already is. `replaced`: the libvirt names of the networks this plan replaces.
///
/// # Errors
/// The VM's domain XML, seed or a NIC's XML cannot be rendered ([`render_failed`]): the
/// plan is refused rather than planned without the step.
pub(super) fn plan_vm(
    lab: &Lab,
    vm: &Vm,
    observed: &Observed,
    pool: &Pool,
    replaced: &BTreeSet<String>,
) -> Result<Option<Change>, Problem> {
    let w = Wanted::of(lab, vm, pool)?;
    let o = observed.domains.get(vm.libvirt_name.as_str());
    let define = w.define(o, (None, None))?;
    let Some(o) = o else { return Ok(Some(create_vm(&w, define))) };
    let mut d = Delta::of(&w, o);
    let gone = deleted_volumes(lab, vm, o, observed, w.seed_name());
    d.deleted_outside_topo(&w, &gone);
    let forced: Vec<Field> = d.changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
    if !forced.is_empty() {
        return Ok(Some(replace_vm(&w, o, observed, d, forced, define)));
    }
    update_vm(&w, o, observed, replaced, d, &gone, define)
}

/// What differs between the lab file and the domain: the fields shown, the reasons, and
/// whether the persistent config is written again.
struct Delta {
    changed: Vec<FieldChange>,
    reasons: Vec<Reason>,
    config_changed: bool,
}

impl Delta {
    fn of(w: &Wanted, o: &ObservedDomain) -> Self {
        let obs = fields::observed_vm(w.lab, o, &w.desired);
        let mut changed = diff(&w.desired, &obs);
        let mut config_changed = changed.iter().any(|f| f.path != Field::State);
        for f in pending_restart(w.lab, o, &w.desired) {
            if !changed.iter().any(|c| c.path == f.path) {
                changed.push(f);
            }
        }
        let mut reasons = Vec::new();
        if config_changed {
            reasons.push(if drifted(o.owner.as_ref(), &w.desired) { Reason::Drift } else { Reason::LabFileChanged });
        }
        if let Some((reason, field)) = retag(w.lab, o.owner.as_ref()) {
            // Written by the define of whatever else changes (a replace, a restart), or by the
            // in-place define: never a restart or a replacement of its own.
            reasons.push(reason);
            changed.push(field);
            changed.sort_by(|a, b| a.path.cmp(&b.path));
            config_changed = true;
        }
        Delta { changed, reasons, config_changed }
    }

    /// Adds the VM's volumes deleted outside topo (`gone`, from [`deleted_volumes`]).
    fn deleted_outside_topo(&mut self, w: &Wanted, gone: &[(Field, VolumeName)]) {
        if gone.is_empty() {
            return;
        }
        self.reasons.push(Reason::DeletedOutsideTopo { volumes: gone.iter().map(|(_, name)| name.clone()).collect() });
        for (path, name) in gone {
            // The overlay's content is lost: the VM is replaced. The seed is the same
            // content again (its name is its hash): uploaded in place.
            let overlay = *path == Field::Disk;
            if !self.changed.iter().any(|f| f.path == *path) {
                let after = w.desired.get(path).map(|v| v.value.clone()).unwrap_or_else(|| name.to_string());
                self.changed.push(FieldChange {
                    path: path.clone(),
                    before: Some(format!("{name} (deleted outside topo)")),
                    after: Some(after),
                    forces_replacement: overlay,
                    restarts: false,
                });
            }
        }
        self.changed.sort_by(|a, b| a.path.cmp(&b.path));
    }

    /// Adds a field change and keeps the fields sorted by path.
    fn push_field(&mut self, field: FieldChange) {
        self.changed.push(field);
        self.changed.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// The creation of a VM the host does not have.
fn create_vm(w: &Wanted, define: Op) -> Change {
    let (lab, vm) = (w.lab, w.vm);
    let mut ops: Vec<Op> = overlay_volume(lab, vm).into_iter().collect();
    ops.extend(w.seed_volume());
    ops.push(define);
    if w.run {
        ops.push(Op::StartDomain);
    }
    let (netem, _, _) = netem_ops(vm, None, &ops);
    ops.extend(netem);
    let mut c = creation(Address::Vm(vm.name.clone()), vm.libvirt_name.as_str(), &w.desired, ops);
    if w.run {
        for nic in &vm.nics {
            if let Some(n) = wanted_netem(nic) {
                c.fields.push(FieldChange {
                    path: Field::NicNetem(nic.mac),
                    before: None,
                    after: Some(n.to_string()),
                    forces_replacement: false,
                    restarts: false,
                });
            }
        }
        c.fields.sort_by(|a, b| a.path.cmp(&b.path));
    }
    if !w.run {
        // Created stopped: said, since "will be created" reads as running.
        c.fields.push(FieldChange {
            path: Field::State,
            before: None,
            after: Some(vm.state.to_string()),
            forces_replacement: false,
            restarts: false,
        });
        c.fields.sort_by(|a, b| a.path.cmp(&b.path));
    }
    c
}

/// The replacement of domain `o` because fields `forced` cannot change in place: forced
/// off, undefined with its volumes, made anew.
fn replace_vm(
    w: &Wanted,
    o: &ObservedDomain,
    observed: &Observed,
    mut d: Delta,
    forced: Vec<Field>,
    define: Op,
) -> Change {
    let (lab, vm) = (w.lab, w.vm);
    d.reasons.push(Reason::RequiresReplace { fields: forced });
    let mut ops = Vec::new();
    if o.state != DomainState::Shutoff {
        // Its disk is deleted next: nothing to shut down gracefully for.
        ops.push(Op::StopDomain { shutdown: Shutdown::Force });
    }
    if let Some((op, reason, field)) = snapshot_removal(o) {
        // First, while the VM still runs: should it fail, the VM is left as it was.
        ops.insert(0, op);
        d.reasons.push(reason);
        d.push_field(field);
    }
    ops.push(Op::UndefineDomain);
    ops.extend(domain_volumes(lab, o, observed, w.pool));
    ops.extend(overlay_volume(lab, vm));
    ops.extend(w.seed_volume());
    ops.push(define);
    if w.run {
        ops.push(Op::StartDomain);
    }
    let (netem, _, _) = netem_ops(vm, Some(o), &ops);
    ops.extend(netem);
    let run = w.run;
    Change {
        address: Address::Vm(vm.name.clone()),
        libvirt_name: vm.libvirt_name.to_string(),
        action: Action::Replace,
        reasons: d.reasons,
        // The run state a replacement ends in is shown when the file asks for `stopped`.
        fields: d.changed.into_iter().filter(|f| f.path != Field::State || !run).collect(),
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }
}

/// The in-place update of domain `o` (no field forces a replacement): a restart, or NICs,
/// rates and netem changed live, and the run state the file asks; `None` when nothing is
/// to do. `gone`: the VM's volumes deleted outside topo; `define`: the domain's define.
///
/// # Errors
/// The define keeping an external snapshot's layer, or a NIC's XML, cannot be rendered.
fn update_vm(
    w: &Wanted,
    o: &ObservedDomain,
    observed: &Observed,
    replaced: &BTreeSet<String>,
    mut d: Delta,
    gone: &[(Field, VolumeName)],
    define: Op,
) -> Result<Option<Change>, Problem> {
    let vm = w.vm;
    let restart: Vec<Field> = d.changed.iter().filter(|f| f.restarts).map(|f| f.path.clone()).collect();
    let mut ops = Vec::new();
    // The VM keeps its disk: a define keeps the file its disk opens now (the top layer of
    // an external snapshot above the lab's overlay, or the overlay by the path the domain
    // names it), so no layer is dropped from under it.
    let kept = |volume: Option<VolumeName>| volume.and_then(|v| kept_top(o, observed, w.pool, v.as_str()));
    let mut define = match (kept(vm.overlay_name(&w.lab.name)), kept(w.seed_name())) {
        (None, None) => Some(define),
        (disk, seed) => Some(w.define(Some(o), (disk, seed))?),
    };
    if gone.iter().any(|(path, _)| *path == Field::CloudInit) {
        // First: a start or restart below needs it.
        ops.extend(w.seed_volume());
    }
    if !o.persistent && o.state != DomainState::Shutoff {
        // Undefined by hand while running: libvirt forgets a transient domain when it
        // stops, so its config is defined again before any stop below (and only once).
        d.reasons.push(Reason::UndefinedOutsideTopo);
        d.push_field(FieldChange {
            path: Field::Persistent,
            before: Some("no (transient)".into()),
            after: Some("yes".into()),
            forces_replacement: false,
            restarts: false,
        });
        ops.extend(define.take());
    }
    if !w.run {
        stop_requested(o.state, &mut d.reasons, &mut ops);
    }
    if !w.run && !restart.is_empty() {
        // A VM that stays stopped takes the new settings at its next start: the config
        // is rewritten (it carries the NICs too), nothing restarts.
        for f in &mut d.changed {
            f.restarts = false;
        }
        ops.extend(define);
    } else if !restart.is_empty() {
        // Stop, then define, then start: a death between any two leaves a state the next
        // plan sees (stopped with the old config, or stopped with the new one), never a
        // running VM whose config already matches while it runs the old settings. The new
        // definition carries the NICs, so none is hot-plugged.
        d.reasons.push(Reason::RequiresRestart { fields: restart });
        if o.state != DomainState::Shutoff {
            ops.push(Op::StopDomain { shutdown: Shutdown::Graceful });
        }
        ops.extend(define);
        ops.push(Op::StartDomain);
        let (netem, _, _) = netem_ops(vm, Some(o), &ops);
        ops.extend(netem);
    } else {
        in_place(w, o, observed, replaced, &mut d, &mut ops, define)?;
    }
    if ops.is_empty() {
        return Ok(None);
    }
    Ok(Some(Change {
        address: Address::Vm(vm.name.clone()),
        libvirt_name: vm.libvirt_name.to_string(),
        action: Action::Update,
        reasons: d.reasons,
        fields: d.changed,
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }))
}

/// The lab file says `state: stopped`: a running VM is shut down (gracefully), a paused or
/// crashed one forced off (it has no guest to ask). First, so NIC changes after it touch the
/// config only.
fn stop_requested(state: DomainState, reasons: &mut Vec<Reason>, ops: &mut Vec<Op>) {
    match state {
        DomainState::Shutoff => {}
        DomainState::Running => {
            reasons.push(Reason::StopRequested);
            ops.push(Op::StopDomain { shutdown: Shutdown::Graceful });
        }
        DomainState::Paused | DomainState::Other => {
            reasons.push(Reason::StopRequested);
            ops.push(Op::StopDomain { shutdown: Shutdown::Force });
        }
    }
}

/// The ops of an update without a restart, after `ops`: NICs hot-plugged, unplugged NICs
/// plugged in again, rates set live, the config written again when it changed (`define`),
/// the VM started or resumed, netem set on its taps.
///
/// # Errors
/// A NIC's XML cannot be rendered.
fn in_place(
    w: &Wanted,
    o: &ObservedDomain,
    observed: &Observed,
    replaced: &BTreeSet<String>,
    d: &mut Delta,
    ops: &mut Vec<Op>,
    define: Option<Op>,
) -> Result<(), Problem> {
    let (lab, vm) = (w.lab, w.vm);
    ops.extend(nic_ops(lab, vm, o)?);
    let cut = unplugged_nics(lab, vm, o, observed, replaced)?;
    if !cut.is_empty() {
        let mut nics = Vec::new();
        let mut why = Vec::new();
        for (plug, field, text) in cut {
            nics.push(plug);
            d.changed.push(field);
            why.push(text);
        }
        d.reasons.push(Reason::Unplugged { nics: why });
        ops.push(Op::ReattachNics { nics });
    }
    // Live first, then the config: a stop between leaves the config behind, which the
    // next plan sees; the other way round a live change would go unnoticed.
    if w.run && o.state == DomainState::Running {
        let (mut replug, mut fields) = mtu_replugs(lab, vm, o, replaced, &d.changed, ops)?;
        for (change, (detach, attach)) in ip_replugs(lab, vm, o, observed, replaced, ops, &replug)? {
            fields.push(change.path.clone());
            d.push_field(change);
            replug.extend([detach, attach]);
        }
        if !fields.is_empty() {
            d.reasons.push(Reason::Replugged { fields });
            ops.extend(replug);
        }
        let bw = bandwidth_ops(vm, &d.changed, ops);
        ops.extend(bw);
    }
    if d.config_changed {
        // Rewrite the config so the metadata's spec hash matches the file again.
        ops.extend(define);
    }
    if w.run {
        start_requested(o.state, &mut d.reasons, ops);
    }
    let (netem, fields, why) = netem_ops(vm, Some(o), ops);
    if !why.is_empty() {
        d.reasons.push(Reason::Netem { nics: why });
        d.changed.extend(fields);
    }
    ops.extend(netem);
    Ok(())
}

/// The NICs of the running VM `vm` (observed as `o`) whose MTU (`nic[MAC].mtu` in
/// `changed`) differs: libvirt cannot change a running NIC's MTU (QEMU sets virtio's
/// `host_mtu` when it makes the device; libvirt's update-device refuses a new `<mtu>`: "cannot
/// modify MTU", src/qemu/qemu_hotplug.c `qemuDomainChangeNet`), so
/// each is unplugged and plugged in again with its new `<interface>` XML, live and config
/// together, as a NIC whose network changed. Left out: NICs that `ops` already plugs in
/// (their network changed, or they were off their bridge) and NICs whose network this plan
/// replaces (the replacement plugs them in again with the new XML, `plan::network::replugs`).
/// Returns the ops and the fields that asked for them.
///
/// # Errors
/// A NIC's XML cannot be rendered.
fn mtu_replugs(
    lab: &Lab,
    vm: &Vm,
    o: &ObservedDomain,
    replaced: &BTreeSet<String>,
    changed: &[FieldChange],
    ops: &[Op],
) -> Result<(Vec<Op>, Vec<Field>), Problem> {
    let (mut out, mut fields) = (Vec::new(), Vec::new());
    for nic in &vm.nics {
        let field = Field::NicMtu(nic.mac);
        if !changed.iter().any(|f| f.path == field) {
            continue;
        }
        let plugged = ops.iter().any(|op| match op {
            Op::AttachNic { mac, .. } => *mac == nic.mac,
            Op::ReattachNics { nics } => nics.iter().any(|p| p.mac == nic.mac),
            _ => false,
        });
        let Some(net) = lab.networks.get(&nic.network) else { continue };
        let on = o.interfaces.iter().find(|i| i.mac == Some(nic.mac)).and_then(|i| i.network.clone());
        let Some(network) = on else { continue };
        if plugged || replaced.contains(net.libvirt_name.as_str()) {
            continue;
        }
        let xml = crate::host::xml::plain_interface_xml(nic.mac, &network);
        out.push(Op::DetachNic { mac: nic.mac, network, xml });
        out.push(Op::AttachNic { mac: nic.mac, xml: interface_xml(lab, vm, nic)? });
        fields.push(field);
    }
    Ok((out, fields))
}

/// A NIC [`ip_replugs`] plugs in again: the field change shown, and its detach and attach ops.
type IpReplug = (FieldChange, (Op, Op));

/// The NICs of the running VM `vm` (observed as `o`) whose reserved address changes: the
/// lab's reservation for the NIC's MAC (written `ip:` or derived) differs from the host entry
/// its network has now, or the network has none for it (a NIC that had `ip: dynamic`, or
/// that ran before topo derived addresses). libvirt rewrites the network's `<host>` entry
/// (the network's change), but the guest keeps its lease until it expires (dnsmasq's default
/// lease time on libvirt networks: one hour), so each such NIC is unplugged and plugged in
/// again, as [`mtu_replugs`] does: the guest's DHCP client starts anew and dnsmasq answers with
/// the new reservation (it prefers a MAC's `dhcp-host` address to its old lease and NAKs a
/// request for another one: "static lease available"). The network's change comes first in
/// the plan's order (a VM's step waits for its networks' creating steps).
///
/// Left out: a NIC that `ops` or `replugs` already plugs in, one whose network this plan
/// replaces, one not plugged into its network now, one whose reservation only changes its
/// host name, and one whose reservation goes away (`ip: dynamic`): its lease of the old
/// address stays valid until it expires, and verification accepts any lease of a NIC without
/// a reservation, so nothing is gained by cutting its link (docs/addressing.md).
///
/// Returns, per NIC, the shown field change (`nic[MAC].ip`, old address -> new) and the
/// detach and attach ops.
///
/// # Errors
/// A NIC's XML cannot be rendered.
fn ip_replugs(
    lab: &Lab,
    vm: &Vm,
    o: &ObservedDomain,
    observed: &Observed,
    replaced: &BTreeSet<String>,
    ops: &[Op],
    replugs: &[Op],
) -> Result<Vec<IpReplug>, Problem> {
    let mut out = Vec::new();
    for nic in &vm.nics {
        let Some(net) = lab.networks.get(&nic.network) else { continue };
        let crate::lab::model::NetworkKind::Managed(m) = &net.kind else { continue };
        let Some(want) = m.reservations.get(&nic.mac).map(|r| r.ip) else { continue };
        if replaced.contains(net.libvirt_name.as_str()) {
            continue;
        }
        let plugged = ops.iter().chain(replugs).any(|op| match op {
            Op::AttachNic { mac, .. } => *mac == nic.mac,
            Op::ReattachNics { nics } => nics.iter().any(|p| p.mac == nic.mac),
            _ => false,
        });
        let on = o.interfaces.iter().find(|i| i.mac == Some(nic.mac)).and_then(|i| i.network.clone());
        let Some(network) = on.filter(|n| n == net.libvirt_name.as_str()) else { continue };
        let Some(live) = observed.networks.get(net.libvirt_name.as_str()) else { continue };
        let had = live.ip.iter().flat_map(|ip| ip.hosts.iter()).find(|h| h.mac == nic.mac).map(|h| h.ip);
        if plugged || had == Some(want) {
            continue;
        }
        let change = FieldChange {
            path: Field::NicIp(nic.mac),
            before: Some(had.map_or_else(|| "a lease".to_owned(), |ip| ip.to_string())),
            after: Some(want.to_string()),
            forces_replacement: false,
            restarts: false,
        };
        let xml = crate::host::xml::plain_interface_xml(nic.mac, &network);
        let detach = Op::DetachNic { mac: nic.mac, network, xml };
        let attach = Op::AttachNic { mac: nic.mac, xml: interface_xml(lab, vm, nic)? };
        out.push((change, (detach, attach)));
    }
    Ok(out)
}

/// NICs hot-plugged by MAC, live and config together: a NIC the domain has on another
/// network than the file asks (or that the file no longer has) is unplugged, one it lacks
/// there is plugged (so a NIC whose network changed is unplugged and plugged again).
///
/// # Errors
/// A NIC's XML cannot be rendered.
fn nic_ops(lab: &Lab, vm: &Vm, o: &ObservedDomain) -> Result<Vec<Op>, Problem> {
    let mut ops = Vec::new();
    let wires = lab.wire_ends(&vm.name);
    let wire_tap = |mac: MacAddr| wires.iter().map(|(w, k)| &w.ends[*k]).find(|e| e.mac == mac).map(|e| e.tap.as_str());
    let observed_nics: BTreeMap<MacAddr, &crate::host::observed::ObservedInterface> =
        o.interfaces.iter().filter_map(|i| Some((i.mac?, i))).collect();
    for (mac, i) in &observed_nics {
        let net = i.network.as_deref();
        let want = vm.nics.iter().find(|n| n.mac == *mac).and_then(|n| lab.networks.get(&n.network));
        let keep = match (want, wire_tap(*mac)) {
            (Some(w), _) => Some(w.libvirt_name.as_str()) == net,
            (None, Some(tap)) => net.is_none() && i.ethernet.as_deref() == Some(tap),
            // Not the lab's: kept unless it is a wire end the lab no longer has (a NIC of
            // another type, added by hand, stays as before).
            (None, None) => net.is_none() && !i.ethernet.as_deref().is_some_and(crate::lab::wire::is_wire_tap),
        };
        if keep {
            continue;
        }
        let (network, xml) = match (net, &i.ethernet) {
            (None, Some(tap)) => {
                let xml = crate::host::xml::ethernet_interface_xml(*mac, tap).map_err(|e| {
                    render_failed(vm.span, &format!("the interface XML of tap {tap} of {}", who(vm)), e)
                })?;
                (format!("(tap {tap})"), xml)
            }
            _ => {
                let network = net.unwrap_or_default().to_string();
                let xml = crate::host::xml::plain_interface_xml(*mac, &network);
                (network, xml)
            }
        };
        ops.push(Op::DetachNic { mac: *mac, network, xml });
    }
    for nic in &vm.nics {
        let want = lab.networks.get(&nic.network).map(|w| w.libvirt_name.as_str());
        if observed_nics.get(&nic.mac).and_then(|i| i.network.as_deref()) != want {
            ops.push(Op::AttachNic { mac: nic.mac, xml: interface_xml(lab, vm, nic)? });
        }
    }
    for (w, k) in &wires {
        let end = &w.ends[*k];
        if observed_nics.get(&end.mac).and_then(|i| i.ethernet.as_deref()) != Some(end.tap.as_str()) {
            let xml = crate::host::xml::ethernet_interface_xml(end.mac, &end.tap)
                .map_err(|e| render_failed(w.span, &format!("the interface XML of wire {}", w.name), e))?;
            ops.push(Op::AttachNic { mac: end.mac, xml });
        }
    }
    Ok(ops)
}

/// The lab file says `state: running` (the default) and the VM is not: started; a paused
/// one resumed (libvirt refuses to start a paused domain: "already running"); a crashed
/// one, suspended by the host or shutting down, forced off, then started.
fn start_requested(state: DomainState, reasons: &mut Vec<Reason>, ops: &mut Vec<Op>) {
    match state {
        DomainState::Running => {}
        DomainState::Shutoff => {
            reasons.push(Reason::NotRunning);
            ops.push(Op::StartDomain);
        }
        DomainState::Paused => {
            reasons.push(Reason::Paused);
            ops.push(Op::ResumeDomain);
        }
        DomainState::Other => {
            reasons.push(Reason::NotRunning);
            ops.push(Op::StopDomain { shutdown: Shutdown::Force });
            ops.push(Op::StartDomain);
        }
    }
}
