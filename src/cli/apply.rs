//! `topo apply` and `topo destroy`: the arguments, one call to the session (`session::Session::apply`, `destroy`), the record of the run.

use std::path::PathBuf;
use std::time::Duration;

use super::shown::{Shown, record};
use super::{GlobalArgs, Outcome};
use crate::apply::Options;
use crate::lab::model::Lab;
use crate::plan::saved::{SavedPlan, looks_saved};
use crate::results::Command as RunCommand;
use crate::session::{ApplyRequest, DestroyRequest};

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
    Options { parallelism: usize::from(c.parallelism), shutdown_timeout: c.shutdown_timeout, host: None }
}

/// The lab named by `file`, and the saved plan if `file` is one.
fn load(file: &std::path::Path, global: &GlobalArgs) -> miette::Result<(Lab, Option<SavedPlan>)> {
    let text = crate::lab::source::read_lab_text(file, crate::plan::saved::MAX_SAVED_PLAN_BYTES)?;
    if looks_saved(&text) {
        let saved = SavedPlan::parse(&file.display().to_string(), &text)?;
        let lab = super::load_lab_to_plan(std::path::Path::new(&saved.lab_file), global)?;
        Ok((lab, Some(saved)))
    } else {
        Ok((super::load_lab_to_plan(file, global)?, None))
    }
}

pub fn run_apply(global: &GlobalArgs, args: &ApplyArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let (mut lab, saved) = load(&file, global)?;
    // A plan saved with --take-over was reviewed as one: it takes the lab over when applied.
    lab.take_over = args.confirm.take_over || saved.as_ref().is_some_and(|s| s.take_over);
    // Terraform's rule: a JSON run cannot stop at a prompt, so it is approved up front.
    if args.json && !args.confirm.auto_approve && saved.is_none() {
        return Err(JsonNeedsApproval.into());
    }
    let targets = crate::lab::group::expand_targets(lab.groups.values(), &args.targets)?;
    let session = super::connect_lab(global, &lab)?;
    super::check_files_on(&lab, global, &session)?;
    let request = ApplyRequest {
        saved: saved.as_ref(),
        targets: &targets,
        options: options(&args.confirm),
        auto_approve: args.confirm.auto_approve,
        disconnect_foreign: args.confirm.disconnect_foreign,
        verify: (!args.no_verify).then(|| args.verify.options()),
    };
    let ui = Shown::new(global, args.json, args.confirm.auto_approve);
    let run = record(RunCommand::Apply, &lab, args.json, session.apply(&lab, &request, &ui))?;
    if let Some(r) = &run.verified {
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
    let targets = crate::lab::group::expand_targets(lab.groups.values(), &args.targets)?;
    let session = super::connect_lab(global, &lab)?;
    let request = DestroyRequest {
        targets: &targets,
        graceful: args.graceful,
        options: options(&args.confirm),
        disconnect_foreign: args.confirm.disconnect_foreign,
    };
    let ui = Shown::new(global, args.json, args.confirm.auto_approve);
    let run = record(RunCommand::Destroy, &lab, args.json, session.destroy(&lab, &request, &ui))?;
    if run.executed.is_none() && !args.json {
        if run.plan.targets.is_empty() {
            crate::outln!("Nothing to destroy: lab {} owns nothing on {}.", lab.name, session.uri())?;
        } else {
            crate::outln!("Nothing to destroy for the targets on {}.", session.uri())?;
        }
    }
    Ok(Outcome::Ok)
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
