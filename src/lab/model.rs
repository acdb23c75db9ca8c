//! The validated lab: newtypes and plain data that every stage after validation works on.
//!
//! Nothing here is raw input. Values are built by `validate` (from `spec`) or by tests, and
//! the constructors of the newtypes enforce their rules, so a `NetworkName` is always a
//! usable libvirt and Linux name, a `MacAddr` is always unicast, and so on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};
use miette::SourceSpan;
use serde::{Deserialize, Serialize};

use crate::lab::source::SourceFile;

/// The only lab file format version this topo reads.
pub const API_VERSION: &str = "topo/v1";

pub use crate::lab::names::{
    BridgeName, HostName, LabName, LibvirtName, MAX_BRIDGE_NAME, MAX_LAB_NAME, MAX_RESOURCE_NAME, MacAddr, MacError,
    NameError, NetworkName, PoolName, SnapshotName, VmName, VolumeName,
};

pub use crate::lab::group::{GroupMember, VmGroup};

/// How a lab network reaches beyond its bridge. Mirrors libvirt's `<forward mode>`;
/// `Isolated` is a network without `<forward>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Nat,
    Routed,
    Isolated,
    Open,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 4] = [NetworkMode::Nat, NetworkMode::Routed, NetworkMode::Isolated, NetworkMode::Open];
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::Routed => "routed",
            NetworkMode::Isolated => "isolated",
            NetworkMode::Open => "open",
        }
    }
}
impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libvirt domain type: `qemu` is software emulation, `kvm` hardware virtualisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    Qemu,
    Kvm,
}
impl VirtType {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Qemu => "qemu",
            VirtType::Kvm => "kvm",
        }
    }
}
impl fmt::Display for VirtType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a VM should run: `state:` in the lab file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Defined and running (the default).
    #[default]
    Running,
    /// Defined, its disk kept, not running.
    Stopped,
}
impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
        }
    }
}
impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How topo proves a NIC has an address after apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    Arp,
    None,
}

/// A size in bytes (memory, disk). Written in the lab file as `256MiB`, `10GiB`, `524288KiB`.
///
/// topo's rule for the text (`FromStr`): a whole number of bytes-units, decimal digits then
/// one of the binary units `KiB`, `MiB`, `GiB`, `TiB` exactly as IEC 80000-13 spells them
/// (spaces around and between allowed), at most `u64::MAX` bytes. The `bytesize` crate does
/// the arithmetic; alone it would take far more (fractions `1.5GiB`, decimal units `MB`, any
/// case `mib`, bare bytes `256`) and saturate instead of failing, so topo checks the form
/// first and reads a saturated result as an overflow. Shown (`Display`) in the largest of those
/// units that divides it exactly (`1MiB` for `1024KiB`), else in bytes (`1000B`): topo's form,
/// not the crate's rounded `1.0 MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("is not a number followed by a unit (KiB, MiB, GiB or TiB)")]
    Format,
    #[error("is too large")]
    Overflow,
}

impl ByteSize {
    pub const KIB: u64 = bytesize::KIB;
    pub const MIB: u64 = bytesize::MIB;
    pub const GIB: u64 = bytesize::GIB;
    pub const TIB: u64 = bytesize::TIB;
    /// The units a lab file may write, largest first, as written.
    const UNITS: [(&str, u64); 4] = [("TiB", Self::TIB), ("GiB", Self::GIB), ("MiB", Self::MIB), ("KiB", Self::KIB)];

    pub const fn from_bytes(b: u64) -> Self {
        Self(b)
    }
    pub const fn from_mib(m: u64) -> Self {
        Self(m * Self::MIB)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
    pub fn kib(self) -> u64 {
        self.0 / Self::KIB
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    /// # Errors
    /// [`SizeError::Format`] for text outside topo's rule (see [`ByteSize`]),
    /// [`SizeError::Overflow`] for more than `u64::MAX` bytes.
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).ok_or(SizeError::Format)?;
        let (number, unit) = s.split_at(digits);
        if number.is_empty() || !Self::UNITS.iter().any(|(u, _)| *u == unit.trim()) {
            return Err(SizeError::Format);
        }
        let size: bytesize::ByteSize = s.parse().map_err(|_| SizeError::Format)?;
        // The crate saturates; no whole number of KiB is u64::MAX (odd), so that is an overflow.
        match size.as_u64() {
            u64::MAX => Err(SizeError::Overflow),
            b => Ok(Self(b)),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in Self::UNITS {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

/// A validated lab: what the file asks for, with defaults filled in and names resolved.
#[derive(Clone, Debug)]
pub struct Lab {
    pub name: LabName,
    /// Where `name:`'s value is, for diagnostics about the lab as a whole.
    pub name_span: SourceSpan,
    /// Prepended to every libvirt name the lab owns (default `"<name>-"`).
    pub prefix: String,
    /// Keyed by the name in the file; iteration is sorted, so output is deterministic.
    pub networks: BTreeMap<NetworkName, Network>,
    pub vms: BTreeMap<VmName, Vm>,
    /// The VM groups (entries with `count:`), by the entry's key; their members are in `vms`
    /// (each with [`Vm::group`]). A group of count 0 is here with no member.
    pub groups: BTreeMap<VmName, VmGroup>,
    /// The libvirt hosts the lab names (`hosts:`), by name; empty for a lab on one host,
    /// [`HostName::DEFAULT`] (docs/multi-host.md).
    pub hosts: BTreeMap<HostName, LabHost>,
    /// The file the lab came from, for diagnostics after validation.
    pub source: SourceFile,
    /// What this run writes into the owner tags besides the instance (when, who). Empty
    /// after validation; the CLI sets it for the commands that write (`Stamp::now`).
    pub stamp: crate::lab::ownership::Stamp,
    /// `--take-over`: objects made by another instance of this lab (same name and prefix,
    /// another lab file) are taken as this one's and re-tagged (docs/lab-file.md).
    pub take_over: bool,
    /// In a host's share of a lab across hosts ([`Lab::on_host`]): each lab network the host
    /// holds but does not serve (there a bridge without addresses), as its serving host has it
    /// (subnet, gateway, DHCP, reservations): what a guest on this host is told its network
    /// gives (its cloud-init network-config asks for DHCP across the tunnel). Empty otherwise.
    pub served: BTreeMap<NetworkName, ManagedNetwork>,
    /// The point-to-point wires between VM NICs (`links:`), by name; each end is a NIC of
    /// its VM after the VM's `nics` (docs/wires.md).
    pub wires: BTreeMap<crate::lab::wire::WireName, crate::lab::wire::Wire>,
}

/// A libvirt host of a lab that spans several (`hosts:` in the lab file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabHost {
    pub name: HostName,
    /// The libvirt URI that reaches it, as the lab file gives it (`--host NAME=URI`
    /// replaces it for one run).
    pub uri: String,
    /// Its IPv4 address for the tunnels (`underlay:`); required on every host a network spans.
    pub underlay: Option<Ipv4Addr>,
    /// Its position in `hosts:`, from 0: the default host of a VM and of a network is the
    /// first in file order.
    pub order: usize,
    /// Where its key is in the lab file.
    pub span: SourceSpan,
}

/// One network of the lab: either referenced (external) or owned by the lab.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: NetworkName,
    /// The network's name in libvirt: the name as written for external networks,
    /// prefix + name for lab networks.
    pub libvirt_name: LibvirtName,
    pub kind: NetworkKind,
    /// External networks only: the subnet the lab file declares (`subnet:` beside
    /// `external: true`) for a network libvirt knows no `<ip>` of, such as a bridge to a LAN.
    /// Verification asks only addresses in it; nothing on the host changes.
    pub declared_subnet: Option<Ipv4Network>,
    /// The host that serves a lab network's gateway, DHCP, DNS and NAT (`host:`, default:
    /// the first host in `hosts:` with a VM on it); [`HostName::DEFAULT`] in a lab on one
    /// host. On the other hosts it spans, the network is a bridge without addresses
    /// ([`crate::lab::hosts`]).
    pub host: HostName,
    /// The host this instance of the network is on: `host` in the lab, the share's host in
    /// a host's share ([`Lab::on_host`]). It picks the bridge MAC ([`Lab::bridge_mac`]).
    pub instance_host: HostName,
    /// The hosts a lab network exists on: its serving host and the hosts of the VMs on it
    /// (set at validation, kept in every host's share); `{DEFAULT}` in a lab on one host,
    /// empty for an external network.
    pub spans: std::collections::BTreeSet<HostName>,
    /// Where the network is declared (its key), for diagnostics.
    pub span: SourceSpan,
}

#[derive(Clone, Debug)]
pub enum NetworkKind {
    /// Exists on the host already; read, never changed or destroyed.
    External,
    /// Created, changed and destroyed by the lab.
    Managed(ManagedNetwork),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedNetwork {
    pub mode: NetworkMode,
    /// The IPv4 subnet; `None` gives a network without `<ip>` (no DHCP, no host address).
    pub subnet: Option<Ipv4Network>,
    /// The host bridge's address; present exactly when `subnet` is.
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 prefix (`subnet6:`, always a /64): libvirt's dnsmasq sends router
    /// advertisements for it and every guest NIC on the network configures its SLAAC
    /// address ([`crate::lab::ipv6::slaac_address`]). `None`: no IPv6 `<ip>` on the network.
    pub subnet6: Option<Ipv6Network>,
    /// The host bridge's IPv6 address; present exactly when `subnet6` is (default: the
    /// prefix's `::1`).
    pub gateway6: Option<Ipv6Addr>,
    /// The dynamic DHCP range; `None` turns the pool off, reservations are still served
    /// when there is a subnet (see [`ManagedNetwork::dhcp_service`]).
    pub dhcp: Option<DhcpRange>,
    /// `None` lets libvirt pick `virbrN`.
    pub bridge: Option<BridgeName>,
    pub autostart: bool,
    /// Spanning tree on the bridge (default off: a new port forwards at once).
    pub stp: bool,
    /// dnsmasq's ping check before offering an address (default off: leases ~3 s sooner).
    pub dhcp_ping: bool,
    /// MTU in bytes of the bridge, of its taps and of every guest NIC on the network
    /// (`mtu:`, within [`MTU_RANGE`]); `None` leaves it to libvirt (the bridge's default,
    /// 1500, and no `<mtu>` in the domains). Every NIC on the network follows this value when
    /// its XML is rendered ([`Lab::nic_mtu`]), so code that changes it after validation
    /// (the multi-host code lowers a stretched network's to 1450 for VXLAN) sets it here
    /// alone, with [`Lab::set_network_mtu`].
    pub mtu: Option<u32>,
    /// Static DHCP host entries of the NICs with an address (written or derived, see
    /// [`Nic::ip`]), keyed by MAC (sorted).
    pub reservations: BTreeMap<MacAddr, Reservation>,
}

/// The MTUs (bytes) a lab network may have: what both the kernel's bridge and its tap devices
/// take, since libvirt gives the network's MTU to the bridge and to every tap on it
/// (`<mtu size>` of the network; measured on libvirt 9.0, docs/multi-host-harness.md).
///
/// - At least 68, `ETH_MIN_MTU` (include/uapi/linux/if_ether.h), the least IPv4 needs (RFC
///   791: a 60-byte header and an 8-byte fragment): a bridge's `min_mtu` (`ether_setup`,
///   net/ethernet/eth.c), a tap's (`MIN_MTU`, drivers/net/tun.c `tun_net_initialize`), and
///   the least a virtio guest takes as its `host_mtu` (drivers/net/virtio_net.c
///   `virtnet_probe`: "device MTU appears to be too small").
/// - At most 65521: a tap's `max_mtu` is `MAX_MTU` (65535) less its 14-byte Ethernet header
///   (drivers/net/tun.c `tun_net_initialize`), below the bridge's 65535 (`ETH_MAX_MTU`,
///   net/bridge/br_device.c `br_dev_setup`): a network of 65535 would start, and every domain
///   on it fail to start when libvirt sets its tap's MTU (src/util/virnetdevtap.c
///   `virNetDevTapCreateInBridgePort`, `virNetDevSetMTU`: EINVAL).
///
/// Both ends are far inside libvirt's own bound (`<mtu size>`: an unsigned int, non-zero in a
/// domain's `<interface>`). An MTU under 1280 is fine for IPv4; a network with `subnet6`
/// needs 1280 or more (RFC 8200 section 5), which validation checks beside this range.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65521;

/// Why [`Lab::set_network_mtu`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    #[error("the lab has no network `{0}`")]
    UnknownNetwork(NetworkName),
    #[error("network `{0}` is external: topo never changes it")]
    External(NetworkName),
    #[error("MTU {0} is outside 68 to 65521, what a Linux bridge and its taps take")]
    OutOfRange(u32),
}

/// What libvirt's dnsmasq does for DHCP on a lab network.
///
/// libvirt runs dnsmasq for every network with an `<ip>` and gives it the `<host>` entries
/// even without a `<range>` (src/network/bridge_driver.c writes a `dhcp-host` line per
/// host and a `dhcp-range` in static mode for the subnet), so `dhcp: false` on a network
/// with a subnet still serves the NICs that reserve an `ip:`: only the dynamic pool is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DhcpService {
    /// No subnet: no host address, no dnsmasq, no DHCP at all.
    Off,
    /// A subnet without a range (`dhcp: false`): reservations (`ip:`) are served, nothing else.
    ReservationsOnly,
    /// A dynamic range (reservations are served too).
    Range(DhcpRange),
}

impl DhcpService {
    /// Whether a NIC on this network gets an address: with a reservation, or from the pool.
    pub fn serves(self, reserved: bool) -> bool {
        match self {
            DhcpService::Off => false,
            DhcpService::ReservationsOnly => reserved,
            DhcpService::Range(_) => true,
        }
    }
}

impl fmt::Display for DhcpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpService::Off => f.write_str("off"),
            DhcpService::ReservationsOnly => f.write_str("reservations only"),
            DhcpService::Range(r) => write!(f, "{} - {}", r.start, r.end),
        }
    }
}

impl ManagedNetwork {
    /// What dnsmasq will do on this network (see [`DhcpService`]).
    pub fn dhcp_service(&self) -> DhcpService {
        match (self.subnet, self.dhcp) {
            (None, _) => DhcpService::Off,
            (Some(_), None) => DhcpService::ReservationsOnly,
            (Some(_), Some(r)) => DhcpService::Range(r),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// A DHCP host entry: this MAC always gets this address (and host name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub name: VmName,
    /// prefix + name.
    pub libvirt_name: LibvirtName,
    pub virt_type: VirtType,
    pub memory: ByteSize,
    pub vcpus: u32,
    /// Whether it should run (`state:`, default running).
    pub state: VmState,
    pub boot: Option<Boot>,
    pub disk: Option<Disk>,
    pub nics: Vec<Nic>,
    /// What topo puts in the VM's cloud-init NoCloud seed; `None` when cloud-init is off
    /// for this VM (no seed disk is attached).
    pub cloud_init: Option<CloudInit>,
    /// The host it runs on (`host:`, default the first in `hosts:`; [`HostName::DEFAULT`] in
    /// a lab on one host).
    pub host: HostName,
    /// What must hold, beyond the ARP proof, before the VM counts as ready (`ready:`, or the
    /// lab's), in the order written.
    pub ready: Vec<ReadyCondition>,
    /// Member `index` of group `group` when the VM comes from an entry with `count:`
    /// (docs/lab-file.md, "VM groups"); `None` for a VM of its own entry.
    pub group: Option<GroupMember>,
    /// Where the VM's entry (a group member: its group's entry) is written.
    pub span: SourceSpan,
}

/// A readiness condition (`ready:`, docs/lab-file.md "Readiness"), proven by apply and
/// verify after the VM's NICs (`crate::verify::ready`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadyCondition {
    /// An SSH server's banner (`SSH-`, RFC 4253 4.2) on port 22 of the VM's first proven
    /// IPv4 address.
    Ssh,
    /// cloud-init's final message on the serial console (its default `final_message`,
    /// `Cloud-init v. VERSION finished at ...`, which cloud-init writes to the console).
    CloudInit,
    /// A TCP connection accepted on this port (1 to 65535) of the VM's first proven IPv4
    /// address.
    Tcp(u16),
    /// A line of the serial console that holds this text.
    Console(String),
}

impl std::fmt::Display for ReadyCondition {
    /// `ssh`, `cloud-init`, `tcp:80`, `console:"login:"`: as the table and the JSON show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyCondition::Ssh => f.write_str("ssh"),
            ReadyCondition::CloudInit => f.write_str("cloud-init"),
            ReadyCondition::Tcp(port) => write!(f, "tcp:{port}"),
            ReadyCondition::Console(text) => write!(f, "console:{text:?}"),
        }
    }
}

/// The login user topo creates when the lab file names none.
pub const DEFAULT_USER: &str = "topo";

/// A VM's cloud-init settings after inheritance (lab-level `cloud_init`, then the VM's own
/// keys) and with every file read. `guest::Seed::of` turns it into the seed's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInit {
    /// The login user topo creates (passwordless sudo, key-only login).
    pub user: String,
    /// OpenSSH public key lines for `user`: inline keys first, then the lines of each key
    /// file, in the order written.
    pub ssh_authorized_keys: Vec<String>,
    /// True when the lab file gives no key at all: the CLI then fills in the invoking user's
    /// own `~/.ssh/*.pub` (see [`Lab::use_default_keys`]).
    pub default_keys: bool,
    /// The guest's hostname (default: the VM name with `_` turned into `-`).
    pub hostname: String,
    /// The user's own `#cloud-config` file, merged into what topo generates.
    pub user_data: Option<UserData>,
}

/// A user-data file of the user's own, as read at validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserData {
    /// Absolute path (resolved against the lab file's folder).
    pub path: PathBuf,
    /// The file's text (a `#cloud-config` YAML mapping, or another kind cloud-init runs;
    /// checked by validation, `cloud_init_rules::check_user_file`).
    pub text: String,
}

/// Direct kernel boot. Paths are absolute (resolved against the lab file's folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// Where `kernel` is written in the lab file.
    pub kernel_span: SourceSpan,
    /// Where `initrd` is written in the lab file.
    pub initrd_span: Option<SourceSpan>,
}

/// A copy-on-write overlay on `image`, which is never written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub image: PathBuf,
    /// Virtual size of the overlay; `None` keeps the base image's size.
    pub size: Option<ByteSize>,
    /// The base image's format, as the lab file declares it (default qcow2). Written into
    /// the overlay as its backing format, so QEMU never probes the image: probing a raw
    /// image whose guest wrote a qcow2 header would let the guest name host files as its
    /// backing (QEMU docs, "qemu-img: backing file format should be specified").
    pub format: ImageFormat,
    /// Where `image` is written in the lab file.
    pub image_span: SourceSpan,
    /// Where `size` is written in the lab file, when it is.
    pub size_span: Option<SourceSpan>,
}

/// Format of a base image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Qcow2,
    Raw,
}

impl ImageFormat {
    /// The name libvirt and QEMU use (`<format type=...>`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// Position in the VM's `nics` list (0-based); also the guest's PCI order.
    pub index: usize,
    pub network: NetworkName,
    pub mac: MacAddr,
    /// True when `mac` was derived rather than written in the file.
    pub mac_derived: bool,
    /// The NIC's reserved IPv4 address (a DHCP host entry on its network): the lab file's
    /// `ip:`, or the one topo derives ([`crate::lab::addressing`]); `None` when it has none
    /// (`ip: dynamic`, an external network, a network without a subnet).
    pub ip: Option<Ipv4Addr>,
    /// Where `ip` comes from.
    pub ip_source: IpSource,
    pub verify: Verify,
    /// Rate limit and netem settings (`rate`, `delay`, `jitter`, `loss`).
    pub impairment: crate::lab::impair::Impairment,
    /// Where the first netem setting (`delay`, `jitter` or `loss`) is written, for refusals
    /// that concern netem (a remote host).
    pub netem_span: Option<SourceSpan>,
    /// Where `rate` is written, for refusals that concern it (a kernel without its qdiscs).
    pub rate_span: Option<SourceSpan>,
    pub span: SourceSpan,
}

/// Where a NIC's address comes from (`ip:` in the lab file, docs/addressing.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// `ip: ADDRESS`: the reservation the lab file writes.
    Written,
    /// No `ip:` on a lab network with a subnet: the reservation topo derives from lab, VM
    /// and NIC index ([`crate::lab::addressing`]).
    Derived,
    /// No reservation: `ip: dynamic` (a lease from the DHCP pool), or a network where topo
    /// reserves nothing (external, or without a subnet).
    #[default]
    Dynamic,
}

impl IpSource {
    /// The word plan, status and inventory show: `written`, `derived`, `dynamic`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpSource::Written => "written",
            IpSource::Derived => "derived",
            IpSource::Dynamic => "dynamic",
        }
    }
}

impl fmt::Display for IpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Vm {
    /// File name of the VM's copy-on-write overlay in lab `lab`:
    /// `<libvirt name>-<8 hex>.<tag>.qcow2`, where the first hex digits hash the base image
    /// path and size (a new image or size gives a new overlay, and shows in the domain's
    /// disk path) and `tag` marks the volume as the lab's (`ownership::volume_name`).
    pub fn overlay_name(&self, lab: &LabName) -> Option<VolumeName> {
        use sha2::{Digest, Sha256};
        let d = self.disk.as_ref()?;
        let mut h = Sha256::new();
        h.update(d.image.to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(d.size.map(|s| s.bytes()).unwrap_or(0).to_le_bytes());
        // Another backing format is another overlay (it is written into the overlay's
        // header). qcow2, the default, adds nothing, so existing overlay names stay.
        if d.format != ImageFormat::Qcow2 {
            h.update(b"\0format=");
            h.update(d.format.as_str().as_bytes());
        }
        let hex: String = h.finalize().iter().take(4).map(|b| format!("{b:02x}")).collect();
        let name = crate::lab::ownership::volume_name(lab.as_str(), &self.libvirt_name, "-", &hex, "qcow2");
        // Invariant: '-', hex digits and "qcow2" hold no character a volume name may not.
        Some(name.expect("an overlay name is a valid volume name"))
    }
}

/// A file a VM's domain opens on the libvirt host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostFileRole {
    Kernel,
    Initrd,
    /// The base image of the disk overlay.
    Image,
}

impl HostFileRole {
    /// The lab-file key, as messages name it: `boot.kernel`, `boot.initrd`, `disk.image`.
    pub fn key(self) -> &'static str {
        match self {
            HostFileRole::Kernel => "boot.kernel",
            HostFileRole::Initrd => "boot.initrd",
            HostFileRole::Image => "disk.image",
        }
    }
}

impl Vm {
    /// The files this VM's domain opens on the libvirt host (QEMU reads the kernel and
    /// initrd at start; libvirt opens the base image when it creates the overlay), with
    /// where each is written in the lab file. Cloud-init files are not here: topo reads
    /// them itself, on this machine.
    pub fn host_files(&self) -> Vec<(HostFileRole, &std::path::Path, SourceSpan)> {
        let mut out = Vec::new();
        if let Some(b) = &self.boot {
            out.push((HostFileRole::Kernel, b.kernel.as_path(), b.kernel_span));
            if let (Some(i), Some(span)) = (&b.initrd, b.initrd_span) {
                out.push((HostFileRole::Initrd, i.as_path(), span));
            }
        }
        if let Some(d) = &self.disk {
            out.push((HostFileRole::Image, d.image.as_path(), d.image_span));
        }
        out
    }
}

impl Nic {
    /// The display name of the NIC: `eth0`, `eth1`, ... in list order ([`nic_label`]).
    pub fn label(&self) -> String {
        nic_label(self.index)
    }
}

/// The display name of a VM's NIC at (0-based) position `index` in its `nics` list: `eth0`,
/// `eth1`, ... (the guest's PCI order, so usually also the guest's own name for it).
pub fn nic_label(index: usize) -> String {
    format!("eth{index}")
}

impl Lab {
    /// This lab instance: its name, prefix and canonical lab file (docs/lab-file.md, "Lab
    /// identity").
    pub fn instance(&self) -> crate::lab::ownership::Instance {
        crate::lab::ownership::Instance {
            lab: self.name.to_string(),
            prefix: self.prefix.clone(),
            file: self.source.file.to_string_lossy().into_owned(),
        }
    }
    /// The owner tag this run writes on the object `resource` named `name` in libvirt.
    pub fn owner_tag(
        &self,
        resource: &crate::lab::address::Address,
        name: &str,
        spec_hash: &str,
    ) -> crate::lab::ownership::OwnerTag {
        let me = self.instance();
        crate::lab::ownership::OwnerTag {
            lab: me.lab,
            resource: resource.to_string(),
            name: name.to_string(),
            spec_hash: spec_hash.to_string(),
            prefix: Some(me.prefix),
            file: Some(me.file),
            applied: self.stamp.applied.clone(),
            user: self.stamp.user.clone(),
        }
    }
    /// The MTU (bytes) of `nic`, as its domain's `<interface><mtu>` carries it: its network's
    /// (a lab network's `mtu`, read now, so a network's MTU changed after validation is the
    /// one every NIC on it gets), `None` on an external network or one without `mtu`.
    /// libvirt 9.0 gives a guest (virtio `host_mtu`) only what the interface says, not the
    /// network's MTU (docs/multi-host-harness.md, "Learned on the way").
    pub fn nic_mtu(&self, nic: &Nic) -> Option<u32> {
        match &self.networks.get(&nic.network)?.kind {
            NetworkKind::Managed(m) => m.mtu,
            NetworkKind::External => None,
        }
    }
    /// Sets the MTU (bytes) of lab network `name` (`None`: libvirt's default), for its bridge,
    /// taps and every NIC on it ([`Lab::nic_mtu`]); the planner then compares and renders it
    /// as if the lab file said `mtu:`.
    ///
    /// # Errors
    /// [`MtuError`]: no such network, an external one, or `mtu` outside [`MTU_RANGE`].
    pub fn set_network_mtu(&mut self, name: &NetworkName, mtu: Option<u32>) -> Result<(), MtuError> {
        if let Some(m) = mtu.filter(|m| !MTU_RANGE.contains(m)) {
            return Err(MtuError::OutOfRange(m));
        }
        let net = self.networks.get_mut(name).ok_or_else(|| MtuError::UnknownNetwork(name.clone()))?;
        match &mut net.kind {
            NetworkKind::Managed(m) => {
                m.mtu = mtu;
                Ok(())
            }
            NetworkKind::External => Err(MtuError::External(name.clone())),
        }
    }
    /// Number of external networks.
    pub fn external_count(&self) -> usize {
        self.networks.values().filter(|n| matches!(n.kind, NetworkKind::External)).count()
    }
    pub fn nic_count(&self) -> usize {
        self.vms.values().map(|v| v.nics.len()).sum()
    }
    /// Every NIC with its VM, in sorted VM order then NIC order.
    pub fn nics(&self) -> impl Iterator<Item = (&Vm, &Nic)> {
        self.vms.values().flat_map(|vm| vm.nics.iter().map(move |n| (vm, n)))
    }
    /// Gives every cloud-init VM whose lab file names no SSH key the keys in `keys` (the
    /// invoking user's own public keys, read by the CLI with `guest::invoking_user_keys`).
    /// Returns the names of the VMs that still have no key (a note for the user).
    pub fn use_default_keys(&mut self, keys: &[String]) -> Vec<VmName> {
        let mut keyless = Vec::new();
        for vm in self.vms.values_mut() {
            if let Some(ci) = vm.cloud_init.as_mut() {
                if ci.default_keys {
                    ci.ssh_authorized_keys = keys.to_vec();
                }
                if ci.ssh_authorized_keys.is_empty() {
                    keyless.push(vm.name.clone());
                }
            }
        }
        keyless
    }
    /// The one-line summary `topo validate` prints; with VM groups, how many VMs each gives.
    pub fn summary(&self) -> String {
        let nets = self.networks.len();
        let vms = self.vms.len();
        let nics = self.nic_count();
        // The groups' shares of the VMs, when there are groups: `(3 in group client)`.
        let groups = if self.groups.is_empty() {
            String::new()
        } else {
            let each: Vec<String> = self.groups.values().map(|g| format!("{} in group {}", g.count, g.name)).collect();
            format!(" ({})", each.join(", "))
        };
        // The wires, when there are any: each adds a NIC to each of its two VMs.
        let wires = match self.wires.len() {
            0 => String::new(),
            1 => ", 1 wire (2 more nics)".to_string(),
            n => format!(", {n} wires ({} more nics)", 2 * n),
        };
        format!(
            "lab {}: {} network{} ({} external), {} vm{}{groups}, {} nic{}{wires}",
            self.name,
            nets,
            if nets == 1 { "" } else { "s" },
            self.external_count(),
            vms,
            if vms == 1 { "" } else { "s" },
            nics,
            if nics == 1 { "" } else { "s" },
        )
    }
}

impl Lab {
    /// The wire ends on VM `vm`, as (wire, end 0 or 1), in the VM's NIC order.
    pub fn wire_ends(&self, vm: &VmName) -> Vec<(&crate::lab::wire::Wire, usize)> {
        let mut out: Vec<(&crate::lab::wire::Wire, usize)> =
            self.wires.values().flat_map(|w| (0..2).filter(|&k| w.ends[k].vm == *vm).map(move |k| (w, k))).collect();
        out.sort_by_key(|(w, k)| w.ends[*k].index);
        out
    }

    /// The wire end whose tap is `tap`, as (wire, end).
    pub fn wire_of_tap(&self, tap: &str) -> Option<(&crate::lab::wire::Wire, usize)> {
        self.wires.values().find_map(|w| (0..2).find(|&k| w.ends[k].tap == tap).map(|k| (w, k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(LabName::new("seedlab").is_ok());
        assert_eq!(LabName::new(""), Err(NameError::Empty));
        assert_eq!(LabName::new("Seed"), Err(NameError::BadChar('S')));
        assert_eq!(LabName::new("1lab"), Err(NameError::BadStart));
        assert_eq!(LabName::new("lab-"), Err(NameError::BadEnd));
        assert_eq!(LabName::new("a_b"), Err(NameError::BadChar('_')));
        assert!(NetworkName::new("local_net").is_ok());
        assert!(matches!(LabName::new(&"a".repeat(33)), Err(NameError::TooLong { .. })));
        assert!(BridgeName::new("virbr2").is_ok());
        assert!(matches!(BridgeName::new("a-very-long-bridge"), Err(NameError::TooLongBytes { len: 18, max: 15 })));
    }

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "52:54:00:00:1F:02".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:00:1f:02");
        assert_eq!("01:00:5e:00:00:01".parse::<MacAddr>(), Err(MacError::Multicast));
        assert_eq!("52:54:00:00:1f".parse::<MacAddr>(), Err(MacError::Format));
        assert_eq!("52:54:00:00:1f:0g".parse::<MacAddr>(), Err(MacError::Format));
        assert_eq!("52:54:00:00:1f:002".parse::<MacAddr>(), Err(MacError::Format));
    }

    #[test]
    fn derived_mac_is_stable_and_distinct() {
        let lab = LabName::new("seedlab").unwrap();
        let vm = VmName::new("deb1").unwrap();
        let a = MacAddr::derived(&lab, &vm, 0);
        assert_eq!(a, MacAddr::derived(&lab, &vm, 0));
        assert_ne!(a, MacAddr::derived(&lab, &vm, 1));
        assert_ne!(a, MacAddr::derived(&LabName::new("other").unwrap(), &vm, 0));
        assert_eq!(&a.octets()[..3], &[0x52, 0x54, 0x00]);
        // Pinned: changing the derivation changes every user's MACs.
        // (value computed independently with Python hashlib from the documented formula)
        assert_eq!(a.to_string(), "52:54:00:39:b7:d5");
    }

    #[test]
    fn derived_bridge_mac_is_stable_and_apart_from_nic_macs() {
        let lab = LabName::new("seedlab").unwrap();
        let net = NetworkName::new("lan").unwrap();
        let b = MacAddr::derived_bridge(&lab, &net);
        assert_eq!(b, MacAddr::derived_bridge(&lab, &net));
        assert_ne!(b, MacAddr::derived_bridge(&lab, &NetworkName::new("lan2").unwrap()));
        assert_ne!(b, MacAddr::derived_bridge(&LabName::new("other").unwrap(), &net));
        // Never a derived NIC MAC: those all start 52:54:00.
        assert_eq!(&b.octets()[..3], &[0x52, 0x54, 0x01]);
        // Pinned (computed independently with Python hashlib from the documented formula).
        assert_eq!(b.to_string(), "52:54:01:1f:fe:ef");
    }

    #[test]
    fn sizes() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().bytes(), 256 * ByteSize::MIB);
        assert_eq!("10GiB".parse::<ByteSize>().unwrap().to_string(), "10GiB");
        assert_eq!("1024KiB".parse::<ByteSize>().unwrap().to_string(), "1MiB");
        assert_eq!("256".parse::<ByteSize>(), Err(SizeError::Format));
        assert_eq!("256MB".parse::<ByteSize>(), Err(SizeError::Format));
        assert_eq!("MiB".parse::<ByteSize>(), Err(SizeError::Format));
        assert_eq!("99999999999999999999TiB".parse::<ByteSize>(), Err(SizeError::Overflow));
    }

    fn size(s: &str) -> Result<u64, SizeError> {
        s.parse::<ByteSize>().map(ByteSize::bytes)
    }

    /// topo's rule is stricter than the bytesize crate's parser: whole numbers only, the four
    /// binary units exactly as IEC 80000-13 spells them, no bare bytes. Each form below is one
    /// the crate alone takes (checked), and topo refuses as before.
    #[test]
    fn sizes_keep_topos_grammar_where_the_crate_takes_more() {
        for loose in ["1.5GiB", "256mib", "256MIB", "256Mib", "256MB", "256mb", "256", "256B", "256 b", "1Gi", "1EiB"] {
            assert!(loose.parse::<bytesize::ByteSize>().is_ok(), "the crate takes {loose}");
            assert_eq!(size(loose), Err(SizeError::Format), "topo does not: {loose}");
        }
        for bad in ["", "MiB", "-1MiB", "+1MiB", "1 2MiB", "0x10MiB", "1MiB2", "1MiBs"] {
            assert_eq!(size(bad), Err(SizeError::Format), "{bad:?}");
        }
        // Spaces around and between, as before.
        assert_eq!(size(" 256 MiB "), Ok(256 * ByteSize::MIB));
        assert_eq!(size("256\tMiB"), Ok(256 * ByteSize::MIB));
    }

    /// Zero is a size (validation sets the minimum of each field); a bare `0` has no unit.
    #[test]
    fn zero_needs_a_unit_and_shows_in_bytes() {
        assert_eq!(size("0MiB"), Ok(0));
        assert_eq!(size("0"), Err(SizeError::Format));
        assert_eq!(ByteSize::from_bytes(0).to_string(), "0B");
    }

    /// At most u64::MAX bytes: beyond is an overflow, never a saturated size (the crate
    /// saturates), and whole numbers stay exact past f64's 53 bits.
    #[test]
    fn sizes_past_u64_overflow_and_big_ones_stay_exact() {
        assert_eq!(size("16777215TiB"), Ok(16_777_215 * ByteSize::TIB));
        assert_eq!(size("16777216TiB"), Err(SizeError::Overflow), "2^64 bytes");
        assert_eq!(size("18446744073709551615KiB"), Err(SizeError::Overflow));
        assert_eq!(size("18446744073709551616KiB"), Err(SizeError::Overflow), "past u64 already");
        assert_eq!(size("9007199254740993KiB"), Ok(9_007_199_254_740_993 * ByteSize::KIB));
    }

    /// Shown in the largest unit that divides the size exactly, else in bytes: topo's form,
    /// which the plan's `memory`/`disk` fields and the snapshots use.
    #[test]
    fn sizes_show_in_the_largest_exact_unit() {
        for (bytes, shown) in [
            (1536 * ByteSize::KIB, "1536KiB"),
            (3 * ByteSize::TIB, "3TiB"),
            (ByteSize::GIB + ByteSize::MIB, "1025MiB"),
            (1000, "1000B"),
        ] {
            assert_eq!(ByteSize::from_bytes(bytes).to_string(), shown);
            if bytes % ByteSize::KIB == 0 {
                assert_eq!(size(shown), Ok(bytes), "round trip");
            }
        }
    }
}
