//! `topo apply` and `topo destroy`: show the plan, confirm, execute, report, re-check.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use miette::IntoDiagnostic;

use super::{GlobalArgs, Outcome};
use crate::apply::lock::{HostLock, LabLock};
use crate::apply::progress::{Lines, Live, Progress, Silent};
use crate::apply::{ApplyError, Options, Report, StepOutcome};
use crate::host::hypervisor::Hypervisor;
use crate::host::observed::Observed;
use crate::lab::model::Lab;
use crate::plan::render::{Style, render};
use crate::plan::saved::{SavedPlan, looks_saved};
use crate::plan::target::Direction;
use crate::plan::{Plan, Shutdown};
use crate::results::Command as RunCommand;

#[derive(clap::Args, Debug, Clone)]
pub struct ConfirmArgs {
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(short = 'y', long)]
    pub auto_approve: bool,
    /// How many steps run at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,
    /// How long a VM gets to shut down gracefully before it is forced off (90, 90s, 2m, 1h)
    #[arg(long, default_value = "30s", value_parser = super::duration::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Delete or replace lab networks even when VMs this lab does not own are on them (their
    /// NICs lose their link and topo does not plug them back; stopped ones cannot start after
    /// a deletion). Without it, such a plan is refused
    #[arg(long)]
    pub disconnect_foreign: bool,
    /// Take the lab over from another lab file with the same `name:` and `prefix:` (a moved
    /// folder, a fresh clone): its objects are re-tagged as this file's, in place, and this
    /// file's plan applies to them. Without it, such a plan is refused
    #[arg(long)]
    pub take_over: bool,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The lab file, or a plan saved with `topo plan --out` (default: the only topo.yaml or
    /// *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    /// Skip the ARP verification of every NIC after apply
    #[arg(long)]
    pub no_verify: bool,
    /// Apply only ADDRESS (`vm.NAME`, `network.NAME`, as the plan shows them) and what it
    /// depends on; repeatable. Not with a saved plan (it keeps the targets it was made with)
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<crate::lab::address::Address>,
    #[command(flatten)]
    pub verify: super::verify::VerifyOpts,
    /// Print the plan, each step's outcome and the verification as one versioned JSON
    /// document instead of the human output (see docs/results-json.md); needs -y unless FILE
    /// is a saved plan
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DestroyArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    /// Ask each running VM to shut down (ACPI) and wait up to DURATION (90, 90s, 2m, 1h;
    /// default 30s) before forcing it off. Without it, VMs are forced off at once: their
    /// disks are deleted next
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, default_missing_value = "30s", value_parser = super::duration::parse_duration)]
    pub graceful: Option<Duration>,
    /// Destroy only ADDRESS (`vm.NAME`, `network.NAME`) and what depends on it (the VMs on
    /// a targeted network); repeatable
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<crate::lab::address::Address>,
    /// Print the plan and each step's outcome as one versioned JSON document instead of the
    /// human output (see docs/results-json.md); needs -y
    #[arg(long)]
    pub json: bool,
}

fn options(c: &ConfirmArgs) -> Options {
    Options { parallelism: usize::from(c.parallelism), shutdown_timeout: c.shutdown_timeout }
}

/// The lab named by `file`, and the saved plan if `file` is one.
fn load(file: &std::path::Path, global: &GlobalArgs) -> miette::Result<(Lab, Option<SavedPlan>)> {
    let text = crate::lab::source::read_lab_text(file, crate::plan::saved::MAX_SAVED_PLAN_BYTES)?;
    if looks_saved(&text) {
        let saved = SavedPlan::parse(&file.display().to_string(), &text)?;
        let lab = super::load_lab(std::path::Path::new(&saved.lab_file), global)?;
        Ok((lab, Some(saved)))
    } else {
        Ok((super::load_lab(file, global)?, None))
    }
}

/// How long apply waits for another run to finish with the host lock (it holds it while it
/// executes its plan).
const HOST_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run_apply(global: &GlobalArgs, args: &ApplyArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let (mut lab, saved) = load(&file, global)?;
    // A plan saved with --take-over was reviewed as one: it takes the lab over when applied.
    lab.take_over = args.confirm.take_over || saved.as_ref().is_some_and(|s| s.take_over);
    // Terraform's rule: a JSON run cannot stop at a prompt, so it is approved up front.
    if args.json && !args.confirm.auto_approve && saved.is_none() {
        return Err(JsonNeedsApproval.into());
    }
    if saved.is_some() && !args.targets.is_empty() {
        miette::bail!(
            help = "make the saved plan with `topo plan --target ... --out FILE`, or apply the lab file with --target",
            "--target does not apply to a saved plan: it runs exactly the steps it holds"
        );
    }
    let hv = super::connect(global)?;
    let host = super::host_id(&hv)?;
    let _lock = LabLock::acquire(lab.name.as_str(), &host, &hv.uri(), "topo apply")?;
    super::status(global, format_args!("Observing {} ...", hv.uri()));
    let observed = super::observe(global, &hv, &lab, Some(&args.targets))?;
    // A saved plan runs exactly as reviewed, or not at all: refused when the lab file, the
    // URI or the host changed since it was made. Never planned again in its place.
    let from_saved = saved.is_some();
    let mut plan = match &saved {
        Some(saved) => {
            saved.check_fresh(&lab.source.text, &hv.uri(), &observed)?;
            saved.steps.clone()
        }
        None => {
            let full = crate::plan::plan(&lab, &observed, &hv.uri())?;
            crate::plan::target::targeted(&lab, &observed, full, &args.targets, Direction::Apply)?
        }
    };
    let file = lab.source.name();
    if !args.json {
        crate::out!("{}", render(&plan, &file, style(global)))?;
    }
    // With --json, the run document is printed once, whatever happens after the first step.
    let json = |plan: &Plan, report: Option<&Report>, verify: Option<serde_json::Value>| -> miette::Result<()> {
        if args.json {
            let doc = crate::results::run_json(RunCommand::Apply, plan, report, verify);
            crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
        }
        Ok(())
    };
    // The plan shown passes the checks before anyone is asked to confirm it; the plan
    // executed passes them again under the host lock (it may be another one made there).
    crate::plan::check_executable(
        &lab,
        &observed,
        &plan,
        &hv.uri(),
        Direction::Apply,
        args.confirm.disconnect_foreign,
    )?;
    let mut started = std::collections::BTreeMap::new();
    let mut executed = None;
    let mut observed = observed;
    if !plan.is_empty() {
        // A saved plan was reviewed when it was made: applying it is the confirmation.
        if !from_saved {
            confirm(&args.confirm, "apply these changes")?;
        }
        // Host conflicts (subnets, bridges, names another lab claims) were checked on an
        // observation that another run may have changed since. Under the host lock, observe
        // again: a lab that claimed the same subnet meanwhile is now seen, and this run gets
        // the normal plan refusal before it touches anything.
        let _host_lock = HostLock::acquire(&host, &format!("topo apply lab {}", lab.name), HOST_LOCK_TIMEOUT, |h| {
            super::status(global, format_args!("Waiting for another topo run on this host ({h}) ..."))
        })?;
        let now = super::observe(global, &hv, &lab, None)?;
        let ctx = Executing {
            lab: &lab,
            uri: &hv.uri(),
            saved: saved.as_ref(),
            auto_approve: args.confirm.auto_approve,
            disconnect_foreign: args.confirm.disconnect_foreign,
        };
        if let Some(again) = ctx.plan_under_lock(&plan, &observed, &now)? {
            super::status(global, "The host changed while waiting for the host lock; applying the plan for it now:");
            if !args.json {
                crate::out!("{}", render(&again, &file, style(global)))?;
            }
            plan = again;
        }
        // A replaced VM gets a new disk and so new host keys: its pinned key is forgotten
        // first (a run killed after the replace must not leave the old key to refuse the new).
        let replaced: Vec<&str> = plan
            .changes
            .iter()
            .filter(|c| {
                c.action == crate::plan::Action::Replace && matches!(c.address, crate::lab::address::Address::Vm(_))
            })
            .map(|c| c.libvirt_name.as_str())
            .collect();
        if let Err(e) = crate::verify::known_hosts::forget_vms(lab.name.as_str(), &host, &replaced) {
            crate::errln!("warning: {e}");
        }
        let (report, result) = execute(global, &plan, &hv, options(&args.confirm));
        if let Err(e) = result {
            json(&plan, Some(&report), None)?;
            return Err(e);
        }
        let (a, c, r, d) = report.counts();
        if !args.json {
            crate::outln!("Apply complete: {a} added, {c} changed, {r} replaced, {d} destroyed.")?;
        }
        observed = match crate::apply::check_converged_for(&lab, &hv, &plan.targets) {
            Ok(o) => o,
            Err(e) => {
                json(&plan, Some(&report), None)?;
                return Err(e.into());
            }
        };
        started = report.started.clone();
        executed = Some(report);
    }
    let mut verified = None;
    if !args.no_verify {
        // The host as just observed: after apply, by the convergence check.
        let mut targets = super::verify::targets(&lab, &observed, &hv);
        if !plan.targets.is_empty() {
            // A partial apply verifies the VMs it covered.
            let reach = crate::plan::target::closure(&lab, &observed, &plan.targets, Direction::Apply);
            targets.retain(|t| reach.contains(&crate::lab::address::Address::Vm(t.vm.clone())));
        }
        if !targets.is_empty() {
            super::status(
                global,
                format_args!("Verifying {} NIC{} by ARP ...", targets.len(), if targets.len() == 1 { "" } else { "s" }),
            );
            let opts = crate::verify::VerifyOptions { timeout: args.verify.timeout, ..Default::default() };
            let t0 = std::time::Instant::now();
            let mut report = super::verify::run_verification(global, &hv, &targets, opts)?;
            super::verify::since_vm_start(&lab, &mut report, t0, &started);
            if !args.json {
                super::verify::finish(&lab, &report, false)?;
            }
            verified = Some(report);
        }
    }
    json(&plan, executed.as_ref(), verified.as_ref().map(|r| crate::verify::report::to_json(lab.name.as_str(), r)))?;
    if let Some(r) = &verified {
        crate::verify::report::check(r)?;
    }
    Ok(Outcome::Ok)
}

pub fn run_destroy(global: &GlobalArgs, args: &DestroyArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let mut lab = super::load_lab_unopened(&file)?;
    lab.take_over = args.confirm.take_over;
    if args.json && !args.confirm.auto_approve {
        return Err(JsonNeedsApproval.into());
    }
    let hv = super::connect(global)?;
    let host = super::host_id(&hv)?;
    let _lock = LabLock::acquire(lab.name.as_str(), &host, &hv.uri(), "topo destroy")?;
    // The whole lab gone: so are its VMs' pinned host keys (guest::known_hosts).
    let forget_keys = |targets: &[crate::lab::address::Address]| {
        if targets.is_empty()
            && let Err(e) = crate::verify::known_hosts::remove(lab.name.as_str(), &host)
        {
            crate::errln!("warning: cannot remove the lab's known_hosts file: {e}");
        }
    };
    super::status(global, format_args!("Observing {} ...", hv.uri()));
    let observed = hv.observe()?;
    crate::plan::check_instances(&lab, &observed, &hv.uri())?;
    let shutdown = if args.graceful.is_some() { Shutdown::Graceful } else { Shutdown::Force };
    let full = crate::plan::plan_destroy_with(&lab, &observed, shutdown);
    let plan = crate::plan::target::targeted(&lab, &observed, full, &args.targets, Direction::Destroy)?;
    let json = |report: Option<&Report>| -> miette::Result<()> {
        if args.json {
            let doc = crate::results::run_json(RunCommand::Destroy, &plan, report, None);
            crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
        }
        Ok(())
    };
    if plan.is_empty() {
        if args.json {
            json(None)?;
        } else {
            forget_keys(&plan.targets);
            if plan.targets.is_empty() {
                crate::outln!("Nothing to destroy: lab {} owns nothing on {}.", lab.name, hv.uri())?;
            } else {
                crate::outln!("Nothing to destroy for the targets on {}.", hv.uri())?;
            }
        }
        return Ok(Outcome::Ok);
    }
    if !args.json {
        crate::out!("{}", render(&plan, &lab.source.name(), style(global)))?;
    }
    crate::plan::check_executable(
        &lab,
        &observed,
        &plan,
        &hv.uri(),
        Direction::Destroy,
        args.confirm.disconnect_foreign,
    )?;
    confirm(&args.confirm, "destroy these objects")?;
    let mut opts = options(&args.confirm);
    if let Some(t) = args.graceful {
        opts.shutdown_timeout = t;
    }
    let (report, result) = execute(global, &plan, &hv, opts);
    json(Some(&report))?;
    result?;
    let (.., d) = report.counts();
    if !args.json {
        crate::outln!("Destroy complete: {d} destroyed.")?;
    }
    let mut left = crate::plan::plan_destroy(&lab, &hv.observe()?);
    if !plan.targets.is_empty() {
        // What the targets reached before the destroy: the rest of the lab stays.
        let reach = crate::plan::target::closure(&lab, &observed, &plan.targets, Direction::Destroy);
        left = crate::plan::target::restrict(left, &reach, &plan.targets);
    }
    if !left.is_empty() {
        let details =
            left.changes.iter().map(|c| format!("{} ({}) is still there", c.address, c.libvirt_name)).collect();
        return Err(ApplyError::Inconsistent { details }.into());
    }
    forget_keys(&plan.targets);
    Ok(Outcome::Ok)
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
                    miette::bail!(
                        help = "run `topo plan` again and review the new plan",
                        "the host changed while the plan was being confirmed: nothing was changed"
                    );
                }
                swapped = Some(again);
            }
        }
        let executed = swapped.as_ref().unwrap_or(shown);
        crate::plan::check_executable(self.lab, now, executed, self.uri, Direction::Apply, self.disconnect_foreign)?;
        Ok(swapped)
    }
}

fn style(global: &GlobalArgs) -> Style {
    if global.color_for(std::io::stdout().is_terminal()) { Style::Color } else { Style::Plain }
}

fn confirm(args: &ConfirmArgs, what: &str) -> miette::Result<()> {
    if args.auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        miette::bail!(
            help = "review the plan above, then run again with --auto-approve (-y)",
            "refusing to {what} without confirmation: stdin is not a terminal"
        );
    }
    crate::err!("\nDo you want to {what}? Only 'yes' will be accepted: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).into_diagnostic()?;
    if line.trim() != "yes" {
        miette::bail!("cancelled: nothing was changed");
    }
    Ok(())
}

/// Runs the plan with a progress display and Ctrl-C handling. Returns the report, and an
/// error (after listing on stderr what was done, what failed and what was skipped) when a
/// step failed or the run was interrupted.
fn execute(global: &GlobalArgs, plan: &Plan, hv: &dyn Hypervisor, opts: Options) -> (Report, miette::Result<()>) {
    // The first Ctrl-C (SIGTERM, SIGHUP) stops scheduling; the second aborts at once.
    let _graceful = super::interrupt::graceful();
    let cancel = super::interrupt::flag();
    let progress: Box<dyn Progress> = if global.quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Lines::stderr())
    };
    let report = crate::apply::apply(plan, hv, &opts, cancel, progress.as_ref());
    drop(progress);
    if !report.failed() {
        return (report, Ok(()));
    }
    let mut failed = 0;
    let mut skipped = 0;
    crate::errln!();
    for s in &report.steps {
        match &s.outcome {
            StepOutcome::Done { seconds } => {
                crate::errln!("  done     {} ({}, {seconds:.1}s)", s.address, s.action.as_str())
            }
            StepOutcome::Failed { error } => {
                failed += 1;
                crate::errln!("  FAILED   {} ({}): {error}", s.address, s.action.as_str());
                if let Some(h) = error.hint() {
                    crate::errln!("           hint: {h}");
                }
            }
            StepOutcome::Skipped { why } => {
                skipped += 1;
                crate::errln!("  skipped  {} ({why})", s.address);
            }
        }
    }
    if report.interrupted && failed == 0 {
        return (report, Err(ApplyError::Interrupted { skipped }.into()));
    }
    (report, Err(ApplyError::StepsFailed { failed, skipped }.into()))
}

/// `--json` without `--auto-approve`: refused before anything is observed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("--json needs --auto-approve (-y): a run printing JSON does not stop to ask")]
#[diagnostic(
    code(topo::cli::json_needs_approval),
    help(
        "review the plan first (`topo plan --json`, or `topo plan --out plan.json` and `topo apply --json plan.json`), then run again with -y"
    )
)]
pub struct JsonNeedsApproval;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
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
