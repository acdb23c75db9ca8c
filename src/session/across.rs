//! Runs of a lab across several hosts (`hosts:` in the lab file, docs/multi-host.md): each
//! host's share of the lab (`Lab::on_host`) goes through the one-host pipeline on that host's
//! connection, and what the user sees and confirms is one plan of every host. Locks are
//! taken host by host in name order (so two runs never wait for each other in a circle);
//! every host is observed and planned, and nothing is changed anywhere, before the one
//! confirmation; the hosts' plans then execute in parallel, one thread per host (no step of
//! one host waits for another's: a tunnel whose peer is not up yet carries nothing until it
//! is); verification runs per host in parallel, each NIC proven by ARP on its own host's
//! bridge, its lease read from the host that serves its network.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::run::{ApplyRequest, DestroyRequest, Ready, Run, RunError, failure};
use super::{Planned, Session, SessionError, Ui};
use crate::apply::Report;
use crate::diag::Warnings;
use crate::host::observed::{Lease, Observed};
use crate::lab::address::Address;
use crate::lab::model::{HostName, Lab};
use crate::plan::Plan;
use crate::results::Command;
use crate::verify::{LeaseSource, NicTarget, VerifyOptions, VerifyReport};

/// A [`Ui`] for one host's part of a run across hosts: it says what `inner` says, except
/// that it shows no plan and asks nothing (the run shows the plan of every host once and
/// asks once).
struct HostUi<'a> {
    inner: &'a dyn Ui,
}

impl Ui for HostUi<'_> {
    fn status(&self, line: &str) {
        self.inner.status(line);
    }
    fn warnings(&self, w: Warnings) {
        self.inner.warnings(w);
    }
    fn warn(&self, line: &str) {
        self.inner.warn(line);
    }
    fn progress(&self) -> Box<dyn crate::apply::progress::Progress + '_> {
        self.inner.progress()
    }
    fn nic(&self, p: &crate::verify::NicProgress<'_>) {
        self.inner.nic(p);
    }
    fn stoppable(&self, on: bool) {
        self.inner.stoppable(on);
    }
    fn cancel(&self) -> &AtomicBool {
        self.inner.cancel()
    }
}

/// The targets of `targets` that are in host `host`'s share `share` (all of them when none
/// are given); `None` when targets are given and none is there: the host is left out.
fn targets_in(share: &Lab, targets: &[Address]) -> Option<Vec<Address>> {
    if targets.is_empty() {
        return Some(Vec::new());
    }
    let here: Vec<Address> = targets
        .iter()
        .filter(|a| match a {
            Address::Vm(v) => share.vms.contains_key(v),
            Address::Network(n) | Address::Tunnel(n) => share.networks.contains_key(n),
            Address::Volume(_) | Address::Pool(_) => false,
        })
        .cloned()
        .collect();
    (!here.is_empty()).then_some(here)
}

/// Host `host`'s VMs with the lab's networks as the lab file gives them (their addresses,
/// DHCP and reservations, which a host that does not serve a network leaves out of its
/// share): what its NICs are verified against.
fn verify_view(lab: &Lab, host: &HostName) -> Lab {
    let mut view = lab.on_host(host);
    for (name, net) in view.networks.iter_mut() {
        if let Some(full) = lab.networks.get(name) {
            let instance = net.instance_host.clone();
            *net = full.clone();
            net.instance_host = instance;
        }
    }
    view
}

/// Leases of a host's NICs, read from the host that serves each NIC's network.
struct ServedLeases<'s> {
    /// `(libvirt network, serving host's session)`.
    sources: Vec<(String, Session<'s>)>,
}

impl LeaseSource for ServedLeases<'_> {
    fn leases(&self) -> Result<Vec<Lease>, crate::host::hypervisor::HvError> {
        let mut all = Vec::new();
        for (network, session) in &self.sources {
            match session.hv().dhcp_leases(network) {
                Ok(l) => all.extend(l),
                Err(e) if e.kind == crate::host::hypervisor::HvErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

/// What the lab file puts on host `h` (its share), for a host that could not be reached:
/// `h2 (vm.g2, network.lan, tunnel.lan)`.
fn left_on(h: &HostName, share: &Lab) -> String {
    let mut what: Vec<String> = share.vms.keys().map(|v| format!("vm.{v}")).collect();
    what.extend(
        share
            .networks
            .values()
            .filter(|n| matches!(n.kind, crate::lab::model::NetworkKind::Managed(_)))
            .map(|n| format!("network.{}", n.name)),
    );
    let tunnels = share.share_host().map(|sh| share.tunnels_on(sh)).unwrap_or_default();
    what.extend(tunnels.iter().map(|t| format!("tunnel.{}", t.network)));
    format!("{h} ({})", what.join(", "))
}

impl Session<'_> {
    /// The hosts a run acts on, with their share of `lab` and the targets in it (all hosts
    /// without targets, else those holding one), in name order.
    ///
    /// # Errors
    /// One of them could not be reached: the run stops before changing anything, naming it.
    fn needed(&self, lab: &Lab, targets: &[Address]) -> Result<Vec<(HostName, Lab, Vec<Address>)>, SessionError> {
        let mut out = Vec::new();
        for h in self.host_names() {
            let share = lab.on_host(&h);
            let Some(here) = targets_in(&share, targets) else { continue };
            self.reach(&h)?;
            out.push((h, share, here));
        }
        Ok(out)
    }

    /// Host `h`'s session, for a host the caller found reached ([`Session::needed`],
    /// [`Session::reach`]).
    fn host_session(&self, h: &HostName) -> Session<'_> {
        // Invariant: the callers pass hosts `needed` or `reach` found reached.
        self.for_host(h).expect("a host of this session")
    }

    /// `topo plan` across hosts: each host observed (announced on `ui`) and its share
    /// planned; one plan of every host.
    ///
    /// # Errors
    /// As [`Session::plan`], on any host.
    pub(super) fn plan_across(&self, lab: &Lab, targets: &[Address], ui: &dyn Ui) -> miette::Result<Planned> {
        let mut plans = BTreeMap::new();
        for (h, share, here) in self.needed(lab, targets)? {
            ui.status(&format!("Host {h}:"));
            let planned = self.host_session(&h).plan(&share, &here, &HostUi { inner: ui })?;
            plans.insert(h, planned.plan);
        }
        Ok(Planned { plan: Plan::across(lab.name.as_str(), targets.to_vec(), plans), observed: Observed::default() })
    }

    /// `topo apply` across hosts: every host readied in name order (its lab and host locks
    /// taken, observed, planned, checked, observed again under the host lock), then the one
    /// plan shown and confirmed, then every host's plan executed in parallel, each host's
    /// convergence checked, and every NIC verified on its own host.
    ///
    /// # Errors
    /// As [`Session::apply`]; a saved plan is refused (not across hosts yet).
    pub(super) fn apply_across(&self, lab: &Lab, req: &ApplyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        if req.saved.is_some() {
            return Err(RunError::before(
                SessionError::NotAcrossHosts {
                    what: "applying a saved plan".into(),
                    help: "apply the lab file (topo apply LAB.yaml)".into(),
                }
                .into(),
            ));
        }
        let quiet = HostUi { inner: ui };
        let mut ready: Vec<(HostName, Lab, Ready)> = Vec::new();
        for (h, share, here) in self.needed(lab, req.targets).map_err(|e| RunError::before(e.into()))? {
            ui.status(&format!("Host {h}:"));
            let host_req = ApplyRequest {
                saved: None,
                targets: &here,
                options: req.options.clone(),
                auto_approve: req.auto_approve,
                disconnect_foreign: req.disconnect_foreign,
                verify: req.verify.clone(),
            };
            let r = self.host_session(&h).ready(&share, &host_req, &quiet).map_err(RunError::before)?;
            ready.push((h, share, r));
        }
        let plans: BTreeMap<HostName, Plan> = ready.iter().map(|(h, _, r)| (h.clone(), r.plan.clone())).collect();
        let plan = Plan::across(lab.name.as_str(), req.targets.to_vec(), plans);
        let file = lab.source.name();
        ui.plan(&plan, &file).map_err(RunError::before)?;
        if plan.is_empty() {
            let run = Run { plan, executed: None, verified: None };
            let observed: Vec<(HostName, Observed)> = ready.into_iter().map(|(h, _, r)| (h, r.observed)).collect();
            return self.verify_across_after(lab, run, &observed, &BTreeMap::new(), req.verify.as_ref(), ui);
        }
        ui.confirm("apply these changes").map_err(RunError::before)?;
        // A replaced VM gets a new disk and so new host keys: its pinned key (kept per lab and
        // host) is forgotten first, as on one host.
        for (_, _, r) in &ready {
            let replaced: Vec<&str> = r
                .plan
                .changes
                .iter()
                .filter(|c| c.action == crate::plan::Action::Replace && matches!(c.address, Address::Vm(_)))
                .map(|c| c.libvirt_name.as_str())
                .collect();
            if let Err(e) = crate::verify::known_hosts::forget_vms(lab.name.as_str(), &r.host, &replaced) {
                ui.warn(&format!("warning: {e}"));
            }
        }
        // One progress display for every host (its events name their host), one stoppable
        // phase around all of them.
        let reports: Vec<Report> = {
            let _stoppable = super::Stoppable::enter(ui);
            let progress = ui.progress();
            let progress = progress.as_ref();
            std::thread::scope(|s| {
                let runs: Vec<_> = ready
                    .iter()
                    .map(|(h, _, r)| {
                        let sub = self.host_session(h);
                        let opts = crate::apply::Options { host: Some(h.clone()), ..req.options.clone() };
                        s.spawn(move || sub.execute(&r.plan, &opts, ui.cancel(), progress))
                    })
                    .collect();
                // Invariant: execute does not panic (its steps report failures as outcomes).
                runs.into_iter().map(|t| t.join().expect("a host's apply thread")).collect()
            })
        };
        let report = merged(reports);
        if let Err(e) = ui.executed(Command::Apply, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Some(e) = failure(&report) {
            return Err(RunError::after(e, plan, report));
        }
        let mut observed = Vec::new();
        for (h, share, r) in &ready {
            match self.host_session(h).converged(share, &r.plan.targets) {
                Ok((o, _)) => observed.push((h.clone(), o)),
                Err(e) => return Err(RunError::after(e, plan, report)),
            }
        }
        let started = report.started.clone();
        let run = Run { plan, executed: Some(report), verified: None };
        self.verify_across_after(lab, run, &observed, &started, req.verify.as_ref(), ui)
    }

    /// After apply across hosts: every NIC of the hosts in `observed` verified on its host.
    fn verify_across_after(
        &self,
        lab: &Lab,
        mut run: Run,
        observed: &[(HostName, Observed)],
        started: &BTreeMap<String, Instant>,
        opts: Option<&VerifyOptions>,
        ui: &dyn Ui,
    ) -> Result<Run, RunError> {
        let Some(opts) = opts else { return Ok(run) };
        let t0 = Instant::now();
        let report = self.prove_across(lab, observed, &|_| true, opts, ui).map_err(RunError::before)?;
        let Some(mut report) = report else { return Ok(run) };
        super::check::since_vm_start(lab, &mut report, t0, started);
        ui.verified(&report).map_err(RunError::before)?;
        run.verified = Some(report);
        Ok(run)
    }

    /// Verifies the NICs `only` accepts of every host in `observed`, each host's in its own
    /// thread, on that host's bridges: by ARP from this machine for a local host, by `arping`
    /// on the host for one reached over ssh, from libvirt's reports where neither is possible.
    /// `None` when there is no NIC to verify.
    ///
    /// # Errors
    /// Verification cannot run on a host.
    pub(super) fn prove_across(
        &self,
        lab: &Lab,
        observed: &[(HostName, Observed)],
        only: &(dyn Fn(&NicTarget) -> bool + Sync),
        opts: &VerifyOptions,
        ui: &dyn Ui,
    ) -> miette::Result<Option<VerifyReport>> {
        let quiet = HostUi { inner: ui };
        let mut work = Vec::new();
        for (h, o) in observed {
            let sub = self.host_session(h);
            let view = verify_view(lab, h);
            // Each NIC names its host: the verify table's HOST column, `host` in its JSON.
            let targets: Vec<NicTarget> = sub
                .nic_targets(&view, o)
                .into_iter()
                .map(|t| NicTarget { host: Some(h.clone()), ..t })
                .filter(|t| only(t))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let mut sources = Vec::new();
            for t in targets.iter().filter(|t| t.dhcp) {
                let Some(net) = lab.networks.get(&t.network) else { continue };
                if sources.iter().any(|(n, _): &(String, Session<'_>)| *n == t.libvirt_network) {
                    continue;
                }
                let serving = if lab.hosts.contains_key(&net.host) { net.host.clone() } else { h.clone() };
                // A serving host that cannot be reached has no leases to give: the NIC's
                // reservation and a sweep of its subnet remain.
                if let Some(at) = self.for_host(&serving) {
                    sources.push((t.libvirt_network.clone(), at));
                }
            }
            work.push((h.clone(), sub, targets, ServedLeases { sources }));
        }
        if work.is_empty() {
            return Ok(None);
        }
        let count: usize = work.iter().map(|(_, _, t, _)| t.len()).sum();
        let hosts: Vec<String> = work.iter().map(|(h, ..)| h.to_string()).collect();
        ui.status(&format!(
            "Verifying {count} NIC{} on host{} {} ...",
            if count == 1 { "" } else { "s" },
            if hosts.len() == 1 { "" } else { "s" },
            hosts.join(", ")
        ));
        let results: Vec<miette::Result<VerifyReport>> = std::thread::scope(|s| {
            let quiet = &quiet;
            let runs: Vec<_> = work
                .iter()
                .map(|(_, sub, targets, leases)| {
                    s.spawn(move || sub.prove_with(targets, opts.clone(), leases, quiet, true))
                })
                .collect();
            // Invariant: verification does not panic.
            runs.into_iter().map(|t| t.join().expect("a host's verify thread")).collect()
        });
        let mut report = VerifyReport { nics: Vec::new() };
        for r in results {
            report.nics.extend(r?.nics);
        }
        Ok(Some(report))
    }

    /// `topo verify` across hosts: every host observed, then its NICs proven on it
    /// ([`Session::prove_across`]). The observation is the first host's (for what the
    /// caller reads of it: domain UUIDs for pinned host keys are looked up per VM).
    ///
    /// # Errors
    /// A host cannot be observed, or verification cannot run.
    pub(super) fn verify_across(
        &self,
        lab: &Lab,
        opts: VerifyOptions,
        only: &dyn Fn(&NicTarget) -> bool,
        ui: &dyn Ui,
    ) -> miette::Result<super::Proven> {
        let mut observed = Vec::new();
        for (h, ..) in self.needed(lab, &[])? {
            ui.status(&format!("Observing host {h} ({}) ...", self.host_session(&h).uri()));
            observed.push((h.clone(), self.host_session(&h).observe_host_for(&lab.on_host(&h))?));
        }
        let targets: std::collections::BTreeSet<(String, String)> = observed
            .iter()
            .flat_map(|(h, o)| self.host_session(h).nic_targets(&verify_view(lab, h), o))
            .filter(|t| only(t))
            .map(|t| (t.vm.to_string(), t.nic.clone()))
            .collect();
        let chosen = |t: &NicTarget| targets.contains(&(t.vm.to_string(), t.nic.clone()));
        let report =
            self.prove_across(lab, &observed, &chosen, &opts, ui)?.unwrap_or(VerifyReport { nics: Vec::new() });
        let mut all = Observed::default();
        for (_, o) in observed {
            all.domains.extend(o.domains);
        }
        Ok(super::Proven { observed: all, report })
    }

    /// `topo status` across hosts: each host's share, its resources marked with the host
    /// (networks once per host they exist on), NICs checked against the lab's networks and
    /// the serving hosts' leases.
    ///
    /// # Errors
    /// A host cannot be observed.
    pub(super) fn status_across(&self, lab: &Lab, ui: &dyn Ui) -> miette::Result<crate::verify::status::Status> {
        let mut resources = Vec::new();
        let quick = VerifyOptions {
            timeout: std::time::Duration::from_millis(1500),
            sweep_after: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        for (h, share, _) in self.needed(lab, &[])? {
            let sub = self.host_session(&h);
            let observed = sub.observe(&share)?;
            let plan = crate::plan::plan(&share, &observed, &sub.uri()).ok();
            let view = verify_view(lab, &h);
            let report = self
                .prove_across(
                    lab,
                    &[(h.clone(), observed.clone())],
                    &|_| true,
                    &quick,
                    &HostUi { inner: &Silenced(ui) },
                )
                .ok()
                .flatten();
            let leases: Vec<Lease> = view
                .networks
                .values()
                .flat_map(|n| {
                    let serving = if lab.hosts.contains_key(&n.host) { n.host.clone() } else { h.clone() };
                    self.for_host(&serving)
                        .map(|at| at.hv().dhcp_leases(n.libvirt_name.as_str()).unwrap_or_default())
                        .unwrap_or_default()
                })
                .collect();
            let mut st = crate::verify::status::status(&view, &observed, plan.as_ref(), report.as_ref(), &leases);
            for r in &mut st.resources {
                r.host = Some(h.clone());
            }
            resources.extend(st.resources);
        }
        Ok(crate::verify::status::Status {
            format_version: crate::verify::status::JSON_FORMAT_VERSION,
            lab: lab.name.to_string(),
            resources,
        })
    }

    /// `topo destroy` across hosts: every host's share destroyed in name order, each under its
    /// own locks, after one confirmation of the whole plan.
    ///
    /// # Errors
    /// As [`Session::destroy`], on any host.
    pub(super) fn destroy_across(&self, lab: &Lab, req: &DestroyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        let quiet = HostUi { inner: ui };
        let mut plans = BTreeMap::new();
        // A host that cannot be reached keeps its part of the lab: the others are destroyed,
        // and the run fails saying what is left where.
        let mut left = Vec::new();
        for h in self.host_names() {
            let share = lab.on_host(&h);
            let Some(here) = targets_in(&share, req.targets) else { continue };
            if let Err(e) = self.reach(&h) {
                ui.warn(&format!("warning: {e}"));
                left.push(left_on(&h, &share));
                continue;
            }
            ui.status(&format!("Host {h}:"));
            let host_id = self.host_session(&h).host_id().map_err(|e| RunError::before(e.into()))?;
            let host_req = destroy_request(req, &h, &here);
            let (plan, ..) =
                self.host_session(&h).destroy_plan(&share, &host_req, &host_id, &quiet).map_err(RunError::before)?;
            plans.insert(h, plan);
        }
        let plan = Plan::across(lab.name.as_str(), req.targets.to_vec(), plans);
        if plan.is_empty() {
            if !left.is_empty() {
                return Err(RunError::before(SessionError::LeftOnUnreachable { left: left.join("; ") }.into()));
            }
            return Ok(Run { plan, executed: None, verified: None });
        }
        ui.plan(&plan, &lab.source.name())
            .and_then(|()| ui.confirm("destroy these objects"))
            .map_err(RunError::before)?;
        // Host by host (each its own progress display would garble a terminal if run at once).
        let mut reports = Vec::new();
        for h in self.host_names() {
            let share = lab.on_host(&h);
            let Some(here) = targets_in(&share, req.targets) else { continue };
            if self.reach(&h).is_err() {
                continue;
            }
            let host_req = destroy_request(req, &h, &here);
            match self.host_session(&h).destroy(&share, &host_req, &quiet) {
                Ok(run) => reports.extend(run.executed),
                Err(e) => {
                    reports.extend(e.partial.and_then(|p| p.executed));
                    return Err(RunError::after(e.error, plan, merged(reports)));
                }
            }
        }
        let report = merged(reports);
        if let Err(e) = ui.executed(Command::Destroy, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if !left.is_empty() {
            return Err(RunError::after(SessionError::LeftOnUnreachable { left: left.join("; ") }, plan, report));
        }
        Ok(Run { plan, executed: Some(report), verified: None })
    }
}

/// A [`Ui`] that passes on only what stops a run (cancel): for status's quick proof.
struct Silenced<'a>(&'a dyn Ui);

impl Ui for Silenced<'_> {
    fn cancel(&self) -> &AtomicBool {
        self.0.cancel()
    }
}

/// `req` cut to host `host`'s targets, its steps naming the host.
fn destroy_request<'a>(req: &DestroyRequest<'_>, host: &HostName, targets: &'a [Address]) -> DestroyRequest<'a> {
    DestroyRequest {
        targets,
        graceful: req.graceful,
        options: crate::apply::Options { host: Some(host.clone()), ..req.options.clone() },
        disconnect_foreign: req.disconnect_foreign,
    }
}

/// The reports of several hosts' runs as one.
fn merged(reports: Vec<Report>) -> Report {
    let mut out = Report::default();
    for r in reports {
        out.steps.extend(r.steps);
        out.interrupted |= r.interrupted;
        out.started.extend(r.started);
    }
    out
}
