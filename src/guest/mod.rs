//! Guests: the cloud-init NoCloud seed topo gives each cloud-image VM (meta-data, user-data,
//! network-config) and the FAT image that carries it.
//!
//! Everything here is pure: the seed of a VM depends only on the validated lab (with the
//! SSH keys filled in), so the same lab gives the same seed bytes on every host. The rules
//! are written down in docs/guests.md.

mod fat;
mod network;
mod user_data;

use std::path::Path;

use serde_json::Value;

use crate::lab::cloud_init_rules::{MAX_KEY_FILE, key_lines};
use crate::lab::model::{Lab, Vm, VolumeName};

pub use fat::{SEED_LABEL, fat_image, read_fat_files};
pub use network::network_config;
pub use user_data::{Part, merge, multipart, user_data};

/// Why a seed could not be generated.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GuestError {
    /// The user's own user-data file is a `#cloud-config` that is not a YAML mapping, or a
    /// kind cloud-init would not run.
    #[error("user-data file {path}: {message}")]
    #[diagnostic(
        code(topo::guest::user_data),
        help(
            "a `#cloud-config` file holds a YAML mapping; other kinds start as cloud-init expects (see docs/guests.md)"
        )
    )]
    UserData { path: String, message: String },
    /// YAML output failed (an internal error: the values are plain data).
    #[error("could not write {what} as YAML: {message}")]
    #[diagnostic(code(topo::guest::yaml))]
    Yaml { what: &'static str, message: String },
    /// A NIC names a network the lab does not have (the lab was not validated).
    #[error("vm {vm} uses network {network}, which is not in the lab")]
    #[diagnostic(code(topo::guest::unknown_network))]
    UnknownNetwork { vm: String, network: String },
    /// Writing the FAT image failed.
    #[error("could not write the seed image: {0}")]
    #[diagnostic(code(topo::guest::image))]
    Image(#[from] std::io::Error),
}

/// The three files of a NoCloud seed, as text, plus the instance id in `meta_data`.
/// A plan step carries it (the image is made from it at apply time, byte for byte the same).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    /// `instance-id` in meta-data: `iid-` + 16 hex digits of SHA-256 over the lab name, the
    /// VM name and the other seed files (see [`instance_id`]). cloud-init runs its
    /// per-instance modules again whenever it changes.
    pub instance_id: String,
    /// `meta-data`: instance-id and local-hostname.
    pub meta_data: String,
    /// `user-data`: `#cloud-config` with the login user, its keys and the hostname, merged
    /// with the user's own `#cloud-config` file, or a MIME multi-part of it and the user's
    /// other kind of file.
    pub user_data: String,
    /// `network-config`: version 2, one entry per NIC matched by MAC.
    pub network_config: String,
}

impl Seed {
    /// The seed of `vm`, or `None` when cloud-init is off for it.
    ///
    /// Errors: the user's user-data file is not a `#cloud-config` mapping; a NIC names a
    /// network outside the lab.
    pub fn of(lab: &Lab, vm: &Vm) -> Result<Option<Seed>, GuestError> {
        let Some(ci) = &vm.cloud_init else { return Ok(None) };
        let user_data = user_data(ci)?;
        let network_config = to_yaml("network-config", &network_config(lab, vm)?)?;
        let instance_id = instance_id(lab, vm, &ci.hostname, &user_data, &network_config);
        let meta = serde_json::json!({ "instance-id": instance_id, "local-hostname": ci.hostname });
        let meta_data = to_yaml("meta-data", &meta)?;
        Ok(Some(Seed { instance_id, meta_data, user_data, network_config }))
    }

    /// The files in the order they are written to the image: `(name, text)`.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [("meta-data", &self.meta_data), ("user-data", &self.user_data), ("network-config", &self.network_config)]
    }

    /// The seed as a FAT image labelled `CIDATA` (see [`fat_image`]).
    pub fn image(&self) -> Result<Vec<u8>, GuestError> {
        Ok(fat_image(&self.files(), volume_id(&self.instance_id))?)
    }

    /// The seed volume's name: `<libvirt name>-cidata-<8 hex>.<lab tag>.img`. The hex
    /// digits come from the instance id, so changed seed data gives a new volume (and shows
    /// in the domain's disk list); the tag marks the volume as the lab's
    /// (`ownership::volume_name`), so an orphaned seed is found and deleted like an overlay.
    pub fn volume_name(&self, lab: &Lab, vm: &Vm) -> VolumeName {
        let hex = self.instance_id.trim_start_matches("iid-");
        let hex = hex.get(..8).unwrap_or(hex);
        let name = crate::lab::ownership::volume_name(lab.name.as_str(), &vm.libvirt_name, SEED_MARK, hex, "img");
        // Invariant: a seed's instance id is `iid-` and hex digits (made by `instance_id` in
        // `Seed::of`), so the mark, its digits and "img" hold no character a volume name may not.
        name.expect("a seed's name is a valid volume name")
    }
}

pub use crate::lab::ownership::SEED_MARK;

/// Whether volume `name` is a seed volume topo made (see [`Seed::volume_name`]).
pub fn is_seed_volume(name: &str) -> bool {
    name.contains(SEED_MARK) && name.ends_with(".img")
}

/// What a seed volume's name ends with while it is being uploaded (see [`partial_seed_name`]).
pub const PARTIAL_SUFFIX: &str = "-partial";

/// The name a seed is uploaded under before it gets its own: `<seed name>-partial`
/// (`…cidata-1a2b3c4d.<tag>.img-partial`). libvirt volumes cannot be renamed, and a stream
/// upload killed half-way leaves a volume of the full capacity with only part of the bytes
/// written, which nothing on the host tells from a whole one. So apply uploads here, then
/// has libvirtd copy the volume to the seed's own name (`virStorageVolCreateXMLFrom`: the copy
/// runs inside the daemon, a kill of topo does not cut it short) and deletes this one: a seed
/// volume under its own name is always complete. The name keeps the lab's tag
/// (`ownership::volume_owned_by` holds), so a leftover is planned for deletion with reason
/// `interrupted-upload`.
pub fn partial_seed_name(seed: &str) -> String {
    format!("{seed}{PARTIAL_SUFFIX}")
}

/// Whether volume `name` is a seed upload that has not got its own name ([`partial_seed_name`]).
pub fn is_partial_seed(name: &str) -> bool {
    name.strip_suffix(PARTIAL_SUFFIX).is_some_and(is_seed_volume)
}

/// `iid-` + the first 16 hex digits of SHA-256("topo-seed-v1\0" + lab + "\0" + vm + "\0" +
/// hostname + "\0" + user-data + "\0" + network-config).
pub fn instance_id(lab: &Lab, vm: &Vm, hostname: &str, user_data: &str, network_config: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [b"topo-seed-v1".as_slice(), lab.name.as_str().as_bytes(), vm.name.as_str().as_bytes()] {
        h.update(part);
        h.update(b"\0");
    }
    h.update(hostname.as_bytes());
    h.update(b"\0");
    h.update(user_data.as_bytes());
    h.update(b"\0");
    h.update(network_config.as_bytes());
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("iid-{hex}")
}

/// The FAT volume serial number: the first 8 hex digits of the instance id.
fn volume_id(instance_id: &str) -> u32 {
    u32::from_str_radix(instance_id.trim_start_matches("iid-").get(..8).unwrap_or("0"), 16).unwrap_or(0)
}

/// YAML text of `v`, keys in insertion order. Strings that YAML 1.1 readers (cloud-init
/// uses PyYAML) would read as something else (`yes`, `52:54:00:12:34:56` as a base-60
/// number) are quoted by the serializer. Long one-line strings (SSH keys) stay on one line;
/// text with newlines is written as a literal block (`|`).
pub(crate) fn to_yaml(what: &'static str, v: &Value) -> Result<String, GuestError> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 1 << 20 };
    serde_saphyr::to_string_with_options(v, options).map_err(|e| GuestError::Yaml { what, message: e.to_string() })
}

/// The invoking user's public keys: every line of `<home>/.ssh/*.pub` (files in name order)
/// that holds a key. Each file is read with [`crate::files::read_bounded`] (regular files of
/// at most [`MAX_KEY_FILE`]); one that is not, or cannot be read, is skipped. This is the
/// default when a lab file names no key.
pub fn invoking_user_keys(home: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(home.join(".ssh")) else { return Vec::new() };
    let mut files: Vec<_> =
        dir.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "pub")).collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| crate::files::read_text_bounded(p, MAX_KEY_FILE).ok())
        .flat_map(|t| key_lines(&t))
        .collect()
}

#[cfg(test)]
mod tests;
