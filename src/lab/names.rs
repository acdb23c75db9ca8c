//! The names and hardware addresses of a lab and its resources, as newtypes whose
//! constructors enforce the rules of the layers below (libvirt, Linux, Ethernet): a
//! `NetworkName` is always a usable libvirt and Linux name, a `MacAddr` is always unicast, a
//! `VolumeName` is always a file name libvirt accepts in a pool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest lab name: it prefixes libvirt names, which must stay short enough for bridges.
pub const MAX_LAB_NAME: usize = 32;
/// Longest network or VM name as written in the lab file.
pub const MAX_RESOURCE_NAME: usize = 63;
/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_BRIDGE_NAME: usize = 15;

/// Why a string is not a valid name. Rendered into diagnostics by `validate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    /// Longer than `max`. Checked after the characters, which are ASCII, so characters and
    /// bytes are the same count here.
    #[error("is {len} characters long, more than {max}")]
    TooLong { len: usize, max: usize },
    /// Longer than `max` bytes (Linux interface names: IFNAMSIZ counts bytes).
    #[error("is {len} bytes long, more than {max}")]
    TooLongBytes { len: usize, max: usize },
    /// A name the kernel refuses outright (`.` and `..`: net/core/dev.c, dev_valid_name).
    #[error("is reserved by the Linux kernel")]
    Reserved,
    #[error("contains {0:?}, which is not allowed")]
    BadChar(char),
    #[error("must start with a lowercase letter")]
    BadStart,
    #[error("must not end with '-'")]
    BadEnd,
    /// `.` or `..`: as a file name in a folder, these name the folder itself or its parent.
    #[error("names a folder ('.' or '..'), not a file")]
    Dots,
    /// Must start with an ASCII letter or digit (a snapshot name: never an option to virsh).
    #[error("must start with a letter or a digit")]
    BadStartAlnum,
    /// Digits only: QEMU looks an internal snapshot up by its numeric ID as well as by its
    /// name (block/snapshot.c `bdrv_snapshot_find`), so `loadvm 2` may load another snapshot.
    #[error("is digits only, which QEMU may read as another snapshot's ID")]
    Numeric,
}

fn check_name(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), NameError> {
    let first = s.chars().next().ok_or(NameError::Empty)?;
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(NameError::BadChar(c));
    }
    // ASCII only from here: one character is one byte.
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart);
    }
    if s.ends_with('-') {
        return Err(NameError::BadEnd);
    }
    Ok(())
}

/// A string newtype whose constructor checks `$check` (`fn(&str) -> Result<(), NameError>`):
/// shown, compared and serialised as the string, and deserialised through the check.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// # Errors
            /// The rule of the type's doc, broken.
            pub fn new(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(|e| serde::de::Error::custom(format!("{} {s:?} {e}", stringify!($name))))
            }
        }
    };
}

/// A lab-file name type: `check_name` with its longest length and allowed characters.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr) => {
        checked_name!($(#[$doc])* $name, |s| check_name(s, $max, $allowed));
    };
}

fn lab_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}
fn resource_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}
fn bridge_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

name_type!(
    /// A lab's name: lowercase letters, digits and '-', starting with a letter, at most 32.
    LabName, MAX_LAB_NAME, lab_char
);
name_type!(
    /// A network's key in the lab file: lowercase letters, digits, '-' and '_'.
    NetworkName, MAX_RESOURCE_NAME, resource_char
);
name_type!(
    /// A VM's key in the lab file: lowercase letters, digits, '-' and '_'.
    VmName, MAX_RESOURCE_NAME, resource_char
);
name_type!(
    /// A libvirt host's key under `hosts:` in the lab file: lowercase letters, digits, '-'
    /// and '_'. A lab without `hosts:` has one host, [`HostName::DEFAULT`].
    HostName, MAX_RESOURCE_NAME, resource_char
);

impl HostName {
    /// The host of a lab that names none: the one `--connect` (or libvirt's default URI)
    /// reaches.
    pub const DEFAULT: &str = "default";

    /// The default host's name.
    pub fn default_host() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

/// Characters libvirt refuses in every object name topo writes: `/` (domains:
/// src/conf/domain_postparse.c "name %s cannot contain '/'"; networks:
/// src/conf/network_conf.c `virNetworkDefParseXML`, `virXMLCheckIllegalChars("name", name,
/// "/")`; pools: src/conf/storage_conf.c `virStoragePoolDefParseXML`; volumes of a dir
/// pool: src/storage/storage_util.c "volume name '%s' cannot contain '/'", a volume being
/// the file `<pool folder>/<name>`), a newline (the define calls of the QEMU and storage
/// drivers, `virXMLCheckIllegalChars("name", name, "\n")`), and NUL (names cross libvirt's
/// API as C strings).
const LIBVIRT_ILLEGAL: [char; 3] = ['/', '\n', '\0'];

/// libvirt's rule for a name: not empty, none of [`LIBVIRT_ILLEGAL`].
fn check_libvirt(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    match s.chars().find(|c| LIBVIRT_ILLEGAL.contains(c)) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

/// A volume name: libvirt's rule ([`check_libvirt`]), and, since a volume of a dir pool is
/// the file `<pool folder>/<name>`, not `.` or `..`.
fn check_volume(s: &str) -> Result<(), NameError> {
    check_libvirt(s)?;
    if s == "." || s == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

checked_name!(
    /// The name of a libvirt domain or network (`<name>`): not empty, no `/`, newline or NUL
    /// ([`LIBVIRT_ILLEGAL`]). A lab's are its `prefix` + the name in the lab file
    /// (`demo-web`); an external network's is its name as written.
    LibvirtName, check_libvirt
);
checked_name!(
    /// The name of a libvirt storage pool: not empty, no `/`, newline or NUL
    /// ([`LIBVIRT_ILLEGAL`]). topo's own is [`OVERLAY_POOL`](crate::lab::ownership::OVERLAY_POOL).
    PoolName, check_libvirt
);
checked_name!(
    /// The name of a storage volume in a pool: a file name in the pool's folder for the dir
    /// pools topo uses, so not empty, not `.` or `..`, no `/`, newline or NUL
    /// ([`LIBVIRT_ILLEGAL`]). topo's are tagged with their lab (`ownership::volume_name`).
    VolumeName, check_volume
);

/// Longest snapshot name, in bytes: QEMU keeps an internal snapshot's name in
/// `QEMUSnapshotInfo.name[256]` (include/block/snapshot.h), a NUL-terminated 255 bytes, and
/// cuts a longer one short (`pstrcpy`), so two long names could become one.
pub const MAX_SNAPSHOT_NAME: usize = 255;

/// The characters of a snapshot name: ASCII letters, digits and `-_.+:@`.
fn snapshot_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | ':' | '@')
}

/// A lab snapshot's name (`topo snapshot save NAME`), given to every VM's internal snapshot.
/// What the layers below refuse or mangle, refused here:
/// - empty: libvirt would make one up from the time (`virDomainMomentDefPostParse`);
/// - `/`, newline, NUL ([`LIBVIRT_ILLEGAL`]): libvirt keeps a snapshot's metadata in the file
///   `<snapshot dir>/<domain>/<name>.xml` (`qemuDomainSnapshotWriteMetadata`), and names
///   cross its API as C strings;
/// - `"`, `\`, spaces and control characters: libvirt 9.0 sends `savevm "NAME"`,
///   `loadvm "NAME"` and `delvm "NAME"` to QEMU's monitor unescaped
///   (qemu_monitor_text.c `qemuMonitorTextCreateSnapshot`);
/// - digits only ([`NameError::Numeric`]), more than [`MAX_SNAPSHOT_NAME`] bytes.
///
/// So: ASCII letters, digits and `-_.+:@`, starting with a letter or digit (never read as an
/// option by virsh), not digits only, at most 255.
fn check_snapshot(s: &str) -> Result<(), NameError> {
    let first = s.chars().next().ok_or(NameError::Empty)?;
    if let Some(c) = s.chars().find(|c| !snapshot_char(*c)) {
        return Err(NameError::BadChar(c));
    }
    if s.len() > MAX_SNAPSHOT_NAME {
        return Err(NameError::TooLong { len: s.len(), max: MAX_SNAPSHOT_NAME });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStartAlnum);
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Err(NameError::Numeric);
    }
    Ok(())
}

checked_name!(
    /// The name of a lab snapshot, the same on every VM's internal snapshot: ASCII letters,
    /// digits and `-_.+:@`, starting with a letter or digit, not digits only, at most 255
    /// bytes ([`check_snapshot`] says which layer refuses what).
    SnapshotName, check_snapshot
);

/// A Linux bridge name: at most 15 bytes (IFNAMSIZ - 1, include/uapi/linux/if.h), ASCII
/// letters, digits, '-', '_' and '.', not `.` or `..` (net/core/dev.c, dev_valid_name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BridgeName(String);

impl BridgeName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(c) = s.chars().find(|c| !bridge_char(*c)) {
            return Err(NameError::BadChar(c));
        }
        if s.len() > MAX_BRIDGE_NAME {
            return Err(NameError::TooLongBytes { len: s.len(), max: MAX_BRIDGE_NAME });
        }
        if s == "." || s == ".." {
            return Err(NameError::Reserved);
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for BridgeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a usable MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("is not six ':'-separated pairs of hex digits")]
    Format,
    #[error("has the multicast bit set (the first byte is odd)")]
    Multicast,
}

/// A unicast Ethernet address, shown as lowercase `52:54:00:ab:cd:ef`: pnet's MAC type (the
/// one ARP frames carry, [`MacAddr::wire`]) under topo's rules, which are stricter than its
/// parser: six `:`-separated pairs of hex digits, in either case (IEEE 802's canonical form,
/// as libvirt writes `<mac address>`; pnet also takes `2` or `+2` for `02`), and never
/// multicast (the first byte's lowest bit set: IEEE 802 group addresses, which no NIC may
/// have; libvirt refuses them too: src/conf/domain_conf.c, "expected unicast mac address,
/// found multicast").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pnet_base::MacAddr);

impl MacAddr {
    /// # Errors
    /// [`MacError::Multicast`] for a group address.
    pub fn new(bytes: [u8; 6]) -> Result<Self, MacError> {
        Self::unicast(pnet_base::MacAddr::from(bytes))
    }
    /// `mac`, when it is unicast.
    ///
    /// # Errors
    /// [`MacError::Multicast`] for a group address.
    pub fn unicast(mac: pnet_base::MacAddr) -> Result<Self, MacError> {
        if mac.is_multicast() {
            return Err(MacError::Multicast);
        }
        Ok(Self(mac))
    }
    pub fn octets(&self) -> [u8; 6] {
        self.0.octets()
    }
    /// The address as pnet's type, for frames on the wire.
    pub fn wire(self) -> pnet_base::MacAddr {
        self.0
    }

    /// The MAC topo gives a NIC that has none in the lab file: QEMU's locally administered
    /// prefix 52:54:00, then the first three bytes of
    /// SHA-256("topo-mac-v1\0" + lab + "\0" + vm + "\0" + nic index in decimal).
    /// It depends only on those three values, so the same file gives the same MACs on every
    /// host and run, and two labs on one host do not collide on a shared network.
    pub fn derived(lab: &LabName, vm: &VmName, index: usize) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"topo-mac-v1\0");
        h.update(lab.as_str().as_bytes());
        h.update(b"\0");
        h.update(vm.as_str().as_bytes());
        h.update(b"\0");
        h.update(index.to_string().as_bytes());
        let d = h.finalize();
        Self(pnet_base::MacAddr(0x52, 0x54, 0x00, d[0], d[1], d[2]))
    }

    /// The MAC topo gives the bridge of a lab network (`<mac address>` in its XML):
    /// `52:54:01`, then the first three bytes of
    /// SHA-256("topo-bridge-mac-v1\0" + lab + "\0" + network name).
    ///
    /// Without it libvirt's network driver generates a random `52:54:00:..` one at define
    /// (src/conf/network_conf.c `virNetworkSetBridgeMacAddr`, called from
    /// src/network/bridge_driver.c `networkValidate` for forward modes none, nat, route and
    /// open), so the same file would give different host objects on every host. The third
    /// byte `01` keeps it apart from every [`MacAddr::derived`] NIC MAC (`52:54:00`) by
    /// construction; a NIC's explicit `mac:` equal to it is refused by validation
    /// (`bridge_mac`). Two networks' bridges may share one (24 bits): harmless, each bridge
    /// is its own Ethernet segment.
    pub fn derived_bridge(lab: &LabName, network: &NetworkName) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"topo-bridge-mac-v1\0");
        h.update(lab.as_str().as_bytes());
        h.update(b"\0");
        h.update(network.as_str().as_bytes());
        let d = h.finalize();
        Self(pnet_base::MacAddr(0x52, 0x54, 0x01, d[0], d[1], d[2]))
    }

    /// The bridge MAC of a stretched lab network on a host that does not serve it:
    /// `52:54:01`, then the first three bytes of SHA-256 of "topo-bridge-mac-v1\0", the lab,
    /// "\0", the network, "\0" and the host. The bridges joined by a tunnel are one Ethernet segment, so
    /// each needs its own MAC (see `Lab::bridge_mac`).
    pub fn derived_bridge_on(lab: &LabName, network: &NetworkName, host: &HostName) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"topo-bridge-mac-v1\0");
        h.update(lab.as_str().as_bytes());
        h.update(b"\0");
        h.update(network.as_str().as_bytes());
        h.update(b"\0");
        h.update(host.as_str().as_bytes());
        let d = h.finalize();
        Self(pnet_base::MacAddr(0x52, 0x54, 0x01, d[0], d[1], d[2]))
    }
}

impl FromStr for MacAddr {
    type Err = MacError;
    /// topo's form first (six pairs of hex digits), then pnet's parser, then unicast.
    fn from_str(s: &str) -> Result<Self, MacError> {
        let pairs = s.split(':').collect::<Vec<_>>();
        if pairs.len() != 6 || !pairs.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(MacError::Format);
        }
        Self::unicast(s.parse().map_err(|_| MacError::Format)?)
    }
}

impl fmt::Display for MacAddr {
    /// Lowercase, two digits a byte (pnet's form, which is topo's).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot name mirrors what libvirt and QEMU refuse or mangle: libvirt's metadata
    /// file `<dir>/<domain>/<name>.xml` (no '/'), the unescaped `savevm "NAME"` of libvirt
    /// 9.0's qemuMonitorTextCreateSnapshot (no '"', '\\', space), QEMU's lookup by numeric
    /// ID (bdrv_snapshot_find: not digits only) and QEMUSnapshotInfo.name[256] (255 bytes).
    #[test]
    fn snapshot_names_follow_libvirt_and_qemu() {
        for ok in ["before-upgrade", "s1", "2024-01-01", "v1.2+rc:x@y", "A_b"] {
            assert!(SnapshotName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(SnapshotName::new(""), Err(NameError::Empty));
        assert_eq!(SnapshotName::new("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(SnapshotName::new("a\"b"), Err(NameError::BadChar('"')));
        assert_eq!(SnapshotName::new("a\\b"), Err(NameError::BadChar('\\')));
        assert_eq!(SnapshotName::new("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(SnapshotName::new("a\nb"), Err(NameError::BadChar('\n')));
        assert_eq!(SnapshotName::new("-a"), Err(NameError::BadStartAlnum));
        assert_eq!(SnapshotName::new("12"), Err(NameError::Numeric));
        assert!(SnapshotName::new(&"a".repeat(255)).is_ok());
        assert_eq!(SnapshotName::new(&"a".repeat(256)), Err(NameError::TooLong { len: 256, max: 255 }));
    }

    /// libvirt refuses '/' in domain and network names (src/conf/domain_postparse.c,
    /// src/conf/network_conf.c), a newline at define (virXMLCheckIllegalChars), and names
    /// are C strings (no NUL).
    #[test]
    fn libvirt_names_follow_libvirts_rule() {
        for ok in ["demo-web", "default", "lab_1-n", "Upper.Case ok"] {
            assert_eq!(LibvirtName::new(ok).unwrap(), ok);
        }
        assert_eq!(LibvirtName::new(""), Err(NameError::Empty));
        assert_eq!(LibvirtName::new("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(LibvirtName::new("a\nb"), Err(NameError::BadChar('\n')));
        assert_eq!(LibvirtName::new("a\0b"), Err(NameError::BadChar('\0')));
        // src/conf/storage_conf.c refuses '/' in a pool's name too.
        assert_eq!(PoolName::new("topo/overlays"), Err(NameError::BadChar('/')));
        assert_eq!(PoolName::new("topo-overlays").unwrap(), "topo-overlays");
    }

    /// A volume of a dir pool is the file `<pool folder>/<name>`: src/storage/storage_util.c
    /// refuses '/' ("volume name '%s' cannot contain '/'"), and `.`/`..` would be folders.
    #[test]
    fn volume_names_are_file_names_in_the_pool_folder() {
        assert!(VolumeName::new("demo-web-0123abcd.0badf00d.qcow2").is_ok());
        assert!(VolumeName::new("...").is_ok(), "only '.' and '..' name folders");
        assert_eq!(VolumeName::new("../etc/passwd"), Err(NameError::BadChar('/')));
        assert_eq!(VolumeName::new(".."), Err(NameError::Dots));
        assert_eq!(VolumeName::new("."), Err(NameError::Dots));
        assert_eq!(VolumeName::new(""), Err(NameError::Empty));
    }

    /// topo's form of a MAC (IEEE 802's six pairs of hex digits, either case) is stricter
    /// than pnet's parser, which takes one digit or a `+` per byte.
    #[test]
    fn a_mac_is_six_pairs_of_hex_digits() {
        assert_eq!("52:54:00:AB:cd:0E".parse::<MacAddr>().unwrap().to_string(), "52:54:00:ab:cd:0e");
        for loose in ["52:54:00:00:1f:2", "52:54:00:00:1f:+2"] {
            assert!(loose.parse::<pnet_base::MacAddr>().is_ok(), "pnet takes {loose}");
            assert_eq!(loose.parse::<MacAddr>(), Err(MacError::Format), "topo does not: {loose}");
        }
        for bad in ["52:54:00:00:1f:-2", "52-54-00-00-1f-02", "52:54:00:00:1f:02:", "52:54:00:00:1f", ""] {
            assert_eq!(bad.parse::<MacAddr>(), Err(MacError::Format), "{bad}");
        }
        assert_eq!(" 52:54:00:00:1f:02".parse::<MacAddr>(), Err(MacError::Format), "no spaces");
    }

    /// No NIC may have an IEEE 802 group address (the first byte's lowest bit), which libvirt
    /// refuses ("expected unicast mac address, found multicast"); the all-zero address is
    /// unicast and stays accepted as before.
    #[test]
    fn a_multicast_mac_is_refused() {
        for group in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "03:00:00:00:00:00", "33:33:00:00:00:01"] {
            assert_eq!(group.parse::<MacAddr>(), Err(MacError::Multicast), "{group}");
        }
        assert_eq!(MacAddr::new([0xff; 6]), Err(MacError::Multicast));
        assert_eq!(MacAddr::unicast(pnet_base::MacAddr::broadcast()), Err(MacError::Multicast));
        assert!("00:00:00:00:00:00".parse::<MacAddr>().is_ok());
        assert!("02:00:00:00:00:01".parse::<MacAddr>().is_ok(), "locally administered unicast");
    }

    /// Ordered by bytes as before (plans list NICs by MAC), and the same six bytes on the wire.
    #[test]
    fn a_mac_orders_by_its_bytes_and_is_the_frames_mac() {
        let a = MacAddr::new([0x52, 0x54, 0x00, 0x00, 0x00, 0xff]).unwrap();
        let b = MacAddr::new([0x52, 0x54, 0x00, 0x00, 0x01, 0x00]).unwrap();
        assert!(a < b);
        assert_eq!(b.wire().octets(), b.octets());
        assert_eq!(MacAddr::unicast(b.wire()), Ok(b));
    }

    /// A name read back (a saved plan) passes the same rule as one built.
    #[test]
    fn names_are_checked_when_read() {
        assert_eq!(serde_json::from_str::<VolumeName>("\"a.qcow2\"").unwrap(), "a.qcow2");
        let e = serde_json::from_str::<VolumeName>("\"a/b\"").unwrap_err().to_string();
        assert!(e.contains("VolumeName \"a/b\" contains '/'"), "{e}");
        assert_eq!(serde_json::to_string(&PoolName::new("p").unwrap()).unwrap(), "\"p\"");
    }
}
