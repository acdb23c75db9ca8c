//! Lab file validation: YAML text -> `spec::LabSpec` -> `model::Lab`, reporting every problem.
//!
//! Stage 1 ([`parse`]) reads the YAML into the raw spec under a resource budget (aliases,
//! nesting, node counts), so hostile input ends in an error quickly and in bounded memory.
//! A syntax error or duplicate key is reported alone; shape problems (unknown keys, wrong
//! types, bad values, missing keys) are all found by the schema check in `shape`.
//! Stage 2 ([`validate`]) checks every rule, resource by resource (`lab`, `network`, `vm`,
//! `nic`), and collects *all* problems, each pointing at the exact value in the file with a
//! help line that says how to fix it.

mod cloud_init;
mod hosts;
mod lab;
mod network;
mod nic;
mod ready;
mod vm;
mod wire;

use std::net::Ipv4Addr;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use serde_saphyr::MessageFormatter;

pub use crate::diag::Problem;
use crate::diag::{Code, span_of, suggest};
use crate::lab::model;
use crate::lab::source::SourceFile;
use crate::lab::spec::{LabSpec, Spanned};
pub use lab::MAX_PREFIX;
pub use network::{MAX_PREFIX_LEN, default_dhcp_range};
pub use vm::{DEFAULT_MEMORY, MAX_MEMORY, MAX_VCPUS, MIN_MEMORY};

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
        self.problems.iter().map(|p| p.code.as_str()).collect()
    }
}

/// Parses and validates a lab file, checking its paths on this machine.
pub fn load(source: &SourceFile) -> Result<model::Lab, ValidateError> {
    load_with(source, Files::Checked)
}

/// Whether the files a lab names (kernel, initrd, image) are checked on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// Each must be an existing regular file here: the libvirt host is this machine.
    Checked,
    /// Resolved and checked for what libvirt's XML can carry, not for existence: the
    /// libvirt host is another machine, where QEMU opens them.
    NotChecked,
    /// Not opened at all: the command uses none of them (`destroy`, `status`, `verify`,
    /// `inventory`, `ssh`, `console`), as Terraform's destroy needs a parseable config but
    /// not the files it names. Paths are resolved as for `NotChecked`; a cloud-init key
    /// file or user-data file that cannot be read is left out without a problem.
    NotOpened,
}

/// Parses and validates a lab file. This is what `topo validate` (and every other command)
/// calls, with [`Files::NotChecked`] when the libvirt host is another machine.
pub fn load_with(source: &SourceFile, files: Files) -> Result<model::Lab, ValidateError> {
    let spec = parse(source)?;
    validate_with(source, &spec, files)
}

fn error(source: &SourceFile, problems: Vec<Problem>) -> ValidateError {
    ValidateError { path: source.name(), src: source.named_source(), problems }
}

const MAX_EVENTS: usize = 200_000;
const MAX_ALIASES: usize = 1_000;
const MAX_ANCHORS: usize = 1_000;
const MAX_DEPTH: usize = 32;
const MAX_NODES: usize = 100_000;
const MAX_SCALAR_BYTES: usize = 2 * 1024 * 1024;
const MAX_MERGE_KEYS: usize = 1_000;

/// The parser limits. A real lab file has a few hundred nodes and no aliases to speak of;
/// these bounds stop alias bombs, deep nesting and huge documents long before they cost
/// noticeable time or memory.
fn parse_options() -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 1_000;
    serde_saphyr::options! {
        // YAML 1.2 core schema: only `true` and `false` are booleans (`no`, `off` are text).
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_events: MAX_EVENTS,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ANCHORS,
            max_depth: MAX_DEPTH,
            max_documents: 1,
            max_nodes: MAX_NODES,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
            max_merge_keys: MAX_MERGE_KEYS,
        },
        alias_limits: alias_limits,
    }
}

/// Stage 1: YAML text to the raw spec. The typed parse stops at its first error, so the file
/// is also checked as a tree against the JSON Schema, so that every shape problem is
/// reported at once (and a value the typed parse read as another type, a quoted `"no"` into
/// a bool, is refused). A YAML syntax error is reported alone: nothing after it can be read
/// reliably.
pub fn parse(source: &SourceFile) -> Result<LabSpec, ValidateError> {
    let text = source.text.as_str();
    let typed = serde_saphyr::from_str_with_options::<LabSpec>(text, parse_options());
    // The tree check runs even when the typed parse succeeds: serde reads a quoted `"no"`
    // into a bool, the schema (like YAML 1.2) says it is text.
    let tree = crate::lab::shape::check(text, parse_options());
    match (typed, tree) {
        // What the typed parse accepted is checked by stage 2, except the values it read
        // into another type than the file gives (`"no"` into a bool).
        (Ok(spec), Ok(all)) => {
            let wrong: Vec<Problem> = all.into_iter().filter(|p| p.code == Code::BadType).collect();
            if wrong.is_empty() { Ok(spec) } else { Err(error(source, wrong)) }
        }
        (Ok(spec), Err(_)) => Ok(spec),
        (Err(_), Ok(all)) if !all.is_empty() => Err(error(source, all)),
        (Err(e), Ok(_)) => Err(error(source, vec![syntax_problem(text, &e)])),
        // Not even a tree of YAML nodes: the tree parser's error is the true one (the typed
        // parse may describe an unclosed `[` as a wrong type).
        (Err(e), Err(t)) => {
            let mut p = syntax_problem(text, &t);
            if p.code.is_shape() {
                p = syntax_problem(text, &e);
            }
            Err(error(source, vec![p]))
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
        let help = suggest(field, &expected, "Allowed here", "allowed here");
        (Code::UnknownKey, format!("unknown key `{field}`"), "not a lab file key here", help)
    } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected_list(expected);
        let help = suggest(value, &expected, "One of", "use one of");
        (Code::BadValue, format!("`{value}` is not allowed here"), "unknown value", help)
    } else if msg.starts_with("duplicate mapping key") {
        (
            Code::DuplicateKey,
            msg.clone(),
            "given again here",
            "each key may appear once per mapping; merge the two entries or rename one".to_owned(),
        )
    } else if msg.contains("untagged enum DhcpSpec") {
        (
            Code::BadType,
            "`dhcp` must be true, false or a range".to_owned(),
            "not a valid dhcp value",
            "write `true`, `false` or a range such as `{start: 10.0.0.100, end: 10.0.0.200}`".to_owned(),
        )
    } else if msg.contains("budget")
        || msg.contains("limit")
        || msg.contains("alias")
        || msg.contains("too large or too complex")
    {
        (
            Code::TooComplex,
            format!("the lab file is too large or too deeply nested for topo: {}", plain_breach(&msg)),
            "limit reached here",
            "a lab file needs no deep nesting and few anchors/aliases; write it out plainly".to_owned(),
        )
    } else if msg.contains("missing field") {
        (Code::MissingKey, msg.clone(), "in this mapping", "add the missing key".to_owned())
    } else if msg.starts_with("invalid") || msg.contains("expected") {
        let what = match msg.strip_prefix("invalid ") {
            Some("i64" | "u64" | "i32" | "u32" | "u16" | "u8") => "expected a whole number".to_owned(),
            Some("bool") => "expected `true` or `false`".to_owned(),
            _ => msg.clone(),
        };
        (
            Code::BadType,
            format!("wrong type: {what}"),
            "this value",
            "see docs/lab-file.md for the type of each key".to_owned(),
        )
    } else {
        (
            Code::Syntax,
            format!("YAML syntax error: {msg}"),
            "here",
            "check indentation, quotes and brackets around this point".to_owned(),
        )
    };
    Problem { code, message, labels: vec![LabeledSpan::at(span, label)], help: Some(help) }
}

/// The parser's `limits breached: Aliases { aliases: 1001 }` (Rust debug text) in words,
/// with the limit from [`parse_options`].
fn plain_breach(msg: &str) -> String {
    // `... too complex: total_replayed_events=100001 > 100000`: aliases replayed too often.
    if let Some((count, limit)) = msg.split("total_replayed_events=").nth(1).and_then(|r| r.split_once(" > ")) {
        return format!("its aliases expand to more than {} YAML events (at {count})", limit.trim());
    }
    let Some(rest) = msg.split("limits breached: ").nth(1) else { return msg.to_owned() };
    let (kind, count) = rest.split_once(" {").unwrap_or((rest, ""));
    let count: String = count.chars().filter(char::is_ascii_digit).collect();
    let (what, limit) = match kind.trim() {
        "Events" => ("YAML events", MAX_EVENTS),
        "Aliases" => ("aliases (`*name`)", MAX_ALIASES),
        "Anchors" => ("anchors (`&name`)", MAX_ANCHORS),
        "Depth" => ("levels of nesting", MAX_DEPTH),
        "Documents" => ("YAML documents", 1),
        "Nodes" => ("YAML nodes", MAX_NODES),
        "ScalarBytes" => ("bytes of text values", MAX_SCALAR_BYTES),
        "MergeKeys" => ("merge keys (`<<`)", MAX_MERGE_KEYS),
        _ => return msg.to_owned(),
    };
    format!("{count} {what}, more than the {limit} allowed")
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

/// Collects problems while stage 2 walks the spec.
pub(super) struct Checker<'a> {
    pub(super) source: &'a SourceFile,
    pub(super) problems: Vec<Problem>,
    /// Whether files are checked on this machine.
    pub(super) files: Files,
}

impl Checker<'_> {
    /// Where `s` stands in the lab file.
    pub(super) fn span<T>(&self, s: &Spanned<T>) -> SourceSpan {
        span_of(&self.source.text, &s.referenced)
    }
    /// A problem with several labels.
    pub(super) fn push(
        &mut self,
        code: Code,
        message: impl Into<String>,
        labels: Vec<LabeledSpan>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem::spans(code, message, labels, help));
    }
    /// A problem with one label on `at`.
    pub(super) fn at<T>(
        &mut self,
        code: Code,
        at: &Spanned<T>,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem::at(code, self.span(at), message, label, help));
    }
    /// The number of problems so far (to tell whether a check added any).
    pub(super) fn count(&self) -> usize {
        self.problems.len()
    }
}

/// A part of the lab file left out of the model: its problem, or the problem of a part it
/// needs, is already recorded.
pub(super) struct LeftOut;

/// An IPv4 address written in the file.
pub(super) fn parse_ip(c: &mut Checker, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
    match s.value.trim().parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            // An IPv6 address where IPv4 is asked for: say where IPv6 goes instead.
            let six = s.value.trim().parse::<std::net::Ipv6Addr>().is_ok();
            let help = if six && what == "address" {
                "`ip:` is the NIC's IPv4 address; its IPv6 address is not written: it is the SLAAC address of its MAC on the network's `subnet6` (docs/addressing.md, section IPv6)"
            } else if six && what == "gateway" {
                "`gateway:` is the IPv4 gateway; give the IPv6 one as `gateway6:` beside `subnet6:`"
            } else {
                "write a dotted IPv4 address such as `192.168.152.10`, without a prefix length"
            };
            c.at(
                Code::BadAddress,
                s,
                format!("`{}` is not an IPv4 address", s.value),
                format!("not a valid {what}"),
                help,
            );
            None
        }
    }
}

/// Stage 2: the raw spec to the validated model, collecting every problem.
pub fn validate(source: &SourceFile, spec: &LabSpec) -> Result<model::Lab, ValidateError> {
    validate_with(source, spec, Files::Checked)
}

/// Stage 2 with the choice of where files are checked.
pub fn validate_with(source: &SourceFile, spec: &LabSpec, files: Files) -> Result<model::Lab, ValidateError> {
    let mut c = Checker { source, problems: Vec::new(), files };
    let (lab_name, prefix) = lab::check(&mut c, spec);
    let hosts = hosts::Hosts::check(&mut c, &spec.hosts);
    let mut networks = network::check_all(&mut c, &spec.networks, &prefix);
    let mut nics = nic::Nics::default();
    let guests = cloud_init::check_lab(&mut c, spec.cloud_init.as_ref());
    ready::check_lab(&mut c, spec.ready.as_ref());
    let ctx = vm::LabContext {
        lab_name: lab_name.as_ref(),
        prefix: &prefix,
        nets: &networks.info,
        guests: &guests,
        hosts: &hosts,
        ready: spec.ready.as_ref(),
    };
    let (mut vms, groups) = vm::check_all(&mut c, &spec.vms, &ctx, &mut nics);
    hosts.place_networks(&mut c, &spec.networks, &mut networks.model, &vms);
    nic::check_dhcp_capacity(&mut c, &networks.info, &nics);
    let derived = nics.derive_addresses(lab_name.as_ref(), &networks.info);
    for vm in vms.values_mut() {
        for n in &mut vm.nics {
            if let Some(ip) = derived.get(&(vm.name.clone(), n.index)) {
                n.ip = Some(*ip);
            }
        }
    }
    let wires = wire::check_all(
        &mut c,
        &spec.links,
        spec.link_subnet.as_ref(),
        &wire::WireContext {
            lab_name: lab_name.as_ref(),
            prefix: &prefix,
            vms: &vms,
            nets: &networks.info,
            declared: &spec.vms,
        },
    );
    nics.name_dhcp_hosts(&mut c);
    nics.check_bridge_macs(&mut c, lab_name.as_ref(), &networks.model);
    if !c.problems.is_empty() {
        return Err(error(source, c.problems));
    }
    nics.attach_reservations(&mut networks.model);
    let Some(name) = lab_name else {
        // Unreachable in practice: a missing or bad name always records a problem above.
        return Err(error(source, vec![]));
    };
    let name_span = spec.name.as_ref().map(|n| c.span(n)).unwrap_or_else(|| (0, 0).into());
    Ok(model::Lab {
        name,
        name_span,
        prefix,
        networks: networks.model,
        vms,
        groups,
        hosts: hosts.into_model(),
        source: source.clone(),
        stamp: Default::default(),
        take_over: false,
        served: Default::default(),
        wires,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ipnetwork::Ipv4Network;

    use super::*;
    use crate::lab::model::{
        ByteSize, DhcpRange, LabName, MacAddr, NetworkKind, NetworkMode, NetworkName, Verify, VirtType, VmName,
    };

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
            err.problems.iter().map(|p| p.code).collect::<Vec<_>>(),
            [
                Code::ApiVersion,
                Code::Name,
                Code::SubnetHostBits,
                Code::Vcpus,
                Code::NothingToBoot,
                Code::UnknownNetwork
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
    fn expected_lists_are_read() {
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
            (boot.kernel, boot.initrd, vm.disk.clone().unwrap().image, vm.overlay_name(&lab.name))
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

    fn codes_of(text: &str) -> Vec<Code> {
        match lab(text) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.code).collect(),
        }
    }

    /// QEMU hw/i386/pc_piix.c: the `pc` machine topo's domains use has `max_cpus = 255`;
    /// QEMU refuses 256 at start ("Invalid SMP CPUs 256").
    #[test]
    fn vcpus_up_to_the_pc_machine_limit() {
        let vm = |n: u32| codes_of(&format!("{BASE}vms:\n  a:\n    vcpus: {n}\n    boot: {{kernel: /etc/hostname}}\n"));
        assert_eq!(vm(255), []);
        assert_eq!(vm(256), [Code::Vcpus]);
    }

    /// `mtu:` at the kernel's lower end: a bridge's and a tap's `min_mtu` is 68, ETH_MIN_MTU
    /// (include/uapi/linux/if_ether.h; drivers/net/tun.c `MIN_MTU`), the least IPv4 needs
    /// (RFC 791). 67 is refused; 68 is taken.
    #[test]
    fn mtu_rule_kernel_min_68() {
        let net = |v: &str| codes_of(&format!("{BASE}networks:\n  n:\n    mode: isolated\n    mtu: {v}\n"));
        assert_eq!(net("68"), []);
        assert_eq!(net("67"), [Code::Mtu]);
        assert_eq!(net("0"), [Code::Mtu], "libvirt's domain `<mtu size>` is non-zero too");
        assert_eq!(net("-1"), [Code::Mtu]);
    }

    /// `mtu:` at the kernel's upper end: a tap's `max_mtu` is `MAX_MTU` (65535) less its
    /// 14-byte Ethernet header (drivers/net/tun.c `tun_net_initialize`), below the bridge's
    /// 65535 (net/bridge/br_device.c `br_dev_setup`, `ETH_MAX_MTU`); libvirt gives every tap
    /// the network's MTU, so 65521 is the most both take.
    #[test]
    fn mtu_rule_tap_max_65521() {
        let net = |v: &str| codes_of(&format!("{BASE}networks:\n  n:\n    mode: isolated\n    mtu: {v}\n"));
        assert_eq!(net("65521"), []);
        assert_eq!(net("65522"), [Code::Mtu]);
        assert_eq!(net("65535"), [Code::Mtu], "the bridge's limit, not the tap's");
        assert_eq!(net("4294967296"), [Code::Mtu], "past libvirt's unsigned int");
    }

    /// `mtu:` below IPv6's 1280 (RFC 8200 section 5) is valid: topo's labs are IPv4, and
    /// nothing is said about IPv6 (no problem, no warning). Jumbo frames (9000) and VXLAN's
    /// 1450 are plain values.
    #[test]
    fn mtu_rule_below_1280_is_fine_for_ipv4() {
        let text = format!(
            "{BASE}networks:\n  a:\n    mode: isolated\n    mtu: 576\n  b:\n    subnet: 10.9.0.0/24\n    mtu: 9000\n"
        );
        let lab = lab(&text).unwrap();
        let mtu = |n: &str| match &lab.networks[&NetworkName::new(n).unwrap()].kind {
            NetworkKind::Managed(m) => m.mtu,
            NetworkKind::External => None,
        };
        assert_eq!((mtu("a"), mtu("b")), (Some(576), Some(9000)));
    }

    /// `mtu:` is a lab network's setting: beside `external: true` it is refused like every
    /// other key (topo never changes an external network), with the others at once.
    #[test]
    fn mtu_rule_not_on_an_external_network() {
        let text = format!("{BASE}networks:\n  default:\n    external: true\n    mtu: 1450\n");
        assert_eq!(codes_of(&text), [Code::ExternalSettings]);
        let e = lab(&text).unwrap_err();
        assert_eq!(e.problems[0].message, "external network sets `mtu`");
    }

    /// Every NIC on a lab network has its network's MTU (`Lab::nic_mtu`), read when asked, so a
    /// network's MTU set after validation (`Lab::set_network_mtu`, the multi-host code's 1450)
    /// is every NIC's; NICs on an external network have none. The setter keeps the rule.
    #[test]
    fn nics_follow_their_networks_mtu() {
        let text = format!(
            "{BASE}networks:\n  default:\n    external: true\n  lan:\n    subnet: 10.9.0.0/24\n    mtu: 9000\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics: [{{network: lan}}, {{network: default}}, {{network: lan}}]\n"
        );
        let mut lab = lab(&text).unwrap();
        let mtus =
            |lab: &model::Lab| lab.vms.values().next().unwrap().nics.iter().map(|n| lab.nic_mtu(n)).collect::<Vec<_>>();
        assert_eq!(mtus(&lab), [Some(9000), None, Some(9000)]);
        let (lan, ext) = (NetworkName::new("lan").unwrap(), NetworkName::new("default").unwrap());
        lab.set_network_mtu(&lan, Some(1450)).unwrap();
        assert_eq!(mtus(&lab), [Some(1450), None, Some(1450)]);
        lab.set_network_mtu(&lan, None).unwrap();
        assert_eq!(mtus(&lab), [None, None, None]);
        assert_eq!(lab.set_network_mtu(&ext, Some(1450)), Err(model::MtuError::External(ext.clone())));
        assert_eq!(lab.set_network_mtu(&lan, Some(67)), Err(model::MtuError::OutOfRange(67)));
        assert_eq!(lab.set_network_mtu(&lan, Some(65522)), Err(model::MtuError::OutOfRange(65522)));
        let none = NetworkName::new("wan").unwrap();
        assert_eq!(lab.set_network_mtu(&none, Some(1450)), Err(model::MtuError::UnknownNetwork(none.clone())));
    }

    /// libvirt src/qemu/qemu_domain.c `qemuDomainAlignMemorySizes`: a running domain's memory
    /// is rounded up to whole MiB while its definition keeps the value (on libvirt 9.0
    /// `131073KiB` ran as `132096KiB`, and apply ended "would still update: memory").
    #[test]
    fn memory_in_whole_mib() {
        let vm =
            |m: &str| codes_of(&format!("{BASE}vms:\n  a:\n    memory: {m}\n    boot: {{kernel: /etc/hostname}}\n"));
        assert_eq!(vm("131072KiB"), []);
        assert_eq!(vm("131073KiB"), [Code::Memory]);
        assert_eq!(vm("1GiB"), []);
    }

    /// libvirt src/util/virsocketaddr.c, virSocketAddrGetRange: a range is fine as long as
    /// both ends share the first two bytes; the largest default range that does is a /16's.
    #[test]
    fn dhcp_ranges_libvirt_accepts() {
        let ok = |net: &str| codes_of(&format!("{BASE}networks:\n  n:\n{net}"));
        assert_eq!(ok("    subnet: 10.0.0.0/16\n"), []);
        assert_eq!(ok("    subnet: 10.0.0.0/15\n    dhcp: {start: 10.1.0.1, end: 10.1.255.254}\n"), []);
        assert_eq!(ok("    subnet: 10.0.0.0/15\n    dhcp: false\n"), []);
        assert_eq!(ok("    subnet: 10.0.0.0/15\n"), [Code::DhcpRangeTooLarge]);
        // The gateway in the upper half moves the default range to the larger, lower side.
        assert_eq!(ok("    subnet: 10.0.0.0/15\n    gateway: 10.1.255.254\n"), [Code::DhcpRangeTooLarge]);
    }

    /// dnsmasq src/dhcp.c, address_allocate: only reservations *inside* the range take
    /// addresses from the pool.
    #[test]
    fn reservations_outside_the_range_leave_the_pool_alone() {
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.0.0.0/29\n    dhcp: {{start: 10.0.0.2, end: 10.0.0.3}}\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - {{network: n, ip: 10.0.0.5}}\n      - network: n\n      - network: n\n"
        );
        assert_eq!(codes_of(&text), []);
        let inside = text.replace("ip: 10.0.0.5", "ip: 10.0.0.3");
        assert_eq!(codes_of(&inside), [Code::DhcpTooSmall]);
    }

    /// libvirt runs dnsmasq with the `<host>` entries even without a `<range>`: a NIC that
    /// reserves an address on a `dhcp: false` network gets it and is verified.
    #[test]
    fn dhcp_false_serves_reservations_only() {
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.1.0.0/24\n    dhcp: false\n  o:\n    mode: open\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - {{network: n, ip: 10.1.0.5}}\n      - {{network: o, verify: none}}\n"
        );
        let lab = lab(&text).unwrap();
        let NetworkKind::Managed(m) = &lab.networks[&NetworkName::new("n").unwrap()].kind else { panic!() };
        assert_eq!(m.dhcp_service(), model::DhcpService::ReservationsOnly);
        assert_eq!(m.dhcp_service().to_string(), "reservations only");
        assert!(m.dhcp_service().serves(true) && !m.dhcp_service().serves(false));
        let NetworkKind::Managed(o) = &lab.networks[&NetworkName::new("o").unwrap()].kind else { panic!() };
        assert_eq!(o.dhcp_service(), model::DhcpService::Off);
        assert_eq!(lab.vms.values().next().unwrap().nics[0].verify, Verify::Arp);
    }

    /// What XML carries is accepted: tab and line breaks in the command line (the kernel
    /// reads them as spaces), non-ASCII text in it and in paths.
    #[test]
    fn text_libvirt_accepts() {
        let ok = |cmdline: &str| {
            codes_of(&format!("{BASE}vms:\n  a:\n    boot: {{kernel: /etc/hostname, cmdline: \"{cmdline}\"}}\n"))
        };
        assert_eq!(ok("console=ttyS0\\tquiet\\n"), []);
        assert_eq!(ok("hostname=büro"), []);
        assert_eq!(ok("a\\x7f"), []);
        assert_eq!(ok("a\\x1f"), [Code::ControlChar]);
    }

    /// Lengths are counted after the characters are known to be ASCII, so one character is
    /// one byte and the message never mixes the two.
    #[test]
    fn name_lengths_are_bytes_of_ascii() {
        assert_eq!(LabName::new(&"ä".repeat(20)), Err(model::NameError::BadChar('ä')));
        assert_eq!(model::BridgeName::new("brückebrücke"), Err(model::NameError::BadChar('ü')));
        assert_eq!(
            model::BridgeName::new("abcdefghijklmnop"),
            Err(model::NameError::TooLongBytes { len: 16, max: 15 })
        );
        assert!(model::BridgeName::new("abcdefghijklmno").is_ok());
        assert!(model::BridgeName::new("...").is_ok());
    }

    /// Private and other ordinary blocks stay usable next to the reserved ones.
    #[test]
    fn ordinary_subnets_are_not_reserved() {
        for net in ["10.0.0.0/8", "172.16.0.0/16", "192.168.0.0/24", "100.64.0.0/24", "223.255.255.0/24", "1.0.0.0/24"]
        {
            let text = format!("{BASE}networks:\n  n:\n    mode: isolated\n    subnet: {net}\n    dhcp: false\n");
            assert_eq!(codes_of(&text), [], "{net}");
        }
    }

    /// The example: two reservations of one VM on one network. libvirt refuses a
    /// second host entry with the same name (network_conf.c, virNetworkDefUpdateIPDHCPHost),
    /// so the names differ by construction.
    #[test]
    fn dhcp_host_names_are_unique_per_network() {
        let text = format!(
            "{BASE}networks:\n  n:\n    subnet: 10.0.0.0/24\n  m:\n    subnet: 10.0.1.0/24\n\
             vms:\n  a:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n      - {{network: n, ip: 10.0.0.10}}\n      - {{network: m, ip: 10.0.1.10}}\n      - {{network: n, ip: 10.0.0.11}}\n"
        );
        let lab = lab(&text).unwrap();
        let hosts = |net: &str| -> Vec<String> {
            let NetworkKind::Managed(m) = &lab.networks[&NetworkName::new(net).unwrap()].kind else { panic!() };
            let mut v: Vec<String> = m.reservations.values().map(|r| r.host.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(hosts("n"), ["a", "a-eth2"]);
        assert_eq!(hosts("m"), ["a"]);
    }

    /// For another libvirt host the files are not looked for here (QEMU opens them there);
    /// what libvirt's XML cannot carry is still refused.
    #[test]
    fn files_on_another_host_are_not_checked_here() {
        let text = format!(
            "{BASE}vms:\n  a:\n    boot: {{kernel: /nonexistent/vmlinuz}}\n    disk: {{image: rel/base.qcow2}}\n"
        );
        let src = SourceFile::from_text(Path::new("/tmp/unit.yaml"), text);
        assert!(load(&src).is_err());
        let lab = load_with(&src, Files::NotChecked).unwrap();
        let vm = lab.vms.values().next().unwrap();
        assert_eq!(vm.boot.as_ref().unwrap().kernel, Path::new("/nonexistent/vmlinuz"));
        assert_eq!(vm.disk.as_ref().unwrap().image, Path::new("/tmp/rel/base.qcow2"));
        let bad = SourceFile::from_text(
            Path::new("/tmp/unit.yaml"),
            format!("{BASE}vms:\n  a:\n    boot: {{kernel: \"/x\\ty\"}}\n"),
        );
        let codes: Vec<Code> =
            load_with(&bad, Files::NotChecked).unwrap_err().problems.iter().map(|p| p.code).collect();
        assert_eq!(codes, [Code::ControlChar]);
    }
}

/// Derived addresses as validation applies them (docs/addressing.md).
#[cfg(test)]
mod addressing_tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use crate::lab::model::{IpSource, NetworkKind, NetworkName};

    fn lab(text: &str) -> Result<model::Lab, ValidateError> {
        load(&SourceFile::from_text(Path::new("/tmp/unit.yaml"), text.to_owned()))
    }

    /// A lab `addr` with network `lan` (`net` is the network's body) and VMs `vms` (name ->
    /// NIC lines, each `network: lan` plus what the string adds).
    fn text(net: &str, vms: &[(&str, &[&str])]) -> String {
        let mut t = format!(
            "apiVersion: topo/v1\nname: addr\nnetworks:\n  default:\n    external: true\n  lan:\n    mode: isolated\n{net}vms:\n"
        );
        for (vm, nics) in vms {
            t.push_str(&format!("  {vm}:\n    boot: {{kernel: /etc/hostname}}\n    nics:\n"));
            for n in *nics {
                t.push_str(&format!("      - {{network: lan{n}}}\n"));
            }
        }
        t
    }

    const LAN: &str = "    subnet: 192.168.152.0/24\n";

    /// A rendered report with its line wrapping and frame characters taken out.
    fn flat(s: &str) -> String {
        s.split_whitespace().filter(|w| *w != "│").collect::<Vec<_>>().join(" ")
    }

    /// (vm, index) -> (address, source) of every NIC.
    fn addrs(l: &model::Lab) -> BTreeMap<(String, usize), (Option<Ipv4Addr>, IpSource)> {
        l.nics().map(|(vm, n)| ((vm.name.to_string(), n.index), (n.ip, n.ip_source))).collect()
    }

    fn reservations(l: &model::Lab) -> BTreeMap<Ipv4Addr, String> {
        let NetworkKind::Managed(m) = &l.networks[&NetworkName::new("lan").unwrap()].kind else { panic!("managed") };
        m.reservations.values().map(|r| (r.ip, r.host.clone())).collect()
    }

    #[test]
    fn every_nic_without_ip_gets_a_reservation_in_the_range_the_same_whatever_the_file_order() {
        let vms: &[(&str, &[&str])] = &[("a", &["", ""]), ("b", &[""]), ("c", &[", ip: 192.168.152.40"])];
        let one = lab(&text(LAN, vms)).unwrap();
        let mut rev = vms.to_vec();
        rev.reverse();
        let two = lab(&text(LAN, &rev)).unwrap();
        assert_eq!(addrs(&one), addrs(&two), "independent of file order");
        assert_eq!(addrs(&one), addrs(&lab(&text(LAN, vms)).unwrap()), "deterministic");
        let got = addrs(&one);
        assert_eq!(got[&("c".into(), 0)], (Some(Ipv4Addr::new(192, 168, 152, 40)), IpSource::Written));
        for k in [("a".to_string(), 0), ("a".into(), 1), ("b".into(), 0)] {
            let (ip, source) = got[&k];
            assert_eq!(source, IpSource::Derived, "{k:?}");
            let ip = ip.unwrap_or_else(|| panic!("{k:?} has no address"));
            let last = ip.octets()[3];
            assert!((2..=254).contains(&last) && ip.octets()[..3] == [192, 168, 152], "{ip} in the range");
        }
        // Each is a reservation, with the host names of written ones (a VM's second on the
        // network is `<vm>-eth<index>`).
        let r = reservations(&one);
        assert_eq!(r.len(), 4);
        let mut hosts: Vec<&str> = r.values().map(String::as_str).collect();
        hosts.sort();
        assert_eq!(hosts, ["a", "a-eth1", "b", "c"]);
    }

    #[test]
    fn derived_addresses_avoid_the_gateway_written_ips_and_class_c_edges() {
        // A range of 5 around .255/.0 of a /23, the gateway inside the subnet but not the
        // range, one written address in the range: the derived NICs get exactly what is left.
        let net = "    subnet: 192.168.152.0/23\n    gateway: 192.168.152.1\n    dhcp: {start: 192.168.152.253, end: 192.168.153.2}\n";
        let vms: &[(&str, &[&str])] = &[("a", &[""]), ("b", &[""]), ("d", &[""]), ("c", &[", ip: 192.168.153.1"])];
        let l = lab(&text(net, vms)).unwrap();
        let mut got: Vec<Ipv4Addr> =
            ["a", "b", "d"].iter().map(|v| addrs(&l)[&(v.to_string(), 0)].0.unwrap()).collect();
        got.sort();
        let want =
            [Ipv4Addr::new(192, 168, 152, 253), Ipv4Addr::new(192, 168, 152, 254), Ipv4Addr::new(192, 168, 153, 2)];
        assert_eq!(got, want, "the range without .255, .0 and the written .153.1");
        // Gateway inside the range is refused by validation; the derivation skips it anyway
        // (addressing::candidates, unit-tested there).
    }

    #[test]
    fn ip_dynamic_has_no_reservation_and_counts_against_the_pool() {
        let vms: &[(&str, &[&str])] = &[("a", &[", ip: dynamic"]), ("b", &[""])];
        let l = lab(&text(LAN, vms)).unwrap();
        assert_eq!(addrs(&l)[&("a".into(), 0)], (None, IpSource::Dynamic));
        assert_eq!(reservations(&l).values().collect::<Vec<_>>(), ["b"]);
        // A /30 range of one address: one derived NIC fits, one more dynamic does not.
        let tiny = "    subnet: 10.9.0.0/30\n";
        assert!(lab(&text(tiny, &[("a", &[""])])).is_ok());
        let e = lab(&text(tiny, &[("a", &[""]), ("b", &[", ip: dynamic"])])).unwrap_err();
        let msg = flat(&format!("{:?}", miette::Report::new(e)));
        assert!(msg.contains("2 NICs need one, 1 of them for a derived reservation"), "{msg}");
        assert!(msg.contains("vms.a.nics[0], vms.b.nics[0]"), "{msg}");
    }

    #[test]
    fn dhcp_false_derives_from_the_subnet_and_refuses_dynamic() {
        let net = "    subnet: 10.9.0.0/29\n    dhcp: false\n";
        let l = lab(&text(net, &[("a", &[""]), ("b", &[", ip: 10.9.0.3"])])).unwrap();
        let (ip, source) = addrs(&l)[&("a".into(), 0)];
        assert_eq!(source, IpSource::Derived);
        let last = ip.unwrap().octets()[3];
        assert!([2, 4, 5, 6].contains(&last), "a host address, not the gateway .1 or b's .3: {last}");
        let e = lab(&text(net, &[("a", &[", ip: dynamic"])])).unwrap_err();
        assert!(format!("{:?}", miette::Report::new(e)).contains("nic_no_address"));
        // Six hosts minus the gateway: five derived fit, six do not.
        let five: Vec<(String, Vec<&str>)> = (0..5).map(|i| (format!("v{i}"), vec![""])).collect();
        let refs: Vec<(&str, &[&str])> = five.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        assert!(lab(&text(net, &refs)).is_ok());
        let six: Vec<(String, Vec<&str>)> = (0..6).map(|i| (format!("v{i}"), vec![""])).collect();
        let refs: Vec<(&str, &[&str])> = six.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let e = lab(&text(net, &refs)).unwrap_err();
        let msg = flat(&format!("{:?}", miette::Report::new(e)));
        assert!(msg.contains("dhcp_too_small") && msg.contains("5 free host addresses"), "{msg}");
    }

    #[test]
    fn nothing_is_derived_on_external_networks_or_without_a_subnet() {
        let t = "apiVersion: topo/v1\nname: addr\nnetworks:\n  default:\n    external: true\n  wire:\n    mode: isolated\n\
                 vms:\n  a:\n    boot: {kernel: /etc/hostname}\n    nics:\n      - network: default\n      - {network: wire, verify: none}\n";
        let l = lab(t).unwrap();
        for (_, n) in l.nics() {
            assert_eq!((n.ip, n.ip_source), (None, IpSource::Dynamic));
        }
    }

    /// Adding a VM keeps the others' addresses when no slot collides, and moves exactly the
    /// one whose slot the new NIC takes when it does (docs/addressing.md).
    #[test]
    fn adding_a_vm_keeps_the_others_addresses() {
        let base: &[(&str, &[&str])] = &[("a", &[""]), ("b", &[""]), ("c", &[""])];
        let before = addrs(&lab(&text(LAN, base)).unwrap());
        let mut moved_somewhere = false;
        let mut calm_seen = false;
        for i in 0..400 {
            let name = format!("n{i}");
            let mut more = base.to_vec();
            let nics: &[&str] = &[""];
            more.push((name.as_str(), nics));
            let after = addrs(&lab(&text(LAN, &more)).unwrap());
            let moved: Vec<&(String, usize)> = before.keys().filter(|k| before[*k] != after[*k]).collect();
            // The new NIC can move at most one existing NIC (three NICs in 253 candidates, and
            // a moved one takes the next free candidate).
            assert!(moved.len() <= 1, "{name} moved {moved:?}");
            if let Some(k) = moved.first() {
                // The new NIC took the moved one's old address.
                assert_eq!(after[&(name.clone(), 0)].0, before[*k].0, "{name}");
                moved_somewhere = true;
            } else {
                calm_seen = true;
            }
        }
        assert!(calm_seen, "most new VMs move nobody");
        assert!(moved_somewhere, "some name among 400 collides (the documented limit)");
    }
}

/// VM groups (`count:`) as validation expands and refuses them (docs/lab-file.md, "VM groups").
#[cfg(test)]
mod group_tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use crate::lab::model::{GroupMember, LabName, MacAddr, VmName};

    fn lab(text: &str) -> Result<model::Lab, ValidateError> {
        load(&SourceFile::from_text(Path::new("/tmp/unit.yaml"), text.to_owned()))
    }

    fn codes(text: &str) -> Vec<&'static str> {
        match lab(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.codes(),
        }
    }

    /// A lab `grp` with network `lan` and the group `client` of `count` (`extra` adds keys to
    /// its entry, `nic` to its one NIC), then `more` (further VM entries).
    fn text(count: &str, extra: &str, nic: &str, more: &str) -> String {
        format!(
            "apiVersion: topo/v1\nname: grp\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 192.168.160.0/24\n\
             vms:\n  client:\n    count: {count}\n    boot: {{kernel: /etc/hostname}}\n{extra}    nics:\n      - {{network: lan{nic}}}\n{more}"
        )
    }

    fn vm(name: &str) -> VmName {
        VmName::new(name).unwrap()
    }

    /// (MAC, address) of each member's NIC 0.
    fn nics(l: &model::Lab) -> BTreeMap<String, (MacAddr, Option<Ipv4Addr>)> {
        l.nics().map(|(v, n)| (v.name.to_string(), (n.mac, n.ip))).collect()
    }

    #[test]
    fn a_group_is_its_members_each_a_vm_of_its_own() {
        let extra = "    cloud_init: {enabled: true, ssh_authorized_keys: []}\n";
        let l = lab(&text("3", extra, "", "  web:\n    boot: {kernel: /etc/hostname}\n")).unwrap();
        let names: Vec<&str> = l.vms.keys().map(VmName::as_str).collect();
        assert_eq!(names, ["client-1", "client-2", "client-3", "web"]);
        let g = &l.groups[&vm("client")];
        assert_eq!((g.name.as_str(), g.count), ("client", 3));
        assert_eq!(l.groups.len(), 1, "a VM without count is no group");
        let lab_name = LabName::new("grp").unwrap();
        for i in 1..=3u32 {
            let m = &l.vms[&vm(&format!("client-{i}"))];
            assert_eq!(m.group, Some(GroupMember { group: vm("client"), index: i }));
            assert_eq!(m.libvirt_name, format!("grp-client-{i}"));
            // Derived from the member's name, as any VM's (docs/lab-file.md).
            assert_eq!(m.nics[0].mac, MacAddr::derived(&lab_name, &m.name, 0));
            assert_eq!(m.cloud_init.as_ref().unwrap().hostname, format!("client-{i}"), "its own name");
            assert_eq!(m.span, g.span, "problems and the plan point at the group's entry");
        }
        assert_eq!(l.vms[&vm("web")].group, None);
        let addrs: std::collections::BTreeSet<_> = nics(&l).values().map(|(_, ip)| ip.unwrap()).collect();
        assert_eq!(addrs.len(), 3, "each member its own reservation");
        assert_eq!(l.summary(), "lab grp: 1 network (0 external), 4 vms (3 in group client), 3 nics");
    }

    /// Terraform's `count = 0`: valid, no VM; the entry's keys are still checked.
    #[test]
    fn count_zero_is_none() {
        let l = lab(&text("0", "", "", "")).unwrap();
        assert!(l.vms.is_empty());
        assert_eq!(l.groups[&vm("client")].count, 0);
        assert_eq!(codes(&text("0", "", ", mac: \"52:54:00:00:00:01\"", "")), ["topo::lab::group_field"]);
        let unknown = text("0", "", "", "").replace("{network: lan}", "{network: nope}");
        assert_eq!(codes(&unknown), ["topo::lab::unknown_network"]);
    }

    /// Scaling changes only the difference: the members that stay keep their names, MACs and
    /// (here, with no collision in the probe runs, docs/addressing.md) their addresses.
    #[test]
    fn scaling_keeps_the_members_that_stay() {
        let six = nics(&lab(&text("6", "", "", "")).unwrap());
        let eight = nics(&lab(&text("8", "", "", "")).unwrap());
        let five = nics(&lab(&text("5", "", "", "")).unwrap());
        assert_eq!(eight.len(), 8);
        for (name, nic) in &six {
            assert_eq!(eight.get(name), Some(nic), "{name} from 6 to 8");
        }
        assert_eq!(
            five.keys().map(String::as_str).collect::<Vec<_>>(),
            ["client-1", "client-2", "client-3", "client-4", "client-5"]
        );
        for (name, nic) in &five {
            assert_eq!(six.get(name), Some(nic), "{name} from 6 to 5");
        }
    }

    /// topo's guard rail, 0 to 999 (`group::MAX_COUNT`); a negative count is no count.
    #[test]
    fn count_out_of_range() {
        for bad in ["-1", "1000", "99999999999"] {
            assert_eq!(codes(&text(bad, "", "", "")), ["topo::lab::count"], "{bad}");
        }
        assert_eq!(codes(&text("999", "", "", "")), ["topo::lab::dhcp_too_small"], "999 fit no /24");
    }

    /// What members cannot share, refused once each where it is written (and not again as a
    /// duplicate for every member): a MAC (Ethernet; dnsmasq keys reservations by MAC), an
    /// address (libvirt refuses a second `<host>` with one IP, network_conf.c
    /// `virNetworkDefUpdateIPDHCPHost`), a hostname (each guest names itself).
    #[test]
    fn keys_members_cannot_share() {
        let field = ["topo::lab::group_field"];
        assert_eq!(codes(&text("3", "", ", mac: \"52:54:00:00:00:01\"", "")), field);
        assert_eq!(codes(&text("3", "", ", ip: 192.168.160.10", "")), field);
        let hostname = "    cloud_init: {enabled: true, hostname: same, ssh_authorized_keys: []}\n";
        assert_eq!(codes(&text("3", hostname, "", "")), field);
        // `ip: dynamic` is no address of its own: shared, fine.
        let l = lab(&text("3", "", ", ip: dynamic", "")).unwrap();
        assert!(l.nics().all(|(_, n)| n.ip.is_none()));
    }

    /// A problem of the group's shared keys is reported once, not once per member.
    #[test]
    fn a_shared_mistake_is_reported_once() {
        let t = text("5", "", "", "").replace("{network: lan}", "{network: lna}");
        assert_eq!(codes(&t), ["topo::lab::unknown_network"]);
        let e = lab(&t).unwrap_err();
        assert!(
            e.problems[0].message.contains("vms.client.nics[0] (of client-1) uses network `lna`"),
            "{}",
            e.problems[0].message
        );
    }

    /// A member's name is a VM name: one name, one VM (and `--target vm.NAME` one thing).
    #[test]
    fn name_clashes_are_refused_with_both_places() {
        let plain = "  client-2:\n    boot: {kernel: /etc/hostname}\n";
        let e = lab(&text("3", "", "", plain)).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::vm_name_clash"]);
        let p = &e.problems[0];
        assert_eq!(p.message, "the name `client-2` is given twice: member 2 of VM group `client` and VM `client-2`");
        assert_eq!(p.labels.len(), 2);
        // A group named like another group's member.
        let other = "  client-1:\n    count: 2\n    boot: {kernel: /etc/hostname}\n";
        assert_eq!(codes(&text("3", "", "", other)), ["topo::lab::vm_name_clash"]);
        // ... which is no clash when that group has no member 1.
        assert_eq!(codes(&text("0", "", "", other)), Vec::<&str>::new());
        // Members of two groups never meet otherwise: `a-1-2` is not `a-12`.
        let two = "  client-1x:\n    count: 2\n    boot: {kernel: /etc/hostname}\n";
        assert_eq!(codes(&text("12", "", "", two)), Vec::<&str>::new());
    }

    /// The VM name rule (63 characters: a DNS label for the DHCP host name and hostname,
    /// dnsmasq `legal_hostname`, RFC 1035 2.3.4) holds for the longest member's name.
    #[test]
    fn the_longest_member_name_obeys_the_name_rule() {
        let stem = "c".repeat(61);
        let t = |count: &str| text(count, "", "", "").replace("  client:\n", &format!("  {stem}:\n"));
        assert_eq!(codes(&t("9")), Vec::<&str>::new(), "`{stem}-9` is 63 characters");
        let e = lab(&t("10")).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::vm_name"]);
        assert!(e.problems[0].message.contains(&format!("`{stem}-10`, 64 characters long, more than 63")));
    }
}

/// Wires (`links:`, `link_subnet:`) as validation derives and refuses them (docs/wires.md).
#[cfg(test)]
mod wire_tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use crate::lab::model::{LabName, VmName};
    use crate::lab::wire::{Wire, WireName, is_wire_tap, wire_mac, wire_tap};

    fn lab(text: &str) -> Result<model::Lab, ValidateError> {
        load(&SourceFile::from_text(Path::new("/tmp/unit.yaml"), text.to_owned()))
    }

    fn codes(text: &str) -> Vec<&'static str> {
        match lab(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.codes(),
        }
    }

    /// Lab `wl`: network `lan`, VM `r1` with two NICs on it, `r2` with one, `r3` with none,
    /// then `more` (top-level keys: `links:`, `link_subnet:`).
    fn text(more: &str) -> String {
        format!(
            "apiVersion: topo/v1\nname: wl\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 10.20.0.0/24\n\
             vms:\n  r1:\n    boot: {{kernel: /etc/hostname}}\n    nics: [{{network: lan}}, {{network: lan}}]\n\
             \x20 r2:\n    boot: {{kernel: /etc/hostname}}\n    nics: [{{network: lan}}]\n\
             \x20 r3:\n    boot: {{kernel: /etc/hostname}}\n{more}"
        )
    }

    fn vm(name: &str) -> VmName {
        VmName::new(name).unwrap()
    }

    fn wire<'a>(l: &'a model::Lab, name: &str) -> &'a Wire {
        l.wires.get(&WireName::parse(name).unwrap()).unwrap_or_else(|| panic!("no wire {name}: {:?}", l.wires.keys()))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn derived_names_indexes_subnets_macs_and_taps() {
        let l = lab(&text("links:\n  - [r1, r2]\n  - [r3, r1]\n  - [r1, r2]\n  - [r2, r1]\n")).unwrap();
        let names: Vec<&str> = l.wires.keys().map(WireName::as_str).collect();
        assert_eq!(names, ["r1--r2", "r1--r2.2", "r2--r1", "r3--r1"], "the same pair in the other order is its own");
        // A /31 each, in `links:` order, from the default pool; end 0 the even address.
        let subnets: Vec<(&str, String)> =
            ["r1--r2", "r3--r1", "r1--r2.2", "r2--r1"].iter().map(|n| (*n, wire(&l, n).subnet.to_string())).collect();
        assert_eq!(
            subnets,
            [
                ("r1--r2", "100.127.0.0/31".to_string()),
                ("r3--r1", "100.127.0.2/31".to_string()),
                ("r1--r2.2", "100.127.0.4/31".to_string()),
                ("r2--r1", "100.127.0.6/31".to_string())
            ]
        );
        let w = wire(&l, "r3--r1");
        assert_eq!((w.ends[0].vm.as_str(), w.ends[1].vm.as_str()), ("r3", "r1"), "the ends in file order");
        assert_eq!((w.ends[0].ip, w.ends[1].ip), (ip("100.127.0.2"), ip("100.127.0.3")));
        assert_eq!(w.peer_of(0), &w.ends[1]);
        assert_eq!(w.peer_of(1), &w.ends[0]);
        // NIC indexes: after the VM's own NICs, in `links:` order.
        let index = |n: &str, k: usize| wire(&l, n).ends[k].index;
        assert_eq!([index("r1--r2", 0), index("r3--r1", 1), index("r1--r2.2", 0), index("r2--r1", 1)], [2, 3, 4, 5]);
        assert_eq!([index("r1--r2", 1), index("r1--r2.2", 1), index("r2--r1", 0)], [1, 2, 3]);
        assert_eq!(index("r3--r1", 0), 0, "r3 has no NICs of its own");
        let on_r1: Vec<(&str, usize)> =
            l.wire_ends(&vm("r1")).iter().map(|(w, k)| (w.name.as_str(), w.ends[*k].index)).collect();
        assert_eq!(on_r1, [("r1--r2", 2), ("r3--r1", 3), ("r1--r2.2", 4), ("r2--r1", 5)], "in NIC order");
        // MACs and taps: what the derivations give, one per end, all different, none a NIC's.
        let lab_name = LabName::new("wl").unwrap();
        let mut macs = std::collections::BTreeSet::new();
        let mut taps = std::collections::BTreeSet::new();
        for w in l.wires.values() {
            for (k, e) in w.ends.iter().enumerate() {
                assert_eq!(e.mac, wire_mac(&lab_name, &w.name, k), "{} end {k}", w.name);
                assert_eq!(e.tap, wire_tap(&lab_name, "wl-", &w.name, k), "{} end {k}", w.name);
                assert!(is_wire_tap(&e.tap), "{}", e.tap);
                assert!(macs.insert(e.mac) && taps.insert(e.tap.clone()), "{} end {k} repeats", w.name);
                assert_eq!(l.wire_of_tap(&e.tap).map(|(w, k)| (w.name.clone(), k)), Some((w.name.clone(), k)));
            }
        }
        assert!(l.nics().all(|(_, n)| !macs.contains(&n.mac)), "no wire MAC is a NIC's");
        // The same file gives the same wires; another lab name other MACs and taps.
        assert_eq!(
            lab(&text("links:\n  - [r1, r2]\n  - [r3, r1]\n  - [r1, r2]\n  - [r2, r1]\n")).unwrap().wires,
            l.wires
        );
        let other = lab(&text("links:\n  - [r1, r2]\n").replace("name: wl", "name: wm")).unwrap();
        let (a, b) = (&wire(&l, "r1--r2").ends[0], &wire(&other, "r1--r2").ends[0]);
        assert!(a.mac != b.mac && a.tap != b.tap, "{a:?} {b:?}");
    }

    /// A wire's values do not move when a NIC or another wire is added after it.
    #[test]
    fn adding_after_a_wire_keeps_it() {
        let one = lab(&text("links:\n  - [r1, r2]\n")).unwrap();
        let more = lab(&text("links:\n  - [r1, r2]\n  - [r2, r3]\n")).unwrap();
        assert_eq!(wire(&one, "r1--r2"), wire(&more, "r1--r2"));
        assert_eq!(wire(&more, "r2--r3").subnet.to_string(), "100.127.0.2/31");
    }

    #[test]
    fn link_subnet_is_the_pool() {
        let l = lab(&text("link_subnet: 10.99.0.8/30\nlinks:\n  - [r1, r2]\n  - [r2, r3]\n")).unwrap();
        assert_eq!(wire(&l, "r1--r2").subnet.to_string(), "10.99.0.8/31");
        let w = wire(&l, "r2--r3");
        assert_eq!(
            (w.subnet.to_string(), w.ends[0].ip, w.ends[1].ip),
            ("10.99.0.10/31".into(), ip("10.99.0.10"), ip("10.99.0.11"))
        );
        // One wire more than the pool holds.
        let e =
            lab(&text("link_subnet: 10.99.0.8/30\nlinks:\n  - [r1, r2]\n  - [r2, r3]\n  - [r1, r3]\n")).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::wire"]);
        assert!(e.problems[0].message.contains("has room for 2 wires, and the lab has 3"), "{}", e.problems[0].message);
        // A /31 holds one wire, and says so in the singular.
        assert_eq!(codes(&text("link_subnet: 10.99.0.8/31\nlinks:\n  - [r1, r2]\n")), Vec::<&str>::new());
        let e = lab(&text("link_subnet: 10.99.0.8/31\nlinks:\n  - [r1, r2]\n  - [r2, r3]\n")).unwrap_err();
        assert!(e.problems[0].message.contains("has room for 1 wire, and"), "{}", e.problems[0].message);
        // A /32 holds none.
        assert_eq!(codes(&text("link_subnet: 10.99.0.8/32\nlinks:\n  - [r1, r2]\n")), ["topo::lab::subnet_too_small"]);
        // A pool without wires is still checked.
        assert_eq!(codes(&text("link_subnet: nonsense\n")), ["topo::lab::bad_subnet"]);
        assert_eq!(codes(&text("link_subnet: 10.20.0.0/16\n")), ["topo::lab::wire"], "overlaps lan");
    }

    /// The default pool, a /24, holds 128 wires; the 129th is refused at its own entry.
    #[test]
    fn the_default_pool_holds_128_wires() {
        let links = |n: usize| format!("links:\n{}", "  - [r1, r2]\n".repeat(n));
        let l = lab(&text(&links(128))).unwrap();
        assert_eq!(l.wires.len(), 128);
        assert_eq!(wire(&l, "r1--r2.128").subnet.to_string(), "100.127.0.254/31");
        let t = text(&links(129));
        let e = lab(&t).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::wire"]);
        let p = &e.problems[0];
        assert!(
            p.message.contains("default link_subnet 100.127.0.0/24 has room for 128 wires, and the lab has 129"),
            "{}",
            p.message
        );
        let label = p.labels.first().expect("a label");
        let at = label.offset();
        let line = t[..at].lines().count();
        assert_eq!(line, t.lines().count(), "points at the last entry: {at}");
    }

    #[test]
    fn ends_must_be_two_vms_of_the_lab() {
        assert_eq!(codes(&text("links:\n  - [r1]\n  - [r1, r2, r3]\n  - []\n")), ["topo::lab::wire"; 3]);
        let e = lab(&text("links:\n  - [r1, nope]\n")).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::wire"]);
        assert!(
            e.problems[0].help.as_deref().unwrap_or_default().contains("one of r1, r2, r3"),
            "{:?}",
            e.problems[0].help
        );
        // Both ends unknown: each reported.
        assert_eq!(codes(&text("links:\n  - [x, y]\n")), ["topo::lab::wire"; 2]);
    }

    /// An end naming a VM whose entry has a problem of its own is reported there only, not
    /// again as an unknown VM (nor is a member of a group with a problem of its own).
    #[test]
    fn an_end_with_a_problem_of_its_own_is_reported_once() {
        let t = text("links:\n  - [r1, r2]\n").replace("nics: [{network: lan}]\n", "nics: [{network: lna}]\n");
        assert_eq!(codes(&t), ["topo::lab::unknown_network"]);
        let g = text("links:\n  - [r1, g-2]\n  - [r1, g-3]\n").replace(
            "  r3:\n",
            "  g:\n    count: 2\n    boot: {kernel: /etc/hostname}\n    nics: [{network: lna}]\n  r3:\n",
        );
        // g-2 is a member (its entry's problem is reported there), g-3 is no member.
        let e = lab(&g).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::unknown_network", "topo::lab::wire"], "{:?}", miette::Report::new(e));
    }

    /// A member of a group (`count:`) is a VM and can be a wire's end.
    #[test]
    fn a_group_member_is_an_end() {
        let t = text("links:\n  - [r3, g-2]\n")
            .replace("  r3:\n", "  g:\n    count: 2\n    boot: {kernel: /etc/hostname}\n  r3:\n");
        let l = lab(&t).unwrap();
        let w = wire(&l, "r3--g-2");
        assert_eq!((w.ends[0].index, w.ends[1].index), (0, 0));
        assert_eq!(w.ends[1].vm, vm("g-2"));
        assert_eq!(codes(&t.replace("g-2]", "g-3]")), ["topo::lab::wire"], "g has no member 3");
        assert_eq!(codes(&t.replace("g-2]", "g]")), ["topo::lab::wire"], "a group is no VM");
    }

    #[test]
    fn ends_on_two_hosts_are_refused() {
        let hosts = "hosts:\n  h1:\n    uri: qemu+ssh://root@h1/system\n    underlay: 10.77.0.11\n  h2:\n    uri: qemu+ssh://root@h2/system\n    underlay: 10.77.0.12\n";
        let t = format!("{}{hosts}", text("links:\n  - [r1, r2]\n  - [r1, r3]\n"))
            .replace("  r2:\n", "  r2:\n    host: h2\n")
            .replace("  r3:\n", "  r3:\n    host: h1\n");
        let e = lab(&t).unwrap_err();
        assert_eq!(e.codes(), ["topo::lab::wire"], "r1 -- r3 are both on h1");
        assert!(
            e.problems[0].message.contains("`r1` -- `r2` joins VMs on two hosts (`h1` and `h2`)"),
            "{}",
            e.problems[0].message
        );
        assert_eq!(codes(&t.replace("    host: h2\n", "    host: h1\n")), Vec::<&str>::new());
    }
}
