//! A domain's serial console as a libvirt stream (virDomainOpenConsole), for `topo console`.
//! Works on remote URIs too: the bytes travel over the libvirt connection.

use virt::stream::Stream;

use super::{LibvirtHypervisor, map_error};
use crate::host::hypervisor::HvError;

/// A console stream: `recv` reads what the guest writes on its serial port, `send` types.
pub struct Console {
    stream: Stream,
}

impl Console {
    /// Blocks until the guest writes; `Ok(0)` when the console closed (the domain stopped).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, HvError> {
        let n = self.stream.recv(buf).map_err(|e| map_error("read console", "", &e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
    /// Sends all of `data` to the guest's serial port.
    pub fn send(&self, mut data: &[u8]) -> Result<(), HvError> {
        while !data.is_empty() {
            let n = self.stream.send(data).map_err(|e| map_error("write console", "", &e))?;
            let n = usize::try_from(n).unwrap_or(0).min(data.len());
            if n == 0 {
                break;
            }
            data = &data[n..];
        }
        Ok(())
    }
}

impl LibvirtHypervisor {
    /// Opens the first console of running domain `name` (its serial port). `force` takes
    /// the console over from another client (virsh console --force).
    pub fn open_console(&self, name: &str, force: bool) -> Result<Console, HvError> {
        let dom = self.conn.lookup_domain_by_name(name).map_err(|e| map_error("open console", name, &e))?;
        let stream = Stream::new(&self.conn, 0).map_err(|e| map_error("open console", name, &e))?;
        let flags = if force { virt::sys::VIR_DOMAIN_CONSOLE_FORCE } else { 0 };
        dom.open_console(None, &stream, flags).map_err(|e| {
            let mut err = map_error("open console", name, &e);
            err.hint = Some(
                "the VM must be running and have a serial console of type pty (VMs defined by an older topo \
                 log their console to a file: apply again after a replace, or read that file)"
                    .into(),
            );
            err
        })?;
        Ok(Console { stream })
    }
}
