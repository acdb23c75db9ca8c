//! `topo verify` and `topo status`, and the verification that ends `topo apply`: prove by
//! ARP on each network's bridge that every NIC holds an IPv4 address.

use std::path::PathBuf;
use std::time::Duration;

use miette::IntoDiagnostic;
use serde::Serialize;

use super::{GlobalArgs, Outcome};
use crate::hypervisor::Hypervisor;
use crate::model::{Lab, NetworkKind};
use crate::observed::{DomainState, Observed, Ownership};
use crate::plan::{Action, Reason};
use crate::prober::PnetProber;
use crate::verify::{
    HypervisorLeases, NicOutcome, NicState, NicTarget, SystemClock, VerifyOptions, VerifyReport, verify,
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
}

/// A URI naming another host (`qemu+ssh://host/system`): its bridges are not here.
pub fn is_remote(uri: &str) -> bool {
    uri.split_once("://").is_some_and(|(_, rest)| !rest.starts_with('/') && !rest.is_empty())
}

/// One target per NIC of the lab, from the model and what the host reports.
pub fn targets(lab: &Lab, observed: &Observed) -> Vec<NicTarget> {
    lab.nics()
        .filter_map(|(vm, nic)| {
            let net = lab.networks.get(&nic.network)?;
            let running = observed.domains.get(&vm.libvirt_name).is_some_and(|d| d.state == DomainState::Running);
            Some(NicTarget::from_model(vm, nic, net, observed.networks.get(&net.libvirt_name), running))
        })
        .collect()
}

/// Runs verification with the real prober (or, on a remote URI, leases only), with live
/// progress lines on stderr.
pub fn run_verification(
    global: &GlobalArgs,
    hv: &dyn Hypervisor,
    targets: &[NicTarget],
    opts: VerifyOptions,
) -> miette::Result<VerifyReport> {
    if is_remote(&hv.uri()) {
        return Ok(reported_by_host(hv, targets)?);
    }
    let leases = HypervisorLeases::for_targets(hv, targets);
    let prober = PnetProber::default();
    let clock = SystemClock::start();
    let quiet = global.quiet;
    // Ctrl-C, SIGTERM, SIGHUP end verification after the current probe, with a report.
    let _graceful = super::interrupt::graceful();
    let report = verify(targets, &prober, &leases, &clock, &opts, super::interrupt::flag(), |p| {
        if quiet {
            return;
        }
        let t = p.target;
        let what = match p.state {
            NicState::WaitingForLease => "waiting for a DHCP lease".to_string(),
            NicState::LeasedNoReply { ip } => format!("leased {ip}, waiting for ARP"),
            NicState::Verified { ip, seconds, .. } => format!("{ip} verified by ARP after {seconds:.1}s"),
            NicState::Failed { reason } => format!("FAILED: {reason}"),
            NicState::Skipped => "not verified (verify: none)".into(),
            NicState::Reported { ip, source } => format!("{ip} reported by {source}"),
        };
        crate::errln!("{} {} ({}): {what}", t.vm, t.nic, t.network);
    })?;
    Ok(report)
}

/// On a remote host no bridge is reachable: what libvirt reports is the (weaker) evidence.
fn reported_by_host(hv: &dyn Hypervisor, targets: &[NicTarget]) -> Result<VerifyReport, crate::hypervisor::HvError> {
    let leases = HypervisorLeases::for_targets(hv, targets);
    let leases = crate::verify::LeaseSource::leases(&leases)?;
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

#[derive(Serialize)]
struct JsonNic<'a> {
    vm: &'a str,
    nic: &'a str,
    network: &'a str,
    bridge: Option<&'a str>,
    mac: String,
    address: Option<String>,
    state: &'static str,
    evidence: Option<String>,
    reason: Option<String>,
    help: Option<&'static str>,
    seconds: Option<f64>,
}

#[derive(Serialize)]
struct JsonSummary {
    verified: usize,
    failed: usize,
    skipped: usize,
    unproven: usize,
}

#[derive(Serialize)]
struct JsonVerify<'a> {
    format_version: &'static str,
    lab: &'a str,
    nics: Vec<JsonNic<'a>>,
    summary: JsonSummary,
}

fn json_nic(n: &NicOutcome) -> JsonNic<'_> {
    let t = &n.target;
    let (state, address, evidence, reason, help, seconds) = match &n.state {
        NicState::Verified { ip, evidence, seconds } => {
            ("verified", Some(ip.to_string()), Some(evidence.to_string()), None, None, Some(*seconds))
        }
        NicState::Failed { reason } => ("failed", None, None, Some(reason.to_string()), Some(reason.help()), None),
        NicState::Skipped => ("skipped", None, None, None, None, None),
        // Only on remote hosts: libvirt's word, no ARP evidence.
        NicState::Reported { ip, source } => (
            "reported",
            Some(ip.to_string()),
            Some(format!("reported by {source} (remote host: not proven by ARP)")),
            None,
            None,
            None,
        ),
        NicState::LeasedNoReply { ip } => ("leased", Some(ip.to_string()), None, None, None, None),
        NicState::WaitingForLease => ("waiting", None, None, None, None, None),
    };
    JsonNic {
        vm: t.vm.as_str(),
        nic: &t.nic,
        network: t.network.as_str(),
        bridge: t.bridge.as_deref(),
        mac: t.mac.to_string(),
        address,
        state,
        evidence,
        reason,
        help,
        seconds,
    }
}

/// The `topo verify --json` document, format version 1 (docs/verify-json.md).
pub fn report_json(lab: &str, report: &VerifyReport) -> serde_json::Value {
    let nics: Vec<JsonNic> = report.nics.iter().map(json_nic).collect();
    let count = |s: &str| nics.iter().filter(|n| n.state == s).count();
    let summary = JsonSummary {
        verified: count("verified"),
        failed: count("failed"),
        skipped: count("skipped"),
        unproven: count("reported") + count("leased") + count("waiting"),
    };
    let doc = JsonVerify { format_version: "1", lab, summary, nics };
    // Invariant: strings, numbers and options only.
    serde_json::to_value(doc).expect("verify JSON serialises")
}

/// The human table: one row per NIC, then the reasons of failures.
pub fn report_table(report: &VerifyReport) -> String {
    let rows: Vec<[String; 8]> = report
        .nics
        .iter()
        .map(|n| {
            let j = json_nic(n);
            [
                j.vm.to_string(),
                j.nic.to_string(),
                j.network.to_string(),
                j.bridge.unwrap_or("-").to_string(),
                j.mac,
                j.address.unwrap_or_else(|| "-".into()),
                match (j.state, j.evidence) {
                    ("verified", Some(e)) => e,
                    (_, Some(e)) => e,
                    (s, None) => s.to_string(),
                },
                j.seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["VM", "NIC", "NETWORK", "BRIDGE", "MAC", "ADDRESS", "EVIDENCE", "TIME"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for r in &rows {
        out.push_str(&line(r));
    }
    for n in report.failed() {
        if let NicState::Failed { reason } = &n.state {
            out.push_str(&format!(
                "\n{} {} ({}): {reason}\n  help: {}\n",
                n.target.vm,
                n.target.nic,
                n.target.network,
                reason.help()
            ));
        }
    }
    out
}

fn summary_line(report: &VerifyReport) -> String {
    let verified = report.nics.iter().filter(|n| matches!(n.state, NicState::Verified { .. })).count();
    let failed = report.failed().count();
    let skipped = report.nics.iter().filter(|n| matches!(n.state, NicState::Skipped)).count();
    format!("Verify: {verified} verified, {failed} failed, {skipped} skipped.")
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{failed} NIC{} not verified", if *failed == 1 { "" } else { "s" })]
#[diagnostic(code(topo::verify::failed), help("see the reasons above"))]
pub struct NotVerified {
    pub failed: usize,
}

/// Prints a report and fails when any NIC failed (or, remotely, is only leased).
pub fn finish(lab: &Lab, report: &VerifyReport, json: bool) -> miette::Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report_json(lab.name.as_str(), report)).into_diagnostic()?)?;
    } else {
        crate::out!("{}", report_table(report))?;
        crate::outln!("{}", summary_line(report))?;
    }
    let failed = report.nics.iter().filter(|n| matches!(n.state, NicState::Failed { .. })).count();
    if failed > 0 {
        return Err(NotVerified { failed }.into());
    }
    Ok(())
}

pub fn run_verify(global: &GlobalArgs, args: &VerifyArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab(&file)?;
    let hv = super::connect(global)?;
    let observed = hv.observe()?;
    let targets = targets(&lab, &observed);
    let opts = VerifyOptions { timeout: args.opts.timeout, ..VerifyOptions::default() };
    let report = run_verification(global, &hv, &targets, opts)?;
    finish(&lab, &report, args.json)?;
    Ok(Outcome::Ok)
}

#[derive(Serialize)]
struct StatusResource {
    address: crate::address::Address,
    libvirt_name: String,
    /// running, stopped, active, inactive, missing, external, drifted, changed
    state: String,
    detail: Option<String>,
    addresses: Vec<StatusNic>,
}

#[derive(Serialize)]
struct StatusNic {
    nic: String,
    network: String,
    mac: String,
    address: Option<String>,
    verified: bool,
}

pub fn run_status(global: &GlobalArgs, args: &StatusArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab(&file)?;
    let hv = super::connect(global)?;
    let observed = hv.observe()?;
    // Drift and pending changes come from the planner; refusals just mean "not ours".
    let plan = crate::plan::plan(&lab, &observed, &hv.uri()).ok();
    let pending = |addr: &crate::address::Address| -> Option<String> {
        let c = plan.as_ref()?.changes.iter().find(|c| c.address == *addr && c.action != Action::NoOp)?;
        let drift = c.reasons.contains(&Reason::Drift);
        let fields: Vec<&str> = c.fields.iter().map(|f| f.path.as_str()).collect();
        Some(format!("{}: {}", if drift { "drifted" } else { "changes pending" }, fields.join(", ")))
    };
    // A short ARP round: status is a snapshot, not a wait.
    let targets = targets(&lab, &observed);
    let quick = VerifyOptions {
        timeout: Duration::from_millis(1500),
        sweep_after: Duration::from_secs(3600),
        ..Default::default()
    };
    let quiet = GlobalArgs { quiet: true, ..global.clone() };
    let report = run_verification(&quiet, &hv, &targets, quick).ok();
    let leases: Vec<crate::observed::Lease> =
        lab.networks.values().flat_map(|n| hv.dhcp_leases(&n.libvirt_name).unwrap_or_default()).collect();

    let mut resources = Vec::new();
    for net in lab.networks.values() {
        let o = observed.networks.get(&net.libvirt_name);
        let address = crate::address::Address::Network(net.name.clone());
        let state = match (&net.kind, o) {
            (_, None) => "missing".to_string(),
            (NetworkKind::External, Some(o)) => format!("external, {}", if o.active { "active" } else { "inactive" }),
            (NetworkKind::Managed(_), Some(o)) if o.ownership(lab.name.as_str()) != Ownership::ThisLab => {
                "conflict (not owned by this lab)".to_string()
            }
            (NetworkKind::Managed(_), Some(o)) => if o.active { "active" } else { "inactive" }.to_string(),
        };
        let detail = o.and_then(|o| o.bridge.clone().map(|b| format!("bridge {b}")));
        let detail = match (detail, pending(&address)) {
            (Some(d), Some(p)) => Some(format!("{d}; {p}")),
            (d, p) => d.or(p),
        };
        resources.push(StatusResource {
            address,
            libvirt_name: net.libvirt_name.clone(),
            state,
            detail,
            addresses: vec![],
        });
    }
    for vm in lab.vms.values() {
        let o = observed.domains.get(&vm.libvirt_name);
        let address = crate::address::Address::Vm(vm.name.clone());
        let state = match o {
            None => "missing",
            Some(d) if d.ownership(lab.name.as_str()) != Ownership::ThisLab => "conflict (not owned by this lab)",
            Some(d) => match d.state {
                DomainState::Running => "running",
                DomainState::Paused => "paused",
                DomainState::Shutoff => "stopped",
                DomainState::Other => "other",
            },
        };
        let addresses = vm
            .nics
            .iter()
            .map(|nic| {
                let verified = report.as_ref().and_then(|r| {
                    r.nics.iter().find(|n| n.target.vm == vm.name && n.target.mac == nic.mac).and_then(|n| {
                        match &n.state {
                            NicState::Verified { ip, .. } => Some(*ip),
                            _ => None,
                        }
                    })
                });
                let leased = leases.iter().filter(|l| l.mac == nic.mac).max_by_key(|l| l.expiry).map(|l| l.ip);
                let address = verified.or(leased).or(nic.ip);
                StatusNic {
                    nic: nic.label(),
                    network: nic.network.to_string(),
                    mac: nic.mac.to_string(),
                    address: address.map(|a| a.to_string()),
                    verified: verified.is_some(),
                }
            })
            .collect();
        resources.push(StatusResource {
            address: address.clone(),
            libvirt_name: vm.libvirt_name.clone(),
            state: state.into(),
            detail: pending(&address),
            addresses,
        });
    }
    if args.json {
        let doc = serde_json::json!({ "format_version": "1", "lab": lab.name.as_str(), "resources": resources });
        crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
        return Ok(Outcome::Ok);
    }
    for r in &resources {
        let detail = r.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
        crate::outln!("{:<24} {:<28} {}{detail}", r.address, r.libvirt_name, r.state)?;
    }
    let vms: Vec<&StatusResource> =
        resources.iter().filter(|r| matches!(r.address, crate::address::Address::Vm(_))).collect();
    if !vms.is_empty() {
        crate::outln!()?;
        let mut unproven = false;
        for r in vms {
            let addrs: Vec<String> = r
                .addresses
                .iter()
                .map(|a| match &a.address {
                    Some(ip) if a.verified => ip.clone(),
                    Some(ip) => {
                        unproven = true;
                        format!("{ip}?")
                    }
                    None => "-".into(),
                })
                .collect();
            crate::outln!("{} {}", r.address.name(), addrs.join(","))?;
        }
        if unproven {
            crate::outln!("\n(an address with `?` is leased or reserved but did not answer ARP just now)")?;
        }
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_uris() {
        assert!(is_remote("qemu+ssh://user@host/system"));
        assert!(!is_remote("qemu:///system"));
        assert!(!is_remote("test:///default"));
    }
}
