//! `topo validate`: parse and check a lab file, print a one-line summary.

use std::path::PathBuf;

use super::{GlobalArgs, Outcome};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The lab file
    pub file: PathBuf,
}

pub fn run(_global: &GlobalArgs, args: &ValidateArgs) -> miette::Result<Outcome> {
    let lab = super::load_lab(&args.file)?;
    crate::outln!("{}", lab.summary())?;
    Ok(Outcome::Ok)
}
