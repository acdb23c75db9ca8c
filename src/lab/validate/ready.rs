//! Readiness rules (`ready:` on a VM or the lab): known conditions, TCP ports in range,
//! console text on one line, and only conditions the VM can meet.

use super::Checker;
use crate::diag::{Code, did_you_mean};
use crate::lab::model::ReadyCondition;
use crate::lab::spec::{ReadySpec, Spanned};

/// The words `ready:` takes as a bare list item.
const WORDS: [&str; 2] = ["ssh", "cloud-init"];

/// The longest console text topo looks for: a serial console line is rarely longer, and a
/// longer text is most likely a pasted block.
pub const MAX_CONSOLE_TEXT: usize = 200;

/// What a VM offers the conditions: whether it has a NIC proven by ARP (an IPv4 address to
/// connect to) and a cloud-init seed.
pub(super) struct Offers<'a> {
    pub(super) vm: &'a str,
    pub(super) addressable: bool,
    pub(super) cloud_init: bool,
}

/// The lab's `ready:` on its own, once: every item a known condition, in range, listed once
/// (whether or not a VM inherits it). [`check`] then reads it quietly for each VM.
pub(super) fn check_lab(c: &mut Checker, lab: Option<&Spanned<Vec<Spanned<ReadySpec>>>>) {
    if let Some(list) = lab {
        parse(c, list, true);
    }
}

/// The conditions of `list`, each item's problems reported when `loud` (a list read again
/// for another VM stays quiet: its problems were reported once).
fn parse<'a>(
    c: &mut Checker,
    list: &'a Spanned<Vec<Spanned<ReadySpec>>>,
    loud: bool,
) -> Vec<(ReadyCondition, &'a Spanned<ReadySpec>)> {
    let mut out: Vec<(ReadyCondition, &Spanned<ReadySpec>)> = Vec::new();
    for item in &list.value {
        let before = c.problems.len();
        let cond = condition(c, item);
        if !loud {
            c.problems.truncate(before);
        }
        let Some(cond) = cond else { continue };
        if out.iter().any(|(seen, _)| *seen == cond) {
            if loud {
                c.at(
                    Code::Ready,
                    item,
                    format!("readiness condition `{cond}` is listed twice"),
                    "listed again",
                    "list each condition once",
                );
            }
            continue;
        }
        out.push((cond, item));
    }
    out
}

/// The VM's conditions: its own `ready:` if it has one (`[]` for none), else the lab's.
/// A condition the VM cannot meet is a problem at the list that gives it (the lab's, when
/// inherited, naming the VM).
pub(super) fn check(
    c: &mut Checker,
    lab: Option<&Spanned<Vec<Spanned<ReadySpec>>>>,
    own: Option<&Spanned<Vec<Spanned<ReadySpec>>>>,
    offers: &Offers<'_>,
) -> Vec<ReadyCondition> {
    let (list, inherited) = match (own, lab) {
        (Some(own), _) => (own, false),
        (None, Some(lab)) => (lab, true),
        (None, None) => return Vec::new(),
    };
    let mut out: Vec<ReadyCondition> = Vec::new();
    // The lab's list was checked once by `check_lab`.
    for (cond, item) in parse(c, list, !inherited) {
        let whose = if inherited { format!(" (the lab's `ready`, for VM `{}`)", offers.vm) } else { String::new() };
        match cond {
            ReadyCondition::Ssh | ReadyCondition::Tcp(_) if !offers.addressable => c.at(
                Code::Ready,
                item,
                format!("`{cond}`{whose} needs an address to connect to, and VM `{}` has no NIC that verify proves by ARP", offers.vm),
                "no address to connect to",
                "give the VM a NIC on a network with an IPv4 subnet (without `verify: none`), use a `console` condition, or set `ready: []` on the VM",
            ),
            ReadyCondition::CloudInit if !offers.cloud_init => c.at(
                Code::Ready,
                item,
                format!("`cloud-init`{whose}: VM `{}` has no cloud-init seed, so cloud-init never reports finishing", offers.vm),
                "cloud-init is off for this VM",
                "a VM gets a seed when it has a `disk` and `cloud_init.enabled` is not false; otherwise use a `console` condition, or set `ready: []` on the VM",
            ),
            _ => out.push(cond),
        }
    }
    out
}

/// One list item as a condition, or a problem.
fn condition(c: &mut Checker, item: &Spanned<ReadySpec>) -> Option<ReadyCondition> {
    match &item.value {
        ReadySpec::Word(w) => match w.as_str() {
            "ssh" => Some(ReadyCondition::Ssh),
            "cloud-init" => Some(ReadyCondition::CloudInit),
            other => {
                // Short words: a transposition or a slip of one key is what Jaro-Winkler misses.
                let near = did_you_mean(other, WORDS.iter().copied())
                    .or_else(|| WORDS.iter().copied().find(|w| strsim::osa_distance(other, w) <= 1));
                let hint = near.map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                c.at(
                    Code::Ready,
                    item,
                    format!("`{other}` is not a readiness condition"),
                    "unknown condition",
                    format!("{hint}a condition is `ssh`, `cloud-init`, `{{tcp: PORT}}` or `{{console: TEXT}}`"),
                );
                None
            }
        },
        ReadySpec::Map(m) => match (m.tcp, &m.console) {
            (Some(port), None) => match u16::try_from(port) {
                Ok(port) if port > 0 => Some(ReadyCondition::Tcp(port)),
                _ => {
                    // The item's span: one inside an untagged enum is lost (serde buffers it).
                    c.at(
                        Code::Ready,
                        item,
                        format!("TCP port {port} is out of range"),
                        "not a TCP port",
                        "a TCP port is 1 to 65535 (the port field is 16 bits, RFC 793; port 0 is reserved, RFC 6335 section 6, and nothing listens on it)",
                    );
                    None
                }
            },
            (None, Some(text)) => {
                let why = if text.trim().is_empty() {
                    Some("is empty: every line would hold it")
                } else if text.contains(['\n', '\r']) {
                    Some("holds a line break: the console is matched one line at a time")
                } else if text.chars().count() > MAX_CONSOLE_TEXT {
                    Some("is longer than 200 characters")
                } else {
                    None
                };
                match why {
                    None => Some(ReadyCondition::Console(text.clone())),
                    Some(why) => {
                        c.at(
                            Code::Ready,
                            item,
                            format!("console text {why}"),
                            "not a console line's text",
                            "give a short piece of one console line, e.g. `console: \"login:\"`",
                        );
                        None
                    }
                }
            }
            (tcp, _) => {
                let what = if tcp.is_some() { "both `tcp` and `console`" } else { "no key" };
                c.at(
                    Code::Ready,
                    item,
                    format!("a readiness condition mapping has {what}"),
                    "one key per condition",
                    "write one condition per list item: `- tcp: 80` or `- console: \"login:\"`",
                );
                None
            }
        },
    }
}
