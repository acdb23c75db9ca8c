//! Where a NIC stands during and after verification: its [`NicState`], the [`Evidence`] that
//! proved it, the [`FailReason`] when it failed, and the [`VerifyReport`] of all NICs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::target::NicTarget;
use crate::lab::model::{HostName, MacAddr, VmName};

/// What proved an address: a reply from this MAC on this bridge: an ARP reply (IPv4) or,
/// with `ndp`, a Neighbor Advertisement (IPv6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub mac: MacAddr,
    pub bridge: String,
    /// The reply was a Neighbor Advertisement (IPv6), not an ARP reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ndp: bool,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.ndp { "neighbour advertisement" } else { "arp reply" };
        write!(f, "{what} from {} on {}", self.mac, self.bridge)
    }
}

/// Why a NIC could not be verified; each says what to look at ([`FailReason::help`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FailReason {
    #[error(
        "the network has no DHCP and the NIC no reserved address, and a sweep of the subnet \
         found no address answering from this MAC"
    )]
    NoDhcpNoReservation,
    #[error("{ip} (its lease or reservation) got no ARP reply from this NIC")]
    LeasedButSilent { ip: Ipv4Addr },
    #[error("no DHCP lease for this MAC, and no address in the subnet answered from it")]
    NoLease,
    #[error("{ip} is answered by {other_mac}, not by this NIC")]
    Conflict { ip: Ipv4Addr, other_mac: MacAddr },
    /// This NIC and another machine both answer for the address, in the same probe.
    #[error("{ip} is answered by this NIC ({mac}) and also by {other_mac}: a duplicate address")]
    Duplicate { ip: Ipv4Addr, mac: MacAddr, other_mac: MacAddr },
    /// Another running domain has an interface with this NIC's MAC on the same network (a
    /// copy of the VM started beside it): both answer ARP with that MAC, so no reply proves
    /// this NIC. `domains`: this VM's domain first, then the others.
    #[error(
        "MAC {mac} is on network {network} in {} running domains: {}; an ARP reply from it cannot tell \
         which one answered, so nothing proves this NIC",
        domains.len(),
        domains.join(" and ")
    )]
    DuplicateMac { mac: MacAddr, network: String, domains: Vec<String> },
    /// Found by a subnet sweep, but a sibling NIC of the same VM without a lease or
    /// reservation of its own answers for the same address (Linux ARP flux).
    #[error(
        "{ip} answers from this NIC's MAC but also from {sibling} of the same VM, which has no \
         lease or reservation of its own: which of the two holds it cannot be told by ARP"
    )]
    Ambiguous { ip: Ipv4Addr, sibling: String },
    #[error("answers at {answered}, not at its reserved address {reserved}")]
    NotReserved { reserved: Ipv4Addr, answered: Ipv4Addr },
    /// No DHCP, no reservation and no subnet: nothing topo may ask for.
    #[error(
        "the network has no IPv4 subnet on the host and no DHCP (a bridge to a LAN): proving \
         this NIC would mean sweeping a network topo does not know"
    )]
    NoSubnet,
    #[error("the VM is not running")]
    VmNotRunning,
    #[error("cannot probe the network's bridge: {detail}")]
    NoBridge { detail: String },
    /// libvirt reports the network active with this bridge, and no interface of that name
    /// exists where topo runs: topo is in another network namespace than libvirtd.
    #[error(
        "libvirt reports the network active on bridge {bridge}, but there is no interface {bridge} in \
         topo's network namespace"
    )]
    BridgeNotVisible { bridge: String },
    #[error("verification was interrupted before this NIC was proven")]
    Interrupted,
    /// A wire end whose tap the host does not join to its peer's (`links:`): the tap sends
    /// its guest's frames to `now` (`*`: a device since gone; `nothing`: no redirect), not
    /// to `peer`, so the wire carries nothing whatever the guest holds.
    #[error("the wire is cut on the host: this end's tap sends its frames to {now}, not to the peer's tap {peer}")]
    WireCut { now: String, peer: String },
    /// IPv6: no Neighbor Advertisement for the NIC's SLAAC address came from its MAC.
    #[error("{ip} (its SLAAC address) got no neighbour advertisement from this NIC")]
    NoAdvert { ip: Ipv6Addr },
    /// IPv6: another MAC advertises the NIC's SLAAC address (`also`: this NIC does too, a
    /// duplicate address).
    #[error(
        "{ip} is advertised by {other_mac}{}",
        if *also { format!(" and also by this NIC ({mac}): a duplicate address") } else { format!(", not by this NIC ({mac})") }
    )]
    Conflict6 { ip: Ipv6Addr, mac: MacAddr, other_mac: MacAddr, also: bool },
}

impl FailReason {
    /// What the user can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            FailReason::NoDhcpNoReservation => {
                "give the NIC an `ip` (a DHCP reservation) and DHCP on its network, or configure \
                 a static address in the guest; `verify: none` skips the check"
            }
            FailReason::LeasedButSilent { .. } => {
                "the guest's interface is down or has no address: check that the guest brings up \
                 this NIC (its name may differ, e.g. ens3 instead of eth0); a lease may also be \
                 left over from an earlier boot"
            }
            FailReason::NoLease => {
                "no DHCP client asked for an address on this NIC: check the guest's network \
                 configuration for this interface, or give it more time (--timeout)"
            }
            FailReason::Conflict { .. } => {
                "another machine holds this address (a duplicate static address, or a stale lease \
                 handed on): stop the other machine or change the NIC's `ip`"
            }
            FailReason::Duplicate { .. } => {
                "two machines hold this address: find the one with the other MAC (a guest with a \
                 stale static address is the usual cause) and stop it or change its address"
            }
            FailReason::DuplicateMac { .. } => {
                "a copy of the VM (virsh dumpxml | virsh define under another name) keeps its MAC: \
                 stop the other domain or give its NIC another MAC (virsh edit); topo never \
                 changes a domain the lab does not own"
            }
            FailReason::Ambiguous { .. } => {
                "Linux answers ARP for all its addresses on every interface: give the NICs \
                 reserved addresses (`ip`) on a DHCP network, set `net.ipv4.conf.all.arp_ignore=1` \
                 in the guest, or `verify: none` on the NIC that has no address"
            }
            FailReason::NotReserved { .. } => {
                "the reservation changed while the VM ran: the guest keeps its older lease until \
                 it renews it; restart the VM (or renew DHCP in the guest)"
            }
            FailReason::NoSubnet => {
                "set `verify: none` on the NIC, or declare the LAN's subnet on the network so \
                 topo knows which addresses it may ask for"
            }
            FailReason::VmNotRunning => "start it with `topo apply`, or look at its console log",
            FailReason::NoAdvert { .. } => {
                "the guest takes its IPv6 address by SLAAC from the network's router advertisements: \
                 check that its interface is up with IPv6 on, `accept_ra` on (1, the default when not \
                 forwarding) and `addr_gen_mode` 0 (EUI-64; `stable-privacy` gives another address); \
                 a tentative address (duplicate address detection) answers a second or so later; or \
                 give it more time (--timeout); `verify: none` skips the check"
            }
            FailReason::Conflict6 { .. } => {
                "another machine holds this IPv6 address (a static address, or a MAC cloned into \
                 another guest): find the one with the other MAC and stop it or change its address"
            }
            FailReason::NoBridge { .. } => {
                "ARP evidence needs the network's bridge on this host, up: is the network \
                 active (`virsh net-start`)? `verify: none` skips the check"
            }
            FailReason::BridgeNotVisible { .. } => {
                "topo must run in the network namespace of libvirtd, where the bridge is (e.g. \
                 `ip netns exec NS topo ...`); `verify: none` skips the check"
            }
            FailReason::Interrupted => "run `topo verify` again to finish the check",
            FailReason::WireCut { .. } => {
                "a VM of the wire was restarted outside topo (its tap was made anew), or the host's                  tc filters were changed: run `topo apply`, which joins the taps again"
            }
        }
    }
}

/// Where a NIC stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NicState {
    /// `verify: none`.
    Skipped,
    /// A wire end whose guest topo does not configure (no cloud-init): not probed, not a
    /// failure.
    Unproven,
    /// The VM has `state: stopped` in the lab file: not probed, not a failure.
    Stopped,
    /// No candidate address yet (no lease, no reservation).
    WaitingForLease,
    /// A candidate address (lease or reservation) is known; no reply from this MAC yet.
    LeasedNoReply {
        ip: Ipv4Addr,
    },
    /// IPv6: the NIC's SLAAC address is known; no advertisement from this MAC yet.
    Soliciting {
        ip: Ipv6Addr,
    },
    Verified {
        /// An IPv4 address (ARP) or an IPv6 one (NDP), as the target's family.
        ip: IpAddr,
        evidence: Evidence,
        /// Seconds from the start of verification.
        seconds: f64,
        /// The round-trip time of the ARP request and reply that proved it, in
        /// milliseconds; `None` where the prober does not measure it.
        rtt_ms: Option<f64>,
    },
    Failed {
        reason: FailReason,
    },
    /// Remote hosts only: libvirt reports this address (a DHCP lease, or its ARP or guest
    /// agent address source), but topo could not probe the bridge: weaker evidence.
    Reported {
        ip: Ipv4Addr,
        source: String,
    },
}

impl NicState {
    /// Settled: no further probing changes it.
    pub fn is_final(&self) -> bool {
        self.is_ok() || matches!(self, NicState::Failed { .. })
    }
    /// Verified, skipped, stopped by the lab file, or (remote) reported.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            NicState::Skipped
                | NicState::Unproven
                | NicState::Stopped
                | NicState::Verified { .. }
                | NicState::Reported { .. }
        )
    }
}

impl fmt::Display for NicState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicState::Skipped => f.write_str("not verified (verify: none)"),
            NicState::Unproven => {
                f.write_str("unproven (a wire end topo does not configure: the VM has no cloud-init)")
            }
            NicState::Stopped => f.write_str("not verified (the VM is stopped: state: stopped)"),
            NicState::WaitingForLease => f.write_str("waiting for a DHCP lease"),
            NicState::LeasedNoReply { ip } => write!(f, "{ip}: no ARP reply yet"),
            NicState::Soliciting { ip } => write!(f, "{ip}: no neighbour advertisement yet"),
            NicState::Verified { ip, evidence, seconds, rtt_ms } => match rtt_ms {
                Some(ms) => write!(f, "{ip} verified ({evidence} in {ms:.1} ms, after {seconds:.1} s)"),
                None => write!(f, "{ip} verified ({evidence}, after {seconds:.1} s)"),
            },
            NicState::Failed { reason } => write!(f, "failed: {reason}"),
            NicState::Reported { ip, source } => write!(f, "{ip} reported by {source} (not proven by ARP)"),
        }
    }
}

/// A NIC's state changed; passed to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct NicProgress<'a> {
    /// Position of the NIC in the target list.
    pub index: usize,
    pub target: &'a NicTarget,
    pub state: &'a NicState,
}

/// The result of verification: every target with its final state, in input order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    pub nics: Vec<NicOutcome>,
    /// Each VM with `ready:` conditions, after its NICs (`super::ready`); empty when no VM
    /// has any or they were not waited for.
    pub ready: Vec<VmReadiness>,
}

/// One NIC and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NicOutcome {
    pub target: NicTarget,
    pub state: NicState,
}

impl VerifyReport {
    /// Every NIC verified or skipped.
    pub fn all_ok(&self) -> bool {
        self.nics.iter().all(|n| n.state.is_ok())
    }
    /// The NICs that failed, in order.
    pub fn failed(&self) -> impl Iterator<Item = &NicOutcome> {
        self.nics.iter().filter(|n| !n.state.is_ok())
    }
}

/// The state of a NIC that is settled before anything is asked, on a local or a remote host
/// alike: `verify: none`, `state: stopped`, a VM that does not run, and a MAC that another
/// running domain has on the same network (never probed or reported: a reply or a lease for
/// that MAC may be the other domain's). `None` when the NIC needs evidence.
pub(super) fn settled_at_once(t: &NicTarget) -> Option<NicState> {
    Some(if !t.verify {
        NicState::Skipped
    } else if t.stopped {
        NicState::Stopped
    } else if let Some((now, peer)) = &t.cut {
        NicState::Failed { reason: FailReason::WireCut { now: now.clone(), peer: peer.clone() } }
    } else if t.unproven {
        NicState::Unproven
    } else if !t.running {
        NicState::Failed { reason: FailReason::VmNotRunning }
    } else if !t.same_mac.is_empty() {
        let domains = std::iter::once(t.domain.clone()).chain(t.same_mac.iter().cloned()).collect();
        NicState::Failed {
            reason: FailReason::DuplicateMac { mac: t.mac, network: t.libvirt_network.clone(), domains },
        }
    } else {
        return None;
    })
}

/// How one condition ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionOutcome {
    /// `ssh`, `cloud-init`, `tcp:80`, `console:"login:"`.
    pub condition: String,
    pub met: bool,
    /// When it was first seen to hold, in seconds from the VM's start (from the start of the
    /// verification when topo did not start the VM).
    pub seconds: Option<f64>,
    /// For one not met: what was seen last (an error, the last console line).
    pub last_seen: Option<String>,
}

/// How a VM's readiness ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyState {
    /// Every condition held.
    Ready,
    /// The bound passed (or verification was interrupted) with a condition not met.
    NotReady,
    /// topo cannot check readiness on the VM's host (a remote URI without ssh, libvirt's
    /// test driver): each condition says why; not a failure, like a NIC only reported.
    Unchecked,
}

/// One VM's readiness.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmReadiness {
    pub vm: VmName,
    /// Its host, in a lab across hosts; absent in the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    pub state: ReadyState,
    /// Time to ready: when its last condition held, in seconds as [`ConditionOutcome::seconds`].
    pub seconds: Option<f64>,
    pub conditions: Vec<ConditionOutcome>,
}

impl VmReadiness {
    /// The first condition not met, for the failure line.
    pub fn unmet(&self) -> Option<&ConditionOutcome> {
        self.conditions.iter().find(|c| !c.met)
    }
}
