//! Domain XML: rendered from a lab VM (direct kernel boot or boot from its overlay, qcow2
//! overlay, virtio NICs), parsed into `ObservedDomain`; `<interface>` XML for hot-plug.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::network::{MtuR, MtuW};
use super::{MetadataW, Rendered, XmlError, from_xml, read_ns_facts, to_xml};
use crate::host::observed::{DomainState, ObservedDomain, ObservedInterface};
use crate::lab::address::Address;
use crate::lab::model::{Lab, MacAddr, Nic, Vm};

// ---- writing ---------------------------------------------------------------------------

#[derive(Serialize)]
struct DomainW<'a> {
    #[serde(rename = "@type")]
    virt_type: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataW>,
    memory: MemoryW,
    vcpu: u32,
    os: OsW<'a>,
    features: FeaturesW,
    on_poweroff: &'static str,
    on_reboot: &'static str,
    on_crash: &'static str,
    devices: DevicesW<'a>,
}

/// ACPI: QEMU's `pc` machine hot-plugs PCI devices (NICs added to a running VM, and the
/// re-plug after a network replacement) through ACPI only; without it QEMU answers
/// "Bus 'pci.0' does not support hotplugging". It also lets `shutdown` reach the guest.
#[derive(Serialize)]
struct FeaturesW {
    acpi: (),
    apic: (),
}

#[derive(Serialize)]
struct MemoryW {
    #[serde(rename = "@unit")]
    unit: &'static str,
    #[serde(rename = "$text")]
    value: u64,
}

#[derive(Serialize)]
struct OsW<'a> {
    #[serde(rename = "type")]
    os_type: OsTypeW,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initrd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<&'a str>,
}

#[derive(Serialize)]
struct OsTypeW {
    #[serde(rename = "@arch")]
    arch: &'static str,
    #[serde(rename = "@machine")]
    machine: &'static str,
    #[serde(rename = "$text")]
    value: &'static str,
}

#[derive(Serialize)]
struct DevicesW<'a> {
    disk: Vec<DiskW<'a>>,
    interface: Vec<InterfaceW<'a>>,
    serial: SerialW,
    memballoon: MemballoonW,
}

#[derive(Serialize)]
struct MemballoonW {
    #[serde(rename = "@model")]
    model: &'static str,
}

#[derive(Serialize)]
struct DiskW<'a> {
    #[serde(rename = "@type")]
    disk_type: &'static str,
    #[serde(rename = "@device")]
    device: &'static str,
    driver: DriverW,
    source: FileSourceW<'a>,
    target: TargetW,
    /// `<boot order='1'/>`: the overlay of a VM without direct kernel boot, so the
    /// firmware boots it and never the seed disk (a FAT volume with a boot signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<BootOrderW>,
    /// `<readonly/>` (the cloud-init seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    readonly: Option<()>,
}

#[derive(Serialize)]
struct BootOrderW {
    #[serde(rename = "@order")]
    order: u32,
}

#[derive(Serialize)]
struct DriverW {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@type")]
    driver_type: &'static str,
}

#[derive(Serialize)]
struct FileSourceW<'a> {
    #[serde(rename = "@file")]
    file: &'a str,
}

#[derive(Serialize)]
struct TargetW {
    #[serde(rename = "@dev")]
    dev: &'static str,
    #[serde(rename = "@bus")]
    bus: &'static str,
}

#[derive(Serialize)]
struct InterfaceW<'a> {
    #[serde(rename = "@type")]
    iface_type: &'static str,
    mac: MacW,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<NetSourceW<'a>>,
    /// `<target dev='TAP'/>`: the tap of a wire end (`type='ethernet'`), which libvirt makes
    /// under that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<TapTargetW<'a>>,
    /// libvirt's rate limit (`rate:`), the same average both ways, in kB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<BandwidthW>,
    model: ModelW,
    /// `<mtu size='N'/>`: its network's MTU ([`Lab::nic_mtu`]), given to the guest as virtio's
    /// `host_mtu` (libvirt 9.0 does not take the network's for it). After `<model>`, where
    /// libvirt writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<MtuW>,
    rom: RomW,
}

#[derive(Serialize)]
struct BandwidthW {
    inbound: AverageW,
    outbound: AverageW,
}

#[derive(Serialize)]
struct AverageW {
    #[serde(rename = "@average")]
    average: u32,
}

#[derive(Serialize)]
struct MacW {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Serialize)]
struct TapTargetW<'a> {
    #[serde(rename = "@dev")]
    dev: &'a str,
}

#[derive(Serialize)]
struct NetSourceW<'a> {
    #[serde(rename = "@network")]
    network: &'a str,
}

#[derive(Serialize)]
struct ModelW {
    #[serde(rename = "@type")]
    model: &'static str,
}

/// `<rom enabled='no'/>`: no option ROM. (`<rom bar='off'/>` on two virtio NICs makes
/// QEMU 7.2 fail with a duplicate fw_cfg ROM.)
#[derive(Serialize)]
struct RomW {
    #[serde(rename = "@enabled")]
    enabled: &'static str,
}

#[derive(Serialize)]
struct SerialW {
    #[serde(rename = "@type")]
    serial_type: &'static str,
    log: LogW,
    target: PortW,
}

/// `<log file='...' append='off'/>`: the serial port's output is also written to a file.
#[derive(Serialize)]
struct LogW {
    #[serde(rename = "@file")]
    file: String,
    #[serde(rename = "@append")]
    append: &'static str,
}

#[derive(Serialize)]
struct PortW {
    #[serde(rename = "@port")]
    port: u32,
}

fn path_str(p: &Path) -> Result<&str, XmlError> {
    p.to_str().ok_or_else(|| XmlError::NonUtf8Path(p.to_path_buf()))
}

fn interface_w<'a>(lab: &'a Lab, vm: &Vm, nic: &Nic) -> Result<InterfaceW<'a>, XmlError> {
    let net = lab
        .networks
        .get(&nic.network)
        .ok_or_else(|| XmlError::UnknownNetwork { vm: vm.name.to_string(), network: nic.network.to_string() })?;
    Ok(InterfaceW {
        iface_type: "network",
        mac: MacW { address: nic.mac.to_string() },
        source: Some(NetSourceW { network: net.libvirt_name.as_str() }),
        target: None,
        bandwidth: nic.impairment.rate.map(|r| BandwidthW {
            inbound: AverageW { average: r.kbytes_per_sec() },
            outbound: AverageW { average: r.kbytes_per_sec() },
        }),
        model: ModelW { model: "virtio" },
        mtu: lab.nic_mtu(nic).map(|size| MtuW { size }),
        rom: RomW { enabled: "no" },
    })
}

/// The `<interface type='ethernet'>` of a wire end: its MAC and tap, virtio, no option ROM.
fn wire_w(mac: MacAddr, tap: &str) -> InterfaceW<'_> {
    InterfaceW {
        iface_type: "ethernet",
        mac: MacW { address: mac.to_string() },
        source: None,
        target: Some(TapTargetW { dev: tap }),
        bandwidth: None,
        model: ModelW { model: "virtio" },
        mtu: None,
        rom: RomW { enabled: "no" },
    }
}

/// `<interface type='ethernet'>` XML of a wire end (NIC `mac`, tap `tap`), for
/// `attach_device` / `detach_device`.
///
/// # Errors
/// The XML cannot be serialised (never for a MAC and a tap name).
pub fn ethernet_interface_xml(mac: MacAddr, tap: &str) -> Result<String, XmlError> {
    to_xml("interface", "interface", &wire_w(mac, tap))
}

/// Where the serial console of a domain is written.
pub fn console_log_path(libvirt_name: &str) -> String {
    format!("/var/log/libvirt/qemu/{libvirt_name}-console.log")
}

/// Renders the domain XML of a lab VM, tagged with `spec_hash` (the planner's hash of its
/// desired fields). `disk_path` is the VM's overlay image (the caller creates it); without
/// it the domain has no disk. The emulator is left to libvirt.
pub fn domain_xml(lab: &Lab, vm: &Vm, disk_path: Option<&str>, spec_hash: &str) -> Result<Rendered, XmlError> {
    domain_xml_with_seed(lab, vm, disk_path, None, spec_hash, None)
}

/// [`domain_xml`] with the VM's cloud-init seed volume (`seed_path`) attached read-only as
/// a raw virtio disk after the overlay (`vdb`, or `vda` without an overlay).
///
/// Boot: a VM with `boot:` boots its kernel directly (`<os><kernel>`); a VM without it
/// boots from its overlay, which carries `<boot order='1'/>` (libvirt's per-device boot
/// order; the BIOS then tries that disk alone, never the seed).
///
/// `uuid`: the UUID a domain that exists keeps ([`super::Kept::uuid`]); `None` lets libvirt
/// generate one.
pub fn domain_xml_with_seed(
    lab: &Lab,
    vm: &Vm,
    disk_path: Option<&str>,
    seed_path: Option<&str>,
    spec_hash: &str,
    uuid: Option<&str>,
) -> Result<Rendered, XmlError> {
    let (kernel, initrd, cmdline) = match &vm.boot {
        Some(b) => (Some(path_str(&b.kernel)?), b.initrd.as_deref().map(path_str).transpose()?, b.cmdline.as_deref()),
        None => (None, None, None),
    };
    // Validate every NIC once, outside the render closure.
    for nic in &vm.nics {
        interface_w(lab, vm, nic)?;
    }
    let tag = lab.owner_tag(&Address::Vm(vm.name.clone()), vm.libvirt_name.as_str(), spec_hash);
    super::render_with_owner("domain", "domain", &tag, |metadata| DomainW {
        virt_type: vm.virt_type.as_str(),
        name: vm.libvirt_name.as_str(),
        uuid,
        metadata,
        memory: MemoryW { unit: "KiB", value: vm.memory.kib() },
        vcpu: vm.vcpus,
        os: OsW { os_type: OsTypeW { arch: "x86_64", machine: "pc", value: "hvm" }, kernel, initrd, cmdline },
        features: FeaturesW { acpi: (), apic: () },
        on_poweroff: "destroy",
        on_reboot: "restart",
        on_crash: "destroy",
        devices: DevicesW {
            disk: disk_path
                .map(|file| (file, "qcow2", None))
                .into_iter()
                .chain(seed_path.map(|file| (file, "raw", Some(()))))
                .zip(["vda", "vdb"])
                .map(|((file, driver_type, readonly), dev)| DiskW {
                    disk_type: "file",
                    device: "disk",
                    driver: DriverW { name: "qemu", driver_type },
                    source: FileSourceW { file },
                    target: TargetW { dev, bus: "virtio" },
                    boot: (readonly.is_none() && kernel.is_none()).then_some(BootOrderW { order: 1 }),
                    readonly,
                })
                .collect(),
            // Every NIC was checked above, so `ok()` drops nothing.
            interface: vm
                .nics
                .iter()
                .filter_map(|n| interface_w(lab, vm, n).ok())
                .chain(lab.wire_ends(&vm.name).into_iter().map(|(w, k)| wire_w(w.ends[k].mac, &w.ends[k].tap)))
                .collect(),
            // A pty, so `topo console` (virDomainOpenConsole) can attach; its output is
            // also logged to the console log file.
            serial: SerialW {
                serial_type: "pty",
                log: LogW { file: console_log_path(vm.libvirt_name.as_str()), append: "off" },
                target: PortW { port: 0 },
            },
            memballoon: MemballoonW { model: "none" },
        },
    })
}

/// `<interface type='network'>` XML of one NIC, for `attach_device` / `detach_device`.
pub fn interface_xml(lab: &Lab, vm: &Vm, nic: &Nic) -> Result<String, XmlError> {
    to_xml("interface", "interface", &interface_w(lab, vm, nic)?)
}

// ---- reading ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct DomainR {
    #[serde(rename = "@type")]
    virt_type: String,
    name: String,
    uuid: Option<String>,
    memory: Option<MemoryR>,
    vcpu: Option<VcpuR>,
    os: Option<OsR>,
    devices: Option<DevicesR>,
}

#[derive(Deserialize)]
struct MemoryR {
    #[serde(rename = "@unit")]
    unit: Option<String>,
    #[serde(rename = "$text")]
    value: u64,
}

#[derive(Deserialize)]
struct VcpuR {
    #[serde(rename = "$text")]
    value: u32,
}

#[derive(Deserialize)]
struct OsR {
    kernel: Option<String>,
    initrd: Option<String>,
    cmdline: Option<String>,
}

#[derive(Deserialize)]
struct DevicesR {
    #[serde(rename = "$value", default)]
    items: Vec<DeviceR>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DeviceR {
    Disk(DiskR),
    Interface(InterfaceR),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct DiskR {
    source: Option<DiskSourceR>,
    #[serde(rename = "backingStore")]
    backing: Option<Box<BackingStoreR>>,
}

/// One `<backingStore>` of a disk's chain: a layer (`<source>` and the next
/// `<backingStore>`), or, empty, the end of the chain.
#[derive(Deserialize)]
struct BackingStoreR {
    source: Option<DiskSourceR>,
    #[serde(rename = "backingStore")]
    backing: Option<Box<BackingStoreR>>,
}

/// The files under a disk as its `<backingStore>` elements list them, top down, and
/// whether the list ends with the empty `<backingStore/>` that marks a chain's end (libvirt
/// writes the whole chain into a running domain's live XML; the persistent config has none).
fn backing_chain(first: Option<Box<BackingStoreR>>) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut next = first;
    while let Some(b) = next {
        match b.source.and_then(|s| s.file.or(s.dev)) {
            Some(path) => out.push(path),
            None => return (out, true),
        }
        next = b.backing;
    }
    (out, false)
}

#[derive(Deserialize)]
struct DiskSourceR {
    #[serde(rename = "@file")]
    file: Option<String>,
    #[serde(rename = "@dev")]
    dev: Option<String>,
}

#[derive(Deserialize)]
struct InterfaceR {
    #[serde(rename = "@type")]
    iface_type: Option<String>,
    mac: Option<MacR>,
    source: Option<IfSourceR>,
    model: Option<ModelR>,
    target: Option<TargetR>,
    bandwidth: Option<Box<BandwidthR>>,
    mtu: Option<MtuR>,
}

#[derive(Deserialize)]
struct BandwidthR {
    inbound: Option<BandwidthSideR>,
    outbound: Option<BandwidthSideR>,
}

#[derive(Deserialize)]
struct BandwidthSideR {
    #[serde(rename = "@average")]
    average: Option<u32>,
    #[serde(rename = "@peak")]
    peak: Option<String>,
    #[serde(rename = "@burst")]
    burst: Option<String>,
    #[serde(rename = "@floor")]
    floor: Option<String>,
}

#[derive(Deserialize)]
struct TargetR {
    #[serde(rename = "@dev")]
    dev: Option<String>,
}

#[derive(Deserialize)]
struct MacR {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Deserialize)]
struct IfSourceR {
    #[serde(rename = "@network")]
    network: Option<String>,
    #[serde(rename = "@bridge")]
    bridge: Option<String>,
}

#[derive(Deserialize)]
struct ModelR {
    #[serde(rename = "@type")]
    model: String,
}

/// KiB in `value` `unit` (libvirt's scaled integer units; the default is KiB).
fn to_kib(value: u64, unit: Option<&str>) -> Result<u64, XmlError> {
    let bytes_per: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(XmlError::Parse { what: "domain", message: format!("unknown memory unit {other:?}") });
        }
    };
    value
        .checked_mul(bytes_per)
        .map(|b| b / 1024)
        .ok_or_else(|| XmlError::Parse { what: "domain", message: "memory size overflows".into() })
}

fn observed_interface(i: InterfaceR) -> Result<ObservedInterface, XmlError> {
    let mac = match i.mac {
        Some(m) => Some(
            m.address
                .parse::<MacAddr>()
                .map_err(|e| XmlError::Parse { what: "interface", message: format!("mac {:?} {e}", m.address) })?,
        ),
        None => None,
    };
    let is_network = i.iface_type.as_deref() == Some("network");
    let ethernet = match i.iface_type.as_deref() {
        Some("ethernet") => i.target.as_ref().and_then(|t| t.dev.clone()),
        _ => None,
    };
    let (network, bridge) = match i.source {
        Some(s) => (if is_network { s.network } else { None }, s.bridge),
        None => (None, None),
    };
    let bandwidth = i.bandwidth.map(|b| {
        let extra = |s: &Option<BandwidthSideR>| {
            s.as_ref().is_some_and(|s| s.peak.is_some() || s.burst.is_some() || s.floor.is_some())
        };
        crate::lab::impair::ObservedBandwidth {
            inbound: b.inbound.as_ref().and_then(|s| s.average),
            outbound: b.outbound.as_ref().and_then(|s| s.average),
            extra: extra(&b.inbound) || extra(&b.outbound),
        }
    });
    Ok(ObservedInterface {
        mac,
        network,
        bridge,
        model: i.model.map(|m| m.model),
        bandwidth: bandwidth.filter(|b| !b.is_empty()),
        mtu: i.mtu.as_ref().and_then(MtuR::size),
        ethernet,
    })
}

/// Parses domain XML (as `dumpxml` prints it) into an `ObservedDomain` in `state`.
/// Unknown elements are ignored; the result is for reading, never for writing back.
pub fn parse_domain(xml: &str, state: DomainState) -> Result<ObservedDomain, XmlError> {
    let r: DomainR = from_xml("domain", "domain", xml)?;
    let facts = read_ns_facts("domain", xml)?;
    let memory_kib = match &r.memory {
        Some(m) => to_kib(m.value, m.unit.as_deref())?,
        None => 0,
    };
    let os = r.os.unwrap_or(OsR { kernel: None, initrd: None, cmdline: None });
    let mut disks = Vec::new();
    let mut backing = Vec::new();
    let mut chains_known = true;
    let mut interfaces = Vec::new();
    for d in r.devices.map(|d| d.items).unwrap_or_default() {
        match d {
            DeviceR::Disk(disk) => {
                if let Some(path) = disk.source.and_then(|s| s.file.or(s.dev)) {
                    disks.push(path);
                    let (chain, ends) = backing_chain(disk.backing);
                    chains_known &= ends;
                    backing.push(chain);
                }
            }
            DeviceR::Interface(i) => interfaces.push(observed_interface(i)?),
            DeviceR::Other => {}
        }
    }
    Ok(ObservedDomain {
        name: r.name,
        uuid: r.uuid,
        state,
        virt_type: r.virt_type,
        memory_kib,
        vcpus: r.vcpu.map_or(1, |v| v.value),
        kernel: os.kernel,
        initrd: os.initrd,
        cmdline: os.cmdline,
        disks,
        backing,
        chains_known,
        live_only: Vec::new(),
        snapshots: Vec::new(),
        interfaces,
        owner: facts.owner,
        persistent: true,
        live: None,
        links: None,
        taps: Vec::new(),
        live_disks: None,
        seed: None,
    })
}

/// Parses one `<interface>` element (as given to attach/detach).
pub fn parse_interface(xml: &str) -> Result<ObservedInterface, XmlError> {
    observed_interface(from_xml("interface", "interface", xml)?)
}

/// The tap device of each NIC in a running domain's live XML, in device order: `(MAC, tap)`
/// for every `<interface>` with both a `<mac>` and a `<target dev>` (libvirt names the tap
/// when it starts the domain; the persistent config has none).
pub fn live_taps(xml: &str) -> Result<Vec<(MacAddr, String)>, XmlError> {
    let r: DomainR = from_xml("domain", "domain", xml)?;
    let mut out = Vec::new();
    for d in r.devices.map(|d| d.items).unwrap_or_default() {
        if let DeviceR::Interface(i) = d
            && let (Some(m), Some(dev)) = (i.mac, i.target.and_then(|t| t.dev))
        {
            let mac = m
                .address
                .parse::<MacAddr>()
                .map_err(|e| XmlError::Parse { what: "interface", message: format!("mac {:?} {e}", m.address) })?;
            out.push((mac, dev));
        }
    }
    Ok(out)
}
