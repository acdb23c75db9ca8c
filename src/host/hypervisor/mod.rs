//! The narrow boundary to libvirt: only the calls topo makes, as the `Hypervisor` trait. The
//! machine that runs the host is the other boundary (`crate::host::machine`); this one knows
//! nothing of it.
//!
//! Two implementations: `libvirt::LibvirtHypervisor` (the `virt` crate, the product) and
//! `memory::MemoryHypervisor` (a strict in-memory double that rejects what libvirt rejects).

pub mod libvirt;
/// The in-memory double: tests only (`cfg(test)` or the `testing` feature), never in the
/// release binary.
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use serde::{Deserialize, Serialize};

use crate::host::observed::{DomainState, Lease, Observed};
use crate::lab::impair::Rate;
use crate::lab::model::MacAddr;

/// A libvirt call failed. `code` is libvirt's error code when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
#[error("{op} {object}: {message}")]
#[diagnostic(code(topo::host::hypervisor))]
pub struct HvError {
    /// What topo was doing: `define network`, `start domain`, ...
    pub op: String,
    /// The libvirt name of the object (or the URI for connection errors).
    pub object: String,
    pub message: String,
    pub kind: HvErrorKind,
    #[help]
    pub hint: Option<String>,
}

/// What kind of failure an [`HvError`] is: the decisions topo makes on a failed call
/// (done already, gone already, retry otherwise) match on it, never on the message.
/// `LibvirtHypervisor` maps it from libvirt's error code (virterror.h `virErrorNumber`:
/// `VIR_ERR_NO_DOMAIN`, `VIR_ERR_NO_NETWORK`, `VIR_ERR_NO_STORAGE_VOL`, ... are `NotFound`;
/// `VIR_ERR_NO_SUPPORT` is `Unsupported`; `VIR_ERR_OPERATION_INVALID` is `InvalidState`),
/// and where libvirt uses one code for several cases, from the object's state after the
/// failure (a failed start of a domain that runs is `AlreadyActive`); the memory double
/// gives the kind libvirt's would get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvErrorKind {
    /// Could not connect to libvirt.
    Connect,
    /// The object does not exist.
    NotFound,
    /// An object of that name (or bridge, uuid...) exists already.
    Exists,
    /// The object is already active or running (starting it again is refused).
    AlreadyActive,
    /// The object is not active or running (stopping it is refused).
    NotActive,
    /// The operation is not valid in the object's current state (other than the two above).
    InvalidState,
    /// libvirt rejected the XML.
    InvalidXml,
    /// The driver does not support this call or flag (test driver, old libvirt).
    Unsupported,
    /// Anything else (libvirt's internal and system errors, a tool that failed).
    Other,
}

/// Add or remove a DHCP host entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostOp {
    Add,
    Delete,
}

/// A qcow2 copy-on-write volume to create in a storage pool, on a backing image that is
/// never written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The storage pool, by name.
    pub pool: String,
    /// The volume's name in the pool (its file name).
    pub name: String,
    /// Path of the backing image on the libvirt host.
    pub backing: String,
    /// The backing image's format as the lab file declares it (never probed). Saved plans
    /// from before the field default to qcow2.
    #[serde(default)]
    pub backing_format: crate::lab::model::ImageFormat,
    /// Virtual size in bytes; `None` keeps the backing image's size.
    pub size: Option<u64>,
}

/// What libvirt's storage API says about each of `paths` (absolute paths on the libvirt
/// host), for [`crate::host::observed::Observed::paths`]: the pools are listed, each active pool
/// whose folder holds one of the paths is refreshed (its volume list is otherwise as old as
/// its last refresh), then each path is looked up ([`Hypervisor::volume_by_path`]).
/// Reads only; a refresh rescans a folder and changes nothing in it. A driver without
/// storage pools (`Unsupported`) leaves every path unchecked.
///
/// # Errors
/// A libvirt call that fails for another reason than "not found" or "unsupported".
pub fn observe_paths<'a>(
    hv: &dyn Hypervisor,
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::BTreeMap<String, crate::host::observed::PathFact>, HvError> {
    use crate::host::observed::PathFact;
    let paths: std::collections::BTreeSet<&str> = paths.into_iter().collect();
    let mut out = std::collections::BTreeMap::new();
    if paths.is_empty() {
        return Ok(out);
    }
    let folder = |p: &str| p.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/" } else { d }).unwrap_or("").to_owned();
    let pools = match hv.storage_pools() {
        Ok(p) => p,
        Err(e) if e.kind == HvErrorKind::Unsupported => {
            out.extend(paths.iter().map(|p| ((*p).to_owned(), PathFact::Unchecked { inactive_pool: None })));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let over = |p: &str, active: bool| {
        let dir = folder(p);
        pools.iter().find(|pool| {
            pool.active == active
                && pool.path.as_deref().map(|d| if d.is_empty() { "/" } else { d }) == Some(dir.as_str())
        })
    };
    let mut refreshed = std::collections::BTreeSet::new();
    for p in &paths {
        if let Some(pool) = over(p, true)
            && refreshed.insert(pool.name.clone())
        {
            match hv.refresh_pool(&pool.name) {
                // Stopped or removed since the listing: its lookups below say so.
                Err(e) if matches!(e.kind, HvErrorKind::NotFound | HvErrorKind::InvalidState) => {}
                r => r?,
            }
        }
    }
    for p in paths {
        let fact = match hv.volume_by_path(p) {
            Ok(v) => PathFact::Volume { pool: v.pool, format: v.format, capacity: v.capacity },
            Err(e) if e.kind == HvErrorKind::NotFound => match over(p, true) {
                Some(pool) => PathFact::Missing { pool: pool.name.clone() },
                None => PathFact::Unchecked { inactive_pool: over(p, false).map(|pool| pool.name.clone()) },
            },
            Err(e) if e.kind == HvErrorKind::Unsupported => PathFact::Unchecked { inactive_pool: None },
            Err(e) => return Err(e),
        };
        out.insert(p.to_owned(), fact);
    }
    Ok(out)
}

/// Reads back, for the plan's line diff, the cloud-init seed of each lab VM whose domain
/// uses another seed volume than the one the lab file asks for, into
/// [`ObservedDomain::seed`](crate::host::observed::ObservedDomain::seed).
///
/// A seed volume's name carries a hash of its content ([`crate::guest::Seed::volume_name`]),
/// so where the names are the same the files are too and nothing is downloaded: a plan of a
/// converged lab downloads no seed, and an edit downloads only the seeds it changes (about
/// 1 MiB each). Domains that are not lab VMs, and VMs with cloud-init off, are skipped (their
/// plans show no seed files). Reads only; best effort: a seed that cannot be downloaded or
/// read stays `None`, and the plan then shows the change by the volume names alone.
pub fn read_changed_seeds(hv: &dyn Hypervisor, lab: &crate::lab::model::Lab, observed: &mut Observed) {
    let Some(pool) = observed.pool.as_ref().filter(|p| p.active).map(|p| p.name.clone()) else { return };
    for vm in lab.vms.values() {
        let Ok(Some(seed)) = crate::guest::Seed::of(lab, vm) else { continue };
        let want = seed.volume_name(lab, vm);
        let Some(d) = observed.domains.get_mut(vm.libvirt_name.as_str()) else { continue };
        // The domain's seed disk, when it is a volume the pool lists.
        let Some(have) = observed
            .volumes
            .values()
            .find(|v| crate::guest::is_seed_volume(&v.name) && d.disks.contains(&v.path))
            .map(|v| v.name.clone())
        else {
            continue;
        };
        if want != have {
            d.seed = hv.download_volume(&pool, &have).ok().and_then(|b| crate::guest::read_fat_files(&b).ok());
        }
    }
}

/// A storage pool as `virConnectListAllStoragePools` and its XML show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePoolInfo {
    pub name: String,
    /// Whether the pool is started: libvirt looks volumes up in active pools only.
    pub active: bool,
    /// The pool's folder (`<target><path>`, no trailing `/`); `None` for pool types without one.
    pub path: Option<String>,
}

/// A storage volume found by its path (`virStorageVolLookupByPath`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageVolumeInfo {
    /// The pool that holds it.
    pub pool: String,
    pub name: String,
    /// `<target><format type>` of the volume's XML: the format libvirt's pool backend found
    /// (`qcow2`, `raw`, `iso`, ...); `None` when the XML names none.
    pub format: Option<String>,
    /// `<capacity>` in bytes: the virtual size the backend read from the format's header (a
    /// raw file's length); `None` when the XML gives none in bytes.
    pub capacity: Option<u64>,
    /// `<backingStore><path>` of the volume's XML: the backing file the pool's backend read
    /// from the image's header (`virsh vol-dumpxml`); `None` for none.
    pub backing: Option<String>,
    /// `<key>` of the volume's XML (what `virStorageVolGetKey` returns): what identifies the
    /// volume's file across paths ([`crate::host::observed::FileId::key`]).
    pub key: Option<String>,
}

/// A snapshot of a domain as its XML shows it (`virsh snapshot-dumpxml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// `<description>`: what tells topo's own lab snapshots
    /// ([`crate::lab::ownership::snapshot_description`]) from any other.
    pub description: Option<String>,
    /// `<creationTime>`: seconds since the Unix epoch.
    pub created: i64,
    /// `<state>`: the domain's state when it was taken (`running`, `paused`, `shutoff`,
    /// `disk-snapshot`, ...); a `running` one holds the guest's memory.
    pub state: String,
}

/// How often [`Hypervisor::wait_until`] looks without events (the memory double).
pub const WAIT_LOOK: std::time::Duration = std::time::Duration::from_millis(200);

/// Every libvirt call topo uses, and nothing else: each method is one libvirt call or a short
/// sequence of them on one object, with the kind of a failure from libvirt's error code
/// ([`HvErrorKind`]). What the machine that runs the host shows or does (bridges, taps, `tc`,
/// the kernel, routes) is [`crate::host::machine::Machine`]'s; [`crate::host::Host`] joins the
/// two. Implementations must be usable from several threads.
pub trait Hypervisor: Send + Sync {
    /// The connection URI (for messages).
    fn uri(&self) -> String;
    /// The host name of the machine the connection reaches, as its daemon reports it
    /// (`virConnectGetHostname`): with [`Hypervisor::uri`], what locks key on
    /// (`apply::lock::HostId`).
    fn hostname(&self) -> Result<String, HvError>;
    /// What libvirt shows of the host, in one pass: every network and domain (persistent
    /// config for defined objects, live state flags, the live restart-bound settings of
    /// running domains and each running NIC's tap, `ObservedDomain::taps`, and the disks and
    /// backing chains its live XML lists, `ObservedDomain::live_disks`), the overlay pool
    /// (by name, `ownership::OVERLAY_POOL`) and its volumes with their keys
    /// (`Observed::files`). Nothing of the machine that runs the host, and no chain libvirt
    /// does not list: [`crate::host::Host::observe`] completes the chains and the files'
    /// identities and adds the machine's facts.
    fn observe_libvirt(&self) -> Result<Observed, HvError>;

    fn define_network(&self, xml: &str) -> Result<(), HvError>;
    fn start_network(&self, name: &str) -> Result<(), HvError>;
    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<(), HvError>;
    /// `net-destroy`: stops an active network (no-op error kind InvalidState if inactive).
    fn stop_network(&self, name: &str) -> Result<(), HvError>;
    fn undefine_network(&self, name: &str) -> Result<(), HvError>;
    /// The network's persistent config as libvirt dumps it (`virsh net-dumpxml --inactive`:
    /// UUID, bridge, MAC and DHCP hosts included), or its live XML when it is transient: what
    /// `define_network` takes to bring it back as it was. NotFound when there is none.
    fn network_config_xml(&self, name: &str) -> Result<String, HvError>;
    /// Removes topo's owner tag (`<metadata>/<owner>` in `OWNER_NS`) from the network's
    /// persistent config, changing nothing else; done when there is none. NotFound when the
    /// network does not exist.
    fn release_network(&self, name: &str) -> Result<(), HvError>;
    /// Adds or deletes one `<host mac= ip= name=/>` in the network's first IPv4 `<dhcp>`,
    /// live (if active) and in the persistent config.
    fn update_dhcp_host(&self, network: &str, op: HostOp, host_xml: &str) -> Result<(), HvError>;
    fn dhcp_leases(&self, network: &str) -> Result<Vec<Lease>, HvError>;

    fn define_domain(&self, xml: &str) -> Result<(), HvError>;
    fn start_domain(&self, name: &str) -> Result<(), HvError>;
    /// Resumes a paused domain.
    fn resume_domain(&self, name: &str) -> Result<(), HvError>;
    /// Pauses a running domain (`virDomainSuspend`, `virsh suspend`): its CPUs stop, its
    /// memory and devices stay. NotActive when it is not running.
    fn suspend_domain(&self, name: &str) -> Result<(), HvError>;
    /// Takes an internal snapshot `name` of `domain` with `description`
    /// (virDomainSnapshotCreateXML, no flags): of a running or paused domain, its memory and
    /// every qcow2 disk, inside the qcow2 images. The disks are read from the domain's live
    /// XML: a read-only or non-qcow2 disk (the cloud-init seed) is given `snapshot='no'`,
    /// which libvirt requires (qemu_snapshot.c `qemuSnapshotPrepare`: an internal disk must be
    /// qcow2, "internal snapshot for disk %s unsupported for storage type %s"; a disk left out
    /// must be read-only or empty, else "internal and full system snapshots require all disks
    /// to be selected for snapshot"). A domain with no qcow2 disk cannot hold one (that same
    /// error; Unsupported or Other). Exists when `domain` has a snapshot `name`.
    fn create_snapshot(&self, domain: &str, name: &str, description: &str) -> Result<(), HvError>;
    /// Every snapshot of `domain` (virDomainListAllSnapshots, each one's XML), by name.
    fn snapshots(&self, domain: &str) -> Result<Vec<SnapshotInfo>, HvError>;
    /// Reverts `domain` to its snapshot `name` and leaves it paused
    /// (virDomainRevertToSnapshot with VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED): memory and disks
    /// as they were when it was taken, CPUs stopped. NotFound for no such snapshot.
    fn revert_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError>;
    /// Deletes snapshot `name` of `domain`, its data with its metadata (virDomainSnapshotDelete,
    /// no flags: an internal snapshot is removed from the qcow2 images). NotFound for no such
    /// snapshot.
    fn delete_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError>;
    /// ACPI shutdown request (returns at once).
    fn shutdown_domain(&self, name: &str) -> Result<(), HvError>;
    /// Forced power off.
    fn destroy_domain(&self, name: &str) -> Result<(), HvError>;
    /// `virsh undefine`: removes the domain's persistent config (a running domain stays,
    /// transient, until it stops). libvirt refuses it for an inactive domain that has
    /// snapshot metadata ("cannot delete inactive domain with N snapshots", InvalidState;
    /// qemuDomainUndefineFlags without VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA).
    fn undefine_domain(&self, name: &str) -> Result<(), HvError>;
    /// Removes snapshot `snapshot` of `domain` from libvirt's metadata only
    /// (virDomainSnapshotDelete with VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY, `virsh
    /// snapshot-delete VM S --metadata`): internal snapshot data stays in the qcow2 image and
    /// an external snapshot's files stay, whether the domain runs or not; children are kept
    /// (reparented). NotFound when there is no such snapshot (or domain).
    fn delete_snapshot_metadata(&self, domain: &str, snapshot: &str) -> Result<(), HvError>;
    /// Hot-plugs a device (`<interface>` XML) into the config, and live when running.
    fn attach_device(&self, domain: &str, xml: &str) -> Result<(), HvError>;
    /// Unplugs a device (`<interface>` XML matched by MAC) from the config, and live when running.
    fn detach_device(&self, domain: &str, xml: &str) -> Result<(), HvError>;
    /// The domain's current run state.
    fn domain_state(&self, name: &str) -> Result<DomainState, HvError>;
    /// Waits until `done` (a look at the host: a domain's state, its live NICs) says so,
    /// looking again when a domain changes, and gives up at `until` (`None`: never). Returns
    /// whether `done` said so; an error of `done` ends the wait.
    ///
    /// The libvirt implementation looks again on each of libvirt's domain events (lifecycle,
    /// device removed) and at least every second (`libvirt::events`). The default looks
    /// every [`WAIT_LOOK`].
    fn wait_until(
        &self,
        until: Option<std::time::Instant>,
        done: &mut dyn FnMut() -> Result<bool, HvError>,
    ) -> Result<bool, HvError> {
        loop {
            if done()? {
                return Ok(true);
            }
            let left = until.map(|u| u.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            std::thread::sleep(left.map_or(WAIT_LOOK, |l| l.min(WAIT_LOOK)));
        }
    }
    /// Sets the rate limit (`<bandwidth>` inbound and outbound average, kB/s) of the running
    /// domain's NIC `mac`, live only (virDomainSetInterfaceParameters with
    /// VIR_DOMAIN_AFFECT_LIVE; the persistent config is written by a define). `None` removes
    /// it. libvirt clears the tap's qdiscs and sets its own again, so netem on that tap is
    /// gone afterwards (topo sets it again). NotActive when the domain is not running.
    fn set_bandwidth(&self, domain: &str, mac: MacAddr, rate: Option<Rate>) -> Result<(), HvError>;
    /// The tap of each NIC of running domain `name`, by MAC: `<target dev>` of its live XML
    /// (`virDomainIsActive`, `virDomainGetXMLDesc`), in device order; where netem goes
    /// ([`crate::host::Host::set_netem`]). NotActive when the domain is not running.
    fn domain_taps(&self, name: &str) -> Result<Vec<(MacAddr, String)>, HvError>;

    /// Makes sure storage pool `name` exists (defined as a dir pool over `path` when it
    /// does not), is built, active and autostarted. Looked up by name, active or not.
    fn ensure_pool(&self, name: &str, path: &str) -> Result<(), HvError>;
    /// Creates a qcow2 overlay volume (see [`VolumeSpec`]) through libvirt's storage API.
    fn create_volume(&self, volume: &VolumeSpec) -> Result<(), HvError>;
    /// Deletes volume `name` of pool `pool` (libvirt allows it while a domain uses it).
    /// A missing volume is `NotFound`.
    fn delete_volume(&self, pool: &str, name: &str) -> Result<(), HvError>;
    /// Creates raw volume `name` in pool `pool` holding exactly `data`, uploaded through
    /// libvirt's storage API (virStorageVolUpload over a stream, so it works on remote
    /// URIs). A volume of that name is deleted first (a leftover of an interrupted upload
    /// is never trusted); on a failed upload the new volume is deleted again.
    fn upload_volume(&self, pool: &str, name: &str, data: &[u8]) -> Result<(), HvError>;
    /// Creates volume `to` in pool `pool` as a copy of volume `from` of the same pool
    /// (virStorageVolCreateXMLFrom, raw, of `from`'s capacity; the copy runs inside libvirtd).
    /// A volume named `to` is deleted first. `from` missing is `NotFound`.
    fn clone_volume(&self, pool: &str, from: &str, to: &str) -> Result<(), HvError>;
    /// The whole content of volume `name` of pool `pool` (virStorageVolDownload over a
    /// stream, so it works on remote URIs). For seeds only: a volume larger than 16 MiB is
    /// an error. A missing volume is `NotFound`.
    fn download_volume(&self, pool: &str, name: &str) -> Result<Vec<u8>, HvError>;

    /// Every storage pool on the host (`virConnectListAllStoragePools`, each pool's XML for
    /// its folder).
    fn storage_pools(&self) -> Result<Vec<StoragePoolInfo>, HvError>;
    /// Rescans an active pool's folder (`virStoragePoolRefresh`): a pool lists a file made
    /// or removed since its last refresh only after one. `NotFound` for no such pool.
    fn refresh_pool(&self, name: &str) -> Result<(), HvError>;
    /// The volume at `path` in any active pool (`virStorageVolLookupByPath`). A path that no
    /// active pool holds a volume at is `NotFound` (libvirt's `VIR_ERR_NO_STORAGE_VOL`, "no
    /// storage vol with matching path"), whether or not a file is there. Also how topo
    /// follows a chain and identifies a file where it cannot read the machine's files
    /// ([`crate::host::Host::observe`]).
    fn volume_by_path(&self, path: &str) -> Result<StorageVolumeInfo, HvError>;

    /// IPv4 addresses libvirt reports for a running domain's NICs, from its ARP-table and
    /// guest-agent sources (each tried; a source that fails or is unsupported is skipped).
    /// The fallback evidence where topo cannot probe the bridges itself (remote hosts).
    fn domain_addresses(&self, name: &str) -> Result<Vec<(crate::lab::model::MacAddr, std::net::Ipv4Addr)>, HvError>;
}
