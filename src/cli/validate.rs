//! `topo validate`: parse and check a lab file, print a one-line summary (or, with `--json`,
//! the verdict and every problem located by line and column).

use std::path::PathBuf;

use miette::IntoDiagnostic;

use super::{GlobalArgs, Outcome};
use crate::results::{JsonProblem, validate_failed, validate_ok};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// Print the verdict as a versioned JSON document, also when the file is invalid (see
    /// docs/results-json.md)
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &ValidateArgs) -> miette::Result<Outcome> {
    if !args.json {
        let file = super::lab_path(global, args.file.as_deref())?;
        let lab = super::load_lab(&file, global)?;
        if super::files_checked(global) == crate::lab::validate::Files::NotChecked
            && lab.vms.values().any(|v| v.boot.is_some() || v.disk.is_some())
        {
            super::status(
                global,
                format_args!(
                    "note: {} opens the lab's kernel, initrd and image paths on another host: `topo validate` does not check them; `topo plan` and `topo apply` check them through libvirt's storage pools",
                    global.connect.as_deref().unwrap_or_default()
                ),
            );
        }
        crate::outln!("{}", lab.summary())?;
        return Ok(Outcome::Ok);
    }
    let print = |doc: serde_json::Value| -> miette::Result<()> {
        crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
        Ok(())
    };
    let file = match super::lab_path(global, args.file.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            print(validate_failed(None, &[JsonProblem::of_diagnostic(e.as_ref())]))?;
            return Err(e);
        }
    };
    let shown = file.display().to_string();
    let source = match crate::lab::source::SourceFile::read(&file) {
        Ok(s) => s,
        Err(e) => {
            print(validate_failed(Some(&shown), &[JsonProblem::of_diagnostic(&e)]))?;
            return Err(e.into());
        }
    };
    match crate::lab::validate::load_with(&source, super::files_checked(global)) {
        Ok(lab) => {
            print(validate_ok(&shown, &lab))?;
            Ok(Outcome::Ok)
        }
        Err(e) => {
            let problems: Vec<JsonProblem> =
                e.problems.iter().map(|p| JsonProblem::of(&shown, &source.text, p)).collect();
            print(validate_failed(Some(&shown), &problems))?;
            Err(e.into())
        }
    }
}
