//! `topo inventory`: every VM of a lab with its proven addresses and login user, as an
//! ssh_config, a hosts file, an Ansible inventory or JSON (`guest::Inventory`).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::duration::parse_duration;
use super::shown::Shown;
use super::{GlobalArgs, Outcome};
use crate::verify::VerifyOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// ssh_config(5): `ssh -F <(topo inventory lab.yaml) VM`
    SshConfig,
    /// hosts(5) lines
    Hosts,
    /// Ansible YAML inventory
    Ansible,
    /// JSON (format_version 1)
    Json,
}

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = InventoryFormat::SshConfig)]
    pub format: InventoryFormat,
    /// How long to wait for NICs that have no proven address yet (90, 90s, 2m, 1h)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Proves the addresses of every NIC (as `topo verify`, with a short timeout), then prints
/// the inventory on stdout. NICs without a proven address are left out (or null in JSON).
pub fn run(global: &GlobalArgs, args: &InventoryArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref())?;
    let lab = super::load_lab_unopened(&file)?;
    let session = super::connect_lab(global, &lab)?;
    let opts = VerifyOptions { timeout: args.timeout, ..VerifyOptions::default() };
    let inv = session.inventory(&lab, opts, &|_| true, &Shown::new(global, false, false))?;
    let text = match args.format {
        InventoryFormat::SshConfig => inv.ssh_config(),
        InventoryFormat::Hosts => inv.hosts(),
        InventoryFormat::Ansible => inv.ansible()?,
        InventoryFormat::Json => inv.json() + "\n",
    };
    super::ui::stdout_bytes(text.as_bytes())?;
    Ok(Outcome::Ok)
}
