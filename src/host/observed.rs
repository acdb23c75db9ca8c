//! What the host has: libvirt networks and domains as observed, classified by owner.
//!
//! Filled by a `Hypervisor` in one pass before planning; the planner reads it and does no I/O.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::lab::model::{DhcpRange, MacAddr, NetworkMode};

pub use crate::lab::ownership::{OWNER_NS, OwnerTag, Ownership};

/// libvirt's `<forward mode>` as found on the host; modes topo does not create are `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ObservedMode {
    Known(NetworkMode),
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedHost {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub dhcp_range: Option<DhcpRange>,
    /// `<host>` entries of `<dhcp>`, sorted by MAC.
    pub hosts: Vec<ObservedHost>,
}

/// A network's IPv6 `<ip family='ipv6' address prefix>`: the bridge's address and the
/// prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedIp6 {
    pub address: Ipv6Addr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedNetwork {
    pub name: String,
    pub uuid: Option<String>,
    pub active: bool,
    pub persistent: bool,
    pub autostart: bool,
    pub mode: ObservedMode,
    /// Bridge name (libvirt fills `virbrN` in when the XML named none).
    pub bridge: Option<String>,
    /// Bridge of the running network (its live XML); `None` when inactive. It differs from
    /// `bridge` (the persistent config) when the config was redefined without a bridge name
    /// while the network ran: libvirt then gives the config another free `virbrN`.
    pub live_bridge: Option<String>,
    /// `stp` attribute of `<bridge>`; libvirt's default when absent is on.
    pub stp: bool,
    /// The bridge's own MAC (`<mac address>`): the one topo derives for a lab network
    /// (`MacAddr::derived_bridge`), else libvirt's network driver generates one
    /// (`52:54:00:..`, random) at define for the bridges it creates (forward none, nat,
    /// route, open) and sets it on the bridge. `None` when the XML names none (a
    /// `<forward mode='bridge'/>` network onto a host bridge, libvirt's test driver).
    pub mac: Option<MacAddr>,
    /// `<mtu size>` in bytes: the MTU libvirt gives the bridge and its taps; `None` when the
    /// XML has none (the bridge's default, 1500).
    pub mtu: Option<u32>,
    /// First IPv4 `<ip>` element, if any.
    pub ip: Option<ObservedIp>,
    /// First IPv6 `<ip family='ipv6'>` element, if any.
    pub ip6: Option<ObservedIp6>,
    /// False when dnsmasq runs with `no-ping` (set through dnsmasq:options).
    pub dhcp_ping: bool,
    pub owner: Option<OwnerTag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    Running,
    Paused,
    Shutoff,
    /// Crashed, suspended by the host, shutting down, ...
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedInterface {
    pub mac: Option<MacAddr>,
    /// `<source network=...>` for `type='network'` interfaces; None for other types.
    pub network: Option<String>,
    /// `<source bridge=...>`: the bridge of a `type='bridge'` interface, and of a running
    /// `type='network'` interface (libvirt writes it into the live XML).
    pub bridge: Option<String>,
    pub model: Option<String>,
    /// `<bandwidth>`: libvirt's rate limit of the interface, when it has one.
    pub bandwidth: Option<crate::lab::impair::ObservedBandwidth>,
    /// `<mtu size>` in bytes: the MTU the guest's virtio NIC is given (`host_mtu`); `None`
    /// when the interface has none.
    pub mtu: Option<u32>,
    /// `<target dev>` of a `type='ethernet'` interface (a wire end): the tap libvirt makes
    /// under that name. `None` for other types, whose taps libvirt names itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethernet: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedDomain {
    pub name: String,
    pub uuid: Option<String>,
    pub state: DomainState,
    /// `type` attribute of `<domain>`: `qemu`, `kvm`, ...
    pub virt_type: String,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// Source paths of the disks, in device order.
    pub disks: Vec<String>,
    /// The backing chain under each disk of `disks` (same order): its backing file, then
    /// that file's backing file, and so on, as far as `observe` could follow it. A running
    /// domain's live XML lists the chain (`<backingStore>`); for the persistent config
    /// `observe` follows it through the files' qcow2 headers (local host) or libvirt's
    /// volumes (`<backingStore><path>` of `virsh vol-dumpxml`). After an external snapshot
    /// (`virsh snapshot-create-as VM s1 --disk-only`) a disk's source is the new layer and
    /// the overlay it was before is the first file here.
    pub backing: Vec<Vec<String>>,
    /// False when some disk's chain could not be followed to its end (a layer that could not
    /// be read): then any file might be in use by this domain.
    pub chains_known: bool,
    /// Files the running domain opens that its persistent config's chains do not name (a
    /// define since it started changed a disk): each live disk's whole chain, less those.
    pub live_only: Vec<String>,
    /// The names of the domain's snapshots (libvirt's snapshot metadata, internal or
    /// external), sorted. libvirt refuses to undefine an inactive domain that has any
    /// unless asked to drop them.
    pub snapshots: Vec<String>,
    /// Interfaces in device order (the persistent config when the domain is defined).
    pub interfaces: Vec<ObservedInterface>,
    pub owner: Option<OwnerTag>,
    /// Whether libvirt keeps a persistent config of the domain (virDomainIsPersistent).
    /// False for a transient domain: one undefined (`virsh undefine`) while it runs, which
    /// libvirt keeps running until it stops and then forgets.
    pub persistent: bool,
    /// What the running domain actually runs with, when it is active and persistent: the
    /// fields above are the persistent config, which a define changes without a restart.
    /// `None` for an inactive domain.
    pub live: Option<LiveConfig>,
    /// Where each NIC of the running domain is plugged on this host, in device order: its
    /// tap and the bridge that tap is a port of. `None` when not known: the domain is not
    /// running, the host is remote, or its taps are not visible from here (topo runs in
    /// another network namespace than the daemon).
    pub links: Option<Vec<NicLink>>,
    /// The tap of each NIC of the running domain, by MAC, in device order: `<target dev>` of
    /// its live XML (what libvirt says; [`crate::host::Host::observe`] asks the machine where
    /// each is plugged, for `links`). Empty when the domain is not running. Not part of the
    /// saved plan's fingerprint (`links` carries the taps that matter).
    #[serde(skip)]
    pub taps: Vec<(MacAddr, String)>,
    /// The running domain's disks as its live XML lists them (a transient domain's only XML),
    /// each with the backing chain libvirt writes there (`<backingStore>`): what libvirt tells
    /// of the chains beyond the persistent config, from which [`crate::host::Host::observe`]
    /// completes `backing`, `chains_known` and `live_only`. `None` when the domain does not
    /// run. Not part of the saved plan's fingerprint (those three carry what matters).
    #[serde(skip)]
    pub live_disks: Option<DiskChains>,
    /// The files of the domain's cloud-init seed volume (`(name, text)`), read back from the
    /// host for the plan's diff. `observe` leaves it `None`:
    /// [`crate::host::hypervisor::read_changed_seeds`] fills it only where the seed differs from
    /// the lab's (and it could be read).
    pub seed: Option<Vec<(String, String)>>,
}

/// A domain's disks with their backing chains, as one XML of it lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskChains {
    /// Source paths of the disks, in device order.
    pub disks: Vec<String>,
    /// The chain under each disk of `disks` (same order), top down.
    pub backing: Vec<Vec<String>>,
    /// Whether every chain is listed to its end (the empty `<backingStore/>`).
    pub known: bool,
}

impl DiskChains {
    /// The disks and chains of `d` (its XML parsed).
    pub fn of(d: &ObservedDomain) -> Self {
        Self { disks: d.disks.clone(), backing: d.backing.clone(), known: d.chains_known }
    }

    /// Every file the disks open: each source and its chain.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.disks.iter().chain(self.backing.iter().flatten()).map(String::as_str)
    }
}

/// A running domain's NIC as plugged on the host: libvirt connects each NIC's tap to its
/// network's bridge when the domain starts, and a network stopped and started again (by hand,
/// `virsh net-destroy` + `net-start`) comes back with a new bridge that no tap is on: the
/// guests are cut off until their NICs are plugged in again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicLink {
    pub mac: MacAddr,
    /// The host's tap device: `<target dev>` of the live XML (`vnet3`).
    pub tap: String,
    /// The bridge the tap is a port of (`/sys/class/net/TAP/master`); `None` when it is on
    /// no bridge.
    pub bridge: Option<String>,
    /// The tap's egress qdiscs (from one `tc -j qdisc show` of every device), for netem; `None` when they
    /// could not be read (no `tc` on this machine).
    pub qdiscs: Option<crate::lab::impair::TapQdiscs>,
}

/// The restart-bound settings of a running domain as its live XML shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveConfig {
    pub virt_type: String,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

impl LiveConfig {
    /// The restart-bound settings of `d` (its persistent config, or its live XML parsed).
    pub fn of(d: &ObservedDomain) -> Self {
        Self {
            virt_type: d.virt_type.clone(),
            memory_kib: d.memory_kib,
            vcpus: d.vcpus,
            kernel: d.kernel.clone(),
            initrd: d.initrd.clone(),
            cmdline: d.cmdline.clone(),
        }
    }
}

/// The overlay storage pool ([`crate::lab::ownership::OVERLAY_POOL`]) as found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedPool {
    pub name: String,
    /// The pool's target folder.
    pub path: String,
    pub active: bool,
}

/// A volume of the overlay pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedVolume {
    pub name: String,
    /// Full path (the pool's folder and the name).
    pub path: String,
}

/// Everything topo looked at on the host, keyed by libvirt name (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub networks: BTreeMap<String, ObservedNetwork>,
    pub domains: BTreeMap<String, ObservedDomain>,
    /// The overlay pool, when it exists (looked up by name, active or not).
    pub pool: Option<ObservedPool>,
    /// Volumes of the overlay pool, by name (empty when the pool is missing or inactive).
    pub volumes: BTreeMap<String, ObservedVolume>,
    /// Names of the network interfaces on the libvirt host (Linux `/sys/class/net`),
    /// libvirt's own bridges and taps included. `None` when topo cannot see them: a remote
    /// or test URI (the interfaces of the machine topo runs on would be the wrong ones).
    pub host_interfaces: Option<std::collections::BTreeSet<String>>,
    /// What the libvirt host's kernel lacks for link impairment (netem, libvirt's
    /// `<bandwidth>` qdiscs), read from its build config on a local real driver. `None` when
    /// unknown: a remote or test URI, or no readable config (`/proc/config.gz`,
    /// `/boot/config-RELEASE`); then nothing is refused on its account.
    pub kernel: Option<crate::host::kernel::KernelSupport>,
    /// The MACs each active network's bridge holds as its own (its address and its ports'),
    /// by bridge name, read from `/sys/class/net` on a local real driver; empty when topo
    /// cannot see the bridges (remote or test URI, another network namespace).
    pub bridge_macs: BTreeMap<String, std::collections::BTreeSet<MacAddr>>,
    /// The IPv4 routes of the libvirt host's main table (`/proc/net/route`), read on a local
    /// real driver, in the file's order; `None` when topo cannot see them (a remote or test
    /// URI). libvirt refuses to start a network whose subnet is one of them
    /// ([`HostRoute::collides`]); the planner refuses it first.
    pub host_routes: Option<Vec<HostRoute>>,
    /// The IPv6 routes of the libvirt host (`/proc/net/ipv6_route`), as `host_routes`;
    /// `None` when topo cannot see them. A lab's `subnet6` may not overlap one that is not
    /// a libvirt network's ([`HostRoute6::overlaps`]).
    pub host_routes6: Option<Vec<HostRoute6>>,
    /// What libvirt's storage API says about each file the lab's domains open (kernel,
    /// initrd, base image), by path, when the libvirt host is not this machine
    /// ([`crate::host::hypervisor::observe_paths`]); on a local host, each base image's header read
    /// from the disk ([`PathFact::File`], [`observe_images`]; the
    /// existence of every file validation checks there itself). Empty when not gathered.
    pub paths: BTreeMap<String, PathFact>,
    /// What identifies each file the domains' disks open (sources and backing chains) and
    /// each overlay volume, by path: two paths name the same file when their identities say
    /// so ([`FileId::same`]), whatever the strings (a pool folder moved and a symlink left at
    /// the old path). Empty when not observed.
    pub files: BTreeMap<String, FileId>,
    /// Every VXLAN device of the machine that runs the host, by device name, owned or not
    /// (lab networks stretched across hosts, `crate::lab::hosts`); `None` when topo cannot
    /// reach the machine (the test driver, a host without its machine) or cannot read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnels: Option<BTreeMap<String, crate::host::tunnel::ObservedTunnel>>,
    /// The machine's own IPv4 addresses (a tunnel's source must be one), each with the device
    /// that holds it and that device's MTU (what the tunnel's frames must fit); `None` when
    /// unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_addresses: Option<BTreeMap<std::net::Ipv4Addr, crate::host::tunnel::HostAddress>>,
    /// The programs topo runs on the machine of the host that it lacks, and whether that
    /// machine is another host's ([`crate::host::machine::Machine::missing_tools`]); `None`
    /// when topo cannot reach the machine or ask it. Not part of the saved plan's fingerprint:
    /// what it refuses is checked again before a saved plan executes.
    #[serde(skip)]
    pub tools: Option<crate::host::tools::MachineTools>,
    /// The wire ends' taps of running domains (`type='ethernet'` interfaces whose tap has a
    /// wire tap's name, [`crate::lab::wire::is_wire_tap`]), each with the device its
    /// ingress filter redirects to (`"*"`: a device since gone), `None` when it has none.
    /// Empty when there are none or the machine cannot be read.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub wire_redirects: BTreeMap<String, Option<String>>,
}

/// What identifies a file on the libvirt host, as far as topo could learn it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileId {
    /// `(st_dev, st_ino)` from `stat(2)`, following symlinks: on a local host only.
    pub inode: Option<(u64, u64)>,
    /// libvirt's key of the storage volume at this path (`virStorageVolGetKey`), when an
    /// active pool holds one there.
    pub key: Option<String>,
}

/// Whether two paths name the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Same {
    Yes,
    No,
    /// Nothing observed decides it (no stat on a remote host, no volume at one of the paths)
    /// and the file names are the same: treated as the same file wherever deleting is at stake.
    Maybe,
}

impl Observed {
    /// The active networks whose live bridge (else the configured one) is not among the host's interfaces though topo
    /// sees them ([`Observed::host_interfaces`]), as `(network, bridge)`: topo runs in another
    /// network namespace than libvirtd (whose bridges live in its own), so every ARP proof
    /// would fail. Empty when topo cannot see the interfaces (remote or test URI).
    pub fn bridges_out_of_sight(&self) -> Vec<(&str, &str)> {
        let Some(seen) = &self.host_interfaces else { return Vec::new() };
        self.networks
            .values()
            .filter(|n| n.active)
            .filter_map(|n| n.bridge_now().map(|b| (n.name.as_str(), b)))
            .filter(|(_, b)| !seen.contains(*b))
            .collect()
    }

    /// Whether paths `a` and `b` name the same file: the same string, or the same
    /// `(dev, inode)` (authoritative when both are known), or the same libvirt volume key.
    /// Unknown identities with equal file names are [`Same::Maybe`].
    pub fn same_file(&self, a: &str, b: &str) -> Same {
        if a == b {
            return Same::Yes;
        }
        let (ia, ib) = (self.files.get(a), self.files.get(b));
        if let (Some(x), Some(y)) = (ia.and_then(|f| f.inode), ib.and_then(|f| f.inode)) {
            return if x == y { Same::Yes } else { Same::No };
        }
        if let (Some(x), Some(y)) = (ia.and_then(|f| f.key.as_ref()), ib.and_then(|f| f.key.as_ref())) {
            return if x == y { Same::Yes } else { Same::No };
        }
        let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
        if name(a) == name(b) { Same::Maybe } else { Same::No }
    }
}

/// One IPv4 route of the host, as `/proc/net/route` lists it: the device and the
/// destination with its netmask (the destination already masked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRoute {
    /// The route's device (`Iface`): `tun0`, `docker0`, `virbr0`, ...
    pub device: String,
    pub destination: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl HostRoute {
    /// Whether libvirt refuses to start a network with `subnet` because of this route: the
    /// route's masked destination and netmask are exactly the subnet's network address and
    /// netmask (a route to a larger or smaller prefix does not collide). Source of the rule:
    /// libvirt src/network/bridge_driver_linux.c `networkCheckRouteCollision`, called by
    /// `networkStartNetworkVirtual` before the bridge is made ("Network is already in use by
    /// interface %s").
    pub fn collides(&self, subnet: ipnetwork::Ipv4Network) -> bool {
        self.destination == subnet.network() && self.netmask == subnet.mask()
    }

    /// The routes of `/proc/net/route`'s text, read as libvirt's
    /// `networkCheckRouteCollision` reads them: nothing unless the text starts with the
    /// `Iface` header line; then per line the 1st (device), 2nd (destination) and 8th (mask)
    /// fields, the two addresses in hex as the kernel prints a network-order `__be32` on this
    /// machine; lines that do not parse are skipped. The destination is masked.
    pub fn parse_proc_net_route(text: &str) -> Vec<HostRoute> {
        if !text.starts_with("Iface") {
            return Vec::new();
        }
        let addr = |hex: &str| u32::from_str_radix(hex, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (device, dest, mask) = (f.first()?, f.get(1)?, f.get(7)?);
                let (dest, mask) = (addr(dest)?, addr(mask)?);
                Some(HostRoute {
                    device: (*device).to_string(),
                    destination: Ipv4Addr::from(u32::from(dest) & u32::from(mask)),
                    netmask: mask,
                })
            })
            .collect()
    }
}

/// One IPv6 route of the host, as `/proc/net/ipv6_route` lists it: the device and the
/// destination prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRoute6 {
    /// The route's device (the file's last field): `tun0`, `docker0`, `virbr0`, `lo`, ...
    pub device: String,
    pub destination: Ipv6Addr,
    pub prefix: u8,
}

impl HostRoute6 {
    /// Whether this route takes addresses of a lab's `prefix` elsewhere: a route (not the
    /// default route, not a host's own /128) whose destination overlaps it. topo's own rule:
    /// libvirt checks IPv4 routes only (`networkCheckRouteCollision`), and the kernel would
    /// take a second route to the prefix, so guests would be reachable or not by metric.
    pub fn overlaps(&self, prefix: ipnetwork::Ipv6Network) -> bool {
        if self.prefix == 0 || self.prefix == 128 {
            return false;
        }
        ipnetwork::Ipv6Network::new(self.destination, self.prefix)
            .is_ok_and(|r| r.contains(prefix.network()) || prefix.contains(r.network()))
    }

    /// The routes of `/proc/net/ipv6_route`'s text (net/ipv6/route.c `rt6_info_seq_show`):
    /// per line the destination (32 hex digits), its prefix length (2 hex digits) and, as the
    /// last field, the device; lines that do not parse are skipped.
    pub fn parse_proc_net_ipv6_route(text: &str) -> Vec<HostRoute6> {
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (dest, len, device) = (f.first()?, f.get(1)?, f.last()?);
                if f.len() < 10 {
                    return None;
                }
                let destination = Ipv6Addr::from(u128::from_str_radix(dest, 16).ok()?);
                let prefix = u8::from_str_radix(len, 16).ok()?;
                Some(HostRoute6 { device: (*device).to_string(), destination, prefix })
            })
            .collect()
    }
}

/// What libvirt can tell about a file a domain will open, through its storage pools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathFact {
    /// A volume of active pool `pool` (the file exists there); `format` is the volume's
    /// `<target><format type>` as the pool's backend found it, `capacity` its `<capacity>`
    /// in bytes (the virtual size the backend read from the format's header; a raw file's
    /// length).
    Volume { pool: String, format: Option<String>, capacity: Option<u64> },
    /// A base image on this machine's disk (a local libvirt host), its header read by topo
    /// ([`crate::host::image::read_header`], bounded). `Err` says why it could not be read.
    File(Result<crate::host::image::ImageHeader, String>),
    /// The file's folder is the folder of active pool `pool`, just refreshed, and the pool
    /// has no volume of that name: there is no regular file at the path (a directory pool
    /// lists every regular file of its folder).
    Missing { pool: String },
    /// No active pool covers the file's folder, so libvirt cannot say whether it exists;
    /// `inactive_pool` names a pool over that folder that is defined but not started.
    Unchecked { inactive_pool: Option<String> },
}

/// A DHCP lease from libvirt's dnsmasq (`virNetworkGetDHCPLeases`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub network: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    /// Seconds since the epoch when the lease expires.
    pub expiry: i64,
}

impl ObservedNetwork {
    /// The bridge the network is on: the running network's (its live XML), else the one its
    /// config names. libvirt 9.0 can give a config redefined without a bridge name another
    /// free `virbrN` while the network keeps running on the old one.
    pub fn bridge_now(&self) -> Option<&str> {
        self.live_bridge.as_deref().or(self.bridge.as_deref())
    }

    /// Whose network this is, for lab `lab`'s instance (see [`Ownership::of`]).
    pub fn ownership(&self, lab: &crate::lab::model::Lab) -> Ownership {
        Ownership::of(self.owner.as_ref(), &lab.instance(), lab.take_over, &self.name)
    }
}

impl ObservedDomain {
    /// Whose domain this is, for lab `lab`'s instance (see [`Ownership::of`]).
    pub fn ownership(&self, lab: &crate::lab::model::Lab) -> Ownership {
        Ownership::of(self.owner.as_ref(), &lab.instance(), lab.take_over, &self.name)
    }

    /// Disk `i`'s chain, top first: its source, then its backing files.
    pub fn chain(&self, i: usize) -> Vec<&str> {
        let below = self.backing.get(i).map(Vec::as_slice).unwrap_or_default();
        self.disks.get(i).into_iter().chain(below).map(String::as_str).collect()
    }

    /// Every file the domain's disks open: each source and its backing chain.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.disks.iter().chain(self.backing.iter().flatten()).chain(&self.live_only).map(String::as_str)
    }

    /// Whether the domain may open `path` (a disk source or a layer of a backing chain),
    /// by identity ([`Observed::same_file`]; `Maybe` counts), or might, because a chain
    /// is not fully known.
    pub fn may_use(&self, observed: &Observed, path: &str) -> bool {
        !self.chains_known || self.files().any(|f| observed.same_file(f, path) != Same::No)
    }
}

/// The facts about each base image in `paths` on this machine's disk (a local libvirt
/// host), by path: what [`crate::host::image::read_header`] found, or why it could not read it.
pub fn observe_images<'a>(
    paths: impl IntoIterator<Item = &'a std::path::Path>,
) -> std::collections::BTreeMap<String, PathFact> {
    paths
        .into_iter()
        .map(|p| {
            (
                p.to_string_lossy().into_owned(),
                PathFact::File(crate::host::image::read_header(p).map_err(|e| e.to_string())),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An active network whose bridge is missing from the interfaces topo sees: topo runs in
    /// another network namespace than libvirtd (the ARP proof would fail). Seen, or interfaces
    /// unknown (a remote host): nothing to say.
    #[test]
    fn a_bridge_out_of_sight_means_another_network_namespace() {
        use crate::host::hypervisor::memory::MemoryHypervisor;
        let xml = include_str!("../../tests/fixtures/test-driver-default.xml");
        let hv = MemoryHypervisor::new().with_network_xml(xml, true, true).unwrap().with_host_interfaces(&["eth0"]);
        let mut o = hv.observe().unwrap();
        assert!(o.bridges_out_of_sight().is_empty(), "the double sees its bridges: {:?}", o.host_interfaces);
        let bridge = o.networks["default"].bridge.clone().unwrap();
        o.host_interfaces.as_mut().unwrap().remove(&bridge);
        assert_eq!(o.bridges_out_of_sight(), vec![("default", bridge.as_str())]);
        o.host_interfaces = None;
        assert!(o.bridges_out_of_sight().is_empty());
    }

    /// `/proc/net/route` as a Linux x86_64 host prints it (little-endian hex of network-order
    /// addresses): a default route, the LAN, a VPN and docker0.
    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
tun0\t0000080A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
garbage
";

    #[cfg(target_endian = "little")]
    #[test]
    fn proc_net_route_is_read_as_libvirt_reads_it() {
        let r = HostRoute::parse_proc_net_route(ROUTES);
        let shown: Vec<String> = r.iter().map(|r| format!("{} {}/{}", r.device, r.destination, r.netmask)).collect();
        assert_eq!(
            shown,
            [
                "eth0 0.0.0.0/0.0.0.0",
                "eth0 192.168.1.0/255.255.255.0",
                "tun0 10.8.0.0/255.255.0.0",
                "docker0 172.17.0.0/255.255.0.0"
            ]
        );
        assert!(HostRoute::parse_proc_net_route(&ROUTES.replacen("Iface", "iface", 1)).is_empty(), "no header");
    }

    /// libvirt's networkCheckRouteCollision: an exact match of network address and netmask
    /// collides; a route to a larger prefix (the default route, a /16 VPN) or a smaller one
    /// does not.
    #[test]
    fn a_route_collides_only_with_its_exact_subnet() {
        let route = |d: &str, m: &str| HostRoute {
            device: "tun0".into(),
            destination: d.parse().unwrap(),
            netmask: m.parse().unwrap(),
        };
        let net = |s: &str| s.parse::<ipnetwork::Ipv4Network>().unwrap();
        assert!(route("10.8.0.0", "255.255.0.0").collides(net("10.8.0.0/16")));
        assert!(route("10.8.0.0", "255.255.0.0").collides(net("10.8.0.1/16")), "the network's address is masked");
        assert!(!route("10.8.0.0", "255.255.0.0").collides(net("10.8.0.0/24")));
        assert!(!route("10.8.0.0", "255.255.255.0").collides(net("10.8.0.0/16")));
        assert!(!route("0.0.0.0", "0.0.0.0").collides(net("10.8.0.0/24")));
    }
}

#[cfg(test)]
mod route6_tests {
    use super::HostRoute6;

    /// `/proc/net/ipv6_route` as this machine's kernel prints it (6.1): a /64 on eth0, the
    /// link-local /64, the default route, a host's own /128 on `lo`, a multicast /8.
    const TABLE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
fd00001000000000000000000000000a 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000004 00000000 00000001     eth0
garbage
";

    #[test]
    fn parses_and_overlaps_only_prefix_routes() {
        let r = HostRoute6::parse_proc_net_ipv6_route(TABLE);
        assert_eq!(r.len(), 5);
        assert_eq!((r[0].device.as_str(), r[0].destination.to_string(), r[0].prefix), ("eth0", "fd00::".into(), 64));
        let p = |s: &str| s.parse::<ipnetwork::Ipv6Network>().expect("prefix");
        // The eth0 /64 is the lab's prefix; the default route and a /128 never count.
        assert!(r[0].overlaps(p("fd00::/64")));
        assert!(!r[0].overlaps(p("fd00:10::/64")));
        assert!(!r[2].overlaps(p("fd00::/64")), "default route");
        assert!(!r[3].overlaps(p("fd00:10::/64")), "a host's own /128");
    }
}
