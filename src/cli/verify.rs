//! `topo verify` and `topo status`: the session's verification with live progress on
//! stderr, the report (or the status) on stdout.

use std::path::PathBuf;
use std::time::Duration;

use miette::IntoDiagnostic;

use super::shown::Shown;
use super::{GlobalArgs, Outcome};
use crate::lab::model::Lab;
use crate::verify::{VerifyOptions, VerifyReport, report};

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyOpts {
    /// Give up on NICs not verified after this long (90, 90s, 2m, 1h)
    #[arg(long, default_value = "120s", value_parser = super::duration::parse_duration)]
    pub timeout: Duration,
    /// Give up on VMs whose `ready:` conditions do not all hold this long after their NICs
    /// are proven; 0 checks each once (90, 90s, 2m, 1h)
    #[arg(long, default_value = "300s", value_parser = super::duration::parse_duration)]
    pub ready_timeout: Duration,
}

impl VerifyOpts {
    /// The verification options these flags give.
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions { timeout: self.timeout, ready_timeout: self.ready_timeout, ..VerifyOptions::default() }
    }
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
    let session = super::connect_lab(global, &lab)?;
    let proven = session.verify_ready(&lab, args.opts.options(), &Shown::new(global, args.json, false))?;
    finish(&lab, &proven.report, args.json)?;
    Ok(Outcome::Ok)
}

pub fn run_status(global: &GlobalArgs, args: &StatusArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab_unopened(&file)?;
    let session = super::connect_lab(global, &lab)?;
    let status = session.status(&lab, &Shown::new(global, args.json, false))?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&status.to_json()).into_diagnostic()?)?;
    } else {
        crate::out!("{}", status.table())?;
    }
    Ok(Outcome::Ok)
}
