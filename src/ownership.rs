//! Ownership without a state file: the owner tag topo writes into every object it creates,
//! the spec hash inside it, and the checksum that tags storage volumes (which have no
//! metadata element in libvirt).
//!
//! A network or domain is this lab's when its `<metadata><topo:owner>` names this lab AND
//! its own libvirt name, and its resource is a valid address. An object whose tag names
//! another libvirt name (a domain copied with `virsh dumpxml | virsh define` under a new
//! name) is foreign: topo never changes or deletes it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::Address;

/// XML namespace of the `<metadata>` element topo puts on every object it creates.
/// (`.invalid` is a reserved top-level domain: the URI names no real host.)
pub const OWNER_NS: &str = "http://topo.invalid/xmlns/lab/1";

/// Name of the storage pool that holds every lab's overlay volumes. Shared by all labs on
/// a host, looked up by this name, and never deleted by `destroy`.
pub const OVERLAY_POOL: &str = "topo-overlays";

/// Folder of the overlay pool when topo defines it (an existing pool keeps its own folder).
pub const DEFAULT_OVERLAY_DIR: &str = "/var/lib/libvirt/images/topo";

/// Who created an object, read back from its `<metadata>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerTag {
    /// The lab's name (model::LabName as text).
    pub lab: String,
    /// The resource's address in the lab: `network.local_net`, `vm.deb1`.
    pub resource: String,
    /// The object's own libvirt name when it was written. Empty when the tag has none
    /// (then the object is foreign).
    pub name: String,
    /// Hash of the desired spec the object was last written from (hex).
    pub spec_hash: String,
}

/// How an observed object relates to a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this lab.
    ThisLab,
    /// Created by another topo lab (named in the tag).
    OtherLab,
    /// Not created by topo, or a copy of a topo object under another name.
    NotOwned,
}

impl Ownership {
    /// Classifies an object named `name` (its libvirt name) carrying `owner`, for `lab`.
    pub fn of(owner: Option<&OwnerTag>, lab: &str, name: &str) -> Self {
        match owner {
            Some(t) if t.name != name || t.resource.parse::<Address>().is_err() => Ownership::NotOwned,
            Some(t) if t.lab == lab => Ownership::ThisLab,
            Some(_) => Ownership::OtherLab,
            None => Ownership::NotOwned,
        }
    }
}

/// The spec hash written into an object's owner tag: the first 16 hex digits of SHA-256
/// over `path=value\n` for every `(path, value)` given, in the order given (callers pass
/// them sorted by path).
pub fn spec_hash<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (k, v) in fields {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 8 hex digits that tag a volume `stem` as lab `lab`'s.
fn volume_checksum(lab: &str, stem: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"topo-volume\0");
    h.update(lab.as_bytes());
    h.update(b"\0");
    h.update(stem.as_bytes());
    hex(&h.finalize()[..4])
}

/// The name of a volume lab `lab` creates: `<stem>.<tag>.<ext>`, where `tag` is a checksum
/// of the lab name and the stem. libvirt storage volumes carry no metadata, so the tag is
/// in the name; a file that does not pass [`volume_owned_by`] is never the lab's, whatever
/// its name starts with.
pub fn volume_name(lab: &str, stem: &str, ext: &str) -> String {
    format!("{stem}.{}.{ext}", volume_checksum(lab, stem))
}

/// Whether volume `name` carries lab `lab`'s tag (see [`volume_name`]).
pub fn volume_owned_by(lab: &str, name: &str) -> bool {
    let mut parts = name.rsplitn(3, '.');
    let (Some(_ext), Some(tag), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    tag.len() == 8 && volume_checksum(lab, stem) == tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(lab: &str, resource: &str, name: &str) -> OwnerTag {
        OwnerTag { lab: lab.into(), resource: resource.into(), name: name.into(), spec_hash: "00".into() }
    }

    #[test]
    fn ownership_needs_lab_name_and_resource() {
        assert_eq!(Ownership::of(Some(&tag("demo", "vm.web", "demo-web")), "demo", "demo-web"), Ownership::ThisLab);
        assert_eq!(Ownership::of(Some(&tag("other", "vm.web", "demo-web")), "demo", "demo-web"), Ownership::OtherLab);
        // virsh dumpxml demo-web | sed name | virsh define: the copy keeps the tag.
        assert_eq!(Ownership::of(Some(&tag("demo", "vm.web", "demo-web")), "demo", "copy"), Ownership::NotOwned);
        assert_eq!(Ownership::of(Some(&tag("demo", "vm.web", "")), "demo", "demo-web"), Ownership::NotOwned);
        assert_eq!(Ownership::of(Some(&tag("demo", "junk", "demo-web")), "demo", "demo-web"), Ownership::NotOwned);
        assert_eq!(Ownership::of(None, "demo", "demo-web"), Ownership::NotOwned);
    }

    #[test]
    fn volume_tags() {
        let n = volume_name("demo", "demo-web-0123abcd", "qcow2");
        assert!(n.starts_with("demo-web-0123abcd.") && n.ends_with(".qcow2"), "{n}");
        assert!(volume_owned_by("demo", &n));
        assert!(!volume_owned_by("other", &n));
        // Same prefix, no tag: a user's file is never the lab's.
        assert!(!volume_owned_by("demo", "demo-web-0123abcd.qcow2"));
        assert!(!volume_owned_by("demo", "demo-web.deadbeef.qcow2"));
        assert!(!volume_owned_by("demo", ""));
    }

    #[test]
    fn spec_hash_is_16_hex_digits_and_order_sensitive() {
        let a = spec_hash([("a", "1"), ("b", "2")]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, spec_hash([("a", "1"), ("b", "3")]));
    }
}
