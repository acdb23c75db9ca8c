//! Storage XML: the directory pool for VM overlays and the qcow2 overlay volume.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::XmlError;

#[derive(Serialize)]
#[serde(rename = "pool")]
struct PoolW<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
    target: TargetPathW<'a>,
}

#[derive(Serialize)]
struct TargetPathW<'a> {
    path: &'a str,
}

#[derive(Serialize)]
#[serde(rename = "volume")]
struct VolumeW<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<CapacityW>,
    target: VolTargetW,
    #[serde(rename = "backingStore")]
    backing: BackingW<'a>,
}

#[derive(Serialize)]
struct CapacityW {
    #[serde(rename = "@unit")]
    unit: &'static str,
    #[serde(rename = "$text")]
    value: u64,
}

#[derive(Serialize)]
struct FormatW {
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct VolTargetW {
    format: FormatW,
}

#[derive(Serialize)]
struct BackingW<'a> {
    path: &'a str,
    format: FormatW,
}

fn utf8(p: &Path) -> Result<&str, XmlError> {
    p.to_str().ok_or_else(|| XmlError::NonUtf8Path(p.to_path_buf()))
}

fn to_xml<T: Serialize>(what: &'static str, v: &T) -> Result<String, XmlError> {
    quick_xml::se::to_string(v).map_err(|e| XmlError::Serialize { what, message: e.to_string() })
}

/// `<pool type='dir'>` named `name` over folder `dir`.
pub fn dir_pool_xml(name: &str, dir: &Path) -> Result<String, XmlError> {
    to_xml("pool", &PoolW { kind: "dir", name, target: TargetPathW { path: utf8(dir)? } })
}

/// A qcow2 volume `name` backed by `backing` (of `backing_format`), `size` bytes or the
/// backing image's size.
pub fn overlay_volume_xml(
    name: &str,
    backing: &Path,
    backing_format: &'static str,
    size: Option<u64>,
) -> Result<String, XmlError> {
    to_xml(
        "volume",
        &VolumeW {
            name,
            capacity: size.map(|value| CapacityW { unit: "bytes", value }),
            target: VolTargetW { format: FormatW { kind: "qcow2" } },
            backing: BackingW { path: utf8(backing)?, format: FormatW { kind: backing_format } },
        },
    )
}

#[derive(Deserialize)]
struct PoolR {
    target: Option<TargetPathR>,
}

#[derive(Deserialize)]
struct TargetPathR {
    path: Option<String>,
}

/// The target folder of a storage pool's XML (`<pool><target><path>`).
pub fn parse_pool_path(xml: &str) -> Result<String, XmlError> {
    let p: PoolR = super::from_xml("pool", "pool", xml)?;
    p.target.and_then(|t| t.path).ok_or_else(|| XmlError::Parse { what: "pool", message: "no <target><path>".into() })
}

#[derive(Deserialize)]
struct VolumeR {
    key: Option<String>,
    target: Option<VolTargetR>,
    capacity: Option<CapacityR>,
    #[serde(rename = "backingStore")]
    backing: Option<TargetPathR>,
}

#[derive(Deserialize)]
struct CapacityR {
    #[serde(rename = "@unit")]
    unit: Option<String>,
    #[serde(rename = "$text")]
    value: Option<String>,
}

#[derive(Deserialize)]
struct VolTargetR {
    format: Option<FormatR>,
}

#[derive(Deserialize)]
struct FormatR {
    #[serde(rename = "@type")]
    kind: Option<String>,
}

/// The format of a storage volume's XML (`<volume><target><format type>`), as the pool's
/// backend determined it, and its `<capacity>` in bytes (libvirt writes `unit='bytes'` in
/// every volume XML it gives; another unit or none is `None`). `None` when the XML names none.
pub fn parse_volume_info(xml: &str) -> Result<(Option<String>, Option<u64>), XmlError> {
    let v: VolumeR = super::from_xml("volume", "volume", xml)?;
    let capacity = v
        .capacity
        .filter(|c| c.unit.as_deref().is_none_or(|u| u == "bytes" || u == "B"))
        .and_then(|c| c.value?.trim().parse().ok());
    Ok((v.target.and_then(|t| t.format).and_then(|f| f.kind), capacity))
}

/// The backing file of a storage volume's XML (`<volume><backingStore><path>`, as `virsh
/// vol-dumpxml` shows it: the pool's backend read it from the image's header); `None` for
/// a volume without one.
pub fn parse_volume_backing(xml: &str) -> Result<Option<String>, XmlError> {
    let v: VolumeR = super::from_xml("volume", "volume", xml)?;
    Ok(v.backing.and_then(|b| b.path).filter(|p| !p.is_empty()))
}

/// The key of a storage volume's XML (`<volume><key>`, what `virStorageVolGetKey` returns:
/// a dir pool's volume's path as the pool made it); `None` when the XML names none.
pub fn parse_volume_key(xml: &str) -> Result<Option<String>, XmlError> {
    let v: VolumeR = super::from_xml("volume", "volume", xml)?;
    Ok(v.key.filter(|k| !k.is_empty()))
}

#[derive(Serialize)]
#[serde(rename = "volume")]
struct RawVolumeW<'a> {
    name: &'a str,
    capacity: CapacityW,
    target: VolTargetW,
}

/// A raw volume `name` of exactly `bytes` bytes (the cloud-init seed, uploaded after).
pub fn raw_volume_xml(name: &str, bytes: u64) -> Result<String, XmlError> {
    to_xml(
        "volume",
        &RawVolumeW {
            name,
            capacity: CapacityW { unit: "bytes", value: bytes },
            target: VolTargetW { format: FormatW { kind: "raw" } },
        },
    )
}

#[derive(Serialize)]
#[serde(rename = "interface")]
struct PlainIfaceW<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    mac: MacW,
    source: SourceW<'a>,
}

#[derive(Serialize)]
struct MacW {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Serialize)]
struct SourceW<'a> {
    #[serde(rename = "@network")]
    network: &'a str,
}

/// The smallest `<interface>` that identifies a NIC for detaching: type, MAC and network.
pub fn plain_interface_xml(mac: crate::lab::model::MacAddr, network: &str) -> String {
    // Invariant: two attributes of plain strings always serialise.
    to_xml(
        "interface",
        &PlainIfaceW { kind: "network", mac: MacW { address: mac.to_string() }, source: SourceW { network } },
    )
    .expect("interface XML serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_pool_xml() {
        let v = overlay_volume_xml("a-1.qcow2", Path::new("/img/base & co.qcow2"), "qcow2", Some(1024)).unwrap();
        assert_eq!(
            v,
            "<volume><name>a-1.qcow2</name><capacity unit=\"bytes\">1024</capacity><target><format type=\"qcow2\"/></target>\
             <backingStore><path>/img/base &amp; co.qcow2</path><format type=\"qcow2\"/></backingStore></volume>"
        );
        let p = dir_pool_xml("topo-overlays", Path::new("/var/lib/x")).unwrap();
        assert_eq!(p, "<pool type=\"dir\"><name>topo-overlays</name><target><path>/var/lib/x</path></target></pool>");
        assert_eq!(parse_pool_path(&p).unwrap(), "/var/lib/x");
        // As the test driver's vol-dumpxml shows a volume.
        let v = "<volume type='file'><name>a.qcow2</name><key>/default-pool/a.qcow2</key>\
                 <target><path>/default-pool/a.qcow2</path><format type='qcow2'/></target></volume>";
        assert_eq!(parse_volume_info(v).unwrap(), (Some("qcow2".into()), None));
        assert_eq!(parse_volume_backing(v).unwrap(), None);
        assert_eq!(parse_volume_key(v).unwrap().as_deref(), Some("/default-pool/a.qcow2"));
        // As libvirt 9.0's vol-dumpxml shows an external snapshot's layer in a dir pool.
        let layer = "<volume type='file'><name>vm.s1</name><key>/p/vm.s1</key><target><path>/p/vm.s1</path>\
                     <format type='qcow2'/></target><backingStore><path>/p/vm.qcow2</path><format type='qcow2'/>\
                     </backingStore></volume>";
        assert_eq!(parse_volume_backing(layer).unwrap().as_deref(), Some("/p/vm.qcow2"));
        assert_eq!(
            parse_volume_info("<volume><name>k</name><target><path>/k</path></target></volume>").unwrap(),
            (None, None)
        );
        let v = "<volume type='file'><name>a.qcow2</name><capacity unit='bytes'>2147483648</capacity>\
                 <allocation unit='bytes'>196608</allocation><target><format type='qcow2'/></target></volume>";
        assert_eq!(parse_volume_info(v).unwrap(), (Some("qcow2".into()), Some(2 << 30)));
        let i = plain_interface_xml("52:54:00:00:00:01".parse().unwrap(), "a'b");
        assert_eq!(
            i,
            "<interface type=\"network\"><mac address=\"52:54:00:00:00:01\"/><source network=\"a'b\"/></interface>"
        );
    }
}
