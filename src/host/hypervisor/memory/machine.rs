//! `MemoryMachine`: the machine double of a [`MemoryHypervisor`](super::MemoryHypervisor),
//! over the same state. It shows what sysfs and `tc` would show of the libvirt double's
//! host: each running domain's taps (named as the libvirt double's live XML names them) on
//! their networks' bridges, or on none after the network was stopped under them; the qdiscs
//! libvirt made with each tap, changed by netem; and, on a local host
//! (`with_host_interfaces`), its network devices, kernel, routes and bridge MACs.
//!
//! Its one change, `set_netem`, is logged and counted with the libvirt double's calls, so
//! `fail_on("set_netem", TAP, ..)` and the fault sweeps (`arm`) reach it too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{State, fresh_tap, lock};
use crate::host::kernel::{KernelError, KernelSupport};
use crate::host::machine::Machine;
use crate::host::observed::{DomainState, HostRoute, NicLink, ObservedInterface};
use crate::host::tc::{TcCause, TcError};
use crate::lab::impair::{Netem, NetemParent, TapQdiscs};
use crate::lab::model::MacAddr;

/// The machine of a [`MemoryHypervisor`](super::MemoryHypervisor) (`Host::from(&hv)`).
#[derive(Debug)]
pub struct MemoryMachine {
    state: Arc<Mutex<State>>,
}

impl MemoryMachine {
    /// The machine over the libvirt double's `state`.
    pub(super) fn over(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl State {
    /// The bridges of active networks: the devices libvirt made on the machine.
    fn active_bridges(&self) -> BTreeSet<String> {
        self.networks.values().filter(|n| n.active).filter_map(|n| n.live_bridge.clone().or(n.bridge.clone())).collect()
    }

    /// The running domain, MAC and NIC whose tap is `tap`.
    fn tap(&self, tap: &str) -> Option<(String, MacAddr, &ObservedInterface)> {
        self.domains.values().filter(|d| d.obs.state == DomainState::Running).find_map(|d| {
            let (mac, _) = State::taps_of(d).into_iter().find(|(_, t)| t == tap)?;
            let nic = d.obs.interfaces.iter().find(|i| i.mac == Some(mac))?;
            Some((d.obs.name.clone(), mac, nic))
        })
    }

    /// The tap's egress qdiscs as the kernel keeps them.
    fn qdiscs_of(&self, domain: &str, mac: MacAddr, nic: &ObservedInterface) -> TapQdiscs {
        self.taps.get(&(domain.to_owned(), mac)).cloned().unwrap_or_else(|| fresh_tap(nic))
    }
}

impl Machine for MemoryMachine {
    /// On a local host: its own interfaces and the active networks' bridges.
    fn interfaces(&self) -> Option<BTreeSet<String>> {
        let s = self.lock();
        let own = s.host_interfaces.as_ref()?;
        Some(own.iter().cloned().chain(s.active_bridges()).collect())
    }

    /// Each tap on its network's bridge, unless the network was stopped under it since (then
    /// on none until it is plugged again, as libvirt leaves it) or is not active. A tap that
    /// is no running domain's makes the answer unknown, as a device that is not here does.
    fn tap_links(
        &self,
        taps: &[(MacAddr, String)],
        qdiscs: Option<&BTreeMap<String, TapQdiscs>>,
    ) -> Option<Vec<NicLink>> {
        let s = self.lock();
        taps.iter()
            .map(|(mac, tap)| {
                let (domain, _, nic) = s.tap(tap)?;
                let bridge = if s.cut.contains(&(domain, *mac)) {
                    None
                } else {
                    nic.network
                        .as_deref()
                        .and_then(|n| s.networks.get(n))
                        .filter(|n| n.active)
                        .and_then(|n| n.live_bridge.clone().or_else(|| n.bridge.clone()))
                };
                let qdiscs = qdiscs.and_then(|q| q.get(tap).cloned());
                Some(NicLink { mac: *mac, tap: tap.clone(), bridge, qdiscs })
            })
            .collect()
    }

    /// On a local host, what `with_bridge_macs` gave an active network's bridge.
    fn bridge_macs(&self, bridge: &str) -> Option<BTreeSet<MacAddr>> {
        let s = self.lock();
        s.host_interfaces.as_ref()?;
        s.active_bridges().contains(bridge).then(|| s.bridge_macs.get(bridge).cloned()).flatten()
    }

    fn qdiscs(&self) -> Result<BTreeMap<String, TapQdiscs>, TcError> {
        let s = self.lock();
        let mut out = BTreeMap::new();
        for d in s.domains.values() {
            for (mac, tap) in State::taps_of(d) {
                if let Some(nic) = d.obs.interfaces.iter().find(|i| i.mac == Some(mac)) {
                    out.insert(tap, s.qdiscs_of(&d.obs.name, mac, nic));
                }
            }
        }
        Ok(out)
    }

    /// As the kernel ends up after [`crate::lab::impair::tc_commands`]: netem in place of
    /// libvirt's htb leaf when the tap has one, else as its root. A tap that is not here
    /// fails as tc does.
    fn set_netem(&self, tap: &str, netem: Option<&Netem>) -> Result<(), TcError> {
        let fail =
            |message: String| TcError { args: format!("qdisc replace dev {tap}"), message, cause: TcCause::Exit };
        let mut s = self.lock();
        s.enter("set_netem", tap).map_err(|e| fail(e.message))?;
        let Some((domain, mac, nic)) = s.tap(tap) else {
            return Err(fail(format!("Cannot find device \"{tap}\"")));
        };
        let mut q = s.qdiscs_of(&domain, mac, nic);
        let want = netem.map(|n| n.normalized()).filter(|n| !n.is_none());
        q.netem = want.map(|n| (if q.htb { NetemParent::HtbLeaf } else { NetemParent::Root }, n));
        s.taps.insert((domain, mac), q);
        Ok(())
    }

    fn kernel(&self) -> Result<Option<KernelSupport>, KernelError> {
        Ok(self.lock().kernel.clone())
    }

    fn routes(&self) -> Option<Vec<HostRoute>> {
        let s = self.lock();
        s.host_interfaces.as_ref()?;
        Some(s.routes())
    }
}

