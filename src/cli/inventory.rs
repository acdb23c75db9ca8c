//! `topo inventory`: every VM of a lab with its proven addresses and login user, as an
//! ssh_config, a hosts file, an Ansible inventory or JSON (`guest::Inventory`).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::duration::parse_duration;
use super::verify::{run_verification, targets};
use super::{GlobalArgs, Outcome};
use crate::host::hypervisor::Hypervisor;
use crate::verify::VerifyOptions;
use crate::verify::inventory::Inventory;

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
    let hv = super::connect(global)?;
    let observed = hv.observe()?;
    let targets = targets(&lab, &observed, &hv);
    let opts = VerifyOptions { timeout: args.timeout, ..VerifyOptions::default() };
    let report = run_verification(global, &hv, &targets, opts)?;
    let mut inv = Inventory::new(&lab, &report);
    pin_host_keys(&hv, &lab, &observed, &mut inv)?;
    let text = match args.format {
        InventoryFormat::SshConfig => inv.ssh_config(),
        InventoryFormat::Hosts => inv.hosts(),
        InventoryFormat::Ansible => inv.ansible()?,
        InventoryFormat::Json => inv.json() + "\n",
    };
    super::ui::stdout_bytes(text.as_bytes())?;
    Ok(Outcome::Ok)
}

/// Makes `inv`'s ssh options pin each VM's host key (`guest::known_hosts`): in the lab's
/// known_hosts file for this libvirt host (its folder made private), under an alias from the
/// VM's domain UUID; keys recorded for domains no longer there (replaced or destroyed VMs)
/// are forgotten first.
pub(crate) fn pin_host_keys(
    hv: &dyn Hypervisor,
    lab: &crate::lab::model::Lab,
    observed: &crate::host::observed::Observed,
    inv: &mut Inventory,
) -> miette::Result<()> {
    use crate::verify::known_hosts;
    let file = known_hosts::prepare(lab.name.as_str(), &super::host_id(hv)?)?;
    let aliases: std::collections::BTreeMap<String, String> = lab
        .vms
        .values()
        .filter_map(|vm| {
            let uuid = observed.domains.get(vm.libvirt_name.as_str())?.uuid.as_deref()?;
            Some((vm.name.to_string(), known_hosts::alias(&vm.libvirt_name, uuid)))
        })
        .collect();
    known_hosts::forget_all_but(&file, &aliases.values().cloned().collect())?;
    inv.pin_host_keys(file, &aliases);
    Ok(())
}
