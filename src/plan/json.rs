//! The machine-readable plan (`topo plan --json`), format version 1; see docs/plan-json.md.

use serde::Serialize;

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
    pub address: &'a crate::lab::address::Address,
    pub libvirt_name: &'a str,
    pub action: Action,
    pub reasons: &'a [Reason],
    pub fields: Vec<JsonField<'a>>,
    pub blast_radius: &'a [super::Detached],
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
            .changes
            .iter()
            .map(|c| JsonChange {
                address: &c.address,
                libvirt_name: &c.libvirt_name,
                action: c.action,
                reasons: &c.reasons,
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
