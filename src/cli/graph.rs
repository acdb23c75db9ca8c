//! `topo graph`: the lab's dependency graph as DOT or Mermaid on stdout.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{GlobalArgs, Outcome};
use crate::graph::LabGraph;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The lab file
    pub file: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

pub fn run(_global: &GlobalArgs, args: &GraphArgs) -> miette::Result<Outcome> {
    let lab = super::load_lab(&args.file)?;
    let graph = LabGraph::build(&lab)?;
    let text = match args.format {
        GraphFormat::Dot => graph.to_dot(&lab),
        GraphFormat::Mermaid => graph.to_mermaid(&lab),
    };
    crate::out!("{text}")?;
    Ok(Outcome::Ok)
}
