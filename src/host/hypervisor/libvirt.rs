//! `LibvirtHypervisor`: the `Hypervisor` trait over the `virt` crate (libvirt's C API).
//!
//! `virt::connect::Connect` is `Send + Sync` (virt marks it so; libvirt connections are
//! thread-safe and errors are kept per thread), so no extra lock is needed.

use std::ffi::{CStr, c_char, c_void};
use std::ptr;
use std::sync::Once;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;
use virt::stream::Stream;
use virt::sys;

mod console;
pub mod events;
pub use console::Console;

use super::{HostOp, HvError, HvErrorKind, Hypervisor, StoragePoolInfo, StorageVolumeInfo, VolumeSpec};
use crate::host::observed::{DiskChains, DomainState, Lease, LiveConfig, Observed, ObservedPool, ObservedVolume};
use crate::host::xml::{self, NetworkFlags};
use crate::lab::ownership::OVERLAY_POOL;

/// How long a running guest gets to release an unplugged NIC.
const UNPLUG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the unplug request is repeated while the guest has not acted on it.
const UNPLUG_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// A libvirt connection.
pub struct LibvirtHypervisor {
    /// The domain events of `conn` (declared first: deregistered before the connection
    /// closes); `None` when libvirt delivers none to this client.
    events: Option<events::Events>,
    conn: Connect,
    uri: String,
}

/// True when `uri` names no host (`driver:///path`), so the daemon runs on this machine.
pub fn is_local_uri(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/') || rest.is_empty(),
        None => true,
    }
}

/// True when libvirt opens the lab's files (kernel, initrd, base image) on this machine's
/// own disk: a local URI of a real driver. Not for another host, and not for the `test`
/// driver, which opens no files (its pools are its own, in memory): for those, topo asks
/// libvirt's storage pools ([`crate::host::hypervisor::observe_paths`]).
pub fn files_are_local(uri: &str) -> bool {
    is_local_uri(uri) && !uri.starts_with("test:") && !uri.starts_with("test+")
}

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor").field("uri", &self.uri).finish()
    }
}

static QUIET: Once = Once::new();

/// The libvirt function behind `Network::xml_desc`.
const XML: &str = "virNetworkGetXMLDesc";

/// Runs one libvirt call and logs it at debug level with its duration, one line per call:
/// `api` is the C function's name (`virNetworkCreate`), `object` the network, domain,
/// volume or URI it acts on. A failure is logged with libvirt's message and returned as is.
fn lv<T>(api: &'static str, object: &str, call: impl FnOnce() -> Result<T, VirtError>) -> Result<T, VirtError> {
    let start = std::time::Instant::now();
    let result = call();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(_) => tracing::debug!(api, object, ms = format_args!("{ms:.3}"), "libvirt call"),
        Err(e) => {
            tracing::debug!(api, object, ms = format_args!("{ms:.3}"), error = e.message(), "libvirt call failed")
        }
    }
    result
}

/// Maps a libvirt error to an `HvError`, its kind from libvirt's error code alone
/// ([`kind_of`]); the message is kept for display. The calls whose outcome depends on a
/// code libvirt uses for several cases refine the kind by looking at the object afterwards
/// ([`settle`]), never by reading the message.
pub fn map_error(op: &str, object: &str, e: &VirtError) -> HvError {
    let kind = match e.code() {
        Enum::Known(code) => kind_of(code),
        Enum::Unknown(_) => HvErrorKind::Other,
    };
    let message = e.message().to_owned();
    let hint = hint_for(kind, &message);
    HvError { op: op.to_owned(), object: object.to_owned(), message, kind, hint }
}

/// The kind of libvirt error `code` (virterror.h `virErrorNumber`). libvirt reports a start
/// of a running object, a stop of a stopped one, a DHCP host entry that exists or is missing
/// and a NIC that is not there with codes it also uses for other failures
/// (`VIR_ERR_OPERATION_INVALID`, `VIR_ERR_OPERATION_FAILED`, and `VIR_ERR_INTERNAL_ERROR` in
/// the test driver): those are `InvalidState` or `Other` here, and [`settle`] tells them
/// apart by the object's state.
fn kind_of(code: ErrorNumber) -> HvErrorKind {
    use ErrorNumber as E;
    match code {
        E::NoNetwork
        | E::NoDomain
        | E::DeviceMissing
        | E::NoStorageVolume
        | E::NoDomainSnapshot
        | E::NoStoragePool
        | E::NoNetworkPort => HvErrorKind::NotFound,
        E::NetworkExist | E::DomExist | E::StorageVolExist | E::NetworkPortExists => HvErrorKind::Exists,
        E::XmlError | E::XmlDetail | E::XmlInvalidSchema => HvErrorKind::InvalidXml,
        // topo passes names it looked up and XML it rendered, so an invalid argument is
        // virCheckFlags' "unsupported flags" (a driver without that flag: the test driver).
        E::NoSupport | E::ArgumentUnsupported | E::OperationUnsupported | E::InvalidArg => HvErrorKind::Unsupported,
        E::NoConnect | E::AuthFailed | E::AuthCancelled | E::AuthUnavailable => HvErrorKind::Connect,
        E::OperationInvalid => HvErrorKind::InvalidState,
        _ => HvErrorKind::Other,
    }
}

/// Refines the kind of `e` when its code left it ambiguous (`InvalidState`, `Other`):
/// `now` looks at the object as it is after the failure and names the kind that state
/// means (a start that failed on a running domain is `AlreadyActive`), or `None` to keep it.
fn settle(mut e: HvError, now: impl FnOnce() -> Option<HvErrorKind>) -> HvError {
    if matches!(e.kind, HvErrorKind::InvalidState | HvErrorKind::Other)
        && let Some(kind) = now()
    {
        e.kind = kind;
    }
    e
}

/// What to do about an error of `kind`. The one hint that quotes the message is advice
/// about the `tc` commands libvirt runs for a NIC's `<bandwidth>`: libvirt relays tc's
/// stderr as an internal error, with no code of its own ("Child process (tc qdisc add dev
/// vnet0 parent 1:1 handle 2: sfq perturb 10) unexpected exit status 2: Error: Specified
/// qdisc kind is unknown.", seen on a kernel without sch_sfq). No decision reads it.
fn hint_for(kind: HvErrorKind, msg: &str) -> Option<String> {
    match kind {
        HvErrorKind::Connect => Some(
            "is libvirtd running? choose the connection with --connect or LIBVIRT_DEFAULT_URI \
             (e.g. qemu:///system)"
                .into(),
        ),
        HvErrorKind::Unsupported => Some("this libvirt driver does not implement the call".into()),
        _ if msg.contains("tc ") && msg.contains("kind is unknown") => Some(
            "the host kernel lacks a qdisc libvirt's <bandwidth> needs (sch_htb, sch_sfq, cls_fw, act_police): \
             load those modules, or remove `rate:` from the lab file"
                .into(),
        ),
        _ => None,
    }
}

/// The help for a connection that failed to open `uri`: over ssh (`driver+ssh://` and
/// `+libssh`/`+libssh2`, libvirt's remote transports that run ssh), the host and ssh come
/// first; else the daemon and the choice of URI.
fn connect_hint(uri: &str) -> Option<String> {
    let scheme = uri.split("://").next().unwrap_or_default();
    if scheme.ends_with("+ssh") || scheme.ends_with("+libssh") || scheme.ends_with("+libssh2") {
        let host = uri.split("://").nth(1).and_then(|r| r.split(['/', '?']).next()).unwrap_or_default();
        return Some(format!(
            "libvirt reaches {host} over ssh: check that `ssh {host}` logs in without a prompt (the host is \
             up and reachable, your key, its known_hosts entry) and that libvirtd runs there"
        ));
    }
    hint_for(HvErrorKind::Connect, "")
}

/// Whether a define of `name` with `uuid` (`None`: libvirt gives it a fresh one) clashes with
/// what libvirt holds (virDomainObjListAdd, virNetworkObjAssignDef: "already exists with
/// uuid", "is already defined with uuid", VIR_ERR_OPERATION_FAILED): an object of that name
/// with another UUID (`by_name`: its UUID), or that UUID under another name (`by_uuid`: that
/// object's name).
fn clashes(uuid: Option<&str>, by_name: Option<&str>, by_uuid: Option<String>, name: &str) -> bool {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    by_name.is_some_and(|held| !uuid.is_some_and(|u| same(u, held))) || by_uuid.is_some_and(|other| other != name)
}

/// The hint of a network define or start that failed on a bridge name another network has.
const BRIDGE_TAKEN: &str = "another network uses this bridge name: choose another `bridge` or let libvirt pick one";

/// The kind of a libvirt error from its code alone ([`kind_of`]).
fn kind_of_error(e: &VirtError) -> HvErrorKind {
    match e.code() {
        Enum::Known(code) => kind_of(code),
        Enum::Unknown(_) => HvErrorKind::Other,
    }
}

fn is_unsupported(e: &VirtError) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoSupport | ErrorNumber::ArgumentUnsupported | ErrorNumber::InvalidArg))
}

fn is_gone(e: &VirtError) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoNetwork | ErrorNumber::NoDomain))
}

fn is_missing(e: &VirtError) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume))
}

/// Reads a C string field of a libvirt struct; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
unsafe fn opt_cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

impl LibvirtHypervisor {
    /// Opens a connection. An empty `uri` lets libvirt choose (`LIBVIRT_DEFAULT_URI`, then
    /// its configuration and probing).
    pub fn connect(uri: &str) -> Result<Self, HvError> {
        QUIET.call_once(virt::error::clear_error_callback);
        // Before the connection opens: a connection opened earlier gets no events.
        events::ensure_loop();
        let want = (!uri.is_empty()).then_some(uri);
        let conn = lv("virConnectOpen", uri, || Connect::open(want)).map_err(|e| {
            let mut err = map_error("connect", if uri.is_empty() { "(default URI)" } else { uri }, &e);
            err.kind = HvErrorKind::Connect;
            err.hint = connect_hint(uri);
            err
        })?;
        let uri = lv("virConnectGetURI", uri, || conn.uri()).unwrap_or_else(|_| uri.to_owned());
        let events = events::Events::register(&conn);
        Ok(Self { events, conn, uri })
    }

    /// How many of libvirt's domain events (lifecycle, device removed) this connection has
    /// received; `None` when libvirt delivers none to it ([`events`]).
    pub fn domain_events_seen(&self) -> Option<u64> {
        self.events.as_ref().map(events::Events::seen)
    }

    /// The persistent config XML of network `name` (`VIR_NETWORK_XML_INACTIVE`), or its live
    /// XML when it is transient (or the driver cannot dump an inactive one). `op` names what
    /// topo was doing, for errors.
    fn config_xml(&self, op: &str, name: &str) -> Result<String, HvError> {
        let n = self.network(op, name)?;
        let read = || -> Result<String, VirtError> {
            if lv("virNetworkIsPersistent", name, || n.is_persistent())? {
                match lv("virNetworkGetXMLDesc", name, || n.xml_desc(sys::VIR_NETWORK_XML_INACTIVE)) {
                    Err(e) if is_unsupported(&e) => lv("virNetworkGetXMLDesc", name, || n.xml_desc(0)),
                    other => other,
                }
            } else {
                lv("virNetworkGetXMLDesc", name, || n.xml_desc(0))
            }
        };
        read().map_err(|e| map_error(op, name, &e))
    }

    fn network(&self, op: &str, name: &str) -> Result<Network, HvError> {
        lv("virNetworkLookupByName", name, || self.conn.lookup_network_by_name(name))
            .map_err(|e| map_error(op, name, &e))
    }

    fn domain(&self, op: &str, name: &str) -> Result<Domain, HvError> {
        lv("virDomainLookupByName", name, || self.conn.lookup_domain_by_name(name)).map_err(|e| map_error(op, name, &e))
    }

    /// Observes one network; `Ok(None)` when it vanished meanwhile.
    fn observe_network(&self, net: &Network) -> Result<Option<crate::host::observed::ObservedNetwork>, HvError> {
        const OP: &str = "observe network";
        let name = lv("virNetworkGetName", "?", || net.name()).map_err(|e| map_error(OP, "?", &e))?;
        let read = || -> Result<_, VirtError> {
            let flags = NetworkFlags {
                active: lv("virNetworkIsActive", &name, || net.is_active())?,
                persistent: lv("virNetworkIsPersistent", &name, || net.is_persistent())?,
                autostart: lv("virNetworkGetAutostart", &name, || net.autostart())?,
            };
            let xml = if flags.persistent {
                match lv(XML, &name, || net.xml_desc(sys::VIR_NETWORK_XML_INACTIVE)) {
                    Err(e) if is_unsupported(&e) => lv(XML, &name, || net.xml_desc(0))?,
                    other => other?,
                }
            } else {
                lv(XML, &name, || net.xml_desc(0))?
            };
            // The bridge frames go through is the live one, not the config's.
            let live = if flags.active && flags.persistent { Some(lv(XML, &name, || net.xml_desc(0))?) } else { None };
            Ok((flags, xml, live))
        };
        let (flags, text, live) = match read() {
            Ok(v) => v,
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(map_error(OP, &name, &e)),
        };
        let invalid = |e: xml::XmlError| HvError {
            op: OP.into(),
            object: name.clone(),
            message: e.to_string(),
            kind: HvErrorKind::InvalidXml,
            hint: None,
        };
        let mut observed = xml::parse_network(&text, flags).map_err(invalid)?;
        if let Some(live) = live {
            observed.live_bridge = xml::parse_network(&live, flags).map_err(invalid)?.bridge;
        }
        Ok(Some(observed))
    }

    fn observe_domain(&self, dom: &Domain) -> Result<Option<crate::host::observed::ObservedDomain>, HvError> {
        const OP: &str = "observe domain";
        let name = lv("virDomainGetName", "?", || dom.name()).map_err(|e| map_error(OP, "?", &e))?;
        let read = || -> Result<_, VirtError> {
            let (state, _reason) = lv("virDomainGetState", &name, || dom.state())?;
            let persistent = lv("virDomainIsPersistent", &name, || dom.is_persistent())?;
            let flags = if persistent { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 };
            // What a running domain runs with: a define changes only the persistent config.
            let live = if persistent && lv("virDomainIsActive", &name, || dom.is_active())? {
                Some(lv("virDomainGetXMLDesc", &name, || dom.xml_desc(0))?)
            } else {
                None
            };
            Ok((state, lv("virDomainGetXMLDesc", &name, || dom.xml_desc(flags))?, live, persistent))
        };
        let (state, text, live, persistent) = match read() {
            Ok(v) => v,
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(map_error(OP, &name, &e)),
        };
        use virt::domain::DomainState as S;
        let state = match state {
            Enum::Known(S::Running | S::Blocked) => DomainState::Running,
            Enum::Known(S::Paused) => DomainState::Paused,
            Enum::Known(S::Shutoff) => DomainState::Shutoff,
            _ => DomainState::Other,
        };
        let invalid = |e: xml::XmlError| HvError {
            op: OP.into(),
            object: name.clone(),
            message: e.to_string(),
            kind: HvErrorKind::InvalidXml,
            hint: None,
        };
        let mut observed = xml::parse_domain(&text, state).map_err(invalid)?;
        observed.persistent = persistent;
        // The live XML: a transient domain's only XML is its live one.
        let live_xml = if persistent { live.as_deref() } else { Some(text.as_str()) };
        // The chains libvirt lists there; `Host::observe` completes the others.
        observed.live_disks = match live_xml {
            Some(x) => Some(DiskChains::of(&xml::parse_domain(x, state).map_err(invalid)?)),
            None => None,
        };
        observed.snapshots = match lv("virDomainListAllSnapshots", &name, || dom.list_all_snapshots(0)) {
            Ok(snaps) => {
                let mut names: Vec<String> = snaps.iter().filter_map(|s| s.name().ok()).collect();
                names.sort();
                names
            }
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) if is_unsupported(&e) => Vec::new(),
            Err(e) => return Err(map_error(OP, &name, &e)),
        };
        if state == DomainState::Running
            && let Some(x) = live_xml
        {
            observed.taps = xml::live_taps(x).map_err(invalid)?;
        }
        if let Some(live) = live {
            observed.live = Some(LiveConfig::of(&xml::parse_domain(&live, state).map_err(invalid)?));
        }
        Ok(Some(observed))
    }

    /// The whole content of a (small) volume through a libvirt stream (virStorageVolDownload).
    fn download(&self, vol: &virt::storage_vol::StorageVol, name: &str) -> Result<Vec<u8>, HvError> {
        const OP: &str = "download volume";
        const MAX: usize = 16 * 1024 * 1024;
        let stream = Stream::new(&self.conn, 0).map_err(|e| map_error(OP, name, &e))?;
        lv("virStorageVolDownload", name, || vol.download(&stream, 0, 0, 0)).map_err(|e| map_error(OP, name, &e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stream.recv(&mut buf).map_err(|e| map_error(OP, name, &e))?;
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > MAX {
                let _ = stream.abort();
                return Err(other(OP, name, "larger than a seed"));
            }
        }
        stream.finish().map_err(|e| map_error(OP, name, &e))?;
        Ok(out)
    }

    /// The overlay pool (by name, active or not) and, when active, its volumes.
    fn observe_pool(&self, out: &mut Observed) -> Result<(), HvError> {
        const OP: &str = "observe pool";
        let pool = match lv("virStoragePoolLookupByName", OVERLAY_POOL, || {
            self.conn.lookup_storage_pool_by_name(OVERLAY_POOL)
        }) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(map_error(OP, OVERLAY_POOL, &e)),
        };
        let active = lv("virStoragePoolIsActive", OVERLAY_POOL, || pool.is_active())
            .map_err(|e| map_error(OP, OVERLAY_POOL, &e))?;
        let text = lv("virStoragePoolGetXMLDesc", OVERLAY_POOL, || pool.xml_desc(0))
            .map_err(|e| map_error(OP, OVERLAY_POOL, &e))?;
        let path = xml::parse_pool_path(&text).map_err(|e| other(OP, OVERLAY_POOL, &e.to_string()))?;
        if active {
            // A file created since the pool's last refresh is not listed without it.
            let _ = lv("virStoragePoolRefresh", OVERLAY_POOL, || pool.refresh(0));
            let vols = lv("virStoragePoolListAllVolumes", OVERLAY_POOL, || pool.list_all_volumes(0))
                .map_err(|e| map_error(OP, OVERLAY_POOL, &e))?;
            for v in vols {
                let Ok(name) = lv("virStorageVolGetName", OVERLAY_POOL, || v.name()) else { continue };
                let Ok(vpath) = lv("virStorageVolGetPath", &name, || v.path()) else { continue };
                if let Ok(key) = lv("virStorageVolGetKey", &name, || v.key()) {
                    out.files.entry(vpath.clone()).or_default().key = Some(key);
                }
                out.volumes.insert(name.clone(), ObservedVolume { name, path: vpath });
            }
        }
        out.pool =
            Some(ObservedPool { name: OVERLAY_POOL.to_string(), path: path.trim_end_matches('/').into(), active });
        Ok(())
    }

    /// Waits until a running domain no longer has a NIC with `mac` (looking again on each
    /// device-removed or lifecycle event, [`Hypervisor::wait_until`]), asking again every
    /// `UNPLUG_RETRY`. QEMU's `pc` machine unplugs through ACPI: `detach` only asks the
    /// guest, and libvirt returns after 5 s even when the guest has not let go. A guest
    /// asked while it is still booting may never act on that request, but does on the
    /// next one; and a NIC plugged again meanwhile would sit beside the old one with the
    /// same MAC, off the bridge (both seen on libvirt 9.0 / QEMU 7.2 a few seconds after
    /// the guests started).
    fn wait_unplugged(
        &self,
        dom: &Domain,
        name: &str,
        xml: &str,
        mac: crate::lab::model::MacAddr,
    ) -> Result<(), HvError> {
        const OP: &str = "detach device";
        let start = std::time::Instant::now();
        let mut asked = start;
        let released = self.wait_until(Some(start + UNPLUG_TIMEOUT), &mut || {
            if !lv("virDomainIsActive", name, || dom.is_active()).map_err(|e| map_error(OP, name, &e))? {
                return Ok(true);
            }
            let live = lv("virDomainGetXMLDesc", name, || dom.xml_desc(0)).map_err(|e| map_error(OP, name, &e))?;
            let d = xml::parse_domain(&live, DomainState::Running).map_err(|e| other(OP, name, &e.to_string()))?;
            if !d.interfaces.iter().any(|i| i.mac == Some(mac)) {
                return Ok(true);
            }
            if asked.elapsed() >= UNPLUG_RETRY {
                // The config no longer has it: ask the live guest only. An error means it
                // went away meanwhile, or the request is still pending; the next look decides.
                let _ = lv("virDomainDetachDeviceFlags", name, || {
                    dom.detach_device_flags(xml, sys::VIR_DOMAIN_AFFECT_LIVE)
                });
                asked = std::time::Instant::now();
            }
            Ok(false)
        })?;
        if released {
            return Ok(());
        }
        Err(HvError {
            op: OP.into(),
            object: name.into(),
            message: format!(
                "the guest did not release NIC {mac} within {} s (hot-unplug needs the guest's ACPI support)",
                UNPLUG_TIMEOUT.as_secs()
            ),
            kind: HvErrorKind::InvalidState,
            hint: Some("wait until the VM has booted and run apply again, or restart the VM".into()),
        })
    }

    /// Whether network `name` is active now; `None` when that cannot be read.
    fn network_active(&self, name: &str) -> Option<bool> {
        let n = lv("virNetworkLookupByName", name, || self.conn.lookup_network_by_name(name)).ok()?;
        lv("virNetworkIsActive", name, || n.is_active()).ok()
    }

    /// Whether domain `name` has a NIC with `mac` now: in its persistent config, or (`live`)
    /// in what it runs with. `None` when that cannot be read.
    fn has_nic(&self, name: &str, mac: crate::lab::model::MacAddr, live: bool) -> Option<bool> {
        let dom = lv("virDomainLookupByName", name, || self.conn.lookup_domain_by_name(name)).ok()?;
        let flags = if live { 0 } else { sys::VIR_DOMAIN_XML_INACTIVE };
        let text = lv("virDomainGetXMLDesc", name, || dom.xml_desc(flags)).ok()?;
        let d = xml::parse_domain(&text, DomainState::Other).ok()?;
        Some(d.interfaces.iter().any(|i| i.mac == Some(mac)))
    }

    /// The kind of a failed start (`stop` false) or stop of domain `name` from its state
    /// now: a start on a running domain is `AlreadyActive`, a stop on a stopped one
    /// `NotActive`.
    fn domain_settled(&self, name: &str, stop: bool) -> Option<HvErrorKind> {
        match (self.domain_state(name).ok()?, stop) {
            (DomainState::Running, false) => Some(HvErrorKind::AlreadyActive),
            (DomainState::Shutoff, true) => Some(HvErrorKind::NotActive),
            _ => None,
        }
    }

    /// Whether a network a NIC of domain `name` (its config) is on is inactive now.
    fn uses_inactive_network(&self, name: &str) -> bool {
        let Ok(dom) = self.domain("start domain", name) else { return false };
        let Ok(text) = lv("virDomainGetXMLDesc", name, || dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)) else {
            return false;
        };
        let Ok(d) = xml::parse_domain(&text, DomainState::Shutoff) else { return false };
        d.interfaces.iter().filter_map(|i| i.network.as_deref()).any(|n| self.network_active(n) == Some(false))
    }

    /// Whether a network other than `want` holds the bridge it names.
    fn bridge_taken(&self, want: &crate::host::observed::ObservedNetwork) -> bool {
        let Some(bridge) = &want.bridge else { return false };
        let Ok(nets) = lv("virConnectListAllNetworks", &self.uri, || self.conn.list_all_networks(0)) else {
            return false;
        };
        nets.iter().any(|n| {
            let name = n.name().unwrap_or_default();
            name != want.name
                && n.xml_desc(0)
                    .ok()
                    .and_then(|x| xml::parse_network(&x, NetworkFlags::default()).ok())
                    .is_some_and(|o| o.bridge.as_deref() == Some(bridge.as_str()))
        })
    }

    fn device_flags(&self, op: &str, domain: &Domain, name: &str) -> Result<u32, HvError> {
        let live = lv("virDomainIsActive", name, || domain.is_active()).map_err(|e| map_error(op, name, &e))?;
        Ok(sys::VIR_DOMAIN_AFFECT_CONFIG | if live { sys::VIR_DOMAIN_AFFECT_LIVE } else { 0 })
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn hostname(&self) -> Result<String, HvError> {
        lv("virConnectGetHostname", &self.uri, || self.conn.hostname())
            .map_err(|e| map_error("get host name", &self.uri, &e))
    }

    fn observe_libvirt(&self) -> Result<Observed, HvError> {
        let mut out = Observed::default();
        let nets = lv("virConnectListAllNetworks", &self.uri, || self.conn.list_all_networks(0))
            .map_err(|e| map_error("list networks", &self.uri, &e))?;
        for net in &nets {
            if let Some(n) = self.observe_network(net)? {
                out.networks.insert(n.name.clone(), n);
            }
        }
        let doms = lv("virConnectListAllDomains", &self.uri, || self.conn.list_all_domains(0))
            .map_err(|e| map_error("list domains", &self.uri, &e))?;
        for dom in &doms {
            if let Some(d) = self.observe_domain(dom)? {
                out.domains.insert(d.name.clone(), d);
            }
        }
        self.observe_pool(&mut out)?;
        Ok(out)
    }

    fn define_network(&self, xml: &str) -> Result<(), HvError> {
        let object = xml::parse_network(xml, NetworkFlags::default()).map(|n| n.name).unwrap_or_else(|_| "?".into());
        tracing::trace!(network = %object, xml, "network XML sent to libvirt");
        lv("virNetworkDefineXML", &object, || self.conn.define_network_xml(xml)).map(drop).map_err(|e| {
            let e = map_error("define network", &object, &e);
            if !matches!(e.kind, HvErrorKind::InvalidState | HvErrorKind::Other) {
                return e;
            }
            let Ok(want) = xml::parse_network(xml, NetworkFlags::default()) else { return e };
            let held = |n: Network| n.uuid_string().ok();
            let by_name = self.conn.lookup_network_by_name(&want.name).ok().and_then(held);
            let by_uuid = want.uuid.as_deref().and_then(|u| self.conn.lookup_network_by_uuid_string(u).ok());
            if clashes(want.uuid.as_deref(), by_name.as_deref(), by_uuid.and_then(|n| n.name().ok()), &want.name) {
                HvError { kind: HvErrorKind::Exists, ..e }
            } else if self.bridge_taken(&want) {
                HvError { kind: HvErrorKind::Exists, hint: Some(BRIDGE_TAKEN.into()), ..e }
            } else {
                e
            }
        })
    }

    fn start_network(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "start network";
        {
            let n = self.network(OP, name)?;
            lv("virNetworkCreate", name, || n.create())
        }
        .map_err(|e| {
            settle(map_error(OP, name, &e), || {
                self.network_active(name).filter(|a| *a).map(|_| HvErrorKind::AlreadyActive)
            })
        })
    }

    fn set_network_autostart(&self, name: &str, autostart: bool) -> Result<(), HvError> {
        const OP: &str = "set network autostart";
        {
            let n = self.network(OP, name)?;
            lv("virNetworkSetAutostart", name, || n.set_autostart(autostart))
        }
        .map_err(|e| map_error(OP, name, &e))
    }

    fn stop_network(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "stop network";
        {
            let n = self.network(OP, name)?;
            lv("virNetworkDestroy", name, || n.destroy())
        }
        .map_err(|e| {
            settle(map_error(OP, name, &e), || {
                self.network_active(name).filter(|a| !*a).map(|_| HvErrorKind::NotActive)
            })
        })
    }

    fn undefine_network(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "undefine network";
        {
            let n = self.network(OP, name)?;
            lv("virNetworkUndefine", name, || n.undefine())
        }
        .map_err(|e| map_error(OP, name, &e))
    }

    fn network_config_xml(&self, name: &str) -> Result<String, HvError> {
        self.config_xml("read network config", name)
    }

    fn release_network(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "release network";
        // The persistent config carries the tag topo reads; a transient network has only
        // its live XML, and defining it makes it persistent without the tag.
        let text = self.config_xml(OP, name)?;
        let released = xml::without_owner("network", &text).map_err(|e| other(OP, name, &e.to_string()))?;
        if released == text {
            return Ok(());
        }
        lv("virNetworkDefineXML", name, || self.conn.define_network_xml(&released))
            .map(drop)
            .map_err(|e| map_error(OP, name, &e))
    }

    fn update_dhcp_host(&self, network: &str, op: HostOp, host_xml: &str) -> Result<(), HvError> {
        const OP: &str = "update dhcp host";
        let net = self.network(OP, network)?;
        let active = lv("virNetworkIsActive", network, || net.is_active()).map_err(|e| map_error(OP, network, &e))?;
        let flags =
            sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG | if active { sys::VIR_NETWORK_UPDATE_AFFECT_LIVE } else { 0 };
        let cmd = match op {
            HostOp::Add => sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            HostOp::Delete => sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
        };
        lv("virNetworkUpdate", network, || net.update(cmd, sys::VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml, flags))
            .map_err(|e| {
                let e = map_error(OP, network, &e);
                // libvirt's virNetworkDefUpdateIPDHCPHost: the one VIR_ERR_OPERATION_INVALID of
                // an add is "there is an existing dhcp host entry", of a delete "couldn't
                // locate a matching dhcp host entry".
                match (e.kind, op) {
                    (HvErrorKind::InvalidState, HostOp::Add) => HvError { kind: HvErrorKind::Exists, ..e },
                    (HvErrorKind::InvalidState, HostOp::Delete) => HvError { kind: HvErrorKind::NotFound, ..e },
                    _ => e,
                }
            })
    }

    fn dhcp_leases(&self, network: &str) -> Result<Vec<Lease>, HvError> {
        const OP: &str = "dhcp leases";
        let net = self.network(OP, network)?;
        let mut leases: *mut sys::virNetworkDHCPLeasePtr = ptr::null_mut();
        let n = lv("virNetworkGetDHCPLeases", network, || {
            // SAFETY: `net` is a live network handle; libvirt allocates the array and stores
            // its address in `leases` when the call succeeds.
            match unsafe { sys::virNetworkGetDHCPLeases(net.as_ptr(), ptr::null(), &mut leases, 0) } {
                n if n < 0 => Err(VirtError::last_error()),
                n => Ok(n),
            }
        })
        .map_err(|e| map_error(OP, network, &e))?;
        let mut out = Vec::new();
        for i in 0..n as usize {
            // SAFETY: libvirt returned `n` valid lease pointers in `leases`.
            let lease = unsafe { *leases.add(i) };
            if lease.is_null() {
                continue;
            }
            // SAFETY: `lease` is valid until freed below; its strings are NUL-terminated.
            let (kind, mac, ip, hostname, expiry) = unsafe {
                let l = &*lease;
                (l.type_, opt_cstr(l.mac), opt_cstr(l.ipaddr), opt_cstr(l.hostname), l.expirytime)
            };
            // SAFETY: each lease is freed exactly once, after its fields were copied.
            unsafe { sys::virNetworkDHCPLeaseFree(lease) };
            if kind != sys::VIR_IP_ADDR_TYPE_IPV4 as i32 {
                continue;
            }
            let (Some(mac), Some(ip)) = (mac.and_then(|m| m.parse().ok()), ip.and_then(|a| a.parse().ok())) else {
                continue;
            };
            out.push(Lease { network: network.to_owned(), mac, ip, hostname, expiry });
        }
        if !leases.is_null() {
            // SAFETY: the array itself was allocated by libvirt with malloc; its elements
            // were freed above.
            unsafe { nix::libc::free(leases as *mut c_void) };
        }
        out.sort_by_key(|l| (l.mac, l.ip));
        Ok(out)
    }

    fn define_domain(&self, xml: &str) -> Result<(), HvError> {
        let object = xml::parse_domain(xml, DomainState::Shutoff).map(|d| d.name).unwrap_or_else(|_| "?".into());
        tracing::trace!(domain = %object, xml, "domain XML sent to libvirt");
        lv("virDomainDefineXML", &object, || self.conn.define_domain_xml(xml)).map(drop).map_err(|e| {
            let e = map_error("define domain", &object, &e);
            if !matches!(e.kind, HvErrorKind::InvalidState | HvErrorKind::Other) {
                return e;
            }
            let Ok(want) = xml::parse_domain(xml, DomainState::Shutoff) else { return e };
            let by_name = self.conn.lookup_domain_by_name(&want.name).ok().and_then(|d| d.uuid_string().ok());
            let by_uuid = want.uuid.as_deref().and_then(|u| self.conn.lookup_domain_by_uuid_string(u).ok());
            if clashes(want.uuid.as_deref(), by_name.as_deref(), by_uuid.and_then(|d| d.name().ok()), &want.name) {
                HvError { kind: HvErrorKind::Exists, ..e }
            } else {
                e
            }
        })
    }

    fn start_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "start domain";
        {
            let d = self.domain(OP, name)?;
            lv("virDomainCreate", name, || d.create())
        }
        .map_err(|e| {
            let e = settle(map_error(OP, name, &e), || self.domain_settled(name, false));
            if e.kind == HvErrorKind::InvalidState && self.uses_inactive_network(name) {
                HvError { hint: Some("start the network first (topo apply does this in dependency order)".into()), ..e }
            } else {
                e
            }
        })
    }

    fn resume_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "resume domain";
        let dom = self.domain(OP, name)?;
        lv("virDomainResume", name, || dom.resume())
            .map(drop)
            .map_err(|e| settle(map_error(OP, name, &e), || self.domain_settled(name, true)))
    }

    fn suspend_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "suspend domain";
        let dom = self.domain(OP, name)?;
        lv("virDomainSuspend", name, || dom.suspend()).map(drop).map_err(|e| {
            settle(map_error(OP, name, &e), || {
                (self.domain_state(name).ok()? == DomainState::Shutoff).then_some(HvErrorKind::NotActive)
            })
        })
    }

    fn create_snapshot(&self, domain: &str, name: &str, description: &str) -> Result<(), HvError> {
        const OP: &str = "create snapshot";
        let object = format!("{domain} {name}");
        let dom = self.domain(OP, domain)?;
        // The live XML when it runs (the disks QEMU has open), else the config.
        let text = lv("virDomainGetXMLDesc", domain, || dom.xml_desc(0)).map_err(|e| map_error(OP, domain, &e))?;
        let invalid = |e: xml::XmlError| HvError {
            op: OP.into(),
            object: object.clone(),
            message: e.to_string(),
            kind: HvErrorKind::InvalidXml,
            hint: None,
        };
        let disks = xml::snapshot_disks(&text).map_err(invalid)?;
        let snap = xml::snapshot_xml(name, description, &disks).map_err(invalid)?;
        tracing::trace!(xml = %snap, "snapshot XML");
        lv("virDomainSnapshotCreateXML", &object, || dom.create_snapshot_xml(&snap, 0))
            .map(drop)
            .map_err(|e| map_error(OP, &object, &e))
    }

    fn snapshots(&self, domain: &str) -> Result<Vec<super::SnapshotInfo>, HvError> {
        const OP: &str = "list snapshots";
        let dom = self.domain(OP, domain)?;
        let snaps = lv("virDomainListAllSnapshots", domain, || dom.list_all_snapshots(0))
            .map_err(|e| map_error(OP, domain, &e))?;
        let mut out = Vec::new();
        for s in snaps {
            let name = s.name().map_err(|e| map_error(OP, domain, &e))?;
            let object = format!("{domain} {name}");
            let text = match lv("virDomainSnapshotGetXMLDesc", &object, || s.xml_desc(0)) {
                Ok(t) => t,
                // Deleted since the listing.
                Err(e) if matches!(kind_of_error(&e), HvErrorKind::NotFound) => continue,
                Err(e) => return Err(map_error(OP, &object, &e)),
            };
            out.push(xml::parse_snapshot(&text).map_err(|e| HvError {
                op: OP.into(),
                object,
                message: e.to_string(),
                kind: HvErrorKind::InvalidXml,
                hint: None,
            })?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn revert_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "revert to snapshot";
        let object = format!("{domain} {name}");
        let dom = self.domain(OP, domain)?;
        let snap = lv("virDomainSnapshotLookupByName", &object, || Domain::lookup_snapshot_by_name(&dom, name, 0))
            .map_err(|e| map_error(OP, &object, &e))?;
        lv("virDomainRevertToSnapshot", &object, || snap.revert(sys::VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED))
            .map_err(|e| map_error(OP, &object, &e))
    }

    fn delete_snapshot(&self, domain: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "delete snapshot";
        let object = format!("{domain} {name}");
        let dom = self.domain(OP, domain)?;
        let snap = lv("virDomainSnapshotLookupByName", &object, || Domain::lookup_snapshot_by_name(&dom, name, 0))
            .map_err(|e| map_error(OP, &object, &e))?;
        lv("virDomainSnapshotDelete", &object, || snap.delete(0)).map_err(|e| map_error(OP, &object, &e))
    }

    fn shutdown_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "shutdown domain";
        {
            let d = self.domain(OP, name)?;
            lv("virDomainShutdown", name, || d.shutdown())
        }
        .map_err(|e| settle(map_error(OP, name, &e), || self.domain_settled(name, true)))
    }

    fn destroy_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "destroy domain";
        {
            let d = self.domain(OP, name)?;
            lv("virDomainDestroy", name, || d.destroy())
        }
        .map_err(|e| settle(map_error(OP, name, &e), || self.domain_settled(name, true)))
    }

    fn undefine_domain(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "undefine domain";
        {
            let d = self.domain(OP, name)?;
            lv("virDomainUndefine", name, || d.undefine())
        }
        .map_err(|e| map_error(OP, name, &e))
    }

    fn delete_snapshot_metadata(&self, domain: &str, snapshot: &str) -> Result<(), HvError> {
        const OP: &str = "delete snapshot metadata";
        let object = format!("{domain} {snapshot}");
        let dom = self.domain(OP, domain)?;
        let snap = lv("virDomainSnapshotLookupByName", &object, || Domain::lookup_snapshot_by_name(&dom, snapshot, 0))
            .map_err(|e| map_error(OP, &object, &e))?;
        match lv("virDomainSnapshotDelete", &object, || snap.delete(sys::VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)) {
            // The test driver rejects the flag ("unsupported flags (0x2) in function
            // testDomainSnapshotDelete"); its snapshots are metadata only, so a plain delete
            // removes the same.
            Err(e) if is_unsupported(&e) && self.uri.starts_with("test") => {
                lv("virDomainSnapshotDelete", &object, || snap.delete(0))
            }
            r => r,
        }
        .map_err(|e| map_error(OP, &object, &e))
    }

    fn attach_device(&self, domain: &str, xml: &str) -> Result<(), HvError> {
        const OP: &str = "attach device";
        let dom = self.domain(OP, domain)?;
        let flags = self.device_flags(OP, &dom, domain)?;
        lv("virDomainAttachDeviceFlags", domain, || dom.attach_device_flags(xml, flags)).map_err(|e| {
            // A NIC of that MAC in the config already: what the attach would make is there.
            settle(map_error(OP, domain, &e), || {
                let mac = xml::parse_interface(xml).ok()?.mac?;
                self.has_nic(domain, mac, false)?.then_some(HvErrorKind::Exists)
            })
        })
    }

    fn detach_device(&self, domain: &str, xml: &str) -> Result<(), HvError> {
        const OP: &str = "detach device";
        let dom = self.domain(OP, domain)?;
        let flags = self.device_flags(OP, &dom, domain)?;
        lv("virDomainDetachDeviceFlags", domain, || dom.detach_device_flags(xml, flags)).map_err(|e| {
            // No NIC of that MAC, in the config nor live ("no device matching MAC address",
            // VIR_ERR_OPERATION_FAILED in libvirt 9.0): what the detach would do is done.
            settle(map_error(OP, domain, &e), || {
                let mac = xml::parse_interface(xml).ok()?.mac?;
                let live = flags & sys::VIR_DOMAIN_AFFECT_LIVE != 0;
                let present = self.has_nic(domain, mac, false)? || (live && self.has_nic(domain, mac, true)?);
                (!present).then_some(HvErrorKind::NotFound)
            })
        })?;
        if flags & sys::VIR_DOMAIN_AFFECT_LIVE != 0
            && let Some(mac) = xml::parse_interface(xml).ok().and_then(|i| i.mac)
        {
            self.wait_unplugged(&dom, domain, xml, mac)?;
        }
        Ok(())
    }

    fn domain_state(&self, name: &str) -> Result<DomainState, HvError> {
        const OP: &str = "domain state";
        let (state, _) = {
            let d = self.domain(OP, name)?;
            lv("virDomainGetState", name, || d.state())
        }
        .map_err(|e| map_error(OP, name, &e))?;
        use virt::domain::DomainState as S;
        Ok(match state {
            Enum::Known(S::Running | S::Blocked) => DomainState::Running,
            Enum::Known(S::Paused) => DomainState::Paused,
            Enum::Known(S::Shutoff) => DomainState::Shutoff,
            _ => DomainState::Other,
        })
    }

    fn wait_until(
        &self,
        until: Option<std::time::Instant>,
        done: &mut dyn FnMut() -> Result<bool, HvError>,
    ) -> Result<bool, HvError> {
        // Far enough to mean "never", near enough not to overflow `Instant`.
        let never = || std::time::Instant::now() + std::time::Duration::from_secs(86_400);
        loop {
            // Counted before the look: an event between the look and the wait is not lost.
            let since = self.events.as_ref().map(events::Events::seen);
            if done()? {
                return Ok(true);
            }
            let now = std::time::Instant::now();
            if until.is_some_and(|u| u <= now) {
                return Ok(false);
            }
            match (&self.events, since) {
                (Some(ev), Some(since)) => ev.wait(since, until.unwrap_or_else(never)),
                _ => std::thread::sleep(until.map_or(super::WAIT_LOOK, |u| (u - now).min(super::WAIT_LOOK))),
            }
        }
    }

    fn set_bandwidth(
        &self,
        domain: &str,
        mac: crate::lab::model::MacAddr,
        rate: Option<crate::lab::impair::Rate>,
    ) -> Result<(), HvError> {
        const OP: &str = "set interface bandwidth";
        let dom = self.domain(OP, domain)?;
        // libvirt: an average of 0 removes that direction's limit.
        let average = rate.map_or(0, |r| r.kbytes_per_sec());
        // Invariant: a MAC's text (hex digits and colons) has no NUL byte.
        let device = std::ffi::CString::new(mac.to_string()).expect("a MAC has no NUL byte");
        lv("virDomainSetInterfaceParameters", domain, || {
            let mut params: sys::virTypedParameterPtr = ptr::null_mut();
            let (mut n, mut max): (std::os::raw::c_int, std::os::raw::c_int) = (0, 0);
            // SAFETY: `params` grows through libvirt's own allocator and is freed by it once;
            // the parameter names are libvirt's static C strings; `dom` outlives the call.
            unsafe {
                for name in [sys::VIR_DOMAIN_BANDWIDTH_IN_AVERAGE, sys::VIR_DOMAIN_BANDWIDTH_OUT_AVERAGE] {
                    if sys::virTypedParamsAddUInt(&mut params, &mut n, &mut max, name.as_ptr(), average) < 0 {
                        sys::virTypedParamsFree(params, n);
                        return Err(VirtError::last_error());
                    }
                }
                let r = sys::virDomainSetInterfaceParameters(
                    dom.as_ptr(),
                    device.as_ptr(),
                    params,
                    n,
                    sys::VIR_DOMAIN_AFFECT_LIVE,
                );
                sys::virTypedParamsFree(params, n);
                if r < 0 { Err(VirtError::last_error()) } else { Ok(()) }
            }
        })
        .map_err(|e| map_error(OP, domain, &e))
    }

    fn domain_taps(&self, name: &str) -> Result<Vec<(crate::lab::model::MacAddr, String)>, HvError> {
        const OP: &str = "domain taps";
        let dom = self.domain(OP, name)?;
        if !lv("virDomainIsActive", name, || dom.is_active()).map_err(|e| map_error(OP, name, &e))? {
            return Err(HvError {
                op: OP.into(),
                object: name.into(),
                message: "domain is not running".into(),
                kind: HvErrorKind::NotActive,
                hint: None,
            });
        }
        let live = lv("virDomainGetXMLDesc", name, || dom.xml_desc(0)).map_err(|e| map_error(OP, name, &e))?;
        xml::live_taps(&live).map_err(|e| other(OP, name, &e.to_string()))
    }

    fn domain_addresses(&self, name: &str) -> Result<Vec<(crate::lab::model::MacAddr, std::net::Ipv4Addr)>, HvError> {
        const OP: &str = "domain addresses";
        let dom = self.domain(OP, name)?;
        let mut out = Vec::new();
        for source in [sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP, sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT] {
            // ARP fails on some host kernels ("wrong nlmsg len"); the agent needs a guest agent.
            let Ok(ifaces) = lv("virDomainInterfaceAddresses", name, || dom.interface_addresses(source, 0)) else {
                continue;
            };
            for i in ifaces {
                let Some(mac) = i.hwaddr.as_deref().and_then(|m| m.parse::<crate::lab::model::MacAddr>().ok()) else {
                    continue;
                };
                for a in &i.addrs {
                    if let Ok(ip) = a.addr.parse::<std::net::Ipv4Addr>()
                        && !out.contains(&(mac, ip))
                    {
                        out.push((mac, ip));
                    }
                }
            }
        }
        Ok(out)
    }

    fn ensure_pool(&self, name: &str, path: &str) -> Result<(), HvError> {
        const OP: &str = "ensure pool";
        let pool = match lv("virStoragePoolLookupByName", name, || self.conn.lookup_storage_pool_by_name(name)) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => {
                let xml =
                    xml::dir_pool_xml(name, std::path::Path::new(path)).map_err(|e| other(OP, name, &e.to_string()))?;
                match lv("virStoragePoolDefineXML", name, || self.conn.define_storage_pool_xml(&xml, 0)) {
                    Ok(p) => p,
                    // Defined meanwhile by another run: use it.
                    Err(e) => {
                        match lv("virStoragePoolLookupByName", name, || self.conn.lookup_storage_pool_by_name(name)) {
                            Ok(p) => p,
                            Err(_) => return Err(map_error(OP, name, &e)),
                        }
                    }
                }
            }
            Err(e) => return Err(map_error(OP, name, &e)),
        };
        if !lv("virStoragePoolIsActive", name, || pool.is_active()).map_err(|e| map_error(OP, name, &e))? {
            // Makes the folder if missing (a dir pool's build is mkdir; harmless when it exists).
            let _ = lv("virStoragePoolBuild", name, || pool.build(0));
            // Started meanwhile by another run: active is what was wanted.
            if let Err(e) = lv("virStoragePoolCreate", name, || pool.create(0))
                && !lv("virStoragePoolIsActive", name, || pool.is_active()).unwrap_or(false)
            {
                return Err(map_error(OP, name, &e));
            }
        }
        if !lv("virStoragePoolGetAutostart", name, || pool.autostart()).unwrap_or(true) {
            let _ = lv("virStoragePoolSetAutostart", name, || pool.set_autostart(true));
        }
        Ok(())
    }

    fn create_volume(&self, v: &VolumeSpec) -> Result<(), HvError> {
        const OP: &str = "create volume";
        let pool = lv("virStoragePoolLookupByName", &v.pool, || self.conn.lookup_storage_pool_by_name(&v.pool))
            .map_err(|e| map_error(OP, &v.pool, &e))?;
        // Without a refresh the pool may not know a file made since: a create would then
        // fail on the file rather than as "exists".
        let _ = lv("virStoragePoolRefresh", &v.pool, || pool.refresh(0));
        let backing = std::path::Path::new(&v.backing);
        let xml = xml::overlay_volume_xml(&v.name, backing, v.backing_format.as_str(), v.size)
            .map_err(|e| other(OP, &v.name, &e.to_string()))?;
        lv("virStorageVolCreateXML", &v.name, || virt::storage_vol::StorageVol::create_xml(&pool, &xml, 0)).map_err(
            |e| {
                // "storage vol already exists" is VIR_ERR_OPERATION_FAILED in the test driver.
                settle(map_error(OP, &v.name, &e), || {
                    pool.lookup_storage_vol_by_name(&v.name).is_ok().then_some(HvErrorKind::Exists)
                })
            },
        )?;
        Ok(())
    }

    fn upload_volume(&self, pool: &str, name: &str, data: &[u8]) -> Result<(), HvError> {
        const OP: &str = "upload volume";
        let p = lv("virStoragePoolLookupByName", pool, || self.conn.lookup_storage_pool_by_name(pool))
            .map_err(|e| map_error(OP, pool, &e))?;
        let _ = lv("virStoragePoolRefresh", pool, || p.refresh(0));
        // A volume of that name is a leftover of an interrupted upload: never trust it.
        if let Ok(old) = lv("virStorageVolLookupByName", name, || p.lookup_storage_vol_by_name(name)) {
            lv("virStorageVolDelete", name, || old.delete(0)).map_err(|e| map_error(OP, name, &e))?;
        }
        let xml = xml::raw_volume_xml(name, data.len() as u64).map_err(|e| other(OP, name, &e.to_string()))?;
        let vol = lv("virStorageVolCreateXML", name, || virt::storage_vol::StorageVol::create_xml(&p, &xml, 0))
            .map_err(|e| map_error(OP, name, &e))?;
        let sent = (|| -> Result<(), VirtError> {
            let stream = Stream::new(&self.conn, 0)?;
            lv("virStorageVolUpload", name, || vol.upload(&stream, 0, data.len() as u64, 0))?;
            let mut rest = data;
            while !rest.is_empty() {
                let n = usize::try_from(stream.send(rest)?).unwrap_or(0).min(rest.len());
                rest = &rest[n..];
            }
            stream.finish()
        })();
        if let Err(e) = sent {
            let _ = vol.delete(0);
            return Err(map_error(OP, name, &e));
        }
        Ok(())
    }

    fn clone_volume(&self, pool: &str, from: &str, to: &str) -> Result<(), HvError> {
        const OP: &str = "copy volume";
        let p = lv("virStoragePoolLookupByName", pool, || self.conn.lookup_storage_pool_by_name(pool))
            .map_err(|e| map_error(OP, pool, &e))?;
        let src = lv("virStorageVolLookupByName", from, || p.lookup_storage_vol_by_name(from))
            .map_err(|e| map_error(OP, from, &e))?;
        let capacity = lv("virStorageVolGetInfo", from, || src.info()).map_err(|e| map_error(OP, from, &e))?.capacity;
        if let Ok(old) = lv("virStorageVolLookupByName", to, || p.lookup_storage_vol_by_name(to)) {
            lv("virStorageVolDelete", to, || old.delete(0)).map_err(|e| map_error(OP, to, &e))?;
        }
        let xml = xml::raw_volume_xml(to, capacity).map_err(|e| other(OP, to, &e.to_string()))?;
        lv("virStorageVolCreateXMLFrom", to, || virt::storage_vol::StorageVol::create_xml_from(&p, &xml, &src, 0))
            .map_err(|e| map_error(OP, to, &e))?;
        Ok(())
    }

    fn download_volume(&self, pool: &str, name: &str) -> Result<Vec<u8>, HvError> {
        const OP: &str = "download volume";
        let p = lv("virStoragePoolLookupByName", pool, || self.conn.lookup_storage_pool_by_name(pool))
            .map_err(|e| map_error(OP, pool, &e))?;
        let v = lv("virStorageVolLookupByName", name, || p.lookup_storage_vol_by_name(name))
            .map_err(|e| map_error(OP, name, &e))?;
        self.download(&v, name)
    }

    fn storage_pools(&self) -> Result<Vec<StoragePoolInfo>, HvError> {
        const OP: &str = "list storage pools";
        let pools = lv("virConnectListAllStoragePools", &self.uri, || self.conn.list_all_storage_pools(0))
            .map_err(|e| map_error(OP, &self.uri, &e))?;
        let mut out = Vec::new();
        for p in pools {
            let Ok(name) = lv("virStoragePoolGetName", &self.uri, || p.name()) else { continue };
            // Gone between the listing and the call: skipped, as if listed a moment later.
            let active = match lv("virStoragePoolIsActive", &name, || p.is_active()) {
                Ok(a) => a,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(map_error(OP, &name, &e)),
            };
            let text = match lv("virStoragePoolGetXMLDesc", &name, || p.xml_desc(0)) {
                Ok(t) => t,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(map_error(OP, &name, &e)),
            };
            let path = xml::parse_pool_path(&text).ok().map(|p| p.trim_end_matches('/').to_owned());
            out.push(StoragePoolInfo { name, active, path });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn refresh_pool(&self, name: &str) -> Result<(), HvError> {
        const OP: &str = "refresh pool";
        let pool = lv("virStoragePoolLookupByName", name, || self.conn.lookup_storage_pool_by_name(name))
            .map_err(|e| map_error(OP, name, &e))?;
        lv("virStoragePoolRefresh", name, || pool.refresh(0)).map_err(|e| map_error(OP, name, &e))
    }

    fn volume_by_path(&self, path: &str) -> Result<StorageVolumeInfo, HvError> {
        const OP: &str = "look up volume";
        let vol = lv("virStorageVolLookupByPath", path, || self.conn.lookup_storage_vol_by_path(path))
            .map_err(|e| map_error(OP, path, &e))?;
        let name = lv("virStorageVolGetName", path, || vol.name()).map_err(|e| map_error(OP, path, &e))?;
        let pool = lv("virStoragePoolLookupByVolume", path, || vol.lookup_storage_pool())
            .and_then(|p| lv("virStoragePoolGetName", path, || p.name()))
            .map_err(|e| map_error(OP, path, &e))?;
        let text = lv("virStorageVolGetXMLDesc", path, || vol.xml_desc(0)).map_err(|e| map_error(OP, path, &e))?;
        let bad = |e: xml::XmlError| other(OP, path, &e.to_string());
        let (format, capacity) = xml::parse_volume_info(&text).map_err(bad)?;
        let backing = xml::parse_volume_backing(&text).map_err(bad)?;
        let key = xml::parse_volume_key(&text).map_err(bad)?;
        Ok(StorageVolumeInfo { pool, name, format, capacity, backing, key })
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<(), HvError> {
        const OP: &str = "delete volume";
        let p = lv("virStoragePoolLookupByName", pool, || self.conn.lookup_storage_pool_by_name(pool))
            .map_err(|e| map_error(OP, pool, &e))?;
        let _ = lv("virStoragePoolRefresh", pool, || p.refresh(0));
        let vol = lv("virStorageVolLookupByName", name, || p.lookup_storage_vol_by_name(name))
            .map_err(|e| map_error(OP, name, &e))?;
        lv("virStorageVolDelete", name, || vol.delete(0)).map_err(|e| map_error(OP, name, &e))
    }
}

fn other(op: &str, object: &str, message: &str) -> HvError {
    HvError { op: op.into(), object: object.into(), message: message.into(), kind: HvErrorKind::Other, hint: None }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// libvirt's message when the kernel lacks sfq (seen on this project's CI host at the
    /// start of a domain with <bandwidth>) gets a hint naming the modules.
    #[test]
    fn bandwidth_without_kernel_qdiscs_has_a_hint() {
        let msg = "internal error: Child process (tc qdisc add dev vnet0 parent 1:1 handle 2: sfq perturb 10) \
                   unexpected exit status 2: Error: Specified qdisc kind is unknown.";
        let hint = hint_for(HvErrorKind::Other, msg).unwrap();
        assert!(hint.contains("sch_sfq") && hint.contains("rate:"), "{hint}");
        assert_eq!(hint_for(HvErrorKind::Other, "some other failure"), None);
    }

    #[test]
    fn uri_names_a_host_or_not() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("test:///default"));
        assert!(!is_local_uri("qemu+ssh://root@h/system"));
        assert!(!is_local_uri("qemu+tcp://127.0.0.1/system"));
    }
}

#[cfg(test)]
mod connect_hint_tests {
    /// An ssh transport's failure points at ssh and the host, not at the local daemon.
    #[test]
    fn an_ssh_uri_gets_an_ssh_hint() {
        let h = super::connect_hint("qemu+ssh://root@10.77.0.13/system?keyfile=/k").unwrap();
        assert!(h.contains("`ssh root@10.77.0.13`") && h.contains("libvirtd runs there"), "{h}");
        assert!(super::connect_hint("qemu+libssh2://h1/system").unwrap().contains("`ssh h1`"));
        assert!(super::connect_hint("qemu:///system").unwrap().starts_with("is libvirtd running?"));
        assert!(super::connect_hint("qemu+tcp://h1/system").unwrap().starts_with("is libvirtd running?"));
    }
}
