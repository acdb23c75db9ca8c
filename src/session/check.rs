//! What the session proves and shows without changing the host: the ARP verification (also
//! the one that ends apply), `topo status`, and the inventory `topo inventory` and `topo
//! ssh` use, its host keys pinned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Session, Stoppable, Ui};
use crate::host::hypervisor::{HvError, Hypervisor};
use crate::host::observed::{Lease, Observed};
use crate::lab::model::{HostName, Lab, VmName};
use crate::verify::inventory::Inventory;
use crate::verify::prober::PnetProber;
use crate::verify::ready::{self, LocalProbe, ReadyProbe, ReadyTarget, RunnerProbe};
use crate::verify::status::Status;
use crate::verify::{
    HostAccess, HypervisorLeases, LastLeases, LeaseSource, NicState, NicTarget, SystemClock, VerifyOptions,
    VerifyReport, verify,
};
use std::sync::Arc;

/// A verification and the host it was made on.
pub struct Proven {
    pub observed: Observed,
    pub report: VerifyReport,
}

impl Session<'_> {
    /// One target per NIC of `lab` on the default host as `observed`.
    pub fn nic_targets(&self, lab: &Lab, observed: &Observed) -> Vec<NicTarget> {
        crate::verify::targets(lab, observed, HostAccess::of_uri(&self.uri()))
    }

    /// `topo verify` (and the proof under `topo inventory` and `topo ssh`): observes the host
    /// and proves by ARP the NICs of `lab` that `only` keeps, each state change told to `ui`.
    ///
    /// # Errors
    /// A failed observation, or a verification that cannot run at all.
    pub fn verify(
        &self,
        lab: &Lab,
        opts: VerifyOptions,
        only: &dyn Fn(&NicTarget) -> bool,
        ui: &dyn Ui,
    ) -> miette::Result<Proven> {
        if self.is_multi_host() {
            return self.verify_across(lab, opts, only, ui);
        }
        let observed = self.observe_host()?;
        let targets: Vec<NicTarget> = self.nic_targets(lab, &observed).into_iter().filter(|t| only(t)).collect();
        let report = self.prove(&targets, opts, ui)?;
        Ok(Proven { observed, report })
    }

    /// `topo verify`: [`Session::verify`] of every NIC, then the VMs' `ready:` conditions
    /// waited for ([`Session::await_ready`]), each VM's outcome in `report.ready`.
    ///
    /// # Errors
    /// As [`Session::verify`].
    pub fn verify_ready(&self, lab: &Lab, opts: VerifyOptions, ui: &dyn Ui) -> miette::Result<Proven> {
        let t0 = Instant::now();
        let mut proven = self.verify(lab, opts.clone(), &|_| true, ui)?;
        self.await_ready(lab, &mut proven.report, &opts, &|_| true, (t0, &BTreeMap::new()), ui);
        Ok(proven)
    }

    /// Proves `targets` with the real prober (or, on a remote URI, takes what libvirt
    /// reports), each state change told to `ui`, in a phase a signal stops after the
    /// current probe.
    ///
    /// # Errors
    /// A verification that cannot run at all (no raw socket, leases unreadable).
    pub fn prove(&self, targets: &[NicTarget], opts: VerifyOptions, ui: &dyn Ui) -> miette::Result<VerifyReport> {
        let leases = HypervisorLeases::for_targets(self.hv(), targets);
        self.prove_with(targets, opts, &leases, ui, true)
    }

    /// [`Session::prove`] reading leases from `leases`, telling `ui` of each NIC when `tell`.
    pub(super) fn prove_with(
        &self,
        targets: &[NicTarget],
        opts: VerifyOptions,
        leases: &dyn LeaseSource,
        ui: &dyn Ui,
        tell: bool,
    ) -> miette::Result<VerifyReport> {
        let clock = SystemClock::start();
        let _stoppable = Stoppable::enter(ui);
        // A host reached over ssh: ARP from its own bridges, by `arping` there.
        if let Some(runner) = self.host().machine.and_then(|m| m.remote_runner()) {
            let prober = crate::verify::arping::ArpingProber::over(runner);
            return Ok(verify(targets, &prober, leases, &clock, &opts, ui.cancel(), |p| {
                if tell {
                    ui.nic(p);
                }
            })?);
        }
        if HostAccess::of_uri(&self.uri()) == HostAccess::Remote {
            return Ok(reported_by_host(self.hv(), targets, leases, &clock, opts.timeout, ui.cancel())?);
        }
        let prober = PnetProber::default();
        let report = verify(targets, &prober, leases, &clock, &opts, ui.cancel(), |p| {
            if tell {
                ui.nic(p);
            }
        })?;
        Ok(report)
    }

    /// `topo status`: the lab's resources and their state on the host, observed as for a
    /// plan (drift and pending changes come from the planner; a refusal just means "not
    /// ours"), each VM's addresses from a short ARP round (a snapshot, not a wait) and the
    /// DHCP leases.
    ///
    /// # Errors
    /// A failed observation.
    pub fn status(&self, lab: &Lab, ui: &dyn Ui) -> miette::Result<Status> {
        if self.is_multi_host() {
            return self.status_across(lab, ui);
        }
        let observed = self.observe(lab)?;
        let plan = crate::plan::plan(lab, &observed, &self.uri()).ok();
        let targets = self.nic_targets(lab, &observed);
        let quick = VerifyOptions {
            timeout: Duration::from_millis(1500),
            sweep_after: Duration::from_secs(3600),
            ..Default::default()
        };
        let leases = LastLeases::new(HypervisorLeases::for_targets(self.hv(), &targets));
        let report = self.prove_with(&targets, quick, &leases, ui, false).ok();
        let leases = status_leases(self.hv(), lab, leases.into_last());
        Ok(crate::verify::status::status(lab, &observed, plan.as_ref(), report.as_ref(), &leases))
    }

    /// `topo inventory` and `topo ssh`: proves the NICs `only` keeps (as [`Session::verify`]),
    /// and the inventory of `lab` from what was proven, its ssh options pinning each VM's
    /// host key ([`Session::pin_host_keys`]) and, when the VM's libvirt host is reached over
    /// ssh, jumping through it (`ProxyJump`): the VM's addresses are on that host's networks.
    /// Across hosts, each VM jumps through the host that serves the network of its login
    /// address ([`Inventory::reached_from`]: a stretched network has an address only on its
    /// serving host) and its key is pinned in the lab's file for its own host.
    ///
    /// # Errors
    /// As [`Session::verify`], or a host's name cannot be read, or a known_hosts file cannot
    /// be prepared.
    pub fn inventory(
        &self,
        lab: &Lab,
        opts: VerifyOptions,
        only: &dyn Fn(&NicTarget) -> bool,
        ui: &dyn Ui,
    ) -> miette::Result<Inventory> {
        use crate::verify::inventory::jump_host;
        let proven = self.verify(lab, opts, only, ui)?;
        let mut inv = Inventory::new(lab, &proven.report);
        if !self.is_multi_host() {
            let jump = jump_host(&self.uri());
            inv.jump_through(|_, _| jump.clone());
            self.pin_host_keys(lab, &proven.observed, &mut inv)?;
            return Ok(inv);
        }
        let mut jumps = BTreeMap::new();
        for h in self.host_names() {
            // Invariant: `h` is one of this session's hosts.
            let sub = self.for_host(&h).expect("a host of this session");
            jumps.insert(h.to_string(), jump_host(&sub.uri()));
            sub.pin_host_keys(&lab.on_host(&h), &proven.observed, &mut inv)?;
        }
        inv.jump_through(|vm, nic| {
            Inventory::reached_from(lab, vm, nic).and_then(|via| jumps.get(&via).cloned().flatten())
        });
        Ok(inv)
    }

    /// Makes `inv`'s ssh options pin the host key of each VM of `lab` (`verify::known_hosts`;
    /// `lab` is a host's share across hosts): in the lab's known_hosts file for this libvirt
    /// host (its folder made private), under an alias from the VM's domain UUID; keys recorded
    /// for domains no longer there (replaced or destroyed VMs) are forgotten first.
    fn pin_host_keys(&self, lab: &Lab, observed: &Observed, inv: &mut Inventory) -> miette::Result<()> {
        use crate::verify::known_hosts;
        let file = known_hosts::prepare(lab.name.as_str(), &self.host_id()?)?;
        let aliases: BTreeMap<String, String> = lab
            .vms
            .values()
            .filter_map(|vm| {
                let uuid = observed.domains.get(vm.libvirt_name.as_str())?.uuid.as_deref()?;
                Some((vm.name.to_string(), known_hosts::alias(vm.libvirt_name.as_str(), uuid)))
            })
            .collect();
        known_hosts::forget_all_but(&file, &aliases.values().cloned().collect())?;
        inv.pin_host_keys(file, &aliases);
        Ok(())
    }
}

/// On a remote host no bridge is reachable: what libvirt reports is the (weaker) evidence,
/// read again until every NIC that expects a lease has one or `timeout` passed
/// ([`crate::verify::sources::reported_within`]).
fn reported_by_host(
    hv: &dyn Hypervisor,
    targets: &[NicTarget],
    leases: &dyn LeaseSource,
    clock: &dyn crate::verify::Clock,
    timeout: Duration,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<VerifyReport, HvError> {
    let mut read = || {
        let leases = leases.leases()?;
        let mut addresses = BTreeMap::new();
        for t in targets.iter().filter(|t| t.running) {
            if !addresses.contains_key(&t.vm) {
                addresses.insert(t.vm.clone(), hv.domain_addresses(&t.domain).unwrap_or_default());
            }
        }
        Ok((leases, addresses))
    };
    crate::verify::sources::reported_within(targets, &mut read, clock, timeout, cancel)
}

/// After apply: makes each verified NIC's `seconds` count from its VM's start (when apply
/// started it) instead of from the start of verification at `verify_start`.
impl Session<'_> {
    /// What checks readiness on this session's host: over its ssh runner for a host reached
    /// over ssh, else from this machine.
    /// `Err(why)` where topo cannot check: a remote URI without ssh (its console log and
    /// guest addresses are not reachable from here), libvirt's test driver (no guests).
    fn ready_probe(&self) -> Result<Arc<dyn ReadyProbe>, String> {
        if let Some(runner) = self.host().machine.and_then(|m| m.remote_runner()) {
            return Ok(Arc::new(RunnerProbe::over(runner)));
        }
        let uri = self.uri();
        match HostAccess::of_uri(&uri) {
            HostAccess::Local => Ok(Arc::new(LocalProbe)),
            HostAccess::Remote => Err(format!(
                "not checked: {uri} is not reached over ssh, so its guests and console logs are not reachable from here"
            )),
            HostAccess::TestDriver => Err(format!("not checked: {uri} is libvirt's test driver, which runs no guests")),
        }
    }

    /// After the NIC proof in `report`: waits for the `ready:` conditions of the VMs of `lab`
    /// that `keep` accepts ([`crate::verify::ready`]), each on its host, within
    /// `opts.ready_timeout`, and puts the outcome in `report.ready`. Times count from each
    /// VM's start where apply `started` it, else from `verify_start`.
    pub(super) fn await_ready(
        &self,
        lab: &Lab,
        report: &mut VerifyReport,
        opts: &VerifyOptions,
        keep: &dyn Fn(&VmName) -> bool,
        (verify_start, started): (Instant, &BTreeMap<String, Instant>),
        ui: &dyn Ui,
    ) {
        let targets = ready::targets(lab, report, keep);
        if targets.is_empty() {
            return;
        }
        let mut probes: BTreeMap<Option<HostName>, Result<Arc<dyn ReadyProbe>, String>> = BTreeMap::new();
        for t in &targets {
            if probes.contains_key(&t.host) {
                continue;
            }
            let probe = match &t.host {
                Some(h) => self.for_host(h).map(|s| s.ready_probe()),
                None => Some(self.ready_probe()),
            };
            let probe = probe.unwrap_or_else(|| Err("not checked: the host was not reached".to_string()));
            probes.insert(t.host.clone(), probe);
        }
        let n = targets.len();
        ui.status(&format!(
            "Waiting for {n} VM{} to be ready (at most {}s) ...",
            if n == 1 { "" } else { "s" },
            opts.ready_timeout.as_secs()
        ));
        let _stoppable = Stoppable::enter(ui);
        let probe_of = |t: &ReadyTarget| {
            probes.get(&t.host).cloned().unwrap_or_else(|| Err("not checked: the host was not reached".to_string()))
        };
        let since = |t: &ReadyTarget| started.get(&t.domain).copied().unwrap_or(verify_start);
        let tell = |r: &ready::VmReadiness| {
            let host = r.host.as_ref().map(|h| format!("{h}: ")).unwrap_or_default();
            match (r.state, r.unmet()) {
                (ready::ReadyState::Unchecked, c) => ui.warn(&format!(
                    "{host}{}: readiness {}",
                    r.vm,
                    c.and_then(|c| c.last_seen.as_deref()).unwrap_or("not checked")
                )),
                (ready::ReadyState::Ready, _) => ui.status(&format!(
                    "{host}{}: ready after {:.1}s ({})",
                    r.vm,
                    r.seconds.unwrap_or_default(),
                    r.conditions.iter().map(|c| c.condition.as_str()).collect::<Vec<_>>().join(", ")
                )),
                (_, Some(c)) => ui.status(&format!(
                    "{host}{}: NOT READY: {} did not hold; last seen: {}",
                    r.vm,
                    c.condition,
                    c.last_seen.as_deref().unwrap_or("nothing")
                )),
                _ => {}
            }
        };
        report.ready = ready::wait_ready(&targets, &probe_of, opts.ready_timeout, ui.cancel(), &since, &tell);
    }
}

pub(super) fn since_vm_start(
    lab: &Lab,
    report: &mut VerifyReport,
    verify_start: Instant,
    started: &BTreeMap<String, Instant>,
) {
    for n in &mut report.nics {
        let Some(vm) = lab.vms.get(&n.target.vm) else { continue };
        if let (NicState::Verified { seconds, .. }, Some(at)) = (&mut n.state, started.get(vm.libvirt_name.as_str())) {
            *seconds += verify_start.saturating_duration_since(*at).as_secs_f64();
        }
    }
}

/// The DHCP leases `topo status` shows addresses from: those the verification just read
/// (`seen`, the lab's networks that have a DHCP range), read again only when it read none
/// (every NIC settled before its first round, e.g. all VMs stopped, or reading failed);
/// then those of every lab network, best effort.
fn status_leases(hv: &dyn Hypervisor, lab: &Lab, seen: Option<Vec<Lease>>) -> Vec<Lease> {
    seen.unwrap_or_else(|| {
        lab.networks.values().flat_map(|n| hv.dhcp_leases(n.libvirt_name.as_str()).unwrap_or_default()).collect()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::host::hypervisor::memory::MemoryHypervisor;

    /// `topo status` reads the DHCP leases once: those the verification read are used as
    /// they are; only when it read none are they read, from every lab network.
    #[test]
    fn status_reads_the_leases_once() {
        let text = format!(
            "apiVersion: topo/v1\nname: s\nnetworks:\n  a:\n    subnet: 10.9.1.0/24\n  b:\n    subnet: 10.9.2.0/24\n\
             vms:\n  v:\n    boot: {{kernel: {}/Cargo.toml}}\n    nics: [{{network: a}}, {{network: b}}]\n",
            env!("CARGO_MANIFEST_DIR")
        );
        let lab = crate::lab::validate::load(&crate::lab::source::SourceFile::from_text(Path::new("lab.yaml"), text))
            .unwrap();
        let hv = MemoryHypervisor::new();
        for n in ["s-a", "s-b"] {
            hv.define_network(&format!("<network><name>{n}</name></network>")).unwrap();
        }
        let mac = lab.vms.values().next().unwrap().nics[0].mac;
        let lease = Lease { network: "s-a".into(), mac, ip: "10.9.1.50".parse().unwrap(), hostname: None, expiry: 1 };
        hv.set_leases("s-a", vec![lease.clone()]);
        let reads = |hv: &MemoryHypervisor| hv.calls().iter().filter(|c| c.starts_with("dhcp_leases")).count();

        hv.clear_calls();
        assert_eq!(status_leases(&hv, &lab, Some(vec![lease.clone()])), vec![lease.clone()]);
        assert_eq!(reads(&hv), 0, "the verification's leases are used as they are");

        // What the verification read goes through `LastLeases`: the last read is kept.
        let session = Session::over(&hv);
        let targets = session.nic_targets(&lab, &hv.observe().unwrap());
        let seen = LastLeases::new(HypervisorLeases::for_targets(&hv, &targets));
        assert_eq!(seen.leases().unwrap(), vec![lease.clone()]);
        hv.clear_calls();
        assert_eq!(status_leases(&hv, &lab, seen.into_last()), vec![lease.clone()]);
        assert_eq!(reads(&hv), 0);

        assert_eq!(status_leases(&hv, &lab, None), vec![lease]);
        assert_eq!(reads(&hv), 2, "no verification read: each lab network once");
    }
}
