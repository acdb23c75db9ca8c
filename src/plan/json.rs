//! The machine-readable plan (`topo plan --json`), format version 1; see docs/plan-json.md.

use serde::Serialize;

use super::fields::Field;
use super::render::{netem_nic, unplugged_nic};
use super::{Action, Plan, Reason, Summary};

pub const FORMAT_VERSION: &str = "1";

#[derive(Serialize)]
pub struct JsonPlan<'a> {
    pub format_version: &'static str,
    pub lab: &'a str,
    pub changes: Vec<JsonChange<'a>>,
    pub summary: Summary,
    /// `--target` addresses; non-empty means the plan is partial.
    pub targets: &'a [crate::lab::address::Address],
    /// Located warnings (docs/results-json.md "problem"); empty when none.
    pub warnings: &'a [crate::diag::JsonProblem],
}

#[derive(Serialize)]
pub struct JsonChange<'a> {
    /// The host the change is on, in a lab across hosts (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a crate::lab::model::HostName>,
    pub address: &'a crate::lab::address::Address,
    pub libvirt_name: &'a str,
    pub action: Action,
    pub reasons: Vec<JsonReason<'a>>,
    pub fields: Vec<JsonField<'a>>,
    pub blast_radius: &'a [super::Detached],
}

/// A reason as docs/plan-json.md ("reason") shows it: its `kind` and, for the kinds that
/// name something, one more key. NICs are named as in the text plan (`eth0 (MAC, tap
/// vnetN)` when unplugged, `eth0 (tap vnetN)` for netem).
#[derive(Serialize)]
pub struct JsonReason<'a> {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a [Field]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<&'a [crate::lab::model::VolumeName]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
}

impl<'a> From<&'a Reason> for JsonReason<'a> {
    fn from(r: &'a Reason) -> Self {
        let mut j = JsonReason { kind: r.kind(), fields: None, nics: None, volumes: None, names: None, from: None };
        match r {
            Reason::RequiresReplace { fields } | Reason::RequiresRestart { fields } | Reason::Replugged { fields } => {
                j.fields = Some(fields)
            }
            Reason::Unplugged { nics } => j.nics = Some(nics.iter().map(unplugged_nic).collect()),
            Reason::Netem { nics } => j.nics = Some(nics.iter().map(netem_nic).collect()),
            Reason::DeletedOutsideTopo { volumes } => j.volumes = Some(volumes),
            Reason::Snapshots { names } => j.names = Some(names),
            Reason::TakenOver { from } => j.from = Some(from),
            Reason::NotOnHost
            | Reason::NotInLabFile
            | Reason::LabFileChanged
            | Reason::Drift
            | Reason::NotActive
            | Reason::NotRunning
            | Reason::DestroyRequested
            | Reason::StopRequested
            | Reason::Paused
            | Reason::Orphaned
            | Reason::InterruptedUpload
            | Reason::PoolNeeded
            | Reason::Released
            | Reason::NetworkRenewed
            | Reason::WireEndRenewed
            | Reason::UndefinedOutsideTopo
            | Reason::Adopted => {}
        }
        j
    }
}

#[derive(Serialize)]
pub struct JsonField<'a> {
    pub path: &'a super::fields::Field,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub forces_replacement: bool,
    pub restarts: bool,
}

/// The plan as the versioned JSON document. Every change is listed, no-ops included.
pub fn to_json(plan: &Plan) -> serde_json::Value {
    let doc = JsonPlan {
        format_version: FORMAT_VERSION,
        lab: &plan.lab,
        changes: plan
            .all_changes()
            .into_iter()
            .map(|(host, c)| JsonChange {
                host,
                address: &c.address,
                libvirt_name: &c.libvirt_name,
                action: c.action,
                reasons: c.reasons.iter().map(JsonReason::from).collect(),
                fields: c
                    .fields
                    .iter()
                    .map(|f| JsonField {
                        path: &f.path,
                        before: f.before.as_deref(),
                        after: f.after.as_deref(),
                        forces_replacement: f.forces_replacement,
                        restarts: f.restarts,
                    })
                    .collect(),
                blast_radius: &c.blast_radius,
            })
            .collect(),
        summary: plan.summary(),
        targets: &plan.targets,
        warnings: &plan.warnings,
    };
    // Invariant: every type here serialises infallibly (strings, numbers, plain enums).
    serde_json::to_value(doc).expect("plan JSON is always serialisable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NicTap;

    fn nic(index: usize, tap: &str) -> NicTap {
        // Invariant: a valid unicast MAC literal.
        NicTap { index, mac: "52:54:00:12:34:56".parse().expect("a MAC"), tap: tap.into() }
    }

    /// One reason of every kind.
    fn every_reason() -> Vec<Reason> {
        let fields = vec![Field::Memory, Field::Vcpus];
        vec![
            Reason::NotOnHost,
            Reason::NotInLabFile,
            Reason::LabFileChanged,
            Reason::Drift,
            Reason::RequiresReplace { fields: fields.clone() },
            Reason::NotActive,
            Reason::NotRunning,
            Reason::RequiresRestart { fields },
            Reason::DestroyRequested,
            Reason::StopRequested,
            Reason::Paused,
            Reason::Orphaned,
            Reason::InterruptedUpload,
            Reason::PoolNeeded,
            Reason::Unplugged { nics: vec![nic(0, "vnet3"), nic(1, "vnet4")] },
            Reason::Released,
            Reason::Netem { nics: vec![nic(2, "vnet5")] },
            Reason::UndefinedOutsideTopo,
            Reason::DeletedOutsideTopo {
                volumes: vec![crate::lab::model::VolumeName::new("a.x.img").expect("a name")],
            },
            Reason::Snapshots { names: vec!["s1".into()] },
            Reason::Adopted,
            Reason::TakenOver { from: "/labs/a.yaml".into() },
            Reason::Replugged { fields: vec![Field::NicMtu("52:54:00:00:00:01".parse().expect("a MAC"))] },
            Reason::NetworkRenewed,
        ]
    }

    #[test]
    fn a_reason_in_the_json_is_its_kind_and_what_it_names() {
        for r in every_reason() {
            let json = serde_json::to_value(JsonReason::from(&r)).expect("serialisable");
            let saved = serde_json::to_value(&r).expect("serialisable");
            // The kind is the saved plan's tag too.
            assert_eq!(json["kind"], saved["kind"], "{r:?}");
            assert_eq!(json["kind"], r.kind());
            match r {
                // NICs are named as in the text plan (docs/plan-json.md, "reason": `nics`).
                Reason::Unplugged { .. } => assert_eq!(
                    json,
                    serde_json::json!({"kind": "unplugged", "nics": [
                        "eth0 (52:54:00:12:34:56, tap vnet3)", "eth1 (52:54:00:12:34:56, tap vnet4)"
                    ]})
                ),
                Reason::Netem { .. } => {
                    assert_eq!(json, serde_json::json!({"kind": "netem", "nics": ["eth2 (tap vnet5)"]}))
                }
                // Every other reason is the data it carries, as saved.
                _ => assert_eq!(json, saved, "{r:?}"),
            }
        }
    }

    #[test]
    fn the_text_plan_names_nics_as_the_json_does() {
        let all = every_reason();
        let (unplugged, netem) = (&all[14], &all[16]);
        assert_eq!(
            crate::plan::render::reason(unplugged),
            "eth0 (52:54:00:12:34:56, tap vnet3), eth1 (52:54:00:12:34:56, tap vnet4) are off their network's bridge \
             (the network was restarted under the running VM); plugged in again"
        );
        assert_eq!(
            crate::plan::render::reason(netem),
            "the delay, jitter or loss on eth2 (tap vnet5) differs from the lab file; set in place on the tap (tc \
             netem), no restart"
        );
    }
}
