//! Ownership without a state file: the owner tag topo writes into every object it creates,
//! the spec hash inside it, and the checksum that tags storage volumes (which have no
//! metadata element in libvirt).
//!
//! A network or domain is this lab's when its `<metadata><topo:owner>` names this lab
//! instance (lab name, prefix and lab file: [`Instance`]) AND its own libvirt name, and its
//! resource is a valid address. An object whose tag names another libvirt name (a domain
//! copied with `virsh dumpxml | virsh define` under a new name) is foreign: topo never
//! changes or deletes it. The identity model is written down in docs/lab-file.md ("Lab
//! identity").

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lab::address::Address;
use crate::lab::names::{LibvirtName, PoolName, VolumeName};

/// XML namespace of the `<metadata>` element topo puts on every object it creates.
/// (`.invalid` is a reserved top-level domain: the URI names no real host.)
pub const OWNER_NS: &str = "http://topo.invalid/xmlns/lab/1";

/// Name of the storage pool that holds every lab's overlay volumes. Shared by all labs on
/// a host, looked up by this name, and never deleted by `destroy`.
pub const OVERLAY_POOL: &str = "topo-overlays";

/// [`OVERLAY_POOL`] as a pool name.
pub fn overlay_pool() -> PoolName {
    // Invariant: the literal is not empty and has no '/', newline or NUL (tested below).
    PoolName::new(OVERLAY_POOL).expect("the overlay pool's name is a valid pool name")
}

/// Folder of the overlay pool when topo defines it (an existing pool keeps its own folder).
pub const DEFAULT_OVERLAY_DIR: &str = "/var/lib/libvirt/images/topo";

/// Who created an object, read back from its `<metadata>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// The lab's `prefix` (attribute `prefix`). `None` in tags written by a topo older than
    /// lab identity; then [`OwnerTag::lab_prefix`] derives it from the names.
    pub prefix: Option<String>,
    /// The lab file's canonical path on the machine that ran topo (attribute `file`; see
    /// [`Instance::file`]). `None` in tags written by a topo older than lab identity.
    pub file: Option<String>,
    /// When topo last wrote this object (attribute `applied`, RFC 3339 UTC, seconds).
    pub applied: Option<String>,
    /// Who ran topo then (attribute `user`, the login name), when known.
    pub user: Option<String>,
}

impl OwnerTag {
    /// The lab prefix the object was made with: the tag's `prefix`, or for an older tag the
    /// part of the libvirt name before the resource's own name (`demo-web` for `vm.web` gives
    /// `demo-`). `None` when neither says (the name does not end with the resource's name).
    pub fn lab_prefix(&self) -> Option<String> {
        if let Some(p) = &self.prefix {
            return Some(p.clone());
        }
        let address = self.resource.parse::<Address>().ok()?;
        self.name.strip_suffix(address.name()).map(str::to_string)
    }

    /// The lab instance the tag names, when it names one (tags of older topos name no file).
    pub fn instance(&self) -> Option<Instance> {
        Some(Instance { lab: self.lab.clone(), prefix: self.lab_prefix()?, file: self.file.clone()? })
    }

    /// Whether the tag is exactly what `instance` writes (so no re-tag is due).
    pub fn is_of(&self, instance: &Instance) -> bool {
        self.lab == instance.lab
            && self.prefix.as_deref() == Some(instance.prefix.as_str())
            && self.file.as_deref() == Some(instance.file.as_str())
    }
}

/// One lab instance on a host: the lab's name, its prefix and the lab file it is applied
/// from. Two lab files with the same `name:` and `prefix:` (a copied folder, a colleague's
/// clone, a git worktree) are two instances of one lab: they would own the same libvirt
/// names, so one may not change or delete what the other made (docs/lab-file.md, "Lab
/// identity").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Instance {
    /// The lab's `name:`.
    pub lab: String,
    /// The lab's `prefix:` (default `<name>-`).
    pub prefix: String,
    /// The lab file's canonical path (absolute, every symlink and `..` resolved,
    /// `realpath(3)`): the same file reached from any folder or through a symlink is the same
    /// instance; a moved or copied folder, a fresh clone or a worktree is another one.
    pub file: String,
}

/// The `<description>` topo writes on each internal snapshot of a lab snapshot (`topo
/// snapshot save`): `topo lab LAB (prefix PREFIX, file FILE)`, the lab instance. Libvirt
/// snapshots have no metadata element of their own, so the description is the tag: a
/// snapshot of a lab VM with exactly this description is the lab's (listed, restored and
/// deleted by `topo snapshot`); any other (made by hand, or by another instance) is never
/// touched by `topo snapshot`, and only its metadata is removed when topo deletes the VM.
pub fn snapshot_description(instance: &Instance) -> String {
    format!("topo lab {} (prefix {}, file {})", instance.lab, instance.prefix, instance.file)
}

/// What a run writes into each tag besides the instance: when, and who. Empty fields are
/// left out of the tag (tests plan without a clock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// RFC 3339 UTC, seconds (`2026-12-07T01:34:42Z`).
    pub applied: Option<String>,
    /// The login name of the user running topo.
    pub user: Option<String>,
}

impl Stamp {
    /// Now, and the user running this process (by uid; `None` when it has no passwd entry).
    pub fn now() -> Self {
        let applied = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name);
        Stamp { applied: Some(applied), user }
    }
}

/// How an observed object relates to a lab instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this lab instance (or by this lab under an older topo whose tag names no
    /// lab file and whose names carry this prefix: adopted, and re-tagged by the next apply).
    ThisLab,
    /// Created by another instance of this lab: the same name and prefix (so the same
    /// libvirt names), applied from another lab file. Never changed or deleted unless the
    /// run takes the lab over (`--take-over`), which makes it `ThisLab`.
    OtherInstance,
    /// Created by another topo lab: another lab name, or the same name with another prefix.
    OtherLab,
    /// Not created by topo, or a copy of a topo object under another name.
    NotOwned,
}

impl Ownership {
    /// Classifies an object named `name` (its libvirt name) carrying `owner`, for lab
    /// instance `me`; `take_over` counts another instance of the same lab as this one.
    pub fn of(owner: Option<&OwnerTag>, me: &Instance, take_over: bool, name: &str) -> Self {
        let Some(t) = owner else { return Ownership::NotOwned };
        if t.name != name || t.resource.parse::<Address>().is_err() {
            return Ownership::NotOwned;
        }
        if t.lab != me.lab || t.lab_prefix().as_deref() != Some(me.prefix.as_str()) {
            return Ownership::OtherLab;
        }
        match &t.file {
            None => Ownership::ThisLab,
            Some(f) if *f == me.file || take_over => Ownership::ThisLab,
            Some(_) => Ownership::OtherInstance,
        }
    }
}

/// The spec hash written into an object's owner tag: the first 16 hex digits of SHA-256
/// over `path=value\n` for every `(path, value)` given, in the order given (callers pass
/// them sorted by path).
pub fn spec_hash<K: AsRef<str>, V: AsRef<str>>(fields: impl IntoIterator<Item = (K, V)>) -> String {
    let mut h = Sha256::new();
    for (k, v) in fields {
        h.update(k.as_ref().as_bytes());
        h.update(b"=");
        h.update(v.as_ref().as_bytes());
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

/// The name of a volume lab `lab` creates for domain `domain`: `<stem>.<tag>.<ext>` where
/// the stem is `<domain><mark><hex>` (`mark` `-` for an overlay, [`SEED_MARK`] for a seed;
/// `hex` 8 hex digits) and `tag` is a checksum of the lab name and the stem. libvirt storage
/// volumes carry no metadata, so the tag is in the name; a file that does not pass
/// [`volume_owned_by`] is never the lab's, whatever its name starts with.
///
/// # Errors
/// [`NameError`](crate::lab::names::NameError) when `mark`, `hex` or `ext` hold a character
/// a volume name may not (a domain name never does: [`LibvirtName`]).
pub fn volume_name(
    lab: &str,
    domain: &LibvirtName,
    mark: &str,
    hex: &str,
    ext: &str,
) -> Result<VolumeName, crate::lab::names::NameError> {
    let stem = format!("{domain}{mark}{hex}");
    VolumeName::new(&format!("{stem}.{}.{ext}", volume_checksum(lab, &stem)))
}

/// Whether volume `name` carries lab `lab`'s tag (see [`volume_name`]).
pub fn volume_owned_by(lab: &str, name: &str) -> bool {
    let mut parts = name.rsplitn(3, '.');
    let (Some(_ext), Some(tag), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    tag.len() == 8 && volume_checksum(lab, stem) == tag
}

/// The libvirt name of the VM a tagged volume was made for: its name without the tag, the
/// extension and the 8 hex digits (`demo-web-0123abcd.<tag>.qcow2` gives `demo-web`; a seed,
/// `demo-web-cidata-0123abcd.<tag>.img`, too). `None` for any other shape.
pub fn volume_domain(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(3, '.');
    let (Some(_ext), Some(_tag), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let (rest, hex) = stem.rsplit_once('-')?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let seed_mark = SEED_MARK.trim_end_matches('-');
    Some(rest.strip_suffix(seed_mark).unwrap_or(rest))
}

/// What every seed volume name holds after the VM's libvirt name (`guest::Seed::volume_name`).
pub const SEED_MARK: &str = "-cidata-";

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(lab: &str, resource: &str, name: &str) -> OwnerTag {
        OwnerTag {
            lab: lab.into(),
            resource: resource.into(),
            name: name.into(),
            spec_hash: "00".into(),
            prefix: Some(format!("{lab}-")),
            file: Some("/labs/a/lab.yaml".into()),
            ..OwnerTag::default()
        }
    }

    fn me(lab: &str, prefix: &str, file: &str) -> Instance {
        Instance { lab: lab.into(), prefix: prefix.into(), file: file.into() }
    }

    #[test]
    fn ownership_needs_lab_name_and_resource() {
        let demo = me("demo", "demo-", "/labs/a/lab.yaml");
        let of = |t: &OwnerTag, name: &str| Ownership::of(Some(t), &demo, false, name);
        assert_eq!(of(&tag("demo", "vm.web", "demo-web"), "demo-web"), Ownership::ThisLab);
        assert_eq!(of(&tag("other", "vm.web", "demo-web"), "demo-web"), Ownership::OtherLab);
        // virsh dumpxml demo-web | sed name | virsh define: the copy keeps the tag.
        assert_eq!(of(&tag("demo", "vm.web", "demo-web"), "copy"), Ownership::NotOwned);
        assert_eq!(of(&tag("demo", "vm.web", ""), "demo-web"), Ownership::NotOwned);
        assert_eq!(of(&tag("demo", "junk", "demo-web"), "demo-web"), Ownership::NotOwned);
        assert_eq!(Ownership::of(None, &demo, false, "demo-web"), Ownership::NotOwned);
    }

    #[test]
    fn a_second_lab_file_with_the_same_name_is_another_instance() {
        let here = me("demo", "demo-", "/labs/b/lab.yaml");
        let theirs = tag("demo", "vm.db", "demo-db");
        assert_eq!(Ownership::of(Some(&theirs), &here, false, "demo-db"), Ownership::OtherInstance);
        assert_eq!(Ownership::of(Some(&theirs), &here, true, "demo-db"), Ownership::ThisLab, "--take-over");
        // Same name, another prefix: another lab altogether, even with --take-over.
        let other_prefix = me("demo", "b-", "/labs/a/lab.yaml");
        assert_eq!(Ownership::of(Some(&theirs), &other_prefix, true, "demo-db"), Ownership::OtherLab);
        assert!(theirs.is_of(&me("demo", "demo-", "/labs/a/lab.yaml")));
        assert!(!theirs.is_of(&here));
    }

    #[test]
    fn tags_of_an_older_topo_are_adopted_only_under_their_prefix() {
        let old = OwnerTag { prefix: None, file: None, ..tag("demo", "vm.db", "demo-db") };
        assert_eq!(old.lab_prefix().as_deref(), Some("demo-"));
        assert_eq!(old.instance(), None);
        let here = me("demo", "demo-", "/labs/b/lab.yaml");
        assert_eq!(Ownership::of(Some(&old), &here, false, "demo-db"), Ownership::ThisLab);
        assert!(!old.is_of(&here), "adopted objects are re-tagged");
        // The same lab name applied with `prefix: b-` never owns `demo-db`.
        assert_eq!(Ownership::of(Some(&old), &me("demo", "b-", "/x"), false, "demo-db"), Ownership::OtherLab);
        let bare = OwnerTag { name: "db".into(), ..old.clone() };
        assert_eq!(bare.lab_prefix().as_deref(), Some(""));
        assert_eq!(Ownership::of(Some(&bare), &me("demo", "demo-", "/x"), false, "db"), Ownership::OtherLab);
    }

    fn web() -> LibvirtName {
        LibvirtName::new("demo-web").unwrap()
    }

    #[test]
    fn the_overlay_pool_name_is_a_pool_name() {
        assert_eq!(overlay_pool(), OVERLAY_POOL);
    }

    #[test]
    fn volume_tags() {
        let n = volume_name("demo", &web(), "-", "0123abcd", "qcow2").unwrap();
        let n = n.as_str();
        assert!(n.starts_with("demo-web-0123abcd.") && n.ends_with(".qcow2"), "{n}");
        assert!(volume_owned_by("demo", n));
        assert!(!volume_owned_by("other", n));
        // Same prefix, no tag: a user's file is never the lab's.
        assert!(!volume_owned_by("demo", "demo-web-0123abcd.qcow2"));
        assert!(!volume_owned_by("demo", "demo-web.deadbeef.qcow2"));
        assert!(!volume_owned_by("demo", ""));
    }

    #[test]
    fn a_volume_names_its_domain() {
        let overlay = volume_name("demo", &web(), "-", "0123abcd", "qcow2").unwrap();
        assert_eq!(volume_domain(overlay.as_str()), Some("demo-web"));
        let seed = volume_name("demo", &web(), SEED_MARK, "0123abcd", "img").unwrap();
        assert_eq!(volume_domain(seed.as_str()), Some("demo-web"));
        assert!(
            volume_name("demo", &web(), "-", "01/3abcd", "img").is_err(),
            "a volume is a file in the pool's folder"
        );
        assert_eq!(volume_domain("demo-web.qcow2"), None);
        assert_eq!(volume_domain("demo-web-xyz.deadbeef.qcow2"), None);
    }

    #[test]
    fn spec_hash_is_16_hex_digits_and_order_sensitive() {
        let a = spec_hash([("a", "1"), ("b", "2")]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, spec_hash([("a", "1"), ("b", "3")]));
    }
}
