//! The raw lab file: a serde mirror of the YAML (`apiVersion: topo/v1`) with source spans.
//!
//! Nothing here is checked beyond YAML shape and types: unknown keys, duplicate keys and
//! wrong types are rejected by the parser, every other rule lives in `validate`, which turns
//! a [`LabSpec`] into a `model::Lab`. Values that semantic errors point at are wrapped in
//! [`Spanned`] so diagnostics can label the exact text in the file.
//!
//! The same types generate the JSON Schema of the lab file ([`json_schema`]), so editors
//! that speak `yaml-language-server` can complete and check lab files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
pub use serde_saphyr::Spanned;

/// A YAML mapping whose keys keep their source location, in file order.
///
/// `Spanned` is neither `Ord` nor `Hash`, so this is a list of entries rather than a map;
/// duplicate keys never reach it (the parser rejects them).
#[derive(Debug, Clone)]
pub struct SpannedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for SpannedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> SpannedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, V)> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The entry whose key is `key`, if any.
    pub fn get(&self, key: &str) -> Option<&(Spanned<String>, V)> {
        self.0.iter().find(|(k, _)| k.value == key)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to definitions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Spanned<String>>()? {
                    let v = map.next_value::<V>()?;
                    out.push((k, v));
                }
                Ok(SpannedMap(out))
            }
            // `networks:` with nothing after it is an empty mapping, not an error.
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(SpannedMap(Vec::new()))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for SpannedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, V>>::json_schema(generator)
    }
}

/// A topo lab file: networks and virtual machines that `topo apply` brings up on libvirt.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "topo lab file")]
pub struct LabSpec {
    /// Format version of the lab file. Must be `topo/v1`.
    #[serde(rename = "apiVersion")]
    #[schemars(with = "String")]
    pub api_version: Option<Spanned<String>>,
    /// The lab's name: lowercase letters, digits and '-', starting with a letter, at most
    /// 32 characters. Part of every derived MAC address.
    #[schemars(with = "String")]
    pub name: Option<Spanned<String>>,
    /// Prepended to the libvirt name of every network and VM the lab owns (default
    /// `"<name>-"`; `""` keeps names as written). Lowercase letters, digits, '-' and '_'.
    #[schemars(with = "Option<String>")]
    pub prefix: Option<Spanned<String>>,
    /// The libvirt hosts the lab runs on, by name, when it spans several (docs/multi-host.md).
    /// Without `hosts:` the lab runs on the one host `--connect` (or libvirt's default URI)
    /// reaches.
    #[serde(default)]
    pub hosts: SpannedMap<HostSpec>,
    /// Networks by name: external ones (already on the host) and ones the lab owns.
    #[serde(default)]
    pub networks: SpannedMap<NetworkSpec>,
    /// Virtual machines by name.
    #[serde(default)]
    pub vms: SpannedMap<VmSpec>,
    /// cloud-init defaults for every VM (each VM's own `cloud_init` overrides them key by
    /// key). `hostname` is per VM only.
    #[schemars(with = "Option<CloudInitSpec>")]
    pub cloud_init: Option<Spanned<CloudInitSpec>>,
    /// Readiness conditions for every VM without its own `ready` (docs/lab-file.md,
    /// "Readiness"): proven after the ARP proof by apply and verify.
    #[schemars(with = "Option<Vec<ReadySpec>>")]
    pub ready: Option<Spanned<Vec<Spanned<ReadySpec>>>>,
    /// Point-to-point wires between VMs (docs/wires.md): each item names the two VMs it
    /// joins, `[r1, r2]`. Each end is a NIC of its own, after the VM's `nics:`, with an
    /// address from `link_subnet`; the host passes every frame across unchanged (LLDP, LACP
    /// and STP too).
    #[serde(default)]
    #[schemars(with = "Vec<Vec<String>>")]
    pub links: Vec<Spanned<Vec<Spanned<String>>>>,
    /// The IPv4 pool the wires' addresses come from, a /31 per wire in `links:` order
    /// (default `100.127.0.0/24`).
    #[schemars(with = "Option<String>")]
    pub link_subnet: Option<Spanned<String>>,
}

/// One readiness condition (`ready:`): a word, or a mapping with one key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReadySpec {
    /// `ssh`: an SSH server's banner on port 22 of the VM's first proven IPv4 address.
    /// `cloud-init`: cloud-init's final message (`Cloud-init v. ... finished at`) on the VM's
    /// serial console.
    Word(String),
    /// `{tcp: PORT}` or `{console: TEXT}`.
    Map(ReadyMapSpec),
}

/// `{tcp: PORT}`: a TCP connection accepted on the VM's first proven IPv4 address;
/// `{console: TEXT}`: a line on the VM's serial console that holds TEXT. One key per item.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyMapSpec {
    /// A TCP port, 1 to 65535.
    pub tcp: Option<i64>,
    /// Text a line of the serial console holds (one line: no line breaks).
    pub console: Option<String>,
}

/// A libvirt host of a lab that spans several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The libvirt URI that reaches the host, e.g. `qemu+ssh://root@h1/system` (an ssh config
    /// alias keeps the lab file the same on other machines; `--host NAME=URI` replaces it for
    /// one run).
    #[schemars(with = "String")]
    pub uri: Spanned<String>,
    /// The host's own IPv4 address that VXLAN tunnels to the other hosts use, e.g.
    /// `10.77.0.11`. Needed on every host a lab network spans.
    #[schemars(with = "Option<String>")]
    pub underlay: Option<Spanned<String>>,
}

/// cloud-init: what topo puts in the VM's NoCloud seed (a small read-only disk labelled
/// CIDATA). On by default for VMs with a `disk` (a cloud image), off for VMs that boot a
/// kernel only. See docs/guests.md.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInitSpec {
    /// `false`: no seed (images without cloud-init). Default: true for VMs with a `disk`.
    #[schemars(with = "Option<bool>")]
    pub enabled: Option<Spanned<bool>>,
    /// The login user topo creates, with passwordless sudo and key-only login (default `topo`).
    #[schemars(with = "Option<String>")]
    pub user: Option<Spanned<String>>,
    /// OpenSSH public keys for the user, one key line each (`ssh-ed25519 AAAA... comment`).
    /// Default when neither this nor `ssh_authorized_keys_files` is given: the invoking
    /// user's `~/.ssh/*.pub`.
    #[schemars(with = "Option<Vec<String>>")]
    pub ssh_authorized_keys: Option<Vec<Spanned<String>>>,
    /// Public key files (every key line in each is used). Relative paths resolve against the
    /// lab file's folder; `~/` is the invoking user's home.
    #[schemars(with = "Option<Vec<String>>")]
    pub ssh_authorized_keys_files: Option<Vec<Spanned<String>>>,
    /// The guest's hostname (per VM only; default: the VM name with `_` turned into `-`).
    #[schemars(with = "Option<String>")]
    pub hostname: Option<Spanned<String>>,
    /// Your own user-data file: a `#cloud-config` is merged into what topo generates
    /// (mappings merge, lists append, your scalars win); a script (`#!`), `#include`,
    /// `#cloud-boothook` or MIME file goes beside topo's cloud-config in a MIME multi-part.
    /// Relative paths resolve against the lab file's folder.
    #[schemars(with = "Option<String>")]
    pub user_data: Option<Spanned<String>>,
}

/// How a lab network reaches beyond its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeSpec {
    /// Forward with masquerade (like libvirt's `default` network). Needs a subnet.
    Nat,
    /// Forward without masquerade; the upstream router must route the subnet to the host.
    /// Needs a subnet.
    Routed,
    /// No forwarding: guests talk to each other and to the host bridge only.
    Isolated,
    /// Like routed, but libvirt adds no firewall rules at all.
    Open,
}

/// A network: either `external: true` (exists on the host; only referenced) or owned by the lab.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The network exists on the host already under exactly this name; topo reads it and
    /// never changes or destroys it. No other key is allowed beside `external: true` but
    /// `subnet` (the LAN's subnet, for ARP verification, when libvirt knows no address).
    #[schemars(with = "Option<bool>")]
    pub external: Option<Spanned<bool>>,
    /// nat | routed | isolated | open (default nat).
    #[schemars(with = "Option<ModeSpec>")]
    pub mode: Option<Spanned<ModeSpec>>,
    /// IPv4 subnet in CIDR form, e.g. `192.168.152.0/24` (host bits zero, /30 or larger). On an
    /// external network: the subnet of the LAN it bridges to, which verification may ask in.
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Spanned<String>>,
    /// Address of the host bridge (default: the first address of the subnet).
    #[schemars(with = "Option<String>")]
    pub gateway: Option<Spanned<String>>,
    /// IPv6 prefix in CIDR form, exactly a /64, e.g. `fd00:10::/64` (beside `subnet:` or
    /// alone): libvirt's dnsmasq sends router advertisements on it and every guest NIC takes
    /// its SLAAC address (the prefix + the modified EUI-64 of its MAC, docs/addressing.md).
    #[schemars(with = "Option<String>")]
    pub subnet6: Option<Spanned<String>>,
    /// IPv6 address of the host bridge (default: the prefix's `::1`). Needs `subnet6`.
    #[schemars(with = "Option<String>")]
    pub gateway6: Option<Spanned<String>>,
    /// DHCP: `true` (default when a subnet is given), `false`, or `{start, end}`.
    #[schemars(with = "Option<DhcpSpec>")]
    pub dhcp: Option<Spanned<DhcpSpec>>,
    /// Linux bridge name (at most 15 characters); default lets libvirt pick `virbrN`.
    #[schemars(with = "Option<String>")]
    pub bridge: Option<Spanned<String>>,
    /// Start the network when the host boots (default true).
    #[schemars(with = "Option<bool>")]
    pub autostart: Option<Spanned<bool>>,
    /// Spanning tree on the bridge (default false: new ports forward at once).
    #[schemars(with = "Option<bool>")]
    pub stp: Option<Spanned<bool>>,
    /// dnsmasq pings an address before offering it (default false: leases ~3 s sooner).
    #[schemars(with = "Option<bool>")]
    pub dhcp_ping: Option<Spanned<bool>>,
    /// MTU in bytes of the network's bridge, its taps and every guest NIC on it (68 to
    /// 65521; default: libvirt's, 1500 on a new bridge). Lower it for a network stretched
    /// over a tunnel (1450 under VXLAN), raise it for jumbo frames (9000).
    #[schemars(with = "Option<i64>")]
    pub mtu: Option<Spanned<i64>>,
    /// The host (under `hosts:`) that serves the network's gateway, DHCP, DNS and NAT when
    /// its VMs are on several hosts; on the others it is a bridge without addresses, joined
    /// by VXLAN. Default: the first host in `hosts:` with a VM on the network.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
}

/// `dhcp:` is either a switch or an explicit range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DhcpSpec {
    /// `true`: serve the subnet except the gateway; `false`: no DHCP.
    Enabled(bool),
    /// An explicit range, both ends included.
    Range(DhcpRangeSpec),
}

/// An explicit DHCP range inside the network's subnet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DhcpRangeSpec {
    /// First address handed out.
    pub start: String,
    /// Last address handed out.
    pub end: String,
}

/// libvirt domain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorSpec {
    /// Software emulation (works without /dev/kvm, slow).
    Qemu,
    /// Hardware virtualisation (default).
    Kvm,
}

/// Whether a VM runs (Terraform's and kcli's vocabulary; libvirt calls a stopped domain
/// `shut off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmStateSpec {
    /// Defined and running (default).
    Running,
    /// Defined, its disk kept, not running.
    Stopped,
}

/// A virtual machine.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// qemu | kvm (default kvm).
    #[schemars(with = "Option<HypervisorSpec>")]
    pub hypervisor: Option<Spanned<HypervisorSpec>>,
    /// Memory with a unit: KiB, MiB, GiB or TiB (default 512MiB; 64MiB to 1TiB).
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Virtual CPUs (default 1; 1 to 255, the limit of QEMU's `pc` machine).
    #[schemars(with = "Option<i64>")]
    pub vcpus: Option<Spanned<i64>>,
    /// running | stopped (default running). A stopped VM is defined, keeps its disk, and
    /// is not running; apply starts or stops it in place.
    #[schemars(with = "Option<VmStateSpec>")]
    pub state: Option<Spanned<VmStateSpec>>,
    /// Direct kernel boot. A VM needs `boot`, `disk` or both.
    #[schemars(with = "Option<BootSpec>")]
    pub boot: Option<Spanned<BootSpec>>,
    /// A copy-on-write overlay on a base image. A VM needs `boot`, `disk` or both.
    #[schemars(with = "Option<DiskSpec>")]
    pub disk: Option<Spanned<DiskSpec>>,
    /// Network interfaces in guest order (eth0, eth1, ...). May be empty.
    #[serde(default)]
    #[schemars(with = "Vec<NicSpec>")]
    pub nics: Vec<Spanned<NicSpec>>,
    /// cloud-init for this VM: overrides the lab-level `cloud_init` key by key.
    #[schemars(with = "Option<CloudInitSpec>")]
    pub cloud_init: Option<Spanned<CloudInitSpec>>,
    /// The host (under `hosts:`) the VM runs on. Default: the first host in `hosts:`.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Readiness conditions, proven after the ARP proof (default: the lab's `ready`; `[]`
    /// for none).
    #[schemars(with = "Option<Vec<ReadySpec>>")]
    pub ready: Option<Spanned<Vec<Spanned<ReadySpec>>>>,
    /// A group of identical VMs: `count: N` (0 to 999) makes the VMs `<key>-1` ... `<key>-N`,
    /// each a VM of its own with its own derived MACs and addresses; 0 makes none. Not with
    /// a written `nics[].mac`, `nics[].ip` (but `dynamic`) or `cloud_init.hostname`, which
    /// members cannot share. See docs/lab-file.md, "VM groups".
    #[schemars(with = "Option<i64>")]
    pub count: Option<Spanned<i64>>,
}

/// Direct kernel boot. Relative paths resolve against the lab file's folder.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// Kernel image file (must exist).
    #[schemars(with = "String")]
    pub kernel: Spanned<String>,
    /// Initial ramdisk file (must exist if given).
    #[schemars(with = "Option<String>")]
    pub initrd: Option<Spanned<String>>,
    /// Kernel command line, e.g. `console=ttyS0`.
    #[schemars(with = "Option<String>")]
    pub cmdline: Option<Spanned<String>>,
}

/// A disk: a copy-on-write overlay on a base image that is never written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Base image file (must exist). Relative paths resolve against the lab file's folder.
    #[schemars(with = "String")]
    pub image: Spanned<String>,
    /// Virtual size of the overlay with a unit, e.g. `10GiB` (default: the image's size).
    #[schemars(with = "Option<String>")]
    pub size: Option<Spanned<String>>,
    /// Format of the base image: qcow2 (default) or raw. Declared, never guessed from the
    /// file's first bytes.
    #[schemars(with = "Option<ImageFormatSpec>")]
    pub format: Option<Spanned<ImageFormatSpec>>,
}

/// Format of a base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormatSpec {
    /// QEMU's copy-on-write format (cloud images).
    Qcow2,
    /// A plain disk image.
    Raw,
}

/// How topo proves a NIC got an address after apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifySpec {
    /// ARP request/reply on the network's bridge (default).
    Arp,
    /// Do not check this NIC.
    None,
}

/// A network interface of a VM.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Name of a network declared under `networks`.
    #[schemars(with = "String")]
    pub network: Spanned<String>,
    /// Unicast MAC `52:54:00:xx:xx:xx` (default: derived from lab, VM and NIC index).
    #[schemars(with = "Option<String>")]
    pub mac: Option<Spanned<String>>,
    /// The NIC's address on a lab network: an IPv4 address (a DHCP reservation for its MAC),
    /// or `dynamic` (a lease from the DHCP pool, no reservation). Default: an address topo
    /// derives from lab, VM and NIC index and reserves (docs/addressing.md).
    #[schemars(with = "Option<String>")]
    pub ip: Option<Spanned<String>>,
    /// arp (default) | none.
    #[schemars(with = "Option<VerifySpec>")]
    pub verify: Option<Spanned<VerifySpec>>,
    /// Rate limit, both directions, in bits per second: `10Mbit`, `512kbit`, `1Gbit`
    /// (libvirt's `<bandwidth>`; a multiple of 8kbit).
    #[schemars(with = "Option<String>")]
    pub rate: Option<Spanned<String>>,
    /// Delay of the traffic toward the VM, e.g. `50ms` (netem on the VM's tap; local hosts).
    #[schemars(with = "Option<String>")]
    pub delay: Option<Spanned<String>>,
    /// Random variation of `delay`, e.g. `5ms` (needs `delay`).
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Spanned<String>>,
    /// Random loss of the traffic toward the VM, e.g. `1%` or `0.5%`.
    #[schemars(with = "Option<String>")]
    pub loss: Option<Spanned<String>>,
}

/// The JSON Schema of the lab file, generated from these types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(LabSpec);
    schema.to_value()
}
