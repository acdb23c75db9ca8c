//! ARP proof on the host that holds the bridge, by iputils' `arping` run through a
//! [`Runner`] (and NDP proof, by `ndisc6`, in [`crate::verify::ndisc6`], through the same
//! prober): over ssh for another libvirt host (where topo cannot open a raw socket), or on
//! this machine. One call is one command: a `sh -c` script that checks the bridge, then runs
//! one `arping` per target, all at once in the background, each line of each one's output
//! tagged with its target, and waits for all.
//!
//! Each target gets `arping -b -I BRIDGE [-s 0.0.0.0] -c 2 -w SECS IP`: broadcast requests
//! (`-b`, so that a second holder of the address hears the second one too), done at two
//! replies or after SECS whole seconds (iputils 20221126 takes only whole seconds for `-w`).
//! Two replies to the first request are a duplicate, seen at once; a single holder answers
//! both requests, the second one second after the first. So a call takes about
//! `ceil(timeout)` seconds (at least one) whatever answers: `grace` is not used.
//!
//! The source address is the kernel's choice for the bridge (the bridge's own address on the
//! target's subnet; arping asks the routing table with the socket bound to the bridge), or
//! `0.0.0.0` when the bridge has no IPv4 address: an ARP probe (RFC 5227), which the
//! multi-host smoke test proves answered on an address-less bridge.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::host::runner::Runner;
use crate::host::tools::Tool;
use crate::lab::model::MacAddr;
use crate::verify::arp::ArpReply;
use crate::verify::prober::{ProbeError, Prober, TimedAdvert, TimedReply};
use crate::verify::script::{parse_link, run_script};

/// The probe script. `$1` the bridge, `$2` the wait in whole seconds, then the targets
/// (dotted IPv4 addresses, written by topo). Prints `@noarping`, `@nodev`, or `@link LINE`
/// (the bridge's `ip -o link` line: its flags and MAC), `@addr yes|no`, then every line of
/// each target's `arping` prefixed with the target, and `TARGET @rc STATUS` after it.
const SCRIPT: &str = r#"b=$1; w=$2; shift 2
command -v arping >/dev/null 2>&1 || { echo @noarping; exit 0; }
link=$(ip -o link show dev "$b" 2>/dev/null) || { echo @nodev; exit 0; }
echo "@link $link"
s='-s 0.0.0.0'
if [ -n "$(ip -4 -o addr show dev "$b" 2>/dev/null)" ]; then s=; echo '@addr yes'; else echo '@addr no'; fi
for t; do
  { arping -b -I "$b" $s -c 2 -w "$w" "$t" 2>&1; echo "@rc $?"; } | sed "s/^/$t /" &
done
wait"#;

/// The prober that runs `arping` on the machine of a runner, and `ndisc6` for IPv6
/// ([`Prober::probe6`], [`crate::verify::ndisc6`]): the whole proof on another host's bridge.
pub struct ArpingProber {
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for ArpingProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArpingProber").field("on", &self.runner.describe()).finish()
    }
}

impl ArpingProber {
    /// Probes on the machine `runner` runs commands on (an `SshRunner` for a remote host).
    pub fn over(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }

    /// The argv of one probe: [`SCRIPT`] with the bridge, the wait in whole seconds
    /// (`timeout` rounded up, at least 1) and the distinct targets.
    pub fn argv(bridge: &str, targets: &[Ipv4Addr], timeout: Duration) -> Vec<String> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let mut distinct: Vec<Ipv4Addr> = targets.to_vec();
        distinct.sort();
        distinct.dedup();
        let mut a = vec!["sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned(), "sh".to_owned()];
        a.push(bridge.to_owned());
        a.push(secs.max(1).to_string());
        a.extend(distinct.iter().map(ToString::to_string));
        a
    }
}

/// What one `arping` line says.
fn parse_reply_line(line: &str) -> Option<(Ipv4Addr, MacAddr, Option<Duration>)> {
    // "Unicast reply from 10.9.0.5 [8E:B0:9F:F8:F9:9C]  0.565ms" (also "Broadcast reply").
    let rest = line.split_once("reply from ")?.1;
    let (ip, rest) = rest.split_once(" [")?;
    let (mac, rest) = rest.split_once(']')?;
    let rtt = rest.trim().strip_suffix("ms").and_then(|ms| ms.trim().parse::<f64>().ok());
    let rtt = rtt.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| Duration::from_secs_f64(ms / 1e3));
    Some((ip.trim().parse().ok()?, mac.to_ascii_lowercase().parse().ok()?, rtt))
}

/// Reads the probe script's output: the replies for the asked targets (not from the
/// bridge's own MAC, each (MAC, address) once, with its first round-trip time), or why the
/// probe could not be made.
///
/// # Errors
/// No arping, no bridge, bridge down; an arping that failed otherwise than by hearing
/// nothing (its message).
pub fn parse_output(host: &str, bridge: &str, text: &str) -> Result<Vec<TimedReply>, ProbeError> {
    let b = || bridge.to_owned();
    let mut own = None;
    let mut linked = false;
    let mut src: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    let mut got: BTreeMap<ArpReply, Option<Duration>> = BTreeMap::new();
    let mut failed: Option<String> = None;
    let mut lines_of: BTreeMap<Ipv4Addr, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        match line {
            "@noarping" => {
                return Err(ProbeError::ToolMissing {
                    tool: Tool::Arping.program(),
                    package: Tool::Arping.package(),
                    bridge: b(),
                    host: host.to_owned(),
                });
            }
            "@nodev" => return Err(ProbeError::InterfaceMissing { bridge: b() }),
            l if l.starts_with("@link ") => {
                let (mac, up) = parse_link(l);
                if !up {
                    return Err(ProbeError::InterfaceDown { bridge: b() });
                }
                (own, linked) = (mac, true);
            }
            l if l.starts_with("@addr ") => {}
            l => {
                let Some((t, rest)) = l.split_once(' ') else { continue };
                let Ok(t) = t.parse::<Ipv4Addr>() else { continue };
                lines_of.entry(t).or_default().push(rest);
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
    for (t, lines) in &lines_of {
        for l in lines {
            // "ARPING 10.9.0.5 from 10.9.0.1 br0": the source arping chose.
            if let Some(from) = l.strip_prefix("ARPING ").and_then(|r| r.split(" from ").nth(1)) {
                if let Some(ip) = from.split_whitespace().next().and_then(|s| s.parse().ok()) {
                    src.insert(*t, ip);
                }
            } else if let Some((ip, mac, rtt)) = parse_reply_line(l) {
                if ip != *t || Some(mac) == own {
                    continue;
                }
                let r = ArpReply {
                    sender_mac: mac,
                    sender_ip: ip,
                    target_ip: src.get(t).copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
                };
                got.entry(r).or_insert(rtt);
            } else if let Some(rc) = l.strip_prefix("@rc ") {
                // 0: replies, 1: none heard; anything else is arping's own failure.
                if !matches!(rc.trim(), "0" | "1") {
                    let said: Vec<&str> = lines.iter().copied().filter(|x| !x.starts_with('@')).collect();
                    failed.get_or_insert_with(|| said.join("; "));
                }
            }
        }
    }
    if let Some(msg) = failed {
        return Err(if msg.contains("not available") || msg.contains("No such device") {
            ProbeError::InterfaceMissing { bridge: b() }
        } else if msg.contains("is down") {
            ProbeError::InterfaceDown { bridge: b() }
        } else if msg.contains("Operation not permitted") || msg.contains("Permission denied") {
            ProbeError::PermissionDenied { bridge: b() }
        } else {
            ProbeError::Remote { bridge: b(), host: host.to_owned(), message: msg }
        });
    }
    Ok(got.into_iter().collect())
}

impl Prober for ArpingProber {
    /// See the module: the call lasts about `ceil(timeout)` seconds; `grace` is not used.
    /// Round-trip times are arping's own.
    fn probe_timed(
        &self,
        bridge: &str,
        targets: &[Ipv4Addr],
        timeout: Duration,
        _grace: Duration,
    ) -> Result<Vec<TimedReply>, ProbeError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let host = self.runner.describe();
        let text = run_script(self.runner.as_ref(), bridge, &Self::argv(bridge, targets, timeout), "sed")?;
        parse_output(&host, bridge, &text)
    }

    /// By `ndisc6` on the same machine ([`crate::verify::ndisc6`]): the call lasts about
    /// `timeout`; `grace` is not used; no round-trip times.
    fn probe6(
        &self,
        bridge: &str,
        targets: &[Ipv6Addr],
        timeout: Duration,
        _grace: Duration,
    ) -> Result<Vec<TimedAdvert>, ProbeError> {
        crate::verify::ndisc6::probe6(self.runner.as_ref(), bridge, targets, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{FakeRunner, Output, RunError};

    const G: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    /// iputils 20221126's output, tagged as the script tags it: one target answered twice by
    /// one MAC, by two MACs (a duplicate), one silent, the bridge's own MAC left out.
    #[test]
    fn replies_are_read_per_target_with_duplicates_and_times() {
        let text = "\
@link 2: br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 6a:09:4b:50:3c:16 brd ff:ff:ff:ff:ff:ff
@addr yes
10.9.0.6 ARPING 10.9.0.6 from 10.9.0.1 br0
10.9.0.5 ARPING 10.9.0.5 from 10.9.0.1 br0
10.9.0.5 Unicast reply from 10.9.0.5 [8E:B0:9F:F8:F9:9C]  0.565ms
10.9.0.5 Unicast reply from 10.9.0.5 [02:00:00:00:00:07]  0.601ms
10.9.0.5 Unicast reply from 10.9.0.5 [8E:B0:9F:F8:F9:9C]  0.401ms
10.9.0.5 Unicast reply from 10.9.0.5 [6A:09:4B:50:3C:16]  0.1ms
10.9.0.5 Sent 2 probes (2 broadcast(s))
10.9.0.5 Received 2 response(s)
10.9.0.5 @rc 0
10.9.0.6 Sent 1 probes (1 broadcast(s))
10.9.0.6 Received 0 response(s)
10.9.0.6 @rc 1
";
        let got = parse_output("root@h1", "br0", text).unwrap();
        let src = Ipv4Addr::new(10, 9, 0, 1);
        assert_eq!(
            got,
            [
                (
                    ArpReply { sender_mac: mac("02:00:00:00:00:07"), sender_ip: G, target_ip: src },
                    Some(Duration::from_micros(601))
                ),
                (
                    ArpReply { sender_mac: mac("8e:b0:9f:f8:f9:9c"), sender_ip: G, target_ip: src },
                    Some(Duration::from_micros(565))
                ),
            ]
        );
    }

    #[test]
    fn why_a_probe_cannot_be_made() {
        let e = |t: &str| parse_output("root@h2", "br-lan", t).unwrap_err();
        assert!(matches!(e("@noarping\n"), ProbeError::ToolMissing { .. }));
        assert!(e("@noarping\n").to_string().contains("root@h2"));
        assert!(matches!(e("@nodev\n"), ProbeError::InterfaceMissing { .. }));
        assert!(matches!(e("@link 2: br-lan: <BROADCAST,MULTICAST> mtu 1500\n"), ProbeError::InterfaceDown { .. }));
        let up = "@link 2: br-lan: <BROADCAST,MULTICAST,UP> mtu 1450 link/ether 02:00:00:00:00:01 brd\n@addr no\n";
        assert!(matches!(
            e(&format!("{up}10.9.0.5 arping: Device br-lan not available.\n10.9.0.5 @rc 2\n")),
            ProbeError::InterfaceMissing { .. }
        ));
        let odd = e(&format!("{up}10.9.0.5 arping: socket: Address family not supported\n10.9.0.5 @rc 2\n"));
        assert!(odd.to_string().contains("Address family"), "{odd}");
        assert!(matches!(e("bash: sh: oops\n"), ProbeError::Remote { .. }));
        assert_eq!(parse_output("h", "br-lan", up).unwrap(), []);
    }

    /// The command: the script, the bridge, whole seconds rounded up (at least 1), distinct
    /// targets; one round trip; a missing shell tool or ssh failure is a `Remote` error.
    #[test]
    fn one_command_per_probe() {
        let a = ArpingProber::argv("br-lan", &[G, Ipv4Addr::new(10, 9, 0, 4), G], Duration::from_millis(300));
        assert_eq!(a[4..], ["br-lan", "1", "10.9.0.4", "10.9.0.5"]);
        assert_eq!(ArpingProber::argv("b", &[G], Duration::from_millis(2001))[5], "3");
        let f = Arc::new(FakeRunner::new("root@h1").on(&["sh", "-c", SCRIPT, "sh", "br0"], Ok(Output::ok("@nodev\n"))));
        let p = ArpingProber::over(f.clone());
        assert!(matches!(
            p.probe("br0", &[G], Duration::from_secs(1), Duration::ZERO),
            Err(ProbeError::InterfaceMissing { .. })
        ));
        assert_eq!(p.probe("br0", &[], Duration::from_secs(1), Duration::ZERO).unwrap(), []);
        assert_eq!(f.calls().len(), 1, "no targets: nothing run");
        let f = Arc::new(
            FakeRunner::new("root@h1")
                .on(&["sh"], Err(RunError::Connect { host: "root@h1".into(), message: "No route to host".into() })),
        );
        let e = ArpingProber::over(f).probe("br0", &[G], Duration::from_secs(1), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("No route to host"), "{e}");
    }
}
