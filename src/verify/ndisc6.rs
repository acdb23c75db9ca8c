//! NDP proof on the host that holds the bridge, by `ndisc6` (Debian package `ndisc6`) run
//! through a [`Runner`]: the IPv6 counterpart of [`super::arping`], and what
//! [`ArpingProber`](super::arping::ArpingProber)'s [`Prober::probe6`] runs. One call is one
//! command: a `sh -c` script that checks the tool and the bridge (its link, and that it has an
//! IPv6 address to solicit from), then runs one `ndisc6 -m -n -r 1 -w MS TARGET BRIDGE` per
//! target, all at once in the background, each line of each one's output tagged with its
//! target, and waits for all.
//!
//! `ndisc6` sends one Neighbor Solicitation (`-r 1`) to the target's solicited-node multicast
//! address, from the kernel's choice among the bridge's addresses (the link-local one, for a
//! link-local-scope destination: RFC 6724 rule 2), then, with `-m`, waits the whole `MS`
//! milliseconds and prints every advertisement for the target (hop limit 255, RFC 4861 7.1.2)
//! that carries a target link-layer address option. ndisc6 1.0.5 (Debian 12):
//!
//! ```text
//! Soliciting fd00:99::5 (fd00:99::5) on br0...
//! Target link-layer address: 02:00:00:99:00:07
//!  from fd00:99::5
//! Target link-layer address: 02:00:00:99:00:05
//!  from fd00:99::5
//! ```
//!
//! (two holders of the address: a duplicate, both seen by the one solicitation). It exits 0
//! with answers; 2 without (`Timed out.`, `No response.`); 1 when it cannot ask (`br9: No such
//! device`, `Sending ICMPv6 packet: Network is unreachable` on a bridge that is down or has
//! IPv6 disabled, `... Cannot assign requested address` while the bridge's own link-local
//! address is still tentative). So a call lasts about `timeout` whatever answers: `grace` is
//! not used.
//!
//! What ndisc6 does not tell, and so this proof does not have: the Ethernet source of an
//! advertisement (it reads ICMPv6 from a raw IPv6 socket, not frames; the MAC is the target
//! link-layer address option, which RFC 4861 7.2.4 makes an answer to a multicast
//! solicitation carry: one without the option is not printed, so it does not count), its
//! S flag, and the round trip (`None`). An address still in duplicate address detection
//! (tentative, RFC 4862 5.4) does not answer: the caller's rounds retry ([`super::run6`]), as
//! they do for the bridge's own tentative address here (no answer, not an error).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::Duration;

use crate::host::runner::Runner;
use crate::host::tools::Tool;
use crate::lab::model::MacAddr;
use crate::verify::ndp::NeighborAdvert;
use crate::verify::prober::{ProbeError, TimedAdvert};
use crate::verify::script::{parse_link, run_script};

/// The probe script. `$1` the bridge, `$2` the wait in milliseconds, then the targets
/// (IPv6 addresses, written by topo). Prints `@nondisc6`, `@nodev`, or `@link LINE` (the
/// bridge's `ip -o link` line: its flags and MAC), then `@noaddr6` (no IPv6 address on the
/// bridge: nothing to solicit from) or every line of each target's `ndisc6` prefixed with the
/// target, and `TARGET @rc STATUS` after it.
const SCRIPT: &str = r#"b=$1; w=$2; shift 2
command -v ndisc6 >/dev/null 2>&1 || { echo @nondisc6; exit 0; }
link=$(ip -o link show dev "$b" 2>/dev/null) || { echo @nodev; exit 0; }
echo "@link $link"
[ -n "$(ip -6 -o addr show dev "$b" 2>/dev/null)" ] || { echo @noaddr6; exit 0; }
for t; do
  { ndisc6 -m -n -r 1 -w "$w" "$t" "$b" 2>&1; echo "@rc $?"; } | sed "s/^/$t /" &
done
wait"#;

/// The argv of one probe: [`SCRIPT`] with the bridge, the wait in milliseconds (`timeout`
/// rounded up, at least 1) and the distinct targets.
pub fn argv(bridge: &str, targets: &[Ipv6Addr], timeout: Duration) -> Vec<String> {
    let ms = timeout.as_millis() + u128::from(!timeout.subsec_nanos().is_multiple_of(1_000_000));
    let mut distinct: Vec<Ipv6Addr> = targets.to_vec();
    distinct.sort();
    distinct.dedup();
    let mut a = vec!["sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned(), "sh".to_owned()];
    a.push(bridge.to_owned());
    a.push(ms.max(1).to_string());
    a.extend(distinct.iter().map(ToString::to_string));
    a
}

/// Solicits `targets` on `bridge` on the machine of `runner`; see the module. Each
/// advertisement for a target not from the bridge's own MAC, sorted, without round trip.
///
/// # Errors
/// As [`parse_output`]; [`ProbeError::Remote`] when the machine cannot be reached or the
/// script cannot run.
pub fn probe6(
    runner: &dyn Runner,
    bridge: &str,
    targets: &[Ipv6Addr],
    timeout: Duration,
) -> Result<Vec<TimedAdvert>, ProbeError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let text = run_script(runner, bridge, &argv(bridge, targets, timeout), "sed")?;
    parse_output(&runner.describe(), bridge, &text)
}

/// Reads the probe script's output: every advertisement for an asked target (its MAC not
/// the bridge's own, each (MAC, target) once), or why the probe could not be made. An
/// advertisement is taken as ndisc6 gives it: the MAC is its target link-layer address
/// (also put as the sender: ndisc6 does not show the frame), `source` the IPv6 source,
/// `solicited` true (ndisc6 does not show the flag).
///
/// # Errors
/// No ndisc6, no bridge, bridge down, no IPv6 address on the bridge; not allowed to open
/// ndisc6's raw socket; an ndisc6 that failed otherwise than by hearing nothing (its
/// message).
pub fn parse_output(host: &str, bridge: &str, text: &str) -> Result<Vec<TimedAdvert>, ProbeError> {
    let b = || bridge.to_owned();
    let mut own = None;
    let mut linked = false;
    let mut lines_of: BTreeMap<Ipv6Addr, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        match line {
            "@nondisc6" => {
                return Err(ProbeError::ToolMissing {
                    tool: Tool::Ndisc6.program(),
                    package: Tool::Ndisc6.package(),
                    bridge: b(),
                    host: host.to_owned(),
                });
            }
            "@nodev" => return Err(ProbeError::InterfaceMissing { bridge: b() }),
            "@noaddr6" if linked => {
                return Err(ProbeError::NoIpv6 {
                    bridge: b(),
                    why: format!(
                        "the bridge has no IPv6 address on {host} (libvirt disables IPv6 on the bridge of a network without an IPv6 <ip>)"
                    ),
                });
            }
            l if l.starts_with("@link ") => {
                let (mac, up) = parse_link(l);
                if !up {
                    return Err(ProbeError::InterfaceDown { bridge: b() });
                }
                (own, linked) = (mac, true);
            }
            l => {
                let Some((t, rest)) = l.split_once(' ') else { continue };
                let Ok(t) = t.parse::<Ipv6Addr>() else { continue };
                lines_of.entry(t).or_default().push(rest.trim());
            }
        }
    }
    if !linked {
        return Err(ProbeError::Remote {
            bridge: b(),
            host: host.to_owned(),
            message: format!("unexpected output: {text}"),
        });
    }
    let mut got: BTreeMap<NeighborAdvert, Option<Duration>> = BTreeMap::new();
    let mut failed: Option<String> = None;
    for (t, lines) in &lines_of {
        // "Target link-layer address: MAC", then " from SOURCE" (trimmed here).
        let mut pending: Option<MacAddr> = None;
        for l in lines {
            if let Some(mac) = l.strip_prefix("Target link-layer address:") {
                pending = mac.trim().to_ascii_lowercase().parse().ok();
            } else if let Some(from) = l.strip_prefix("from ") {
                let (Some(mac), Ok(source)) = (pending.take(), from.trim().parse::<Ipv6Addr>()) else { continue };
                if Some(mac) == own {
                    continue;
                }
                let a = NeighborAdvert { sender_mac: mac, target_mac: Some(mac), target: *t, source, solicited: true };
                got.entry(a).or_insert(None);
            } else if let Some(rc) = l.strip_prefix("@rc ") {
                // 0: answers, 2: none heard; 1 is ndisc6's own failure, but while the bridge's
                // own address is tentative (it cannot send yet), which is no answer yet.
                let said: Vec<&str> = lines.iter().copied().filter(|x| !x.starts_with('@')).collect();
                let tentative = said.iter().any(|x| x.contains("Cannot assign requested address"));
                if !matches!(rc.trim(), "0" | "2") && !tentative {
                    failed.get_or_insert_with(|| said.join("; "));
                }
            }
        }
    }
    if let Some(msg) = failed {
        return Err(if msg.contains("No such device") {
            ProbeError::InterfaceMissing { bridge: b() }
        } else if msg.contains("Operation not permitted") || msg.contains("Permission denied") {
            ProbeError::PermissionDenied { bridge: b() }
        } else if msg.contains("Network is unreachable") {
            ProbeError::NoIpv6 { bridge: b(), why: format!("ndisc6 on {host}: {msg}") }
        } else {
            ProbeError::Remote { bridge: b(), host: host.to_owned(), message: msg }
        });
    }
    Ok(got.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::host::runner::{FakeRunner, Output, RunError};
    use crate::verify::arping::ArpingProber;
    use crate::verify::prober::Prober;

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }
    fn advert(m: &str, target: &str) -> TimedAdvert {
        let m = mac(m);
        (
            NeighborAdvert {
                sender_mac: m,
                target_mac: Some(m),
                target: ip6(target),
                source: ip6(target),
                solicited: true,
            },
            None,
        )
    }

    const UP: &str = "@link 2: br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 3a:19:67:c5:b7:ec brd ff:ff:ff:ff:ff:ff\n";

    /// ndisc6 1.0.5's output as captured on a bridge in a network namespace, tagged as the
    /// script tags it: one holder answers; two holders of one address (a duplicate: both
    /// MACs); an absent address (two "Timed out." would be `-r 2`'s); an answer from the
    /// bridge's own MAC left out; upper-case hex read too.
    #[test]
    fn advertisements_are_read_per_target_with_duplicates() {
        let text = format!(
            "{UP}\
fd00:99::5 Soliciting fd00:99::5 (fd00:99::5) on br0...
fd00:99::6 Soliciting fd00:99::6 (fd00:99::6) on br0...
fd00:99::7 Soliciting fd00:99::7 (fd00:99::7) on br0...
fd00:99::5 Target link-layer address: 02:00:00:99:00:07
fd00:99::5  from fd00:99::5
fd00:99::7 Target link-layer address: 02:00:00:99:00:0A
fd00:99::7  from fe80::ff:fe99:a
fd00:99::5 Target link-layer address: 02:00:00:99:00:05
fd00:99::5  from fd00:99::5
fd00:99::5 Target link-layer address: 3a:19:67:c5:b7:ec
fd00:99::5  from fd00:99::5
fd00:99::5 @rc 0
fd00:99::7 @rc 0
fd00:99::6 Timed out.
fd00:99::6 No response.
fd00:99::6 @rc 2
"
        );
        let got = parse_output("root@h2", "br0", &text).unwrap();
        let mut seven = advert("02:00:00:99:00:0a", "fd00:99::7");
        seven.0.source = ip6("fe80::ff:fe99:a");
        assert_eq!(got, [advert("02:00:00:99:00:05", "fd00:99::5"), advert("02:00:00:99:00:07", "fd00:99::5"), seven]);
        assert!(got.iter().all(|(a, rtt)| a.consistent() && rtt.is_none()));
    }

    /// Silence is no answer; so is the bridge's own address still tentative (ndisc6 cannot
    /// send from it yet): the caller's next round asks again.
    #[test]
    fn silence_and_a_tentative_bridge_address_are_no_answer() {
        let text = format!(
            "{UP}\
fd00:99::6 Soliciting fd00:99::6 (fd00:99::6) on br0...
fd00:99::6 Timed out.
fd00:99::6 No response.
fd00:99::6 @rc 2
fd00:99::5 Soliciting fd00:99::5 (fd00:99::5) on br0...
fd00:99::5 Sending ICMPv6 packet: Cannot assign requested address
fd00:99::5 @rc 1
"
        );
        assert_eq!(parse_output("root@h2", "br0", &text).unwrap(), []);
    }

    #[test]
    fn why_a_probe_cannot_be_made() {
        let e = |t: &str| parse_output("root@h2", "br-lan", t).unwrap_err();
        let missing = e("@nondisc6\n");
        assert!(matches!(missing, ProbeError::ToolMissing { tool: "ndisc6", package: "ndisc6", .. }));
        assert!(missing.to_string().contains("ndisc6 is not installed on root@h2"), "{missing}");
        assert!(matches!(e("@nodev\n"), ProbeError::InterfaceMissing { .. }));
        assert!(matches!(e("@link 2: br-lan: <BROADCAST,MULTICAST> mtu 1500\n"), ProbeError::InterfaceDown { .. }));
        let no6 = e(&format!("{UP}@noaddr6\n"));
        assert!(matches!(&no6, ProbeError::NoIpv6 { why, .. } if why.contains("no IPv6 address")), "{no6}");
        // Captured: a bridge gone between the link check and ndisc6; IPv6 off on the bridge.
        let gone = format!("{UP}fd00::5 br-lan: No such device\nfd00::5 @rc 1\n");
        assert!(matches!(e(&gone), ProbeError::InterfaceMissing { .. }));
        let off = format!(
            "{UP}fd00::5 Soliciting fd00::5 (fd00::5) on br-lan...\nfd00::5 Sending ICMPv6 packet: Network is unreachable\nfd00::5 @rc 1\n"
        );
        assert!(matches!(e(&off), ProbeError::NoIpv6 { .. }));
        let denied = format!("{UP}fd00::5 Raw IPv6 socket: Operation not permitted\nfd00::5 @rc 1\n");
        assert!(matches!(e(&denied), ProbeError::PermissionDenied { .. }));
        let odd = e(&format!("{UP}fd00::5 ndisc6: something else\nfd00::5 @rc 1\n"));
        assert!(matches!(&odd, ProbeError::Remote { message, .. } if message.contains("something else")), "{odd}");
        assert!(matches!(e("bash: sh: oops\n"), ProbeError::Remote { .. }));
        assert_eq!(parse_output("h", "br-lan", UP).unwrap(), []);
    }

    /// The command: the script, the bridge, milliseconds rounded up (at least 1), distinct
    /// targets; one round trip through `ArpingProber::probe6`; none without targets; ssh
    /// failing is a `Remote` error.
    #[test]
    fn one_command_per_probe() {
        let (a, b) = (ip6("fd00::5"), ip6("fd00::4"));
        let v = argv("br-lan", &[a, b, a], Duration::from_micros(300_500));
        assert_eq!(v[..4], ["sh", "-c", SCRIPT, "sh"]);
        assert_eq!(v[4..], ["br-lan", "301", "fd00::4", "fd00::5"]);
        assert_eq!(argv("b", &[a], Duration::ZERO)[5], "1");
        let out =
            format!("{UP}fd00::5 Target link-layer address: 52:54:00:12:34:56\nfd00::5  from fd00::5\nfd00::5 @rc 0\n");
        let f = Arc::new(FakeRunner::new("root@h1").on(&["sh", "-c", SCRIPT, "sh", "br0", "100"], Ok(Output::ok(out))));
        let p = ArpingProber::over(f.clone());
        let got = p.probe6("br0", &[a], Duration::from_millis(100), Duration::ZERO).unwrap();
        assert_eq!(got, [advert("52:54:00:12:34:56", "fd00::5")]);
        assert_eq!(p.probe6("br0", &[], Duration::from_secs(1), Duration::ZERO).unwrap(), []);
        assert_eq!(f.calls().len(), 1, "no targets: nothing run");
        let f = Arc::new(
            FakeRunner::new("root@h1")
                .on(&["sh"], Err(RunError::Connect { host: "root@h1".into(), message: "No route to host".into() })),
        );
        let e = ArpingProber::over(f).probe6("br0", &[a], Duration::from_secs(1), Duration::ZERO).unwrap_err();
        assert!(matches!(&e, ProbeError::Remote { .. }) && e.to_string().contains("No route to host"), "{e}");
    }
}
