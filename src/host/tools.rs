//! The programs topo runs on the machine of a libvirt host, as a closed vocabulary
//! ([`Tool`]): each with the Debian package that installs it and what topo uses it for. What
//! a machine lacks of them is read when the host is observed ([`crate::host::machine::Machine::missing_tools`],
//! kept in `Observed::tools` as [`MachineTools`]), so that a plan refuses a host that lacks
//! one its share of the lab needs (`topo::plan::host_tools_missing`) before anything changes,
//! rather than failing later as an unreachable machine, at the host lock, at netem or at
//! verification.
//!
//! On another host, reached over ssh, every tool is asked in one round trip
//! ([`PROBE_SCRIPT`], read by [`parse_probe`]); on this machine `PATH` is searched as
//! `execvp` searches it, with no process ([`missing_on_path`]).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

/// A program topo runs on the machine of a host. Ordered as listed (messages list missing
/// tools in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    /// The POSIX shell: every command of several steps is one `sh -c` script.
    Sh,
    /// iproute2's `ip`: network devices, addresses, VXLAN tunnels.
    Ip,
    /// iproute2's `bridge`: a tunnel's forwarding entries to its peers.
    Bridge,
    /// iproute2's `tc`: netem on the VMs' taps; libvirt's `<bandwidth>` (`rate`).
    Tc,
    /// iputils' `arping`: the ARP proof of each NIC on another host.
    Arping,
    /// `ndisc6` (package `ndisc6`): the NDP proof of each IPv6 address on another host.
    Ndisc6,
    /// `sed`: tags each `arping` and `ndisc6` line with its target.
    Sed,
    /// util-linux's `flock`: the host lock held on another host.
    Flock,
    /// coreutils' `mkdir`: the host lock's folder (`/run/lock`).
    Mkdir,
    /// coreutils' `cat`: the host's routes and kernel config; keeps the host lock.
    Cat,
    /// coreutils' `base64`: image headers and the kernel config, sent back as text.
    Base64,
    /// coreutils' `stat`: file identities and image sizes.
    Stat,
    /// coreutils' `head`: the header of each image.
    Head,
    /// coreutils' `tail`: an image's backing file name.
    Tail,
    /// coreutils' `uname`: the running kernel's config file (`/boot/config-RELEASE`).
    Uname,
    /// coreutils' `cut`: the names of the VXLAN devices.
    Cut,
}

impl Tool {
    /// Every tool, in order.
    pub const ALL: [Tool; 16] = [
        Tool::Sh,
        Tool::Ip,
        Tool::Bridge,
        Tool::Tc,
        Tool::Arping,
        Tool::Ndisc6,
        Tool::Sed,
        Tool::Flock,
        Tool::Mkdir,
        Tool::Cat,
        Tool::Base64,
        Tool::Stat,
        Tool::Head,
        Tool::Tail,
        Tool::Uname,
        Tool::Cut,
    ];

    /// What topo runs on another host's machine, reached over ssh: every tool (its reads,
    /// tunnels, netem, the ARP and NDP proofs and the host lock are all commands there).
    pub const REMOTE: [Tool; 16] = Tool::ALL;

    /// What topo runs on this machine when it is the libvirt host's: the shell and iproute2
    /// (`ip`, `bridge` and `cut` for tunnels, `tc` for netem). Devices, routes, the kernel
    /// and files are read directly (sysfs, `/proc`), the ARP proof is topo's own frames and
    /// the host lock is a file.
    pub const LOCAL: [Tool; 5] = [Tool::Sh, Tool::Ip, Tool::Bridge, Tool::Tc, Tool::Cut];

    /// The program's name, as `PATH` finds it.
    pub const fn program(self) -> &'static str {
        match self {
            Tool::Sh => "sh",
            Tool::Ip => "ip",
            Tool::Bridge => "bridge",
            Tool::Tc => "tc",
            Tool::Arping => "arping",
            Tool::Ndisc6 => "ndisc6",
            Tool::Sed => "sed",
            Tool::Flock => "flock",
            Tool::Mkdir => "mkdir",
            Tool::Cat => "cat",
            Tool::Base64 => "base64",
            Tool::Stat => "stat",
            Tool::Head => "head",
            Tool::Tail => "tail",
            Tool::Uname => "uname",
            Tool::Cut => "cut",
        }
    }

    /// The Debian (and Ubuntu) package that installs it.
    pub const fn package(self) -> &'static str {
        match self {
            Tool::Sh => "dash",
            Tool::Ip | Tool::Bridge | Tool::Tc => "iproute2",
            Tool::Arping => "iputils-arping",
            Tool::Ndisc6 => "ndisc6",
            Tool::Sed => "sed",
            Tool::Flock => "util-linux",
            Tool::Mkdir | Tool::Cat | Tool::Base64 | Tool::Stat | Tool::Head | Tool::Tail | Tool::Uname | Tool::Cut => {
                "coreutils"
            }
        }
    }

    /// What topo uses it for, for messages.
    pub const fn purpose(self) -> &'static str {
        match self {
            Tool::Sh => "runs topo's commands there",
            Tool::Ip => "network devices, addresses and VXLAN tunnels",
            Tool::Bridge => "the tunnels' forwarding entries to their peers",
            Tool::Tc => "link impairment: netem on the taps, libvirt's `rate`",
            Tool::Arping => "the ARP proof of each NIC",
            Tool::Ndisc6 => "the NDP proof of each NIC's IPv6 address",
            Tool::Sed => "the ARP and NDP proofs' output",
            Tool::Flock => "the host lock held on the host",
            Tool::Mkdir => "the host lock's folder",
            Tool::Cat => "routes, the kernel's config, the host lock",
            Tool::Base64 => "image headers and the kernel's config",
            Tool::Stat => "file identities and image sizes",
            Tool::Head => "image headers",
            Tool::Tail => "backing file names in image headers",
            Tool::Uname => "the running kernel's config",
            Tool::Cut => "reading the VXLAN tunnels",
        }
    }

    /// The tool whose program is `program`.
    pub fn of_program(program: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.program() == program)
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.program())
    }
}

/// What the machine of a host lacks of the tools topo runs there, as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineTools {
    /// Whether the machine is another host's, reached by commands (over ssh): topo then reads
    /// it with `ip` and coreutils, proves its NICs with `arping` and holds its lock with
    /// `flock` ([`Tool::REMOTE`]); else it is this machine ([`Tool::LOCAL`]).
    pub remote: bool,
    /// The tools among those topo runs there that `PATH` does not find.
    pub missing: BTreeSet<Tool>,
}

/// The probe run on another host: its arguments are program names; it prints each one the
/// shell's `PATH` does not find, one a line. `command -v` is the shell's own (POSIX.1-2017
/// XCU `command`), so nothing else need be installed for it to answer.
pub const PROBE_SCRIPT: &str = r#"for t; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done"#;

/// The argv of the probe for `tools`: `sh -c PROBE_SCRIPT sh TOOL...`.
pub fn probe_argv(tools: &[Tool]) -> Vec<&'static str> {
    let mut argv = vec!["sh", "-c", PROBE_SCRIPT, "sh"];
    argv.extend(tools.iter().map(|t| t.program()));
    argv
}

/// What the probe of `asked` said: its exit status `code` and its stdout `text`. Exit 0: the
/// lines that name an asked program are the missing tools (anything else a login script may
/// print is ignored). Exit 127: the login shell found no `sh` (POSIX "command not found").
/// Any other status: `None`, nothing can be told.
pub fn parse_probe(asked: &[Tool], code: i32, text: &str) -> Option<BTreeSet<Tool>> {
    match code {
        0 => Some(text.lines().filter_map(|l| asked.iter().copied().find(|t| t.program() == l.trim())).collect()),
        crate::host::runner::EXIT_NOT_FOUND => Some(BTreeSet::from([Tool::Sh])),
        _ => None,
    }
}

/// Where `execvp` looks when `PATH` is not set (glibc's default, `confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The tools of `tools` that no folder of `path` (a `PATH` value; `None`: unset, then
/// `/bin:/usr/bin` as `execvp` takes it) holds as an executable file (symlinks followed).
pub fn missing_on_path(path: Option<&OsStr>, tools: &[Tool]) -> BTreeSet<Tool> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let dirs: Vec<_> = std::env::split_paths(path).collect();
    let found = |t: &Tool| {
        dirs.iter().any(|d| {
            // An empty entry is the current folder, as execvp takes it.
            let d = if d.as_os_str().is_empty() { Path::new(".") } else { d.as_path() };
            std::fs::metadata(d.join(t.program())).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    };
    tools.iter().copied().filter(|t| !found(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tool_names_its_program_package_and_purpose() {
        for t in Tool::ALL {
            assert_eq!(Tool::of_program(t.program()), Some(t));
            assert!(!t.package().is_empty() && !t.purpose().is_empty());
        }
        let mut sorted = Tool::ALL.to_vec();
        sorted.sort();
        assert_eq!(sorted, Tool::ALL, "ALL is in the enum's order");
        assert_eq!(Tool::of_program("ssh"), None);
        assert_eq!((Tool::Tc.package(), Tool::Flock.package()), ("iproute2", "util-linux"));
    }

    /// The probe's answer: the missing ones of those asked (stray lines ignored); no `sh` is
    /// exit 127; anything else cannot be told.
    #[test]
    fn the_probe_answer_is_read() {
        let asked = [Tool::Ip, Tool::Arping, Tool::Flock];
        assert_eq!(parse_probe(&asked, 0, "arping\nflock\n"), Some(BTreeSet::from([Tool::Arping, Tool::Flock])));
        assert_eq!(parse_probe(&asked, 0, "welcome\ncut\n"), Some(BTreeSet::new()), "not asked: ignored");
        assert_eq!(parse_probe(&asked, 127, ""), Some(BTreeSet::from([Tool::Sh])));
        assert_eq!(parse_probe(&asked, 1, "arping\n"), None);
        assert_eq!(probe_argv(&asked), ["sh", "-c", PROBE_SCRIPT, "sh", "ip", "arping", "flock"]);
    }

    /// `PATH` searched as execvp does: an executable file in any folder; a file without an
    /// execute bit or a folder of that name is none.
    #[test]
    fn path_is_searched_without_a_process() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let exe = |dir: &Path, name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        exe(a.path(), "ip", 0o755);
        exe(b.path(), "bridge", 0o700);
        exe(b.path(), "tc", 0o644);
        std::fs::create_dir(a.path().join("sh")).unwrap();
        std::os::unix::fs::symlink(b.path().join("bridge"), a.path().join("cut")).unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        let missing = missing_on_path(Some(&path), &Tool::LOCAL);
        assert_eq!(missing, BTreeSet::from([Tool::Sh, Tool::Tc]));
    }
}
