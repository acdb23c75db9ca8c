//! `topo ssh`: log in to a lab VM as the lab's user, on an address topo has just proven by
//! ARP, its host key pinned on first contact in the lab's own known_hosts file
//! (`guest::known_hosts`), never in `~/.ssh/known_hosts`.

use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_duration;
use super::shown::Shown;
use super::{GlobalArgs, Outcome};
use crate::verify::VerifyOptions;

#[derive(clap::Args, Debug)]
pub struct SshArgs {
    /// The VM (its name in the lab file)
    pub vm: String,
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// The lab file, as a flag: the same as the positional argument (kept for scripts
    /// written when this was the only way)
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "file", hide = true)]
    pub file_flag: Option<PathBuf>,
    /// A command to run instead of a login shell (after `--`)
    #[arg(last = true)]
    pub command: Vec<String>,
    /// The NIC whose address to use (default: the first NIC with a proven address)
    #[arg(long)]
    pub nic: Option<String>,
    /// How long to wait for the VM's addresses to be proven (90, 90s, 2m, 1h)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why `topo ssh` cannot start ssh.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SshError {
    #[error("lab {lab} has no VM `{vm}`")]
    #[diagnostic(code(topo::ssh::unknown_vm), help("VMs in this lab: {known}"))]
    UnknownVm { lab: String, vm: String, known: String },
    #[error("VM `{vm}` has no NIC `{nic}`")]
    #[diagnostic(code(topo::ssh::unknown_nic), help("its NICs: {known}"))]
    UnknownNic { vm: String, nic: String, known: String },
    #[error("VM `{vm}` has no proven address{}", nic.as_ref().map(|n| format!(" on {n}")).unwrap_or_default())]
    #[diagnostic(
        code(topo::ssh::no_address),
        help("is it running and up? `topo verify` shows why a NIC is unproven; `virsh console` shows the boot")
    )]
    NoAddress { vm: String, nic: Option<String> },
    #[error("could not run ssh: {0}")]
    #[diagnostic(code(topo::ssh::exec), help("install the OpenSSH client (`ssh`)"))]
    Exec(std::io::Error),
}

/// Proves the VM's addresses (as `topo verify` does, for this VM only), then replaces this
/// process with `ssh` (so the terminal, signals and exit status are ssh's).
pub fn run(global: &GlobalArgs, args: &SshArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref().or(args.file_flag.as_deref()))?;
    let lab = super::load_lab_unopened(&file)?;
    let Some(vm) = lab.vms.values().find(|v| v.name.as_str() == args.vm) else {
        let known = lab.vms.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
        return Err(SshError::UnknownVm { lab: lab.name.to_string(), vm: args.vm.clone(), known }.into());
    };
    if let Some(nic) = &args.nic
        && !vm.nics.iter().any(|n| n.label() == *nic)
    {
        let known = vm.nics.iter().map(|n| n.label()).collect::<Vec<_>>().join(", ");
        return Err(SshError::UnknownNic { vm: args.vm.clone(), nic: nic.clone(), known }.into());
    }
    let session = super::connect_lab(global, &lab)?;
    let opts = VerifyOptions { timeout: args.timeout, ..VerifyOptions::default() };
    let only = |t: &crate::verify::NicTarget| t.vm == vm.name && args.nic.as_ref().is_none_or(|n| *n == t.nic);
    let inv = session.inventory(&lab, opts, &only, &Shown::new(global, false, false))?;
    let host = inv.host(&args.vm).ok_or_else(|| SshError::NoAddress { vm: args.vm.clone(), nic: None })?;
    let address = match &args.nic {
        Some(nic) => host.nics.iter().find(|n| n.nic == *nic).and_then(|n| n.address),
        None => host.address,
    }
    .ok_or_else(|| SshError::NoAddress { vm: args.vm.clone(), nic: args.nic.clone() })?;
    let mut ssh = std::process::Command::new("ssh");
    ssh.args(inv.ssh_args(host, address));
    if !args.command.is_empty() {
        ssh.arg("--").args(&args.command);
    }
    super::status(global, format!("ssh {} ({address})", args.vm));
    use std::os::unix::process::CommandExt;
    // `exec` returns only on failure.
    Err(SshError::Exec(ssh.exec()).into())
}

/// Gives cloud-init VMs whose lab file names no SSH key the invoking user's own public keys
/// (`$HOME/.ssh/*.pub`), and says on stderr which VMs are left without any.
pub(crate) fn fill_default_keys(lab: &mut crate::lab::model::Lab) {
    let wants = lab.vms.values().any(|v| v.cloud_init.as_ref().is_some_and(|c| c.default_keys));
    if !wants {
        return;
    }
    let keys = std::env::var_os("HOME").map(|h| crate::guest::invoking_user_keys(h.as_ref())).unwrap_or_default();
    let keyless = lab.use_default_keys(&keys);
    if !keyless.is_empty() {
        let names = keyless.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
        crate::errln!(
            "note: no SSH public key for {names}: the lab file names none and ~/.ssh has no *.pub file; \
             the VMs come up but `topo ssh` cannot log in (add `cloud_init.ssh_authorized_keys`, or run ssh-keygen)"
        );
    }
}
