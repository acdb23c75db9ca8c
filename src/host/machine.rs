//! The machine that runs a libvirt host, as topo reads and changes it beside libvirt: its
//! network devices (bridges and taps in sysfs), the taps' queueing disciplines (`tc`, netem),
//! the running kernel's features (its build config), its IPv4 routes, and its files as QEMU
//! opens them (the backing file an image's header names, a file's identity).
//!
//! [`Machine`] is one host's machine, free of libvirt types (a later issue implements it over
//! ssh for remote hosts); [`LocalMachine`] is the machine topo runs on, which is the libvirt
//! host's when the URI names no other host and a real driver
//! ([`crate::host::hypervisor::libvirt::files_are_local`]). Reads are best effort: `None` is
//! "cannot be told here" (another network namespace, no `tc`), never a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::host::kernel::{KernelError, KernelSupport};
use crate::host::observed::{HostRoute, NicLink, Observed};
use crate::host::tc::{TapShaper, Tc, TcError};
use crate::lab::impair::{Netem, TapQdiscs};
use crate::lab::model::MacAddr;

/// The facts and actions of the machine that runs a host.
pub trait Machine: Send + Sync {
    /// The names of its network devices (`/sys/class/net`); `None` when they cannot be listed.
    fn interfaces(&self) -> Option<BTreeSet<String>>;
    /// Where each tap of `taps` (a NIC's MAC, the tap's device name) is plugged, with its
    /// egress qdiscs from `qdiscs` (what [`Machine::qdiscs`] read). `None` when a tap is not a
    /// device here (topo runs in another network namespace than the daemon) or has a name that
    /// is not a plain device name: then nothing is known, rather than every NIC wrongly taken
    /// as cut.
    fn tap_links(
        &self,
        taps: &[(MacAddr, String)],
        qdiscs: Option<&BTreeMap<String, TapQdiscs>>,
    ) -> Option<Vec<NicLink>>;
    /// The MACs bridge `bridge` holds as its own: its address and each port's. The kernel
    /// keeps each as a local forwarding entry (net/bridge/br_fdb.c) and passes frames to it up
    /// to the host instead of forwarding them (net/bridge/br_input.c). `None` when `bridge` is
    /// not a bridge device here.
    fn bridge_macs(&self, bridge: &str) -> Option<BTreeSet<MacAddr>>;
    /// The egress qdiscs of every device, in one read (`tc -j qdisc show`).
    ///
    /// # Errors
    /// `tc` cannot run, fails, or prints what cannot be read.
    fn qdiscs(&self) -> Result<BTreeMap<String, TapQdiscs>, TcError>;
    /// Gives tap `tap` the netem settings `netem` (`None`, or settings that do nothing, remove
    /// topo's netem): in place of libvirt's leaf under its htb class when a `<bandwidth
    /// inbound>` is in effect, else as the tap's root qdisc ([`crate::lab::impair::tc_commands`]).
    ///
    /// # Errors
    /// `tc` cannot run or refuses a command (a kernel without `sch_netem`).
    fn set_netem(&self, tap: &str, netem: Option<&Netem>) -> Result<(), TcError>;
    /// What the running kernel was built with for link impairment; `None` when no config can
    /// be read.
    ///
    /// # Errors
    /// The config file is there but damaged (`KernelError::Corrupt`).
    fn kernel(&self) -> Result<Option<KernelSupport>, KernelError>;
    /// The IPv4 routes of the main table (what libvirt's `networkCheckRouteCollision` reads,
    /// `/proc/net/route`); `None` when they cannot be read.
    fn routes(&self) -> Option<Vec<HostRoute>>;
    /// The file the image at `path` (an absolute path) opens under it, from its header as
    /// QEMU reads it ([`crate::host::image::read_header`], bounded).
    fn image_backing(&self, path: &str) -> ImageBacking;
    /// What identifies the file at `path` (symlinks followed, as QEMU opens it): `(st_dev,
    /// st_ino)` from `stat(2)`; `None` when it cannot be read.
    fn file_id(&self, path: &str) -> Option<(u64, u64)>;
}

/// What the machine tells of the file an image opens under it ([`Machine::image_backing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageBacking {
    /// None: the header names no backing file, or no file is at the path (nothing opens
    /// under an image that is not there: a domain whose base image was removed).
    None,
    /// The backing file, as an absolute path (a relative name is taken from the image's
    /// folder, as QEMU does).
    File(String),
    /// The header names a backing file that is no plain path (a protocol or `json:` name):
    /// what it opens cannot be told.
    Unknown,
    /// The image cannot be read here (topo runs as a user that may not read it): ask
    /// libvirt's pools.
    Unreadable,
}

/// Where the kernel lists network devices (sysfs).
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Where the kernel lists the IPv4 routes of the main table.
const PROC_NET_ROUTE: &str = "/proc/net/route";

/// The machine topo runs on: sysfs, `/proc`, iproute2's `tc` from `PATH`.
pub struct LocalMachine {
    /// `/sys/class/net` (another folder in tests).
    sys: PathBuf,
    tc: Box<dyn TapShaper>,
}

impl std::fmt::Debug for LocalMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMachine").field("sys", &self.sys).finish()
    }
}

impl Default for LocalMachine {
    fn default() -> Self {
        Self { sys: PathBuf::from(SYS_CLASS_NET), tc: Box::new(Tc) }
    }
}

impl LocalMachine {
    /// This machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// This machine with its network devices read from `sys` instead of `/sys/class/net`.
    pub fn with_sys(sys: &Path) -> Self {
        Self { sys: sys.to_owned(), tc: Box::new(Tc) }
    }
}

/// A device name that names one entry of a folder (no `/`, not `.` or `..`).
fn plain(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

impl Machine for LocalMachine {
    fn interfaces(&self) -> Option<BTreeSet<String>> {
        let dir = std::fs::read_dir(&self.sys).ok()?;
        Some(dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
    }

    fn tap_links(
        &self,
        taps: &[(MacAddr, String)],
        qdiscs: Option<&BTreeMap<String, TapQdiscs>>,
    ) -> Option<Vec<NicLink>> {
        taps.iter()
            .map(|(mac, tap)| {
                let dev = self.sys.join(tap);
                if !plain(tap) || !dev.exists() {
                    return None;
                }
                // `TAP/master` is a symlink to the bridge the tap is a port of.
                let bridge = std::fs::read_link(dev.join("master"))
                    .ok()
                    .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()));
                let qdiscs = qdiscs.and_then(|q| q.get(tap).cloned());
                Some(NicLink { mac: *mac, tap: tap.clone(), bridge, qdiscs })
            })
            .collect()
    }

    fn bridge_macs(&self, bridge: &str) -> Option<BTreeSet<MacAddr>> {
        if !plain(bridge) {
            return None;
        }
        let addr = |dev: &str| std::fs::read_to_string(self.sys.join(dev).join("address")).ok()?.trim().parse().ok();
        let ports = std::fs::read_dir(self.sys.join(bridge).join("brif")).ok()?;
        let mut out: BTreeSet<MacAddr> = addr(bridge).into_iter().collect();
        for p in ports.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if plain(&p) {
                out.extend(addr(&p));
            }
        }
        Some(out)
    }

    fn qdiscs(&self) -> Result<BTreeMap<String, TapQdiscs>, TcError> {
        self.tc.show_all()
    }

    fn set_netem(&self, tap: &str, netem: Option<&Netem>) -> Result<(), TcError> {
        let now = self.tc.show(tap)?;
        for cmd in crate::lab::impair::tc_commands(tap, &now, netem) {
            self.tc.run(&cmd)?;
        }
        Ok(())
    }

    fn kernel(&self) -> Result<Option<KernelSupport>, KernelError> {
        KernelSupport::read_local()
    }

    fn routes(&self) -> Option<Vec<HostRoute>> {
        std::fs::read_to_string(PROC_NET_ROUTE).ok().map(|t| HostRoute::parse_proc_net_route(&t))
    }

    fn image_backing(&self, path: &str) -> ImageBacking {
        let p = Path::new(path);
        match crate::host::image::read_header(p) {
            Ok(h) => match (&h.backing_file, h.backing_path(p)) {
                (None, _) => ImageBacking::None,
                (Some(_), Some(b)) => ImageBacking::File(b.display().to_string()),
                (Some(_), None) => ImageBacking::Unknown,
            },
            // `metadata` follows links, as QEMU's open.
            Err(_) if std::fs::metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {
                ImageBacking::None
            }
            Err(_) => ImageBacking::Unreadable,
        }
    }

    fn file_id(&self, path: &str) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
}

/// Adds to `out` (what libvirt showed) what machine `m` says of the host: its network
/// devices (`Observed::host_interfaces`), its kernel's features (`Observed::kernel`: the
/// kernel the taps live in; network namespaces share it), its routes (`Observed::host_routes`)
/// and the MACs the bridge of each active network holds as its own (`Observed::bridge_macs`,
/// from the network's live bridge). Nothing when its devices cannot be listed.
///
/// # Errors
/// The kernel's config file is there but damaged ([`Machine::kernel`]).
pub fn observe(m: &dyn Machine, out: &mut Observed) -> Result<(), KernelError> {
    out.host_interfaces = m.interfaces();
    if out.host_interfaces.is_none() {
        return Ok(());
    }
    out.kernel = m.kernel()?;
    out.host_routes = m.routes();
    for b in out.networks.values().filter(|n| n.active).filter_map(|n| n.bridge_now().map(str::to_owned)) {
        if let Some(macs) = m.bridge_macs(&b) {
            out.bridge_macs.insert(b, macs);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TAP/master` names the bridge; no `master` is no bridge; a tap that is not a device
    /// here (another network namespace) makes the whole answer unknown.
    #[test]
    fn where_taps_are_plugged() {
        let sys = tempfile::tempdir().unwrap();
        for d in ["virbr1", "vnet0", "vnet1"] {
            std::fs::create_dir(sys.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("../virbr1", sys.path().join("vnet0/master")).unwrap();
        let m = LocalMachine::with_sys(sys.path());
        let m0: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let m1: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let links = m.tap_links(&[(m0, "vnet0".into()), (m1, "vnet1".into())], None).unwrap();
        assert_eq!(links[0].bridge.as_deref(), Some("virbr1"));
        assert_eq!(links[1].bridge, None);
        assert_eq!(links[1].tap, "vnet1");
        assert_eq!(m.tap_links(&[(m0, "vnet0".into()), (m1, "vnet9".into())], None), None);
        assert_eq!(m.tap_links(&[(m0, "../vnet0".into())], None), None);
        assert_eq!(m.tap_links(&[], None), Some(vec![]));
        assert!(m.interfaces().is_some_and(|i| i.contains("virbr1") && i.len() == 3));
    }

    /// What QEMU opens under an image, from its header: the backing file (a relative name
    /// from the image's folder); none under a plain file or a missing one; a protocol name
    /// cannot be told; what is no image file cannot be read. A file is the same through a
    /// symlink.
    #[test]
    fn what_an_image_opens_under_it() {
        let qcow2 = |backing: &str| crate::host::image::tests::qcow2(3, 1 << 20, Some(backing), 0);
        let d = tempfile::tempdir().unwrap();
        let at = |n: &str| d.path().join(n).display().to_string();
        std::fs::write(at("base.raw"), [0u8; 512]).unwrap();
        std::fs::write(at("a.qcow2"), qcow2("base.raw")).unwrap();
        std::fs::write(at("n.qcow2"), qcow2("nbd://h/x")).unwrap();
        std::os::unix::fs::symlink(at("a.qcow2"), at("l.qcow2")).unwrap();
        let m = LocalMachine::new();
        assert_eq!(m.image_backing(&at("a.qcow2")), ImageBacking::File(at("base.raw")));
        assert_eq!(m.image_backing(&at("base.raw")), ImageBacking::None);
        assert_eq!(m.image_backing(&at("gone.qcow2")), ImageBacking::None);
        assert_eq!(m.image_backing(&at("n.qcow2")), ImageBacking::Unknown);
        assert_eq!(m.image_backing(&at("")), ImageBacking::Unreadable, "a folder");
        assert_eq!(m.file_id(&at("l.qcow2")), m.file_id(&at("a.qcow2")));
        assert_ne!(m.file_id(&at("base.raw")), m.file_id(&at("a.qcow2")));
        assert_eq!(m.file_id(&at("gone.qcow2")), None);
    }

    /// A bridge's own MACs: its address and each port's; not a bridge here is unknown.
    #[test]
    fn macs_a_bridge_holds_as_its_own() {
        let sys = tempfile::tempdir().unwrap();
        let dev = |name: &str, mac: &str| {
            std::fs::create_dir_all(sys.path().join(name)).unwrap();
            std::fs::write(sys.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        };
        dev("br0", "02:00:00:00:00:01");
        dev("eth0", "02:00:00:00:00:02");
        dev("vnet0", "fe:54:00:00:00:03");
        std::fs::create_dir_all(sys.path().join("br0/brif/eth0")).unwrap();
        std::fs::create_dir_all(sys.path().join("br0/brif/vnet0")).unwrap();
        let m = LocalMachine::with_sys(sys.path());
        let got: Vec<String> = m.bridge_macs("br0").unwrap().iter().map(|m| m.to_string()).collect();
        assert_eq!(got, ["02:00:00:00:00:01", "02:00:00:00:00:02", "fe:54:00:00:00:03"]);
        assert_eq!(m.bridge_macs("eth0"), None, "not a bridge");
        assert_eq!(m.bridge_macs("../br0"), None);
    }
}
