//! Apply's progress on stderr: plain timestamped lines, or a live display on a terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use super::StepOutcome;
use crate::lab::address::Address;
use crate::lab::model::HostName;
use crate::plan::Action;

/// One step of apply starting or finishing. `host` is the host of a lab across hosts the
/// step runs on (`apply::Options::host`), `None` on a lab on one host.
pub enum Event<'a> {
    Started { host: Option<&'a HostName>, address: &'a Address, action: Action },
    Finished { host: Option<&'a HostName>, address: &'a Address, action: Action, outcome: &'a StepOutcome },
}

/// How a step is named in progress: `network.lan`, or `h1: network.lan` on host `h1` of a
/// lab across hosts (a network exists on every host it spans, so its steps repeat per host).
fn step_name(host: Option<&HostName>, address: &Address) -> String {
    match host {
        Some(h) => format!("{h}: {address}"),
        None => address.to_string(),
    }
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

/// `[  1.2s] network.local_net: creating` lines on stderr (`[  1.2s] h1: network.lan:
/// creating` on host `h1` of a lab across hosts).
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
            Event::Started { host, address, action } => {
                format!("[{t:6.1}s] {}: {}...", step_name(host, address), verb(action))
            }
            Event::Finished { host, address, action, outcome } => {
                let address = step_name(host, address);
                match outcome {
                    StepOutcome::Done { seconds } => {
                        format!("[{t:6.1}s] {address}: {} done in {seconds:.1}s", verb(action))
                    }
                    StepOutcome::Failed { error, .. } => {
                        format!("[{t:6.1}s] {address}: {} FAILED: {error}", verb(action))
                    }
                    StepOutcome::Skipped { why } => format!("[{t:6.1}s] {address}: skipped ({why})"),
                }
            }
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
            Event::Started { host, address, action } => {
                let address = step_name(host, address);
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_message(format!("{address}: {}", verb(action)));
                bar.enable_steady_tick(std::time::Duration::from_millis(100));
                // Keyed by host and address: the same network's steps run on several hosts at once.
                bars.insert(address, bar);
            }
            Event::Finished { host, address, action, outcome } => {
                let address = step_name(host, address);
                if let Some(bar) = bars.remove(&address) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Each line as it is after the `[  0.0s] ` timestamp.
    fn lines(host: Option<&HostName>) -> Vec<String> {
        let buf = Buf::default();
        let p = Lines::to(Box::new(buf.clone()));
        let a = Address::Network(crate::lab::model::NetworkName::new("lan").unwrap());
        p.event(Event::Started { host, address: &a, action: Action::Create });
        p.event(Event::Finished {
            host,
            address: &a,
            action: Action::Create,
            outcome: &StepOutcome::Done { seconds: 0.25 },
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out.lines().map(|l| l.split_once("s] ").unwrap().1.to_string()).collect()
    }

    /// One host: as always. Across hosts: the host before the address.
    #[test]
    fn lines_name_the_host_only_across_hosts() {
        assert_eq!(lines(None), ["network.lan: creating...", "network.lan: creating done in 0.2s"]);
        let h1 = HostName::new("h1").unwrap();
        assert_eq!(lines(Some(&h1)), ["h1: network.lan: creating...", "h1: network.lan: creating done in 0.2s"]);
    }
}
