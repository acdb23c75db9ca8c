//! `topo plan`: observe the host, plan, and show the plan (human or JSON), optionally saved.

use std::path::PathBuf;

use miette::IntoDiagnostic;

use super::shown::{Shown, style};
use super::{GlobalArgs, Outcome};
use crate::plan::render::render;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// Print the plan as a versioned JSON document (see docs/plan-json.md)
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan to FILE; `topo apply FILE` applies it unless the lab or host changed
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan only ADDRESS (`vm.NAME`, `network.NAME`, as the plan shows them) and what it
    /// depends on; repeatable. The plan is partial
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<crate::lab::address::Address>,
    /// Plan taking the lab over from another lab file with the same `name:` and `prefix:`
    /// (see `topo apply --take-over`); a plan saved with it applies it
    #[arg(long)]
    pub take_over: bool,
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let mut lab = super::load_lab_to_plan(&file, global)?;
    lab.take_over = args.take_over;
    let session = super::connect_lab(global, &lab)?;
    super::check_files_on(&lab, global, &session)?;
    let targets = crate::lab::group::expand_targets(lab.groups.values(), &args.targets)?;
    let planned = session.plan(&lab, &targets, &Shown::new(global, args.json, false))?;
    let plan = &planned.plan;
    let json = crate::plan::json::to_json(plan);
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&json).into_diagnostic()?)?;
    } else {
        crate::out!("{}", render(plan, &file.display().to_string(), style(global)))?;
    }
    if let Err(e) = crate::plan::check_foreign(plan, &session.uri(), false) {
        super::status(global, format_args!("Warning: apply and destroy will refuse this plan: {e}"));
    }
    if let Some(out) = &args.out {
        // Canonical, so the saved plan applies from any folder.
        let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone()).display().to_string();
        let saved = planned.saved(&lab, canonical, session.uri());
        let text = serde_json::to_string_pretty(&saved).into_diagnostic()?;
        // It holds the users' user-data: private (0600), written whole or not at all, and a
        // symlink at `out` is replaced, never written through (docs/files.md).
        crate::files::write_private_atomic(out, (text + "\n").as_bytes())
            .map_err(|source| SavePlanError { path: out.display().to_string(), source })?;
        super::status(
            global,
            format_args!("Saved the plan to {}; apply it with `topo apply {}`", out.display(), out.display()),
        );
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() { Outcome::Changes } else { Outcome::Ok })
}

/// `plan --out FILE` could not write FILE.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot save the plan to {path}: {source}")]
#[diagnostic(code(topo::plan::save), help("name a file in a folder you may write to"))]
pub struct SavePlanError {
    path: String,
    #[source]
    source: std::io::Error,
}
