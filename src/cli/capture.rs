//! `topo capture`: packets of a VM's NIC or of a lab network as a pcap stream on stdout
//! (`topo capture r1.eth1 | wireshark -k -i -`) or into a file (`-w FILE`), with a tcpdump
//! filter; Ctrl-C, `--count` or a closed pipe end it cleanly.

use std::io::IsTerminal;
use std::num::NonZeroU64;
use std::path::PathBuf;

use super::shown::Shown;
use super::{GlobalArgs, Outcome};
use crate::host::capture::{CaptureOptions, Ended, Filter, Sink};
use crate::lab::capture::CaptureTarget;
use crate::lab::names::HostName;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// What to capture on: VM (its eth0), VM.ethN (its NIC N, in the order of `nics:`),
    /// net:NETWORK (the network's bridge; NETWORK alone when no VM has that name)
    pub target: String,
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder); a
    /// word here that does not end in .yaml or .yml and is no file starts the filter
    pub file: Option<PathBuf>,
    /// A tcpdump filter expression (pcap-filter(7)), its words joined as tcpdump joins them:
    /// `icmp`, `arp or udp port 67` (after `--` when a word starts with `-`)
    pub filter: Vec<String>,
    /// The lab file, as a flag: every word after the target is then the filter
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file_flag: Option<PathBuf>,
    /// Write the packets to FILE (pcap) instead of standard output
    #[arg(short = 'w', value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after COUNT packets (tcpdump's -c: topo's -c is --connect)
    #[arg(long, value_name = "COUNT")]
    pub count: Option<NonZeroU64>,
    /// For a network of a lab across hosts: capture on its bridge on host HOST (default: the
    /// host that serves the network)
    #[arg(long, value_name = "HOST")]
    pub on: Option<HostName>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CaptureCliError {
    #[error("refusing to write binary pcap data to a terminal")]
    #[diagnostic(
        code(topo::capture::terminal),
        help(
            "write to a file with `-w FILE`, or pipe it: `topo capture ... | wireshark -k -i -`, `| tcpdump -n -r -`"
        )
    )]
    Terminal,
}

/// Whether `word` (the second positional argument) names the lab file rather than starting
/// the filter: it ends in `.yaml` or `.yml`, or it is a file that exists.
fn is_lab_file(word: &std::path::Path) -> bool {
    matches!(word.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) || word.is_file()
}

/// Finds the target's device, captures on it until stopped, and says how many packets were
/// captured on stderr (as tcpdump does).
pub fn run(global: &GlobalArgs, args: &CaptureArgs) -> miette::Result<Outcome> {
    let mut words = args.filter.clone();
    let positional = match &args.file {
        Some(f) if args.file_flag.is_some() || !is_lab_file(f) => {
            words.insert(0, f.to_string_lossy().into_owned());
            None
        }
        other => other.as_deref(),
    };
    let filter = Filter::new(&words)?;
    let sink = match &args.write {
        Some(p) if p.as_os_str() != "-" => Sink::File(p.clone()),
        _ => Sink::Stdout,
    };
    if sink == Sink::Stdout && std::io::stdout().is_terminal() {
        return Err(CaptureCliError::Terminal.into());
    }
    let file = super::lab_path(global, positional.or(args.file_flag.as_deref()))?;
    let lab = super::load_lab_unopened(&file)?;
    let target = CaptureTarget::parse(&args.target, &lab)?;
    target.host(&lab, args.on.as_ref())?;
    let session = super::connect_lab(global, &lab)?;
    let opts = CaptureOptions { filter, count: args.count };
    let shown = Shown::new(global, false, false);
    // A signal ends the capture (not "finishing the running steps"): no word of it here.
    super::interrupt::set_quiet(true);
    let ready = |p: &crate::session::CapturePoint| {
        let on = if lab.is_multi_host() { format!(" on host {}", p.host) } else { String::new() };
        let filter = opts.filter.as_ref().map(|f| format!(", filter `{}`", f.as_str())).unwrap_or_default();
        super::status(global, format!("Capturing on {} ({}){on}{filter} to {}", p.device, p.what, sink.describe()));
    };
    let req = crate::session::CaptureRequest { target: &target, on: args.on.as_ref(), opts: &opts, sink: &sink };
    let captured = session.capture(&lab, &req, &shown, &ready)?;
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let why = match captured.ended {
        Ended::Interrupted => "",
        Ended::Count => "",
        Ended::ReaderGone => " (the reader closed the pipe)",
        Ended::SourceEnded => " (the capture ended)",
    };
    super::status(global, format!("{} packet{} captured{why}", captured.packets, plural(captured.packets)));
    if let Some(d) = captured.dropped.filter(|d| *d > 0) {
        super::status(global, format!("{d} packet{} dropped by kernel", plural(d)));
    }
    Ok(Outcome::Ok)
}
