//! `topo validate`: parse and check a lab file, print a one-line summary.

use std::path::PathBuf;

use super::{GlobalArgs, Outcome};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
}

pub fn run(_global: &GlobalArgs, args: &ValidateArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(_global, args.file.as_deref())?;
    let lab = super::load_lab(&file)?;
    crate::outln!("{}", lab.summary())?;
    Ok(Outcome::Ok)
}
