//! The programs a host's share of the lab needs on the host's machine
//! (`crate::host::tools`), and the refusal of a share whose machine lacks any
//! (`topo::plan::host_tools_missing`): one problem per host, naming every missing program,
//! what topo uses it for and the packages that install it, before anything changes rather
//! than as an unreachable machine, a failed host lock, netem or verification later.
//!
//! What a share needs depends on what it holds and on the machine:
//! - another host's machine, reached over ssh: `sh`, `ip` and coreutils always (every read
//!   of the host is a command there), `flock` and `mkdir` (the host lock held there);
//!   `arping` and `sed` when a NIC there is proven by ARP; `ndisc6` and `sed` when such a
//!   NIC is on a network with `subnet6` (its SLAAC address is proven by NDP);
//! - either machine: `sh`, `ip`, `bridge` and `cut` when the share has tunnels; `sh` and
//!   `tc` when a NIC asks for netem or the share has wires (`links:`); `tc` when a NIC has a
//!   `rate` (libvirt's `<bandwidth>` runs it on the host).

use std::collections::BTreeSet;

use crate::diag::{Code, Problem};
use crate::host::observed::Observed;
use crate::host::tools::Tool;
use crate::lab::model::{HostName, Lab, NetworkKind, Verify};

use super::vm::wanted_netem;

/// The host of a share of a lab across hosts (its VMs' and networks' host); `None` for a lab
/// on one host (or a share that holds nothing).
fn host_of(lab: &Lab) -> Option<&HostName> {
    if !lab.is_multi_host() {
        return None;
    }
    lab.vms.values().map(|vm| &vm.host).chain(lab.networks.values().map(|n| &n.instance_host)).next()
}

/// The tools share `lab` needs on its host's machine: another host's (`remote`) or this one.
pub(super) fn needed(lab: &Lab, remote: bool) -> BTreeSet<Tool> {
    let tunnels = lab.share_host().is_some_and(|h| !lab.tunnels_on(h).is_empty());
    let netem = lab.nics().any(|(_, n)| wanted_netem(n).is_some());
    let rate = lab.nics().any(|(_, n)| n.impairment.rate.is_some());
    let proof = lab.nics().any(|(_, n)| n.verify == Verify::Arp);
    // An address proven by NDP: a NIC proven at all, on a network with `subnet6` (the
    // targets `verify::NicTarget::ipv6_of` makes).
    let proof6 = lab.nics().any(|(_, n)| {
        n.verify == Verify::Arp
            && lab
                .networks
                .get(&n.network)
                .is_some_and(|net| matches!(&net.kind, NetworkKind::Managed(m) if m.subnet6.is_some()))
    });
    let mut out = BTreeSet::new();
    if remote {
        out.extend([
            Tool::Sh,
            Tool::Ip,
            Tool::Cat,
            Tool::Base64,
            Tool::Stat,
            Tool::Head,
            Tool::Tail,
            Tool::Uname,
            Tool::Flock,
            Tool::Mkdir,
        ]);
        if proof {
            out.extend([Tool::Arping, Tool::Sed]);
        }
        if proof6 {
            out.extend([Tool::Ndisc6, Tool::Sed]);
        }
    }
    if tunnels {
        out.extend([Tool::Sh, Tool::Ip, Tool::Bridge, Tool::Cut]);
    }
    // A wire's taps are joined by `tc` in an `sh` script ([`crate::host::tc::join_script`]);
    // on another host its ends are proven by `arping` on the taps.
    if netem || !lab.wires.is_empty() {
        out.extend([Tool::Sh, Tool::Tc]);
    }
    if remote
        && lab
            .wires
            .values()
            .flat_map(|w| &w.ends)
            .any(|e| lab.vms.get(&e.vm).is_some_and(|vm| vm.cloud_init.is_some()))
    {
        out.extend([Tool::Arping, Tool::Sed]);
    }
    if rate {
        out.insert(Tool::Tc);
    }
    out
}

/// The tools share `lab` needs that its host's machine lacks, as observed; empty when the
/// machine could not be asked.
pub(super) fn lacking(lab: &Lab, observed: &Observed) -> BTreeSet<Tool> {
    let Some(t) = &observed.tools else { return BTreeSet::new() };
    needed(lab, t.remote).intersection(&t.missing).copied().collect()
}

/// Whether the machine's network devices cannot be read for lack of a tool: another host's
/// machine without `sh` or `ip` (then its taps, and so netem, are out of reach too).
pub(super) fn devices_unread(observed: &Observed, lacking: &BTreeSet<Tool>) -> bool {
    observed.tools.as_ref().is_some_and(|t| t.remote) && (lacking.contains(&Tool::Sh) || lacking.contains(&Tool::Ip))
}

/// The refusal of share `lab` when its host's machine lacks `lacking` (what [`lacking`]
/// found): at the host's entry under `hosts:`, or at the lab's name for a lab on one host.
pub(super) fn refusal(lab: &Lab, observed: &Observed, lacking: &BTreeSet<Tool>) -> Option<Problem> {
    if lacking.is_empty() {
        return None;
    }
    let remote = observed.tools.as_ref().is_some_and(|t| t.remote);
    let host = host_of(lab);
    let span = host.and_then(|h| lab.hosts.get(h)).map_or(lab.name_span, |h| h.span);
    let machine = match (host, remote) {
        (Some(h), _) => format!("host `{h}`"),
        (None, true) => "the libvirt host".to_owned(),
        (None, false) => "this machine (the libvirt host)".to_owned(),
    };
    let one = lacking.len() == 1;
    let tools: Vec<String> = lacking.iter().map(|t| format!("`{t}` ({})", t.purpose())).collect();
    let mut packages: Vec<&str> = Vec::new();
    for p in lacking.iter().map(|t| t.package()) {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    let (there, path) = if remote { (" there", "the ssh login's PATH there") } else { ("", "topo's PATH") };
    Some(Problem::at(
        Code::HostToolsMissing,
        span,
        format!(
            "{machine} lacks {} that topo runs{there} for this lab: {}",
            if one { "a program" } else { "programs" },
            tools.join(", ")
        ),
        if host.is_some() { "needed on this host" } else { "needed for this lab" },
        format!(
            "install {}{there}: `apt install {}` (Debian/Ubuntu package{}); if {} installed, put {} folder on {path}",
            if one { "it" } else { "them" },
            packages.join(" "),
            if packages.len() == 1 { "" } else { "s" },
            if one { "it is" } else { "they are" },
            if one { "its" } else { "their" },
        ),
    ))
}
