//! What users see of a verification: the table (`topo verify`, the end of `topo apply`) and
//! the versioned JSON document (`topo verify --json`, docs/verify-json.md).

use serde::Serialize;

use super::state::{FailReason, NicOutcome, NicState, VerifyReport};
use super::state::{ReadyState, VmReadiness};
use super::target::Family;

/// The version of the JSON document; a new one only for incompatible changes.
pub const JSON_FORMAT_VERSION: &str = "1";

#[derive(Serialize)]
struct JsonNic<'a> {
    /// The host holding the VM, in a lab across hosts; absent in a lab on one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    vm: &'a str,
    nic: &'a str,
    network: &'a str,
    /// A wire end's wire (`links:`); absent for a NIC on a network.
    #[serde(skip_serializing_if = "Option::is_none")]
    wire: Option<&'a str>,
    bridge: Option<&'a str>,
    mac: String,
    /// `ipv4` (proven by ARP) or `ipv6` (proven by NDP): a NIC on a network with both
    /// `subnet` and `subnet6` has a row of each.
    family: &'static str,
    address: Option<String>,
    state: &'static str,
    evidence: Option<String>,
    reason: Option<String>,
    help: Option<&'static str>,
    seconds: Option<f64>,
    rtt_ms: Option<f64>,
    /// For a duplicate MAC: every running domain with the NIC's MAC on its network, this
    /// VM's first.
    same_mac: Option<&'a [String]>,
}

#[derive(Serialize)]
struct JsonSummary {
    verified: usize,
    failed: usize,
    skipped: usize,
    stopped: usize,
    unproven: usize,
    /// VMs whose `ready:` conditions all held / did not (absent when no VM has any).
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_ready: Option<usize>,
}

#[derive(Serialize)]
struct JsonVerify<'a> {
    format_version: &'static str,
    lab: &'a str,
    nics: Vec<JsonNic<'a>>,
    /// Each VM with `ready:` conditions; absent when none has any.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ready: &'a [VmReadiness],
    summary: JsonSummary,
}

fn json_nic(n: &NicOutcome) -> JsonNic<'_> {
    let t = &n.target;
    let rtt_ms = match &n.state {
        // Rounded to the microsecond: a round trip on one host takes tens of them.
        NicState::Verified { rtt_ms, .. } => rtt_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
        _ => None,
    };
    let (state, address, evidence, reason, help, seconds) = match &n.state {
        NicState::Verified { ip, evidence, seconds, .. } => {
            ("verified", Some(ip.to_string()), Some(evidence.to_string()), None, None, Some(*seconds))
        }
        NicState::Failed { reason } => ("failed", None, None, Some(reason.to_string()), Some(reason.help()), None),
        NicState::Skipped => ("skipped", None, None, None, None, None),
        NicState::Unproven => ("unproven", t.reservation.map(|ip| ip.to_string()), None, None, None, None),
        NicState::Stopped => ("stopped", None, None, None, None, None),
        // Only on remote hosts: libvirt's word, no ARP evidence.
        NicState::Reported { ip, source } => (
            "reported",
            Some(ip.to_string()),
            Some(format!("reported by {source} (remote host: not proven by ARP)")),
            None,
            None,
            None,
        ),
        NicState::LeasedNoReply { ip } => ("leased", Some(ip.to_string()), None, None, None, None),
        NicState::WaitingForLease => ("waiting", None, None, None, None, None),
        NicState::Soliciting { ip } => ("waiting", Some(ip.to_string()), None, None, None, None),
    };
    let same_mac = match &n.state {
        NicState::Failed { reason: FailReason::DuplicateMac { domains, .. } } => Some(domains.as_slice()),
        _ => None,
    };
    JsonNic {
        same_mac,
        host: t.host.as_ref().map(|h| h.as_str()),
        vm: t.vm.as_str(),
        nic: &t.nic,
        network: t.network.as_str(),
        wire: t.wire.as_ref().map(|w| w.as_str()),
        bridge: t.bridge.as_deref(),
        mac: t.mac.to_string(),
        family: t.family.as_str(),
        address,
        state,
        evidence,
        reason,
        help,
        seconds,
        rtt_ms,
    }
}

/// The `topo verify --json` document, format version 1 (docs/verify-json.md).
pub fn to_json(lab: &str, report: &VerifyReport) -> serde_json::Value {
    let nics: Vec<JsonNic> = report.nics.iter().map(json_nic).collect();
    let count = |s: &str| nics.iter().filter(|n| n.state == s).count();
    let summary = JsonSummary {
        verified: count("verified"),
        failed: count("failed"),
        skipped: count("skipped"),
        stopped: count("stopped"),
        unproven: count("reported") + count("leased") + count("waiting") + count("unproven"),
        ready: (!report.ready.is_empty()).then(|| ready_count(report, ReadyState::Ready)),
        not_ready: (!report.ready.is_empty()).then(|| ready_count(report, ReadyState::NotReady)),
    };
    let doc = JsonVerify { format_version: JSON_FORMAT_VERSION, lab, summary, nics, ready: &report.ready };
    // Invariant: strings, numbers and options only.
    serde_json::to_value(doc).expect("verify JSON serialises")
}

/// The human table: one row per NIC and address family, then the reason and help of each
/// failure. A HOST column comes first when any NIC has a host (a lab across hosts); `-` for
/// one without. A FAMILY column (`ipv4`, `ipv6`) follows NETWORK when any row is IPv6 (a
/// dual-stack NIC has a row of each); an IPv4-only lab's table has none.
pub fn table(report: &VerifyReport) -> String {
    let with_host = report.nics.iter().any(|n| n.target.host.is_some());
    let with_family = report.nics.iter().any(|n| n.target.family == Family::Ipv6);
    let rows: Vec<Vec<String>> = report
        .nics
        .iter()
        .map(|n| {
            let j = json_nic(n);
            let host = with_host.then(|| j.host.unwrap_or("-").to_string());
            let family = with_family.then(|| j.family.to_string());
            let head = [j.vm.to_string(), j.nic.to_string(), j.network.to_string()];
            let row = [
                j.bridge.unwrap_or("-").to_string(),
                j.mac,
                j.address.unwrap_or_else(|| "-".into()),
                match (j.state, j.evidence) {
                    (_, Some(e)) => e,
                    (s, None) => s.to_string(),
                },
                j.seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
                j.rtt_ms.map(|ms| format!("{ms:.1}ms")).unwrap_or_else(|| "-".into()),
            ];
            host.into_iter().chain(head).chain(family).chain(row).collect()
        })
        .collect();
    let header: Vec<String> = with_host
        .then_some("HOST")
        .into_iter()
        .chain(["VM", "NIC", "NETWORK"])
        .chain(with_family.then_some("FAMILY"))
        .chain(["BRIDGE", "MAC", "ADDRESS", "EVIDENCE", "TIME", "RTT"])
        .map(String::from)
        .collect();
    let mut out = crate::table::columns(std::iter::once(header).chain(rows), 2, &[]);
    // VMs without NICs may still have readiness rows: no empty NIC table above them.
    if report.nics.is_empty() {
        out.clear();
    }
    for n in report.failed() {
        if let NicState::Failed { reason } = &n.state {
            out.push_str(&format!(
                "\n{}{} {} ({}{}): {reason}\n  help: {}\n",
                n.target.host.as_ref().map(|h| format!("{h}: ")).unwrap_or_default(),
                n.target.vm,
                n.target.nic,
                n.target.network,
                if with_family { format!(", {}", n.target.family.as_str()) } else { String::new() },
                reason.help()
            ));
        }
    }
    if !report.ready.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&ready_table(report, with_host || report.ready.iter().any(|r| r.host.is_some())));
    }
    out
}

fn ready_count(report: &VerifyReport, state: ReadyState) -> usize {
    report.ready.iter().filter(|r| r.state == state).count()
}

/// The readiness rows under the NIC table: each VM, `ready` or `not ready`, its time to
/// ready and each condition with the time it held (or what was seen last); then a line for
/// each VM not ready, naming its first unmet condition.
fn ready_table(report: &VerifyReport, with_host: bool) -> String {
    let rows = report.ready.iter().map(|r| {
        let conditions: Vec<String> = r
            .conditions
            .iter()
            .map(|c| match (c.seconds, &c.last_seen) {
                (Some(s), _) => format!("{} {s:.1}s", c.condition),
                (None, Some(seen)) => format!("{} ({seen})", c.condition),
                (None, None) => format!("{} (not checked)", c.condition),
            })
            .collect();
        let host = with_host.then(|| r.host.as_ref().map_or("-".to_string(), |h| h.to_string()));
        host.into_iter()
            .chain([
                r.vm.to_string(),
                match r.state {
                    ReadyState::Ready => "ready".to_string(),
                    ReadyState::NotReady => "not ready".to_string(),
                    ReadyState::Unchecked => "unchecked".to_string(),
                },
                r.seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into()),
                conditions.join(", "),
            ])
            .collect::<Vec<String>>()
    });
    let header: Vec<String> = with_host
        .then_some("HOST")
        .into_iter()
        .chain(["VM", "READY", "TIME", "CONDITIONS"])
        .map(String::from)
        .collect();
    let mut out = crate::table::columns(std::iter::once(header).chain(rows), 2, &[]);
    for r in report.ready.iter().filter(|r| r.state == ReadyState::NotReady) {
        if let Some(c) = r.unmet() {
            out.push_str(&format!(
                "\n{}{}: not ready: {} did not hold; last seen: {}\n  help: {}\n",
                r.host.as_ref().map(|h| format!("{h}: ")).unwrap_or_default(),
                r.vm,
                c.condition,
                c.last_seen.as_deref().unwrap_or("nothing"),
                READY_HELP
            ));
        }
    }
    out
}

/// What to do about a VM that did not get ready.
const READY_HELP: &str = "look at its console (`topo console VM`, or its log under /var/log/libvirt/qemu/), give it more time (--ready-timeout), or change its `ready:` conditions";

/// `Verify: 3 verified, 1 failed, 0 skipped.`
pub fn summary_line(report: &VerifyReport) -> String {
    let verified = report.nics.iter().filter(|n| matches!(n.state, NicState::Verified { .. })).count();
    let failed = report.failed().count();
    let skipped = report.nics.iter().filter(|n| matches!(n.state, NicState::Skipped)).count();
    let stopped = report.nics.iter().filter(|n| matches!(n.state, NicState::Stopped)).count();
    // The stopped count only when there are any: the line stays as it was for other labs.
    let stopped = if stopped > 0 { format!(", {stopped} stopped") } else { String::new() };
    // Likewise the wire ends no guest configuration holds (`NicState::Unproven`).
    let unproven = report.nics.iter().filter(|n| matches!(n.state, NicState::Unproven)).count();
    let unproven = if unproven > 0 { format!(", {unproven} unproven") } else { String::new() };
    let line = format!("Verify: {verified} verified, {failed} failed, {skipped} skipped{stopped}{unproven}.");
    if report.ready.is_empty() {
        return line;
    }
    let (ready, not_ready) = (ready_count(report, ReadyState::Ready), ready_count(report, ReadyState::NotReady));
    let unchecked = ready_count(report, ReadyState::Unchecked);
    let unchecked = if unchecked > 0 { format!(", {unchecked} unchecked") } else { String::new() };
    format!("{line}\nReady: {ready} ready, {not_ready} not ready{unchecked}.")
}

/// Some NICs failed verification (the table says which and why).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{}", not_verified(*failed, *not_ready))]
#[diagnostic(code(topo::verify::failed), help("see the reasons above"))]
pub struct NotVerified {
    pub failed: usize,
    /// VMs whose `ready:` conditions did not all hold.
    pub not_ready: usize,
}

/// `2 NICs not verified`, `1 VM not ready`, or both joined by `; `.
fn not_verified(failed: usize, not_ready: usize) -> String {
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let nics = (failed > 0).then(|| format!("{failed} NIC{} not verified", s(failed)));
    let vms = (not_ready > 0).then(|| format!("{not_ready} VM{} not ready", s(not_ready)));
    nics.into_iter().chain(vms).collect::<Vec<_>>().join("; ")
}

/// `Err` when any NIC failed (a remote NIC that is only reported does not), or a VM did not
/// get ready.
pub fn check(report: &VerifyReport) -> Result<(), NotVerified> {
    let failed = report.nics.iter().filter(|n| matches!(n.state, NicState::Failed { .. })).count();
    let not_ready = ready_count(report, ReadyState::NotReady);
    if failed > 0 || not_ready > 0 { Err(NotVerified { failed, not_ready }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::model::{MacAddr, NetworkName, VmName};
    use crate::verify::{Evidence, FailReason, NicTarget};

    fn outcome(vm: &str, nic: &str, mac: &str, state: NicState) -> NicOutcome {
        let mac: MacAddr = mac.parse().unwrap();
        NicOutcome {
            target: NicTarget {
                vm: VmName::new(vm).unwrap(),
                domain: format!("demo-{vm}"),
                nic: nic.into(),
                network: NetworkName::new("lan").unwrap(),
                libvirt_network: "demo-lan".into(),
                bridge: Some("virbr1".into()),
                no_bridge: None,
                mac,
                family: Default::default(),
                address6: None,
                reservation: None,
                dhcp: true,
                subnet: Some("10.0.0.0/24".parse().unwrap()),
                running: true,
                stopped: false,
                verify: true,
                netem_delay: Default::default(),
                same_mac: Vec::new(),
                host: None,
                wire: None,
                unproven: false,
                cut: None,
            },
            state,
        }
    }

    /// One NIC in every final state a user can see, the failures with their help.
    fn every_state() -> VerifyReport {
        let ip = |s: &str| -> std::net::Ipv4Addr { s.parse().unwrap() };
        let a: MacAddr = "52:54:00:00:00:0a".parse().unwrap();
        let stranger: MacAddr = "52:54:00:ff:ff:ff".parse().unwrap();
        VerifyReport {
            nics: vec![
                outcome(
                    "deb1",
                    "eth0",
                    "52:54:00:00:00:0a",
                    NicState::Verified {
                        ip: ip("10.0.0.5").into(),
                        evidence: Evidence { mac: a, bridge: "virbr1".into(), ndp: false },
                        seconds: 2.4,
                        rtt_ms: Some(51.2345),
                    },
                ),
                outcome("deb1", "eth1", "52:54:00:00:00:0b", NicState::Failed { reason: FailReason::NoLease }),
                outcome(
                    "deb2",
                    "eth0",
                    "52:54:00:00:00:0c",
                    NicState::Failed {
                        reason: FailReason::Duplicate {
                            ip: ip("10.0.0.7"),
                            mac: "52:54:00:00:00:0c".parse().unwrap(),
                            other_mac: stranger,
                        },
                    },
                ),
                outcome("deb3", "eth0", "52:54:00:00:00:0d", NicState::Skipped),
                outcome(
                    "deb5",
                    "eth0",
                    "52:54:00:00:00:0f",
                    NicState::Failed {
                        reason: FailReason::DuplicateMac {
                            mac: "52:54:00:00:00:0f".parse().unwrap(),
                            network: "demo-lan".into(),
                            domains: vec!["demo-deb5".into(), "deb5-clone".into()],
                        },
                    },
                ),
                outcome(
                    "deb4",
                    "eth0",
                    "52:54:00:00:00:0e",
                    NicState::Reported { ip: ip("10.0.0.9"), source: "a DHCP lease".into() },
                ),
            ],
            ready: Vec::new(),
        }
    }

    /// A dual-stack NIC (a row per family) and an IPv6-only one: a FAMILY column after
    /// NETWORK, and each failure named with its family.
    #[test]
    fn dual_stack_table_has_a_family_column() {
        let a: MacAddr = "52:54:00:00:00:0a".parse().unwrap();
        let six = |mut o: NicOutcome| {
            o.target.family = crate::verify::target::Family::Ipv6;
            o
        };
        let v6 = |s: &str| -> std::net::Ipv6Addr { s.parse().unwrap() };
        let r = VerifyReport {
            nics: vec![
                outcome(
                    "deb1",
                    "eth0",
                    "52:54:00:00:00:0a",
                    NicState::Verified {
                        ip: std::net::Ipv4Addr::new(10, 0, 0, 5).into(),
                        evidence: Evidence { mac: a, bridge: "virbr1".into(), ndp: false },
                        seconds: 2.4,
                        rtt_ms: Some(0.2),
                    },
                ),
                six(outcome(
                    "deb1",
                    "eth0",
                    "52:54:00:00:00:0a",
                    NicState::Verified {
                        ip: v6("fd00:190::5054:ff:fe00:a").into(),
                        evidence: Evidence { mac: a, bridge: "virbr1".into(), ndp: true },
                        seconds: 3.1,
                        rtt_ms: Some(0.3),
                    },
                )),
                six(outcome(
                    "deb1",
                    "eth1",
                    "52:54:00:00:00:0b",
                    NicState::Failed { reason: FailReason::NoAdvert { ip: v6("fd00:191::5054:ff:fe00:b") } },
                )),
            ],
            ready: Vec::new(),
        };
        let t = table(&r);
        assert!(t.starts_with("VM    NIC   NETWORK  FAMILY  BRIDGE"), "{t}");
        assert!(t.contains("deb1 eth1 (lan, ipv6): fd00:191::5054:ff:fe00:b"), "{t}");
        insta::assert_snapshot!(format!("{t}{}", summary_line(&r)));
        // An IPv4-only report has no FAMILY column.
        assert!(!table(&every_state()).contains("FAMILY"));
    }

    /// Readiness under the NIC table: a VM ready with each condition's time, one not ready
    /// naming its unmet condition and the last thing seen; the summary's `Ready:` line, the
    /// JSON's `ready` and counts, and the command fails for the VM not ready.
    #[test]
    fn readiness_as_users_see_it() {
        use crate::verify::state::{ConditionOutcome, ReadyState, VmReadiness};
        let mut r = every_state();
        r.nics.truncate(1);
        let cond = |c: &str, s: Option<f64>, seen: Option<&str>| ConditionOutcome {
            condition: c.into(),
            met: s.is_some(),
            seconds: s,
            last_seen: seen.map(String::from),
        };
        r.ready = vec![
            VmReadiness {
                vm: VmName::new("deb1").unwrap(),
                host: None,
                state: ReadyState::Ready,
                seconds: Some(48.25),
                conditions: vec![cond("ssh", Some(41.0), None), cond("cloud-init", Some(48.25), None)],
            },
            VmReadiness {
                vm: VmName::new("deb2").unwrap(),
                host: None,
                state: ReadyState::NotReady,
                seconds: None,
                conditions: vec![
                    cond("console:\"login:\"", Some(12.0), None),
                    cond("tcp:80", None, Some("connection refused")),
                ],
            },
        ];
        insta::assert_snapshot!(format!("{}{}", table(&r), summary_line(&r)));
        let doc = to_json("demo", &r);
        assert_eq!(doc["summary"]["ready"], 1);
        assert_eq!(doc["summary"]["not_ready"], 1);
        insta::assert_json_snapshot!(doc["ready"]);
        let e = check(&r).unwrap_err();
        assert_eq!(e.to_string(), "1 VM not ready");
        // docs/verify-json.md documents each key of a `ready` entry.
        const DOC: &str = include_str!("../../docs/verify-json.md");
        for k in doc["ready"][0].as_object().unwrap().keys().chain(["host".to_string()].iter()) {
            assert!(DOC.contains(&format!("`ready[].{k}")), "docs/verify-json.md: ready[].{k}");
        }
        // Without readiness the JSON has no `ready` and the summary no counts.
        let plain = to_json("demo", &every_state());
        assert!(plain.get("ready").is_none() && plain["summary"].get("ready").is_none(), "{plain}");
    }

    #[test]
    fn table_as_users_see_it() {
        let r = every_state();
        insta::assert_snapshot!(format!("{}{}", table(&r), summary_line(&r)));
    }

    /// The same NICs in a lab across hosts: a HOST column first (`-` for a NIC without
    /// one), each failure named with its host, and `host` first in each NIC's JSON.
    #[test]
    fn across_hosts_the_table_and_json_name_the_host() {
        let mut r = every_state();
        for (i, n) in r.nics.iter_mut().enumerate().take(5) {
            n.target.host = Some(crate::lab::model::HostName::new(if i % 2 == 0 { "h1" } else { "h2" }).unwrap());
        }
        let t = table(&r);
        assert!(t.starts_with("HOST  VM "), "{t}");
        assert!(t.contains("\nh2: deb1 eth1 (lan): "), "{t}");
        insta::assert_snapshot!(t);
        let j = to_json("demo", &r);
        assert_eq!(j["nics"][0]["host"], "h1");
        assert_eq!(j["nics"][1]["host"], "h2");
        assert!(j["nics"][5].get("host").is_none(), "no host: no key");
        assert_eq!(j["nics"][0].as_object().unwrap().keys().next().map(String::as_str), Some("host"));
    }

    /// One host: no HOST column, no `host` key (the snapshots above stay as they were).
    #[test]
    fn on_one_host_nothing_names_a_host() {
        let r = every_state();
        assert!(table(&r).starts_with("VM "));
        assert!(to_json("demo", &r)["nics"].as_array().unwrap().iter().all(|n| n.get("host").is_none()));
    }

    #[test]
    fn json_version_1_as_users_see_it() {
        insta::assert_json_snapshot!(to_json("demo", &every_state()));
    }

    /// docs/verify-json.md documents exactly the keys the document has (top level and per
    /// NIC), and its example has them too.
    #[test]
    fn the_json_doc_matches_the_output() {
        const DOC: &str = include_str!("../../docs/verify-json.md");
        let mut top = std::collections::BTreeSet::new();
        let mut nic = std::collections::BTreeSet::new();
        for row in DOC.lines().filter(|l| l.starts_with("| `")) {
            let cell = row.split('|').nth(1).unwrap_or_default();
            for name in cell.split(',').map(|n| n.trim().trim_matches('`')) {
                match (name.strip_prefix("nics[]."), name.strip_prefix('.')) {
                    (Some(k), _) | (None, Some(k)) => nic.insert(k.to_string()),
                    // Readiness keys: checked by `readiness_as_users_see_it`.
                    _ if name.starts_with("ready[].") => false,
                    _ => top.insert(name.trim_end_matches("[]").to_string()),
                };
            }
        }
        let keys = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        // `host` is only there in a lab across hosts: every NIC of a lab on one host has the
        // other keys, every NIC of one across hosts has them all.
        // `wire` likewise only on a wire end's row.
        let one_host: std::collections::BTreeSet<String> =
            nic.iter().filter(|k| *k != "host" && *k != "wire").cloned().collect();
        assert!(nic.contains("wire"), "docs/verify-json.md documents nics[].wire");
        assert!(nic.contains("host"), "docs/verify-json.md documents nics[].host");
        let out = to_json("demo", &every_state());
        // `ready` is there only when a VM has readiness conditions.
        let without_ready: std::collections::BTreeSet<String> = top.iter().filter(|k| *k != "ready").cloned().collect();
        assert_eq!(keys(&out), without_ready);
        for n in out["nics"].as_array().unwrap() {
            assert_eq!(keys(n), one_host);
        }
        let mut across = every_state();
        for n in &mut across.nics {
            n.target.host = Some(crate::lab::model::HostName::new("h1").unwrap());
        }
        let across_keys: std::collections::BTreeSet<String> = nic.iter().filter(|k| *k != "wire").cloned().collect();
        for n in to_json("demo", &across)["nics"].as_array().unwrap() {
            assert_eq!(keys(n), across_keys);
        }
        // A wire end's row has `wire` too.
        let mut wired = every_state();
        wired.nics[0].target.wire = crate::lab::wire::WireName::parse("r1--r2");
        let wired = to_json("demo", &wired);
        let mut with_wire = one_host.clone();
        with_wire.insert("wire".into());
        assert_eq!(keys(&wired["nics"][0]), with_wire);
        assert_eq!(wired["nics"][0]["wire"], "r1--r2");
        let block = DOC.split("```json\n").nth(1).and_then(|b| b.split("\n```").next()).unwrap();
        let example: serde_json::Value = serde_json::from_str(block).unwrap();
        assert_eq!(keys(&example), without_ready);
        assert_eq!(keys(&example["nics"][0]), one_host);
        assert_eq!(keys(&example["summary"]), keys(&out["summary"]));
    }

    #[test]
    fn failures_fail_the_command_and_reported_does_not() {
        let r = every_state();
        assert_eq!(check(&r).unwrap_err().to_string(), "3 NICs not verified");
        let only_reported = VerifyReport { nics: r.nics.into_iter().skip(5).collect(), ready: Vec::new() };
        assert!(check(&only_reported).is_ok());
    }
}
