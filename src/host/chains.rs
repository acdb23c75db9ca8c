//! The files each domain's disks open, and what identifies each file: what
//! [`crate::host::Host::observe`] completes where libvirt did not tell. libvirt lists a running
//! domain's backing chains in its live XML (`ObservedDomain::live_disks`) and keys the overlay
//! pool's volumes; every other chain is followed, layer by layer, through the machine's image
//! headers when topo can read the machine ([`Machine::image_backing`]), else, or where the
//! machine cannot read an image, through libvirt's pools (`<backingStore>` of the volume at
//! that path, [`Hypervisor::volume_by_path`]). A file's identity is its `(dev, inode)` on a
//! reachable machine ([`Machine::file_id`]), else libvirt's key of the volume at its path.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::hypervisor::{Hypervisor, StorageVolumeInfo};
use crate::host::machine::{ImageBacking, Machine};
use crate::host::observed::{Observed, ObservedDomain};

/// Longer chains are not followed further (a loop, or more layers than a lab makes).
const MAX_DEPTH: usize = 64;

/// What the host says of its files: its libvirt connection, and its machine when topo can
/// reach it. Each path is looked up in libvirt's pools at most once.
struct Files<'a> {
    hv: &'a dyn Hypervisor,
    machine: Option<&'a dyn Machine>,
    /// `virStorageVolLookupByPath` by path: `None` where no active pool holds a volume there
    /// (or the lookup failed).
    volumes: BTreeMap<String, Option<StorageVolumeInfo>>,
}

impl Files<'_> {
    /// The volume an active pool holds at `path`, looked up once.
    fn volume(&mut self, path: &str) -> Option<&StorageVolumeInfo> {
        let hv = self.hv;
        self.volumes.entry(path.to_owned()).or_insert_with(|| hv.volume_by_path(path).ok()).as_ref()
    }

    /// The backing file of the image at `path` on the host: `Some(None)` for none, `None`
    /// when it cannot be told. From the machine's read of its header; where there is no
    /// machine or it cannot read the image, from the `<backingStore>` libvirt's pool shows
    /// for the volume at that path.
    fn backing_of(&mut self, path: &str) -> Option<Option<String>> {
        if let Some(m) = self.machine {
            match m.image_backing(path) {
                ImageBacking::None => return Some(None),
                ImageBacking::File(b) => return Some(Some(b)),
                ImageBacking::Unknown => return None,
                ImageBacking::Unreadable => {}
            }
        }
        self.volume(path).map(|v| v.backing.clone())
    }

    /// Fills each disk's backing chain of `d` (its persistent config, or a transient
    /// domain's live XML): from its live XML (`live_disks`) where that lists the same source
    /// and every chain to its end (libvirt writes the whole chain there for a running
    /// domain), else by following the files ([`Self::backing_of`]). `chains_known` ends
    /// false when a layer could not be told; `live_only` gets what the running domain opens
    /// beyond its config (a define since it started).
    fn complete_chains(&mut self, d: &mut ObservedDomain) {
        let live = d.live_disks.take();
        let told = live.as_ref().filter(|l| l.known);
        let mut known = true;
        for (i, top) in d.disks.clone().iter().enumerate() {
            let from_live = told.and_then(|l| {
                let j = l.disks.iter().position(|p| p == top)?;
                Some(l.backing.get(j).cloned().unwrap_or_default())
            });
            let chain = match from_live {
                Some(c) => c,
                None => {
                    let mut c: Vec<String> = Vec::new();
                    let mut at = top.clone();
                    loop {
                        match self.backing_of(&at) {
                            Some(Some(next)) if c.len() < MAX_DEPTH && !c.contains(&next) && next != *top => {
                                c.push(next.clone());
                                at = next;
                            }
                            Some(None) => break,
                            _ => {
                                known = false;
                                break;
                            }
                        }
                    }
                    c
                }
            };
            if let Some(slot) = d.backing.get_mut(i) {
                *slot = chain;
            }
        }
        d.chains_known = known;
        if let Some(l) = &live {
            let named: BTreeSet<String> = d.files().map(str::to_owned).collect();
            d.live_only = l.files().filter(|f| !named.contains(*f)).map(str::to_owned).collect();
            d.chains_known &= l.known || l.disks.iter().all(|p| named.contains(p));
        }
        d.live_disks = live;
    }

    /// What identifies each file the domains open and each overlay volume
    /// ([`Observed::files`]): with a machine, `(dev, inode)`; without one, libvirt's key of
    /// the volume at that path where a pool holds one (the overlay pool's volumes carry
    /// theirs from the listing).
    fn identify(&mut self, out: &mut Observed) {
        let paths: BTreeSet<String> = out
            .domains
            .values()
            .flat_map(|d| d.files().map(str::to_owned))
            .chain(out.volumes.values().map(|v| v.path.clone()))
            .collect();
        for p in paths {
            let id = out.files.entry(p.clone()).or_default();
            match self.machine {
                Some(m) => id.inode = m.file_id(&p),
                None if id.key.is_none() => id.key = self.volume(&p).and_then(|v| v.key.clone()),
                None => {}
            }
        }
    }
}

/// Completes `out` (what libvirt showed) with each domain's backing chains and the identity
/// of every file they open, from `machine` where libvirt did not tell, else from `hv`'s pools.
pub fn complete(hv: &dyn Hypervisor, machine: Option<&dyn Machine>, out: &mut Observed) {
    let mut files = Files { hv, machine, volumes: BTreeMap::new() };
    for d in out.domains.values_mut() {
        files.complete_chains(d);
    }
    files.identify(out);
}

#[cfg(test)]
mod tests {
    use crate::host::Host;
    use crate::host::hypervisor::memory::MemoryHypervisor;
    use crate::host::hypervisor::{Hypervisor, VolumeSpec};

    const POOL: &str = crate::lab::ownership::OVERLAY_POOL;

    /// A domain on `/p/b.qcow2`, an overlay on `/p/a.qcow2`, an overlay on the base image
    /// `/img/base.qcow2`; the base image in a pool of its own when `base_in_a_pool`.
    fn two_layers(base_in_a_pool: bool) -> MemoryHypervisor {
        let hv = MemoryHypervisor::new();
        let hv =
            if base_in_a_pool { hv.with_storage_pool("img", "/img", true, &[("base.qcow2", "qcow2")]) } else { hv };
        hv.ensure_pool(POOL, "/p").unwrap();
        for (name, backing) in [("a.qcow2", "/img/base.qcow2"), ("b.qcow2", "/p/a.qcow2")] {
            let v = VolumeSpec {
                pool: POOL.into(),
                name: name.into(),
                backing: backing.into(),
                backing_format: Default::default(),
                size: None,
            };
            hv.create_volume(&v).unwrap();
        }
        hv.define_domain(
            "<domain type='qemu'><name>d</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>\
             <source file='/p/b.qcow2'/><target dev='vda'/></disk></devices></domain>",
        )
        .unwrap();
        hv
    }

    /// With the machine, the chain comes from its image headers, with no libvirt call; without
    /// it, from libvirt's pools, each path looked up once for its backing file and its key:
    /// a base image no pool holds ends the chain unknown there.
    #[test]
    fn chains_from_the_machine_or_from_libvirts_pools() {
        let chain = ["/p/a.qcow2".to_owned(), "/img/base.qcow2".to_owned()];
        let hv = two_layers(false);
        hv.clear_calls();
        let o = Host::from(&hv).observe().unwrap();
        assert_eq!((o.domains["d"].backing[0].as_slice(), o.domains["d"].chains_known), (&chain[..], true));
        assert_eq!(hv.calls(), ["observe"]);
        assert_eq!(o.files["/p/a.qcow2"].key.as_deref(), Some("/p/a.qcow2"), "the pool's listing");
        assert_eq!(o.files["/img/base.qcow2"].key, None);

        let o = Host::libvirt(&hv).observe().unwrap();
        assert_eq!((o.domains["d"].backing[0].as_slice(), o.domains["d"].chains_known), (&chain[..], false));
        let hv = two_layers(true);
        hv.clear_calls();
        let o = Host::libvirt(&hv).observe().unwrap();
        assert_eq!((o.domains["d"].backing[0].as_slice(), o.domains["d"].chains_known), (&chain[..], true));
        assert_eq!(o.files["/img/base.qcow2"].key.as_deref(), Some("/img/base.qcow2"), "looked up");
        assert_eq!(
            hv.calls(),
            ["observe", "volume_by_path /p/b.qcow2", "volume_by_path /p/a.qcow2", "volume_by_path /img/base.qcow2"]
        );
    }
}
