//! `topo verify` and `topo status`, and the verification that ends `topo apply`: the library's
//! `verify` loop with the real prober, live progress on stderr, the report on stdout.

use std::path::PathBuf;
use std::time::Duration;

use miette::IntoDiagnostic;

use super::{GlobalArgs, Outcome};
use crate::host::hypervisor::Hypervisor;
use crate::host::observed::Lease;
use crate::host::observed::Observed;
use crate::lab::model::Lab;
use crate::verify::prober::PnetProber;
use crate::verify::{
    HostAccess, HypervisorLeases, LastLeases, LeaseSource, NicState, NicTarget, SystemClock, VerifyOptions,
    VerifyReport, report, verify,
};

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyOpts {
    /// Give up on NICs not verified after this long (90, 90s, 2m, 1h)
    #[arg(long, default_value = "120s", value_parser = super::duration::parse_duration)]
    pub timeout: Duration,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub opts: VerifyOpts,
    /// Print the result as a versioned JSON document (see docs/verify-json.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
    /// Every lab on the host instead of one lab file's: the same as `topo list`
    #[arg(long, conflicts_with = "file")]
    pub all: bool,
}

/// One target per NIC of the lab, for the host `hv` connects to.
pub fn targets(lab: &Lab, observed: &Observed, hv: &dyn Hypervisor) -> Vec<NicTarget> {
    crate::verify::targets(lab, observed, HostAccess::of_uri(&hv.uri()))
}

/// Runs verification with the real prober (or, on a remote URI, what libvirt reports), with
/// live progress lines on stderr. Ctrl-C, SIGTERM, SIGHUP end it after the current probe.
pub fn run_verification(
    global: &GlobalArgs,
    hv: &dyn Hypervisor,
    targets: &[NicTarget],
    opts: VerifyOptions,
) -> miette::Result<VerifyReport> {
    run_verification_with(global, hv, targets, opts, &HypervisorLeases::for_targets(hv, targets))
}

/// [`run_verification`] reading leases from `leases`.
fn run_verification_with(
    global: &GlobalArgs,
    hv: &dyn Hypervisor,
    targets: &[NicTarget],
    opts: VerifyOptions,
    leases: &dyn LeaseSource,
) -> miette::Result<VerifyReport> {
    if HostAccess::of_uri(&hv.uri()) == HostAccess::Remote {
        return Ok(reported_by_host(hv, targets, leases)?);
    }
    let prober = PnetProber::default();
    let clock = SystemClock::start();
    let quiet = global.quiet;
    let _graceful = super::interrupt::graceful();
    let report = verify(targets, &prober, leases, &clock, &opts, super::interrupt::flag(), |p| {
        if quiet {
            return;
        }
        let t = p.target;
        let what = match p.state {
            NicState::WaitingForLease => "waiting for a DHCP lease".to_string(),
            NicState::LeasedNoReply { ip } => format!("leased {ip}, waiting for ARP"),
            NicState::Verified { ip, seconds, rtt_ms: Some(ms), .. } => {
                format!("{ip} verified by ARP after {seconds:.1}s (round trip {ms:.1} ms)")
            }
            NicState::Verified { ip, seconds, .. } => format!("{ip} verified by ARP after {seconds:.1}s"),
            NicState::Failed { reason } => format!("FAILED: {reason}"),
            NicState::Skipped => "not verified (verify: none)".into(),
            NicState::Stopped => "not verified (state: stopped)".into(),
            NicState::Reported { ip, source } => format!("{ip} reported by {source}"),
        };
        crate::errln!("{} {} ({}): {what}", t.vm, t.nic, t.network);
    })?;
    Ok(report)
}

/// On a remote host no bridge is reachable: what libvirt reports is the (weaker) evidence.
fn reported_by_host(
    hv: &dyn Hypervisor,
    targets: &[NicTarget],
    leases: &dyn LeaseSource,
) -> Result<VerifyReport, crate::host::hypervisor::HvError> {
    let leases = leases.leases()?;
    let mut addresses = std::collections::BTreeMap::new();
    for t in targets.iter().filter(|t| t.running) {
        if !addresses.contains_key(&t.vm) {
            addresses.insert(t.vm.clone(), hv.domain_addresses(&t.domain).unwrap_or_default());
        }
    }
    Ok(crate::verify::reported(targets, &leases, &addresses))
}

/// After apply: makes each verified NIC's `seconds` count from its VM's start (when apply
/// started it) instead of from the start of verification at `verify_start`.
pub fn since_vm_start(
    lab: &Lab,
    report: &mut VerifyReport,
    verify_start: std::time::Instant,
    started: &std::collections::BTreeMap<String, std::time::Instant>,
) {
    for n in &mut report.nics {
        let Some(vm) = lab.vms.get(&n.target.vm) else { continue };
        if let (NicState::Verified { seconds, .. }, Some(at)) = (&mut n.state, started.get(&vm.libvirt_name)) {
            *seconds += verify_start.saturating_duration_since(*at).as_secs_f64();
        }
    }
}

/// Prints a report and fails when any NIC failed (a remote NIC only reported does not).
pub fn finish(lab: &Lab, r: &VerifyReport, json: bool) -> miette::Result<()> {
    if json {
        let doc = report::to_json(lab.name.as_str(), r);
        crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
    } else {
        crate::out!("{}", report::table(r))?;
        crate::outln!("{}", report::summary_line(r))?;
    }
    Ok(report::check(r)?)
}

pub fn run_verify(global: &GlobalArgs, args: &VerifyArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab_unopened(&file)?;
    let hv = super::connect(global)?;
    let observed = hv.observe()?;
    let targets = targets(&lab, &observed, &hv);
    let opts = VerifyOptions { timeout: args.opts.timeout, ..VerifyOptions::default() };
    let report = run_verification(global, &hv, &targets, opts)?;
    finish(&lab, &report, args.json)?;
    Ok(Outcome::Ok)
}

/// The DHCP leases `topo status` shows addresses from: those the verification just read
/// (`seen`, the lab's networks that have a DHCP range), read again only when it read none
/// (every NIC settled before its first round, e.g. all VMs stopped, or reading failed);
/// then those of every lab network, best effort.
fn status_leases(hv: &dyn Hypervisor, lab: &Lab, seen: Option<Vec<Lease>>) -> Vec<Lease> {
    seen.unwrap_or_else(|| {
        lab.networks.values().flat_map(|n| hv.dhcp_leases(&n.libvirt_name).unwrap_or_default()).collect()
    })
}

pub fn run_status(global: &GlobalArgs, args: &StatusArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab_unopened(&file)?;
    let hv = super::connect(global)?;
    let observed = hv.observe()?;
    // Drift and pending changes come from the planner; refusals just mean "not ours".
    let plan = crate::plan::plan(&lab, &observed, &hv.uri()).ok();
    // A short ARP round: status is a snapshot, not a wait.
    let targets = targets(&lab, &observed, &hv);
    let quick = VerifyOptions {
        timeout: Duration::from_millis(1500),
        sweep_after: Duration::from_secs(3600),
        ..Default::default()
    };
    let quiet = GlobalArgs { quiet: true, ..global.clone() };
    let leases = LastLeases::new(HypervisorLeases::for_targets(&hv, &targets));
    let report = run_verification_with(&quiet, &hv, &targets, quick, &leases).ok();
    let leases = status_leases(&hv, &lab, leases.into_last());
    let status = crate::verify::status::status(&lab, &observed, plan.as_ref(), report.as_ref(), &leases);
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&status.to_json()).into_diagnostic()?)?;
    } else {
        crate::out!("{}", status.table())?;
    }
    Ok(Outcome::Ok)
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
        let seen = LastLeases::new(HypervisorLeases::for_targets(&hv, &targets(&lab, &hv.observe().unwrap(), &hv)));
        assert_eq!(seen.leases().unwrap(), vec![lease.clone()]);
        hv.clear_calls();
        assert_eq!(status_leases(&hv, &lab, seen.into_last()), vec![lease.clone()]);
        assert_eq!(reads(&hv), 0);

        assert_eq!(status_leases(&hv, &lab, None), vec![lease]);
        assert_eq!(reads(&hv), 2, "no verification read: each lab network once");
    }
}
