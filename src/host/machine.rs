//! The machine that runs a libvirt host, as topo reads and changes it beside libvirt: its
//! network devices (bridges and taps), the taps' queueing disciplines (`tc`, netem), the
//! running kernel's features (its build config), its IPv4 routes and addresses, its files as
//! QEMU opens them (the backing file an image's header names, a file's identity), and the
//! VXLAN tunnels that stretch a lab network over several hosts ([`crate::host::tunnel`]).
//!
//! [`Machine`] is one host's machine, free of libvirt types. [`LocalMachine`] is the machine
//! topo runs on, which is the libvirt host's when the URI names no other host and a real
//! driver ([`crate::host::hypervisor::libvirt::files_are_local`]): sysfs and `/proc` read
//! directly, commands run as child processes. [`RemoteMachine`] is another host's, reached
//! over ssh as libvirt reaches it ([`SshRunner::from_uri`]): the same facts read by commands,
//! one round trip per method call, into the same parsers. Reads are best effort: `None` is
//! "cannot be told here" (another network namespace, no `tc`, ssh down), never a guess.
//! What a machine lacks of the programs topo runs on it is read too
//! ([`Machine::missing_tools`], [`crate::host::tools`]), so a plan can say so first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;

use crate::host::kernel::{KernelError, KernelSupport};
use crate::host::observed::{HostRoute, NicLink, Observed};
pub use crate::host::runner::MachineError;
use crate::host::runner::{LocalRunner, Runner, SshRunner, run_ok};
use crate::host::tc::{TapShaper, Tc, TcError};
use crate::host::tools::{MachineTools, Tool};
use crate::host::tunnel::{self, ObservedTunnel, TunnelSpec};
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
    /// Where each tap of `taps` (wire ends' taps, [`crate::lab::wire`]) redirects the frames
    /// its guest sends: the device its ingress filter sends them to (`"*"` when that device
    /// is gone), `None` when it has none. `None` overall when it cannot be read.
    fn wire_redirects(&self, taps: &[String]) -> Option<BTreeMap<String, Option<String>>>;
    /// Joins taps `a` and `b` into a wire: each one's received frames go out the other
    /// ([`crate::host::tc::join_script`]). Made anew each time, so it is idempotent.
    ///
    /// # Errors
    /// `tc` cannot run or refuses a command (no such tap, a kernel without `act_mirred`).
    fn join_taps(&self, a: &str, b: &str) -> Result<(), TcError>;
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
    /// The IPv6 routes (`/proc/net/ipv6_route`); `None` when they cannot be read (the
    /// default, for machines that do not say).
    fn routes6(&self) -> Option<Vec<crate::host::observed::HostRoute6>> {
        None
    }
    /// The file the image at `path` (an absolute path) opens under it, from its header as
    /// QEMU reads it ([`crate::host::image::read_header`], bounded).
    fn image_backing(&self, path: &str) -> ImageBacking;
    /// What identifies the file at `path` (symlinks followed, as QEMU opens it): `(st_dev,
    /// st_ino)` from `stat(2)`; `None` when it cannot be read.
    fn file_id(&self, path: &str) -> Option<(u64, u64)>;
    /// Every VXLAN device, with its peers ([`tunnel::read_tunnels`]: `ip -d -j link show type
    /// vxlan` and each device's all-zero `bridge -j fdb` entries, one command).
    ///
    /// # Errors
    /// iproute2 cannot run (not installed: the hint says so) or fails, the host cannot be
    /// reached, or the output cannot be read.
    fn tunnels(&self) -> Result<Vec<ObservedTunnel>, MachineError>;
    /// Makes the tunnel `spec.device` what `spec` wants, idempotently ([`tunnel::ensure_tunnel`]:
    /// created when absent; peers, alias, master, MTU and up state fixed when present; deleted
    /// and made again when its VNI, source or port differ). One read, and one command for all
    /// changes when there are any.
    ///
    /// # Errors
    /// `spec` is refused ([`TunnelSpec::check`]); a command fails (no bridge `spec.bridge`, a
    /// device of that name that is no VXLAN device); iproute2 missing; host unreachable.
    fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<(), MachineError>;
    /// Deletes VXLAN device `device`; an absent device is fine, a device of that name that is
    /// no VXLAN device is left alone (an error).
    ///
    /// # Errors
    /// As [`Machine::ensure_tunnel`].
    fn delete_tunnel(&self, device: &str) -> Result<(), MachineError>;
    /// The machine's own addresses, IPv4 and IPv6 (`ip -j addr show`): is a tunnel's `local`
    /// one of them? `None` when they cannot be read.
    fn addresses(&self) -> Option<BTreeMap<IpAddr, tunnel::HostAddress>>;
    /// The runner of a machine reached by commands (another host over ssh): what an ARP
    /// prober on that machine runs `arping` through. `None` for this machine, whose bridges
    /// topo probes with its own frames.
    fn remote_runner(&self) -> Option<Arc<dyn Runner>> {
        None
    }
    /// The programs topo runs on this machine ([`Tool::LOCAL`] here, [`Tool::REMOTE`] on a
    /// machine reached by commands) that its `PATH` does not find; `None` when that cannot
    /// be told (ssh down).
    fn missing_tools(&self) -> Option<BTreeSet<Tool>>;
    /// Whether this is another host's machine, reached by commands: then topo reads it with
    /// `ip` and coreutils, proves its NICs with `arping` and holds its lock with `flock`
    /// there. By default, whether it has a [`Machine::remote_runner`]; a double may play one
    /// without.
    fn is_remote(&self) -> bool {
        self.remote_runner().is_some()
    }
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

/// The machine topo runs on: sysfs, `/proc`, iproute2's `tc`, `ip` and `bridge` from `PATH`.
pub struct LocalMachine {
    /// `/sys/class/net` (another folder in tests).
    sys: PathBuf,
    tc: Box<dyn TapShaper>,
    /// Runs `ip` and `bridge` (tunnels, addresses).
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for LocalMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMachine").field("sys", &self.sys).finish()
    }
}

impl Default for LocalMachine {
    fn default() -> Self {
        Self { sys: PathBuf::from(SYS_CLASS_NET), tc: Box::new(Tc::default()), runner: Arc::new(LocalRunner) }
    }
}

impl LocalMachine {
    /// This machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// This machine with its network devices read from `sys` instead of `/sys/class/net`.
    pub fn with_sys(sys: &Path) -> Self {
        Self { sys: sys.to_owned(), ..Self::default() }
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

    fn wire_redirects(&self, taps: &[String]) -> Option<BTreeMap<String, Option<String>>> {
        self.tc.redirects(taps).ok()
    }

    fn join_taps(&self, a: &str, b: &str) -> Result<(), TcError> {
        self.tc.join(a, b)
    }

    fn set_netem(&self, tap: &str, netem: Option<&Netem>) -> Result<(), TcError> {
        let now = self.tc.show(tap)?;
        self.tc.run_all(&crate::lab::impair::tc_commands(tap, &now, netem))
    }

    fn kernel(&self) -> Result<Option<KernelSupport>, KernelError> {
        KernelSupport::read_local()
    }

    fn routes(&self) -> Option<Vec<HostRoute>> {
        std::fs::read_to_string(PROC_NET_ROUTE).ok().map(|t| HostRoute::parse_proc_net_route(&t))
    }

    fn routes6(&self) -> Option<Vec<crate::host::observed::HostRoute6>> {
        std::fs::read_to_string("/proc/net/ipv6_route")
            .ok()
            .map(|t| crate::host::observed::HostRoute6::parse_proc_net_ipv6_route(&t))
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

    fn tunnels(&self) -> Result<Vec<ObservedTunnel>, MachineError> {
        tunnel::read_tunnels(self.runner.as_ref())
    }

    fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<(), MachineError> {
        tunnel::ensure_tunnel(self.runner.as_ref(), spec)
    }

    fn delete_tunnel(&self, device: &str) -> Result<(), MachineError> {
        tunnel::delete_tunnel(self.runner.as_ref(), device)
    }

    fn addresses(&self) -> Option<BTreeMap<IpAddr, tunnel::HostAddress>> {
        tunnel::read_addresses(self.runner.as_ref())
    }

    /// `PATH` searched here, with no process ([`crate::host::tools::missing_on_path`]).
    fn missing_tools(&self) -> Option<BTreeSet<Tool>> {
        Some(crate::host::tools::missing_on_path(std::env::var_os("PATH").as_deref(), &Tool::LOCAL))
    }
}

/// Another host's machine, through a [`Runner`] (ssh: [`RemoteMachine::ssh`]): each method
/// one command (an `sh -c` script where it needs several), its output read by the parsers
/// [`LocalMachine`] uses. Network devices are read with `ip -j link show` (netlink: right in
/// whatever network namespace the remote shell runs in), not sysfs.
pub struct RemoteMachine {
    runner: Arc<dyn Runner>,
    tc: Tc,
    /// The answer of [`Machine::missing_tools`], once one came: the programs a host has do
    /// not change within a run, and a run observes its hosts several times.
    missing: std::sync::OnceLock<BTreeSet<Tool>>,
}

impl std::fmt::Debug for RemoteMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteMachine").field("on", &self.runner.describe()).finish()
    }
}

/// One device of `ip [-d] -j link show` (the fields read).
#[derive(Deserialize)]
struct JsonLink {
    ifname: String,
    master: Option<String>,
    address: Option<String>,
    linkinfo: Option<JsonKind>,
}

#[derive(Deserialize)]
struct JsonKind {
    info_kind: Option<String>,
}

fn parse_links(json: &str) -> Option<Vec<JsonLink>> {
    serde_json::from_str(json.trim()).ok()
}

/// Prints bridge `$1` (`ip -d -j link show dev`), a line `@ports`, then its ports
/// (`ip -j link show master`).
const BRIDGE_SCRIPT: &str = "ip -d -j link show dev \"$1\" && printf '\\n@ports\\n' && ip -j link show master \"$1\"";

/// Prints `gz` and `/proc/config.gz` in base64, else `file PATH` and `/boot/config-RELEASE`,
/// else `none`.
const KERNEL_SCRIPT: &str = "if [ -r /proc/config.gz ]; then echo gz; base64 /proc/config.gz
elif f=/boot/config-$(uname -r) && [ -r \"$f\" ]; then echo \"file $f\"; cat \"$f\"
else echo none; fi";

/// For file `$1` (links followed): `missing`, `unreadable` (not a readable regular file), or
/// `size N` and its first `$2` bytes in base64.
const HEAD_SCRIPT: &str = "if [ ! -e \"$1\" ]; then echo missing
elif [ ! -f \"$1\" ] || [ ! -r \"$1\" ]; then echo unreadable
else echo \"size $(stat -L -c %s \"$1\")\" && head -c \"$2\" \"$1\" | base64 -w0; fi";

/// Prints `$3` bytes of file `$1` from byte offset `$2`, in base64.
const RANGE_SCRIPT: &str = "tail -c +$(($2 + 1)) \"$1\" | head -c \"$3\" | base64 -w0";

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

impl RemoteMachine {
    /// The machine of the libvirt host at `uri` when topo reaches it over ssh (a `qemu+ssh://`
    /// URI, [`SshRunner::from_uri`]); `None` for any other URI.
    pub fn ssh(uri: &str) -> Option<Self> {
        SshRunner::from_uri(uri).map(|r| Self::over(Arc::new(r)))
    }

    /// The machine `runner` runs commands on (a [`LocalRunner`] in a test namespace, a fake).
    pub fn over(runner: Arc<dyn Runner>) -> Self {
        Self { tc: Tc::over(runner.clone()), runner, missing: std::sync::OnceLock::new() }
    }

    /// The runner (to share it: an ARP prober on the same host).
    pub fn runner(&self) -> Arc<dyn Runner> {
        self.runner.clone()
    }

    /// stdout of `argv` when it succeeds; `None` otherwise (reads are best effort).
    fn read(&self, program: &str, argv: &[&str]) -> Option<String> {
        match run_ok(self.runner.as_ref(), program, argv, None) {
            Ok(o) => Some(o.text()),
            Err(e) => {
                tracing::debug!(error = %e, "remote read");
                None
            }
        }
    }

    fn links(&self) -> Option<Vec<JsonLink>> {
        parse_links(&self.read("ip", &["ip", "-j", "link", "show"])?)
    }
}

impl Machine for RemoteMachine {
    fn remote_runner(&self) -> Option<Arc<dyn Runner>> {
        Some(self.runner.clone())
    }

    fn interfaces(&self) -> Option<BTreeSet<String>> {
        Some(self.links()?.into_iter().map(|l| l.ifname).collect())
    }

    fn tap_links(
        &self,
        taps: &[(MacAddr, String)],
        qdiscs: Option<&BTreeMap<String, TapQdiscs>>,
    ) -> Option<Vec<NicLink>> {
        if taps.is_empty() {
            return Some(Vec::new());
        }
        let links = self.links()?;
        taps.iter()
            .map(|(mac, tap)| {
                let l = links.iter().find(|l| plain(tap) && l.ifname == *tap)?;
                let qdiscs = qdiscs.and_then(|q| q.get(tap).cloned());
                Some(NicLink { mac: *mac, tap: tap.clone(), bridge: l.master.clone(), qdiscs })
            })
            .collect()
    }

    fn bridge_macs(&self, bridge: &str) -> Option<BTreeSet<MacAddr>> {
        if !plain(bridge) {
            return None;
        }
        let text = self.read("ip", &["sh", "-c", BRIDGE_SCRIPT, "sh", bridge])?;
        let (own, ports) = text.split_once("\n@ports\n")?;
        let own = parse_links(own)?;
        let me = own.first().filter(|l| l.linkinfo.as_ref().and_then(|k| k.info_kind.as_deref()) == Some("bridge"))?;
        let mac = |l: &JsonLink| l.address.as_deref().and_then(|a| a.parse::<MacAddr>().ok());
        let mut out: BTreeSet<MacAddr> = mac(me).into_iter().collect();
        out.extend(parse_links(ports)?.iter().filter_map(mac));
        Some(out)
    }

    fn qdiscs(&self) -> Result<BTreeMap<String, TapQdiscs>, TcError> {
        self.tc.show_all()
    }

    fn wire_redirects(&self, taps: &[String]) -> Option<BTreeMap<String, Option<String>>> {
        self.tc.redirects(taps).ok()
    }

    fn join_taps(&self, a: &str, b: &str) -> Result<(), TcError> {
        self.tc.join(a, b)
    }

    fn set_netem(&self, tap: &str, netem: Option<&Netem>) -> Result<(), TcError> {
        let now = self.tc.show(tap)?;
        self.tc.run_all(&crate::lab::impair::tc_commands(tap, &now, netem))
    }

    fn kernel(&self) -> Result<Option<KernelSupport>, KernelError> {
        let Some(text) = self.read("sh", &["sh", "-c", KERNEL_SCRIPT]) else { return Ok(None) };
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        if first == "gz" {
            let source = "/proc/config.gz";
            let bytes = unbase64(rest).ok_or_else(|| KernelError::Corrupt {
                path: source.into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not base64 as read over ssh"),
            })?;
            return KernelSupport::from_config_gz(&bytes, source).map(Some);
        }
        Ok(first.strip_prefix("file ").map(|path| KernelSupport::from_config(rest, path)))
    }

    fn routes(&self) -> Option<Vec<HostRoute>> {
        self.read("cat", &["cat", "/proc/net/route"]).map(|t| HostRoute::parse_proc_net_route(&t))
    }

    fn routes6(&self) -> Option<Vec<crate::host::observed::HostRoute6>> {
        self.read("cat", &["cat", "/proc/net/ipv6_route"])
            .map(|t| crate::host::observed::HostRoute6::parse_proc_net_ipv6_route(&t))
    }

    fn image_backing(&self, path: &str) -> ImageBacking {
        use crate::host::image::{HEADER_READ, ImageError, parse_header};
        let n = HEADER_READ.to_string();
        let Some(text) = self.read("head", &["sh", "-c", HEAD_SCRIPT, "sh", path, &n]) else {
            return ImageBacking::Unreadable;
        };
        let (first, rest) = text.split_once('\n').unwrap_or((text.trim_end(), ""));
        let size = match first {
            "missing" => return ImageBacking::None,
            "unreadable" => return ImageBacking::Unreadable,
            f => f.strip_prefix("size ").and_then(|n| n.trim().parse::<u64>().ok()),
        };
        let (Some(size), Some(head)) = (size, unbase64(rest)) else { return ImageBacking::Unreadable };
        let header = parse_header(&head, size, |offset, len| {
            let (o, l) = (offset.to_string(), len.to_string());
            self.read("tail", &["sh", "-c", RANGE_SCRIPT, "sh", path, &o, &l])
                .and_then(|t| unbase64(&t))
                .ok_or_else(|| ImageError::Corrupt("the backing file name could not be read over ssh".into()))
        });
        match header {
            Ok(h) => match (&h.backing_file, h.backing_path(Path::new(path))) {
                (None, _) => ImageBacking::None,
                (Some(_), Some(b)) => ImageBacking::File(b.display().to_string()),
                (Some(_), None) => ImageBacking::Unknown,
            },
            Err(_) => ImageBacking::Unreadable,
        }
    }

    fn file_id(&self, path: &str) -> Option<(u64, u64)> {
        let text = self.read("stat", &["stat", "-L", "-c", "%d %i", "--", path])?;
        let (dev, ino) = text.trim().split_once(' ')?;
        Some((dev.parse().ok()?, ino.parse().ok()?))
    }

    fn tunnels(&self) -> Result<Vec<ObservedTunnel>, MachineError> {
        tunnel::read_tunnels(self.runner.as_ref())
    }

    fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<(), MachineError> {
        tunnel::ensure_tunnel(self.runner.as_ref(), spec)
    }

    fn delete_tunnel(&self, device: &str) -> Result<(), MachineError> {
        tunnel::delete_tunnel(self.runner.as_ref(), device)
    }

    fn addresses(&self) -> Option<BTreeMap<IpAddr, tunnel::HostAddress>> {
        tunnel::read_addresses(self.runner.as_ref())
    }

    /// One round trip: the shell there asks its `PATH` for every tool
    /// ([`crate::host::tools::PROBE_SCRIPT`]).
    fn missing_tools(&self) -> Option<BTreeSet<Tool>> {
        if let Some(known) = self.missing.get() {
            return Some(known.clone());
        }
        let argv = crate::host::tools::probe_argv(&Tool::REMOTE);
        let answer = match self.runner.run(&argv, None) {
            Ok(o) => crate::host::tools::parse_probe(&Tool::REMOTE, o.code, &o.text()),
            Err(e) => {
                tracing::debug!(error = %e, "remote tools");
                None
            }
        };
        if let Some(a) = &answer {
            // Another thread may have set it meanwhile: the same answer.
            let _ = self.missing.set(a.clone());
        }
        answer
    }
}

/// Adds to `out` (what libvirt showed) what machine `m` says of the host: the tools topo
/// runs there that it lacks (`Observed::tools`, asked first: a machine whose devices cannot
/// be listed because it has no `ip` still says so), its network
/// devices (`Observed::host_interfaces`), its kernel's features (`Observed::kernel`: the
/// kernel the taps live in; network namespaces share it), its routes (`Observed::host_routes`)
/// and the MACs the bridge of each active network holds as its own (`Observed::bridge_macs`,
/// from the network's live bridge). Nothing more when its devices cannot be listed.
///
/// # Errors
/// The kernel's config file is there but damaged ([`Machine::kernel`]).
pub fn observe(m: &dyn Machine, out: &mut Observed) -> Result<(), KernelError> {
    out.tools = m.missing_tools().map(|missing| MachineTools { remote: m.is_remote(), missing });
    out.host_interfaces = m.interfaces();
    if out.host_interfaces.is_none() {
        return Ok(());
    }
    out.kernel = m.kernel()?;
    out.host_routes = m.routes();
    out.host_routes6 = m.routes6();
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
    use crate::host::runner::RunError;

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

    /// RemoteMachine's reads through a scripted runner: the kernel config from
    /// `/proc/config.gz` in base64 (damaged: an error), from `/boot`, or none; a file's
    /// identity; an image's header and its backing name read in a second command; what
    /// cannot be run is unknown, never a guess.
    #[test]
    fn remote_reads_through_a_runner() {
        use crate::host::runner::{FakeRunner, Output};
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"CONFIG_NET_SCH_NETEM=m\n").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let f = Arc::new(
            FakeRunner::new("root@h1")
                .on(&["sh", "-c", KERNEL_SCRIPT], Ok(Output::ok(format!("gz\n{b64}\n"))))
                .on(&["sh", "-c", KERNEL_SCRIPT], Ok(Output::ok("gz\nH4sIAAAA\n")))
                .on(&["sh", "-c", KERNEL_SCRIPT], Ok(Output::ok("file /boot/config-6.1\nCONFIG_NET_SCH_HTB=y\n")))
                .on(&["sh", "-c", KERNEL_SCRIPT], Ok(Output::ok("none\n")))
                .on(&["stat"], Ok(Output::ok("2049 131\n")))
                .on(&["sh", "-c", HEAD_SCRIPT, "sh", "/i/a.qcow2"], Ok(Output::ok(head_of_backed_image())))
                .on(&["sh", "-c", RANGE_SCRIPT, "sh", "/i/a.qcow2", "4096", "8"], Ok(Output::ok("YmFzZS5yYXc=")))
                .on(&["sh", "-c", HEAD_SCRIPT, "sh", "/i/gone"], Ok(Output::ok("missing\n")))
                .on(&["sh", "-c", HEAD_SCRIPT, "sh", "/i/dir"], Ok(Output::ok("unreadable\n"))),
        );
        let m = RemoteMachine::over(f.clone());
        let k = m.kernel().unwrap().unwrap();
        assert_eq!(k.source, "/proc/config.gz");
        assert!(!k.missing.contains(&crate::host::kernel::KernelFeature::Netem));
        assert!(m.kernel().is_err(), "a damaged config.gz");
        assert_eq!(m.kernel().unwrap().unwrap().source, "/boot/config-6.1");
        assert_eq!(m.kernel().unwrap(), None);
        assert_eq!(m.file_id("/i/a.qcow2"), Some((2049, 131)));
        assert_eq!(m.image_backing("/i/a.qcow2"), ImageBacking::File("/i/base.raw".into()));
        assert_eq!(m.image_backing("/i/gone"), ImageBacking::None);
        assert_eq!(m.image_backing("/i/dir"), ImageBacking::Unreadable);
        assert_eq!(m.image_backing("/i/other"), ImageBacking::Unreadable, "the command failed");
        assert_eq!(m.routes(), None, "cat failed");
        assert_eq!(m.interfaces(), None, "ip failed");
        assert_eq!(m.bridge_macs("../x"), None, "not even asked");
        assert!(f.calls().iter().all(|c| !c.contains(&"../x".to_owned())));
    }

    /// `size N` and the first 512 bytes (base64) of a qcow2 v3 image naming `base.raw` at 4096.
    fn head_of_backed_image() -> String {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[8..16].copy_from_slice(&4096u64.to_be_bytes());
        h[16..20].copy_from_slice(&8u32.to_be_bytes());
        format!("size 4104\n{}", base64::engine::general_purpose::STANDARD.encode(h))
    }

    /// Runs commands on this machine with `PATH` set to one folder: the machine of a host
    /// that has only the programs linked there.
    struct PathRunner {
        path: PathBuf,
    }

    impl Runner for PathRunner {
        fn run(&self, argv: &[&str], _stdin: Option<&[u8]>) -> Result<crate::host::runner::Output, RunError> {
            // Invariant: the machine's commands are never empty.
            let (program, args) = argv.split_first().expect("a command");
            let spawn = |e: std::io::Error| RunError::Spawn {
                program: (*program).to_owned(),
                kind: e.kind(),
                message: e.to_string(),
            };
            let out = std::process::Command::new(program).args(args).env("PATH", &self.path).output().map_err(spawn)?;
            Ok(crate::host::runner::Output {
                code: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }

        fn describe(&self) -> String {
            format!("PATH={}", self.path.display())
        }
    }

    /// The remote probe, run by a real `sh` whose `PATH` is a folder of symlinks to some
    /// tools only (each to the program of that name on this machine's `PATH`, else to `sh`
    /// itself: the probe asks only whether the name is found): the answer names exactly the
    /// others, in one command; with every tool there, none; with `sh` alone, all but it.
    #[test]
    fn the_remote_probe_names_exactly_the_tools_its_path_lacks() {
        let host_path = std::env::var_os("PATH").expect("tests run with a PATH");
        let find = |name: &str| std::env::split_paths(&host_path).map(|d| d.join(name)).find(|p| p.is_file());
        // Invariant: a POSIX system has `sh` on its PATH.
        let sh = find("sh").expect("sh on PATH");
        let with = |tools: &[Tool]| {
            let dir = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(&sh, dir.path().join("sh")).unwrap();
            for t in tools.iter().filter(|t| **t != Tool::Sh) {
                let target = find(t.program()).unwrap_or_else(|| sh.clone());
                std::os::unix::fs::symlink(target, dir.path().join(t.program())).unwrap();
            }
            dir
        };
        let ask = |dir: &tempfile::TempDir| {
            let runner = Arc::new(PathRunner { path: dir.path().to_owned() });
            RemoteMachine::over(runner).missing_tools()
        };
        let lacking = [Tool::Arping, Tool::Flock];
        let some: Vec<Tool> = Tool::REMOTE.into_iter().filter(|t| !lacking.contains(t)).collect();
        assert_eq!(ask(&with(&some)), Some(BTreeSet::from(lacking)));
        assert_eq!(ask(&with(&Tool::REMOTE)), Some(BTreeSet::new()));
        let all_but_sh: BTreeSet<Tool> = Tool::REMOTE.into_iter().filter(|t| *t != Tool::Sh).collect();
        assert_eq!(ask(&with(&[])), Some(all_but_sh));
        // A machine that cannot be reached says nothing.
        let down = crate::host::runner::FakeRunner::new("root@h9")
            .on(&["sh"], Err(RunError::Connect { host: "root@h9".into(), message: "No route to host".into() }));
        assert_eq!(RemoteMachine::over(Arc::new(down)).missing_tools(), None);
    }

    /// A bridge's own MACs: its address and each port's; not a bridge here is unknown.
    /// A host's programs are asked once per machine: an answer is kept (observations
    /// repeat within a run), a failed ask is not (the next observation asks again).
    #[test]
    fn a_remote_machine_asks_for_its_tools_once() {
        use crate::host::runner::{FakeRunner, Output, RunError};
        let probe = crate::host::tools::probe_argv(&Tool::REMOTE);
        let fake = Arc::new(FakeRunner::new("root@h1"));
        fake.answer(
            &probe,
            Err(RunError::Spawn { program: "ssh".into(), kind: std::io::ErrorKind::Other, message: "down".into() }),
        );
        fake.answer(&probe, Ok(Output::ok("arping\n")));
        let m = RemoteMachine::over(fake.clone());
        assert_eq!(m.missing_tools(), None);
        assert_eq!(m.missing_tools(), Some([Tool::Arping].into()));
        assert_eq!(m.missing_tools(), Some([Tool::Arping].into()));
        assert_eq!(fake.calls().iter().filter(|c| c.first().map(String::as_str) == Some("sh")).count(), 2);
    }

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
