//! What the probes run through a [`Runner`] share ([`super::arping`] for ARP, [`super::ndisc6`]
//! for NDP): running one `sh -c` probe script on the bridge's machine, and reading the
//! bridge's `ip -o link show` line that each script prints first.

use crate::host::runner::{EXIT_NOT_FOUND, RunError, Runner};
use crate::lab::model::MacAddr;
use crate::verify::prober::ProbeError;

/// Runs a probe script `argv` through `runner` and returns its stdout; `filter` names the
/// text tool the script pipes through besides `sh` and `ip` (for the message when one is
/// missing).
///
/// # Errors
/// [`ProbeError::Remote`]: the runner cannot reach the machine or start the shell, a program
/// the script needs is missing, or the script failed.
pub fn run_script(runner: &dyn Runner, bridge: &str, argv: &[String], filter: &str) -> Result<String, ProbeError> {
    let host = runner.describe();
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    let remote = |message: String| ProbeError::Remote { bridge: bridge.to_owned(), host: host.clone(), message };
    let out = match runner.run(&words, None) {
        Ok(o) => o,
        Err(e @ RunError::Connect { .. }) => return Err(remote(e.to_string())),
        Err(e @ RunError::Spawn { .. }) => return Err(remote(e.to_string())),
    };
    if out.code == EXIT_NOT_FOUND {
        return Err(remote(format!("sh, ip or {filter} is missing: {}", out.error_text())));
    }
    if out.code != 0 {
        return Err(remote(format!("the probe script failed (exit {}): {}", out.code, out.error_text())));
    }
    Ok(out.text())
}

/// The bridge's MAC and whether it is up, from its `ip -o link show` line.
pub fn parse_link(line: &str) -> (Option<MacAddr>, bool) {
    let up =
        line.split_once('<').and_then(|(_, r)| r.split_once('>')).is_some_and(|(f, _)| f.split(',').any(|x| x == "UP"));
    let mac = line.split_once("link/ether ").and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
    (mac, up)
}
