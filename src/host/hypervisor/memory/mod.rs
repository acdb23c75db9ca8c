//! `MemoryHypervisor`: a strict in-memory libvirt double for tests of plan/apply/destroy,
//! and its machine, `machine::MemoryMachine`: the two doubles share one state, so the machine
//! shows what sysfs and `tc` would show of the double's running domains (their taps on their
//! networks' bridges, the qdiscs libvirt and netem leave on them). `Host::from(&hv)` pairs
//! them.
//!
//! It parses XML with the same `xml` module as the real observer and rejects what libvirt
//! 9.0 rejects (checked against the test driver and the libvirt sources where noted), and
//! no more: libvirt lets a network stop or be undefined under running domains
//! (networkDestroy/networkUndefine do not look at domains; the NICs lose their link) and a
//! volume be deleted while a domain uses it (virStorageVolDelete does not look at domains),
//! so the double allows that too. A double stricter than libvirt would hide real faults.
//!
//! A running domain keeps the settings it was started with (`ObservedDomain::live`) while
//! a define changes only its persistent config, as in libvirt.
//!
//! It records every call (`calls()`), can fail the next matching call (`fail_on`), and for
//! fault sweeps can fail the k-th call or stop the "process" right after it (`arm`): the
//! libvirt calls and the machine's one change (`set_netem`) alike, counted together.
//!
//! Differences from libvirt, by design: `shutdown_domain` takes effect at once (libvirt's
//! is an asynchronous ACPI request); DHCP leases only come from `set_leases`; the bridge
//! MAC the double generates for a network defined without `<mac address>` comes from a
//! counter (libvirt's is random), `52:54:00:..` like libvirt's.

mod machine;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use machine::MemoryMachine;

use super::VolumeSpec;
use super::{HostOp, HvError, HvErrorKind, Hypervisor, StoragePoolInfo, StorageVolumeInfo};
use crate::host::observed::{
    DomainState, FileId, Lease, LiveConfig, Observed, ObservedDomain, ObservedInterface, ObservedNetwork, ObservedPool,
    ObservedVolume,
};
use crate::host::xml::{self, NetworkFlags, XmlError};
use crate::lab::model::MacAddr;

/// The URI `MemoryHypervisor::uri` reports.
pub const MEMORY_URI: &str = "memory:///topo";

#[derive(Debug, Clone)]
struct MemDomain {
    obs: ObservedDomain,
    /// False once undefined while running (libvirt keeps it as a transient domain).
    persistent: bool,
    /// What the guest holds (its memory and disks), as a number a test changes with
    /// [`MemoryHypervisor::write_guest`]: a snapshot keeps it, a revert brings it back.
    content: u64,
    /// What `create_snapshot` recorded of each snapshot it made, by name (the names are in
    /// `obs.snapshots`, with those of `snapshot_internal` and `snapshot_external`).
    snaps: BTreeMap<String, MemSnapshot>,
}

/// A snapshot the double made (`create_snapshot`).
#[derive(Debug, Clone)]
struct MemSnapshot {
    info: crate::host::hypervisor::SnapshotInfo,
    /// The guest's content when it was taken.
    content: u64,
}

#[derive(Debug, Default)]
struct State {
    /// What `hostname` reports (`memory` unless `with_hostname`): a host lock is keyed on it.
    hostname: Option<String>,
    networks: BTreeMap<String, ObservedNetwork>,
    domains: BTreeMap<String, MemDomain>,
    leases: BTreeMap<String, Vec<Lease>>,
    /// (op, object name, error): the next call of `op` on `name` fails with the error.
    faults: Vec<(String, String, HvError)>,
    calls: Vec<String>,
    uuid_counter: u64,
    mac_counter: u32,
    /// NICs of running domains whose network was stopped under them (libvirt leaves the
    /// tap off the bridge until the NIC is re-plugged).
    cut: std::collections::BTreeSet<(String, crate::lab::model::MacAddr)>,
    /// The egress qdiscs of running domains' taps, by (domain, MAC), as the kernel keeps
    /// them: made when the tap is (domain start, hot-plug: libvirt's htb when the NIC has a
    /// `<bandwidth inbound>`), changed by `set_netem`, reset by `set_bandwidth` (libvirt
    /// clears the tap's qdiscs and sets its own), gone with the tap (power off, unplug).
    taps: BTreeMap<(String, MacAddr), crate::lab::impair::TapQdiscs>,
    /// The wires joined on the machine: each tap's ingress redirect, by tap, to the device
    /// it sends to (`"*"` once that device is gone, as the kernel keeps it by index).
    redirects: BTreeMap<String, String>,
    /// Addresses libvirt would report per domain (`set_domain_addresses`).
    addresses: BTreeMap<String, Vec<(crate::lab::model::MacAddr, std::net::Ipv4Addr)>>,
    /// The storage pool (one at most: topo uses only its overlay pool).
    pool: Option<ObservedPool>,
    /// Volumes of the pool: name -> backing image (`raw` for uploaded ones).
    volumes: BTreeMap<String, String>,
    /// The content of uploaded volumes, by name.
    uploads: BTreeMap<String, Vec<u8>>,
    /// Calls counted since `arm` (every logged call but `observe`).
    counted: usize,
    /// The armed fault: (k, kind).
    armed: Option<(usize, Fault)>,
    /// Set by `enter` when the call it lets through is the one a `Fault::StopDuringCall`
    /// cuts short (read by the calls that leave part of their effect: `upload_volume`).
    cut_short: bool,
    /// Interfaces on the host that are no libvirt network's bridge (a physical NIC, a
    /// hand-made bridge); `None` plays a remote host, whose interfaces topo cannot see.
    host_interfaces: Option<std::collections::BTreeSet<String>>,
    /// What the host kernel lacks, as `observe` reports it (`None`: unknown).
    kernel: Option<crate::host::kernel::KernelSupport>,
    /// Storage pools other than the overlay pool (images, kernels), by name.
    storage: BTreeMap<String, MemStoragePool>,
    /// MACs a bridge holds as its own on a local host (`with_bridge_macs`), by bridge.
    bridge_macs: BTreeMap<String, std::collections::BTreeSet<MacAddr>>,
    /// Folders moved with a symlink left at the old path (`move_pool_folder`): old -> new.
    /// A path under the old folder opens the file under the new one.
    symlinks: BTreeMap<String, String>,
    /// Routes of the host that are no libvirt network's (a VPN, docker0: `with_host_routes`).
    routes: Vec<crate::host::observed::HostRoute>,
    /// IPv6 routes of the host that are no libvirt network's (`with_host_routes6`).
    routes6: Vec<crate::host::observed::HostRoute6>,
    /// Each network's config XML as libvirt would dump it: the text last defined, with the
    /// UUID and bridge the double gave it, the DHCP hosts added or deleted since, and no
    /// owner tag once released (`network_config_xml`).
    config: BTreeMap<String, String>,
    /// The VXLAN devices on the machine (`Machine::ensure_tunnel`), by device name.
    tunnels: BTreeMap<String, crate::host::tunnel::ObservedTunnel>,
    /// The machine's own addresses (`with_host_addresses`), each on device `eth0` with the
    /// MTU `with_underlay_mtu` gave (1500 by default); `None`: cannot be read.
    host_addresses: Option<std::collections::BTreeMap<std::net::IpAddr, crate::host::tunnel::HostAddress>>,
    /// The programs the machine lacks (`with_missing_tools`): what `Machine::missing_tools`
    /// reports, and what fails as it would without them (tunnels, addresses, tc).
    missing_tools: std::collections::BTreeSet<crate::host::tools::Tool>,
    /// The machine plays another host's, reached by commands (`reached_over_ssh`), for what
    /// the planner asks of such a machine's tools.
    remote: bool,
}

/// A directory pool of files topo does not manage (`with_storage_pool`).
#[derive(Debug, Clone, Default)]
struct MemStoragePool {
    /// The pool's folder.
    path: String,
    active: bool,
    /// The files in the folder: name -> format (as the pool's backend would probe it).
    files: BTreeMap<String, MemFile>,
    /// The volumes libvirt lists: the files as of the pool's last refresh (or start).
    listed: BTreeMap<String, MemFile>,
}

/// A file of a [`MemStoragePool`]: what the pool's backend would find in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemFile {
    /// `<target><format type>`.
    format: String,
    /// `<capacity>` in bytes (the virtual size), when the test gives one.
    capacity: Option<u64>,
}

/// Kind of fault `MemoryHypervisor::arm` injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The k-th call fails (with kind `Other`) and changes nothing.
    FailCall,
    /// The k-th call takes effect, and every call after it fails: the process "died" right
    /// after the call and the host keeps what was done.
    StopAfterCall,
    /// The process dies during the k-th call: it and every call after it fail. A stream
    /// upload (`upload_volume`) leaves what a kill during virStorageVolUpload leaves: the
    /// volume (created before the stream starts) holding the first half of the data; any
    /// other call is one libvirtd finishes or never started, as `StopAfterCall` or
    /// `FailCall` already cover.
    StopDuringCall,
}

/// Strict in-memory `Hypervisor`. Cheap to build; state lives behind one mutex, shared with
/// its machine double.
#[derive(Debug)]
pub struct MemoryHypervisor {
    state: Arc<Mutex<State>>,
    /// The machine that runs this host, over the same state.
    machine: MemoryMachine,
}

impl Default for MemoryHypervisor {
    fn default() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        Self { machine: MemoryMachine::over(Arc::clone(&state)), state }
    }
}

/// The double's host: its libvirt double and, always, its machine double (the double's taps
/// are always visible; its device list, kernel, routes and bridge MACs only on a local host,
/// `with_host_interfaces`). `Host::libvirt(&hv)` plays a host whose machine topo cannot reach.
impl<'a> From<&'a MemoryHypervisor> for crate::host::Host<'a> {
    fn from(hv: &'a MemoryHypervisor) -> Self {
        Self { hv, machine: Some(&hv.machine) }
    }
}

/// Locks `state`. A test that panicked while holding the lock leaves consistent data (every
/// mutation is a single insert/assign after checks), so poisoning is ignored.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(op: &str, object: &str, kind: HvErrorKind, message: impl Into<String>) -> HvError {
    HvError { op: op.to_owned(), object: object.to_owned(), message: message.into(), kind, hint: None }
}

/// A new tap's qdiscs: libvirt's htb root when the NIC has a `<bandwidth inbound>`, else
/// the kernel's default (no netem either way).
fn fresh_tap(nic: &ObservedInterface) -> crate::lab::impair::TapQdiscs {
    crate::lab::impair::TapQdiscs { htb: nic.bandwidth.is_some_and(|b| b.inbound.is_some()), netem: None }
}

/// `xml` without the `<host .../>` element of MAC `mac` (a DHCP host entry).
fn without_host(xml: &str, mac: MacAddr) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<host ") {
        let end = rest[at..].find("/>").map_or(rest.len(), |e| at + e + 2);
        let element = &rest[at..end];
        out.push_str(&rest[..at]);
        if !element.to_ascii_lowercase().contains(&mac.to_string()) {
            out.push_str(element);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn xml_err(op: &str, object: &str, e: XmlError) -> HvError {
    err(op, object, HvErrorKind::InvalidXml, e.to_string())
}

/// `define_network` -> `define network`, for `HvError::op`.
fn op_words(op: &str) -> String {
    op.replace('_', " ")
}

impl State {
    /// Logs the call, then fails it if a fault was injected for it.
    fn enter(&mut self, op: &str, name: &str) -> Result<(), HvError> {
        self.calls.push(format!("{op} {name}"));
        if let Some(i) = self.faults.iter().position(|(o, n, _)| o == op && n == name) {
            let (_, _, e) = self.faults.remove(i);
            return Err(e);
        }
        self.cut_short = false;
        if let Some((k, fault)) = self.armed {
            self.counted += 1;
            let fail = match fault {
                Fault::FailCall => self.counted == k,
                Fault::StopAfterCall => self.counted > k,
                Fault::StopDuringCall => self.counted >= k,
            };
            self.cut_short = fault == Fault::StopDuringCall && self.counted == k;
            if fail {
                let why = if fault == Fault::FailCall { "injected failure" } else { "the process was stopped" };
                return Err(err(&op_words(op), name, HvErrorKind::Other, format!("{why} (call {})", self.counted)));
            }
        }
        Ok(())
    }

    fn next_uuid(&mut self) -> String {
        self.uuid_counter += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.uuid_counter)
    }

    fn network(&mut self, op: &str, name: &str) -> Result<&mut ObservedNetwork, HvError> {
        self.networks.get_mut(name).ok_or_else(|| {
            err(&op_words(op), name, HvErrorKind::NotFound, format!("no network with matching name '{name}'"))
        })
    }

    fn domain(&mut self, op: &str, name: &str) -> Result<&mut MemDomain, HvError> {
        self.domains.get_mut(name).ok_or_else(|| {
            err(&op_words(op), name, HvErrorKind::NotFound, format!("no domain with matching name '{name}'"))
        })
    }

    /// The taps of a running domain's NICs, by MAC, as its live XML names them; none when
    /// it is not running. Named `vnet<domain>.<index>` (libvirt numbers them host-wide; only
    /// where they are plugged matters).
    fn taps_of(d: &MemDomain) -> Vec<(MacAddr, String)> {
        if d.obs.state != DomainState::Running {
            return Vec::new();
        }
        d.obs
            .interfaces
            .iter()
            .enumerate()
            .filter_map(|(i, nic)| {
                // libvirt names an ethernet interface's tap as its `<target dev>` says.
                let tap = nic.ethernet.clone().unwrap_or_else(|| format!("vnet{}.{i}", d.obs.name));
                Some((nic.mac?, tap))
            })
            .collect()
    }

    /// The wire taps that go with domain `domain`'s interfaces `macs` (all when `None`):
    /// their own redirects go, and one to them is left pointing nowhere (`*`).
    fn drop_redirects(&mut self, domain: &str, macs: Option<MacAddr>) {
        let Some(d) = self.domains.get(domain) else { return };
        let gone: Vec<String> = d
            .obs
            .interfaces
            .iter()
            .filter(|i| macs.is_none() || i.mac == macs)
            .filter_map(|i| i.ethernet.clone())
            .collect();
        for t in &gone {
            self.redirects.remove(t);
            for to in self.redirects.values_mut().filter(|to| *to == t) {
                *to = "*".into();
            }
        }
    }

    /// Running domains with an interface on `network`.
    fn running_users(&self, network: &str) -> Vec<String> {
        self.domains
            .values()
            .filter(|d| d.obs.state == DomainState::Running)
            .filter(|d| d.obs.interfaces.iter().any(|i| i.network.as_deref() == Some(network)))
            .map(|d| d.obs.name.clone())
            .collect()
    }

    /// The host's routes as `/proc/net/route` lists them: the ones set up by hand
    /// (`with_host_routes`), then the route of each active network's subnet on its bridge
    /// (the kernel adds it with the bridge's address).
    fn routes(&self) -> Vec<crate::host::observed::HostRoute> {
        let nets = self.networks.values().filter(|n| n.active).filter_map(|n| {
            let ip = n.ip.as_ref()?;
            let net = ipnetwork::Ipv4Network::new(ip.address, ip.prefix).ok()?;
            Some(crate::host::observed::HostRoute {
                device: n.bridge_now()?.to_owned(),
                destination: net.network(),
                netmask: net.mask(),
            })
        });
        self.routes.iter().cloned().chain(nets).collect()
    }

    /// The host's IPv6 routes as `/proc/net/ipv6_route` lists them: the ones set up by hand
    /// (`with_host_routes6`), then each active network's prefix on its bridge.
    fn routes6(&self) -> Vec<crate::host::observed::HostRoute6> {
        let nets = self.networks.values().filter(|n| n.active).filter_map(|n| {
            let ip6 = n.ip6.as_ref()?;
            let net = ipnetwork::Ipv6Network::new(ip6.address, ip6.prefix).ok()?;
            Some(crate::host::observed::HostRoute6 {
                device: n.bridge_now()?.to_owned(),
                destination: net.network(),
                prefix: net.prefix(),
            })
        });
        self.routes6.iter().cloned().chain(nets).collect()
    }

    /// The lowest `virbrN` no other network uses (libvirt's networkFindUnusedBridgeName).
    fn free_bridge(&self, skip: &str) -> String {
        (0u32..)
            .map(|n| format!("virbr{n}"))
            .find(|b| !self.networks.values().any(|n| n.name != skip && n.bridge.as_deref() == Some(b)))
            .unwrap_or_default() // the range is unbounded, so `find` always returns Some
    }

    fn define_network(&mut self, xml_text: &str) -> Result<(), HvError> {
        const OP: &str = "define network";
        let mut net = xml::parse_network(xml_text, NetworkFlags::default()).map_err(|e| xml_err(OP, "?", e))?;
        let name = net.name.clone();
        self.enter("define_network", &name)?;
        if let Some(uuid) = &net.uuid
            && let Some(other) = self.networks.values().find(|n| n.uuid.as_ref() == Some(uuid) && n.name != name)
        {
            return Err(err(
                OP,
                &name,
                HvErrorKind::Exists,
                format!("network '{}' is already defined with uuid {uuid}", other.name),
            ));
        }
        let existing = self.networks.get(&name).cloned();
        if let Some(old) = &existing
            && old.uuid != net.uuid
        {
            // libvirt gives a UUID-less definition a fresh UUID, so it never matches.
            return Err(err(
                OP,
                &name,
                HvErrorKind::Exists,
                format!("network '{name}' already exists with uuid {}", old.uuid.clone().unwrap_or_default()),
            ));
        }
        match &net.bridge {
            Some(b) => {
                if let Some(other) = self.networks.values().find(|n| n.name != name && n.bridge.as_ref() == Some(b)) {
                    return Err(err(
                        OP,
                        &name,
                        HvErrorKind::Exists,
                        format!("bridge name '{b}' already in use (by network '{}')", other.name),
                    ));
                }
            }
            // libvirt names a bridge only for the networks whose bridge it makes (forward
            // none, nat, route, open: bridge_driver.c `networkValidate` ->
            // `networkFindUnusedBridgeName`); a macvtap (`bridge` over `<interface dev>`,
            // private, vepa, passthrough) or hostdev network has none.
            None if matches!(net.mode, crate::host::observed::ObservedMode::Known(_)) => {
                net.bridge = Some(self.free_bridge(&name))
            }
            None => {}
        }
        // libvirt's network driver (src/network/bridge_driver.c `networkValidate`): the
        // networks whose bridge libvirt makes (forward none, nat, route, open) keep the
        // `<mac address>` they are given, or get a generated `52:54:00:..` one
        // (src/conf/network_conf.c `virNetworkSetBridgeMacAddr`); the others refuse one.
        match &net.mode {
            crate::host::observed::ObservedMode::Known(_) => {
                if net.mac.is_none() {
                    net.mac = Some(self.next_mac());
                }
            }
            crate::host::observed::ObservedMode::Other(mode) => {
                if net.mac.is_some() {
                    return Err(err(
                        OP,
                        &name,
                        HvErrorKind::InvalidXml,
                        format!("Unsupported <mac> element in network {name} with forward mode='{mode}'"),
                    ));
                }
            }
        }
        if net.uuid.is_none() {
            net.uuid = Some(self.next_uuid());
        }
        net.persistent = true;
        if let Some(old) = existing {
            net.active = old.active;
            net.autostart = old.autostart;
        }
        let text = crate::host::xml::with_bridge(
            &crate::host::xml::with_uuid(xml_text, net.uuid.as_deref()),
            net.bridge.as_deref(),
        );
        self.config.insert(name.clone(), text);
        self.networks.insert(name, net);
        Ok(())
    }

    fn define_domain(&mut self, xml_text: &str) -> Result<(), HvError> {
        const OP: &str = "define domain";
        let mut dom = xml::parse_domain(xml_text, DomainState::Shutoff).map_err(|e| xml_err(OP, "?", e))?;
        let name = dom.name.clone();
        self.enter("define_domain", &name)?;
        if let Some(uuid) = &dom.uuid
            && let Some(other) = self.domains.values().find(|d| d.obs.uuid.as_ref() == Some(uuid) && d.obs.name != name)
        {
            return Err(err(
                OP,
                &name,
                HvErrorKind::Exists,
                format!("domain '{}' is already defined with uuid {uuid}", other.obs.name),
            ));
        }
        let existing = self.domains.get(&name).cloned();
        if let Some(old) = &existing
            && old.obs.uuid != dom.uuid
        {
            return Err(err(
                OP,
                &name,
                HvErrorKind::Exists,
                format!("domain '{name}' already exists with uuid {}", old.obs.uuid.clone().unwrap_or_default()),
            ));
        }
        let mut seen = Vec::new();
        for i in &mut dom.interfaces {
            let mac = match i.mac {
                Some(m) => m,
                None => {
                    let m = self.next_mac();
                    i.mac = Some(m);
                    m
                }
            };
            if seen.contains(&mac) {
                return Err(err(OP, &name, HvErrorKind::InvalidXml, format!("duplicate MAC address {mac} in domain")));
            }
            seen.push(mac);
        }
        if dom.uuid.is_none() {
            dom.uuid = Some(self.next_uuid());
        }
        if let Some(old) = &existing {
            // A define changes the persistent config only: a running domain keeps running
            // with the settings it was started with. Snapshot metadata stays with the domain.
            dom.state = old.obs.state;
            dom.live = old.obs.live.clone();
            dom.snapshots = old.obs.snapshots.clone();
        }
        let (content, snaps) = existing.map(|o| (o.content, o.snaps)).unwrap_or_default();
        self.domains.insert(name, MemDomain { obs: dom, persistent: true, content, snaps });
        Ok(())
    }

    fn next_mac(&mut self) -> MacAddr {
        self.mac_counter += 1;
        let [_, a, b, c] = self.mac_counter.to_be_bytes();
        // 0x52 is even: always unicast, so `new` cannot fail.
        MacAddr::new([0x52, 0x54, 0x00, a, b, c]).unwrap_or_else(|_| unreachable!())
    }

    /// libvirt checks, at domain start, that every `type='network'` interface's network
    /// exists and is active.
    fn check_networks_active(&self, op: &str, domain: &str, ifaces: &[ObservedInterface]) -> Result<(), HvError> {
        for net in ifaces.iter().filter_map(|i| i.network.as_deref()) {
            match self.networks.get(net) {
                None => {
                    return Err(err(
                        op,
                        domain,
                        HvErrorKind::NotFound,
                        format!("no network with matching name '{net}'"),
                    ));
                }
                Some(n) if !n.active => {
                    return Err(err(op, domain, HvErrorKind::InvalidState, format!("network '{net}' is not active")));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The pool named `name`, which must be active (libvirt: "storage pool is not active").
    fn active_pool(&self, op: &str, name: &str) -> Result<&ObservedPool, HvError> {
        match &self.pool {
            Some(p) if p.name == name && p.active => Ok(p),
            Some(p) if p.name == name => {
                Err(err(op, name, HvErrorKind::NotActive, format!("storage pool '{name}' is not active")))
            }
            _ => Err(err(op, name, HvErrorKind::NotFound, format!("no storage pool with matching name '{name}'"))),
        }
    }

    /// The path `path` opens, its folder symlinks followed (`move_pool_folder`).
    fn resolve(&self, path: &str) -> String {
        for (old, new) in &self.symlinks {
            if let Some(rest) = path.strip_prefix(old.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{new}{rest}");
            }
        }
        path.to_owned()
    }

    /// The overlay pool's volume the file at `path` is (by the file it opens), if any.
    fn volume_at(&self, path: &str) -> Option<&String> {
        let pool = self.pool.as_ref()?;
        let real = self.resolve(path);
        let (dir, name) = real.rsplit_once('/')?;
        (dir == self.resolve(&pool.path)).then(|| self.volumes.get_key_value(name).map(|(k, _)| k)).flatten()
    }

    /// The backing file of the file at `path` as QEMU opens it (its header): an overlay pool
    /// volume's backing image (none for an uploaded raw volume); any other file (a base
    /// image) has none.
    fn backing_under(&self, path: &str) -> Option<&String> {
        self.volume_at(path).map(|name| &self.volumes[name]).filter(|b| *b != "raw" && !b.is_empty())
    }

    fn parse_iface(op: &str, domain: &str, xml_text: &str) -> Result<ObservedInterface, HvError> {
        xml::parse_interface(xml_text).map_err(|e| xml_err(op, domain, e))
    }
}

impl MemoryHypervisor {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// What topo observes of this double's host ([`crate::host::Host::observe`]): libvirt's
    /// facts and its machine's.
    ///
    /// # Errors
    /// An injected fault (`fail_on("observe", ..)`).
    pub fn observe(&self) -> Result<Observed, HvError> {
        crate::host::Host::from(self).observe()
    }

    /// A local host whose kernel was built with `config` (kernel `.config` text): `observe`
    /// reports what it lacks for link impairment (with `with_host_interfaces`: the machine
    /// double tells the kernel of a machine whose devices it can list).
    pub fn with_kernel_config(self, config: &str) -> Self {
        self.lock().kernel = Some(crate::host::kernel::KernelSupport::from_config(config, "/proc/config.gz"));
        self
    }

    /// Plays a local host with these non-libvirt interfaces (`eth0`, a hand-made bridge):
    /// `observe` reports them with the active networks' bridges, and starting a network
    /// whose bridge has one of these names fails as the kernel refuses it (EEXIST).
    pub fn with_host_interfaces(self, names: &[&str]) -> Self {
        self.lock().host_interfaces = Some(names.iter().map(|n| (*n).to_owned()).collect());
        self
    }

    /// A host named `name` (what `hostname` reports; host locks key on it): the hosts of a
    /// lab across hosts.
    pub fn with_hostname(self, name: &str) -> Self {
        self.lock().hostname = Some(name.to_owned());
        self
    }

    /// A machine that lacks `tools` (not on its `PATH`): `Machine::missing_tools` names
    /// them (among those topo runs on such a machine), and what needs them fails as it would:
    /// tunnels without `sh`, `ip`, `bridge` or `cut`, the machine's addresses without `ip`,
    /// the taps' qdiscs and netem without `tc`.
    pub fn with_missing_tools(self, tools: &[crate::host::tools::Tool]) -> Self {
        self.lock().missing_tools = tools.iter().copied().collect();
        self
    }

    /// The machine plays another host's, reached over ssh (`Machine::is_remote`): what the
    /// planner asks of its tools is what topo runs on such a machine. Nothing else changes
    /// (the double has no runner: the host lock and the ARP proof stay this machine's).
    pub fn reached_over_ssh(self) -> Self {
        self.lock().remote = true;
        self
    }

    /// The machine's own addresses, as `Machine::addresses` reports them (`ip -j addr`): each
    /// on device `eth0`, MTU 1500.
    pub fn with_host_addresses(self, addresses: &[&str]) -> Self {
        let at = crate::host::tunnel::HostAddress { device: "eth0".into(), mtu: 1500 };
        // Invariant: test fixtures give valid addresses.
        self.lock().host_addresses =
            Some(addresses.iter().map(|a| (a.parse().expect("an IP address"), at.clone())).collect());
        self
    }

    /// The MTU of the device that holds the machine's addresses (`with_host_addresses`): a
    /// cloud VM's 1450, a jumbo underlay's 9000.
    pub fn with_underlay_mtu(self, mtu: u32) -> Self {
        if let Some(a) = self.lock().host_addresses.as_mut() {
            a.values_mut().for_each(|h| h.mtu = mtu);
        }
        self
    }

    /// Routes of the host besides those of libvirt's networks, as (device, `a.b.c.d/prefix`):
    /// a VPN's `("tun0", "10.8.0.0/16")`, `("docker0", "172.17.0.0/16")`. `start_network`
    /// refuses a subnet one of them has, as libvirt does; `observe` lists them on a local
    /// host (`with_host_interfaces`).
    pub fn with_host_routes(self, routes: &[(&str, &str)]) -> Self {
        self.set_host_routes(routes);
        self
    }

    /// IPv6 routes of the host besides those of libvirt's networks, as (device,
    /// `prefix/len`): a VPN's `("tun0", "fd00:60::/64")`. `observe` lists them on a local
    /// host (`with_host_interfaces`); the double's `start_network` does not refuse them
    /// (libvirt does not either).
    pub fn with_host_routes6(self, routes: &[(&str, &str)]) -> Self {
        self.lock().routes6 = routes
            .iter()
            .map(|(dev, cidr)| {
                // Invariant: test fixtures give valid prefixes.
                let net: ipnetwork::Ipv6Network = cidr.parse().expect("a route's prefix/len");
                crate::host::observed::HostRoute6 {
                    device: (*dev).to_owned(),
                    destination: net.network(),
                    prefix: net.prefix(),
                }
            })
            .collect();
        self
    }

    /// Replaces the routes of [`MemoryHypervisor::with_host_routes`] (a VPN went down).
    pub fn set_host_routes(&self, routes: &[(&str, &str)]) {
        self.lock().routes = routes
            .iter()
            .map(|(dev, cidr)| {
                // Invariant: test fixtures give valid CIDRs.
                let net: ipnetwork::Ipv4Network = cidr.parse().expect("a route's a.b.c.d/prefix");
                crate::host::observed::HostRoute {
                    device: (*dev).to_owned(),
                    destination: net.network(),
                    netmask: net.mask(),
                }
            })
            .collect();
    }

    /// On a local host (`with_host_interfaces`), bridge `bridge` holds `macs` as its own (its
    /// address and its ports', as /sys/class/net shows them); `observe` reports them while a
    /// network with that bridge is active.
    pub fn with_bridge_macs(self, bridge: &str, macs: &[&str]) -> Self {
        let macs = macs.iter().map(|m| m.parse().expect("a MAC")).collect();
        self.lock().bridge_macs.insert(bridge.to_owned(), macs);
        self
    }

    /// Adds a directory storage pool `name` over folder `path` holding `files` (`(file name,
    /// format)`), as a pool the user made (`virsh pool-define-as ... dir --target PATH`).
    /// An active pool lists its files (libvirt refreshes a pool when it starts).
    pub fn with_storage_pool(self, name: &str, path: &str, active: bool, files: &[(&str, &str)]) -> Self {
        let files: BTreeMap<String, MemFile> =
            files.iter().map(|(n, f)| ((*n).to_owned(), MemFile { format: (*f).to_owned(), capacity: None })).collect();
        let listed = if active { files.clone() } else { BTreeMap::new() };
        let pool = MemStoragePool { path: path.trim_end_matches('/').to_owned(), active, files, listed };
        self.lock().storage.insert(name.to_owned(), pool);
        self
    }

    /// A file appears in (`Some((format, capacity))`, the capacity being its virtual size in
    /// bytes) or vanishes from (`None`) the folder of pool `pool` behind libvirt's back: its
    /// volume list changes at the next refresh only.
    pub fn set_pool_file(&self, pool: &str, file: &str, format: Option<(&str, Option<u64>)>) {
        let mut s = self.lock();
        let Some(p) = s.storage.get_mut(pool) else { return };
        match format {
            Some((f, capacity)) => p.files.insert(file.to_owned(), MemFile { format: f.to_owned(), capacity }),
            None => p.files.remove(file),
        };
    }

    /// Adds a network as if defined (same checks as `define_network`), not logged.
    pub fn with_network_xml(self, xml: &str, active: bool, autostart: bool) -> Result<Self, HvError> {
        {
            let mut s = self.lock();
            s.define_network(xml)?;
            s.calls.pop();
            let name =
                xml::parse_network(xml, NetworkFlags::default()).map_err(|e| xml_err("define network", "?", e))?.name;
            let n = s.network("define_network", &name)?;
            n.active = active;
            n.autostart = autostart;
        }
        Ok(self)
    }

    /// Adds a domain as if defined (same checks as `define_domain`), not logged. A running
    /// fixture domain skips start's network checks (libvirt lets a network stop under a
    /// running domain, so such states exist).
    pub fn with_domain_xml(self, xml: &str, running: bool) -> Result<Self, HvError> {
        {
            let mut s = self.lock();
            s.define_domain(xml)?;
            s.calls.pop();
            let name = xml::parse_domain(xml, DomainState::Shutoff).map_err(|e| xml_err("define domain", "?", e))?.name;
            let d = s.domain("define_domain", &name)?;
            d.obs.state = if running { DomainState::Running } else { DomainState::Shutoff };
            d.obs.live = running.then(|| LiveConfig::of(&d.obs));
        }
        Ok(self)
    }

    /// Makes the next call of `op` (a trait method name, e.g. `start_network`) on object
    /// `name` fail with `error` (for `observe` the name is ignored). Each injected fault fires
    /// once. Define calls match on the name inside the XML; XML that does not parse fails
    /// with InvalidXml before any fault or log entry.
    pub fn fail_on(&self, op: &str, name: &str, error: HvError) {
        self.lock().faults.push((op.to_owned(), name.to_owned(), error));
    }

    /// Arms a fault sweep: counting from now, the `k`-th call (1-based; every call but
    /// `observe`) fails (`Fault::FailCall`), is the last one to succeed
    /// (`Fault::StopAfterCall`), or is cut short by the process dying (`Fault::StopDuringCall`).
    pub fn arm(&self, k: usize, fault: Fault) {
        let mut s = self.lock();
        s.counted = 0;
        s.armed = Some((k, fault));
    }

    /// Removes the armed fault (a new process starts); returns the calls counted.
    pub fn disarm(&self) -> usize {
        let mut s = self.lock();
        s.armed = None;
        std::mem::take(&mut s.counted)
    }

    /// Counts calls from now without failing any (the length of a sweep).
    pub fn count_calls(&self) {
        let mut s = self.lock();
        s.counted = 0;
        s.armed = Some((usize::MAX, Fault::FailCall));
    }

    /// `virsh snapshot-create-as DOMAIN NAME --disk-only --atomic`: an external snapshot.
    /// Each disk but the read-only cloud-init seed (libvirt 9.0 with QEMU 7.2 left it out,
    /// seen in tests/e2e/disks.rs) gets a new qcow2 layer next to its file, named as libvirt names it (the file name's
    /// last `.suffix` replaced by `.NAME`; virDomainSnapshotDefAssignExternalNames), backed
    /// by the disk's file; the domain's disk (config and live) now opens the new layer,
    /// which the overlay pool lists (it is in its folder). Fails, changing nothing, when a
    /// snapshot of that name exists or a new layer's file does.
    pub fn snapshot_external(&self, domain: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "create snapshot";
        let mut s = self.lock();
        let d = s.domain(OP, domain)?.obs.clone();
        if d.snapshots.iter().any(|n| n == name) {
            return Err(err(OP, domain, HvErrorKind::Exists, format!("domain snapshot '{name}' already exists")));
        }
        let mut layers = Vec::new();
        for (i, disk) in d.disks.iter().enumerate() {
            let (dir, file) = disk.rsplit_once('/').unwrap_or(("", disk));
            if crate::guest::is_seed_volume(file) {
                continue;
            }
            let stem = match file.rsplit_once('.') {
                Some((stem, _)) => stem,
                None => file,
            };
            let new = format!("{dir}/{stem}.{name}");
            if s.volume_at(disk).is_none() {
                return Err(err(
                    OP,
                    domain,
                    HvErrorKind::Unsupported,
                    "the double snapshots overlay pool volumes only",
                ));
            }
            if s.volume_at(&new).is_some() {
                return Err(err(
                    OP,
                    domain,
                    HvErrorKind::Exists,
                    format!("external snapshot file for disk vd{i} already exists: '{new}'"),
                ));
            }
            layers.push((i, new));
        }
        for (i, new) in layers {
            let file = new.rsplit_once('/').map_or(new.as_str(), |(_, f)| f).to_owned();
            // In the same folder as the disk's file: a volume of the overlay pool.
            s.volumes.insert(file, d.disks[i].clone());
            s.domain(OP, domain)?.obs.disks[i] = new;
        }
        let o = &mut s.domain(OP, domain)?.obs;
        o.snapshots.push(name.to_owned());
        o.snapshots.sort();
        Ok(())
    }

    /// `virsh snapshot-create-as DOMAIN NAME`: an internal snapshot (its data inside the
    /// qcow2 images; only libvirt's metadata shows it).
    pub fn snapshot_internal(&self, domain: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "create snapshot";
        let mut s = self.lock();
        let o = &mut s.domain(OP, domain)?.obs;
        if o.snapshots.iter().any(|n| n == name) {
            return Err(err(OP, domain, HvErrorKind::Exists, format!("domain snapshot '{name}' already exists")));
        }
        o.snapshots.push(name.to_owned());
        o.snapshots.sort();
        Ok(())
    }

    /// The overlay pool's folder moved to `new` with a symlink left at the old path, and the
    /// pool redefined over `new` (`virsh pool-destroy`, `mv`, `ln -s`, `virsh pool-edit`,
    /// `pool-start`): its volumes are listed under `new`, while the domains' disks still
    /// name the old path, which opens the same files.
    pub fn move_pool_folder(&self, new: &str) {
        let mut s = self.lock();
        let new = new.trim_end_matches('/').to_owned();
        let Some(old) = s.pool.as_ref().map(|p| p.path.clone()) else { return };
        s.symlinks.insert(old, new.clone());
        if let Some(p) = s.pool.as_mut() {
            p.path = new;
        }
    }

    /// The snapshot names of `domain`, sorted (empty when it has none or is gone).
    pub fn snapshots(&self, domain: &str) -> Vec<String> {
        self.lock().domains.get(domain).map(|d| d.obs.snapshots.clone()).unwrap_or_default()
    }

    /// Pauses a running domain (`virsh suspend`).
    pub fn pause(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        let d = s.domain("suspend", name)?;
        if d.obs.state != DomainState::Running {
            return Err(err("suspend", name, HvErrorKind::NotActive, "domain is not running"));
        }
        d.obs.state = DomainState::Paused;
        Ok(())
    }

    /// Changes what the guest of `domain` holds (a file written in it), returning the new
    /// content; a revert to a snapshot taken before brings the old one back.
    pub fn write_guest(&self, domain: &str) -> u64 {
        let mut s = self.lock();
        let Some(d) = s.domains.get_mut(domain) else { return 0 };
        d.content += 1;
        d.content
    }

    /// What the guest of `domain` holds ([`MemoryHypervisor::write_guest`]); 0 for none.
    pub fn guest_content(&self, domain: &str) -> u64 {
        self.lock().domains.get(domain).map_or(0, |d| d.content)
    }

    /// NICs cut off by a network stop and not re-plugged since: (domain, MAC).
    pub fn cut_nics(&self) -> Vec<(String, crate::lab::model::MacAddr)> {
        self.lock().cut.iter().cloned().collect()
    }

    /// Sets what `domain_addresses` reports for `domain`.
    pub fn set_domain_addresses(&self, domain: &str, addrs: Vec<(crate::lab::model::MacAddr, std::net::Ipv4Addr)>) {
        self.lock().addresses.insert(domain.to_string(), addrs);
    }

    /// Volumes of the pool: (path, backing image).
    pub fn volumes(&self) -> Vec<(String, String)> {
        let s = self.lock();
        let dir = s.pool.as_ref().map(|p| p.path.clone()).unwrap_or_default();
        s.volumes.iter().map(|(n, b)| (format!("{dir}/{n}"), b.clone())).collect()
    }

    /// Every call so far, in order, as `"<method> <object>"` (e.g. `define_network lab-net`);
    /// `observe` is logged as `"observe"`. Failed calls are logged too.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Sets the DHCP leases `dhcp_leases(network)` returns.
    pub fn set_leases(&self, network: &str, leases: Vec<Lease>) {
        self.lock().leases.insert(network.to_owned(), leases);
    }
}

impl Hypervisor for MemoryHypervisor {
    fn uri(&self) -> String {
        MEMORY_URI.to_owned()
    }

    fn hostname(&self) -> Result<String, HvError> {
        Ok(self.lock().hostname.clone().unwrap_or_else(|| "memory".to_owned()))
    }

    fn observe_libvirt(&self) -> Result<Observed, HvError> {
        let mut s = self.lock();
        s.calls.push("observe".to_owned());
        if let Some(i) = s.faults.iter().position(|(o, _, _)| o == "observe") {
            let (_, _, e) = s.faults.remove(i);
            return Err(e);
        }
        let active_pool = s.pool.as_ref().filter(|p| p.active);
        let domains: BTreeMap<String, ObservedDomain> = s
            .domains
            .iter()
            .map(|(k, d)| {
                let mut o = d.obs.clone();
                o.persistent = d.persistent;
                if !d.persistent {
                    o.live = None; // a transient domain's only XML is its live one
                }
                o.taps = State::taps_of(d);
                (k.clone(), o)
            })
            .collect();
        let volumes: BTreeMap<String, ObservedVolume> = active_pool
            .map(|p| {
                s.volumes
                    .keys()
                    .map(|n| (n.clone(), ObservedVolume { name: n.clone(), path: format!("{}/{n}", p.path) }))
                    .collect()
            })
            .unwrap_or_default();
        // libvirt's key of a dir pool's volume is its path.
        let files =
            volumes.values().map(|v| (v.path.clone(), FileId { inode: None, key: Some(v.path.clone()) })).collect();
        Ok(Observed {
            files,
            networks: s.networks.clone(),
            domains,
            pool: s.pool.clone(),
            volumes,
            paths: BTreeMap::new(),
            ..Observed::default()
        })
    }

    fn define_network(&self, xml: &str) -> Result<(), HvError> {
        self.lock().define_network(xml)
    }

    fn start_network(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("start_network", name)?;
        let n = s.network("start_network", name)?;
        if n.active {
            return Err(err("start network", name, HvErrorKind::AlreadyActive, "network is already active"));
        }
        if let (Some(b), Some(taken)) = (n.bridge.clone(), s.host_interfaces.as_ref())
            && taken.contains(&b)
        {
            return Err(err(
                "start network",
                name,
                HvErrorKind::Other,
                format!("Unable to create bridge {b}: File exists"),
            ));
        }
        // libvirt src/network/bridge_driver_linux.c `networkCheckRouteCollision`: a route of
        // the host with exactly the network's subnet refuses the start.
        let subnet =
            s.networks[name].ip.as_ref().and_then(|ip| ipnetwork::Ipv4Network::new(ip.address, ip.prefix).ok());
        if let Some(subnet) = subnet
            && let Some(r) = s.routes().into_iter().find(|r| r.collides(subnet))
        {
            return Err(err(
                "start network",
                name,
                HvErrorKind::Other,
                format!("internal error: Network is already in use by interface {}", r.device),
            ));
        }
        let n = s.network("start_network", name)?;
        n.active = true;
        Ok(())
    }

    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("set_network_autostart", name)?;
        let n = s.network("set_network_autostart", name)?;
        if !n.persistent {
            return Err(err(
                "set network autostart",
                name,
                HvErrorKind::InvalidState,
                "cannot set autostart for transient network",
            ));
        }
        n.autostart = autostart;
        Ok(())
    }

    fn stop_network(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("stop_network", name)?;
        let users = s.running_users(name);
        let n = s.network("stop_network", name)?;
        if !n.active {
            return Err(err("stop network", name, HvErrorKind::NotActive, format!("network '{name}' is not active")));
        }
        // libvirt lets a network stop under running domains: their NICs lose the link
        // until they are re-plugged. Record that so tests can see what apply left cut.
        let _ = n;
        for d in &users {
            let macs: Vec<_> = s.domains[d]
                .obs
                .interfaces
                .iter()
                .filter(|i| i.network.as_deref() == Some(name))
                .filter_map(|i| i.mac)
                .collect();
            for m in macs {
                s.cut.insert((d.clone(), m));
            }
        }
        let n = s.network("stop_network", name)?;
        if n.persistent {
            n.active = false;
        } else {
            s.networks.remove(name);
            s.config.remove(name);
        }
        Ok(())
    }

    fn undefine_network(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("undefine_network", name)?;
        // libvirt's networkUndefine does not look at domains using the network.
        let n = s.network("undefine_network", name)?;
        if !n.persistent {
            return Err(err("undefine network", name, HvErrorKind::InvalidState, "network is not persistent"));
        }
        if n.active {
            // libvirt keeps an active network running as a transient one.
            n.persistent = false;
            n.autostart = false;
        } else {
            s.networks.remove(name);
            s.config.remove(name);
        }
        Ok(())
    }

    fn release_network(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("release_network", name)?;
        let n = s.network("release_network", name)?;
        // Defining a transient network's XML makes it persistent, as libvirt does.
        n.persistent = true;
        n.owner = None;
        if let Some(text) = s.config.get_mut(name)
            && let Ok(released) = crate::host::xml::without_owner("network", text)
        {
            *text = released;
        }
        Ok(())
    }

    fn network_config_xml(&self, name: &str) -> Result<String, HvError> {
        let mut s = self.lock();
        s.enter("network_config_xml", name)?;
        s.network("read network config", name)?;
        s.config.get(name).cloned().ok_or_else(|| {
            err("read network config", name, HvErrorKind::NotFound, format!("no config of network '{name}'"))
        })
    }

    fn update_dhcp_host(&self, network: &str, op: HostOp, host_xml: &str) -> Result<(), HvError> {
        const OP: &str = "update dhcp host";
        let mut s = self.lock();
        s.enter("update_dhcp_host", network)?;
        let host = xml::parse_dhcp_host(host_xml).map_err(|e| xml_err(OP, network, e))?;
        let n = s.network("update_dhcp_host", network)?;
        let Some(ip) = n.ip.as_mut() else {
            return Err(err(
                OP,
                network,
                HvErrorKind::InvalidState,
                format!("couldn't update dhcp host entry - no <ip> element found in network '{network}'"),
            ));
        };
        match op {
            HostOp::Add => {
                if ip.hosts.iter().any(|h| h.mac == host.mac || h.ip == host.ip) {
                    return Err(err(
                        OP,
                        network,
                        HvErrorKind::Exists,
                        format!("there is an existing dhcp host entry in network '{network}' that matches {host_xml}"),
                    ));
                }
                ip.hosts.push(host);
                ip.hosts.sort_by_key(|h| h.mac);
                if let Some(text) = s.config.get_mut(network)
                    && let Some(at) = text.find("</dhcp>")
                {
                    text.insert_str(at, host_xml);
                }
            }
            HostOp::Delete => {
                // libvirt matches a delete on mac, name or ip; topo always sends all three.
                let Some(i) = ip.hosts.iter().position(|h| h.mac == host.mac && h.ip == host.ip) else {
                    return Err(err(
                        OP,
                        network,
                        HvErrorKind::NotFound,
                        format!("couldn't locate a matching dhcp host entry in network '{network}'"),
                    ));
                };
                ip.hosts.remove(i);
                if let Some(text) = s.config.get_mut(network) {
                    *text = without_host(text, host.mac);
                }
            }
        }
        Ok(())
    }

    fn dhcp_leases(&self, network: &str) -> Result<Vec<Lease>, HvError> {
        let mut s = self.lock();
        s.enter("dhcp_leases", network)?;
        s.network("dhcp_leases", network)?;
        Ok(s.leases.get(network).cloned().unwrap_or_default())
    }

    fn define_domain(&self, xml: &str) -> Result<(), HvError> {
        self.lock().define_domain(xml)
    }

    fn start_domain(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("start_domain", name)?;
        let d = s.domain("start_domain", name)?.clone();
        if d.obs.state != DomainState::Shutoff {
            // libvirt says so for a paused domain too.
            return Err(err("start domain", name, HvErrorKind::AlreadyActive, "domain is already running"));
        }
        s.check_networks_active("start domain", name, &d.obs.interfaces)?;
        let d = &mut s.domain("start_domain", name)?.obs;
        d.state = DomainState::Running;
        d.live = Some(LiveConfig::of(d));
        let taps: Vec<_> =
            d.interfaces.iter().filter_map(|i| Some(((name.to_string(), i.mac?), fresh_tap(i)))).collect();
        s.taps.extend(taps);
        Ok(())
    }

    fn resume_domain(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("resume_domain", name)?;
        let d = &mut s.domain("resume_domain", name)?.obs;
        match d.state {
            DomainState::Shutoff => Err(err("resume domain", name, HvErrorKind::NotActive, "domain is not running")),
            // QEMU's resume of a running domain starts the CPUs again: nothing to do.
            _ => {
                d.state = DomainState::Running;
                Ok(())
            }
        }
    }

    fn suspend_domain(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("suspend_domain", name)?;
        let d = &mut s.domain("suspend_domain", name)?.obs;
        match d.state {
            DomainState::Shutoff => Err(err("suspend domain", name, HvErrorKind::NotActive, "domain is not running")),
            // Suspending a paused domain is a no-op in QEMU (`stop` of stopped CPUs).
            _ => {
                d.state = DomainState::Paused;
                Ok(())
            }
        }
    }

    fn create_snapshot(&self, domain: &str, name: &str, description: &str) -> Result<(), HvError> {
        const OP: &str = "create snapshot";
        let mut s = self.lock();
        s.enter("create_snapshot", domain)?;
        let d = s.domain("create_snapshot", domain)?.clone();
        if d.obs.snapshots.iter().any(|n| n == name) {
            return Err(err(OP, domain, HvErrorKind::Exists, format!("domain snapshot '{name}' already exists")));
        }
        // qemuSnapshotPrepare: an internal snapshot needs a qcow2 disk (the overlay); the
        // read-only raw seed is left out.
        let qcow2 = d.obs.disks.iter().any(|p| {
            let file = p.rsplit_once('/').map_or(p.as_str(), |(_, f)| f);
            !crate::guest::is_seed_volume(file) && s.volume_at(p).is_some()
        });
        if !qcow2 {
            return Err(err(
                OP,
                domain,
                HvErrorKind::Other,
                "unsupported configuration: internal and full system snapshots require all disks to be selected for snapshot",
            ));
        }
        let state = match d.obs.state {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::Shutoff => "shutoff",
            _ => "running",
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let info = crate::host::hypervisor::SnapshotInfo {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            created,
            state: state.to_owned(),
        };
        let dom = s.domain("create_snapshot", domain)?;
        dom.snaps.insert(name.to_owned(), MemSnapshot { info, content: d.content });
        dom.obs.snapshots.push(name.to_owned());
        dom.obs.snapshots.sort();
        Ok(())
    }

    fn snapshots(&self, domain: &str) -> Result<Vec<crate::host::hypervisor::SnapshotInfo>, HvError> {
        let mut s = self.lock();
        s.enter("snapshots", domain)?;
        let d = s.domain("list_snapshots", domain)?;
        Ok(d.obs
            .snapshots
            .iter()
            .map(|n| {
                d.snaps.get(n).map(|m| m.info.clone()).unwrap_or_else(|| crate::host::hypervisor::SnapshotInfo {
                    name: n.clone(),
                    description: None,
                    created: 0,
                    state: "running".into(),
                })
            })
            .collect())
    }

    fn revert_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "revert to snapshot";
        let mut s = self.lock();
        s.enter("revert_snapshot", domain)?;
        let d = s.domain("revert_snapshot", domain)?.clone();
        if !d.obs.snapshots.iter().any(|n| n == name) {
            return Err(err(
                OP,
                domain,
                HvErrorKind::NotFound,
                format!("Domain snapshot not found: no domain snapshot with matching name '{name}'"),
            ));
        }
        let snap = d.snaps.get(name).cloned();
        if d.obs.state == DomainState::Shutoff {
            // A snapshot of a running domain starts it again (paused), as a start would.
            s.check_networks_active(OP, domain, &d.obs.interfaces)?;
            let taps: Vec<_> =
                d.obs.interfaces.iter().filter_map(|i| Some(((domain.to_string(), i.mac?), fresh_tap(i)))).collect();
            s.taps.extend(taps);
        }
        let dom = s.domain("revert_snapshot", domain)?;
        if dom.obs.state == DomainState::Shutoff {
            dom.obs.live = Some(LiveConfig::of(&dom.obs));
        }
        dom.obs.state = DomainState::Paused;
        if let Some(m) = snap {
            dom.content = m.content;
        }
        Ok(())
    }

    fn delete_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("delete_snapshot", domain)?;
        let d = s.domain("delete_snapshot", domain)?;
        let Some(i) = d.obs.snapshots.iter().position(|n| n == name) else {
            return Err(err(
                "delete snapshot",
                domain,
                HvErrorKind::NotFound,
                format!("Domain snapshot not found: no domain snapshot with matching name '{name}'"),
            ));
        };
        d.obs.snapshots.remove(i);
        d.snaps.remove(name);
        Ok(())
    }

    fn shutdown_domain(&self, name: &str) -> Result<(), HvError> {
        self.power_off("shutdown_domain", name)
    }

    fn destroy_domain(&self, name: &str) -> Result<(), HvError> {
        self.power_off("destroy_domain", name)
    }

    fn undefine_domain(&self, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("undefine_domain", name)?;
        let d = s.domain("undefine_domain", name)?;
        if !d.persistent {
            return Err(err("undefine domain", name, HvErrorKind::InvalidState, "cannot undefine transient domain"));
        }
        if d.obs.state == DomainState::Shutoff {
            // qemuDomainUndefineFlags: an inactive domain with snapshot metadata is refused
            // unless VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA (topo never passes it); a running
            // one becomes transient and keeps them until it stops.
            let n = d.obs.snapshots.len();
            if n > 0 {
                return Err(err(
                    "undefine domain",
                    name,
                    HvErrorKind::InvalidState,
                    format!("Requested operation is not valid: cannot delete inactive domain with {n} snapshots"),
                ));
            }
            s.domains.remove(name);
        } else {
            d.persistent = false;
        }
        Ok(())
    }

    fn delete_snapshot_metadata(&self, domain: &str, snapshot: &str) -> Result<(), HvError> {
        const OP: &str = "delete snapshot metadata";
        let mut s = self.lock();
        s.enter("delete_snapshot_metadata", domain)?;
        let o = &mut s.domain("delete_snapshot_metadata", domain)?.obs;
        let Some(i) = o.snapshots.iter().position(|n| n == snapshot) else {
            return Err(err(
                OP,
                domain,
                HvErrorKind::NotFound,
                format!("Domain snapshot not found: no domain snapshot with matching name '{snapshot}'"),
            ));
        };
        // METADATA_ONLY: the files and the images' internal snapshots stay.
        o.snapshots.remove(i);
        if let Some(d) = s.domains.get_mut(domain) {
            d.snaps.remove(snapshot);
        }
        Ok(())
    }

    fn attach_device(&self, domain: &str, xml: &str) -> Result<(), HvError> {
        const OP: &str = "attach device";
        let mut s = self.lock();
        s.enter("attach_device", domain)?;
        let mut iface = State::parse_iface(OP, domain, xml)?;
        let d = s.domain("attach_device", domain)?.clone();
        if let Some(mac) = iface.mac
            && d.obs.interfaces.iter().any(|i| i.mac == Some(mac))
        {
            return Err(err(OP, domain, HvErrorKind::Exists, format!("network device with mac {mac} already exists")));
        }
        if d.obs.state == DomainState::Running {
            s.check_networks_active(OP, domain, std::slice::from_ref(&iface))?;
        }
        if iface.mac.is_none() {
            iface.mac = Some(s.next_mac());
        }
        if d.obs.state == DomainState::Running
            && let Some(mac) = iface.mac
        {
            s.taps.insert((domain.to_string(), mac), fresh_tap(&iface));
        }
        s.domain("attach_device", domain)?.obs.interfaces.push(iface);
        Ok(())
    }

    fn detach_device(&self, domain: &str, xml: &str) -> Result<(), HvError> {
        const OP: &str = "detach device";
        let mut s = self.lock();
        s.enter("detach_device", domain)?;
        let iface = State::parse_iface(OP, domain, xml)?;
        let d = s.domain("detach_device", domain)?;
        let Some(mac) = iface.mac else {
            return Err(err(OP, domain, HvErrorKind::InvalidXml, "detaching an interface needs its MAC address"));
        };
        let Some(i) = d.obs.interfaces.iter().position(|i| i.mac == Some(mac)) else {
            return Err(err(OP, domain, HvErrorKind::NotFound, format!("no device matching MAC address {mac} found")));
        };
        let running = d.obs.state == DomainState::Running;
        if running {
            s.drop_redirects(domain, Some(mac));
        }
        let d = s.domain("detach_device", domain)?;
        d.obs.interfaces.remove(i);
        s.cut.remove(&(domain.to_string(), mac));
        s.taps.remove(&(domain.to_string(), mac));
        Ok(())
    }

    fn domain_state(&self, name: &str) -> Result<DomainState, HvError> {
        let mut s = self.lock();
        s.enter("domain_state", name)?;
        Ok(s.domain("domain_state", name)?.obs.state)
    }

    fn set_bandwidth(&self, domain: &str, mac: MacAddr, rate: Option<crate::lab::impair::Rate>) -> Result<(), HvError> {
        const OP: &str = "set interface bandwidth";
        let mut s = self.lock();
        s.enter("set_bandwidth", domain)?;
        let d = s.domain("set_bandwidth", domain)?;
        if d.obs.state != DomainState::Running {
            // libvirt's qemuDomainSetInterfaceParameters with VIR_DOMAIN_AFFECT_LIVE.
            return Err(err(OP, domain, HvErrorKind::InvalidState, "domain is not running"));
        }
        if !d.obs.interfaces.iter().any(|i| i.mac == Some(mac)) {
            return Err(err(OP, domain, HvErrorKind::NotFound, format!("Can't find device {mac}")));
        }
        // virNetDevBandwidthSet: the tap's root and ingress qdiscs are deleted, then libvirt's
        // own are added (an htb root when there is an inbound limit): netem is gone.
        s.taps.insert((domain.to_string(), mac), crate::lab::impair::TapQdiscs { htb: rate.is_some(), netem: None });
        Ok(())
    }

    fn domain_taps(&self, name: &str) -> Result<Vec<(MacAddr, String)>, HvError> {
        let mut s = self.lock();
        s.enter("domain_taps", name)?;
        let d = s.domain("domain_taps", name)?;
        if d.obs.state != DomainState::Running {
            return Err(err("domain taps", name, HvErrorKind::NotActive, "domain is not running"));
        }
        Ok(State::taps_of(d))
    }

    fn domain_addresses(&self, name: &str) -> Result<Vec<(crate::lab::model::MacAddr, std::net::Ipv4Addr)>, HvError> {
        let mut s = self.lock();
        s.enter("domain_addresses", name)?;
        s.domain("domain_addresses", name)?;
        Ok(s.addresses.get(name).cloned().unwrap_or_default())
    }

    fn ensure_pool(&self, name: &str, path: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter("ensure_pool", name)?;
        match &mut s.pool {
            Some(p) if p.name == name => p.active = true,
            Some(p) => {
                return Err(err(
                    "ensure pool",
                    name,
                    HvErrorKind::Unsupported,
                    format!("the double holds one pool ({})", p.name),
                ));
            }
            None => {
                s.pool = Some(ObservedPool { name: name.into(), path: path.trim_end_matches('/').into(), active: true })
            }
        }
        Ok(())
    }

    fn create_volume(&self, v: &VolumeSpec) -> Result<(), HvError> {
        const OP: &str = "create volume";
        let mut s = self.lock();
        s.enter("create_volume", &v.name)?;
        s.active_pool(OP, &v.pool)?;
        if s.volumes.contains_key(&v.name) {
            return Err(err(OP, &v.name, HvErrorKind::Exists, format!("storage volume '{}' exists already", v.name)));
        }
        s.volumes.insert(v.name.clone(), v.backing.clone());
        Ok(())
    }

    fn upload_volume(&self, pool: &str, name: &str, data: &[u8]) -> Result<(), HvError> {
        const OP: &str = "upload volume";
        let mut s = self.lock();
        let entered = s.enter("upload_volume", name);
        // Killed during the stream: the volume is there (libvirt creates it first, of the full
        // capacity) with part of the bytes.
        let cut_short = std::mem::take(&mut s.cut_short);
        if entered.is_ok() || cut_short {
            s.active_pool(OP, pool)?;
            let kept = if cut_short { &data[..data.len() / 2] } else { data };
            s.volumes.insert(name.to_string(), "raw".to_string());
            s.uploads.insert(name.to_string(), kept.to_vec());
        }
        entered
    }

    fn clone_volume(&self, pool: &str, from: &str, to: &str) -> Result<(), HvError> {
        const OP: &str = "copy volume";
        let mut s = self.lock();
        s.enter("clone_volume", to)?;
        s.active_pool(OP, pool)?;
        if !s.volumes.contains_key(from) {
            return Err(err(
                OP,
                from,
                HvErrorKind::NotFound,
                format!("Storage volume not found: no storage vol with matching name '{from}'"),
            ));
        }
        // A volume named `to` is deleted first (as the libvirt implementation does).
        let data = s.uploads.get(from).cloned();
        s.volumes.insert(to.to_string(), "raw".to_string());
        match data {
            Some(d) => s.uploads.insert(to.to_string(), d),
            None => s.uploads.remove(to),
        };
        Ok(())
    }

    fn download_volume(&self, pool: &str, name: &str) -> Result<Vec<u8>, HvError> {
        const OP: &str = "download volume";
        let mut s = self.lock();
        s.enter("download_volume", name)?;
        s.active_pool(OP, pool)?;
        match (s.volumes.contains_key(name), s.uploads.get(name)) {
            (true, Some(data)) => Ok(data.clone()),
            // A qcow2 overlay: libvirt would send its bytes; the double has none.
            (true, None) => Err(err(OP, name, HvErrorKind::Unsupported, "the double keeps no overlay bytes")),
            (false, _) => Err(err(
                OP,
                name,
                HvErrorKind::NotFound,
                format!("Storage volume not found: no storage vol with matching name '{name}'"),
            )),
        }
    }

    fn storage_pools(&self) -> Result<Vec<StoragePoolInfo>, HvError> {
        let mut s = self.lock();
        s.enter("storage_pools", "")?;
        let overlay = s.pool.iter().map(|p| StoragePoolInfo {
            name: p.name.clone(),
            active: p.active,
            path: Some(p.path.clone()),
        });
        let others = s.storage.iter().map(|(n, p)| StoragePoolInfo {
            name: n.clone(),
            active: p.active,
            path: Some(p.path.clone()),
        });
        let mut out: Vec<StoragePoolInfo> = overlay.chain(others).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn refresh_pool(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "refresh pool";
        let mut s = self.lock();
        s.enter("refresh_pool", name)?;
        if s.pool.as_ref().is_some_and(|p| p.name == name) {
            s.active_pool(OP, name)?;
            return Ok(()); // its volumes are made through libvirt: always listed
        }
        match s.storage.get_mut(name) {
            // virStoragePoolRefresh: "storage pool '%s' is not active" (OPERATION_INVALID).
            Some(p) if !p.active => {
                Err(err(OP, name, HvErrorKind::InvalidState, format!("storage pool '{name}' is not active")))
            }
            Some(p) => {
                p.listed = p.files.clone();
                Ok(())
            }
            None => Err(err(OP, name, HvErrorKind::NotFound, format!("no storage pool with matching name '{name}'"))),
        }
    }

    fn volume_by_path(&self, path: &str) -> Result<StorageVolumeInfo, HvError> {
        const OP: &str = "look up volume";
        let mut s = self.lock();
        s.enter("volume_by_path", path)?;
        // virStorageVolLookupByPath searches the volumes active pools list, by their path
        // (folder + "/" + name).
        let split = path.rsplit_once('/');
        if let (Some(p), Some((dir, file))) = (s.pool.as_ref().filter(|p| p.active), split)
            && p.path == dir
            && let Some(backing) = s.volumes.get(file)
        {
            // Overlays are qcow2; uploaded volumes (the seeds) are raw.
            let format = if backing == "raw" { "raw" } else { "qcow2" };
            return Ok(StorageVolumeInfo {
                pool: p.name.clone(),
                name: file.into(),
                format: Some(format.into()),
                capacity: None,
                backing: Some(backing.clone()).filter(|b| b != "raw" && !b.is_empty()),
                key: Some(path.into()),
            });
        }
        for (name, p) in s.storage.iter().filter(|(_, p)| p.active) {
            if let Some((dir, file)) = split
                && p.path == dir
                && let Some(f) = p.listed.get(file)
            {
                return Ok(StorageVolumeInfo {
                    pool: name.clone(),
                    name: file.into(),
                    format: Some(f.format.clone()),
                    capacity: f.capacity,
                    backing: None,
                    key: Some(path.into()),
                });
            }
        }
        Err(err(
            OP,
            path,
            HvErrorKind::NotFound,
            format!("Storage volume not found: no storage vol with matching path '{path}'"),
        ))
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "delete volume";
        let mut s = self.lock();
        s.enter("delete_volume", name)?;
        s.active_pool(OP, pool)?;
        // virStorageVolDelete does not look at domains: a volume in use goes too.
        s.uploads.remove(name);
        match s.volumes.remove(name) {
            Some(_) => Ok(()),
            None => Err(err(
                OP,
                name,
                HvErrorKind::NotFound,
                format!("Storage volume not found: no storage vol with matching name '{name}'"),
            )),
        }
    }
}

impl MemoryHypervisor {
    fn power_off(&self, op: &str, name: &str) -> Result<(), HvError> {
        let mut s = self.lock();
        s.enter(op, name)?;
        if s.domain(op, name)?.obs.state == DomainState::Shutoff {
            return Err(err(&op_words(op), name, HvErrorKind::NotActive, "domain is not running"));
        }
        s.drop_redirects(name, None);
        let d = s.domain(op, name)?;
        if d.persistent {
            d.obs.state = DomainState::Shutoff;
            d.obs.live = None;
        } else {
            s.domains.remove(name);
        }
        // Its taps go with the QEMU process; the next start plugs new ones.
        s.cut.retain(|(dom, _)| dom != name);
        s.taps.retain(|(dom, _), _| dom != name);
        Ok(())
    }
}
