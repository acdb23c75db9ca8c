//! The host a lab runs on, through two boundaries: the libvirt API calls topo makes
//! (`hypervisor`, with its libvirt XML in `xml`), and the facts and actions of the machine
//! that runs it (`machine`: bridges and taps, `tc` qdiscs, `kernel` features, routes, image
//! headers (`image`), file identities and VXLAN `tunnel`s, on this machine or over ssh through
//! a `runner`, and the programs it runs there, `tools`; packet `capture` on its devices); what it makes of both (`observed`, `chains`,
//! `labs`). [`Host`] is the pair, and the one place that joins what the two say:
//! [`Host::observe`], [`Host::set_netem`].

pub mod capture;
pub mod chains;
pub mod hypervisor;
pub mod image;
pub mod kernel;
pub mod labs;
pub mod machine;
pub mod observed;
pub mod runner;
pub mod tc;
pub mod tools;
pub mod tunnel;
pub mod xml;

use crate::host::hypervisor::{HvError, HvErrorKind, Hypervisor};
use crate::host::machine::Machine;
use crate::host::observed::{DomainState, Observed};
use crate::lab::impair::Netem;
use crate::lab::model::MacAddr;

/// A host as topo reaches it: its libvirt connection and, when topo can reach it, the
/// machine that runs it (this machine, for a local URI of a real driver:
/// [`hypervisor::libvirt::files_are_local`]). `machine` is `None` for another host and the
/// test driver: their bridges, taps, qdiscs, kernel and routes are then unknown, and netem
/// cannot be set.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    /// The libvirt connection.
    pub hv: &'a dyn Hypervisor,
    /// The machine that runs the host, when topo can reach it.
    pub machine: Option<&'a dyn Machine>,
}

impl std::fmt::Debug for Host<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("uri", &self.hv.uri()).field("machine", &self.machine.is_some()).finish()
    }
}

impl<'a> Host<'a> {
    /// A host reached through libvirt alone (another host, the test driver).
    pub fn libvirt(hv: &'a dyn Hypervisor) -> Self {
        Self { hv, machine: None }
    }

    /// What the host has: what libvirt shows ([`Hypervisor::observe_libvirt`]), each disk's
    /// backing chain and each file's identity where libvirt did not tell them (from the
    /// machine when it is reachable, else from libvirt's pools: [`chains::complete`]) and,
    /// when the machine is reachable, what it shows beside libvirt: where each running NIC's tap is
    /// plugged and its qdiscs (`ObservedDomain::links`: the taps libvirt names, one `tc -j
    /// qdisc show` of every device), its network devices, kernel features, routes and the
    /// MACs each active bridge holds as its own ([`machine::observe`]).
    ///
    /// # Errors
    /// A libvirt call fails, or the machine's kernel config is damaged.
    pub fn observe(&self) -> Result<Observed, HvError> {
        let mut out = self.hv.observe_libvirt()?;
        chains::complete(self.hv, self.machine, &mut out);
        let Some(m) = self.machine else { return Ok(out) };
        // Every device's qdiscs in one read; `None` when tc cannot be run or read (then
        // nothing is known of netem).
        let qdiscs = m.qdiscs().ok();
        for d in out.domains.values_mut().filter(|d| d.state == DomainState::Running) {
            d.links = m.tap_links(&d.taps, qdiscs.as_ref());
        }
        let wire_taps: Vec<String> = out
            .domains
            .values()
            .filter(|d| d.state == DomainState::Running)
            .flat_map(|d| d.interfaces.iter().filter_map(|i| i.ethernet.clone()))
            .filter(|t| crate::lab::wire::is_wire_tap(t))
            .collect();
        if !wire_taps.is_empty() {
            out.wire_redirects = m.wire_redirects(&wire_taps).unwrap_or_default();
        }
        machine::observe(m, &mut out).map_err(|e| HvError {
            op: "read the kernel config".into(),
            object: self.hv.uri(),
            message: e.to_string(),
            kind: HvErrorKind::Other,
            hint: None,
        })?;
        Ok(out)
    }

    /// Adds what the machine shows of VXLAN tunnels to `out`: every VXLAN device
    /// (`Observed::tunnels`) and the machine's own IPv4 addresses (`Observed::host_addresses`).
    /// Left `None` when the machine is not reachable or cannot be read (the planner then
    /// refuses a lab that needs a tunnel here). Only a lab that spans hosts asks for them.
    pub fn observe_tunnels(&self, out: &mut Observed) {
        let Some(m) = self.machine else { return };
        out.tunnels = m.tunnels().ok().map(|ts| ts.into_iter().map(|t| (t.device.clone(), t)).collect());
        out.host_addresses = m.addresses().map(|a| {
            a.into_iter()
                .filter_map(|(ip, at)| match ip {
                    std::net::IpAddr::V4(v4) => Some((v4, at)),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect()
        });
    }

    /// Joins taps `a` and `b` into a wire ([`Machine::join_taps`]).
    ///
    /// # Errors
    /// `Unsupported` when the machine is not reachable; `Other` when a command fails.
    pub fn join_taps(&self, a: &str, b: &str) -> Result<(), HvError> {
        let Some(m) = self.machine else {
            return Err(HvError {
                op: "join taps".into(),
                object: format!("{a} and {b}"),
                message: "topo cannot reach this host's machine to join a wire's taps".into(),
                kind: HvErrorKind::Unsupported,
                hint: Some("run topo on the host, or reach it over ssh (a qemu+ssh:// URI)".into()),
            });
        };
        m.join_taps(a, b).map_err(|e| HvError {
            op: "join taps".into(),
            object: format!("{a} and {b}"),
            message: e.to_string(),
            kind: HvErrorKind::Other,
            hint: e.hint(),
        })
    }

    /// Makes tunnel `spec` so on the machine ([`Machine::ensure_tunnel`]).
    ///
    /// # Errors
    /// `Unsupported` when the machine is not reachable; `Other` when a command fails.
    pub fn ensure_tunnel(&self, spec: &tunnel::TunnelSpec) -> Result<(), HvError> {
        self.tunnel_op("ensure tunnel", &spec.device, |m| m.ensure_tunnel(spec))
    }

    /// Deletes tunnel device `device` ([`Machine::delete_tunnel`]; gone already is done).
    ///
    /// # Errors
    /// As [`Host::ensure_tunnel`].
    pub fn delete_tunnel(&self, device: &str) -> Result<(), HvError> {
        self.tunnel_op("delete tunnel", device, |m| m.delete_tunnel(device))
    }

    fn tunnel_op(
        &self,
        op: &str,
        device: &str,
        f: impl FnOnce(&dyn Machine) -> Result<(), runner::MachineError>,
    ) -> Result<(), HvError> {
        let Some(m) = self.machine else {
            return Err(HvError {
                op: op.into(),
                object: device.into(),
                message: format!("topo cannot reach the machine of {} to change its network devices", self.hv.uri()),
                kind: HvErrorKind::Unsupported,
                hint: Some("reach the host over ssh (a qemu+ssh:// URI) or run topo on it".into()),
            });
        };
        f(m).map_err(|e| HvError {
            op: op.into(),
            object: device.into(),
            hint: e.hint().map(str::to_owned),
            message: e.to_string(),
            kind: HvErrorKind::Other,
        })
    }

    /// Gives the tap of running domain `domain`'s NIC `mac` the netem settings `netem`
    /// (`None`, or settings that do nothing, remove topo's netem): libvirt names the tap
    /// ([`Hypervisor::domain_taps`]) and the machine sets its qdiscs ([`Machine::set_netem`]).
    ///
    /// # Errors
    /// `Unsupported` when the machine is not reachable (the tap is on another machine);
    /// `NotActive` when the domain is not running; `NotFound` when it has no NIC `mac`;
    /// `Other` when `tc` fails.
    pub fn set_netem(&self, domain: &str, mac: MacAddr, netem: Option<&Netem>) -> Result<(), HvError> {
        const OP: &str = "set netem";
        let fail = |kind, message: String, hint: Option<&str>| HvError {
            op: OP.into(),
            object: domain.into(),
            message,
            kind,
            hint: hint.map(str::to_owned),
        };
        let Some(machine) = self.machine else {
            return Err(fail(
                HvErrorKind::Unsupported,
                format!("netem needs the VM's tap on this machine, and {} is not a local host", self.hv.uri()),
                Some("run topo on the libvirt host itself (qemu:///system)"),
            ));
        };
        let taps = self.hv.domain_taps(domain).map_err(|e| HvError { op: OP.into(), ..e })?;
        let Some((_, tap)) = taps.iter().find(|(m, _)| *m == mac) else {
            return Err(fail(HvErrorKind::NotFound, format!("no running NIC with MAC {mac}"), None));
        };
        machine.set_netem(tap, netem).map_err(|e| HvError {
            op: OP.into(),
            object: format!("{domain} ({tap})"),
            hint: e.hint(),
            message: e.to_string(),
            kind: HvErrorKind::Other,
        })
    }
}
