//! `topo list` (also `topo status --all`): every lab on the host, from the owner tags alone.

use miette::IntoDiagnostic;

use super::{GlobalArgs, Outcome};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print the list as a versioned JSON document (see docs/list-json.md)
    #[arg(long)]
    pub json: bool,
}

/// Observes the host and prints every lab instance on it (no lab file needed).
pub fn run(global: &GlobalArgs, json: bool) -> miette::Result<Outcome> {
    let list = super::connect(global)?.labs()?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&list.to_json()).into_diagnostic()?)?;
    } else {
        crate::out!("{}", list.table())?;
    }
    Ok(Outcome::Ok)
}
