//! `apply` and `destroy` as runs of the pipeline: observe, plan, the guard, the locks, the
//! observation again under the host lock, execution, the convergence check and the
//! verification.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Session, SessionError, Stoppable, Ui};
use crate::apply::lock::{HostId, HostLock, LabLock};
use crate::apply::{ApplyError, Options, Report, StepOutcome};
use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::plan::saved::SavedPlan;
use crate::plan::target::{Direction, Reach};
use crate::plan::{Action, Plan, Shutdown};
use crate::results::Command;
use crate::verify::{VerifyOptions, VerifyReport};

/// How long apply waits for another run to finish with the host lock (it holds it while it
/// executes its plan).
const HOST_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// What `topo apply` asks for.
pub struct ApplyRequest<'a> {
    /// The saved plan being applied (`topo apply plan.json`): run exactly as reviewed, or
    /// not at all.
    pub saved: Option<&'a SavedPlan>,
    /// `--target`: apply only these and what they depend on (empty: the whole lab).
    pub targets: &'a [Address],
    /// Parallelism and shutdown timeout.
    pub options: Options,
    /// `-y`: nobody reviews the plan shown (so apply may follow a host that changed).
    pub auto_approve: bool,
    /// `--disconnect-foreign`.
    pub disconnect_foreign: bool,
    /// The ARP verification after apply; `None` with `--no-verify`.
    pub verify: Option<VerifyOptions>,
}

/// What `topo destroy` asks for.
pub struct DestroyRequest<'a> {
    /// `--target`: destroy only these and what depends on them (empty: the whole lab).
    pub targets: &'a [Address],
    /// `--graceful`: ask running VMs to shut down and wait this long; `None` forces them off.
    pub graceful: Option<Duration>,
    /// Parallelism and shutdown timeout.
    pub options: Options,
    /// `--disconnect-foreign`.
    pub disconnect_foreign: bool,
}

/// What a run did: its plan, the report of its steps (`None` when there was nothing to do),
/// and apply's verification (`None` with `--no-verify` or no NIC to verify). A verification
/// with failed NICs is returned, not an error: the caller shows it, then checks it
/// ([`crate::verify::report::check`]).
pub struct Run {
    pub plan: Plan,
    pub executed: Option<Report>,
    pub verified: Option<VerifyReport>,
}

/// A run that failed; `partial` is what it did when it failed after its steps ran (for the
/// record of the run, e.g. the JSON document), `None` when it failed before or while verifying.
pub struct RunError {
    pub error: miette::Report,
    pub partial: Option<Box<Run>>,
}

impl RunError {
    pub(super) fn before(error: miette::Report) -> Self {
        Self { error, partial: None }
    }
    pub(super) fn after(error: impl Into<miette::Report>, plan: Plan, report: Report) -> Self {
        Self { error: error.into(), partial: Some(Box::new(Run { plan, executed: Some(report), verified: None })) }
    }
}

/// An apply ready to execute: the plan, what it was checked on, and the locks held.
pub(super) struct Ready {
    pub(super) plan: Plan,
    pub(super) observed: Observed,
    /// What the plan's targets reach on `observed` (whole lab without targets).
    reach: Reach,
    pub(super) host: HostId,
    _lab_lock: LabLock,
    /// Held when there is something to execute.
    _host_lock: Option<HostLock>,
    /// The same lock on a host reached over ssh, held there (`flock` on the host): runs from
    /// other machines wait for it too.
    _on_host: Option<crate::host::runner::HostLockOn>,
}

/// Apply's first part on one host ([`Session::prepare`]): the plan shown and checked, what
/// it was made on, and the lab lock.
pub(super) struct Prepared {
    pub(super) plan: Plan,
    observed: Observed,
    reach: Reach,
    host: HostId,
    lab_lock: LabLock,
}

impl Prepared {
    /// Ready with no host lock: for a plan with nothing to execute.
    pub(super) fn unlocked(self) -> Ready {
        let Prepared { plan, observed, reach, host, lab_lock } = self;
        Ready { plan, observed, reach, host, _lab_lock: lab_lock, _host_lock: None, _on_host: None }
    }
}

/// The host lock of a run that changes a host ([`Session::lock_host`]): here, and on the
/// host itself when it is reached over ssh (`flock` there: runs from other machines wait for
/// it too). Released on drop.
pub(super) struct HostLocks {
    here: HostLock,
    on_host: Option<crate::host::runner::HostLockOn>,
}

impl Session<'_> {
    /// `topo apply`: under the lab lock, observes and plans `lab` (or takes the saved plan,
    /// refused when the lab file, the URI or the host changed since it was made), shows the
    /// plan on `ui`, checks it ([`crate::plan::check_executable`]), asks `ui` to confirm it
    /// (not a saved one: applying it is the confirmation), then takes the host lock, observes
    /// again and settles the plan to execute ([`Executing::plan_under_lock`]), executes it,
    /// checks the host converged and verifies the NICs it covered.
    ///
    /// # Errors
    /// Any refusal, a cancelled confirmation, a failed step, an inconsistent result, a
    /// verification that could not run.
    pub fn apply(&self, lab: &Lab, req: &ApplyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        if self.is_multi_host() {
            return self.apply_across(lab, req, ui);
        }
        let ready = self.ready(lab, req, ui).map_err(RunError::before)?;
        let Ready { plan, observed, reach, host, .. } = &ready;
        if plan.is_empty() {
            let run = Run { plan: plan.clone(), executed: None, verified: None };
            return self.verify_after(lab, run, (observed, reach), &BTreeMap::new(), req.verify.as_ref(), ui);
        }
        // A replaced VM gets a new disk and so new host keys: its pinned key is forgotten
        // first (a run killed after the replace must not leave the old key to refuse the new).
        let replaced: Vec<&str> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Replace && matches!(c.address, Address::Vm(_)))
            .map(|c| c.libvirt_name.as_str())
            .collect();
        if let Err(e) = crate::verify::known_hosts::forget_vms(lab.name.as_str(), host, &replaced) {
            ui.warn(&format!("warning: {e}"));
        }
        let report = self.execute_on(plan, &req.options, ui);
        let plan = plan.clone();
        if let Err(e) = ui.executed(Command::Apply, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Some(e) = failure(&report) {
            return Err(RunError::after(e, plan, report));
        }
        let (observed, reach) = match self.converged(lab, &plan.targets) {
            Ok(o) => o,
            Err(e) => return Err(RunError::after(e, plan, report)),
        };
        let started = report.started.clone();
        let run = Run { plan, executed: Some(report), verified: None };
        self.verify_after(lab, run, (&observed, &reach), &started, req.verify.as_ref(), ui)
    }

    /// Apply up to execution: the plan shown, checked and confirmed, and, when it changes
    /// anything, the host lock held and the plan settled on the host as observed under it.
    pub(super) fn ready(&self, lab: &Lab, req: &ApplyRequest<'_>, ui: &dyn Ui) -> miette::Result<Ready> {
        let prepared = self.prepare(lab, req, ui)?;
        if prepared.plan.is_empty() {
            return Ok(prepared.unlocked());
        }
        // A saved plan was reviewed when it was made: applying it is the confirmation.
        if req.saved.is_none() {
            ui.confirm("apply these changes")?;
        }
        let locks = self.lock_host(lab, &prepared, ui)?;
        self.settle(lab, req, prepared, locks, ui)
    }

    /// Apply's first part, which changes nothing and takes no lock another run waits for:
    /// under the lab lock (taken here, failing at once when another run holds it), the host
    /// observed and the plan made (or the saved plan taken, refused when stale), shown on
    /// `ui` and checked ([`crate::plan::check_executable`]).
    ///
    /// # Errors
    /// The lab lock held elsewhere, a failed observation, a refusal, a stale saved plan.
    pub(super) fn prepare(&self, lab: &Lab, req: &ApplyRequest<'_>, ui: &dyn Ui) -> miette::Result<Prepared> {
        if req.saved.is_some() && !req.targets.is_empty() {
            return Err(SessionError::TargetsOnSaved.into());
        }
        let uri = self.uri();
        let host = self.host_id()?;
        let lab_lock = LabLock::acquire(lab.name.as_str(), &host, &uri, "topo apply")?;
        let (observed, reach) = self.observe_announced(lab, req.targets, ui)?;
        // A saved plan runs exactly as reviewed, or not at all: refused when the lab file, the
        // URI or the host changed since it was made. Never planned again in its place.
        let plan = match req.saved {
            Some(saved) => {
                saved.check_fresh(&lab.source.text, &uri, &observed)?;
                saved.steps.clone()
            }
            None => self.plan_in(lab, &observed, req.targets, &reach)?,
        };
        // A saved plan records its own targets.
        let reach =
            if req.saved.is_some() { Reach::of(lab, &observed, &plan.targets, Direction::Apply) } else { reach };
        ui.plan(&plan, &lab.source.name())?;
        // The plan shown passes the checks before anyone is asked to confirm it; the plan
        // executed passes them again under the host lock (it may be another one made there).
        crate::plan::check_executable(lab, &observed, &plan, &uri, Direction::Apply, req.disconnect_foreign)?;
        Ok(Prepared { plan, observed, reach, host, lab_lock })
    }

    /// The host lock, here and, for a host reached over ssh, on the host itself, waiting (up
    /// to [`HOST_LOCK_TIMEOUT`]) while another run holds it, said on `ui`. Runs across hosts
    /// take the hosts' locks one host at a time in name order, so two runs never wait for
    /// each other in a circle.
    ///
    /// # Errors
    /// The lock could not be taken in time, or not read.
    pub(super) fn lock_host(&self, lab: &Lab, prepared: &Prepared, ui: &dyn Ui) -> miette::Result<HostLocks> {
        let here =
            HostLock::acquire(&prepared.host, &format!("topo apply lab {}", lab.name), HOST_LOCK_TIMEOUT, |h| {
                ui.status(&format!("Waiting for another topo run on this host ({h}) ..."));
            })?;
        let on_host = self.lock_on_host(ui)?;
        Ok(HostLocks { here, on_host })
    }

    /// Apply's plan settled under the host lock: host conflicts (subnets, bridges, names
    /// another lab claims) were checked on an observation that another run may have changed
    /// since, so the host is observed again and the plan to execute decided
    /// ([`Executing::plan_under_lock`]): a lab that claimed the same subnet meanwhile is now
    /// seen, and this run gets the normal plan refusal before it touches anything.
    ///
    /// # Errors
    /// A failed observation; the plan under the lock refused or different from a confirmed one.
    pub(super) fn settle(
        &self,
        lab: &Lab,
        req: &ApplyRequest<'_>,
        prepared: Prepared,
        locks: HostLocks,
        ui: &dyn Ui,
    ) -> miette::Result<Ready> {
        let Prepared { mut plan, observed, reach, host, lab_lock } = prepared;
        let uri = self.uri();
        let now = self.observe(lab)?;
        let ctx = Executing {
            lab,
            uri: &uri,
            saved: req.saved,
            auto_approve: req.auto_approve,
            disconnect_foreign: req.disconnect_foreign,
        };
        if let Some(again) = ctx.plan_under_lock(&plan, &observed, &now)? {
            ui.status("The host changed while waiting for the host lock; applying the plan for it now:");
            ui.plan(&again, &lab.source.name())?;
            plan = again;
        }
        Ok(Ready {
            plan,
            observed,
            reach,
            host,
            _lab_lock: lab_lock,
            _host_lock: Some(locks.here),
            _on_host: locks.on_host,
        })
    }

    /// The host lock on the host itself when the host is reached over ssh
    /// ([`crate::host::runner::HostLockOn`]); `None` for this machine (the lock file here is
    /// the host's) and hosts topo reaches through libvirt alone.
    pub(super) fn lock_on_host(&self, ui: &dyn Ui) -> miette::Result<Option<crate::host::runner::HostLockOn>> {
        let Some(runner) = self.host().machine.and_then(|m| m.remote_runner()) else { return Ok(None) };
        let held = crate::host::runner::HostLockOn::acquire(runner.as_ref(), HOST_LOCK_TIMEOUT, || {
            ui.status(&format!("Waiting for another topo run on {} ...", runner.describe()));
        })?;
        Ok(Some(held))
    }

    /// After apply (or a plan with nothing to do): verifies the NICs of the VMs the plan
    /// covered (those `reach`es), on the host as `observed` last, each verified NIC's time
    /// counted from its VM's start when apply `started` it.
    fn verify_after(
        &self,
        lab: &Lab,
        mut run: Run,
        (observed, reach): (&Observed, &Reach),
        started: &BTreeMap<String, Instant>,
        opts: Option<&VerifyOptions>,
        ui: &dyn Ui,
    ) -> Result<Run, RunError> {
        let Some(opts) = opts else { return Ok(run) };
        let mut targets = self.nic_targets(lab, observed);
        // A partial apply verifies the VMs it covered.
        targets.retain(|t| reach.contains(&Address::Vm(t.vm.clone())));
        let covered = |vm: &crate::lab::model::VmName| reach.contains(&Address::Vm(vm.clone()));
        if targets.is_empty() {
            // VMs without NICs may still have console conditions.
            let mut report = VerifyReport { nics: Vec::new(), ready: Vec::new() };
            self.await_ready(lab, &mut report, opts, &covered, (Instant::now(), started), ui);
            if !report.ready.is_empty() {
                ui.verified(&report).map_err(RunError::before)?;
                run.verified = Some(report);
            }
            return Ok(run);
        }
        let over_ssh = self.host().machine.is_some_and(|m| m.remote_runner().is_some());
        // A row is a NIC and an address family: IPv6 rows are proven by NDP.
        let six = targets.iter().any(|t| t.family == crate::verify::Family::Ipv6);
        let how = match (crate::verify::HostAccess::of_uri(&self.uri()), six) {
            (crate::verify::HostAccess::Remote, false) if over_ssh => "by ARP on the host (arping over ssh)",
            (crate::verify::HostAccess::Remote, true) if over_ssh => {
                "by ARP and NDP on the host (arping and ndisc6 over ssh)"
            }
            (crate::verify::HostAccess::Remote, _) => "from libvirt's reports (remote host: no ARP)",
            (_, false) => "by ARP",
            (_, true) => "by ARP and NDP",
        };
        ui.status(&format!("Verifying {} {how} ...", crate::verify::nics_and_addresses(&targets)));
        let t0 = Instant::now();
        let mut report = self.prove(&targets, opts.clone(), ui).map_err(RunError::before)?;
        super::check::since_vm_start(lab, &mut report, t0, started);
        self.await_ready(lab, &mut report, opts, &covered, (t0, started), ui);
        ui.verified(&report).map_err(RunError::before)?;
        run.verified = Some(report);
        Ok(run)
    }

    /// Executes `plan` with `ui`'s progress display, in a phase a signal stops gracefully.
    pub(super) fn execute_on(&self, plan: &Plan, opts: &Options, ui: &dyn Ui) -> Report {
        let _stoppable = Stoppable::enter(ui);
        let progress = ui.progress();
        self.execute(plan, opts, ui.cancel(), progress.as_ref())
    }

    /// `topo destroy`: under the lab lock, observes the host, plans the removal of what
    /// `lab` owns (cut to the targets), shows it on `ui`, checks and confirms it, executes
    /// it and checks nothing of it is left. The lab's pinned host keys are forgotten when
    /// the whole lab is gone. An empty plan is returned with no report.
    ///
    /// # Errors
    /// Another lab instance, a refusal, a cancelled confirmation, a failed step, or objects
    /// still there after the run.
    pub fn destroy(&self, lab: &Lab, req: &DestroyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        if self.is_multi_host() {
            return self.destroy_across(lab, req, ui);
        }
        let uri = self.uri();
        let host = self.host_id().map_err(|e| RunError::before(e.into()))?;
        let (plan, observed, reach, _lock) = self.destroy_plan(lab, req, &host, ui).map_err(RunError::before)?;
        let forget_keys = || forget_keys(lab, req, &host, ui);
        if plan.is_empty() {
            forget_keys();
            return Ok(Run { plan, executed: None, verified: None });
        }
        let confirmed = ui.plan(&plan, &lab.source.name()).and_then(|()| {
            crate::plan::check_executable(lab, &observed, &plan, &uri, Direction::Destroy, req.disconnect_foreign)?;
            ui.confirm("destroy these objects")
        });
        confirmed.map_err(RunError::before)?;
        let _on_host = self.lock_on_host(ui).map_err(RunError::before)?;
        let report = self.execute_on(&plan, &destroy_options(req), ui);
        if let Err(e) = ui.executed(Command::Destroy, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Some(e) = failure(&report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Err(e) = self.destroyed(lab, &plan, &reach) {
            return Err(RunError::after(e, plan, report));
        }
        forget_keys();
        Ok(Run { plan, executed: Some(report), verified: None })
    }

    /// After destroy's `plan` ran: the host observed again, and nothing of what its targets
    /// reached (`reach`, the whole lab without targets) may be left.
    ///
    /// # Errors
    /// The host cannot be observed, or objects are still there ([`ApplyError::Inconsistent`]).
    pub(super) fn destroyed(&self, lab: &Lab, plan: &Plan, reach: &Reach) -> miette::Result<()> {
        let left = crate::plan::plan_destroy(lab, &self.observe_host_for(lab)?);
        // What the targets reached before the destroy: the rest of the lab stays.
        let left = reach.cut(left, &plan.targets);
        if !left.is_empty() {
            let details =
                left.changes.iter().map(|c| format!("{} ({}) is still there", c.address, c.libvirt_name)).collect();
            return Err(ApplyError::Inconsistent { details }.into());
        }
        Ok(())
    }

    /// Destroy up to its plan: the lab lock, the host observed, another instance refused,
    /// the plan cut to the targets, and what they reach.
    pub(super) fn destroy_plan(
        &self,
        lab: &Lab,
        req: &DestroyRequest<'_>,
        host: &HostId,
        ui: &dyn Ui,
    ) -> miette::Result<(Plan, Observed, Reach, LabLock)> {
        let uri = self.uri();
        let lock = LabLock::acquire(lab.name.as_str(), host, &uri, "topo destroy")?;
        ui.status(&format!("Observing {uri} ..."));
        let observed = self.observe_host_for(lab)?;
        crate::plan::check_instances(lab, &observed, &uri)?;
        let shutdown = if req.graceful.is_some() { Shutdown::Graceful } else { Shutdown::Force };
        let full = crate::plan::plan_destroy_with(lab, &observed, shutdown);
        let reach = Reach::of(lab, &observed, req.targets, Direction::Destroy);
        let plan = crate::plan::target::targeted_in(lab, &observed, full, req.targets, &reach)?;
        Ok((plan, observed, reach, lock))
    }
}

/// The execution options of destroy: `--graceful`'s wait as the shutdown timeout.
pub(super) fn destroy_options(req: &DestroyRequest<'_>) -> Options {
    let mut opts = req.options.clone();
    if let Some(t) = req.graceful {
        opts.shutdown_timeout = t;
    }
    opts
}

/// The whole lab gone from `host` (no targets): so are its VMs' pinned host keys there
/// (`verify::known_hosts`); a file that cannot be removed is warned about on `ui`.
pub(super) fn forget_keys(lab: &Lab, req: &DestroyRequest<'_>, host: &HostId, ui: &dyn Ui) {
    if req.targets.is_empty()
        && let Err(e) = crate::verify::known_hosts::remove(lab.name.as_str(), host)
    {
        ui.warn(&format!("warning: cannot remove the lab's known_hosts file: {e}"));
    }
}

/// The error a finished run's report amounts to: `None` when every step is done.
pub(super) fn failure(report: &Report) -> Option<ApplyError> {
    if !report.failed() {
        return None;
    }
    let failed = report.steps.iter().filter(|s| matches!(s.outcome, StepOutcome::Failed { .. })).count();
    let skipped = report.steps.iter().filter(|s| matches!(s.outcome, StepOutcome::Skipped { .. })).count();
    if report.interrupted && failed == 0 {
        return Some(ApplyError::Interrupted { skipped });
    }
    Some(ApplyError::StepsFailed { failed, skipped })
}

/// What apply needs to settle the plan it executes once it holds the host lock.
struct Executing<'a> {
    lab: &'a Lab,
    uri: &'a str,
    /// The saved plan being applied, if any.
    saved: Option<&'a SavedPlan>,
    /// `-y`: nobody reviewed the plan shown.
    auto_approve: bool,
    /// `--disconnect-foreign`.
    disconnect_foreign: bool,
}

impl Executing<'_> {
    /// The plan to execute, given the plan `shown` (made, or saved, on `before`) and the host
    /// `now`, observed again under the host lock: `None` when `shown` stands, `Some` with the
    /// plan made again on `now` when the host changed and `-y` lets apply follow it (like
    /// `terraform apply -auto-approve`: nobody reviewed the plan shown, say after a killed run
    /// whose last libvirt call libvirtd was still finishing). A plan a person confirmed, or a
    /// saved one, is never swapped for another. Whichever plan is returned passed
    /// [`crate::plan::check_executable`] on `now`, the same checks as the plan shown.
    ///
    /// # Errors
    /// A saved plan made stale by the change, a plan refusal on `now`, a confirmed plan the
    /// change made different, or a failed check of the plan to execute.
    fn plan_under_lock(&self, shown: &Plan, before: &Observed, now: &Observed) -> miette::Result<Option<Plan>> {
        let mut swapped = None;
        if now != before {
            if let Some(saved) = self.saved {
                saved.check_fresh(&self.lab.source.text, self.uri, now)?;
            }
            let again = crate::plan::plan(self.lab, now, self.uri)?;
            let again = crate::plan::target::targeted(self.lab, now, again, &shown.targets, Direction::Apply)?;
            if again != *shown {
                if !self.auto_approve || self.saved.is_some() {
                    return Err(SessionError::HostChanged.into());
                }
                swapped = Some(again);
            }
        }
        let executed = swapped.as_ref().unwrap_or(shown);
        crate::plan::check_executable(self.lab, now, executed, self.uri, Direction::Apply, self.disconnect_foreign)?;
        Ok(swapped)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::apply::progress::Silent;
    use crate::host::hypervisor::Hypervisor;
    use crate::host::hypervisor::memory::MemoryHypervisor;
    use crate::lab::source::SourceFile;

    const LAB: &str = "apiVersion: topo/v1
name: t
networks:
  iso:
    mode: isolated
    subnet: SUBNET.0/24
vms:
  a:
    boot: {kernel: KERNEL}
    nics:
      - network: iso
";

    fn lab(subnet: &str) -> Lab {
        let text = LAB.replace("KERNEL", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).replace("SUBNET", subnet);
        crate::lab::validate::load(&SourceFile::from_text(Path::new("lab.yaml"), text)).expect("valid lab")
    }

    fn foreign(name: &str, mac: &str) -> String {
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64'>hvm</type></os><devices><interface type='network'>\
             <mac address='{mac}'/><source network='t-iso'/></interface></devices></domain>"
        )
    }

    /// A host with lab `t` applied on 192.168.152.0/24.
    fn applied() -> MemoryHypervisor {
        let hv = MemoryHypervisor::new();
        let l = lab("192.168.152");
        let p = crate::plan::plan(&l, &hv.observe().unwrap(), "mem").unwrap();
        let r = crate::apply::apply(&p, &hv, &Options::default(), &Default::default(), &Silent);
        assert!(!r.failed(), "{r:?}");
        hv
    }

    fn ctx<'a>(lab: &'a Lab, saved: Option<&'a SavedPlan>, disconnect_foreign: bool) -> Executing<'a> {
        Executing { lab, uri: "mem", saved, auto_approve: true, disconnect_foreign }
    }

    /// The plan shown replaces the network with nothing foreign on it; by the time apply
    /// holds the host lock a foreign VM runs there. With -y apply plans again, and that plan
    /// must pass the `--disconnect-foreign` guard like the plan shown (it used not to).
    #[test]
    fn a_plan_made_again_under_the_host_lock_passes_the_guard() {
        let hv = applied();
        let l = lab("192.168.153");
        let before = hv.observe().unwrap();
        let shown = crate::plan::plan(&l, &before, "mem").unwrap();
        crate::plan::check_executable(&l, &before, &shown, "mem", Direction::Apply, false).expect("shown plan passes");
        hv.define_domain(&foreign("outsider", "52:54:00:aa:00:05")).unwrap();
        hv.start_domain("outsider").unwrap();
        let now = hv.observe().unwrap();
        let err = ctx(&l, None, false).plan_under_lock(&shown, &before, &now).unwrap_err();
        assert!(format!("{err}").contains("would replace a network"), "{err}");
        let again = ctx(&l, None, true).plan_under_lock(&shown, &before, &now).unwrap();
        assert!(again.is_some_and(|p| p != shown), "with --disconnect-foreign the new plan is executed");
        // Unchanged host: the plan shown stands, and still passes the guard.
        assert!(ctx(&l, None, false).plan_under_lock(&shown, &before, &before).unwrap().is_none());
    }

    /// A host conflict seen only under the lock (another network took the subnet meanwhile)
    /// refuses the run even with --disconnect-foreign: the plan executed passes every check
    /// of the plan shown, on the observation under the lock.
    #[test]
    fn a_conflict_seen_under_the_lock_refuses_the_run() {
        let hv = applied();
        let l = lab("192.168.153");
        let before = hv.observe().unwrap();
        let shown = crate::plan::plan(&l, &before, "mem").unwrap();
        let mut now = before.clone();
        now.networks.insert(
            "other".into(),
            crate::host::xml::parse_network(
                "<network><name>other</name><bridge name='virbr9'/><ip address='192.168.153.1' netmask='255.255.255.0'/></network>",
                Default::default(),
            )
            .unwrap(),
        );
        let err = ctx(&l, None, true).plan_under_lock(&shown, &before, &now).unwrap_err();
        assert!(format!("{err:?}").contains("conflicts with what is on"), "{err:?}");
    }
}
