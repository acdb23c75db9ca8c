//! VM rules: names, hypervisor, memory, vCPUs, direct kernel boot and disk (paths resolved
//! against the lab file's folder). Each VM's NICs are checked by `nic`.

use std::collections::BTreeMap;

use miette::SourceSpan;
use std::path::{Path, PathBuf};

use super::lab::checked_name;
use super::network::NetInfo;
use super::{Checker, LeftOut, cloud_init, nic};
use crate::diag::Code;
use crate::lab::model::{self, ByteSize, LabName, SizeError, VirtType, VmName};
use crate::lab::spec::{
    BootSpec, DiskSpec, HypervisorSpec, ImageFormatSpec, ReadySpec, Spanned, SpannedMap, VmSpec, VmStateSpec,
};

/// Default VM memory.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::from_mib(512);
/// Smallest memory topo accepts: below this no stock distribution kernel boots.
pub const MIN_MEMORY: ByteSize = ByteSize::from_mib(64);
/// Largest memory topo accepts (1 TiB): a guard against typos such as `512GiB` for `512MiB`.
pub const MAX_MEMORY: ByteSize = ByteSize::from_bytes(ByteSize::TIB);
/// Largest vCPU count topo accepts: the limit of the `pc` (i440fx) machine topo's domains
/// use (QEMU hw/i386/pc_piix.c: `m->max_cpus = 255`; QEMU refuses more at start: "Invalid
/// SMP CPUs 256. The max CPUs supported by machine 'pc-i440fx-...' is 255").
pub const MAX_VCPUS: u32 = 255;

/// What every VM is checked against: the lab's name and prefix, its networks, cloud-init
/// defaults and hosts.
pub(super) struct LabContext<'a> {
    pub(super) lab_name: Option<&'a LabName>,
    pub(super) prefix: &'a str,
    pub(super) nets: &'a BTreeMap<String, NetInfo>,
    pub(super) guests: &'a cloud_init::Defaults<'a>,
    pub(super) hosts: &'a super::hosts::Hosts,
    /// The lab's `ready:`, for VMs without their own.
    pub(super) ready: Option<&'a Spanned<Vec<Spanned<ReadySpec>>>>,
}

/// Checks every VM entry and its NICs; returns the valid VMs, a group's members each a VM of
/// its own (docs/lab-file.md, "VM groups"), and the valid groups.
pub(super) fn check_all(
    c: &mut Checker,
    vms: &SpannedMap<VmSpec>,
    lab: &LabContext<'_>,
    seen: &mut nic::Nics,
) -> (BTreeMap<VmName, model::Vm>, BTreeMap<VmName, model::VmGroup>) {
    let LabContext { prefix, guests, hosts, nets, ready, .. } = *lab;
    let mut model_vms = BTreeMap::new();
    let mut groups = BTreeMap::new();
    let mut names = Names::default();
    for (key, vm) in vms.iter() {
        let name = checked_name(
            c,
            key,
            Code::VmName,
            "VM name",
            "lowercase letters, digits, '-' and '_'",
            model::MAX_RESOURCE_NAME,
            VmName::new,
        );
        let body = check_vm_body(c, key, vm);
        // The VMs of this entry: itself, or its group's members (none for a group with a
        // problem of its own: its other keys are still checked once, below).
        let before_group = c.count();
        let (members, group) = match &vm.count {
            None => (name.iter().map(|n| (n.clone(), None)).collect(), None),
            Some(count) => {
                check_group_keys(c, key, vm);
                match (check_count(c, key, count), &name) {
                    (Some(n), Some(g)) => {
                        let group = model::VmGroup { name: g.clone(), count: n, span: c.span(key) };
                        // Invariant: `check_count` refused a count whose longest name is too long.
                        let members = group.members().unwrap_or_default();
                        let members = members
                            .into_iter()
                            .zip(1..)
                            .map(|(m, index)| (m, Some(model::GroupMember { group: g.clone(), index })))
                            .collect();
                        (members, Some(group))
                    }
                    _ => (Vec::new(), None),
                }
            }
        };
        // A key the members cannot share would be refused again for each (a duplicate MAC).
        let shared_refused = c.count() > before_group;
        // A name given twice is one problem; its VM is left out (its NICs would repeat it as
        // a duplicate derived MAC).
        let clashed = names.add(c, key, &vm.count, &members, group.as_ref());
        let members: Vec<_> = members.into_iter().filter(|(m, _)| !clashed.contains(m.as_str())).collect();
        let host = hosts.place(c, vm.host.as_ref(), &format!("VM `{}`", key.value));
        // Checked once per entry: what members share. Each member's hostname is its name.
        let guest = cloud_init::check_vm(c, guests, vm.cloud_init.as_ref(), &key.value, vm.disk.is_some());
        // Readiness is checked once per entry too: members share it.
        let offers = super::ready::Offers {
            vm: &key.value,
            // A NIC proven by ARP: on an external network, or a lab network with a subnet.
            addressable: vm.nics.iter().any(|n| {
                n.value.verify.as_ref().is_none_or(|v| v.value != crate::lab::spec::VerifySpec::None)
                    && nets.get(&n.value.network.value).is_some_and(|i| i.external || i.subnet.is_some())
            }),
            // A cloud-init block with problems is reported on its own: no second problem here.
            cloud_init: !matches!(&guest, Ok(None)),
        };
        let conditions = super::ready::check(c, ready, vm.ready.as_ref(), &offers);
        if members.is_empty() {
            // A group of count 0 or with a problem: its NICs are checked once, for the
            // mistakes they hold whatever the count (no MAC or address is derived).
            check_nics(c, vm, key, None, None, lab, seen);
        }
        let mut nic_problems = false;
        for (member, in_group) in members {
            let before = c.count();
            // The members share their NIC keys: a problem of the first member's NICs would be
            // reported again for every other, so those are checked no further.
            let nics = if nic_problems {
                None
            } else {
                Some(check_nics(c, vm, key, Some(&member), in_group.as_ref(), lab, seen))
            };
            if in_group.as_ref().is_some_and(|g| g.index == 1) && (shared_refused || c.count() > before) {
                nic_problems = true;
            }
            // A prefix libvirt would refuse is reported by `lab::check`: no model then.
            let libvirt_name = model::LibvirtName::new(&format!("{prefix}{member}")).ok();
            // A member's hostname is its own name (`cloud_init.hostname` is refused in a group).
            let cloud_init = guest.clone().map(|g| {
                g.map(|mut g| {
                    if in_group.is_some() {
                        g.hostname = crate::lab::cloud_init_rules::default_hostname(member.as_str());
                    }
                    g
                })
            });
            if let (
                Some(nics),
                Some(libvirt_name),
                Some((virt_type, memory, vcpus, boot, disk)),
                Ok(cloud_init),
                Some(host),
            ) = (nics, libvirt_name, body.clone(), cloud_init, host.clone())
            {
                model_vms.insert(
                    member.clone(),
                    model::Vm {
                        libvirt_name,
                        name: member,
                        virt_type,
                        memory,
                        vcpus,
                        state: match vm.state.as_ref().map(|s| s.value) {
                            None | Some(VmStateSpec::Running) => model::VmState::Running,
                            Some(VmStateSpec::Stopped) => model::VmState::Stopped,
                        },
                        boot,
                        disk,
                        nics,
                        cloud_init,
                        host,
                        ready: conditions.clone(),
                        group: in_group,
                        span: c.span(key),
                    },
                );
            }
        }
        if let Some(g) = group {
            groups.insert(g.name.clone(), g);
        }
    }
    (model_vms, groups)
}

/// Checks the NICs of `vm` (the entry `key`) as those of VM `member` (`None`: a group without
/// members, checked for its shared mistakes only); the valid ones as model NICs.
fn check_nics(
    c: &mut Checker,
    vm: &VmSpec,
    key: &Spanned<String>,
    member: Option<&VmName>,
    group: Option<&model::GroupMember>,
    lab: &LabContext<'_>,
    seen: &mut nic::Nics,
) -> Vec<model::Nic> {
    let mut nics = Vec::new();
    for (index, spec) in vm.nics.iter().enumerate() {
        let who = match (group, member) {
            (Some(_), Some(m)) => format!("vms.{}.nics[{index}] (of {m})", key.value),
            _ => format!("vms.{}.nics[{index}]", key.value),
        };
        let ctx =
            nic::Context { who: &who, index, lab: lab.lab_name, vm: member, nets: lab.nets, in_group: group.is_some() };
        if let Some(n) = nic::check(c, &spec.value, &ctx, seen) {
            nics.push(n);
        }
    }
    nics
}

/// `count:`: 0 to [`model::group::MAX_COUNT`], and no longer than the VM name rule lets the
/// group's longest member name be.
fn check_count(c: &mut Checker, key: &Spanned<String>, count: &Spanned<i64>) -> Option<u32> {
    use crate::lab::group::{MAX_COUNT, fits, longest_member};
    let Some(n) = u32::try_from(count.value).ok().filter(|n| *n <= MAX_COUNT) else {
        c.at(
            Code::Count,
            count,
            format!("count {} is out of range", count.value),
            format!("must be 0 to {MAX_COUNT}"),
            format!("give a whole number from 0 (no member) to {MAX_COUNT}"),
        );
        return None;
    };
    if !fits(&key.value, n) {
        let longest = format!("{}-{n}", key.value);
        c.push(
            Code::VmName,
            format!(
                "VM group `{}` would name its member `{longest}`, {} characters long, more than {}",
                key.value,
                longest_member(&key.value, n),
                model::MAX_RESOURCE_NAME
            ),
            vec![
                miette::LabeledSpan::at(c.span(key), "the members' stem"),
                miette::LabeledSpan::at(c.span(count), format!("`{longest}` is the longest member name")),
            ],
            format!(
                "a VM name (a group member's too: `<group>-<index>`) has at most {} characters, its libvirt name, DHCP host name and hostname follow from it; shorten the group's name",
                model::MAX_RESOURCE_NAME
            ),
        );
        return None;
    }
    Some(n)
}

/// The keys a group's members cannot share, each refused where it is written: a written
/// `nics[].mac` (every MAC in the lab is unique: Ethernet, dnsmasq's reservations by MAC),
/// a written `nics[].ip` (libvirt refuses a second `<host>` with one address,
/// src/conf/network_conf.c `virNetworkDefUpdateIPDHCPHost`) and `cloud_init.hostname`
/// (each guest names itself; the members' hostnames are their own names).
fn check_group_keys(c: &mut Checker, key: &Spanned<String>, vm: &VmSpec) {
    let group = &key.value;
    for (index, nic) in vm.nics.iter().enumerate() {
        if let Some(m) = &nic.value.mac {
            c.at(
                Code::GroupField,
                m,
                format!("vms.{group}.nics[{index}] writes a MAC, which the members of group `{group}` would share"),
                "one MAC for every member",
                "remove `mac:`: each member gets its own derived MAC (docs/lab-file.md, \"Derived MAC addresses\")",
            );
        }
        if let Some(ip) = nic.value.ip.as_ref().filter(|ip| ip.value.trim() != nic::DYNAMIC) {
            c.at(
                Code::GroupField,
                ip,
                format!("vms.{group}.nics[{index}] writes an address, which the members of group `{group}` would share"),
                "one address for every member",
                "remove `ip:` (each member gets its own derived reservation, docs/addressing.md) or write `ip: dynamic`",
            );
        }
    }
    if let Some(h) = vm.cloud_init.as_ref().and_then(|ci| ci.value.hostname.as_ref()) {
        c.at(
            Code::GroupField,
            h,
            format!("VM group `{group}` sets `cloud_init.hostname`, which its members would share"),
            "one hostname for every member",
            format!("remove `hostname:`: each member's hostname is its own name (`{group}-1`, `{group}-2`, ...)"),
        );
    }
}

/// Every VM name so far (plain VMs, group members) and group name, to refuse a name given
/// twice with both places.
#[derive(Default)]
struct Names(BTreeMap<String, (SourceSpan, String)>);

impl Names {
    /// Adds the names entry `key` gives: its members (or itself), and its own name when it is
    /// a group (`--target vm.GROUP` names the group, so no VM may be called so). Returns the
    /// names already taken, each reported with both places.
    fn add(
        &mut self,
        c: &mut Checker,
        key: &Spanned<String>,
        count: &Option<Spanned<i64>>,
        members: &[(VmName, Option<model::GroupMember>)],
        group: Option<&model::VmGroup>,
    ) -> std::collections::BTreeSet<String> {
        let mut clashed = std::collections::BTreeSet::new();
        let span = c.span(key);
        let mut mine: Vec<(String, String)> = Vec::new();
        if group.is_some() {
            mine.push((key.value.clone(), format!("VM group `{}`", key.value)));
        }
        for (m, g) in members {
            let what = match g {
                Some(g) => format!("member {} of VM group `{}`", g.index, g.group),
                None => format!("VM `{m}`"),
            };
            mine.push((m.to_string(), what));
        }
        let at = count.as_ref().map(|n| c.span(n)).unwrap_or(span);
        for (name, what) in mine {
            if let Some((other_span, other)) = self.0.get(&name) {
                let help = "every VM, group member and group needs its own name (a member of group `G` is `G-<index>`); rename the VM or the group";
                c.push(
                    Code::VmNameClash,
                    format!("the name `{name}` is given twice: {other} and {what}"),
                    vec![
                        miette::LabeledSpan::at(*other_span, other.clone()),
                        miette::LabeledSpan::at(if what.starts_with("member") { at } else { span }, what.clone()),
                    ],
                    help,
                );
                clashed.insert(name);
                continue;
            }
            self.0.insert(name, (if what.starts_with("member") { at } else { span }, what));
        }
        clashed
    }
}

type VmBody = (VirtType, ByteSize, u32, Option<model::Boot>, Option<model::Disk>);

fn check_vm_body(c: &mut Checker, key: &Spanned<String>, vm: &VmSpec) -> Option<VmBody> {
    let virt_type = match vm.hypervisor.as_ref().map(|h| h.value) {
        None | Some(HypervisorSpec::Kvm) => VirtType::Kvm,
        Some(HypervisorSpec::Qemu) => VirtType::Qemu,
    };
    let memory = vm.memory.as_ref().map_or(Ok(DEFAULT_MEMORY), |m| check_memory(c, m));
    let vcpus = vm.vcpus.as_ref().map_or(Ok(1), |v| check_vcpus(c, v));
    let boot = vm.boot.as_ref().map(|b| check_boot(c, b)).transpose();
    let disk = vm.disk.as_ref().map(|d| check_disk(c, d)).transpose();
    if vm.boot.is_none() && vm.disk.is_none() {
        c.at(
            Code::NothingToBoot,
            key,
            format!("VM `{}` has nothing to boot", key.value),
            "neither `boot` nor `disk`",
            "add `boot: {kernel: ...}` for direct kernel boot, or `disk: {image: ...}`, or both",
        );
        return None;
    }
    Some((virt_type, memory.ok()?, vcpus.ok()?, boot.ok()?, disk.ok()?))
}

/// `memory:`: a size from [`MIN_MEMORY`] to [`MAX_MEMORY`], in whole MiB (libvirt's rule).
fn check_memory(c: &mut Checker, m: &Spanned<String>) -> Result<ByteSize, LeftOut> {
    match parse_size(c, m, "memory") {
        Some(b) if b < MIN_MEMORY || b > MAX_MEMORY => {
            c.at(
                Code::Memory,
                m,
                format!("memory {b} is out of range"),
                format!("must be between {MIN_MEMORY} and {MAX_MEMORY}"),
                format!("give between {MIN_MEMORY} and {MAX_MEMORY}, e.g. `memory: 512MiB`"),
            );
            Err(LeftOut)
        }
        // libvirt src/qemu/qemu_domain.c `qemuDomainAlignMemorySizes` rounds a running
        // domain's memory up to whole MiB (`qemuDomainGetMemorySizeAlignment`: 1024 KiB on
        // x86) and keeps the persistent value: 131073KiB ran as 132096KiB on libvirt 9.0
        // (measured), so the plan would never converge.
        Some(b) if !b.bytes().is_multiple_of(ByteSize::MIB) => {
            let up = ByteSize::from_bytes(b.bytes().div_ceil(ByteSize::MIB) * ByteSize::MIB);
            c.at(
                Code::Memory,
                m,
                format!("memory {b} is not a whole number of MiB: libvirt rounds it up to {up} when the VM starts"),
                "not whole MiB",
                format!("give `memory: {up}` (or another whole number of MiB)"),
            );
            Err(LeftOut)
        }
        Some(b) => Ok(b),
        None => Err(LeftOut),
    }
}

/// `vcpus:`: 1 to [`MAX_VCPUS`] (QEMU's limit for the `pc` machine).
fn check_vcpus(c: &mut Checker, v: &Spanned<i64>) -> Result<u32, LeftOut> {
    match u32::try_from(v.value) {
        Ok(n) if (1..=MAX_VCPUS).contains(&n) => Ok(n),
        _ => {
            c.at(
                Code::Vcpus,
                v,
                format!("vcpus {} is out of range", v.value),
                format!("must be 1 to {MAX_VCPUS}"),
                format!("give a whole number from 1 to {MAX_VCPUS}"),
            );
            Err(LeftOut)
        }
    }
}

/// `boot:`: direct kernel boot; the kernel and initrd must be files ([`check_file`]), the
/// command line text libvirt's XML can carry ([`check_text`]).
fn check_boot(c: &mut Checker, b: &Spanned<BootSpec>) -> Result<model::Boot, LeftOut> {
    let kernel = check_file(c, &b.value.kernel, "kernel");
    let initrd = b.value.initrd.as_ref().map(|i| check_file(c, i, "initrd").ok_or(LeftOut)).transpose();
    let cmdline = b
        .value
        .cmdline
        .as_ref()
        .map(|s| check_text(c, s, "boot.cmdline", Text::CommandLine).ok_or(LeftOut))
        .transpose();
    let (Some(kernel), Ok(initrd), Ok(cmdline)) = (kernel, initrd, cmdline) else {
        return Err(LeftOut);
    };
    Ok(model::Boot {
        kernel,
        initrd,
        cmdline,
        kernel_span: c.span(&b.value.kernel),
        initrd_span: b.value.initrd.as_ref().map(|i| c.span(i)),
    })
}

/// `disk.size:`: a size that is not zero.
fn check_disk_size(c: &mut Checker, s: &Spanned<String>) -> Result<ByteSize, LeftOut> {
    match parse_size(c, s, "size") {
        Some(b) if b.bytes() == 0 => {
            c.at(Code::BadSize, s, "disk size is zero", "zero", "give a size such as `10GiB`, or remove `size`");
            Err(LeftOut)
        }
        r => r.ok_or(LeftOut),
    }
}

/// `disk:`: the image must be a file ([`check_file`]); the size, when given, is not zero.
fn check_disk(c: &mut Checker, d: &Spanned<DiskSpec>) -> Result<model::Disk, LeftOut> {
    let image = check_file(c, &d.value.image, "disk image");
    let size = d.value.size.as_ref().map(|s| check_disk_size(c, s)).transpose();
    let (Some(image), Ok(size)) = (image, size) else {
        return Err(LeftOut);
    };
    let format = match d.value.format.as_ref().map(|f| f.value) {
        None | Some(ImageFormatSpec::Qcow2) => model::ImageFormat::Qcow2,
        Some(ImageFormatSpec::Raw) => model::ImageFormat::Raw,
    };
    Ok(model::Disk {
        image,
        size,
        format,
        image_span: c.span(&d.value.image),
        size_span: d.value.size.as_ref().map(|s| c.span(s)),
    })
}

fn parse_size(c: &mut Checker, s: &Spanned<String>, what: &str) -> Option<ByteSize> {
    match s.value.parse::<ByteSize>() {
        Ok(b) => Some(b),
        Err(e) => {
            let help = match e {
                SizeError::Format => {
                    format!("write a whole number and a unit (KiB, MiB, GiB, TiB), e.g. `{what}: 512MiB`")
                }
                SizeError::Overflow => "use a smaller number".to_owned(),
            };
            c.at(Code::BadSize, s, format!("{what} `{}` {e}", s.value), "not a size", help);
            None
        }
    }
}

/// Which characters a text value written into libvirt XML may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// The kernel command line: anything XML 1.0 can carry (tab, line feed and carriage
    /// return included: the kernel reads them as spaces).
    CommandLine,
    /// A file path: no control character at all. XML 1.0 cannot carry most of them
    /// (section 2.2, `Char`), and in an attribute (`<source file=...>`) a tab or line
    /// break is normalised to a space (section 3.3.3), so libvirt would open another file.
    Path,
}

/// The first character of `s` that cannot go into libvirt's XML as `kind`.
fn bad_char(s: &str, kind: Text) -> Option<char> {
    s.chars().find(|&ch| match kind {
        // XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
        // (surrogates cannot occur in a Rust string).
        Text::CommandLine => (ch < ' ' && !matches!(ch, '\t' | '\n' | '\r')) || matches!(ch, '\u{FFFE}' | '\u{FFFF}'),
        Text::Path => ch.is_control() || matches!(ch, '\u{FFFE}' | '\u{FFFF}'),
    })
}

/// A text value that is written into libvirt's XML: refused when libvirt's XML parser
/// (libxml2, XML 1.0) would refuse it or read it back as something else.
fn check_text(c: &mut Checker, s: &Spanned<String>, what: &str, kind: Text) -> Option<String> {
    match bad_char(&s.value, kind) {
        None => Some(s.value.clone()),
        Some(ch) => {
            c.at(
                Code::ControlChar,
                s,
                format!("{what} contains the control character {:?} (U+{:04X})", ch, u32::from(ch)),
                "control character",
                match kind {
                    Text::CommandLine => "libvirt's XML (XML 1.0) cannot carry it, so `define domain` would fail; remove it",
                    Text::Path => "libvirt's XML cannot carry it or turns it into a space, so libvirt would open another file; rename the file",
                },
            );
            None
        }
    }
}

/// Resolves a path from the file against the lab file's folder; it must name an existing file.
fn check_file(c: &mut Checker, s: &Spanned<String>, what: &str) -> Option<PathBuf> {
    if s.value.trim().is_empty() {
        c.at(Code::MissingFile, s, format!("{what} path is empty"), "empty path", "give the path of the file");
        return None;
    }
    check_text(c, s, &format!("{what} path"), Text::Path)?;
    // Canonical before it is hashed or written, so the plan does not depend on the folder or
    // symlink the lab file was reached through.
    let resolved = crate::lab::source::resolve_path(&c.source.dir, Path::new(&s.value));
    if c.files != super::Files::Checked {
        return Some(resolved);
    }
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => Some(resolved),
        Ok(_) => {
            c.at(
                Code::MissingFile,
                s,
                format!("{what} `{}` is not a regular file", s.value),
                "not a file",
                "point to the file itself; relative paths start at the lab file's folder",
            );
            None
        }
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".to_owned(),
                _ => format!("cannot be read ({})", e.kind()),
            };
            c.at(
                Code::MissingFile,
                s,
                format!("{what} `{}` {why}", s.value),
                "file not found",
                "check the path; relative paths start at the lab file's folder, not the current directory",
            );
            None
        }
    }
}
