//! Wire rules (`links:` and `link_subnet:`, docs/wires.md): two ends, each a VM of the lab;
//! both on one host (the host joins their taps); a pool that holds a /31 per wire and
//! overlaps no lab network's subnet (a guest would route one of the two wrongly).

use std::collections::BTreeMap;

use ipnetwork::Ipv4Network;

use super::Checker;
use super::network::{NetInfo, parse_cidr};
use crate::diag::Code;
use crate::lab::model::{self, LabName, VmName};
use crate::lab::spec::Spanned;
use crate::lab::wire::{DEFAULT_LINK_SUBNET, WIRE_PREFIX, Wire, WireEnd, WireName, wire_mac, wire_subnet, wire_tap};

/// What the wires are checked against.
pub(super) struct WireContext<'a> {
    pub(super) lab_name: Option<&'a LabName>,
    pub(super) prefix: &'a str,
    pub(super) vms: &'a BTreeMap<VmName, model::Vm>,
    pub(super) nets: &'a BTreeMap<String, NetInfo>,
    /// The VM entries as written: a name declared there whose entry has a problem of its
    /// own is not reported again as unknown.
    pub(super) declared: &'a crate::lab::spec::SpannedMap<crate::lab::spec::VmSpec>,
}

impl WireContext<'_> {
    /// Whether `name` is a VM the file declares: an entry's key, or a member of an entry
    /// with `count:` (`NAME-1` ... `NAME-N`).
    fn declares(&self, name: &str) -> bool {
        self.declared.iter().any(|(k, v)| match &v.count {
            None => k.value == name,
            Some(n) => name
                .strip_prefix(k.value.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|i| i.parse::<i64>().ok())
                .is_some_and(|i| i >= 1 && i <= n.value),
        })
    }
}

/// Checks `links:` and `link_subnet:`; returns the valid wires by name.
pub(super) fn check_all(
    c: &mut Checker,
    links: &[Spanned<Vec<Spanned<String>>>],
    link_subnet: Option<&Spanned<String>>,
    cx: &WireContext<'_>,
) -> BTreeMap<WireName, Wire> {
    let mut out = BTreeMap::new();
    let pool = match link_subnet {
        Some(s) => {
            let pool = parse_cidr(c, s, "link_subnet", WIRE_PREFIX, "a wire's two ends");
            if let Some(p) = pool {
                check_overlap(c, s, p, cx.nets);
            }
            pool
        }
        None if links.is_empty() => return out,
        // Invariant: the default is a valid IPv4 CIDR.
        None => DEFAULT_LINK_SUBNET.parse::<Ipv4Network>().ok(),
    };
    let mut next_index: BTreeMap<VmName, usize> = cx.vms.iter().map(|(n, vm)| (n.clone(), vm.nics.len())).collect();
    let mut nth: BTreeMap<(VmName, VmName), usize> = BTreeMap::new();
    for (i, link) in links.iter().enumerate() {
        let Some([a, b]) = ends(c, link, cx) else { continue };
        let (va, vb) = (&cx.vms[&a], &cx.vms[&b]);
        if va.host != vb.host {
            at_link(
                c,
                link,
                format!("wire `{a}` -- `{b}` joins VMs on two hosts (`{}` and `{}`)", va.host, vb.host),
                "ends on different hosts",
                "a wire joins two taps on one host: put both VMs on one host, or join them with a lab network \
                 (which may span hosts)",
            );
            continue;
        }
        let n = nth.entry((a.clone(), b.clone())).or_insert(0);
        *n += 1;
        let name = WireName::of(&a, &b, *n);
        let Some(pool) = pool else { continue };
        let Some(subnet) = wire_subnet(pool, i) else {
            let help = format!(
                "a /{} per wire: {} wires need at least a /{}; set a larger `link_subnet:`",
                WIRE_PREFIX,
                links.len(),
                32 - (2 * links.len()).next_power_of_two().trailing_zeros()
            );
            match link_subnet {
                Some(s) => c.at(
                    Code::Wire,
                    s,
                    format!(
                        "link_subnet `{pool}` has room for {} wire{}, and the lab has {}",
                        pool.size() / 2,
                        if pool.size() / 2 == 1 { "" } else { "s" },
                        links.len()
                    ),
                    "too small for the wires",
                    help,
                ),
                None => at_link(
                    c,
                    link,
                    format!(
                        "the default link_subnet {DEFAULT_LINK_SUBNET} has room for 128 wires, and the lab has {}",
                        links.len()
                    ),
                    "no /31 left for this wire",
                    help,
                ),
            }
            break;
        };
        let Some(lab) = cx.lab_name else { continue };
        let base = u32::from(subnet.network());
        let mut end = |k: usize, vm: &VmName| {
            let idx = next_index.entry(vm.clone()).or_insert(0);
            let index = *idx;
            *idx += 1;
            WireEnd {
                vm: vm.clone(),
                index,
                mac: wire_mac(lab, &name, k),
                tap: wire_tap(lab, cx.prefix, &name, k),
                ip: std::net::Ipv4Addr::from(base + k as u32),
            }
        };
        let ends = [end(0, &a), end(1, &b)];
        out.insert(name.clone(), Wire { name, ends, subnet, span: c.span(link) });
    }
    out
}

/// Where `link` stands in the file: from its first end to its last (the parser's span of a
/// flow sequence is its opening bracket alone); its own span when it has no end.
fn link_span(c: &Checker, link: &Spanned<Vec<Spanned<String>>>) -> miette::SourceSpan {
    let whole = c.span(link);
    match (link.value.first(), link.value.last()) {
        (Some(first), Some(last)) => {
            let (a, b) = (c.span(first), c.span(last));
            let start = whole.offset().min(a.offset());
            let end = (b.offset() + b.len()).max(whole.offset() + whole.len());
            (start, end - start).into()
        }
        _ => whole,
    }
}

/// A problem about the whole of `link` ([`link_span`]).
fn at_link(
    c: &mut Checker,
    link: &Spanned<Vec<Spanned<String>>>,
    message: String,
    label: &str,
    help: impl Into<String>,
) {
    let span = link_span(c, link);
    c.problems.push(crate::diag::Problem::at(Code::Wire, span, message, label, help));
}

/// The two VM names of `link`; `None` (with its problem recorded) when it does not name two
/// VMs of the lab.
fn ends(c: &mut Checker, link: &Spanned<Vec<Spanned<String>>>, cx: &WireContext<'_>) -> Option<[VmName; 2]> {
    if link.value.len() != 2 {
        at_link(
            c,
            link,
            format!("a wire has two ends, and this one names {}", link.value.len()),
            "not two VMs",
            "write the two VMs the wire joins, e.g. `- [r1, r2]`; for a segment of three or more VMs, declare a \
             network",
        );
        return None;
    }
    let mut out = Vec::new();
    for e in &link.value {
        let found = VmName::new(e.value.trim()).ok().filter(|n| cx.vms.contains_key(n));
        match found {
            Some(n) => out.push(n),
            // Its entry's own problems are reported there.
            None if cx.declares(e.value.trim()) => {}
            None => {
                let known: Vec<&str> = cx.vms.keys().map(|k| k.as_str()).collect();
                c.at(
                    Code::Wire,
                    e,
                    format!("wire end `{}` is not a VM of this lab", e.value),
                    "unknown VM",
                    if known.is_empty() {
                        "declare the VM under `vms:` first".to_string()
                    } else {
                        format!(
                            "a wire end is a VM's name (a group's members are NAME-1, NAME-2, ...): one of {}",
                            known.join(", ")
                        )
                    },
                );
            }
        }
    }
    let [a, b]: [VmName; 2] = out.try_into().ok()?;
    Some([a, b])
}

/// A pool that overlaps a lab network's subnet: a guest on both would route one of them
/// wrongly, so it is refused.
fn check_overlap(c: &mut Checker, s: &Spanned<String>, pool: Ipv4Network, nets: &BTreeMap<String, NetInfo>) {
    for (name, info) in nets {
        if let Some(sub) = info.subnet.filter(|sub| sub.overlaps(pool)) {
            c.at(
                Code::Wire,
                s,
                format!("link_subnet {pool} overlaps network `{name}`'s subnet {sub}"),
                "overlaps a lab network",
                "choose a link_subnet apart from every lab network's subnet, e.g. `100.127.0.0/24`",
            );
        }
    }
}
