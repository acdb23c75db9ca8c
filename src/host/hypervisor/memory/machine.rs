//! `MemoryMachine`: the machine double of a [`MemoryHypervisor`](super::MemoryHypervisor),
//! over the same state. It shows what sysfs and `tc` would show of the libvirt double's
//! host: each running domain's taps (named as the libvirt double's live XML names them) on
//! their networks' bridges, or on none after the network was stopped under them; the qdiscs
//! libvirt made with each tap, changed by netem; each overlay volume's backing image as its
//! header would name it; and, on a local host (`with_host_interfaces`), its network devices,
//! kernel, routes, bridge MACs and file identities.
//!
//! It keeps VXLAN tunnels as the kernel would (`ensure_tunnel` makes a device what the spec
//! wants, on a bridge that must be there; `delete_tunnel` of an absent device is fine) and
//! reports the addresses `with_host_addresses` gave. It lacks the programs
//! `with_missing_tools` names, and what needs them fails as it would on a real machine.
//!
//! Its changes, `set_netem`, `ensure_tunnel` and `delete_tunnel`, are logged and counted with
//! the libvirt double's calls, so `fail_on("set_netem", TAP, ..)` (or `"ensure_tunnel"`,
//! `"delete_tunnel"` with a device name) and the fault sweeps (`arm`) reach them too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{State, fresh_tap, lock};
use crate::host::kernel::{KernelError, KernelSupport};
use crate::host::machine::{ImageBacking, Machine, MachineError};
use crate::host::observed::{DomainState, HostRoute, NicLink, ObservedInterface};
use crate::host::tc::{TcCause, TcError};
use crate::host::tools::Tool;
use crate::host::tunnel::{ObservedTunnel, TunnelSpec, valid_device};
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
        self.networks.values().filter(|n| n.active).filter_map(|n| n.bridge_now().map(str::to_owned)).collect()
    }

    /// The running domain, MAC and NIC whose tap is `tap`.
    fn tap(&self, tap: &str) -> Option<(String, MacAddr, &ObservedInterface)> {
        self.domains.values().filter(|d| d.obs.state == DomainState::Running).find_map(|d| {
            let (mac, _) = State::taps_of(d).into_iter().find(|(_, t)| t == tap)?;
            let nic = d.obs.interfaces.iter().find(|i| i.mac == Some(mac))?;
            Some((d.obs.name.clone(), mac, nic))
        })
    }

    /// Whether the machine lacks any of `tools`.
    fn lacks(&self, tools: &[Tool]) -> bool {
        tools.iter().any(|t| self.missing_tools.contains(t))
    }

    /// What running the tunnels' commands gives on a machine that lacks one of them.
    fn tunnel_tools(&self, command: &str) -> Result<(), MachineError> {
        match [Tool::Sh, Tool::Ip, Tool::Bridge, Tool::Cut].into_iter().find(|t| self.missing_tools.contains(t)) {
            Some(t) => Err(MachineError::Unavailable {
                host: "memory".into(),
                command: command.into(),
                message: format!("sh: 1: {t}: not found"),
                hint: Some(format!("install {} on memory", t.package())),
            }),
            None => Ok(()),
        }
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
        Some(own.iter().cloned().chain(s.active_bridges()).chain(s.tunnels.keys().cloned()).collect())
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
                        .and_then(|n| n.bridge_now().map(str::to_owned))
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
        if s.lacks(&[Tool::Tc]) {
            return Err(tc_missing("-j qdisc show"));
        }
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
        if s.lacks(&[Tool::Sh, Tool::Tc]) {
            return Err(tc_missing(&format!("qdisc replace dev {tap}")));
        }
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

    /// Each tap's redirect as `join_taps` left it; a tap that is no running domain's has
    /// none (tc says "Cannot find device", read as none).
    fn wire_redirects(&self, taps: &[String]) -> Option<BTreeMap<String, Option<String>>> {
        let s = self.lock();
        if s.lacks(&[Tool::Sh, Tool::Tc]) {
            return None;
        }
        Some(taps.iter().map(|t| (t.clone(), s.redirects.get(t).cloned())).collect())
    }

    /// As the kernel ends up after [`crate::host::tc::join_script`]: each tap redirects to
    /// the other. A tap that is not here fails as tc does.
    fn join_taps(&self, a: &str, b: &str) -> Result<(), TcError> {
        let fail = |message: String| TcError { args: format!("join taps {a} and {b}"), message, cause: TcCause::Exit };
        let mut s = self.lock();
        if s.lacks(&[Tool::Sh, Tool::Tc]) {
            return Err(tc_missing(&format!("join taps {a} and {b}")));
        }
        s.enter("join_taps", a).map_err(|e| fail(e.message))?;
        for (from, to) in [(a, b), (b, a)] {
            if s.tap(from).is_none() {
                return Err(fail(format!("Cannot find device \"{from}\"")));
            }
            s.redirects.insert(from.to_string(), to.to_string());
        }
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

    fn routes6(&self) -> Option<Vec<crate::host::observed::HostRoute6>> {
        let s = self.lock();
        s.host_interfaces.as_ref()?;
        Some(s.routes6())
    }

    /// An overlay pool volume's backing image (none for an uploaded raw volume), found by the
    /// file the path opens (`move_pool_folder` leaves a symlink); any other file has none.
    fn image_backing(&self, path: &str) -> ImageBacking {
        self.lock().backing_under(path).map_or(ImageBacking::None, |b| ImageBacking::File(b.clone()))
    }

    fn tunnels(&self) -> Result<Vec<ObservedTunnel>, MachineError> {
        let s = self.lock();
        s.tunnel_tools("ip -d -j link show type vxlan")?;
        Ok(s.tunnels.values().cloned().collect())
    }

    /// As the kernel ends up after `ip link add`/`set` and `bridge fdb`: the device as wanted.
    /// The bridge must be a device here (when the double plays a host whose devices it knows),
    /// and no other device may have the name.
    fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<(), MachineError> {
        spec.check()?;
        let interfaces = self.interfaces();
        let mut s = self.lock();
        let fail = |stderr: String| MachineError::Failed {
            host: "memory".into(),
            command: format!("ip link set {} master {}", spec.device, spec.bridge),
            code: 2,
            stderr,
            hint: None,
        };
        s.tunnel_tools(&format!("ip link add {} type vxlan", spec.device))?;
        s.enter("ensure_tunnel", &spec.device).map_err(|e| fail(e.message))?;
        if let Some(i) = &interfaces {
            if !i.contains(&spec.bridge) {
                return Err(fail(format!("Cannot find device \"{}\"", spec.bridge)));
            }
            if i.contains(&spec.device) && !s.tunnels.contains_key(&spec.device) {
                return Err(fail("RTNETLINK answers: File exists".into()));
            }
        }
        let t = ObservedTunnel {
            device: spec.device.clone(),
            alias: Some(spec.alias.clone()),
            vni: spec.vni,
            local: Some(spec.local),
            dstport: spec.dstport,
            peers: spec.peers.clone(),
            master: Some(spec.bridge.clone()),
            mtu: spec.mtu,
            up: true,
        };
        s.tunnels.insert(spec.device.clone(), t);
        Ok(())
    }

    fn delete_tunnel(&self, device: &str) -> Result<(), MachineError> {
        if !valid_device(device) {
            return Err(MachineError::Invalid(format!("`{device}` is not a network device name")));
        }
        let mut s = self.lock();
        s.tunnel_tools(&format!("ip link del dev {device}"))?;
        s.enter("delete_tunnel", device).map_err(|e| MachineError::Failed {
            host: "memory".into(),
            command: format!("ip link del dev {device}"),
            code: 2,
            stderr: e.message,
            hint: None,
        })?;
        s.tunnels.remove(device);
        Ok(())
    }

    fn addresses(&self) -> Option<std::collections::BTreeMap<std::net::IpAddr, crate::host::tunnel::HostAddress>> {
        let s = self.lock();
        if s.lacks(&[Tool::Ip]) {
            return None;
        }
        s.host_addresses.clone()
    }

    /// What `with_missing_tools` gave, of those topo runs on such a machine (all of them on
    /// one reached over ssh, `reached_over_ssh`; else [`Tool::LOCAL`]).
    fn missing_tools(&self) -> Option<BTreeSet<Tool>> {
        let s = self.lock();
        let asked: &[Tool] = if s.remote { &Tool::REMOTE } else { &Tool::LOCAL };
        Some(s.missing_tools.iter().copied().filter(|t| asked.contains(t)).collect())
    }

    fn is_remote(&self) -> bool {
        self.lock().remote
    }

    /// On a local host, a stand-in for `(dev, inode)`: a hash of the file the path opens;
    /// `None` on a remote one.
    fn file_id(&self, path: &str) -> Option<(u64, u64)> {
        use std::hash::{Hash, Hasher};
        let s = self.lock();
        s.host_interfaces.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.resolve(path).hash(&mut h);
        Some((1, h.finish()))
    }
}

/// `tc` failing as it does on a machine without it (`args`: what it was asked).
fn tc_missing(args: &str) -> TcError {
    TcError {
        args: args.to_owned(),
        message: "tc is not installed on memory".into(),
        cause: TcCause::Spawn(std::io::ErrorKind::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use crate::host::hypervisor::memory::{Fault, MemoryHypervisor};
    use crate::host::hypervisor::{HvErrorKind, Hypervisor};

    const NET: &str = "<network><name>n</name><forward mode='nat'/><bridge name='virbr7'/>\
                       <ip address='10.9.0.1' netmask='255.255.255.0'/></network>";
    const DOM: &str = "<domain type='qemu'><name>d</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
                       <os><type arch='x86_64'>hvm</type></os><devices><interface type='network'>\
                       <mac address='52:54:00:00:00:01'/><source network='n'/></interface></devices></domain>";

    fn running() -> MemoryHypervisor {
        let hv = MemoryHypervisor::new().with_host_interfaces(&["eth0"]).with_network_xml(NET, true, true).unwrap();
        hv.define_domain(DOM).unwrap();
        hv.start_domain("d").unwrap();
        hv
    }

    /// What sysfs and tc show of the libvirt double's running domain: its tap (as the live
    /// XML names it) on the network's bridge, with the qdiscs netem left; off the bridge once
    /// the network is stopped under it; gone with the domain.
    #[test]
    fn shows_the_taps_of_running_domains() {
        let hv = running();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let taps = hv.domain_taps("d").unwrap();
        assert_eq!(taps, [(mac, "vnetd.0".to_owned())]);
        let netem = Netem { delay: crate::lab::impair::Micros::parse("5ms").ok(), ..Netem::default() };
        Host::from(&hv).set_netem("d", mac, Some(&netem)).unwrap();
        let o = hv.observe().unwrap();
        let link = &o.domains["d"].links.as_ref().unwrap()[0];
        assert_eq!((link.tap.as_str(), link.bridge.as_deref()), ("vnetd.0", Some("virbr7")));
        assert_eq!(link.qdiscs.as_ref().unwrap().netem, Some((NetemParent::Root, netem.normalized())));
        assert!(o.host_interfaces.unwrap().contains("virbr7"));
        hv.stop_network("n").unwrap();
        let m = &hv.machine;
        assert_eq!(m.tap_links(&taps, None).unwrap()[0].bridge, None, "cut off by the stop");
        hv.destroy_domain("d").unwrap();
        assert_eq!(m.tap_links(&taps, None), None, "the tap went with the domain");
        assert!(m.set_netem("vnetd.0", None).is_err());
        assert_eq!(hv.domain_taps("d").unwrap_err().kind, HvErrorKind::NotActive);
    }

    /// Tunnels as the kernel keeps them: made, changed, deleted (absent is fine); a missing
    /// bridge or a name taken by another device fails as `ip` does; the calls are counted.
    #[test]
    fn tunnels_as_the_kernel_keeps_them() {
        let hv = running().with_host_addresses(&["10.77.0.11"]);
        let m = &hv.machine;
        let mut spec = TunnelSpec {
            device: "vx10".into(),
            alias: "topo l/n".into(),
            vni: 10,
            local: "10.77.0.11".parse().unwrap(),
            dstport: 4789,
            peers: ["10.77.0.12".parse().unwrap()].into(),
            bridge: "virbr7".into(),
            mtu: 1450,
        };
        m.ensure_tunnel(&spec).unwrap();
        m.ensure_tunnel(&spec).unwrap();
        spec.peers.insert("10.77.0.13".parse().unwrap());
        m.ensure_tunnel(&spec).unwrap();
        let t = m.tunnels().unwrap();
        assert_eq!((t.len(), t[0].peers.len(), t[0].master.as_deref()), (1, 2, Some("virbr7")));
        assert!(m.interfaces().unwrap().contains("vx10"), "a device like any other");
        assert_eq!(m.addresses().unwrap().len(), 1);
        let e = m.ensure_tunnel(&TunnelSpec { device: "vx11".into(), bridge: "nope".into(), ..spec.clone() });
        assert!(e.unwrap_err().to_string().contains("Cannot find device"));
        let e = m.ensure_tunnel(&TunnelSpec { device: "eth0".into(), ..spec.clone() });
        assert!(e.unwrap_err().to_string().contains("File exists"));
        m.delete_tunnel("vx10").unwrap();
        m.delete_tunnel("vx10").unwrap();
        assert_eq!(m.tunnels().unwrap(), []);
        hv.arm(1, Fault::FailCall);
        assert!(m.ensure_tunnel(&spec).is_err(), "a counted call");
        assert_eq!(hv.disarm(), 1);
    }

    /// The machine's change is counted with the libvirt calls: a fault sweep reaches it.
    #[test]
    fn set_netem_is_a_counted_call() {
        let hv = running();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        hv.clear_calls();
        hv.arm(2, Fault::FailCall);
        let e = Host::from(&hv).set_netem("d", mac, None).unwrap_err();
        assert_eq!((e.kind, e.object.as_str()), (HvErrorKind::Other, "d (vnetd.0)"), "{e:?}");
        assert_eq!(hv.calls(), ["domain_taps d", "set_netem vnetd.0"]);
        assert_eq!(hv.disarm(), 2);
    }
}
