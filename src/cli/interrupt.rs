//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: one handler for the whole process, installed at start.
//!
//! All three mean "stop": SIGTERM is what `kill`, systemd and CI runners send, SIGHUP what a
//! closed terminal or SSH session sends; none of them should cut a libvirt call in half.
//! While a command is in a stoppable phase ([`graceful`]: apply's steps, verification), the
//! first signal only sets [`flag`]: apply starts no new step and lets running ones finish,
//! verification stops after its current probe; the command then reports what was left and
//! exits 1. A second signal exits at once with 130 (128 + SIGINT). Outside such a phase
//! (parsing, observing, planning: nothing to tidy) the first signal exits 130 at once, like
//! the default action.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);

/// The exit status of a command ended by a signal before it could tidy up.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Installs the handler (SIGINT, SIGTERM, SIGHUP through `ctrlc`'s `termination` feature).
/// A second call, or a failure to install, leaves the default actions: the process still ends.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if !GRACEFUL.load(Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            crate::errln!("\nInterrupted again: aborting.");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        if !QUIET.load(Ordering::SeqCst) {
            crate::errln!("\nInterrupted: finishing the running steps (Ctrl-C again to abort)...");
        }
    });
}

/// Says nothing on the first signal of a [`graceful`] phase (`on`): for a command whose
/// stop is its normal end (`topo capture`), which reports it itself.
pub fn set_quiet(on: bool) {
    QUIET.store(on, Ordering::SeqCst);
}

/// Set by the first signal during a [`graceful`] phase; loops check it between steps.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// Marks a stoppable phase until the guard is dropped.
pub fn graceful() -> Graceful {
    set_graceful(true);
    Graceful(())
}

/// Enters (`true`) or leaves (`false`) a stoppable phase.
pub fn set_graceful(on: bool) {
    GRACEFUL.store(on, Ordering::SeqCst);
}

/// See [`graceful`].
#[must_use = "the phase ends when this is dropped"]
pub struct Graceful(());

impl Drop for Graceful {
    fn drop(&mut self) {
        set_graceful(false);
    }
}
