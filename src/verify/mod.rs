//! Proof after apply that every NIC holds an IPv4 address: an ARP reply from the NIC's own MAC
//! on its network's bridge. Leases only say where to look; they never count as proof. On a
//! network with `subnet6`, the NIC's SLAAC address is proven apart, by a Neighbor
//! Advertisement from its MAC ([`ndp`], [`run6`]; docs/addressing.md, section IPv6).
//!
//! - [`target`]: what is verified, one [`NicTarget`] per NIC, and where frames may go
//!   ([`HostAccess`]: never to a test or remote driver's bridge names);
//! - [`state`]: where a NIC stands, the evidence and the failure reasons;
//! - [`sources`]: leases, the clock, and libvirt's own word for remote hosts;
//! - [`run`]: the probe loop, pure apart from its three boundaries (a [`Prober`](crate::verify::prober::Prober),
//!   a [`LeaseSource`], a [`Clock`]), so every outcome is tested with fakes;
//! - [`report`]: what users see, the table and the versioned JSON.
//!
//! Docs: docs/verify.md, docs/verify-json.md.

pub mod arp;
pub mod arping;
pub mod inventory;
pub mod known_hosts;
pub mod ndisc6;
pub mod ndp;
pub mod prober;
pub mod ready;
pub mod report;
pub mod run;
pub mod run6;
pub mod script;
pub mod sources;
pub mod state;
pub mod status;
pub mod target;

#[cfg(test)]
mod tests;

pub use run::{VerifyOptions, verify};
pub use sources::{Clock, HypervisorLeases, LastLeases, LeaseSource, SystemClock, reported};
#[cfg(any(test, feature = "testing"))]
pub use sources::{FakeClock, FakeLeases};
pub use state::{Evidence, FailReason, NicOutcome, NicProgress, NicState, VerifyReport};
pub use target::{Family, HostAccess, NicTarget, nics_and_addresses, targets};

use crate::host::hypervisor::HvError;
use crate::verify::prober::ProbeError;

/// Verification could not run at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum VerifyError {
    #[error("ARP probe failed")]
    #[diagnostic(code(topo::verify::probe))]
    Probe(
        #[from]
        #[diagnostic_source]
        ProbeError,
    ),
    #[error("reading DHCP leases failed")]
    #[diagnostic(code(topo::verify::leases))]
    Leases(
        #[from]
        #[diagnostic_source]
        HvError,
    ),
}
