//! libvirt's domain events, so that waiting for a domain (to stop, to release a NIC) wakes when
//! libvirt reports a change instead of sleeping between looks.
//!
//! libvirt delivers events through an event loop the client registers before it opens a
//! connection (`virEventRegisterDefaultImpl`) and runs on a thread of its own
//! (`virEventRunDefaultImpl`), <https://libvirt.org/html/libvirt-libvirt-event.html>. Each
//! connection registers two callbacks for every domain (`virConnectDomainEventRegisterAny`
//! with no domain): `VIR_DOMAIN_EVENT_ID_LIFECYCLE` (started, suspended, stopped, ...) and
//! `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED` (a hot-unplug the guest completed). A callback only
//! bumps a counter and wakes the waiters; the waiter then looks at the domain again, so an
//! event of another domain costs one look, and a missed event (a connection whose events
//! stop) costs at most [`RECHECK`].

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::sys;

/// The longest a waiter goes without looking, events or not: bounds the cost of an event
/// that never comes (a driver or connection that does not deliver them).
pub const RECHECK: Duration = Duration::from_secs(1);

/// Whether libvirt's default event loop is registered and running (once per process, before
/// the first connection is opened: a connection opened earlier gets no events).
pub fn ensure_loop() -> bool {
    static LOOP: OnceLock<bool> = OnceLock::new();
    *LOOP.get_or_init(|| {
        // SAFETY: called once per process (OnceLock), before any connection is opened here.
        if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
            return false;
        }
        std::thread::Builder::new()
            .name("libvirt-events".into())
            // SAFETY: the default implementation is registered above; running it on one
            // thread for the life of the process is its intended use.
            .spawn(|| while unsafe { sys::virEventRunDefaultImpl() } >= 0 {})
            .is_ok()
    })
}

/// A counter of the domain events seen on one connection, and the waiters on it.
#[derive(Default)]
struct Shared {
    seen: Mutex<u64>,
    changed: Condvar,
}

impl Shared {
    fn bump(&self) {
        // A poisoned lock only means a waiter panicked; the counter is still a counter.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        *seen = seen.wrapping_add(1);
        self.changed.notify_all();
    }
}

/// The domain-event callbacks of one connection; deregistered on drop.
pub struct Events {
    conn: Connect,
    shared: Arc<Shared>,
    ids: Vec<c_int>,
}

impl Events {
    /// Registers the callbacks on `conn`. `None` when the event loop is not running or the
    /// driver refuses both registrations (waiters then look every [`RECHECK`]).
    pub fn register(conn: &Connect) -> Option<Events> {
        if !ensure_loop() {
            return None;
        }
        let shared = Arc::new(Shared::default());
        let mut ids = Vec::new();
        let lifecycle: sys::virConnectDomainEventCallback = Some(on_lifecycle);
        let removed: sys::virConnectDomainEventDeviceRemovedCallback = Some(on_device_removed);
        // SAFETY: libvirt calls a registered callback with the signature of its event ID
        // (VIR_DOMAIN_EVENT_CALLBACK in libvirt-domain.h casts the same way); both pointer
        // types are `Option<unsafe extern "C" fn>` of the same size.
        let generic: [(sys::virDomainEventID, sys::virConnectDomainEventGenericCallback); 2] = unsafe {
            [
                (
                    sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                    std::mem::transmute::<sys::virConnectDomainEventCallback, sys::virConnectDomainEventGenericCallback>(
                        lifecycle,
                    ),
                ),
                (
                    sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                    std::mem::transmute::<
                        sys::virConnectDomainEventDeviceRemovedCallback,
                        sys::virConnectDomainEventGenericCallback,
                    >(removed),
                ),
            ]
        };
        for (event, cb) in generic {
            let opaque = Arc::into_raw(Arc::clone(&shared)) as *mut c_void;
            // SAFETY: `conn` is open; `opaque` is an `Arc<Shared>` reference that libvirt owns
            // from here and gives back to `free_shared` when the callback is deregistered (or
            // at once when the registration fails).
            let id = unsafe {
                sys::virConnectDomainEventRegisterAny(
                    conn.as_ptr(),
                    ptr::null_mut(),
                    event as c_int,
                    cb,
                    opaque,
                    Some(free_shared),
                )
            };
            if id >= 0 {
                ids.push(id);
            } else {
                // SAFETY: the registration failed, so libvirt did not take the reference.
                drop(unsafe { Arc::from_raw(opaque as *const Shared) });
            }
        }
        (!ids.is_empty()).then(|| Events { conn: conn.clone(), shared, ids })
    }

    /// The number of events seen so far: take it before looking at the domain, then
    /// [`Events::wait`] with it, and an event between the look and the wait is not lost.
    pub fn seen(&self) -> u64 {
        *self.shared.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until an event after `since` arrives, `until` passes, or [`RECHECK`] passed.
    pub fn wait(&self, since: u64, until: Instant) {
        let until = until.min(Instant::now() + RECHECK);
        let mut seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        while *seen == since {
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
            seen = match self.shared.changed.wait_timeout(seen, left) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for &id in &self.ids {
            // SAFETY: `id` was returned by a registration on this connection, which `self.conn`
            // keeps open; libvirt then frees the opaque reference through `free_shared`.
            unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), id) };
        }
    }
}

/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`: any domain started, stopped, paused, defined, ...
unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Arc<Shared>` reference given at registration, alive until
    // `free_shared` runs, which libvirt does only after the last callback.
    unsafe { &*(opaque as *const Shared) }.bump();
    0
}

/// `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED`: a guest let go of a hot-unplugged device.
unsafe extern "C" fn on_device_removed(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: as in `on_lifecycle`.
    unsafe { &*(opaque as *const Shared) }.bump();
}

/// libvirt's `virFreeCallback` for the opaque reference of a registration.
unsafe extern "C" fn free_shared(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Arc::into_raw` in `Events::register`, freed once by libvirt.
    drop(unsafe { Arc::from_raw(opaque as *const Shared) });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait with no event returns at its deadline; an event wakes it at once.
    #[test]
    fn an_event_wakes_a_waiter_and_none_lets_it_time_out() {
        let shared = Arc::new(Shared::default());
        let conn = Connect::open(Some("test:///default")).expect("the test driver opens");
        let events = Events { conn, shared: Arc::clone(&shared), ids: Vec::new() };
        let t0 = Instant::now();
        events.wait(events.seen(), Instant::now() + Duration::from_millis(50));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let since = events.seen();
        let bumper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            shared.bump();
        });
        let t0 = Instant::now();
        events.wait(since, Instant::now() + Duration::from_secs(30));
        assert!(t0.elapsed() < RECHECK, "woken by the event, not the recheck");
        assert_eq!(events.seen(), since + 1);
        bumper.join().expect("bumper thread");
    }
}
