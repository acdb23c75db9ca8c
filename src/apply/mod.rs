//! Apply: carries out a plan's ops on a `Hypervisor`, in dependency order, with independent
//! steps in parallel, stopping cleanly on failure or Ctrl-C, then re-observes the host.

pub mod lock;
pub mod progress;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::hypervisor::{HostOp, HvError, Hypervisor};
use crate::model::{Lab, Reservation};
use crate::observed::{DomainState, Observed};
use crate::plan::{Action, Change, Detached, Op, Plan};
use progress::{Event, Progress};

/// How apply runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Steps run at once (at least 1).
    pub parallelism: usize,
    /// How long a VM gets to shut down gracefully before it is forced off.
    pub shutdown_timeout: Duration,
    /// Folder for VM disk overlays.
    pub overlay_dir: std::path::PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            parallelism: 4,
            shutdown_timeout: Duration::from_secs(30),
            overlay_dir: "/var/lib/libvirt/images/topo".into(),
        }
    }
}

/// What became of one change.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    Done {
        seconds: f64,
    },
    Failed {
        error: String,
        hint: Option<String>,
    },
    /// Not started: an earlier step failed, or apply was interrupted.
    Skipped {
        why: String,
    },
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub address: String,
    pub action: Action,
    pub outcome: StepOutcome,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub steps: Vec<StepReport>,
    pub interrupted: bool,
    /// When each domain (by libvirt name) was started by this apply: verification after
    /// apply reports times from here.
    pub started: BTreeMap<String, Instant>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.interrupted || self.steps.iter().any(|s| !matches!(s.outcome, StepOutcome::Done { .. }))
    }
    /// `Apply complete: 3 added, 1 changed, 0 replaced, 0 destroyed.` counts done steps.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for s in &self.steps {
            if matches!(s.outcome, StepOutcome::Done { .. }) {
                match s.action {
                    Action::Create => c.0 += 1,
                    Action::Update => c.1 += 1,
                    Action::Replace => c.2 += 1,
                    Action::Delete => c.3 += 1,
                    Action::NoOp => {}
                }
            }
        }
        c
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error("apply failed: {failed} step{} failed, {skipped} skipped", if *failed == 1 { "" } else { "s" })]
    #[diagnostic(
        code(topo::apply::failed),
        help("fix the cause above and run apply again: it continues from where it stopped")
    )]
    StepsFailed { failed: usize, skipped: usize },
    #[error("apply interrupted: {skipped} step{} not started", if *skipped == 1 { "" } else { "s" })]
    #[diagnostic(code(topo::apply::interrupted), help("run apply again to finish"))]
    Interrupted { skipped: usize },
    #[error("inconsistent result after apply: the host still differs from the lab file in {}", details.join("; "))]
    #[diagnostic(
        code(topo::apply::inconsistent),
        help("this is a bug in topo or a change made on the host during apply; run `topo plan` to see the difference")
    )]
    Inconsistent { details: Vec<String> },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Observe(#[from] HvError),
}

/// One change and the changes it waits for.
struct Task<'p> {
    change: &'p Change,
    deps: BTreeSet<usize>,
    /// Network steps are serialised: libvirt picks bridge names racily.
    network: bool,
}

/// Which changes wait for which: VM deletions first; network deletions after all VM
/// deletions and after the VM changes that unplug NICs from them (unless that would make a
/// cycle); network creations/updates after all deletions; a VM after the changes of the
/// networks its NICs use (and after all VM deletions).
fn schedule<'p>(lab: &Lab, plan: &'p Plan) -> Vec<Task<'p>> {
    let is_net = |c: &Change| c.address.starts_with("network.");
    let idx_by_addr: BTreeMap<&str, usize> =
        plan.changes.iter().enumerate().map(|(i, c)| (c.address.as_str(), i)).collect();
    let vm_deletes: BTreeSet<usize> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == Action::Delete && !is_net(c))
        .map(|(i, _)| i)
        .collect();
    let all_deletes: BTreeSet<usize> =
        plan.changes.iter().enumerate().filter(|(_, c)| c.action == Action::Delete).map(|(i, _)| i).collect();
    let mut tasks: Vec<Task<'p>> = plan
        .changes
        .iter()
        .map(|c| {
            let deps = match (c.action, is_net(c)) {
                (Action::Delete, false) => BTreeSet::new(),
                (Action::Delete, true) => vm_deletes.clone(),
                (_, true) => all_deletes.clone(),
                (_, false) => {
                    let mut d = vm_deletes.clone();
                    let vm =
                        c.address.strip_prefix("vm.").and_then(|n| lab.vms.values().find(|v| v.name.as_str() == n));
                    for nic in vm.map(|v| v.nics.as_slice()).unwrap_or_default() {
                        if let Some(&j) = idx_by_addr.get(format!("network.{}", nic.network).as_str()) {
                            d.insert(j);
                        }
                    }
                    d
                }
            };
            Task { change: c, deps, network: is_net(c) }
        })
        .collect();
    // A network is deleted after kept VMs unplugged their NICs from it (libvirt would let it
    // go from under them, leaving a dead link until the unplug). Skipped where the VM waits
    // for the deletion itself (it needs a network that reuses the bridge or subnet).
    for (n, net) in plan.changes.iter().enumerate().filter(|(_, c)| c.action == Action::Delete && is_net(c)) {
        for (v, vm) in plan.changes.iter().enumerate().filter(|(_, c)| c.action != Action::Delete && !is_net(c)) {
            let unplugs =
                vm.ops.iter().any(|op| matches!(op, Op::DetachNic { network, .. } if *network == net.libvirt_name));
            if unplugs && !waits_for(&tasks, v, n) {
                tasks[n].deps.insert(v);
            }
        }
    }
    tasks
}

/// Whether task `from` (transitively) waits for task `to`.
fn waits_for(tasks: &[Task<'_>], from: usize, to: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if seen.insert(i) {
            stack.extend(tasks[i].deps.iter().copied());
        }
    }
    false
}

#[derive(Default)]
struct State {
    started: BTreeSet<usize>,
    finished: BTreeMap<usize, StepOutcome>,
    running: usize,
    network_busy: bool,
    stop: bool,
}

/// Runs `plan` on `hv`. `observed` is what the plan was made from (UUIDs for redefinition).
/// `cancel` is set by the Ctrl-C handler: no new step starts once it is set.
pub fn apply(
    lab: &Lab,
    plan: &Plan,
    observed: &Observed,
    hv: &dyn Hypervisor,
    opts: &Options,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Report {
    let tasks = schedule(lab, plan);
    let state = Mutex::new(State::default());
    let started = Mutex::new(BTreeMap::new());
    let wake = Condvar::new();
    let workers = opts.parallelism.max(1).min(tasks.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    // Pick a ready task, or finish when nothing can start any more.
                    let picked = {
                        // Invariant: no code panics while holding this lock.
                        let mut st = state.lock().expect("apply state lock");
                        loop {
                            if cancel.load(Ordering::SeqCst) {
                                st.stop = true;
                            }
                            let ready = (0..tasks.len()).find(|&i| {
                                !st.started.contains(&i)
                                    && tasks[i]
                                        .deps
                                        .iter()
                                        .all(|d| matches!(st.finished.get(d), Some(StepOutcome::Done { .. })))
                                    && !(tasks[i].network && st.network_busy)
                            });
                            match ready {
                                Some(i) if !st.stop => {
                                    st.started.insert(i);
                                    st.running += 1;
                                    if tasks[i].network {
                                        st.network_busy = true;
                                    }
                                    break Some(i);
                                }
                                _ if st.running == 0 => break None,
                                _ => {
                                    st = wake.wait_timeout(st, Duration::from_millis(100)).expect("apply state lock").0;
                                }
                            }
                        }
                    };
                    let Some(i) = picked else {
                        wake.notify_all();
                        return;
                    };
                    let change = tasks[i].change;
                    progress.event(Event::Started { address: &change.address, action: change.action });
                    let t0 = Instant::now();
                    let result =
                        run_change(lab, change, observed, hv, opts, &started).or_else(|e| already_gone(change, e));
                    let outcome = match result {
                        Ok(()) => StepOutcome::Done { seconds: t0.elapsed().as_secs_f64() },
                        Err(e) => StepOutcome::Failed { error: e.to_string(), hint: e.hint.clone() },
                    };
                    progress.event(Event::Finished {
                        address: &change.address,
                        action: change.action,
                        outcome: &outcome,
                    });
                    let mut st = state.lock().expect("apply state lock");
                    if !matches!(outcome, StepOutcome::Done { .. }) {
                        st.stop = true;
                    }
                    if tasks[i].network {
                        st.network_busy = false;
                    }
                    st.running -= 1;
                    st.finished.insert(i, outcome);
                    wake.notify_all();
                }
            });
        }
    });
    // Invariant: all workers have joined; the lock is free and not poisoned.
    let st = state.into_inner().expect("apply state lock");
    let interrupted = cancel.load(Ordering::SeqCst);
    let steps = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| StepReport {
            address: t.change.address.clone(),
            action: t.change.action,
            outcome: st.finished.get(&i).cloned().unwrap_or_else(|| StepOutcome::Skipped {
                why: if interrupted { "interrupted".into() } else { "not started after a failure".into() },
            }),
        })
        .collect();
    // Invariant: the workers have joined; nothing holds the lock.
    let started = started.into_inner().expect("start times lock");
    Report { steps, interrupted, started }
}

fn run_change(
    lab: &Lab,
    c: &Change,
    observed: &Observed,
    hv: &dyn Hypervisor,
    opts: &Options,
    started: &Mutex<BTreeMap<String, Instant>>,
) -> Result<(), HvError> {
    let name = c.libvirt_name.as_str();
    for op in &c.ops {
        match op {
            Op::DefineNetwork => {
                let net = lab.networks.values().find(|n| n.libvirt_name == name).ok_or_else(|| missing(c))?;
                let uuid = observed.networks.get(name).and_then(|o| o.uuid.as_deref());
                let bridge = observed.networks.get(name).and_then(|o| o.bridge.as_deref());
                let xml = crate::xml::network_xml(lab, net).map_err(|e| xml_err("define network", name, e))?;
                hv.define_network(&with_bridge(&with_uuid(&xml.xml, uuid), bridge))?;
            }
            Op::StartNetwork => hv.start_network(name)?,
            Op::SetNetworkAutostart { on } => hv.set_network_autostart(name, *on)?,
            Op::AddDhcpHost { mac, ip, host } => {
                let r = Reservation { mac: *mac, ip: *ip, host: host.clone() };
                let xml = crate::xml::dhcp_host_xml(&r).map_err(|e| xml_err("add dhcp host", name, e))?;
                hv.update_dhcp_host(name, HostOp::Add, &xml)?;
            }
            Op::DeleteDhcpHost { mac, ip, host } => {
                let r = Reservation { mac: *mac, ip: *ip, host: host.clone().unwrap_or_default() };
                let xml = crate::xml::dhcp_host_xml(&r).map_err(|e| xml_err("delete dhcp host", name, e))?;
                hv.update_dhcp_host(name, HostOp::Delete, &xml)?;
            }
            Op::StopNetwork => hv.stop_network(name)?,
            Op::UndefineNetwork => hv.undefine_network(name)?,
            Op::ReattachNics { nics } => reattach(lab, nics, hv)?,
            Op::CreateDisk => {
                let vm = vm_of(lab, c)?;
                if let (Some(d), Some(file)) = (&vm.disk, vm.overlay_name()) {
                    hv.create_overlay(&opts.overlay_dir.join(file), &d.image, d.size.map(|s| s.bytes()))?;
                }
            }
            Op::DeleteDisk => {
                for disk in observed.domains.get(name).map(|d| d.disks.as_slice()).unwrap_or_default() {
                    // Only overlays topo made for this domain: in topo's folder, named after it.
                    let p = std::path::Path::new(disk);
                    let ours = p.parent() == Some(opts.overlay_dir.as_path())
                        && p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&format!("{name}-")));
                    if ours {
                        hv.delete_overlay(p)?;
                    }
                }
            }
            Op::DefineDomain => {
                let vm = vm_of(lab, c)?;
                let disk = vm.overlay_name().map(|f| opts.overlay_dir.join(f).display().to_string());
                let xml =
                    crate::xml::domain_xml(lab, vm, disk.as_deref()).map_err(|e| xml_err("define domain", name, e))?;
                let uuid = observed.domains.get(name).and_then(|o| o.uuid.as_deref());
                hv.define_domain(&with_uuid(&xml.xml, uuid))?;
            }
            Op::StartDomain => {
                hv.start_domain(name)?;
                if let Ok(mut m) = started.lock() {
                    m.insert(name.to_string(), Instant::now());
                }
            }
            Op::StopDomain => stop_domain(hv, name, opts.shutdown_timeout)?,
            Op::AttachNic { mac } => {
                let vm = vm_of(lab, c)?;
                let nic = vm.nics.iter().find(|n| n.mac == *mac).ok_or_else(|| missing(c))?;
                let xml = crate::xml::interface_xml(lab, vm, nic).map_err(|e| xml_err("attach interface", name, e))?;
                hv.attach_device(name, &xml)?;
            }
            Op::DetachNic { mac, network } => {
                hv.detach_device(name, &crate::xml::plain_interface_xml(*mac, network))?;
            }
            Op::UndefineDomain => hv.undefine_domain(name)?,
        }
    }
    Ok(())
}

/// A deletion whose object vanished after the host was observed has nothing left to do.
/// (Each op of a delete is on the change's own object, so NotFound means it is gone; an
/// overlay already deleted is gone too.)
fn already_gone(c: &Change, e: HvError) -> Result<(), HvError> {
    if c.action == Action::Delete && e.kind == crate::hypervisor::HvErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Re-plugs NICs that a network restart cut off: unplug and plug the same interface live.
fn reattach(lab: &Lab, nics: &[Detached], hv: &dyn Hypervisor) -> Result<(), HvError> {
    for d in nics {
        let Some(vm) = lab.vms.values().find(|v| v.libvirt_name == d.domain) else { continue };
        let Some(nic) = vm.nics.iter().find(|n| n.mac == d.mac) else { continue };
        let xml = crate::xml::interface_xml(lab, vm, nic).map_err(|e| xml_err("re-attach interface", &d.domain, e))?;
        hv.detach_device(&d.domain, &xml)?;
        hv.attach_device(&d.domain, &xml)?;
    }
    Ok(())
}

/// Graceful shutdown, polled until off or `timeout`, then forced off.
fn stop_domain(hv: &dyn Hypervisor, name: &str, timeout: Duration) -> Result<(), HvError> {
    if hv.domain_state(name)? == DomainState::Shutoff {
        return Ok(());
    }
    // A guest without ACPI support ignores the request: the timeout covers that.
    let _ = hv.shutdown_domain(name);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if hv.domain_state(name)? == DomainState::Shutoff {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    match hv.destroy_domain(name) {
        Err(e) if hv.domain_state(name).ok() == Some(DomainState::Shutoff) => {
            let _ = e; // it went off between the last poll and destroy
            Ok(())
        }
        r => r,
    }
}

/// Inserts `<uuid>` after the root's `<name>` element so redefining keeps the object's
/// identity (libvirt refuses a same-named definition with another UUID).
fn with_uuid(xml: &str, uuid: Option<&str>) -> String {
    match (uuid, xml.find("</name>")) {
        (Some(u), Some(at)) if !xml.contains("<uuid>") => {
            let end = at + "</name>".len();
            format!("{}<uuid>{u}</uuid>{}", &xml[..end], &xml[end..])
        }
        _ => xml.to_string(),
    }
}

/// Redefining a network whose lab entry names no bridge keeps the bridge libvirt chose for
/// it. Without a name, libvirt 9.0 gives the new config another free `virbrN` while the
/// running network stays on the old one: config and live bridge then differ.
fn with_bridge(xml: &str, bridge: Option<&str>) -> String {
    let Some(b) = bridge else { return xml.to_string() };
    match xml.find("<bridge ") {
        Some(at) if !xml[at..].split('>').next().unwrap_or_default().contains("name=") => {
            let end = at + "<bridge ".len();
            format!("{}name=\"{}\" {}", &xml[..end], quick_xml::escape::escape(b), &xml[end..])
        }
        _ => xml.to_string(),
    }
}

fn vm_of<'l>(lab: &'l Lab, c: &Change) -> Result<&'l crate::model::Vm, HvError> {
    lab.vms.values().find(|v| v.libvirt_name == c.libvirt_name).ok_or_else(|| missing(c))
}

fn missing(c: &Change) -> HvError {
    HvError {
        op: "apply".into(),
        object: c.libvirt_name.clone(),
        message: format!("{} is not in the lab any more (the plan is out of date)", c.address),
        kind: crate::hypervisor::HvErrorKind::Other,
        hint: Some("run `topo plan` again".into()),
    }
}

fn xml_err(op: &str, object: &str, e: crate::xml::XmlError) -> HvError {
    HvError {
        op: op.into(),
        object: object.into(),
        message: e.to_string(),
        kind: crate::hypervisor::HvErrorKind::InvalidXml,
        hint: None,
    }
}

/// After apply: observe again and plan; any remaining change is an inconsistent result.
/// Returns what was observed, for the verification that follows.
pub fn check_converged(lab: &Lab, hv: &dyn Hypervisor) -> Result<Observed, ApplyError> {
    let observed = hv.observe()?;
    let plan = match crate::plan::plan(lab, &observed, &hv.uri()) {
        Ok(p) => p,
        Err(e) => return Err(ApplyError::Inconsistent { details: vec![e.to_string()] }),
    };
    if plan.is_empty() {
        return Ok(observed);
    }
    let details = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| {
            let fields: Vec<String> = c
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{} ({} != {})",
                        f.path,
                        f.before.as_deref().unwrap_or("none"),
                        f.after.as_deref().unwrap_or("none")
                    )
                })
                .collect();
            format!(
                "{} would still {}: {}",
                c.address,
                c.action.as_str(),
                if fields.is_empty() { "state".into() } else { fields.join(", ") }
            )
        })
        .collect();
    Err(ApplyError::Inconsistent { details })
}

#[cfg(test)]
mod bridge_tests {
    use super::with_bridge;

    #[test]
    fn redefine_keeps_the_bridge_libvirt_chose() {
        let xml = "<network><name>n</name><bridge stp=\"off\" delay=\"0\"/></network>";
        assert_eq!(
            with_bridge(xml, Some("virbr1")),
            "<network><name>n</name><bridge name=\"virbr1\" stp=\"off\" delay=\"0\"/></network>"
        );
        assert_eq!(with_bridge(xml, None), xml, "a new network: libvirt picks");
        let named = "<network><name>n</name><bridge name=\"topobr0\" stp=\"off\"/></network>";
        assert_eq!(with_bridge(named, Some("virbr1")), named, "the lab's own name wins");
    }
}
