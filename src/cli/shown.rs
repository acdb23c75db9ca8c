//! How a session's run shows in the terminal ([`crate::session::Ui`]): progress, warnings and
//! the prompt on stderr, the plan and the results on stdout; with `-q` only results and
//! errors, with `--json` no human results (the command prints its document at the end).

use std::io::{BufRead, IsTerminal};
use std::sync::atomic::AtomicBool;

use miette::IntoDiagnostic;

use super::GlobalArgs;
use crate::apply::progress::{Lines, Live, Progress, Silent};
use crate::apply::{Report, StepOutcome};
use crate::plan::Plan;
use crate::plan::render::{Style, render};
use crate::results::Command;
use crate::verify::{NicProgress, NicState, VerifyReport, report};

/// The terminal as a command's run shows in it.
pub struct Shown<'a> {
    global: &'a GlobalArgs,
    /// `--json`: the command prints one document at the end instead of the human results.
    json: bool,
    /// `-y`: plans are approved without asking.
    auto_approve: bool,
}

impl<'a> Shown<'a> {
    /// For a command that shows its human results unless `json`, and asks before changing
    /// the host unless `auto_approve`.
    pub fn new(global: &'a GlobalArgs, json: bool, auto_approve: bool) -> Self {
        Self { global, json, auto_approve }
    }
}

/// Plain or coloured, as stdout and `--color` say.
pub(crate) fn style(global: &GlobalArgs) -> Style {
    if global.color_for(std::io::stdout().is_terminal()) { Style::Color } else { Style::Plain }
}

impl crate::session::Ui for Shown<'_> {
    fn status(&self, line: &str) {
        super::status(self.global, line);
    }

    fn warnings(&self, warnings: crate::diag::Warnings) {
        if !self.global.quiet {
            crate::errln!("{:?}", miette::Report::new(warnings));
        }
    }

    fn warn(&self, line: &str) {
        crate::errln!("{line}");
    }

    fn plan(&self, plan: &Plan, file: &str) -> miette::Result<()> {
        if !self.json {
            crate::out!("{}", render(plan, file, style(self.global)))?;
        }
        Ok(())
    }

    fn confirm(&self, what: &str) -> miette::Result<()> {
        if self.auto_approve {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            miette::bail!(
                help = "review the plan above, then run again with --auto-approve (-y)",
                "refusing to {what} without confirmation: stdin is not a terminal"
            );
        }
        crate::err!("\nDo you want to {what}? Only 'yes' will be accepted: ");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).into_diagnostic()?;
        if line.trim() != "yes" {
            miette::bail!("cancelled: nothing was changed");
        }
        Ok(())
    }

    fn progress(&self) -> Box<dyn Progress + '_> {
        if self.global.quiet {
            Box::new(Silent)
        } else if std::io::stderr().is_terminal() {
            Box::new(Live::new())
        } else {
            Box::new(Lines::stderr())
        }
    }

    /// A run that stopped lists on stderr what was done, what failed and what was skipped;
    /// one that finished says so on stdout.
    fn executed(&self, command: Command, report: &Report) -> miette::Result<()> {
        if report.failed() {
            list_steps(report);
            return Ok(());
        }
        if self.json {
            return Ok(());
        }
        let (a, c, r, d) = report.counts();
        match command {
            Command::Destroy => crate::outln!("Destroy complete: {d} destroyed.")?,
            _ => crate::outln!("Apply complete: {a} added, {c} changed, {r} replaced, {d} destroyed.")?,
        }
        Ok(())
    }

    fn nic(&self, p: &NicProgress<'_>) {
        if !self.global.quiet {
            let t = p.target;
            let host = t.host.as_ref().map(|h| format!("{h}: ")).unwrap_or_default();
            crate::errln!("{host}{} {} ({}): {}", t.vm, t.nic, t.network, nic_line(p.state));
        }
    }

    fn verified(&self, r: &VerifyReport) -> miette::Result<()> {
        if !self.json {
            crate::out!("{}", report::table(r))?;
            crate::outln!("{}", report::summary_line(r))?;
        }
        Ok(())
    }

    fn stoppable(&self, on: bool) {
        super::interrupt::set_graceful(on);
    }

    fn cancel(&self) -> &AtomicBool {
        super::interrupt::flag()
    }
}

/// A NIC's state as its progress line says it.
fn nic_line(state: &NicState) -> String {
    match state {
        NicState::WaitingForLease => "waiting for a DHCP lease".to_string(),
        NicState::LeasedNoReply { ip } => format!("leased {ip}, waiting for ARP"),
        NicState::Soliciting { ip } => format!("{ip}, waiting for a neighbour advertisement"),
        NicState::Verified { ip, seconds, rtt_ms, evidence } => {
            let by = if evidence.ndp { "NDP" } else { "ARP" };
            match rtt_ms {
                Some(ms) => format!("{ip} verified by {by} after {seconds:.1}s (round trip {ms:.1} ms)"),
                None => format!("{ip} verified by {by} after {seconds:.1}s"),
            }
        }
        NicState::Failed { reason } => format!("FAILED: {reason}"),
        NicState::Skipped => "not verified (verify: none)".into(),
        NicState::Unproven => "unproven (no cloud-init configures this wire end)".into(),
        NicState::Stopped => "not verified (state: stopped)".into(),
        NicState::Reported { ip, source } => format!("{ip} reported by {source}"),
    }
}

/// Each step of a run that stopped, on stderr: done, FAILED (with its hint), skipped.
fn list_steps(report: &Report) {
    crate::errln!();
    for line in step_lines(report) {
        crate::errln!("{line}");
    }
}

/// The lines of [`list_steps`]: `  FAILED   network.lan (create): ERROR`, then its hint;
/// a step on a host of a lab across hosts is named `h1: network.lan`.
fn step_lines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for s in &report.steps {
        let name = match &s.host {
            Some(h) => format!("{h}: {}", s.address),
            None => s.address.to_string(),
        };
        match &s.outcome {
            StepOutcome::Done { seconds } => {
                out.push(format!("  done     {name} ({}, {seconds:.1}s)", s.action.as_str()))
            }
            StepOutcome::Failed { error } => {
                out.push(format!("  FAILED   {name} ({}): {error}", s.action.as_str()));
                if let Some(h) = error.hint() {
                    out.push(format!("           hint: {h}"));
                }
            }
            StepOutcome::Skipped { why } => out.push(format!("  skipped  {name} ({why})")),
        }
    }
    out
}

/// Prints the record of a run as JSON when `json` (docs/results-json.md): once, whatever
/// happened after its first step; then passes its result on.
pub fn record(
    command: Command,
    lab: &crate::lab::model::Lab,
    json: bool,
    result: Result<crate::session::Run, crate::session::RunError>,
) -> miette::Result<crate::session::Run> {
    let print = |run: &crate::session::Run| -> miette::Result<()> {
        if json {
            let verified = run.verified.as_ref().map(|r| report::to_json(lab.name.as_str(), r));
            let doc = crate::results::run_json(command, &run.plan, run.executed.as_ref(), verified);
            crate::outln!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?)?;
        }
        Ok(())
    };
    match result {
        Ok(run) => {
            print(&run)?;
            Ok(run)
        }
        Err(e) => {
            if let Some(run) = &e.partial {
                print(run)?;
            }
            Err(e.error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::StepReport;
    use crate::lab::address::Address;
    use crate::lab::model::{HostName, NetworkName};
    use crate::plan::Action;

    /// A failed run's listing names each step's host across hosts, and none on one host.
    #[test]
    fn a_stopped_run_lists_each_steps_host() {
        let step = |host: Option<&str>, outcome| StepReport {
            host: host.map(|h| HostName::new(h).unwrap()),
            address: Address::Network(NetworkName::new("lan").unwrap()),
            action: Action::Create,
            outcome,
        };
        let report = Report {
            steps: vec![
                step(Some("h1"), StepOutcome::Done { seconds: 0.5 }),
                step(Some("h2"), StepOutcome::Skipped { why: "not started after a failure".into() }),
                step(None, StepOutcome::Done { seconds: 0.5 }),
            ],
            ..Default::default()
        };
        assert_eq!(
            step_lines(&report),
            [
                "  done     h1: network.lan (create, 0.5s)",
                "  skipped  h2: network.lan (not started after a failure)",
                "  done     network.lan (create, 0.5s)",
            ]
        );
    }
}
