//! Apply's progress on stderr: plain timestamped lines, or a live display on a terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use super::StepOutcome;
use crate::lab::address::Address;
use crate::plan::Action;

pub enum Event<'a> {
    Started { address: &'a Address, action: Action },
    Finished { address: &'a Address, action: Action, outcome: &'a StepOutcome },
}

/// Receives apply's events from any worker thread.
pub trait Progress: Sync {
    fn event(&self, e: Event<'_>);
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "destroying",
        Action::NoOp => "checking",
    }
}

/// `[  1.2s] network.local_net: creating` lines on stderr.
pub struct Lines {
    start: Instant,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Lines {
    pub fn stderr() -> Self {
        Self { start: Instant::now(), out: Mutex::new(Box::new(std::io::stderr())) }
    }
    pub fn to(w: Box<dyn Write + Send>) -> Self {
        Self { start: Instant::now(), out: Mutex::new(w) }
    }
}

impl Progress for Lines {
    fn event(&self, e: Event<'_>) {
        let t = self.start.elapsed().as_secs_f64();
        let line = match e {
            Event::Started { address, action } => format!("[{t:6.1}s] {address}: {}...", verb(action)),
            Event::Finished { address, action, outcome } => match outcome {
                StepOutcome::Done { seconds } => {
                    format!("[{t:6.1}s] {address}: {} done in {seconds:.1}s", verb(action))
                }
                StepOutcome::Failed { error, .. } => format!("[{t:6.1}s] {address}: {} FAILED: {error}", verb(action)),
                StepOutcome::Skipped { why } => format!("[{t:6.1}s] {address}: skipped ({why})"),
            },
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// A live display (indicatif): one spinner per running step, finished steps kept as lines.
pub struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::BTreeMap<String, indicatif::ProgressBar>>,
}

impl Live {
    pub fn new() -> Self {
        Self { multi: indicatif::MultiProgress::new(), bars: Mutex::new(Default::default()) }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Live {
    fn event(&self, e: Event<'_>) {
        let Ok(mut bars) = self.bars.lock() else { return };
        match e {
            Event::Started { address, action } => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_message(format!("{address}: {}", verb(action)));
                bar.enable_steady_tick(std::time::Duration::from_millis(100));
                bars.insert(address.to_string(), bar);
            }
            Event::Finished { address, action, outcome } => {
                if let Some(bar) = bars.remove(&address.to_string()) {
                    let msg = match outcome {
                        StepOutcome::Done { seconds } => format!("✓ {address}: {} done in {seconds:.1}s", verb(action)),
                        StepOutcome::Failed { error, .. } => format!("✗ {address}: {} FAILED: {error}", verb(action)),
                        StepOutcome::Skipped { why } => format!("- {address}: skipped ({why})"),
                    };
                    // Finished steps become permanent lines above the running spinners, so the
                    // display ends on a fresh line (what follows on stdout starts cleanly).
                    bar.finish_and_clear();
                    let _ = self.multi.println(msg);
                }
            }
        }
    }
}

/// Discards events (`-q`).
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _e: Event<'_>) {}
}
