//! Runs of a lab across several hosts (`hosts:` in the lab file, docs/multi-host.md): each
//! host's share of the lab (`Lab::on_host`) goes through the one-host pipeline on that host's
//! connection, and what the user sees and confirms is one plan of every host. The hosts are
//! observed and planned at once, one thread each (each under its lab lock, which fails at
//! once when held, so nothing waits there); the host locks, which wait, are taken host by
//! host in name order (so two runs never wait for each other in a circle); every host is
//! observed again under its lock, at once, and nothing is changed anywhere before the one
//! confirmation. The hosts' plans then execute at once, one thread per host (no step of one
//! host waits for another's: a tunnel whose peer is not up yet carries nothing until it is),
//! under one progress display whose lines name their host; convergence is checked and NICs
//! verified per host at once, each NIC proven by ARP on its own host's bridge, its lease read
//! from the host that serves its network. Destroy runs the same way.

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
use crate::plan::saved::{SavedHost, SavedPlan};
use crate::results::Command;
use crate::verify::{LeaseSource, NicTarget, VerifyOptions, VerifyReport};

/// A [`Ui`] for one host's part of a run across hosts: it says what `inner` says, its lines
/// headed by the host's name when it has one (hosts run at once, their lines interleave),
/// except that it shows no plan and asks nothing (the run shows the plan of every host once
/// and asks once).
struct HostUi<'a> {
    inner: &'a dyn Ui,
    host: Option<&'a HostName>,
}

impl HostUi<'_> {
    fn headed(&self, line: &str) -> String {
        match self.host {
            Some(h) => format!("{h}: {line}"),
            None => line.to_owned(),
        }
    }
}

impl Ui for HostUi<'_> {
    fn status(&self, line: &str) {
        self.inner.status(&self.headed(line));
    }
    fn warnings(&self, w: Warnings) {
        self.inner.warnings(w);
    }
    fn warn(&self, line: &str) {
        self.inner.warn(&self.headed(line));
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

/// `f` of each of `items`, each on a thread of its own (hosts are observed, changed and
/// verified at once), in the order of `items`. A panic in `f` is raised again here.
fn par_map<I: Send, T: Send>(items: impl IntoIterator<Item = I>, f: impl Fn(I) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let runs: Vec<_> = items.into_iter().map(|i| s.spawn(move || f(i))).collect();
        runs.into_iter().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// The first error of `results` (in their order, which is the hosts' name order), or every
/// value.
fn all_ok<T, E>(results: Vec<Result<T, E>>) -> Result<Vec<T>, E> {
    results.into_iter().collect()
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
            Address::Wire(w) => share.wires.contains_key(w),
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
        let needed = self.needed(lab, targets)?;
        let planned = all_ok(par_map(&needed, |(h, share, here)| -> miette::Result<_> {
            let sub = self.host_session(h);
            let planned = sub.plan(share, here, &HostUi { inner: ui, host: Some(h) })?;
            let at = SavedHost { uri: sub.uri(), observed_sha256: crate::plan::saved::fingerprint(&planned.observed) };
            Ok((planned.plan, at))
        }))?;
        let mut plans = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for ((h, ..), (plan, at)) in needed.into_iter().zip(planned) {
            hosts.insert(h.to_string(), at);
            plans.insert(h, plan);
        }
        Ok(Planned {
            plan: Plan::across(lab.name.as_str(), targets.to_vec(), plans),
            observed: Observed::default(),
            hosts,
        })
    }

    /// `topo apply` across hosts: every host readied in name order (its lab and host locks
    /// taken, observed, planned, checked, observed again under the host lock), then the one
    /// plan shown and confirmed, then every host's plan executed in parallel, each host's
    /// convergence checked, and every NIC verified on its own host.
    ///
    /// # Errors
    /// As [`Session::apply`]; a saved plan is refused (not across hosts yet).
    pub(super) fn apply_across(&self, lab: &Lab, req: &ApplyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        if req.saved.is_some() && !req.targets.is_empty() {
            return Err(RunError::before(SessionError::TargetsOnSaved.into()));
        }
        // A saved plan records its own targets.
        let targets = req.saved.map(|s| s.steps.targets.as_slice()).unwrap_or(req.targets);
        let needed = self.needed(lab, targets).map_err(|e| RunError::before(e.into()))?;
        let readies = self.ready_across(&needed, req, ui).map_err(RunError::before)?;
        let ready: Vec<(HostName, Lab, Ready)> =
            needed.into_iter().zip(readies).map(|((h, share, _), r)| (h, share, r)).collect();
        let plans: BTreeMap<HostName, Plan> = ready.iter().map(|(h, _, r)| (h.clone(), r.plan.clone())).collect();
        let plan = Plan::across(lab.name.as_str(), req.targets.to_vec(), plans);
        let file = lab.source.name();
        ui.plan(&plan, &file).map_err(RunError::before)?;
        if plan.is_empty() {
            let run = Run { plan, executed: None, verified: None };
            let observed: Vec<(HostName, Observed)> = ready.into_iter().map(|(h, _, r)| (h, r.observed)).collect();
            return self.verify_across_after(lab, run, &observed, &BTreeMap::new(), req.verify.as_ref(), ui);
        }
        // A saved plan was reviewed when it was made: applying it is the confirmation.
        if req.saved.is_none() {
            ui.confirm("apply these changes").map_err(RunError::before)?;
        }
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
            par_map(&ready, |(h, _, r)| {
                let opts = crate::apply::Options { host: Some(h.clone()), ..req.options.clone() };
                self.host_session(h).execute(&r.plan, &opts, ui.cancel(), progress)
            })
        };
        let report = merged(reports);
        if let Err(e) = ui.executed(Command::Apply, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Some(e) = failure(&report) {
            return Err(RunError::after(e, plan, report));
        }
        let converged = par_map(&ready, |(h, share, r)| {
            self.host_session(h).converged(share, &r.plan.targets).map(|(o, _)| (h.clone(), o))
        });
        let observed = match all_ok(converged) {
            Ok(o) => o,
            Err(e) => return Err(RunError::after(e, plan, report)),
        };
        let started = report.started.clone();
        let run = Run { plan, executed: Some(report), verified: None };
        self.verify_across_after(lab, run, &observed, &started, req.verify.as_ref(), ui)
    }

    /// Apply up to execution on every host of `needed` (host, share, targets there): every
    /// host observed and planned at once ([`Session::prepare`]: nothing waits there, the lab
    /// lock fails at once when held); then the host locks of the hosts with something to
    /// change, one host at a time in name order (two runs never wait for each other in a
    /// circle); then each of those hosts observed again under its lock at once
    /// ([`Session::settle`]). Nothing is confirmed here: the caller shows the plans of every
    /// host and asks once.
    ///
    /// # Errors
    /// The first host's error in name order, as [`Session::ready`].
    fn ready_across(
        &self,
        needed: &[(HostName, Lab, Vec<Address>)],
        req: &ApplyRequest<'_>,
        ui: &dyn Ui,
    ) -> miette::Result<Vec<Ready>> {
        // A saved plan across hosts is each host's saved plan, checked on that host as one
        // on a single host is (lab file, URI, observation).
        let saved: Vec<Option<SavedPlan>> = needed
            .iter()
            .map(|(h, ..)| req.saved.map(|s| s.for_host(h.as_str())).transpose())
            .collect::<Result<_, _>>()?;
        let work: Vec<(&HostName, &Lab, ApplyRequest<'_>, HostUi<'_>)> = needed
            .iter()
            .zip(&saved)
            .map(|((h, share, here), saved)| {
                let host_req = ApplyRequest {
                    saved: saved.as_ref(),
                    // A host's saved plan records its own targets.
                    targets: if saved.is_some() { &[] } else { here },
                    options: req.options.clone(),
                    auto_approve: req.auto_approve,
                    disconnect_foreign: req.disconnect_foreign,
                    verify: req.verify.clone(),
                };
                (h, share, host_req, HostUi { inner: ui, host: Some(h) })
            })
            .collect();
        let prepared = all_ok(par_map(&work, |(h, share, r, hui)| self.host_session(h).prepare(share, r, hui)))?;
        let mut locked = Vec::new();
        for ((h, share, _, hui), p) in work.iter().zip(prepared) {
            let locks = if p.plan.is_empty() { None } else { Some(self.host_session(h).lock_host(share, &p, hui)?) };
            locked.push((p, locks));
        }
        all_ok(par_map(work.iter().zip(locked), |((h, share, r, hui), (p, locks))| match locks {
            None => Ok(p.unlocked()),
            Some(locks) => self.host_session(h).settle(share, r, p, locks, hui),
        }))
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
        let on = |vm: &crate::lab::model::VmName| {
            lab.vms.get(vm).is_some_and(|v| observed.iter().any(|(h, _)| *h == v.host))
        };
        self.await_ready(lab, &mut report, opts, &on, (t0, started), ui);
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
        only: &dyn Fn(&NicTarget) -> bool,
        opts: &VerifyOptions,
        ui: &dyn Ui,
    ) -> miette::Result<Option<VerifyReport>> {
        let quiet = HostUi { inner: ui, host: None };
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
        let all: Vec<NicTarget> = work.iter().flat_map(|(_, _, t, _)| t.iter().cloned()).collect();
        let hosts: Vec<String> = work.iter().map(|(h, ..)| h.to_string()).collect();
        ui.status(&format!(
            "Verifying {} on host{} {} ...",
            crate::verify::nics_and_addresses(&all),
            if hosts.len() == 1 { "" } else { "s" },
            hosts.join(", ")
        ));
        let results = all_ok(par_map(&work, |(_, sub, targets, leases)| {
            sub.prove_with(targets, opts.clone(), leases, &quiet, true)
        }))?;
        let report = VerifyReport { nics: results.into_iter().flat_map(|r| r.nics).collect(), ready: Vec::new() };
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
        let needed = self.needed(lab, &[])?;
        let observed = all_ok(par_map(&needed, |(h, share, _)| {
            let sub = self.host_session(h);
            ui.status(&format!("Observing host {h} ({}) ...", sub.uri()));
            sub.observe_host_for(share).map(|o| (h.clone(), o))
        }))?;
        let report = self
            .prove_across(lab, &observed, only, &opts, ui)?
            .unwrap_or(VerifyReport { nics: Vec::new(), ready: Vec::new() });
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
        let quick = VerifyOptions {
            timeout: std::time::Duration::from_millis(1500),
            sweep_after: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let needed = self.needed(lab, &[])?;
        let per_host = all_ok(par_map(&needed, |(h, share, _)| -> miette::Result<_> {
            let sub = self.host_session(h);
            let observed = sub.observe(share)?;
            let plan = crate::plan::plan(share, &observed, &sub.uri()).ok();
            let view = verify_view(lab, h);
            let report = self
                .prove_across(
                    lab,
                    &[(h.clone(), observed.clone())],
                    &|_| true,
                    &quick,
                    &HostUi { inner: &Silenced(ui), host: None },
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
            Ok(st.resources)
        }))?;
        let resources = per_host.into_iter().flatten().collect();
        Ok(crate::verify::status::Status {
            format_version: crate::verify::status::JSON_FORMAT_VERSION,
            lab: lab.name.to_string(),
            resources,
        })
    }

    /// `topo destroy` across hosts: every host's share observed and planned at once, each
    /// under its own lab lock; one confirmation of the whole plan; the host locks on the
    /// hosts taken in name order; every host's plan executed at once under one progress
    /// display; every host checked at once for what is left. A host that cannot be reached
    /// keeps its part: the others are destroyed, and the run fails saying what is left where.
    ///
    /// # Errors
    /// As [`Session::destroy`], on any host (the first in name order); what is left on hosts
    /// that could not be reached ([`SessionError::LeftOnUnreachable`]).
    pub(super) fn destroy_across(&self, lab: &Lab, req: &DestroyRequest<'_>, ui: &dyn Ui) -> Result<Run, RunError> {
        let mut left = Vec::new();
        let mut work = Vec::new();
        for h in self.host_names() {
            let share = lab.on_host(&h);
            let Some(here) = targets_in(&share, req.targets) else { continue };
            if let Err(e) = self.reach(&h) {
                ui.warn(&format!("warning: {e}"));
                left.push(left_on(&h, &share));
                continue;
            }
            work.push((h, share, here));
        }
        let left_error = || SessionError::LeftOnUnreachable { left: left.join("; ") };
        let planned = all_ok(par_map(&work, |(h, share, here)| -> miette::Result<_> {
            let sub = self.host_session(h);
            let host_id = sub.host_id()?;
            let hui = HostUi { inner: ui, host: Some(h) };
            let (plan, observed, reach, lock) =
                sub.destroy_plan(share, &destroy_request(req, h, here), &host_id, &hui)?;
            Ok(HostDestroy { host_id, plan, observed, reach, _lock: lock })
        }))
        .map_err(RunError::before)?;
        let plans = work.iter().zip(&planned).map(|((h, ..), d)| (h.clone(), d.plan.clone())).collect();
        let plan = Plan::across(lab.name.as_str(), req.targets.to_vec(), plans);
        let forget = || {
            for ((h, share, here), d) in work.iter().zip(&planned) {
                super::run::forget_keys(share, &destroy_request(req, h, here), &d.host_id, ui);
            }
        };
        if plan.is_empty() {
            if !left.is_empty() {
                return Err(RunError::before(left_error().into()));
            }
            forget();
            return Ok(Run { plan, executed: None, verified: None });
        }
        let checked = || -> miette::Result<()> {
            ui.plan(&plan, &lab.source.name())?;
            for ((h, share, _), d) in work.iter().zip(&planned) {
                let uri = self.host_session(h).uri();
                crate::plan::check_executable(
                    share,
                    &d.observed,
                    &d.plan,
                    &uri,
                    crate::plan::target::Direction::Destroy,
                    req.disconnect_foreign,
                )?;
            }
            ui.confirm("destroy these objects")
        };
        checked().map_err(RunError::before)?;
        let mut on_hosts = Vec::new();
        for ((h, ..), d) in work.iter().zip(&planned) {
            if !d.plan.is_empty() {
                let hui = HostUi { inner: ui, host: Some(h) };
                on_hosts.push(self.host_session(h).lock_on_host(&hui).map_err(RunError::before)?);
            }
        }
        // One progress display for every host (its events name their host), one stoppable
        // phase around all of them.
        let reports: Vec<Report> = {
            let _stoppable = super::Stoppable::enter(ui);
            let progress = ui.progress();
            let progress = progress.as_ref();
            par_map(work.iter().zip(&planned), |((h, _, here), d)| {
                let opts = super::run::destroy_options(&destroy_request(req, h, here));
                self.host_session(h).execute(&d.plan, &opts, ui.cancel(), progress)
            })
        };
        let report = merged(reports);
        if let Err(e) = ui.executed(Command::Destroy, &report) {
            return Err(RunError::after(e, plan, report));
        }
        if let Some(e) = failure(&report) {
            return Err(RunError::after(e, plan, report));
        }
        let checked = par_map(work.iter().zip(&planned), |((h, share, _), d)| {
            if d.plan.is_empty() { Ok(()) } else { self.host_session(h).destroyed(share, &d.plan, &d.reach) }
        });
        if let Err(e) = all_ok(checked) {
            return Err(RunError::after(e, plan, report));
        }
        drop(on_hosts);
        forget();
        if !left.is_empty() {
            return Err(RunError::after(left_error(), plan, report));
        }
        Ok(Run { plan, executed: Some(report), verified: None })
    }
}

/// One host's destroy, planned ([`Session::destroy_plan`]): its plan, what it was made on,
/// what its targets reach, and the lab lock held there.
struct HostDestroy {
    host_id: crate::apply::lock::HostId,
    plan: Plan,
    observed: Observed,
    reach: crate::plan::target::Reach,
    _lock: crate::apply::lock::LabLock,
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
