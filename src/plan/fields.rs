//! The fields topo manages on a network or VM, flattened to `path = value` pairs so desired
//! (model) and observed (host) can be compared field by field and hashed.

use std::collections::BTreeMap;

use ipnetwork::Ipv4Network;

use crate::host::observed::{ObservedDomain, ObservedMode, ObservedNetwork};
use crate::lab::model::{DhcpService, Lab, ManagedNetwork, Network, Vm};

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

/// `path -> value`, sorted by path.
pub type Fields = BTreeMap<String, FieldValue>;

fn put(f: &mut Fields, path: impl Into<String>, value: impl Into<String>, class: FieldClass) {
    f.insert(path.into(), FieldValue { value: value.into(), class });
}

fn onoff(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Desired fields of a lab network. A bridge left to libvirt (`None`) is not compared.
pub fn desired_network(m: &ManagedNetwork) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    put(&mut f, "mode", m.mode.as_str(), Replace);
    if let Some(b) = &m.bridge {
        put(&mut f, "bridge", b.as_str(), Replace);
    }
    put(&mut f, "stp", onoff(m.stp), Replace);
    put(&mut f, "subnet", m.subnet.map(|s| s.to_string()).unwrap_or_else(|| "none".into()), Replace);
    if let Some(g) = m.gateway {
        put(&mut f, "gateway", g.to_string(), Replace);
    }
    put(&mut f, "dhcp", m.dhcp_service().to_string(), Replace);
    put(&mut f, "dhcp_ping", onoff(m.dhcp_ping), Replace);
    put(&mut f, "autostart", onoff(m.autostart), InPlace);
    for r in m.reservations.values() {
        put(&mut f, format!("dhcp_host[{}]", r.mac), format!("{} {}", r.ip, r.host), InPlace);
    }
    put(&mut f, "active", "yes", State);
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
    put(&mut f, "mode", mode, Replace);
    if desired.contains_key("bridge") {
        put(&mut f, "bridge", o.bridge.clone().unwrap_or_default(), Replace);
    }
    put(&mut f, "stp", onoff(o.stp), Replace);
    match &o.ip {
        Some(ip) => {
            let subnet = Ipv4Network::new(ip.address, ip.prefix)
                .and_then(|n| Ipv4Network::new(n.network(), ip.prefix))
                .map(|n| n.to_string())
                .unwrap_or_else(|_| format!("{}/{}", ip.address, ip.prefix));
            put(&mut f, "subnet", subnet, Replace);
            put(&mut f, "gateway", ip.address.to_string(), Replace);
            // libvirt serves `<host>` entries on any network with an `<ip>` (model::DhcpService).
            let dhcp = match ip.dhcp_range {
                Some(r) => DhcpService::Range(r),
                None => DhcpService::ReservationsOnly,
            };
            put(&mut f, "dhcp", dhcp.to_string(), Replace);
            for h in &ip.hosts {
                put(
                    &mut f,
                    format!("dhcp_host[{}]", h.mac),
                    format!("{} {}", h.ip, h.name.clone().unwrap_or_default()),
                    InPlace,
                );
            }
        }
        None => {
            put(&mut f, "subnet", "none", Replace);
            put(&mut f, "dhcp", DhcpService::Off.to_string(), Replace);
        }
    }
    put(&mut f, "dhcp_ping", onoff(o.dhcp_ping), Replace);
    put(&mut f, "autostart", onoff(o.autostart), InPlace);
    put(&mut f, "active", if o.active { "yes" } else { "no" }, State);
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
    put(&mut f, "hypervisor", vm.virt_type.as_str(), Restart);
    put(&mut f, "memory", vm.memory.to_string(), Restart);
    put(&mut f, "vcpus", vm.vcpus.to_string(), Restart);
    if let Some(b) = &vm.boot {
        put(&mut f, "boot.kernel", b.kernel.display().to_string(), Restart);
        if let Some(i) = &b.initrd {
            put(&mut f, "boot.initrd", i.display().to_string(), Restart);
        }
        if let Some(c) = &b.cmdline {
            put(&mut f, "boot.cmdline", c.clone(), Restart);
        }
    }
    if let (Some(d), Some(overlay)) = (&vm.disk, vm.overlay_name(&lab.name)) {
        // The overlay's file name carries a hash of (image, size): the domain's disk path
        // shows whether the base image or size changed.
        let size = d.size.map(|s| format!(", {s}")).unwrap_or_default();
        put(&mut f, "disk", format!("{overlay} (on {}{size})", d.image.display()), Replace);
    }
    // cloud-init runs once per instance: any change to the seed replaces the VM. The seed
    // volume's name carries a hash of the seed; the files are there for a readable diff.
    if let Ok(Some(seed)) = crate::guest::Seed::of(lab, vm) {
        put(&mut f, "cloud_init", seed.volume_name(lab, vm), Replace);
        for (name, text) in seed.files() {
            put(&mut f, format!("cloud_init.{name}"), text, Replace);
        }
    }
    for nic in &vm.nics {
        put(&mut f, format!("nic[{}]", nic.mac), nic.network.to_string(), InPlace);
        // libvirt's <bandwidth>: set live (virDomainSetInterfaceParameters) and in the config.
        if let Some(r) = nic.impairment.rate {
            put(&mut f, format!("nic[{}].rate", nic.mac), r.to_string(), InPlace);
        }
    }
    put(&mut f, "state", vm.state.as_str(), State);
    f
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Observed fields of a VM, restricted to those `desired` can name.
pub fn observed_vm(lab: &Lab, o: &ObservedDomain, desired: &Fields) -> Fields {
    use FieldClass::*;
    let mut f = Fields::new();
    put(&mut f, "hypervisor", o.virt_type.clone(), Restart);
    put(&mut f, "memory", crate::lab::model::ByteSize::from_bytes(o.memory_kib * 1024).to_string(), Restart);
    put(&mut f, "vcpus", o.vcpus.to_string(), Restart);
    for (k, v) in [("boot.kernel", &o.kernel), ("boot.initrd", &o.initrd), ("boot.cmdline", &o.cmdline)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            put(&mut f, k, v.clone(), Restart);
        }
    }
    // A disk is the seed when its chain holds a seed volume (a snapshot layer over it, made
    // with `--diskspec vdb,snapshot=external`, is still the seed).
    let seed_of = |i: usize| o.chain(i).into_iter().find(|p| crate::guest::is_seed_volume(file_name(p)));
    let seeds: Vec<&str> = (0..o.disks.len()).filter_map(seed_of).collect();
    let first = (0..o.disks.len()).find(|&i| seed_of(i).is_none());
    if desired.contains_key("disk") || first.is_some() {
        let name = first.map(|i| file_name(&o.disks[i]).to_string());
        let want = desired.get("disk").map(|v| v.value.as_str()).unwrap_or_default();
        // The lab's overlay anywhere in the disk's chain (under the layers of external
        // snapshots) is the same disk: shown as the desired text.
        let in_chain =
            first.is_some_and(|i| o.chain(i).iter().any(|f| want.starts_with(&format!("{} ", file_name(f)))));
        let value = match name {
            Some(_) if in_chain => want.to_string(),
            Some(n) => n,
            None => "none".into(),
        };
        put(&mut f, "disk", value, Replace);
    }
    if desired.contains_key("cloud_init") || !seeds.is_empty() {
        let name = seeds.first().map_or_else(|| "none".to_string(), |p| file_name(p).to_string());
        put(&mut f, "cloud_init", name, Replace);
        // The seed's files as read back from the host (`hypervisor::read_changed_seeds` reads
        // only a seed whose name differs from the lab's); where none were read, the desired
        // text stands in and the name above alone tells whether the seed changed.
        for (k, v) in desired.iter().filter(|(k, _)| k.starts_with("cloud_init.")) {
            let file = &k["cloud_init.".len()..];
            let text = match &o.seed {
                Some(files) => files.iter().find(|(n, _)| n == file).map_or("", |(_, t)| t.as_str()),
                None => v.value.as_str(),
            };
            put(&mut f, k.clone(), text, Replace);
        }
    }
    for i in &o.interfaces {
        let key = match i.mac {
            Some(m) => format!("nic[{m}]"),
            None => continue,
        };
        let net = i.network.as_deref().map(|n| network_display(lab, n)).unwrap_or_else(|| "(not a network)".into());
        put(&mut f, key.clone(), net, InPlace);
        if let Some(b) = &i.bandwidth {
            put(&mut f, format!("{key}.rate"), b.describe(), InPlace);
        }
    }
    let state = match o.state {
        crate::host::observed::DomainState::Running => "running",
        crate::host::observed::DomainState::Paused => "paused",
        // The lab file's word for it (`state: stopped`); libvirt says `shut off`.
        crate::host::observed::DomainState::Shutoff => "stopped",
        crate::host::observed::DomainState::Other => "other",
    };
    put(&mut f, "state", state, State);
    f
}

/// The spec hash written into an object's metadata (`ownership::spec_hash`) over every
/// non-state field, in path order.
pub fn spec_hash(fields: &Fields) -> String {
    crate::lab::ownership::spec_hash(
        fields.iter().filter(|(_, v)| v.class != FieldClass::State).map(|(k, v)| (k.as_str(), v.value.as_str())),
    )
}
