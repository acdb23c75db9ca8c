//! The queueing disciplines of the VMs' taps on this machine, for netem: the `TapShaper`
//! trait and `Tc`, which runs iproute2's `tc` (JSON output). Only for local URIs: a tap is
//! a network device of the machine (and network namespace) where QEMU runs.

use std::process::Command;

use crate::lab::impair::{TapQdiscs, parse_tc_qdiscs, parse_tc_qdiscs_by_dev};

/// Running `tc` failed, or its output could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tc {args}: {message}")]
pub struct TcError {
    /// The arguments given to `tc`.
    pub args: String,
    /// tc's message (its stderr), or why it could not run.
    pub message: String,
    /// How it failed.
    pub cause: TcCause,
}

/// How running `tc` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcCause {
    /// `tc` could not be started (`NotFound`: not installed).
    Spawn(std::io::ErrorKind),
    /// `tc` ran and exited with an error (its stderr is the message).
    Exit,
    /// `tc`'s output could not be read.
    Output,
}

impl TcError {
    /// What to do about it: install iproute2 when `tc` is missing; a kernel without netem
    /// needs the `sch_netem` module (tc says "Specified qdisc kind is unknown" on its stderr,
    /// the kernel's EOPNOTSUPP/ENOENT relayed as text: advice only, no decision reads it).
    pub fn hint(&self) -> Option<String> {
        if self.cause == TcCause::Exit && self.message.contains("kind is unknown") {
            Some(
                "the host kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem): `modprobe sch_netem`, \
                 or remove `delay`/`jitter`/`loss` from the lab file"
                    .into(),
            )
        } else if self.cause == TcCause::Spawn(std::io::ErrorKind::NotFound) {
            Some("install iproute2 (it provides `tc`)".into())
        } else {
            None
        }
    }
}

/// The two things topo does with a tap's qdiscs.
pub trait TapShaper: Send + Sync {
    /// The egress qdiscs of `tap` (`tc -j qdisc show dev TAP`).
    fn show(&self, tap: &str) -> Result<TapQdiscs, TcError>;
    /// The egress qdiscs of every device, in one call (`tc -j qdisc show`): what `observe`
    /// reads, so a lab of many VMs costs one process, not one per tap.
    fn show_all(&self) -> Result<std::collections::BTreeMap<String, TapQdiscs>, TcError>;
    /// Runs `tc ARGS` (from [`crate::lab::impair::tc_commands`]).
    fn run(&self, args: &[String]) -> Result<(), TcError>;
}

/// The real `TapShaper`: iproute2's `tc` from `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tc;

fn tc(args: &[String]) -> Result<String, TcError> {
    let err = |message: String, cause| TcError { args: args.join(" "), message, cause };
    let start = std::time::Instant::now();
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(|e| err(format!("cannot spawn tc: {e}"), TcCause::Spawn(e.kind())))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(args = args.join(" "), ms = format_args!("{ms:.3}"), status = out.status.code(), "tc");
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string(), TcCause::Exit));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TapShaper for Tc {
    fn show(&self, tap: &str) -> Result<TapQdiscs, TcError> {
        let args: Vec<String> = ["-j", "qdisc", "show", "dev", tap].iter().map(|s| s.to_string()).collect();
        let text = tc(&args)?;
        parse_tc_qdiscs(&text).map_err(|e| TcError {
            args: args.join(" "),
            message: e.to_string(),
            cause: TcCause::Output,
        })
    }

    fn show_all(&self) -> Result<std::collections::BTreeMap<String, TapQdiscs>, TcError> {
        let args: Vec<String> = ["-j", "qdisc", "show"].iter().map(|s| s.to_string()).collect();
        let text = tc(&args)?;
        parse_tc_qdiscs_by_dev(&text).map_err(|e| TcError {
            args: args.join(" "),
            message: e.to_string(),
            cause: TcCause::Output,
        })
    }

    fn run(&self, args: &[String]) -> Result<(), TcError> {
        tc(args).map(|_| ())
    }
}
