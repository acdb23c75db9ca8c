//! `topo snapshot save|restore|list|delete`: whole-lab snapshots, one session call each;
//! results on stdout, progress on stderr.

use std::path::PathBuf;

use miette::IntoDiagnostic;

use super::shown::Shown;
use super::verify::VerifyOpts;
use super::{GlobalArgs, Outcome};
use crate::lab::model::SnapshotName;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub action: SnapshotAction,
}

/// Parses NAME by the snapshot name rule ([`SnapshotName`]).
fn parse_name(s: &str) -> Result<SnapshotName, String> {
    SnapshotName::new(s).map_err(|e| format!("snapshot name {s:?} {e}"))
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotAction {
    /// Pause every VM, snapshot each with its memory, resume them all
    Save {
        /// The snapshot's name: letters, digits and -_.+:@, starting with a letter or digit
        #[arg(value_parser = parse_name)]
        name: SnapshotName,
        /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
        file: Option<PathBuf>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Revert every VM to the snapshot, resume them together, prove every NIC again
    Restore {
        #[arg(value_parser = parse_name)]
        name: SnapshotName,
        /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
        file: Option<PathBuf>,
        #[command(flatten)]
        opts: VerifyOpts,
        /// Print the verification as JSON (see docs/verify-json.md)
        #[arg(long)]
        json: bool,
    },
    /// List the lab's snapshots: name, time, VMs
    List {
        /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
        file: Option<PathBuf>,
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete the lab's snapshot from every VM
    Delete {
        #[arg(value_parser = parse_name)]
        name: SnapshotName,
        /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
        file: Option<PathBuf>,
    },
}

pub fn run(global: &GlobalArgs, args: &SnapshotArgs) -> miette::Result<Outcome> {
    let file = match &args.action {
        SnapshotAction::Save { file, .. }
        | SnapshotAction::Restore { file, .. }
        | SnapshotAction::List { file, .. }
        | SnapshotAction::Delete { file, .. } => super::lab_path(global, file.as_deref())?,
    };
    let lab = super::load_lab_unopened(&file)?;
    let session = super::connect_lab(global, &lab)?;
    match &args.action {
        SnapshotAction::Save { name, json, .. } => {
            let saved = session.snapshot_save(&lab, name, &Shown::new(global, *json, false))?;
            if *json {
                crate::outln!("{}", serde_json::to_string_pretty(&saved).into_diagnostic()?)?;
            } else {
                crate::out!("{}", saved.table())?;
            }
        }
        SnapshotAction::Restore { name, opts, json, .. } => {
            let restored =
                session.snapshot_restore(&lab, name, Some(opts.options()), &Shown::new(global, *json, false))?;
            if !*json {
                let reverted: Vec<String> =
                    restored.reverted.iter().map(|(vm, d)| format!("{vm} ({} ms)", d.as_millis())).collect();
                crate::errln!("Reverted to snapshot {}: {}", restored.name, reverted.join(", "));
            }
            if let Some(proven) = &restored.proven {
                super::verify::finish(&lab, &proven.report, *json)?;
            }
        }
        SnapshotAction::List { json, .. } => {
            let list = session.snapshot_list(&lab)?;
            if *json {
                let doc = serde_json::json!({"lab": lab.name.as_str(), "snapshots": list});
                crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
            } else {
                crate::out!("{}", crate::session::snapshot_list_table(&list))?;
            }
        }
        SnapshotAction::Delete { name, .. } => {
            let vms = session.snapshot_delete(&lab, name, &Shown::new(global, false, false))?;
            crate::outln!("Deleted snapshot {name} from {} VMs: {}", vms.len(), vms.join(", "))?;
        }
    }
    Ok(Outcome::Ok)
}
