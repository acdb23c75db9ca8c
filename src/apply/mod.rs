//! Apply: interprets a plan's steps on a [`Host`] (libvirt, and the machine for netem). Each step runs once every step in
//! its `after` list is done (the plan's walk of the lab graph), independent steps in
//! parallel; stops cleanly on failure or Ctrl-C; then re-observes the host. Apply never
//! looks at the lab model: everything a step needs was decided at plan time.

pub mod lock;
pub mod outcome;
pub mod progress;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::host::hypervisor::{HostOp, HvError, HvErrorKind, Hypervisor};
use crate::host::observed::{DomainState, Observed};
use crate::lab::address::Address;
use crate::lab::model::{HostName, Lab};
use crate::plan::{Action, Change, Op, Plan, Shutdown};
pub use outcome::{StepError, StepOutcome};
use progress::{Event, Progress};

/// How apply runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Steps run at once (at least 1).
    pub parallelism: usize,
    /// How long a VM stopped with `Shutdown::Graceful` gets before it is forced off.
    pub shutdown_timeout: Duration,
    /// The host of a lab across hosts whose plan this is (docs/multi-host.md): named in
    /// every progress event and step report. `None` for a lab on one host, whose output
    /// names no host.
    pub host: Option<HostName>,
}

impl Default for Options {
    fn default() -> Self {
        Self { parallelism: 16, shutdown_timeout: Duration::from_secs(30), host: None }
    }
}

#[derive(Clone, Debug)]
pub struct StepReport {
    /// The host the step ran on, in a lab across hosts ([`Options::host`]); `None` on one host.
    pub host: Option<HostName>,
    pub address: Address,
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

impl walk::Outcome for StepOutcome {
    fn succeeded(&self) -> bool {
        matches!(self, StepOutcome::Done { .. })
    }
}

/// The steps each change of `plan` waits for: its `after` list resolved to indices (an
/// address the plan does not hold has nothing to wait for).
fn dependencies(plan: &Plan) -> Vec<BTreeSet<usize>> {
    let index: BTreeMap<&Address, usize> = plan.changes.iter().enumerate().map(|(i, c)| (&c.address, i)).collect();
    plan.changes.iter().map(|c| c.after.iter().filter_map(|a| index.get(a).copied()).collect()).collect()
}

/// Runs the steps of `plan` on `host`, exactly as planned: each change once every change of
/// its `after` list is done, at most `opts.parallelism` at once ([`walk::walk`], the one
/// scheduler). `cancel` is set by the Ctrl-C handler: no new step starts once it is set.
pub fn apply<'h>(
    plan: &Plan,
    host: impl Into<Host<'h>>,
    opts: &Options,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Report {
    let host = host.into();
    let deps = dependencies(plan);
    let shared = Shared::default();
    let finished =
        walk::walk(&deps, opts.parallelism, cancel, |i| run_step(&plan.changes[i], host, opts, &shared, progress));
    let interrupted = cancel.load(Ordering::SeqCst);
    let stuck = walk::stuck(&deps);
    let steps = plan
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| StepReport {
            host: opts.host.clone(),
            address: c.address.clone(),
            action: c.action,
            outcome: finished.get(&i).cloned().unwrap_or_else(|| StepOutcome::Skipped {
                why: if interrupted {
                    "interrupted".into()
                } else if stuck.contains(&i) {
                    "it waits on a dependency cycle in the plan (a bug in topo, or a saved plan edited by hand)".into()
                } else {
                    "not started after a failure".into()
                },
            }),
        })
        .collect();
    // The workers have joined; a step that panicked while holding the lock poisoned it, but
    // what it holds is still right.
    let started = shared.started.into_inner().unwrap_or_else(|p| p.into_inner());
    Report { steps, interrupted, started }
}

/// What the steps running at once share.
#[derive(Default)]
struct Shared {
    /// When each domain (by libvirt name) was started.
    started: Mutex<BTreeMap<String, Instant>>,
    /// Held around every network define: one at a time. libvirt 9.0 picks the bridge name of
    /// a network defined without one (`virbrN`, the first name no defined network and no host
    /// device has) without serialising concurrent defines, so two parallel defines can get the
    /// same name, and the second start then fails with "error creating bridge interface
    /// virbr5: File exists" (seen in the sandbox; docs/benchmarks.md). Starting, stopping and
    /// undefining networks in parallel is safe, and a define takes milliseconds.
    define_network: Mutex<()>,
}

/// Runs one change with its progress events; a panic in it (a bug) fails that step like an
/// error, so the walk goes on to record it and nothing is left waiting for it.
fn run_step(change: &Change, host: Host<'_>, opts: &Options, shared: &Shared, progress: &dyn Progress) -> StepOutcome {
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        progress.event(Event::Started { host: opts.host.as_ref(), address: &change.address, action: change.action });
        let t0 = Instant::now();
        let result = run_change(change, host, opts, shared).or_else(|e| already_gone(change, e));
        match result {
            Ok(()) => StepOutcome::Done { seconds: t0.elapsed().as_secs_f64() },
            Err(e) => StepOutcome::Failed { error: StepError::Host(e) },
        }
    }));
    let outcome =
        step.unwrap_or_else(|panic| StepOutcome::Failed { error: StepError::Panic(panic_message(panic.as_ref())) });
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        progress.event(Event::Finished {
            host: opts.host.as_ref(),
            address: &change.address,
            action: change.action,
            outcome: &outcome,
        })
    }));
    outcome
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Runs one step's ops in order. Every op is idempotent: what it would do is done already
/// ("already running", "already gone", "already exists as wanted") counts as done, so a
/// step cut short by a crash or a failure can simply run again from the next plan.
fn run_change(c: &Change, host: Host<'_>, opts: &Options, shared: &Shared) -> Result<(), HvError> {
    let hv = host.hv;
    let name = c.libvirt_name.as_str();
    // A network replacement keeps the config it stops, to bring it back if the new one does
    // not start.
    let replacing = c.action == Action::Replace && matches!(c.address, Address::Network(_));
    let mut previous: Option<String> = None;
    for op in &c.ops {
        match op {
            Op::EnsurePool { name, path } => hv.ensure_pool(name.as_str(), path)?,
            Op::DefineNetwork { xml } => {
                // A poisoned lock guards nothing but the order of defines: go on.
                let one_at_a_time = shared.define_network.lock().unwrap_or_else(|p| p.into_inner());
                let defined = hv.define_network(xml);
                drop(one_at_a_time);
                if let Err(e) = defined {
                    // After the stop of a replacement: the working network is down.
                    return Err(match &previous {
                        Some(old) => bring_back(host, c, old, e),
                        None => e,
                    });
                }
            }
            Op::StartNetwork => {
                if let Err(e) = done_if(hv.start_network(name), &[HvErrorKind::AlreadyActive]) {
                    return Err(match &previous {
                        Some(xml) => bring_back(host, c, xml, e),
                        None => e,
                    });
                }
            }
            Op::SetNetworkAutostart { on } => hv.set_network_autostart(name, *on)?,
            Op::AddDhcpHost { xml, .. } => {
                done_if(hv.update_dhcp_host(name, HostOp::Add, xml), &[HvErrorKind::Exists])?
            }
            Op::DeleteDhcpHost { xml, .. } => {
                done_if(hv.update_dhcp_host(name, HostOp::Delete, xml), &[HvErrorKind::NotFound])?
            }
            Op::StopNetwork => {
                if replacing {
                    previous = Some(hv.network_config_xml(name)?);
                }
                done_if(hv.stop_network(name), &[HvErrorKind::NotActive])?
            }
            Op::UndefineNetwork => done_if(hv.undefine_network(name), &[HvErrorKind::NotFound])?,
            Op::ReleaseNetwork => hv.release_network(name)?,
            Op::ReattachNics { nics } => replug(host, nics)?,
            Op::CreateVolume { volume } => hv.create_volume(volume)?,
            Op::UploadSeed { pool, name, seed } => {
                let image = seed.image().map_err(|e| HvError {
                    op: "make seed image".into(),
                    object: name.to_string(),
                    message: e.to_string(),
                    kind: HvErrorKind::Other,
                    hint: None,
                })?;
                // Under a partial name first: a seed under its own name is always whole
                // (`guest::partial_seed_name` says why).
                let (pool, name) = (pool.as_str(), name.as_str());
                let partial = crate::guest::partial_seed_name(name);
                hv.upload_volume(pool, &partial, &image)?;
                hv.clone_volume(pool, &partial, name)?;
                done_if(hv.delete_volume(pool, &partial), &[HvErrorKind::NotFound])?
            }
            Op::DeleteVolume { pool, name } => {
                done_if(hv.delete_volume(pool.as_str(), name.as_str()), &[HvErrorKind::NotFound])?
            }
            Op::DefineDomain { xml } => hv.define_domain(xml)?,
            Op::StartDomain => {
                if let Err(e) = hv.start_domain(name) {
                    // "domain is already running": a start that an interrupted run began
                    // and libvirt finished.
                    if e.kind != HvErrorKind::AlreadyActive && hv.domain_state(name).ok() != Some(DomainState::Running)
                    {
                        return Err(e);
                    }
                }
                if let Ok(mut m) = shared.started.lock() {
                    m.insert(name.to_string(), Instant::now());
                }
            }
            Op::ResumeDomain => {
                if let Err(e) = hv.resume_domain(name)
                    && hv.domain_state(name).ok() != Some(DomainState::Running)
                {
                    return Err(e);
                }
            }
            Op::StopDomain { shutdown } => {
                let timeout = match shutdown {
                    Shutdown::Graceful => opts.shutdown_timeout,
                    Shutdown::Force => Duration::ZERO,
                };
                stop_domain(hv, name, timeout)?
            }
            Op::AttachNic { xml, .. } => done_if(hv.attach_device(name, xml), &[HvErrorKind::Exists])?,
            Op::DetachNic { xml, .. } => done_if(hv.detach_device(name, xml), &[HvErrorKind::NotFound])?,
            Op::UndefineDomain => done_if(hv.undefine_domain(name), &[HvErrorKind::NotFound])?,
            Op::DeleteSnapshotMetadata { names } => {
                for snapshot in names {
                    done_if(hv.delete_snapshot_metadata(name, snapshot), &[HvErrorKind::NotFound])?;
                }
            }
            Op::SetBandwidth { mac, rate } => hv.set_bandwidth(name, *mac, *rate)?,
            Op::SetNetem { mac, netem } => host.set_netem(name, *mac, netem.as_ref())?,
            Op::EnsureTunnel { tunnel } => host.ensure_tunnel(tunnel)?,
            Op::JoinWire { a, b } => host.join_taps(a, b)?,
            Op::DeleteTunnel { device } => host.delete_tunnel(device)?,
        }
    }
    Ok(())
}

/// Plugs each NIC of `nics` in again (detach, attach) and sets its netem on the new tap.
fn replug(host: Host<'_>, nics: &[crate::plan::NicPlug]) -> Result<(), HvError> {
    let hv = host.hv;
    for n in nics {
        done_if(hv.detach_device(&n.domain, &n.xml), &[HvErrorKind::NotFound])?;
        done_if(hv.attach_device(&n.domain, &n.xml), &[HvErrorKind::Exists])?;
        // The re-plugged NIC has a new tap, without netem.
        if let Some(netem) = &n.netem {
            host.set_netem(&n.domain, n.mac, Some(netem))?;
        }
    }
    Ok(())
}

/// The new network of replacement `c` was not defined or did not start (`failed`: libvirt
/// refuses a subnet a host route has, a bridge name taken meanwhile, ...) after the working
/// one was stopped:
/// the old one is brought back (its config `previous` defined again, started, and the lab's
/// NICs that were on it plugged in again), so the lab and the domains on it are not left
/// down. Returns `failed` with a hint saying whether that worked; either way the step
/// failed, and the next apply plans the replacement again from what is on the host.
fn bring_back(host: Host<'_>, c: &Change, previous: &str, failed: HvError) -> HvError {
    let hv = host.hv;
    let name = c.libvirt_name.as_str();
    let nics: Vec<crate::plan::NicPlug> = c
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::ReattachNics { nics } => Some(nics.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let restored = hv
        .define_network(previous)
        .and_then(|()| done_if(hv.start_network(name), &[HvErrorKind::AlreadyActive]))
        .and_then(|()| replug(host, &nics));
    let (message, hint) = match restored {
        Ok(()) => (
            format!("{}; the network as it was before was brought back", failed.message),
            format!(
                "topo defined the previous config of {name} again, started it and plugged the lab's NICs back in:                  the lab runs as before this apply. Fix the cause and apply again{}",
                failed.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
            ),
        ),
        Err(e) => (
            format!("{}; bringing the previous network back failed too: {e}", failed.message),
            format!(
                "the network {name} is left as the failure found it (see `virsh net-info {name}`); fix the cause and \
                 apply again"
            ),
        ),
    };
    HvError { message, hint: Some(hint), ..failed }
}

/// An error of one of `kinds` means the op's effect is already there.
fn done_if(r: Result<(), HvError>, kinds: &[HvErrorKind]) -> Result<(), HvError> {
    match r {
        Err(e) if kinds.contains(&e.kind) => Ok(()),
        r => r,
    }
}

/// A deletion whose object vanished after the host was observed has nothing left to do.
/// (Each op of a delete is on the change's own object or its volumes, so NotFound means it
/// is gone.)
fn already_gone(c: &Change, e: HvError) -> Result<(), HvError> {
    if c.action == Action::Delete && e.kind == HvErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// Stops a domain: with a non-zero `timeout`, an ACPI shutdown request polled until the
/// domain is off (looked at on each of libvirt's domain events, [`Hypervisor::wait_until`])
/// or `timeout` passed, then forced off; with zero, forced off at once.
fn stop_domain(hv: &dyn Hypervisor, name: &str, timeout: Duration) -> Result<(), HvError> {
    if hv.domain_state(name)? == DomainState::Shutoff {
        return Ok(());
    }
    if !timeout.is_zero() {
        // A guest without ACPI support ignores the request: the timeout covers that.
        let _ = hv.shutdown_domain(name);
        // A timeout past the end of the clock (`--graceful=1000000000h`) waits forever,
        // instead of overflowing the addition.
        let until = Instant::now().checked_add(timeout);
        if hv.wait_until(until, &mut || Ok(hv.domain_state(name)? == DomainState::Shutoff))? {
            return Ok(());
        }
    }
    match hv.destroy_domain(name) {
        // It went off between the last look and destroy.
        Err(e) if e.kind == HvErrorKind::NotActive || hv.domain_state(name).ok() == Some(DomainState::Shutoff) => {
            Ok(())
        }
        r => r,
    }
}

/// After apply: the plan of `lab` on the host as `observed` again (by
/// `session::Session::converged`) must be empty for what the targets `reach` (the whole lab
/// without targets); any remaining change is an inconsistent result.
///
/// # Errors
/// [`ApplyError::Inconsistent`] with each change left (or the planner's refusal).
pub fn check_converged_on(
    lab: &Lab,
    observed: &Observed,
    uri: &str,
    reach: &crate::plan::target::Reach,
) -> Result<(), ApplyError> {
    let plan = match crate::plan::plan(lab, observed, uri) {
        Ok(p) => reach.cut(p, &[]),
        Err(e) => return Err(ApplyError::Inconsistent { details: vec![e.to_string()] }),
    };
    if plan.is_empty() {
        return Ok(());
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
