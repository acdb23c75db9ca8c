//! Saved plans (`topo plan --out FILE`): the executable plan itself and what it was made
//! from, so that `apply FILE` runs exactly these steps, or refuses them when the lab file,
//! the URI or the host changed since.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::observed::Observed;

/// Saved plans mention what they were made from: looks_saved finds the format tag in text
/// of either version, so that an old file gets a clear "unknown format" error.
const FORMAT_TAG: &str = "topo-saved-plan/";

/// Largest saved plan `apply` reads (64 MiB): a plan carries every VM's domain XML and seed
/// (user-data of up to 1 MiB each), so it may be far larger than a lab file, but a file
/// bigger than this is not one topo wrote for a lab it accepts; refused by its size before
/// it is read (`files::read_bounded`).
pub const MAX_SAVED_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// The saved-plan format this topo writes and applies. Version 3: reasons are data (a NIC a
/// reason names is its index, MAC and tap, not a sentence). Version 2 carried the executable
/// steps with reasons in words; version 1 the plan as shown only. Plans of any other version
/// are refused ([`SavedPlanError::Version`]): a saved plan is applied by the topo that made
/// it, as Terraform refuses a plan file from another Terraform version.
pub const SAVED_FORMAT: &str = "topo-saved-plan/3";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    /// The lab file's canonical path (absolute, symlinks resolved), so `apply` finds it from
    /// any folder.
    pub lab_file: String,
    /// SHA-256 of the lab file's text.
    pub lab_sha256: String,
    pub uri: String,
    /// SHA-256 of everything observed on the host (canonical JSON).
    pub observed_sha256: String,
    /// The plan as shown (`plan --json` document), for people and tools reading the file.
    pub plan: serde_json::Value,
    /// The steps `apply` runs, with everything each needs (XML, volumes, NICs).
    pub steps: super::Plan,
    /// Made with `--take-over`: applying it takes the lab over from another lab file too
    /// (docs/lab-file.md, "Lab identity"). Absent in plans saved before lab identity.
    #[serde(default)]
    pub take_over: bool,
    /// A lab across hosts: each host's URI and observation (`uri` and `observed_sha256` are
    /// then not what the plan is checked against), checked host by host when it is applied
    /// ([`SavedPlan::for_host`]). Absent for a lab on one host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, SavedHost>,
}

/// What one host's part of a saved plan across hosts was made on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHost {
    /// The libvirt URI the host was reached at (a `--host NAME=URI` of the run included).
    pub uri: String,
    /// SHA-256 of everything observed on the host ([`fingerprint`]).
    pub observed_sha256: String,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SavedPlanError {
    #[error("{0} is not a saved topo plan: {1}")]
    #[diagnostic(code(topo::plan::saved::format), help("make one with `topo plan LAB.yaml --out FILE`"))]
    Format(String, String),
    /// A saved plan of another format version: made by another version of topo, whose steps
    /// this one may read differently. Same code as [`Format`](Self::Format), so scripts that
    /// match it keep working.
    #[error(
        "{name} was saved by another version of topo (format {found}); this topo applies only {SAVED_FORMAT} plans"
    )]
    #[diagnostic(
        code(topo::plan::saved::format),
        help(
            "nothing was changed. Saved plans do not carry over between topo versions: make the plan again with \
             this topo (`topo plan LAB.yaml --out FILE`), review it and apply that"
        )
    )]
    Version { name: String, found: String },
    #[error("the saved plan is stale: {what} changed since it was made")]
    #[diagnostic(code(topo::plan::saved::stale), help("run `topo plan` again and review the new plan"))]
    Stale { what: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn fingerprint(observed: &Observed) -> String {
    // Invariant: Observed holds only strings, numbers, bools and maps keyed by strings.
    let json = serde_json::to_vec(observed).expect("observed state is always serialisable");
    sha256_hex(&json)
}

impl SavedPlan {
    /// Reads a saved plan: its `format` first, so that a plan of another version is refused
    /// as such ([`SavedPlanError::Version`]) rather than for a step it cannot read.
    ///
    /// # Errors
    /// [`SavedPlanError::Format`] when `text` is not a saved plan of this shape,
    /// [`SavedPlanError::Version`] when it is one of another format version.
    pub fn parse(name: &str, text: &str) -> Result<Self, SavedPlanError> {
        /// The one key every version has.
        #[derive(Deserialize)]
        struct Head {
            format: String,
        }
        let bad = |e: serde_json::Error| SavedPlanError::Format(name.into(), e.to_string());
        let head: Head = serde_json::from_str(text).map_err(bad)?;
        if head.format != SAVED_FORMAT {
            return Err(match head.format.strip_prefix(FORMAT_TAG) {
                Some(_) => SavedPlanError::Version { name: name.into(), found: head.format },
                None => SavedPlanError::Format(name.into(), format!("unknown format {:?}", head.format)),
            });
        }
        serde_json::from_str(text).map_err(bad)
    }

    /// Errors when the lab text, the URI or the host are not what the plan was made from.
    pub fn check_fresh(&self, lab_text: &str, uri: &str, observed: &Observed) -> Result<(), SavedPlanError> {
        if sha256_hex(lab_text.as_bytes()) != self.lab_sha256 {
            return Err(SavedPlanError::Stale { what: format!("the lab file {}", self.lab_file) });
        }
        if uri != self.uri {
            return Err(SavedPlanError::Stale { what: format!("the connection URI (plan: {}, now: {uri})", self.uri) });
        }
        if fingerprint(observed) != self.observed_sha256 {
            return Err(SavedPlanError::Stale { what: format!("the host ({uri})") });
        }
        Ok(())
    }
}

impl SavedPlan {
    /// Host `host`'s part of a saved plan across hosts, as a saved plan of its own: its
    /// steps (`steps.hosts[host]`), its URI and observation, the lab file's checksum.
    ///
    /// # Errors
    /// [`SavedPlanError::Stale`] when the plan has no part for `host` (it was made for
    /// another set of hosts).
    pub fn for_host(&self, host: &str) -> Result<SavedPlan, SavedPlanError> {
        let stale =
            || SavedPlanError::Stale { what: format!("the lab's hosts (the plan has no part for host {host})") };
        let at = self.hosts.get(host).ok_or_else(stale)?;
        let steps =
            self.steps.hosts.iter().find(|(h, _)| h.as_str() == host).map(|(_, p)| p.clone()).ok_or_else(stale)?;
        Ok(SavedPlan {
            uri: at.uri.clone(),
            observed_sha256: at.observed_sha256.clone(),
            plan: serde_json::Value::Null,
            steps,
            hosts: BTreeMap::new(),
            ..self.clone()
        })
    }
}

/// True when `text` looks like a saved plan rather than a lab file.
pub fn looks_saved(text: &str) -> bool {
    text.trim_start().starts_with('{') && text.contains(FORMAT_TAG)
}
