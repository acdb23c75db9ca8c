//! Snapshot XML: the `<domainsnapshot>` topo asks libvirt for (an internal snapshot of every
//! qcow2 disk, the others left out), the disks of a domain it is made from, and the
//! snapshot XML libvirt returns.

use serde::{Deserialize, Serialize};

use super::{XmlError, from_xml, to_xml};
use crate::host::hypervisor::SnapshotInfo;

/// One disk of a domain, as a snapshot sees it: its target (`vda`) and whether it goes into
/// an internal snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// `<target dev>`: how `<domainsnapshot><disks><disk name>` names the disk.
    pub dev: String,
    /// A writable qcow2 disk: `snapshot='internal'`; else (read-only, raw, a CD-ROM)
    /// `snapshot='no'`.
    pub internal: bool,
}

#[derive(Serialize)]
#[serde(rename = "domainsnapshot")]
struct SnapshotW<'a> {
    name: &'a str,
    description: &'a str,
    disks: DisksW<'a>,
}

#[derive(Serialize)]
struct DisksW<'a> {
    disk: Vec<DiskW<'a>>,
}

#[derive(Serialize)]
struct DiskW<'a> {
    #[serde(rename = "@name")]
    name: &'a str,
    #[serde(rename = "@snapshot")]
    snapshot: &'static str,
}

/// The `<domainsnapshot>` of an internal snapshot `name` with `description`: each of `disks`
/// `internal`, or `no` (libvirt's rule: see
/// [`Hypervisor::create_snapshot`](crate::host::hypervisor::Hypervisor::create_snapshot)).
/// No `<memory>` element: libvirt's default for a running domain is the memory, internal
/// with internal disks (`virDomainSnapshotDefAssignExternalNames`, formatsnapshot "memory").
///
/// # Errors
/// The XML cannot be serialized.
pub fn snapshot_xml(name: &str, description: &str, disks: &[SnapshotDisk]) -> Result<String, XmlError> {
    let disk =
        disks.iter().map(|d| DiskW { name: &d.dev, snapshot: if d.internal { "internal" } else { "no" } }).collect();
    to_xml("snapshot", "domainsnapshot", &SnapshotW { name, description, disks: DisksW { disk } })
}

#[derive(Deserialize)]
struct DomainR {
    devices: Option<DevicesR>,
}

#[derive(Deserialize)]
struct DevicesR {
    #[serde(default)]
    disk: Vec<DiskR>,
}

#[derive(Deserialize)]
struct DiskR {
    #[serde(rename = "@device")]
    device: Option<String>,
    driver: Option<DriverR>,
    target: Option<TargetR>,
    readonly: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct DriverR {
    #[serde(rename = "@type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct TargetR {
    #[serde(rename = "@dev")]
    dev: String,
}

/// The disks of a domain's XML as a snapshot sees them, in device order: a `device='disk'`
/// (or unset) with a qcow2 driver and no `<readonly/>` is internal, any other is left out.
///
/// # Errors
/// Not domain XML, or a disk without `<target dev>`.
pub fn snapshot_disks(domain_xml: &str) -> Result<Vec<SnapshotDisk>, XmlError> {
    let r: DomainR = from_xml("domain", "domain", domain_xml)?;
    r.devices
        .map(|d| d.disk)
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let dev = d
                .target
                .ok_or_else(|| XmlError::Parse { what: "domain", message: "a disk has no <target dev>".into() })?
                .dev;
            let internal = d.readonly.is_none()
                && d.device.as_deref().is_none_or(|x| x == "disk")
                && d.driver.and_then(|x| x.kind).as_deref() == Some("qcow2");
            Ok(SnapshotDisk { dev, internal })
        })
        .collect()
}

#[derive(Deserialize)]
struct SnapshotR {
    name: String,
    description: Option<String>,
    #[serde(rename = "creationTime")]
    creation_time: Option<i64>,
    state: Option<String>,
}

/// A snapshot's XML as libvirt returns it (`virDomainSnapshotGetXMLDesc`).
///
/// # Errors
/// Not `<domainsnapshot>` XML, or no `<name>`.
pub fn parse_snapshot(xml: &str) -> Result<SnapshotInfo, XmlError> {
    let r: SnapshotR = from_xml("snapshot", "domainsnapshot", xml)?;
    Ok(SnapshotInfo {
        name: r.name,
        description: r.description,
        created: r.creation_time.unwrap_or(0),
        state: r.state.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed (raw, read-only) is left out as libvirt requires; the overlay is internal.
    #[test]
    fn the_seed_is_left_out_and_the_overlay_is_internal() {
        let dom = "<domain type='kvm'><name>x</name><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/o.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/s.img'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
            </devices></domain>";
        let disks = snapshot_disks(dom).unwrap();
        assert_eq!(
            disks,
            vec![
                SnapshotDisk { dev: "vda".into(), internal: true },
                SnapshotDisk { dev: "vdb".into(), internal: false }
            ]
        );
        let xml = snapshot_xml("s1", "topo lab t", &disks).unwrap();
        let compact: String = xml.lines().map(str::trim).collect();
        assert_eq!(
            compact,
            "<domainsnapshot><name>s1</name><description>topo lab t</description><disks>\
             <disk name=\"vda\" snapshot=\"internal\"/><disk name=\"vdb\" snapshot=\"no\"/></disks></domainsnapshot>"
        );
        assert!(snapshot_disks("<domain><name>y</name></domain>").unwrap().is_empty());
    }

    #[test]
    fn a_snapshot_is_read_back() {
        let xml = "<domainsnapshot><name>s1</name><description>d &amp; e</description><state>running</state>\
            <creationTime>1700000000</creationTime><memory snapshot='internal'/></domainsnapshot>";
        let s = parse_snapshot(xml).unwrap();
        assert_eq!(
            s,
            SnapshotInfo {
                name: "s1".into(),
                description: Some("d & e".into()),
                created: 1_700_000_000,
                state: "running".into()
            }
        );
        assert!(parse_snapshot("<domain/>").is_err());
    }
}
