//! `topo capture`: finds the device a capture target is on (a VM NIC's tap, from the running
//! domain's live XML; a network's bridge, as libvirt reports it) and the host whose machine
//! has it, then captures there ([`crate::host::capture`]).

use std::sync::atomic::AtomicBool;

use super::{Session, SessionError, Stoppable, Ui};
use crate::host::Host;
use crate::host::capture::{CaptureError, CaptureOptions, Captured, Sink, capture_local, capture_remote};
use crate::host::hypervisor::HvErrorKind;
use crate::lab::capture::CaptureTarget;
use crate::lab::model::Lab;
use crate::lab::names::HostName;

/// Where a capture listens: a device on one host's machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturePoint {
    /// The host whose machine has the device ([`HostName::DEFAULT`] in a lab on one host).
    pub host: HostName,
    /// The tap or bridge.
    pub device: String,
    /// What it is, for the status line: `r1 eth1 (52:54:00:..)`, `network lan`.
    pub what: String,
}

/// What `topo capture` asks for.
#[derive(Clone, Copy, Debug)]
pub struct CaptureRequest<'a> {
    /// Where to listen.
    pub target: &'a CaptureTarget,
    /// For a network of a lab across hosts: the host whose bridge (default: the serving host).
    pub on: Option<&'a HostName>,
    /// Filter and count.
    pub opts: &'a CaptureOptions,
    /// Where the pcap stream goes.
    pub sink: &'a Sink,
}

/// Why a capture target has no device to capture on.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CaptureTargetError {
    #[error("VM {vm} is not running: its NICs have no taps to capture on")]
    #[diagnostic(code(topo::capture::vm_not_running), help("start it with `topo apply`, or capture on its network"))]
    VmNotRunning { vm: String },
    #[error("VM {vm} is not on host {host} (domain {domain} does not exist)")]
    #[diagnostic(code(topo::capture::vm_missing), help("create it with `topo apply`"))]
    VmMissing { vm: String, domain: String, host: String },
    #[error("{vm} {nic} ({mac}) is not plugged in the running VM")]
    #[diagnostic(code(topo::capture::nic_unplugged), help("`topo apply` plugs it in again; `topo plan` shows why"))]
    NicUnplugged { vm: String, nic: String, mac: String },
    #[error("network {network} is not active on host {host} (libvirt network {libvirt})")]
    #[diagnostic(code(topo::capture::network_inactive), help("create or start it with `topo apply`"))]
    NetworkInactive { network: String, libvirt: String, host: String },
    #[error("topo cannot reach the machine of {uri} to capture on {device}")]
    #[diagnostic(
        code(topo::capture::no_machine),
        help("run topo on the libvirt host itself, or reach it over ssh (a qemu+ssh:// URI)")
    )]
    NoMachine { uri: String, device: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Target(#[from] crate::lab::capture::TargetError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Capture(#[from] CaptureError),
}

impl Session<'_> {
    /// The host and device of `target` in `lab`, on the host [`CaptureTarget::host`] chooses
    /// (`on` for a network): a NIC's tap (from the running domain's live XML,
    /// [`crate::host::hypervisor::Hypervisor::domain_taps`]), a network's bridge (libvirt's
    /// report of the active network).
    ///
    /// # Errors
    /// [`CaptureTargetError`]: the VM or NIC is not running or plugged, the network is not
    /// active or not on that host, the host cannot be reached.
    pub fn capture_point(
        &self,
        lab: &Lab,
        target: &CaptureTarget,
        on: Option<&HostName>,
    ) -> Result<CapturePoint, CaptureTargetError> {
        let host_name = target.host(lab, on)?;
        let host = self.host_of(lab, &host_name)?;
        match target {
            CaptureTarget::Nic { .. } | CaptureTarget::Wire(_) => {
                // Invariant: a parsed target names a VM of the lab and one of its NICs (its
                // `nics`, then its wire ends), or a wire of the lab.
                let (vm, index, what) = match target {
                    CaptureTarget::Nic { vm, nic } => (&lab.vms[vm], *nic, None),
                    CaptureTarget::Wire(w) => {
                        let end = &lab.wires[w].ends[0];
                        (&lab.vms[&end.vm], end.index, Some(format!("wire {w}")))
                    }
                    CaptureTarget::Network(_) => unreachable!("matched above"),
                };
                let mac = match vm.nics.get(index) {
                    Some(n) => n.mac,
                    None => lab
                        .wire_ends(&vm.name)
                        .into_iter()
                        .map(|(w, k)| &w.ends[k])
                        .find(|e| e.index == index)
                        .map(|e| e.mac)
                        .unwrap_or_else(|| unreachable!("a parsed target names one of the VM's NICs")),
                };
                let label = crate::lab::model::nic_label(index);
                let domain = vm.libvirt_name.as_str();
                let taps = host.hv.domain_taps(domain).map_err(|e| match e.kind {
                    HvErrorKind::NotActive => CaptureTargetError::VmNotRunning { vm: vm.name.to_string() },
                    HvErrorKind::NotFound => CaptureTargetError::VmMissing {
                        vm: vm.name.to_string(),
                        domain: domain.to_owned(),
                        host: host.hv.uri(),
                    },
                    _ => CaptureTargetError::Session(e.into()),
                })?;
                let Some((_, tap)) = taps.into_iter().find(|(m, _)| *m == mac) else {
                    return Err(CaptureTargetError::NicUnplugged {
                        vm: vm.name.to_string(),
                        nic: label,
                        mac: mac.to_string(),
                    });
                };
                Ok(CapturePoint {
                    host: host_name,
                    device: tap,
                    what: what.unwrap_or_else(|| format!("{} {label} ({mac})", vm.name)),
                })
            }
            CaptureTarget::Network(name) => {
                // Invariant: a parsed target names a network of the lab.
                let net = &lab.networks[name];
                let observed = host.hv.observe_libvirt().map_err(|e| CaptureTargetError::Session(e.into()))?;
                let libvirt = net.libvirt_name.as_str();
                let bridge = observed
                    .networks
                    .get(libvirt)
                    .filter(|n| n.active)
                    .and_then(|n| n.live_bridge.clone().or_else(|| n.bridge.clone()));
                let Some(device) = bridge else {
                    return Err(CaptureTargetError::NetworkInactive {
                        network: name.to_string(),
                        libvirt: libvirt.to_owned(),
                        host: if lab.is_multi_host() { host_name.to_string() } else { host.hv.uri() },
                    });
                };
                Ok(CapturePoint { host: host_name, device, what: format!("network {name}") })
            }
        }
    }

    /// The connection to host `name` of `lab` (the default host for a lab on one host).
    fn host_of(&self, lab: &Lab, name: &HostName) -> Result<Host<'_>, SessionError> {
        if !lab.is_multi_host() {
            return Ok(self.host());
        }
        if let Some(h) = self.hosts.get(name).and_then(super::Conn::host) {
            return Ok(h);
        }
        // `reach` says why (unreachable since the session opened, or not a host of it).
        Err(self.reach(name).err().unwrap_or_else(|| SessionError::UnknownHost {
            host: name.to_string(),
            known: self.host_names().iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }))
    }

    /// `topo capture`: captures on `req.target` of `lab` (on host `req.on` for a network: see
    /// [`Session::capture_point`]) into `req.sink` until a signal (through `ui`'s stop
    /// flag), `req.opts.count` packets, or the reader of the output is gone. `ready` is told
    /// where the capture listens before it starts. On this machine libpcap captures in this
    /// process; on a host reached over ssh, `tcpdump` captures there.
    ///
    /// # Errors
    /// As [`Session::capture_point`], or the capture cannot start or go on ([`CaptureError`]).
    pub fn capture(
        &self,
        lab: &Lab,
        req: &CaptureRequest<'_>,
        ui: &dyn Ui,
        ready: &dyn Fn(&CapturePoint),
    ) -> Result<Captured, CaptureTargetError> {
        let CaptureRequest { target, on, opts, sink } = *req;
        let point = self.capture_point(lab, target, on)?;
        let host = self.host_of(lab, &point.host)?;
        let Some(machine) = host.machine else {
            return Err(CaptureTargetError::NoMachine { uri: host.hv.uri(), device: point.device });
        };
        ready(&point);
        let _stoppable = Stoppable::enter(ui);
        let cancel: &AtomicBool = ui.cancel();
        Ok(match machine.remote_runner() {
            Some(runner) => capture_remote(runner.as_ref(), &point.device, opts, sink, cancel)?,
            None => capture_local(&point.device, opts, sink, cancel)?,
        })
    }
}
