//! The JSON documents of `topo validate --json`, `topo apply --json` and `topo destroy --json`
//! (format version 1, docs/results-json.md): the validation verdict with every problem
//! located by line and column, and the record of a run (its plan, each step's outcome, the
//! counts, and apply's verification).

use serde::Serialize;
use serde_json::Value;

use crate::apply::{Report, StepOutcome};
pub use crate::diag::{JsonProblem, Location, Position, position};
use crate::lab::model::Lab;
use crate::plan::{Action, Plan};

/// The version of every document here. Within a version keys are only added, never renamed,
/// retyped or removed (the rule of the plan's JSON, docs/plan-json.md).
pub const FORMAT_VERSION: &str = "1";

/// Counts of what a valid lab holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LabCounts {
    pub networks: usize,
    pub external_networks: usize,
    pub vms: usize,
    pub nics: usize,
}

#[derive(Serialize)]
struct ValidateDoc<'a> {
    format_version: &'static str,
    file: Option<&'a str>,
    valid: bool,
    lab: Option<&'a str>,
    counts: Option<LabCounts>,
    problems: &'a [JsonProblem],
}

/// `topo validate --json` for a valid lab.
pub fn validate_ok(file: &str, lab: &Lab) -> Value {
    let counts = LabCounts {
        networks: lab.networks.len(),
        external_networks: lab.external_count(),
        vms: lab.vms.len(),
        nics: lab.nic_count(),
    };
    let doc = ValidateDoc {
        format_version: FORMAT_VERSION,
        file: Some(file),
        valid: true,
        lab: Some(lab.name.as_str()),
        counts: Some(counts),
        problems: &[],
    };
    // Invariant: strings, numbers, booleans and options only.
    serde_json::to_value(doc).expect("validate JSON serialises")
}

/// `topo validate --json` for a lab file that cannot be used, with its `problems`; `file`
/// is `None` when no lab file was named and none could be found.
pub fn validate_failed(file: Option<&str>, problems: &[JsonProblem]) -> Value {
    let doc = ValidateDoc { format_version: FORMAT_VERSION, file, valid: false, lab: None, counts: None, problems };
    // Invariant: as above.
    serde_json::to_value(doc).expect("validate JSON serialises")
}

/// Which command a run document records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Apply,
    Destroy,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    /// The host the step ran on, in a lab across hosts; absent in a lab on one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    address: String,
    action: &'static str,
    outcome: &'static str,
    seconds: Option<f64>,
    error: Option<String>,
    hint: Option<&'a str>,
    reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct RunCounts {
    added: usize,
    changed: usize,
    replaced: usize,
    destroyed: usize,
    failed: usize,
    skipped: usize,
}

#[derive(Serialize)]
struct RunDoc<'a> {
    format_version: &'static str,
    command: Command,
    lab: &'a str,
    plan: Value,
    steps: Vec<JsonStep<'a>>,
    summary: RunCounts,
    interrupted: bool,
    verify: Option<Value>,
}

/// `topo apply --json` / `topo destroy --json`: the `plan` that ran, what each step did
/// (`report`, `None` when the plan was empty and nothing ran), and for apply the
/// `topo verify --json` document of the verification that followed (`None` when none ran).
pub fn run_json(command: Command, plan: &Plan, report: Option<&Report>, verify: Option<Value>) -> Value {
    let mut summary = RunCounts::default();
    let mut steps = Vec::new();
    for s in report.map(|r| r.steps.as_slice()).unwrap_or_default() {
        let (outcome, seconds, error, hint, reason) = match &s.outcome {
            StepOutcome::Done { seconds } => {
                match s.action {
                    Action::Create => summary.added += 1,
                    Action::Update => summary.changed += 1,
                    Action::Replace => summary.replaced += 1,
                    Action::Delete => summary.destroyed += 1,
                    Action::NoOp => {}
                }
                ("done", Some(*seconds), None, None, None)
            }
            StepOutcome::Failed { error } => {
                summary.failed += 1;
                ("failed", None, Some(error.to_string()), error.hint(), None)
            }
            StepOutcome::Skipped { why } => {
                summary.skipped += 1;
                ("skipped", None, None, None, Some(why.as_str()))
            }
        };
        steps.push(JsonStep {
            host: s.host.as_ref().map(|h| h.as_str()),
            address: s.address.to_string(),
            action: s.action.as_str(),
            outcome,
            seconds,
            error,
            hint,
            reason,
        });
    }
    let doc = RunDoc {
        format_version: FORMAT_VERSION,
        command,
        lab: &plan.lab,
        plan: crate::plan::json::to_json(plan),
        steps,
        summary,
        interrupted: report.is_some_and(|r| r.interrupted),
        verify,
    };
    // Invariant: strings, numbers, booleans, options and JSON values only.
    serde_json::to_value(doc).expect("run JSON serialises")
}
