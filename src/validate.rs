//! Lab file validation: YAML text -> `spec::LabSpec` -> `model::Lab`, reporting every problem.
//!
//! Stage 1 parses the YAML into the raw spec under a resource budget (aliases, nesting,
//! node counts), so hostile input ends in an error quickly and in bounded memory. Syntax,
//! unknown keys, duplicate keys and wrong types stop here: the parser reports the first one.
//! Stage 2 checks every rule that needs more than one value (names, references, addressing,
//! MACs, sizes, paths) and collects *all* problems, each pointing at the exact value in the
//! file with a help line that says how to fix it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use serde_saphyr::{Location, MessageFormatter};

use crate::model::{
    self, BridgeName, ByteSize, DhcpRange, LabName, MacAddr, MacError, ManagedNetwork, NameError, NetworkKind,
    NetworkMode, NetworkName, Reservation, SizeError, Verify, VirtType, VmName,
};
use crate::source::SourceFile;
use crate::spec::{DhcpSpec, HypervisorSpec, LabSpec, ModeSpec, NetworkSpec, NicSpec, Spanned, VerifySpec, VmSpec};

/// Default VM memory.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::from_mib(512);
/// Smallest memory topo accepts: below this no stock distribution kernel boots.
pub const MIN_MEMORY: ByteSize = ByteSize::from_mib(64);
/// Largest memory topo accepts (1 TiB): a guard against typos such as `512GiB` for `512MiB`.
pub const MAX_MEMORY: ByteSize = ByteSize::from_bytes(ByteSize::TIB);
/// Largest vCPU count topo accepts (QEMU's default q35 machine limit is higher; a lab VM needs far less).
pub const MAX_VCPUS: u32 = 256;
/// Longest `prefix`: with a 63-character resource name a libvirt name stays under 100 characters.
pub const MAX_PREFIX: usize = 32;
/// Smallest subnet (largest prefix length): a /30 holds a gateway and one guest.
pub const MAX_PREFIX_LEN: u8 = 30;

/// One thing wrong with a lab file, pointing at the value(s) to change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    /// Stable machine-readable kind, e.g. `topo::lab::unknown_network`.
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<LabeledSpan>,
    pub help: Option<String>,
}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }
}

/// A lab file that cannot be used: all its problems at once (rendered as related diagnostics).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("lab file {path} has {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" })]
#[diagnostic(code(topo::lab::invalid), help("fix the problems listed below, then run `topo validate` again"))]
pub struct ValidateError {
    pub path: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[related]
    pub problems: Vec<Problem>,
}

impl ValidateError {
    /// The codes of all problems, in report order (handy for tests and tooling).
    pub fn codes(&self) -> Vec<&'static str> {
        self.problems.iter().map(|p| p.code).collect()
    }
}

/// Parses and validates a lab file. This is what `topo validate` (and every other command) calls.
pub fn load(source: &SourceFile) -> Result<model::Lab, ValidateError> {
    let spec = parse(source)?;
    validate(source, &spec)
}

fn error(source: &SourceFile, problems: Vec<Problem>) -> ValidateError {
    ValidateError { path: source.name(), src: source.named_source(), problems }
}

/// The parser limits. A real lab file has a few hundred nodes and no aliases to speak of;
/// these bounds stop alias bombs, deep nesting and huge documents long before they cost
/// noticeable time or memory.
fn parse_options() -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 1_000;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 32,
            max_documents: 1,
            max_nodes: 100_000,
            max_total_scalar_bytes: 2 * 1024 * 1024,
            max_merge_keys: 1_000,
        },
        alias_limits: alias_limits,
    }
}

/// Stage 1: YAML text to the raw spec. The typed parse stops at its first error; when that
/// is a shape problem (unknown key, wrong type, bad value, missing key), the file is checked
/// again against the JSON Schema so that every shape problem is reported at once. A YAML
/// syntax error is reported alone: nothing after it can be read reliably.
pub fn parse(source: &SourceFile) -> Result<LabSpec, ValidateError> {
    let text = source.text.as_str();
    match serde_saphyr::from_str_with_options::<LabSpec>(text, parse_options()) {
        Ok(spec) => Ok(spec),
        Err(e) => {
            let first = syntax_problem(text, &e);
            let shape = matches!(
                first.code,
                "topo::lab::unknown_key" | "topo::lab::bad_value" | "topo::lab::bad_type" | "topo::lab::missing_key"
            );
            let all: Vec<Problem> = if shape { crate::shape::check(text, parse_options()) } else { None }
                .unwrap_or_default()
                .into_iter()
                .map(|p| Problem { code: p.code, message: p.message, labels: p.labels, help: Some(p.help) })
                .collect();
            Err(error(source, if all.is_empty() { vec![first] } else { all }))
        }
    }
}

fn syntax_problem(text: &str, e: &serde_saphyr::Error) -> Problem {
    let inner = e.without_snippet();
    let msg = serde_saphyr::UserMessageFormatter.format_message(inner).into_owned();
    let span = e.location().map(|l| span_of(text, &l)).unwrap_or_else(|| (0, 0).into());
    let (code, message, label, help) = if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected_list(expected);
        let help = match did_you_mean(field, expected.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? Allowed here: {}", expected.join(", ")),
            None => format!("allowed here: {}", expected.join(", ")),
        };
        ("topo::lab::unknown_key", format!("unknown key `{field}`"), "not a lab file key here", help)
    } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected_list(expected);
        let help = match did_you_mean(value, expected.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? One of: {}", expected.join(", ")),
            None => format!("use one of: {}", expected.join(", ")),
        };
        ("topo::lab::bad_value", format!("`{value}` is not allowed here"), "unknown value", help)
    } else if msg.starts_with("duplicate mapping key") {
        (
            "topo::lab::duplicate_key",
            msg.clone(),
            "given again here",
            "each key may appear once per mapping; merge the two entries or rename one".to_owned(),
        )
    } else if msg.contains("untagged enum DhcpSpec") {
        (
            "topo::lab::bad_type",
            "`dhcp` must be true, false or a range".to_owned(),
            "not a valid dhcp value",
            "write `true`, `false` or a range such as `{start: 10.0.0.100, end: 10.0.0.200}`".to_owned(),
        )
    } else if msg.contains("budget") || msg.contains("limit") || msg.contains("alias") {
        (
            "topo::lab::too_complex",
            format!("the lab file is too large or too deeply nested for topo: {msg}"),
            "limit reached here",
            "a lab file needs no deep nesting and few anchors/aliases; write it out plainly".to_owned(),
        )
    } else if msg.contains("missing field") {
        ("topo::lab::missing_key", msg.clone(), "in this mapping", "add the missing key".to_owned())
    } else if msg.starts_with("invalid") || msg.contains("expected") {
        let what = match msg.strip_prefix("invalid ") {
            Some("i64" | "u64" | "i32" | "u32" | "u16" | "u8") => "expected a whole number".to_owned(),
            Some("bool") => "expected `true` or `false`".to_owned(),
            _ => msg.clone(),
        };
        (
            "topo::lab::bad_type",
            format!("wrong type: {what}"),
            "this value",
            "see docs/lab-file.md for the type of each key".to_owned(),
        )
    } else {
        (
            "topo::lab::syntax",
            format!("YAML syntax error: {msg}"),
            "here",
            "check indentation, quotes and brackets around this point".to_owned(),
        )
    };
    Problem { code, message, labels: vec![LabeledSpan::at(span, label)], help: Some(help) }
}

/// `expected one of a, b, c` / `expected `a` or `b`` -> [a, b, c].
fn expected_list(s: &str) -> Vec<String> {
    let s = s.trim_start_matches(',').trim();
    let s = s.strip_prefix("expected").unwrap_or(s).trim();
    let s = s.strip_prefix("one of").unwrap_or(s);
    s.replace(" or ", ",")
        .split(',')
        .map(|w| w.trim().trim_matches('`').to_owned())
        .filter(|w| !w.is_empty() && w != "there are no fields")
        .collect()
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A miette span (byte offsets) for a serde-saphyr location (characters, and bytes when known).
pub(crate) fn span_of(text: &str, loc: &Location) -> SourceSpan {
    let span = loc.span();
    if let (Some(off), Some(len)) = (span.byte_offset(), span.byte_len()) {
        return (off as usize, len as usize).into();
    }
    let char_to_byte = |c: u64| -> usize { text.char_indices().nth(c as usize).map(|(b, _)| b).unwrap_or(text.len()) };
    let start = char_to_byte(span.offset());
    let end = char_to_byte(span.offset() + span.len());
    (start, end.saturating_sub(start)).into()
}

/// Collects problems while stage 2 walks the spec.
struct Checker<'a> {
    source: &'a SourceFile,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn span<T>(&self, s: &Spanned<T>) -> SourceSpan {
        span_of(&self.source.text, &s.referenced)
    }
    fn push(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        labels: Vec<LabeledSpan>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem { code, message: message.into(), labels, help: Some(help.into()) });
    }
    /// A problem with one label on `at`.
    fn at<T>(
        &mut self,
        code: &'static str,
        at: &Spanned<T>,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        let labels = vec![LabeledSpan::at(self.span(at), label.into())];
        self.push(code, message, labels, help);
    }
}

fn name_help(what: &str, err: &NameError, allowed: &str, max: usize) -> String {
    match err {
        NameError::TooLong { .. } => format!("shorten the {what} to at most {max} characters"),
        _ => format!(
            "a {what} uses {allowed}, starts with a lowercase letter, does not end with '-' and has at most {max} characters"
        ),
    }
}

/// What a network looks like to the NIC checks.
struct NetInfo {
    external: bool,
    subnet: Option<Ipv4Network>,
    gateway: Option<Ipv4Addr>,
    dhcp: bool,
    /// Addresses in the DHCP range (lab networks), and where to point when it is too small.
    dhcp_size: Option<u64>,
    dhcp_span: Option<SourceSpan>,
    /// Set when the network's own definition has problems: skip NIC checks that depend on it.
    broken: bool,
}

fn first_host(n: &Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + 1)
}
fn last_host(n: &Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.broadcast()) - 1)
}
fn is_host(n: &Ipv4Network, ip: Ipv4Addr) -> bool {
    n.contains(ip) && ip != n.network() && ip != n.broadcast()
}

/// The DHCP range `dhcp: true` gives: every host address of the subnet except the gateway.
/// When the gateway is the first (default) or last host address, the range is the rest;
/// when it sits inside, the range is the larger of the two sides (the upper side on a tie),
/// because a dnsmasq range is one contiguous block. Needs a subnet of /30 or larger.
pub fn default_dhcp_range(subnet: &Ipv4Network, gateway: Ipv4Addr) -> DhcpRange {
    let first = u32::from(first_host(subnet));
    let last = u32::from(last_host(subnet));
    let g = u32::from(gateway);
    let (start, end) = if g < first || g > last {
        (first, last)
    } else if g == first {
        (first + 1, last)
    } else if g == last {
        (first, last - 1)
    } else if g - first > last - g {
        (first, g - 1)
    } else {
        (g + 1, last)
    };
    DhcpRange { start: Ipv4Addr::from(start), end: Ipv4Addr::from(end) }
}

fn parse_subnet(c: &mut Checker, s: &Spanned<String>) -> Option<Ipv4Network> {
    let text = s.value.trim();
    let bad = |c: &mut Checker| {
        c.at(
            "topo::lab::bad_subnet",
            s,
            format!("`{text}` is not an IPv4 subnet"),
            "not address/prefix-length",
            "write the subnet in CIDR form, e.g. `192.168.152.0/24`",
        );
        None
    };
    let Some((addr, len)) = text.split_once('/') else {
        return bad(c);
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
        return bad(c);
    };
    let Ok(net) = Ipv4Network::new(addr, len) else {
        return bad(c);
    };
    if net.network() != addr {
        c.at(
            "topo::lab::subnet_host_bits",
            s,
            format!("subnet `{text}` has host bits set"),
            "host bits set",
            format!("the subnet is written with its network address: `{}/{}`", net.network(), len),
        );
        return None;
    }
    if len > MAX_PREFIX_LEN {
        c.at(
            "topo::lab::subnet_too_small",
            s,
            format!("subnet `{text}` is too small"),
            format!("/{len} leaves no room for a gateway and a guest"),
            format!("use a /{MAX_PREFIX_LEN} or larger subnet, e.g. `{}/24`", net.network()),
        );
        return None;
    }
    Some(net)
}

fn parse_ip(c: &mut Checker, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
    match s.value.trim().parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.at(
                "topo::lab::bad_address",
                s,
                format!("`{}` is not an IPv4 address", s.value),
                format!("not a valid {what}"),
                "write a dotted IPv4 address such as `192.168.152.10`, without a prefix length",
            );
            None
        }
    }
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
            c.at("topo::lab::bad_size", s, format!("{what} `{}` {e}", s.value), "not a size", help);
            None
        }
    }
}

/// Resolves a path from the file against the lab file's folder; it must name an existing file.
fn check_file(c: &mut Checker, s: &Spanned<String>, what: &str) -> Option<PathBuf> {
    if s.value.trim().is_empty() {
        c.at("topo::lab::missing_file", s, format!("{what} path is empty"), "empty path", "give the path of the file");
        return None;
    }
    // Canonical before it is hashed or written, so the plan does not depend on the folder or
    // symlink the lab file was reached through.
    let resolved = crate::source::resolve_path(&c.source.dir, Path::new(&s.value));
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => Some(resolved),
        Ok(_) => {
            c.at(
                "topo::lab::missing_file",
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
                "topo::lab::missing_file",
                s,
                format!("{what} `{}` {why}", s.value),
                "file not found",
                "check the path; relative paths start at the lab file's folder, not the current directory",
            );
            None
        }
    }
}

/// Stage 2: the raw spec to the validated model, collecting every problem.
pub fn validate(source: &SourceFile, spec: &LabSpec) -> Result<model::Lab, ValidateError> {
    let mut c = Checker { source, problems: Vec::new() };
    let top = LabeledSpan::at((0, 0), "in this file");

    // apiVersion
    match &spec.api_version {
        None => c.push(
            "topo::lab::api_version",
            "the lab file has no `apiVersion`",
            vec![top.clone()],
            format!("add `apiVersion: {}` as the first line", model::API_VERSION),
        ),
        Some(v) if v.value != model::API_VERSION => c.at(
            "topo::lab::api_version",
            v,
            format!("unsupported apiVersion `{}`", v.value),
            "not supported by this topo",
            format!("this topo reads `apiVersion: {}` only", model::API_VERSION),
        ),
        Some(_) => {}
    }

    // name
    let lab_name = match &spec.name {
        None => {
            c.push(
                "topo::lab::name",
                "the lab file has no `name`",
                vec![top],
                "add a lab name, e.g. `name: seedlab` (lowercase letters, digits and '-')",
            );
            None
        }
        Some(n) => match LabName::new(&n.value) {
            Ok(name) => Some(name),
            Err(e) => {
                c.at(
                    "topo::lab::name",
                    n,
                    format!("lab name `{}` {e}", n.value),
                    "invalid lab name",
                    name_help("lab name", &e, "lowercase letters, digits and '-'", model::MAX_LAB_NAME),
                );
                None
            }
        },
    };

    // prefix
    let prefix = match (&spec.prefix, &lab_name) {
        (Some(p), _) => {
            let v = &p.value;
            if v.chars().count() > MAX_PREFIX {
                c.at(
                    "topo::lab::prefix",
                    p,
                    format!("prefix `{v}` is longer than {MAX_PREFIX} characters"),
                    "too long",
                    format!("shorten the prefix to at most {MAX_PREFIX} characters"),
                );
            } else if let Some(ch) =
                v.chars().find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-' || *ch == '_'))
            {
                c.at(
                    "topo::lab::prefix",
                    p,
                    format!("prefix `{v}` contains {ch:?}, which is not allowed"),
                    "invalid character",
                    "a prefix uses lowercase letters, digits, '-' and '_' (it becomes part of libvirt names)",
                );
            } else if v.starts_with(['-', '_']) {
                c.at(
                    "topo::lab::prefix",
                    p,
                    format!("prefix `{v}` starts with {:?}", v.chars().next().unwrap_or('-')),
                    "bad first character",
                    "start the prefix with a lowercase letter or digit, e.g. `lab1-`",
                );
            }
            v.clone()
        }
        (None, Some(n)) => format!("{n}-"),
        (None, None) => String::new(),
    };

    // networks
    let mut nets: BTreeMap<String, NetInfo> = BTreeMap::new();
    let mut model_nets = BTreeMap::new();
    let mut managed_subnets: Vec<(&Spanned<String>, &Spanned<String>, Ipv4Network)> = Vec::new();
    let mut bridges: BTreeMap<String, &Spanned<String>> = BTreeMap::new();
    for (key, net) in spec.networks.iter() {
        let name = match NetworkName::new(&key.value) {
            Ok(n) => Some(n),
            Err(e) => {
                c.at(
                    "topo::lab::network_name",
                    key,
                    format!("network name `{}` {e}", key.value),
                    "invalid network name",
                    name_help("network name", &e, "lowercase letters, digits, '-' and '_'", model::MAX_RESOURCE_NAME),
                );
                None
            }
        };
        let external = net.external.as_ref().is_some_and(|e| e.value);
        let (info, kind) = if external {
            check_external(&mut c, net);
            (
                NetInfo {
                    external: true,
                    subnet: None,
                    gateway: None,
                    dhcp: true,
                    dhcp_size: None,
                    dhcp_span: None,
                    broken: false,
                },
                Some(NetworkKind::External),
            )
        } else {
            let before = c.problems.len();
            let managed = check_managed(&mut c, key, net);
            if let (Some(m), Some(s)) = (&managed, &net.subnet)
                && let Some(sub) = m.subnet
            {
                managed_subnets.push((key, s, sub));
            }
            if let Some(b) = &net.bridge {
                if let Some(prev) = bridges.get(&b.value) {
                    let labels =
                        vec![LabeledSpan::at(c.span(prev), "first use"), LabeledSpan::at(c.span(b), "used again")];
                    c.push(
                        "topo::lab::duplicate_bridge",
                        format!("bridge `{}` is given to two networks", b.value),
                        labels,
                        "every lab network needs its own bridge; rename one or remove `bridge:` to let libvirt pick",
                    );
                } else {
                    bridges.insert(b.value.clone(), b);
                }
            }
            let info = NetInfo {
                external: false,
                subnet: managed.as_ref().and_then(|m| m.subnet),
                gateway: managed.as_ref().and_then(|m| m.gateway),
                dhcp: managed.as_ref().is_some_and(|m| m.dhcp.is_some()),
                dhcp_size: managed
                    .as_ref()
                    .and_then(|m| m.dhcp)
                    .map(|r| u64::from(u32::from(r.end)) - u64::from(u32::from(r.start)) + 1),
                dhcp_span: Some(net.dhcp.as_ref().map_or_else(|| c.span(key), |d| c.span(d))),
                broken: c.problems.len() > before,
            };
            (info, managed.map(NetworkKind::Managed))
        };
        nets.insert(key.value.clone(), info);
        if let (Some(name), Some(kind)) = (name, kind) {
            let libvirt_name = match kind {
                NetworkKind::External => name.to_string(),
                NetworkKind::Managed(_) => format!("{prefix}{name}"),
            };
            model_nets.insert(name.clone(), model::Network { name, libvirt_name, kind, span: c.span(key) });
        }
    }

    // overlapping subnets between lab networks
    for (i, (ka, sa, a)) in managed_subnets.iter().enumerate() {
        for (kb, sb, b) in &managed_subnets[i + 1..] {
            if a.contains(b.network()) || b.contains(a.network()) {
                let labels = vec![
                    LabeledSpan::at(c.span(sa), format!("`{}` uses {a}", ka.value)),
                    LabeledSpan::at(c.span(sb), format!("`{}` uses {b}", kb.value)),
                ];
                c.push(
                    "topo::lab::subnet_overlap",
                    format!("networks `{}` and `{}` have overlapping subnets", ka.value, kb.value),
                    labels,
                    "give each lab network its own, non-overlapping subnet",
                );
            }
        }
    }

    // vms and nics
    let mut model_vms = BTreeMap::new();
    let mut macs: BTreeMap<MacAddr, (String, SourceSpan, bool)> = BTreeMap::new();
    let mut ips: BTreeMap<(String, Ipv4Addr), (String, SourceSpan)> = BTreeMap::new();
    let mut reservations: BTreeMap<String, BTreeMap<MacAddr, Reservation>> = BTreeMap::new();
    // NICs that need a dynamic lease, by network.
    let mut dynamic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, vm) in spec.vms.iter() {
        let name = match VmName::new(&key.value) {
            Ok(n) => Some(n),
            Err(e) => {
                c.at(
                    "topo::lab::vm_name",
                    key,
                    format!("VM name `{}` {e}", key.value),
                    "invalid VM name",
                    name_help("VM name", &e, "lowercase letters, digits, '-' and '_'", model::MAX_RESOURCE_NAME),
                );
                None
            }
        };
        let body = check_vm_body(&mut c, key, vm);
        let mut nics = Vec::new();
        for (index, nic) in vm.nics.iter().enumerate() {
            let nic = &nic.value;
            let who = format!("{}.nics[{index}]", key.value);
            let Some(info) = nets.get(&nic.network.value) else {
                let help = match did_you_mean(&nic.network.value, nets.keys().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`? Declared networks: {}", list(nets.keys())),
                    None if nets.is_empty() => "declare the network under `networks:` first".to_owned(),
                    None => format!("declare it under `networks:` or use one of: {}", list(nets.keys())),
                };
                c.at(
                    "topo::lab::unknown_network",
                    &nic.network,
                    format!("{who} uses network `{}`, which is not declared", nic.network.value),
                    "not declared under `networks`",
                    help,
                );
                continue;
            };
            let mac = check_nic_mac(&mut c, nic, &who, lab_name.as_ref(), name.as_ref(), index, &mut macs);
            let ip = check_nic_ip(&mut c, nic, &who, info, &mut ips);
            if nic.ip.is_none() && !info.external {
                dynamic.entry(nic.network.value.clone()).or_default().push(who.clone());
            }
            let verify = match nic.verify.as_ref().map(|v| v.value) {
                None | Some(VerifySpec::Arp) => Verify::Arp,
                Some(VerifySpec::None) => Verify::None,
            };
            if verify != Verify::None && !info.external && !info.broken {
                let reason = if info.subnet.is_none() {
                    Some(format!("network `{}` has no subnet", nic.network.value))
                } else if !info.dhcp && ip.is_none() && nic.ip.is_none() {
                    Some(format!("network `{}` has no DHCP and the NIC has no `ip`", nic.network.value))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    let help = if info.subnet.is_none() {
                        "give the network a `subnet:`, or set `verify: none` on this NIC".to_owned()
                    } else {
                        "add `ip:` to the NIC, enable `dhcp:` on the network, or set `verify: none`".to_owned()
                    };
                    c.at(
                        "topo::lab::nic_no_address",
                        &nic.network,
                        format!("{who} can get no IPv4 address, so topo cannot verify it: {reason}"),
                        "this NIC gets no address",
                        help,
                    );
                }
            }
            let (Some(mac), Ok(net)) = (mac, NetworkName::new(&nic.network.value)) else {
                continue;
            };
            if let (Some(ip), Some(vm_name)) = (ip, &name) {
                reservations
                    .entry(nic.network.value.clone())
                    .or_default()
                    .insert(mac.0, Reservation { mac: mac.0, ip, host: vm_name.to_string() });
            }
            nics.push(model::Nic {
                index,
                network: net,
                mac: mac.0,
                mac_derived: mac.1,
                ip,
                verify,
                span: c.span(&nic.network),
            });
        }
        if let (Some(name), Some((virt_type, memory, vcpus, boot, disk))) = (name, body) {
            model_vms.insert(
                name.clone(),
                model::Vm {
                    libvirt_name: format!("{prefix}{name}"),
                    name,
                    virt_type,
                    memory,
                    vcpus,
                    boot,
                    disk,
                    nics,
                    cloud_init: None,
                    span: c.span(key),
                },
            );
        }
    }

    // A DHCP range smaller than the NICs that need a lease from it leaves some without one.
    for (net, nics) in &dynamic {
        let Some(info) = nets.get(net) else { continue };
        if let (Some(size), Some(span)) = (info.dhcp_size, info.dhcp_span)
            && nics.len() as u64 > size
        {
            c.push(
                "topo::lab::dhcp_too_small",
                format!(
                    "network `{net}` hands out {size} address{} by DHCP, but {} NICs need one ({})",
                    if size == 1 { "" } else { "es" },
                    nics.len(),
                    nics.join(", ")
                ),
                vec![LabeledSpan::at(span, format!("{size} address{}", if size == 1 { "" } else { "es" }))],
                "use a larger subnet or DHCP range, or give some NICs a fixed `ip:`",
            );
        }
    }

    if !c.problems.is_empty() {
        return Err(error(source, c.problems));
    }
    for (name, net) in model_nets.iter_mut() {
        if let NetworkKind::Managed(m) = &mut net.kind
            && let Some(r) = reservations.remove(name.as_str())
        {
            m.reservations = r;
        }
    }
    let Some(name) = lab_name else {
        // Unreachable in practice: a missing or bad name always records a problem above.
        return Err(error(source, vec![]));
    };
    Ok(model::Lab { name, prefix, networks: model_nets, vms: model_vms, source: source.clone() })
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// External networks may say `external: true` and nothing else.
fn check_external(c: &mut Checker, net: &NetworkSpec) {
    let NetworkSpec { external: _, mode, subnet, gateway, dhcp, bridge, autostart, stp, dhcp_ping } = net;
    let mut given: Vec<(&str, SourceSpan)> = Vec::new();
    if let Some(v) = mode {
        given.push(("mode", c.span(v)));
    }
    if let Some(v) = subnet {
        given.push(("subnet", c.span(v)));
    }
    if let Some(v) = gateway {
        given.push(("gateway", c.span(v)));
    }
    if let Some(v) = dhcp {
        given.push(("dhcp", c.span(v)));
    }
    if let Some(v) = bridge {
        given.push(("bridge", c.span(v)));
    }
    if let Some(v) = autostart {
        given.push(("autostart", c.span(v)));
    }
    if let Some(v) = stp {
        given.push(("stp", c.span(v)));
    }
    if let Some(v) = dhcp_ping {
        given.push(("dhcp_ping", c.span(v)));
    }
    for (key, span) in given {
        c.push(
            "topo::lab::external_settings",
            format!("external network sets `{key}`"),
            vec![LabeledSpan::at(span, "not allowed on an external network")],
            format!(
                "remove `{key}`: topo uses an external network as it is and never changes it; \
                 to let the lab own the network, remove `external: true`"
            ),
        );
    }
}

fn check_managed(c: &mut Checker, key: &Spanned<String>, net: &NetworkSpec) -> Option<ManagedNetwork> {
    let mut ok = true;
    let mode = match net.mode.as_ref().map(|m| m.value) {
        None | Some(ModeSpec::Nat) => NetworkMode::Nat,
        Some(ModeSpec::Routed) => NetworkMode::Routed,
        Some(ModeSpec::Isolated) => NetworkMode::Isolated,
        Some(ModeSpec::Open) => NetworkMode::Open,
    };
    let subnet = match &net.subnet {
        Some(s) => {
            let r = parse_subnet(c, s);
            ok &= r.is_some();
            r
        }
        None => {
            if matches!(mode, NetworkMode::Nat | NetworkMode::Routed) {
                let how = if net.mode.is_none() { " (the default mode)" } else { "" };
                c.at(
                    "topo::lab::subnet_required",
                    key,
                    format!("network `{}` is {mode}{how} but has no subnet", key.value),
                    format!("{mode} network without `subnet`"),
                    "add `subnet:`, e.g. `subnet: 192.168.152.0/24`, or use `mode: isolated` for a network without addresses",
                );
                ok = false;
            }
            None
        }
    };
    let gateway = match (&net.gateway, subnet) {
        (Some(g), Some(sub)) => match parse_ip(c, g, "gateway") {
            Some(ip) if !sub.contains(ip) => {
                c.at(
                    "topo::lab::gateway",
                    g,
                    format!("gateway {ip} is outside subnet {sub}"),
                    "outside the subnet",
                    format!("pick an address inside {sub}, e.g. {} (the default)", first_host(&sub)),
                );
                None
            }
            Some(ip) if ip == sub.network() || ip == sub.broadcast() => {
                let which = if ip == sub.network() { "network" } else { "broadcast" };
                c.at(
                    "topo::lab::gateway",
                    g,
                    format!("gateway {ip} is the {which} address of {sub}"),
                    format!("{which} address"),
                    format!("pick a host address, e.g. {} (the default)", first_host(&sub)),
                );
                None
            }
            r => r,
        },
        (Some(g), None) => {
            if net.subnet.is_none() {
                c.at(
                    "topo::lab::gateway",
                    g,
                    "`gateway` is given without a `subnet`",
                    "no subnet to put it in",
                    "add `subnet:` to the network, or remove `gateway`",
                );
            }
            None
        }
        (None, Some(sub)) => Some(first_host(&sub)),
        (None, None) => None,
    };
    if net.gateway.is_some() && gateway.is_none() {
        ok = false;
    }
    let dhcp = match (&net.dhcp, subnet, gateway) {
        (None, Some(sub), Some(g)) => Some(default_dhcp_range(&sub, g)),
        (None, _, _) => None,
        (Some(d), _, _) if d.value == DhcpSpec::Enabled(false) => None,
        (Some(d), None, _) => {
            if net.subnet.is_none() {
                c.at(
                    "topo::lab::dhcp",
                    d,
                    "`dhcp` is set on a network without a `subnet`",
                    "no subnet to hand out",
                    "add `subnet:` to the network, or remove `dhcp`",
                );
            }
            ok = false;
            None
        }
        (Some(_), Some(_), None) => {
            ok = false;
            None
        }
        (Some(d), Some(sub), Some(g)) => match &d.value {
            DhcpSpec::Enabled(_) => Some(default_dhcp_range(&sub, g)),
            DhcpSpec::Range(r) => {
                let start = r.start.trim().parse::<Ipv4Addr>();
                let end = r.end.trim().parse::<Ipv4Addr>();
                let label = |t: &str| vec![LabeledSpan::at(c.span(d), t.to_owned())];
                let (Ok(start), Ok(end)) = (start, end) else {
                    let labels = label("not two IPv4 addresses");
                    c.push(
                        "topo::lab::dhcp",
                        format!("DHCP range `{}` .. `{}` is not two IPv4 addresses", r.start, r.end),
                        labels,
                        format!("write e.g. `dhcp: {{start: {}, end: {}}}`", first_host(&sub), last_host(&sub)),
                    );
                    return None;
                };
                let suggest = default_dhcp_range(&sub, g);
                let suggest = format!("e.g. `{{start: {}, end: {}}}`", suggest.start, suggest.end);
                if !is_host(&sub, start) || !is_host(&sub, end) {
                    let labels = label("outside the subnet's host addresses");
                    c.push(
                        "topo::lab::dhcp",
                        format!("DHCP range {start} .. {end} is not inside the host addresses of {sub}"),
                        labels,
                        format!("keep both ends between {} and {}, {suggest}", first_host(&sub), last_host(&sub)),
                    );
                    ok = false;
                    None
                } else if start > end {
                    let labels = label("start after end");
                    c.push(
                        "topo::lab::dhcp",
                        format!("DHCP range starts at {start}, after its end {end}"),
                        labels,
                        format!("swap the two: `{{start: {end}, end: {start}}}`"),
                    );
                    ok = false;
                    None
                } else if start <= g && g <= end {
                    let labels = label("contains the gateway");
                    c.push(
                        "topo::lab::dhcp",
                        format!("DHCP range {start} .. {end} contains the gateway {g}"),
                        labels,
                        format!("leave the gateway out of the range, {suggest}"),
                    );
                    ok = false;
                    None
                } else {
                    Some(DhcpRange { start, end })
                }
            }
        },
    };
    let bridge = match &net.bridge {
        None => None,
        Some(b) => match BridgeName::new(&b.value) {
            Ok(b) => Some(b),
            Err(e) => {
                let help = match e {
                    NameError::TooLong { .. } => format!(
                        "Linux limits interface names to {} characters; use a shorter name such as `virbr2`",
                        model::MAX_BRIDGE_NAME
                    ),
                    _ => "a bridge name uses letters, digits, '-', '_' and '.', e.g. `virbr2`".to_owned(),
                };
                c.at("topo::lab::bridge", b, format!("bridge name `{}` {e}", b.value), "invalid bridge name", help);
                ok = false;
                None
            }
        },
    };
    if !ok {
        return None;
    }
    Some(ManagedNetwork {
        mode,
        subnet,
        gateway,
        dhcp,
        bridge,
        autostart: net.autostart.as_ref().is_none_or(|a| a.value),
        stp: net.stp.as_ref().is_some_and(|a| a.value),
        dhcp_ping: net.dhcp_ping.as_ref().is_some_and(|a| a.value),
        reservations: BTreeMap::new(),
    })
}

type VmBody = (VirtType, ByteSize, u32, Option<model::Boot>, Option<model::Disk>);

fn check_vm_body(c: &mut Checker, key: &Spanned<String>, vm: &VmSpec) -> Option<VmBody> {
    let mut ok = true;
    let virt_type = match vm.hypervisor.as_ref().map(|h| h.value) {
        None | Some(HypervisorSpec::Kvm) => VirtType::Kvm,
        Some(HypervisorSpec::Qemu) => VirtType::Qemu,
    };
    let memory = match &vm.memory {
        None => DEFAULT_MEMORY,
        Some(m) => match parse_size(c, m, "memory") {
            Some(b) if b < MIN_MEMORY || b > MAX_MEMORY => {
                c.at(
                    "topo::lab::memory",
                    m,
                    format!("memory {b} is out of range"),
                    format!("must be between {MIN_MEMORY} and {MAX_MEMORY}"),
                    format!("give between {MIN_MEMORY} and {MAX_MEMORY}, e.g. `memory: 512MiB`"),
                );
                ok = false;
                DEFAULT_MEMORY
            }
            Some(b) => b,
            None => {
                ok = false;
                DEFAULT_MEMORY
            }
        },
    };
    let vcpus = match &vm.vcpus {
        None => 1,
        Some(v) if v.value >= 1 && v.value <= i64::from(MAX_VCPUS) => v.value as u32,
        Some(v) => {
            c.at(
                "topo::lab::vcpus",
                v,
                format!("vcpus {} is out of range", v.value),
                format!("must be 1 to {MAX_VCPUS}"),
                format!("give a whole number from 1 to {MAX_VCPUS}"),
            );
            ok = false;
            1
        }
    };
    let boot = vm.boot.as_ref().map(|b| {
        let kernel = check_file(c, &b.value.kernel, "kernel");
        let initrd = b.value.initrd.as_ref().map(|i| check_file(c, i, "initrd"));
        ok &= kernel.is_some() && initrd.as_ref().is_none_or(Option::is_some);
        model::Boot { kernel: kernel.unwrap_or_default(), initrd: initrd.flatten(), cmdline: b.value.cmdline.clone() }
    });
    let disk = vm.disk.as_ref().map(|d| {
        let image = check_file(c, &d.value.image, "disk image");
        let size = d.value.size.as_ref().map(|s| match parse_size(c, s, "size") {
            Some(b) if b.bytes() == 0 => {
                c.at(
                    "topo::lab::bad_size",
                    s,
                    "disk size is zero",
                    "zero",
                    "give a size such as `10GiB`, or remove `size`",
                );
                None
            }
            r => r,
        });
        ok &= image.is_some() && size.as_ref().is_none_or(Option::is_some);
        model::Disk { image: image.unwrap_or_default(), size: size.flatten() }
    });
    if boot.is_none() && disk.is_none() {
        c.at(
            "topo::lab::nothing_to_boot",
            key,
            format!("VM `{}` has nothing to boot", key.value),
            "neither `boot` nor `disk`",
            "add `boot: {kernel: ...}` for direct kernel boot, or `disk: {image: ...}`, or both",
        );
        ok = false;
    }
    ok.then_some((virt_type, memory, vcpus, boot, disk))
}

/// The NIC's MAC (given or derived) and whether it was derived; records duplicates.
fn check_nic_mac(
    c: &mut Checker,
    nic: &NicSpec,
    who: &str,
    lab: Option<&LabName>,
    vm: Option<&VmName>,
    index: usize,
    seen: &mut BTreeMap<MacAddr, (String, SourceSpan, bool)>,
) -> Option<(MacAddr, bool)> {
    let (mac, derived, span) = match &nic.mac {
        Some(m) => match m.value.trim().parse::<MacAddr>() {
            Ok(mac) => (mac, false, c.span(m)),
            Err(e) => {
                let help = match e {
                    MacError::Format => {
                        "write six pairs of hex digits separated by ':', e.g. `52:54:00:00:1f:02`, or remove `mac` to get a derived one"
                    }
                    MacError::Multicast => {
                        "use a unicast address: the first byte must be even; QEMU's `52:54:00:..` prefix is a safe choice"
                    }
                };
                c.at("topo::lab::bad_mac", m, format!("MAC `{}` {e}", m.value), "invalid MAC", help);
                return None;
            }
        },
        None => {
            let (Some(lab), Some(vm)) = (lab, vm) else {
                return None;
            };
            (MacAddr::derived(lab, vm, index), true, c.span(&nic.network))
        }
    };
    if let Some((other, other_span, other_derived)) = seen.get(&mac) {
        let label_of = |d: bool, w: &str| {
            if d { format!("{w}: derived {mac}") } else { format!("{w}: {mac}") }
        };
        let labels = vec![
            LabeledSpan::at(*other_span, label_of(*other_derived, other)),
            LabeledSpan::at(span, label_of(derived, who)),
        ];
        let help = if derived || *other_derived {
            "derived MACs collided (it is rare but possible); set `mac:` explicitly on one of the two NICs"
        } else {
            "every NIC needs its own MAC; change one, or remove `mac:` to get a derived one"
        };
        c.push("topo::lab::duplicate_mac", format!("{other} and {who} have the same MAC {mac}"), labels, help);
        return None;
    }
    seen.insert(mac, (who.to_owned(), span, derived));
    Some((mac, derived))
}

/// The NIC's reserved address, if valid; records duplicates per network.
fn check_nic_ip(
    c: &mut Checker,
    nic: &NicSpec,
    who: &str,
    info: &NetInfo,
    seen: &mut BTreeMap<(String, Ipv4Addr), (String, SourceSpan)>,
) -> Option<Ipv4Addr> {
    let s = nic.ip.as_ref()?;
    let net = &nic.network.value;
    let ip = parse_ip(c, s, "address")?;
    if info.external {
        c.at(
            "topo::lab::ip_on_external",
            s,
            format!("{who} reserves {ip} on external network `{net}`"),
            "cannot reserve on an external network",
            "topo never changes an external network, so it cannot add a DHCP reservation there; remove `ip:` or put the NIC on a lab network",
        );
        return None;
    }
    if info.broken {
        return None;
    }
    let Some(sub) = info.subnet else {
        c.at(
            "topo::lab::ip_without_subnet",
            s,
            format!("{who} reserves {ip} on network `{net}`, which has no subnet"),
            "no subnet on this network",
            format!("add `subnet:` to network `{net}`, or remove `ip:`"),
        );
        return None;
    };
    let problem = if !sub.contains(ip) {
        Some(format!("is outside {sub}"))
    } else if ip == sub.network() {
        Some(format!("is the network address of {sub}"))
    } else if ip == sub.broadcast() {
        Some(format!("is the broadcast address of {sub}"))
    } else if Some(ip) == info.gateway {
        Some("is the network's gateway (the host bridge)".to_owned())
    } else {
        None
    };
    if let Some(p) = problem {
        c.at(
            "topo::lab::bad_reservation",
            s,
            format!("{who}: address {ip} {p}"),
            "not usable for this NIC",
            format!(
                "pick a free host address of {sub} between {} and {}, other than the gateway",
                first_host(&sub),
                last_host(&sub)
            ),
        );
        return None;
    }
    let span = c.span(s);
    if let Some((other, other_span)) = seen.get(&(net.clone(), ip)) {
        let labels =
            vec![LabeledSpan::at(*other_span, format!("{other} has it")), LabeledSpan::at(span, format!("{who} too"))];
        c.push(
            "topo::lab::duplicate_ip",
            format!("{other} and {who} both reserve {ip} on network `{net}`"),
            labels,
            "give each NIC its own address",
        );
        return None;
    }
    seen.insert((net.clone(), ip), (who.to_owned(), span));
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(text: &str) -> Result<model::Lab, ValidateError> {
        // Paths in these tests are absolute files that exist everywhere.
        load(&SourceFile::from_text(Path::new("/tmp/unit.yaml"), text.to_owned()))
    }

    const BASE: &str = "apiVersion: topo/v1\nname: seedlab\n";

    #[test]
    fn defaults() {
        let text = format!(
            "{BASE}networks:\n  default:\n    external: true\n  local_net:\n    mode: isolated\n    subnet: 192.168.152.0/24\n\
             vms:\n  deb1:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - network: default\n      - network: local_net\n        ip: 192.168.152.10\n"
        );
        let lab = lab(&text).unwrap();
        assert_eq!(lab.prefix, "seedlab-");
        let ext = &lab.networks[&NetworkName::new("default").unwrap()];
        assert_eq!(ext.libvirt_name, "default");
        assert!(matches!(ext.kind, NetworkKind::External));
        let local = &lab.networks[&NetworkName::new("local_net").unwrap()];
        assert_eq!(local.libvirt_name, "seedlab-local_net");
        let NetworkKind::Managed(m) = &local.kind else { panic!("managed") };
        assert_eq!(m.mode, NetworkMode::Isolated);
        assert_eq!(m.gateway, Some(Ipv4Addr::new(192, 168, 152, 1)));
        assert_eq!(
            m.dhcp,
            Some(DhcpRange { start: Ipv4Addr::new(192, 168, 152, 2), end: Ipv4Addr::new(192, 168, 152, 254) })
        );
        assert!(m.autostart && !m.stp && !m.dhcp_ping);
        let vm = &lab.vms[&VmName::new("deb1").unwrap()];
        assert_eq!(vm.libvirt_name, "seedlab-deb1");
        assert_eq!(vm.virt_type, VirtType::Kvm);
        assert_eq!(vm.memory, ByteSize::from_mib(512));
        assert_eq!(vm.vcpus, 1);
        let l = LabName::new("seedlab").unwrap();
        let v = VmName::new("deb1").unwrap();
        assert_eq!(vm.nics[0].mac, MacAddr::derived(&l, &v, 0));
        assert_eq!(vm.nics[0].mac.to_string(), "52:54:00:39:b7:d5");
        assert_eq!(vm.nics[1].mac, MacAddr::derived(&l, &v, 1));
        assert!(vm.nics[1].mac_derived);
        assert_eq!(vm.nics[1].verify, Verify::Arp);
        let r = &m.reservations[&vm.nics[1].mac];
        assert_eq!((r.ip, r.host.as_str()), (Ipv4Addr::new(192, 168, 152, 10), "deb1"));
        assert_eq!(lab.summary(), "lab seedlab: 2 networks (1 external), 1 vm, 2 nics");
    }

    #[test]
    fn explicit_prefix_and_mac() {
        let text = format!(
            "{BASE}prefix: \"\"\nnetworks:\n  n:\n    subnet: 10.0.0.0/29\nvms:\n  a:\n    disk: {{image: /etc/hostname, size: 1GiB}}\n    nics:\n      - {{network: n, mac: \"52:54:00:00:1F:02\"}}\n      - network: n\n        mac: 52:54:00:00:1f:03\n"
        );
        let lab = lab(&text).unwrap();
        assert_eq!(lab.prefix, "");
        assert_eq!(lab.networks[&NetworkName::new("n").unwrap()].libvirt_name, "n");
        let vm = &lab.vms[&VmName::new("a").unwrap()];
        assert_eq!(vm.libvirt_name, "a");
        assert_eq!(vm.nics[0].mac.to_string(), "52:54:00:00:1f:02");
        assert!(!vm.nics[0].mac_derived);
        assert_eq!(vm.disk.as_ref().unwrap().size, Some(ByteSize::from_bytes(ByteSize::GIB)));
    }

    #[test]
    fn dhcp_default_ranges() {
        let n: Ipv4Network = "10.0.0.0/24".parse().unwrap();
        let r = |g: [u8; 4]| {
            let d = default_dhcp_range(&n, Ipv4Addr::from(g));
            (d.start.octets()[3], d.end.octets()[3])
        };
        assert_eq!(r([10, 0, 0, 1]), (2, 254));
        assert_eq!(r([10, 0, 0, 254]), (1, 253));
        assert_eq!(r([10, 0, 0, 100]), (101, 254)); // upper side is larger
        assert_eq!(r([10, 0, 0, 200]), (1, 199)); // lower side is larger
        let small: Ipv4Network = "10.0.0.0/30".parse().unwrap();
        let d = default_dhcp_range(&small, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!((d.start, d.end), (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn gateway_given_moves_range() {
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.1.0.0/24\n    gateway: 10.1.0.254\n    dhcp: true\n    stp: true\n    dhcp_ping: true\n    autostart: false\n"
        );
        let lab = lab(&text).unwrap();
        let NetworkKind::Managed(m) = &lab.networks[&NetworkName::new("n").unwrap()].kind else { panic!() };
        assert_eq!(m.dhcp.unwrap().start, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(m.dhcp.unwrap().end, Ipv4Addr::new(10, 1, 0, 253));
        assert!(m.stp && m.dhcp_ping && !m.autostart);
    }

    #[test]
    fn dhcp_false_and_open_without_subnet() {
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.1.0.0/24\n    dhcp: false\n  o:\n    mode: open\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - {{network: n, ip: 10.1.0.5}}\n      - {{network: o, verify: none}}\n"
        );
        let lab = lab(&text).unwrap();
        let NetworkKind::Managed(m) = &lab.networks[&NetworkName::new("n").unwrap()].kind else { panic!() };
        assert_eq!(m.dhcp, None);
        let NetworkKind::Managed(o) = &lab.networks[&NetworkName::new("o").unwrap()].kind else { panic!() };
        assert_eq!((o.subnet, o.gateway, o.dhcp), (None, None, None));
    }

    #[test]
    fn empty_lab_is_valid() {
        let lab = lab(BASE).unwrap();
        assert_eq!(lab.summary(), "lab seedlab: 0 networks (0 external), 0 vms, 0 nics");
    }

    #[test]
    fn collects_several_problems() {
        let text =
            "name: Bad\nnetworks:\n  n:\n    subnet: 10.0.0.5/24\nvms:\n  a:\n    vcpus: 0\n    nics: [{network: m}]\n";
        let err = lab(text).unwrap_err();
        assert_eq!(
            err.codes(),
            [
                "topo::lab::api_version",
                "topo::lab::name",
                "topo::lab::subnet_host_bits",
                "topo::lab::vcpus",
                "topo::lab::nothing_to_boot",
                "topo::lab::unknown_network"
            ]
        );
    }

    #[test]
    fn non_ascii_spans_are_byte_offsets() {
        let text = "apiVersion: topo/v1\nname: \"läb\"\n";
        let err = lab(text).unwrap_err();
        let label = err.problems[0].labels[0].inner();
        assert_eq!(&text[label.offset()..label.offset() + label.len()], "\"läb\"");
    }

    /// The typed spec rejects most hostile shapes on its own (wrong type at the first
    /// node); the budget must hold even for a reader that accepts any YAML.
    #[test]
    fn parser_budget_stops_untyped_bombs() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let r = serde_saphyr::from_str_with_options::<serde_json::Value>(&bomb, parse_options());
        assert!(r.is_err(), "alias bomb expanded");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let r = serde_saphyr::from_str_with_options::<serde_json::Value>(&deep, parse_options());
        assert!(r.is_err(), "deep nesting accepted");
        let many: String = (0..150_000).map(|i| format!("k{i}: v\n")).collect();
        let r = serde_saphyr::from_str_with_options::<serde_json::Value>(&many, parse_options());
        assert!(r.is_err(), "node budget not enforced");
        // A normal lab-sized document is well within budget.
        let ok: String = (0..500).map(|i| format!("k{i}: {{a: [1, 2, 3]}}\n")).collect();
        assert!(serde_saphyr::from_str_with_options::<serde_json::Value>(&ok, parse_options()).is_ok());
    }

    #[test]
    fn did_you_mean_finds_typos() {
        assert_eq!(did_you_mean("local-net", ["default", "local_net"].into_iter()), Some("local_net"));
        assert_eq!(did_you_mean("zzz", ["default", "local_net"].into_iter()), None);
        assert_eq!(expected_list(", expected one of apiVersion, name"), ["apiVersion", "name"]);
        assert_eq!(expected_list(", expected `a` or `b`"), ["a", "b"]);
    }
    /// Bug: the same file planned from another folder or through a symlinked folder gave other
    /// paths, so other overlay names, and a plan replacing every VM with a disk.
    #[test]
    fn paths_are_canonical_however_the_file_is_reached() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        for f in ["base.qcow2", "vmlinuz", "initrd.gz"] {
            std::fs::write(real.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.0.0.0/24\nvms:\n  a:\n    boot: {{kernel: ./vmlinuz, initrd: sub/../initrd.gz}}\n    disk: {{image: base.qcow2, size: 1GiB}}\n    nics:\n      - network: n\n"
        );
        let paths = |lab_file: &Path| {
            let lab = load(&SourceFile::from_text(lab_file, text.clone())).unwrap();
            let vm = lab.vms.values().next().unwrap().clone();
            let boot = vm.boot.clone().unwrap();
            (boot.kernel, boot.initrd, vm.disk.clone().unwrap().image, vm.overlay_name())
        };
        let canonical = std::fs::canonicalize(&real).unwrap();
        let want = paths(&canonical.join("lab.yaml"));
        assert_eq!(want.0, canonical.join("vmlinuz"));
        assert_eq!(want.1, Some(canonical.join("initrd.gz")));
        assert_eq!(want.2, canonical.join("base.qcow2"));
        for via in ["link/lab.yaml", "real/sub/../lab.yaml", "link/sub/../lab.yaml", "real/./lab.yaml"] {
            assert_eq!(paths(&tmp.path().join(via)), want, "{via}");
        }
    }
}
