//! The one diagnostics vocabulary: a [`Problem`] (code, message, labelled spans, help) with a
//! closed [`Code`] enum, used alike by the shape check, lab validation and plan refusals,
//! plus the helpers they share ([`did_you_mean`], [`span_of`]), and the JSON form of a
//! problem located by line and column ([`JsonProblem`], docs/results-json.md "problem").
//!
//! A `Problem` carries no source text: the error that collects problems (`ValidateError`,
//! `PlanError::Refused`) holds the file as `#[source_code]`, and miette renders each
//! related problem against it.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, SourceSpan};
use serde::{Deserialize, Serialize};

/// What kind of problem a [`Problem`] is. Stable and machine readable: shown as
/// `topo::lab::<kind>` or `topo::plan::<kind>` next to every diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    // --- YAML and shape (stage 1) ---
    /// Not readable YAML.
    Syntax,
    /// Over the parser's resource budget (aliases, nesting, nodes).
    TooComplex,
    /// A key given twice in one mapping.
    DuplicateKey,
    /// A key topo does not know here.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value of the wrong YAML type.
    BadType,
    /// A value outside a closed vocabulary.
    BadValue,
    // --- lab rules (stage 2) ---
    ApiVersion,
    /// The lab's `name`.
    Name,
    Prefix,
    NetworkName,
    VmName,
    /// A VM group's `count:` outside 0 to `group::MAX_COUNT`.
    Count,
    /// A key a VM group's members cannot share (a written MAC, address or hostname).
    GroupField,
    /// Two VMs, or a VM and a VM group, with one name (a group member `client-2` and a VM
    /// `client-2`).
    VmNameClash,
    /// A host's key under `hosts:` is not a valid name.
    HostName,
    /// A VM or network names a host the lab does not declare (or the lab declares none).
    UnknownHost,
    /// A host's `uri` libvirt cannot use, or one given to two hosts.
    HostUri,
    /// A host's `underlay` address: not an address tunnels can use, given twice, or missing
    /// on a host a lab network spans.
    Underlay,
    /// Subnet text is not `address/prefix-length`.
    BadSubnet,
    SubnetHostBits,
    SubnetTooSmall,
    SubnetRequired,
    SubnetOverlap,
    /// A subnet in a block the kernel or an RFC reserves (loopback, multicast, ...).
    ReservedSubnet,
    /// A `subnet6` that is not a /64 (SLAAC and dnsmasq's router advertisements need one).
    Subnet6Prefix,
    /// A `subnet6` in a block that cannot be a lab prefix (link-local, multicast, ::/8, ...).
    ReservedSubnet6,
    Gateway,
    /// A `gateway6` outside `subnet6`, its subnet-router anycast address, or without one.
    Gateway6,
    Dhcp,
    /// A DHCP range libvirt refuses: start and end differ in their first two bytes.
    DhcpRangeTooLarge,
    DhcpTooSmall,
    Bridge,
    DuplicateBridge,
    ExternalSettings,
    /// A network's `mtu` outside what the kernel's bridge and tap devices take.
    Mtu,
    /// Two networks of the lab map to one libvirt name.
    LibvirtNameClash,
    BadAddress,
    BadMac,
    DuplicateMac,
    /// A NIC's MAC is the bridge MAC topo gives a lab network.
    BridgeMac,
    BadReservation,
    DuplicateIp,
    /// A DHCP host name that is not unique on its network, or too long for dnsmasq.
    DhcpHostName,
    IpOnExternal,
    IpWithoutSubnet,
    NicNoAddress,
    /// A link impairment value (`rate`, `delay`, `jitter`, `loss`) a lower layer refuses.
    Link,
    UnknownNetwork,
    Memory,
    Vcpus,
    BadSize,
    MissingFile,
    /// A file the lab names is a FIFO, a device, a folder or a socket: topo reads regular
    /// files only (`files::read_bounded`).
    NotAFile,
    /// A file the lab names is larger than topo reads of its kind (user-data 1 MiB, key
    /// files 64 KiB), refused by its size before it is read.
    FileTooLarge,
    NothingToBoot,
    /// A cloud-init setting (user, hostname, where a key may be given).
    CloudInit,
    /// An SSH public key (inline or in a key file) sshd would not accept.
    SshKey,
    /// A user-data file that is not a `#cloud-config` mapping.
    UserData,
    /// A character libvirt's XML cannot carry (or would rewrite) in a text value.
    ControlChar,
    /// A readiness condition (`ready:`) that is unknown, out of range, or cannot hold for
    /// the VM (no cloud-init, no address to connect to).
    Ready,
    /// A wire (`links:`) that does not name two VMs of one host, or a `link_subnet:` that
    /// cannot hold the wires or overlaps a lab network.
    Wire,
    // --- plan refusals (host conflicts) ---
    /// An external network the lab references is not on the host.
    ExternalMissing,
    /// An external network the lab references is not active.
    ExternalInactive,
    /// A NIC on an external network without an IPv4 subnet (libvirt's or declared) cannot be
    /// proven by ARP.
    ExternalUnprovable,
    /// The subnet declared on an external network is not the one libvirt reports for it.
    ExternalSubnetMismatch,
    /// Another instance of this lab (the same name and prefix, another lab file) made
    /// objects on the host; `--take-over` makes this file their owner.
    OtherInstance,
    /// A libvirt network name the lab would create is taken by an object it does not own.
    NetworkNameTaken,
    /// A libvirt domain name the lab would create is taken by an object it does not own.
    VmNameTaken,
    /// A lab subnet overlaps a network on the host.
    HostSubnetOverlap,
    /// A lab bridge name is used by a network on the host.
    HostBridgeTaken,
    /// A stretched network's tunnel device name or VNI is held by a VXLAN device the lab
    /// does not own.
    TunnelTaken,
    /// A host's `underlay` address is not one of its machine's addresses.
    UnderlayMissing,
    /// A stretched network's frames, with VXLAN around them, exceed the MTU of the device
    /// that holds a host's underlay address.
    UnderlayMtu,
    /// A stretched network needs its tunnel on a host whose machine topo cannot reach.
    TunnelUnreachable,
    /// The machine of a host lacks programs that topo runs there for the host's share of
    /// the lab (`ip`, `bridge`, `tc`, `arping`, `flock`, ...: `crate::host::tools`).
    HostToolsMissing,
    /// A lab bridge name is an existing host interface that no libvirt network has.
    HostInterfaceTaken,
    /// A NIC's MAC is used on the same network by a guest outside the lab.
    HostMacTaken,
    /// A NIC's MAC is the MAC of its network's bridge on the host.
    HostBridgeMac,
    /// A file the domain opens is missing on the libvirt host, as its storage pool shows.
    HostMissingFile,
    /// A base image's declared `disk.format` is not the format libvirt's storage pool
    /// reports for it.
    HostImageFormat,
    /// `disk.size` is below the base image's virtual size (the guest would see a cut disk).
    HostDiskSize,
    /// A file the domain opens lies in no active storage pool, so topo cannot check it on
    /// another host (a warning).
    HostFileUnchecked,
    /// A NIC asks for netem (`delay`, `jitter`, `loss`) where topo cannot reach its tap: a
    /// remote or test URI, or taps not visible from here.
    NetemUnreachable,
    /// A NIC asks for link impairment the libvirt host's kernel cannot do: it was built
    /// without a qdisc, classifier or action that netem or libvirt's `<bandwidth>` needs.
    KernelLacksQdisc,
    /// A volume the plan would create or upload again under its name is a file another
    /// domain uses (a layer of its backing chain): making it anew would fail, or delete it
    /// under that domain.
    DiskInUse,
    /// A lab network would start on a subnet that a route of the host (a VPN, `docker0`,
    /// another bridge) already has: libvirt refuses to start it.
    HostRouteTaken,
    /// A libvirt definition (network, domain or interface XML, a DHCP host entry, a
    /// cloud-init seed) could not be rendered from the validated lab: topo's bug, refused
    /// rather than planned without the step.
    RenderFailed,
}

impl Code {
    /// The code as shown to users, e.g. `topo::lab::unknown_network`.
    pub const fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Syntax => "topo::lab::syntax",
            Ready => "topo::lab::ready",
            Wire => "topo::lab::wire",
            TooComplex => "topo::lab::too_complex",
            DuplicateKey => "topo::lab::duplicate_key",
            UnknownKey => "topo::lab::unknown_key",
            MissingKey => "topo::lab::missing_key",
            BadType => "topo::lab::bad_type",
            BadValue => "topo::lab::bad_value",
            ApiVersion => "topo::lab::api_version",
            Name => "topo::lab::name",
            Prefix => "topo::lab::prefix",
            NetworkName => "topo::lab::network_name",
            VmName => "topo::lab::vm_name",
            Count => "topo::lab::count",
            GroupField => "topo::lab::group_field",
            VmNameClash => "topo::lab::vm_name_clash",
            HostName => "topo::lab::host_name",
            UnknownHost => "topo::lab::unknown_host",
            HostUri => "topo::lab::host_uri",
            Underlay => "topo::lab::underlay",
            BadSubnet => "topo::lab::bad_subnet",
            SubnetHostBits => "topo::lab::subnet_host_bits",
            SubnetTooSmall => "topo::lab::subnet_too_small",
            SubnetRequired => "topo::lab::subnet_required",
            SubnetOverlap => "topo::lab::subnet_overlap",
            ReservedSubnet => "topo::lab::reserved_subnet",
            Gateway => "topo::lab::gateway",
            Subnet6Prefix => "topo::lab::subnet6_prefix",
            ReservedSubnet6 => "topo::lab::reserved_subnet6",
            Gateway6 => "topo::lab::gateway6",
            Dhcp => "topo::lab::dhcp",
            DhcpRangeTooLarge => "topo::lab::dhcp_range_too_large",
            DhcpTooSmall => "topo::lab::dhcp_too_small",
            Bridge => "topo::lab::bridge",
            DuplicateBridge => "topo::lab::duplicate_bridge",
            ExternalSettings => "topo::lab::external_settings",
            Mtu => "topo::lab::mtu",
            LibvirtNameClash => "topo::lab::libvirt_name_clash",
            BadAddress => "topo::lab::bad_address",
            BadMac => "topo::lab::bad_mac",
            DuplicateMac => "topo::lab::duplicate_mac",
            BridgeMac => "topo::lab::bridge_mac",
            BadReservation => "topo::lab::bad_reservation",
            DuplicateIp => "topo::lab::duplicate_ip",
            DhcpHostName => "topo::lab::dhcp_host_name",
            IpOnExternal => "topo::lab::ip_on_external",
            IpWithoutSubnet => "topo::lab::ip_without_subnet",
            NicNoAddress => "topo::lab::nic_no_address",
            Link => "topo::lab::link",
            UnknownNetwork => "topo::lab::unknown_network",
            Memory => "topo::lab::memory",
            Vcpus => "topo::lab::vcpus",
            BadSize => "topo::lab::bad_size",
            MissingFile => "topo::lab::missing_file",
            NotAFile => "topo::lab::not_a_file",
            FileTooLarge => "topo::lab::file_too_large",
            NothingToBoot => "topo::lab::nothing_to_boot",
            CloudInit => "topo::lab::cloud_init",
            SshKey => "topo::lab::ssh_key",
            UserData => "topo::lab::user_data",
            ControlChar => "topo::lab::control_char",
            ExternalMissing => "topo::plan::external_missing",
            ExternalInactive => "topo::plan::external_inactive",
            ExternalUnprovable => "topo::plan::external_unprovable",
            ExternalSubnetMismatch => "topo::plan::external_subnet_mismatch",
            OtherInstance => "topo::plan::other_instance",
            NetworkNameTaken => "topo::plan::network_name_taken",
            VmNameTaken => "topo::plan::vm_name_taken",
            HostSubnetOverlap => "topo::plan::subnet_overlap",
            HostBridgeTaken => "topo::plan::bridge_taken",
            TunnelTaken => "topo::plan::tunnel_taken",
            UnderlayMissing => "topo::plan::underlay_missing",
            UnderlayMtu => "topo::plan::underlay_mtu",
            TunnelUnreachable => "topo::plan::tunnel_unreachable",
            HostToolsMissing => "topo::plan::host_tools_missing",
            HostInterfaceTaken => "topo::plan::interface_taken",
            HostMacTaken => "topo::plan::mac_taken",
            HostBridgeMac => "topo::plan::bridge_mac",
            HostMissingFile => "topo::plan::missing_file",
            HostImageFormat => "topo::plan::image_format",
            HostDiskSize => "topo::plan::disk_size",
            HostFileUnchecked => "topo::plan::file_unchecked",
            NetemUnreachable => "topo::plan::netem_unreachable",
            KernelLacksQdisc => "topo::plan::kernel_lacks_qdisc",
            DiskInUse => "topo::plan::disk_in_use",
            HostRouteTaken => "topo::plan::route_taken",
            RenderFailed => "topo::plan::render_failed",
        }
    }

    /// True for the problems the JSON Schema check can find (all of them at once) once the
    /// typed parse stopped at the first.
    pub const fn is_shape(self) -> bool {
        matches!(self, Code::UnknownKey | Code::BadValue | Code::BadType | Code::MissingKey)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing wrong with a lab file or with the lab on this host, pointing at the value(s)
/// in the lab file to change. The first label is the primary location.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    pub code: Code,
    /// One sentence: what is wrong.
    pub message: String,
    /// Where, with a short text on each span (byte offsets into the lab file).
    pub labels: Vec<LabeledSpan>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with one label on `span`.
    pub fn at(
        code: Code,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            labels: vec![LabeledSpan::at(span, label.into())],
            help: Some(help.into()),
        }
    }

    /// A problem with several labels (e.g. both ends of a duplicate).
    pub fn spans(code: Code, message: impl Into<String>, labels: Vec<LabeledSpan>, help: impl Into<String>) -> Self {
        Self { code, message: message.into(), labels, help: Some(help.into()) }
    }
}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }
}

/// A [`Problem`] shown as a warning: the same code, message, labels and help, with
/// miette's warning severity. Nothing is refused for it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Warning(pub Problem);

impl Diagnostic for Warning {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Warning)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.0.labels()
    }
}

/// Warnings about a lab file, rendered against its text (one report, each warning related).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{} warning{} for {path}", warnings.len(), if warnings.len() == 1 { "" } else { "s" })]
#[diagnostic(severity(Warning))]
pub struct Warnings {
    pub path: String,
    #[source_code]
    pub src: miette::NamedSource<String>,
    #[related]
    pub warnings: Vec<Warning>,
}

/// The closest candidate to `word`, if it is close enough (Jaro-Winkler >= 0.8) to be a
/// likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`? {lead}: a, b" when a candidate is close, else "{otherwise}: a, b".
pub fn suggest(word: &str, candidates: &[String], lead: &str, otherwise: &str) -> String {
    match did_you_mean(word, candidates.iter().map(String::as_str)) {
        Some(s) => format!("did you mean `{s}`? {lead}: {}", candidates.join(", ")),
        None => format!("{otherwise}: {}", candidates.join(", ")),
    }
}

/// A miette span (byte offsets) for a serde-saphyr location (characters, and bytes when known).
pub fn span_of(text: &str, loc: &serde_saphyr::Location) -> SourceSpan {
    let span = loc.span();
    if let (Some(off), Some(len)) = (span.byte_offset(), span.byte_len()) {
        return (off as usize, len as usize).into();
    }
    let char_to_byte = |c: u64| -> usize { text.char_indices().nth(c as usize).map(|(b, _)| b).unwrap_or(text.len()) };
    let start = char_to_byte(span.offset());
    let end = char_to_byte(span.offset() + span.len());
    (start, end.saturating_sub(start)).into()
}

// ---- JSON form ---------------------------------------------------------------------

/// A place in the lab file: 1-based line and column (in characters, as editors count), and
/// the 0-based byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub byte: usize,
}

/// A labelled range of the lab file a problem points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub start: Position,
    pub end: Position,
    pub label: Option<String>,
}

/// One problem: its stable code (`topo::lab::bad_mac`), what is wrong, how to fix it, and
/// where (the first location is the primary one; none for problems that are not in the
/// file, such as an unreadable file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonProblem {
    pub code: Option<String>,
    pub message: String,
    pub help: Option<String>,
    pub locations: Vec<Location>,
}

/// The position of byte `offset` in `text` (clamped to the text, and to a char boundary).
pub fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1, byte: offset }
}

impl JsonProblem {
    /// A [`Problem`] of the lab file `file` whose text is `text`.
    pub fn of(file: &str, text: &str, p: &Problem) -> Self {
        let locations = p
            .labels
            .iter()
            .map(|l| Location {
                file: file.to_owned(),
                start: position(text, l.offset()),
                end: position(text, l.offset() + l.len()),
                label: l.label().map(str::to_owned),
            })
            .collect();
        Self { code: Some(p.code.as_str().to_owned()), message: p.message.clone(), help: p.help.clone(), locations }
    }

    /// Any other diagnostic (a file that cannot be read, too large, not UTF-8): no location.
    pub fn of_diagnostic(d: &dyn miette::Diagnostic) -> Self {
        Self {
            code: d.code().map(|c| c.to_string()),
            message: d.to_string(),
            help: d.help().map(|h| h.to_string()),
            locations: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos() {
        assert_eq!(did_you_mean("local-net", ["default", "local_net"].into_iter()), Some("local_net"));
        assert_eq!(did_you_mean("zzz", ["default", "local_net"].into_iter()), None);
    }

    #[test]
    fn suggest_lists_candidates() {
        let c = vec!["nat".to_owned(), "routed".to_owned()];
        assert_eq!(suggest("natt", &c, "One of", "use one of"), "did you mean `nat`? One of: nat, routed");
        assert_eq!(suggest("zzz", &c, "One of", "use one of"), "use one of: nat, routed");
    }

    #[test]
    fn codes_are_namespaced() {
        assert_eq!(Code::UnknownNetwork.to_string(), "topo::lab::unknown_network");
        assert_eq!(Code::VmNameTaken.as_str(), "topo::plan::vm_name_taken");
        assert!(Code::MissingKey.is_shape() && !Code::Syntax.is_shape());
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a: 1\nbé: [x, y]\n";
        assert_eq!(position(text, 0), Position { line: 1, column: 1, byte: 0 });
        assert_eq!(position(text, 5), Position { line: 2, column: 1, byte: 5 });
        // `[` after the two-byte `é`: character column 5, byte 10.
        assert_eq!(position(text, 10), Position { line: 2, column: 5, byte: 10 });
        assert_eq!(position(text, 7), Position { line: 2, column: 2, byte: 6 }, "inside `é`: its start");
        assert_eq!(position(text, 999).byte, text.len());
    }
}
