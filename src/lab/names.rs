//! The names and hardware addresses of a lab and its resources, as newtypes whose
//! constructors enforce the rules of the layers below (libvirt, Linux, Ethernet): a
//! `NetworkName` is always a usable libvirt and Linux name, a `MacAddr` is always unicast.

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

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: &str) -> Result<Self, NameError> {
                check_name(s, $max, $allowed)?;
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

/// A unicast Ethernet address, shown as lowercase `52:54:00:ab:cd:ef`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub fn new(bytes: [u8; 6]) -> Result<Self, MacError> {
        if bytes[0] & 1 == 1 {
            return Err(MacError::Multicast);
        }
        Ok(Self(bytes))
    }
    pub fn octets(&self) -> [u8; 6] {
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
        Self([0x52, 0x54, 0x00, d[0], d[1], d[2]])
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
        Self([0x52, 0x54, 0x01, d[0], d[1], d[2]])
    }
}

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(MacError::Format);
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(MacError::Format);
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| MacError::Format)?;
        }
        Self::new(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
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
