//! What became of one step of an apply: done, failed (with a typed error), or skipped.

use crate::host::hypervisor::HvError;

/// What became of one change.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    Done {
        /// Wall-clock time the step took, in seconds.
        seconds: f64,
    },
    Failed {
        error: StepError,
    },
    /// Not started: an earlier step failed, or apply was interrupted.
    Skipped {
        why: String,
    },
}

/// Why a step failed. Shown as its `Display` (the libvirt call and libvirt's message, or
/// the panic's) with [`StepError::hint`] beside it, in the terminal and in the results JSON
/// (`error`, `hint`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A call to the host failed; its kind says how ([`crate::host::hypervisor::HvErrorKind`]).
    #[error(transparent)]
    Host(#[from] HvError),
    /// The step panicked (a bug in topo); the panic's message. The other steps went on.
    #[error("internal error: {0}")]
    Panic(String),
}

impl StepError {
    /// What to do about it, when known.
    pub fn hint(&self) -> Option<&str> {
        match self {
            StepError::Host(e) => e.hint.as_deref(),
            StepError::Panic(_) => Some(
                "this is a bug in topo (please report it); the other steps were not affected, and `topo apply` \
                 again plans from what is on the host",
            ),
        }
    }
}
