//! `topo graph`: the lab's dependency graph as DOT or Mermaid on stdout.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{GlobalArgs, Outcome};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

pub fn run(global: &GlobalArgs, args: &GraphArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab(&file, global)?;
    let text = match args.format {
        GraphFormat::Dot => crate::plan::graph::to_dot(&lab),
        GraphFormat::Mermaid => crate::plan::graph::to_mermaid(&lab),
    };
    crate::out!("{text}")?;
    Ok(Outcome::Ok)
}
