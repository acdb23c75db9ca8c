//! The fields topo manages on a network or VM, flattened to `path = value` pairs so desired
//! (model) and observed (host) can be compared field by field and hashed.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::host::observed::{ObservedDomain, ObservedMode, ObservedNetwork};
use crate::lab::model::{DhcpService, Lab, MacAddr, ManagedNetwork, Network, Vm};

/// A field the planner compares, shows and replaces on: a closed vocabulary. Its text
/// ([`Field::as_str`], `Display`) is the path the plan text and JSON show (`memory`,
/// `nic[52:54:00:12:34:56].rate`), and it orders by that text, so maps of fields iterate,
/// and hash ([`spec_hash`]), in the order of their paths. Saved plans store the text
/// (`FromStr` reads it back).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    // --- a network ---
    /// `mode`: nat, route, open, isolated (or the mode of a network topo did not make).
    Mode,
    /// `bridge`: the bridge's name, when the lab file names one.
    Bridge,
    /// `stp`: spanning tree on the bridge, `on`/`off`.
    Stp,
    /// `subnet`: `address/prefix`, or `none`.
    Subnet,
    /// `gateway`: the bridge's own address.
    Gateway,
    /// `subnet6`: the IPv6 prefix (`address/64`), when the lab or the host has one; `none`
    /// when only the host's network has one.
    Subnet6,
    /// `gateway6`: the bridge's own IPv6 address.
    Gateway6,
    /// `dhcp`: what libvirt's dnsmasq serves.
    Dhcp,
    /// `dhcp_ping`: dnsmasq pings an address before it leases it, `on`/`off`.
    DhcpPing,
    /// `autostart`: the network starts with libvirt, `on`/`off`.
    Autostart,
    /// `mtu`: the MTU in bytes of a network's bridge and its taps (`<mtu size>`), when the lab
    /// or the host has one; of a tunnel's device.
    Mtu,
    /// `dhcp_host[MAC]`: a DHCP reservation, `IP HOST`.
    DhcpHost(MacAddr),
    /// `active`: the network runs (run state, not in the spec hash).
    Active,
    // --- a VM ---
    /// `hypervisor`: libvirt's domain type (`kvm`, `qemu`).
    Hypervisor,
    /// `memory`: the guest's memory.
    Memory,
    /// `vcpus`: the guest's virtual CPUs.
    Vcpus,
    /// `boot.kernel`: the kernel booted directly.
    BootKernel,
    /// `boot.initrd`: its initrd.
    BootInitrd,
    /// `boot.cmdline`: its command line.
    BootCmdline,
    /// `disk`: the overlay volume over the base image (`NAME (on IMAGE, SIZE)`).
    Disk,
    /// `cloud_init`: the seed volume's name (carries a hash of the seed).
    CloudInit,
    /// `cloud_init.FILE`: a file of the seed (`user-data`, `meta-data`, `network-config`).
    CloudInitFile(String),
    /// `nic[MAC]`: the network the NIC is on.
    Nic(MacAddr),
    /// `nic[MAC].rate`: the NIC's rate limit (libvirt's `<bandwidth>`).
    NicRate(MacAddr),
    /// `nic[MAC].netem`: delay, jitter and loss on the NIC's tap.
    NicNetem(MacAddr),
    /// `nic[MAC].bridge`: the bridge the running NIC's tap is plugged into.
    NicBridge(MacAddr),
    /// `nic[MAC].mtu`: the MTU in bytes the guest's NIC is given (`<interface><mtu>`), its
    /// network's.
    NicMtu(MacAddr),
    /// `nic[MAC].ip`: the address the DHCP reservation of a running NIC gives it (its
    /// network's `dhcp_host[MAC]`), shown on the VM when it changes: the NIC is plugged in
    /// again so the guest asks for it (`plan::vm`, `ip_replugs`). Never a compared or hashed
    /// field of the VM: the reservation is the network's.
    NicIp(MacAddr),
    /// `state`: the VM's run state (not in the spec hash).
    State,
    /// `persistent`: whether the domain has a persistent config.
    Persistent,
    /// `snapshots`: the VM's snapshots (shown when they go).
    Snapshots,
    // --- any object ---
    /// `owner`: the object's owner tag (adopted, taken over, released).
    Owner,
    /// `path`: a pool's folder, a volume's file.
    Path,
    // --- a tunnel (a stretched network's VXLAN device on one host) ---
    /// `vni`: the VXLAN network identifier.
    Vni,
    /// `local`: the host's underlay address the tunnel sends from.
    Local,
    /// `peers`: the other hosts' underlay addresses it sends to.
    Peers,
    /// `up`: the device is up (run state).
    Up,
    // --- a wire (two VM NICs joined on the host) ---
    /// `ends`: the two ends, each a VM's NIC and its tap, that the host joins.
    Ends,
}

impl Field {
    /// The path shown for the field, as the plan text and JSON have it.
    pub fn as_str(&self) -> Cow<'static, str> {
        use Field::*;
        Cow::Borrowed(match self {
            Mode => "mode",
            Bridge => "bridge",
            Stp => "stp",
            Subnet => "subnet",
            Gateway => "gateway",
            Subnet6 => "subnet6",
            Gateway6 => "gateway6",
            Dhcp => "dhcp",
            DhcpPing => "dhcp_ping",
            Autostart => "autostart",
            Mtu => "mtu",
            DhcpHost(mac) => return Cow::Owned(format!("dhcp_host[{mac}]")),
            Active => "active",
            Hypervisor => "hypervisor",
            Memory => "memory",
            Vcpus => "vcpus",
            BootKernel => "boot.kernel",
            BootInitrd => "boot.initrd",
            BootCmdline => "boot.cmdline",
            Disk => "disk",
            CloudInit => "cloud_init",
            CloudInitFile(name) => return Cow::Owned(format!("cloud_init.{name}")),
            Nic(mac) => return Cow::Owned(format!("nic[{mac}]")),
            NicRate(mac) => return Cow::Owned(format!("nic[{mac}].rate")),
            NicNetem(mac) => return Cow::Owned(format!("nic[{mac}].netem")),
            NicBridge(mac) => return Cow::Owned(format!("nic[{mac}].bridge")),
            NicMtu(mac) => return Cow::Owned(format!("nic[{mac}].mtu")),
            NicIp(mac) => return Cow::Owned(format!("nic[{mac}].ip")),
            State => "state",
            Persistent => "persistent",
            Snapshots => "snapshots",
            Owner => "owner",
            Path => "path",
            Vni => "vni",
            Local => "local",
            Peers => "peers",
            Up => "up",
            Ends => "ends",
        })
    }
}

impl fmt::Display for Field {
    /// The path; width and alignment apply (`{:<width$}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.as_str())
    }
}

impl Ord for Field {
    /// By path text: the order plans and spec hashes have always had.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(&other.as_str())
    }
}

impl PartialOrd for Field {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A path that names no [`Field`] (in a saved plan).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a field topo plans on")]
pub struct FieldError(pub String);

impl FromStr for Field {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        use Field::*;
        let bad = || FieldError(s.to_string());
        let mac = |m: &str| m.parse::<MacAddr>().map_err(|_| bad());
        if let Some(rest) = s.strip_prefix("nic[") {
            let (m, tail) = rest.split_once(']').ok_or_else(bad)?;
            let mac = mac(m)?;
            return match tail {
                "" => Ok(Nic(mac)),
                ".rate" => Ok(NicRate(mac)),
                ".netem" => Ok(NicNetem(mac)),
                ".bridge" => Ok(NicBridge(mac)),
                ".mtu" => Ok(NicMtu(mac)),
                ".ip" => Ok(NicIp(mac)),
                _ => Err(bad()),
            };
        }
        if let Some(m) = s.strip_prefix("dhcp_host[").and_then(|r| r.strip_suffix(']')) {
            return Ok(DhcpHost(mac(m)?));
        }
        if let Some(name) = s.strip_prefix("cloud_init.") {
            return Ok(CloudInitFile(name.to_string()));
        }
        Ok(match s {
            "mode" => Mode,
            "bridge" => Bridge,
            "stp" => Stp,
            "subnet" => Subnet,
            "gateway" => Gateway,
            "subnet6" => Subnet6,
            "gateway6" => Gateway6,
            "dhcp" => Dhcp,
            "dhcp_ping" => DhcpPing,
            "autostart" => Autostart,
            "mtu" => Mtu,
            "active" => Active,
            "hypervisor" => Hypervisor,
            "memory" => Memory,
            "vcpus" => Vcpus,
            "boot.kernel" => BootKernel,
            "boot.initrd" => BootInitrd,
            "boot.cmdline" => BootCmdline,
            "disk" => Disk,
            "cloud_init" => CloudInit,
            "state" => State,
            "persistent" => Persistent,
            "snapshots" => Snapshots,
            "owner" => Owner,
            "path" => Path,
            "vni" => Vni,
            "local" => Local,
            "peers" => Peers,
            "up" => Up,
            "ends" => Ends,
            _ => return Err(bad()),
        })
    }
}

impl Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a difference in a field costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldClass {
    /// Changed on the live object (libvirt update, hot-plug, autostart flag).
    InPlace,
    /// The config is rewritten and the VM restarted for it to take effect.
    Restart,
    /// The object must be replaced (a network is redefined and restarted; a VM recreated).
    Replace,
    /// Run state (active, running): not part of the spec hash.
    State,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue {
    pub value: String,
    pub class: FieldClass,
}

/// `field -> value`, sorted by the fields' paths.
pub type Fields = BTreeMap<Field, FieldValue>;

fn put(f: &mut Fields, field: Field, value: impl Into<String>, class: FieldClass) {
    f.insert(field, FieldValue { value: value.into(), class });
}

fn onoff(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Desired fields of a lab network. A bridge left to libvirt (`None`) is not compared.
pub fn desired_network(m: &ManagedNetwork) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    put(&mut f, Field::Mode, m.mode.as_str(), Replace);
    if let Some(b) = &m.bridge {
        put(&mut f, Field::Bridge, b.as_str(), Replace);
    }
    put(&mut f, Field::Stp, onoff(m.stp), Replace);
    put(&mut f, Field::Subnet, m.subnet.map(|s| s.to_string()).unwrap_or_else(|| "none".into()), Replace);
    if let Some(g) = m.gateway {
        put(&mut f, Field::Gateway, g.to_string(), Replace);
    }
    // Only with a `subnet6`: a network without one keeps the fields (and spec hash) it had
    // before topo knew IPv6. A change replaces the network, as for `subnet`.
    if let (Some(s), Some(g)) = (m.subnet6, m.gateway6) {
        put(&mut f, Field::Subnet6, s.to_string(), Replace);
        put(&mut f, Field::Gateway6, g.to_string(), Replace);
    }
    put(&mut f, Field::Dhcp, m.dhcp_service().to_string(), Replace);
    put(&mut f, Field::DhcpPing, onoff(m.dhcp_ping), Replace);
    // libvirt cannot change a running network's MTU: the network is defined again and
    // restarted, its running NICs plugged in again with the new one (`plan::network`).
    if let Some(mtu) = m.mtu {
        put(&mut f, Field::Mtu, mtu.to_string(), Replace);
    }
    put(&mut f, Field::Autostart, onoff(m.autostart), InPlace);
    for r in m.reservations.values() {
        put(&mut f, Field::DhcpHost(r.mac), format!("{} {}", r.ip, r.host), InPlace);
    }
    put(&mut f, Field::Active, "yes", State);
    f
}

/// Observed fields of a network, restricted to what `desired` names (plus reservations,
/// which are compared as a set).
pub fn observed_network(o: &ObservedNetwork, desired: &Fields) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    let mode = match &o.mode {
        ObservedMode::Known(m) => m.as_str().to_string(),
        ObservedMode::Other(s) => s.clone(),
    };
    put(&mut f, Field::Mode, mode, Replace);
    if desired.contains_key(&Field::Bridge) {
        put(&mut f, Field::Bridge, o.bridge.clone().unwrap_or_default(), Replace);
    }
    put(&mut f, Field::Stp, onoff(o.stp), Replace);
    match &o.ip {
        Some(ip) => {
            let subnet = Ipv4Network::new(ip.address, ip.prefix)
                .and_then(|n| Ipv4Network::new(n.network(), ip.prefix))
                .map(|n| n.to_string())
                .unwrap_or_else(|_| format!("{}/{}", ip.address, ip.prefix));
            put(&mut f, Field::Subnet, subnet, Replace);
            put(&mut f, Field::Gateway, ip.address.to_string(), Replace);
            // libvirt serves `<host>` entries on any network with an `<ip>` (model::DhcpService).
            let dhcp = match ip.dhcp_range {
                Some(r) => DhcpService::Range(r),
                None => DhcpService::ReservationsOnly,
            };
            put(&mut f, Field::Dhcp, dhcp.to_string(), Replace);
            for h in &ip.hosts {
                put(
                    &mut f,
                    Field::DhcpHost(h.mac),
                    format!("{} {}", h.ip, h.name.clone().unwrap_or_default()),
                    InPlace,
                );
            }
        }
        None => {
            put(&mut f, Field::Subnet, "none", Replace);
            put(&mut f, Field::Dhcp, DhcpService::Off.to_string(), Replace);
        }
    }
    // Compared when either side has one: an IPv6 `<ip>` the file no longer asks for is a
    // change too.
    match o.ip6 {
        Some(ip6) => {
            let prefix = Ipv6Network::new(ip6.address, ip6.prefix)
                .and_then(|n| Ipv6Network::new(n.network(), ip6.prefix))
                .map(|n| n.to_string())
                .unwrap_or_else(|_| format!("{}/{}", ip6.address, ip6.prefix));
            put(&mut f, Field::Subnet6, prefix, Replace);
            put(&mut f, Field::Gateway6, ip6.address.to_string(), Replace);
        }
        None if desired.contains_key(&Field::Subnet6) => {
            put(&mut f, Field::Subnet6, "none", Replace);
            put(&mut f, Field::Gateway6, "none", Replace);
        }
        None => {}
    }
    put(&mut f, Field::DhcpPing, onoff(o.dhcp_ping), Replace);
    // Compared when either side has one: an MTU set by hand (or one the file no longer asks
    // for) is a change too.
    if let Some(mtu) = o.mtu {
        put(&mut f, Field::Mtu, mtu.to_string(), Replace);
    } else if desired.contains_key(&Field::Mtu) {
        put(&mut f, Field::Mtu, "default", Replace);
    }
    put(&mut f, Field::Autostart, onoff(o.autostart), InPlace);
    put(&mut f, Field::Active, if o.active { "yes" } else { "no" }, State);
    f
}

/// The name a NIC's network is shown with: the lab's name for it when the libvirt name is
/// one of the lab's networks, else the libvirt name.
fn network_display(lab: &Lab, libvirt_name: &str) -> String {
    lab.networks
        .values()
        .find(|n: &&Network| n.libvirt_name == libvirt_name)
        .map(|n| n.name.to_string())
        .unwrap_or_else(|| libvirt_name.to_string())
}

/// Desired fields of a VM of lab `lab`.
pub fn desired_vm(lab: &Lab, vm: &Vm) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    put(&mut f, Field::Hypervisor, vm.virt_type.as_str(), Restart);
    put(&mut f, Field::Memory, vm.memory.to_string(), Restart);
    put(&mut f, Field::Vcpus, vm.vcpus.to_string(), Restart);
    if let Some(b) = &vm.boot {
        put(&mut f, Field::BootKernel, b.kernel.display().to_string(), Restart);
        if let Some(i) = &b.initrd {
            put(&mut f, Field::BootInitrd, i.display().to_string(), Restart);
        }
        if let Some(c) = &b.cmdline {
            put(&mut f, Field::BootCmdline, c.clone(), Restart);
        }
    }
    if let (Some(d), Some(overlay)) = (&vm.disk, vm.overlay_name(&lab.name)) {
        // The overlay's file name carries a hash of (image, size): the domain's disk path
        // shows whether the base image or size changed.
        let size = d.size.map(|s| format!(", {s}")).unwrap_or_default();
        put(&mut f, Field::Disk, format!("{overlay} (on {}{size})", d.image.display()), Replace);
    }
    // cloud-init runs once per instance: any change to the seed replaces the VM. The seed
    // volume's name carries a hash of the seed; the files are there for a readable diff.
    if let Ok(Some(seed)) = crate::guest::Seed::of(lab, vm) {
        put(&mut f, Field::CloudInit, seed.volume_name(lab, vm).to_string(), Replace);
        for (name, text) in seed.files() {
            put(&mut f, Field::CloudInitFile(name.to_string()), text, Replace);
        }
    }
    for nic in &vm.nics {
        put(&mut f, Field::Nic(nic.mac), nic.network.to_string(), InPlace);
        // libvirt's <bandwidth>: set live (virDomainSetInterfaceParameters) and in the config.
        if let Some(r) = nic.impairment.rate {
            put(&mut f, Field::NicRate(nic.mac), r.to_string(), InPlace);
        }
        // Its network's MTU, read now (`Lab::nic_mtu`). libvirt cannot change a running NIC's
        // MTU (QEMU sets virtio's `host_mtu` when the device is made): `plan::vm` plugs the
        // NIC in again, or the network's replacement does.
        if let Some(mtu) = lab.nic_mtu(nic) {
            put(&mut f, Field::NicMtu(nic.mac), mtu.to_string(), InPlace);
        }
    }
    // A wire end is plugged by a hot-plug or a define like any NIC.
    for (w, k) in lab.wire_ends(&vm.name) {
        put(&mut f, Field::Nic(w.ends[k].mac), format!("wire {}", w.name), InPlace);
    }
    put(&mut f, Field::State, vm.state.as_str(), State);
    f
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Observed fields of a VM, restricted to those `desired` can name.
pub fn observed_vm(lab: &Lab, o: &ObservedDomain, desired: &Fields) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    put(&mut f, Field::Hypervisor, o.virt_type.clone(), Restart);
    put(&mut f, Field::Memory, crate::lab::model::ByteSize::from_bytes(o.memory_kib * 1024).to_string(), Restart);
    put(&mut f, Field::Vcpus, o.vcpus.to_string(), Restart);
    for (k, v) in [(Field::BootKernel, &o.kernel), (Field::BootInitrd, &o.initrd), (Field::BootCmdline, &o.cmdline)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            put(&mut f, k, v.clone(), Restart);
        }
    }
    // A disk is the seed when its chain holds a seed volume (a snapshot layer over it, made
    // with `--diskspec vdb,snapshot=external`, is still the seed).
    let seed_of = |i: usize| o.chain(i).into_iter().find(|p| crate::guest::is_seed_volume(file_name(p)));
    let seeds: Vec<&str> = (0..o.disks.len()).filter_map(seed_of).collect();
    let first = (0..o.disks.len()).find(|&i| seed_of(i).is_none());
    if desired.contains_key(&Field::Disk) || first.is_some() {
        let name = first.map(|i| file_name(&o.disks[i]).to_string());
        let want = desired.get(&Field::Disk).map(|v| v.value.as_str()).unwrap_or_default();
        // The lab's overlay anywhere in the disk's chain (under the layers of external
        // snapshots) is the same disk: shown as the desired text.
        let in_chain =
            first.is_some_and(|i| o.chain(i).iter().any(|f| want.starts_with(&format!("{} ", file_name(f)))));
        let value = match name {
            Some(_) if in_chain => want.to_string(),
            Some(n) => n,
            None => "none".into(),
        };
        put(&mut f, Field::Disk, value, Replace);
    }
    if desired.contains_key(&Field::CloudInit) || !seeds.is_empty() {
        let name = seeds.first().map_or_else(|| "none".to_string(), |p| file_name(p).to_string());
        put(&mut f, Field::CloudInit, name, Replace);
        // The seed's files as read back from the host (`hypervisor::read_changed_seeds` reads
        // only a seed whose name differs from the lab's); where none were read, the desired
        // text stands in and the name above alone tells whether the seed changed.
        for (k, v) in desired.iter() {
            let Field::CloudInitFile(file) = k else { continue };
            let text = match &o.seed {
                Some(files) => files.iter().find(|(n, _)| n == file).map_or("", |(_, t)| t.as_str()),
                None => v.value.as_str(),
            };
            put(&mut f, k.clone(), text, Replace);
        }
    }
    for i in &o.interfaces {
        let Some(mac) = i.mac else { continue };
        let net = match (&i.network, &i.ethernet) {
            (Some(n), _) => network_display(lab, n),
            (None, Some(tap)) => match lab.wire_of_tap(tap) {
                Some((w, _)) => format!("wire {}", w.name),
                None => format!("(tap {tap})"),
            },
            (None, None) => "(not a network)".into(),
        };
        put(&mut f, Field::Nic(mac), net, InPlace);
        if let Some(b) = &i.bandwidth {
            put(&mut f, Field::NicRate(mac), b.describe(), InPlace);
        }
        if let Some(mtu) = i.mtu {
            put(&mut f, Field::NicMtu(mac), mtu.to_string(), InPlace);
        } else if desired.contains_key(&Field::NicMtu(mac)) {
            put(&mut f, Field::NicMtu(mac), "default", InPlace);
        }
    }
    let state = match o.state {
        crate::host::observed::DomainState::Running => "running",
        crate::host::observed::DomainState::Paused => "paused",
        // The lab file's word for it (`state: stopped`); libvirt says `shut off`.
        crate::host::observed::DomainState::Shutoff => "stopped",
        crate::host::observed::DomainState::Other => "other",
    };
    put(&mut f, Field::State, state, State);
    f
}

/// The spec hash written into an object's metadata (`ownership::spec_hash`) over every
/// non-state field, in path order.
pub fn spec_hash(fields: &Fields) -> String {
    crate::lab::ownership::spec_hash(
        fields.iter().filter(|(_, v)| v.class != FieldClass::State).map(|(k, v)| (k.as_str(), v.value.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field reads back from the path it shows (saved plans store the path), and
    /// fields order as their paths do (plans and spec hashes keep the order they had).
    #[test]
    fn fields_round_trip_through_their_paths_and_sort_by_them() {
        let mac: MacAddr = "52:54:00:ab:cd:ef".parse().unwrap();
        let paths = "mode bridge stp subnet gateway dhcp dhcp_ping autostart mtu active hypervisor memory vcpus \
                     boot.kernel boot.initrd boot.cmdline disk cloud_init state persistent snapshots owner path \
                     dhcp_host[52:54:00:ab:cd:ef] cloud_init.user-data nic[52:54:00:ab:cd:ef] \
                     nic[52:54:00:ab:cd:ef].rate nic[52:54:00:ab:cd:ef].netem nic[52:54:00:ab:cd:ef].bridge \
                     nic[52:54:00:ab:cd:ef].mtu";
        let all: Vec<Field> = paths.split_whitespace().map(|p| p.parse().expect(p)).collect();
        for (f, p) in all.iter().zip(paths.split_whitespace()) {
            assert_eq!(f.as_str(), p);
            assert_eq!(serde_json::to_string(f).unwrap(), format!("{p:?}"));
        }
        assert_eq!(Field::NicRate(mac).to_string(), "nic[52:54:00:ab:cd:ef].rate");
        let mut by_field = all.clone();
        by_field.sort();
        let mut by_path: Vec<String> = all.iter().map(Field::to_string).collect();
        by_path.sort();
        assert_eq!(by_field.iter().map(Field::to_string).collect::<Vec<_>>(), by_path);
        for bad in ["", "nic[x]", "nic[52:54:00:ab:cd:ef].speed", "memroy", "dhcp_host[52:54:00:ab:cd:ef"] {
            assert!(bad.parse::<Field>().is_err(), "{bad}");
        }
    }
}
