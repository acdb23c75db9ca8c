//! The queueing disciplines of the VMs' taps, for netem: the `TapShaper` trait and `Tc`,
//! which runs iproute2's `tc` (JSON output) through a [`Runner`]: on this machine, or on a
//! remote host's over ssh. A tap is a network device of the machine (and network namespace)
//! where QEMU runs.

use std::sync::Arc;

use crate::host::runner::{EXIT_NOT_FOUND, LocalRunner, RunError, Runner, script};
use crate::lab::impair::{TapQdiscs, parse_tc_qdiscs, parse_tc_qdiscs_by_dev};

/// Running `tc` failed, or its output could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tc {args}: {message}")]
pub struct TcError {
    /// The arguments given to `tc`.
    pub args: String,
    /// tc's message (its stderr), or why it could not run.
    pub message: String,
    /// How it failed.
    pub cause: TcCause,
}

/// How running `tc` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcCause {
    /// `tc` could not be started (`NotFound`: not installed, here or on the remote host).
    Spawn(std::io::ErrorKind),
    /// The remote host could not be reached (ssh failed).
    Connect,
    /// `tc` ran and exited with an error (its stderr is the message).
    Exit,
    /// `tc`'s output could not be read.
    Output,
}

impl TcError {
    /// What to do about it: install iproute2 when `tc` is missing; a kernel without netem
    /// needs the `sch_netem` module (tc says "Specified qdisc kind is unknown" on its stderr,
    /// the kernel's EOPNOTSUPP/ENOENT relayed as text: advice only, no decision reads it).
    pub fn hint(&self) -> Option<String> {
        if self.cause == TcCause::Exit && self.message.contains("kind is unknown") {
            Some(
                "the host kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem): `modprobe sch_netem`, \
                 or remove `delay`/`jitter`/`loss` from the lab file"
                    .into(),
            )
        } else if self.cause == TcCause::Spawn(std::io::ErrorKind::NotFound) {
            Some("install iproute2 (it provides `tc`)".into())
        } else {
            None
        }
    }
}

/// The two things topo does with a tap's qdiscs.
pub trait TapShaper: Send + Sync {
    /// The egress qdiscs of `tap` (`tc -j qdisc show dev TAP`).
    fn show(&self, tap: &str) -> Result<TapQdiscs, TcError>;
    /// The egress qdiscs of every device, in one call (`tc -j qdisc show`): what `observe`
    /// reads, so a lab of many VMs costs one process, not one per tap.
    fn show_all(&self) -> Result<std::collections::BTreeMap<String, TapQdiscs>, TcError>;
    /// Runs `tc ARGS` (from [`crate::lab::impair::tc_commands`]).
    fn run(&self, args: &[String]) -> Result<(), TcError>;
    /// Runs `tc ARGS` for each of `commands` in order, stopping at the first that fails; one
    /// round trip where the shaper can (a remote host).
    fn run_all(&self, commands: &[Vec<String>]) -> Result<(), TcError> {
        commands.iter().try_for_each(|c| self.run(c))
    }
    /// Joins taps `a` and `b` into a wire ([`join_script`]), in one round trip.
    ///
    /// # Errors
    /// `tc` cannot run, or refuses a command (no such tap; a kernel without `act_mirred`,
    /// `cls_u32` or `sch_ingress`).
    fn join(&self, a: &str, b: &str) -> Result<(), TcError>;
    /// Where each of `taps` redirects its guest's frames ([`parse_redirects`]), in one round
    /// trip.
    ///
    /// # Errors
    /// The script cannot run.
    fn redirects(&self, taps: &[String]) -> Result<std::collections::BTreeMap<String, Option<String>>, TcError>;
}

/// The real `TapShaper`: iproute2's `tc` from `PATH`, run by a runner (this machine's by
/// default).
#[derive(Clone)]
pub struct Tc {
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for Tc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tc").field("on", &self.runner.describe()).finish()
    }
}

impl Default for Tc {
    fn default() -> Self {
        Self { runner: Arc::new(LocalRunner) }
    }
}

impl Tc {
    /// `tc` on the machine of `runner`.
    pub fn over(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }

    /// Runs `argv` (`tc ...`, or an `sh -c` script of them; `shown` is what errors name) and
    /// returns its stdout. Exit 127 is a `tc` that is not installed on the machine.
    fn exec(&self, argv: &[&str], shown: &str) -> Result<String, TcError> {
        let err = |message: String, cause| TcError { args: shown.to_owned(), message, cause };
        match self.runner.run(argv, None) {
            Err(RunError::Spawn { kind, message, .. }) => {
                Err(err(format!("cannot spawn tc: {message}"), TcCause::Spawn(kind)))
            }
            Err(e @ RunError::Connect { .. }) => Err(err(e.to_string(), TcCause::Connect)),
            Ok(o) if o.code == EXIT_NOT_FOUND => Err(err(
                format!("tc is not installed on {}: {}", self.runner.describe(), o.error_text()),
                TcCause::Spawn(std::io::ErrorKind::NotFound),
            )),
            Ok(o) if o.code != 0 => Err(err(o.error_text(), TcCause::Exit)),
            Ok(o) => Ok(o.text()),
        }
    }

    fn tc(&self, args: &[String]) -> Result<String, TcError> {
        let mut argv = vec!["tc"];
        argv.extend(args.iter().map(String::as_str));
        self.exec(&argv, &args.join(" "))
    }
}

/// The `sh` script that joins taps `a` and `b` into a wire ([`crate::lab::wire`]): on each,
/// topo's ingress qdisc made anew (`ffff:`, the kernel's ingress hook) with one filter that
/// matches every frame (`u32 match u32 0 0`, for any `protocol all`: what LLDP, LACP and STP
/// use too) and redirects it to the other tap's egress (`act_mirred`), so the other guest
/// receives it unchanged. Deleting the old qdisc first drops a filter left pointing at a
/// tap that was made again (the kernel keeps a redirect by interface index: `to_dev "*"`).
/// The caller passes wire tap names only ([`crate::lab::wire::is_wire_tap`]: `tw` and hex
/// digits), which need no quoting; `Tc::join` refuses any other.
pub fn join_script(a: &str, b: &str) -> String {
    let mut text = String::from("set -e\n");
    for (from, to) in [(a, b), (b, a)] {
        text.push_str(&format!(
            "tc qdisc del dev {from} ingress 2>/dev/null || true\n\
             tc qdisc add dev {from} handle ffff: ingress\n\
             tc filter add dev {from} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {to}\n"
        ));
    }
    text
}

/// The `sh` script that prints each tap's ingress filters (`tc -j filter show dev TAP
/// ingress`), each after a line `== TAP` (a tap that is gone prints `== TAP` alone).
pub fn redirects_script(taps: &[String]) -> String {
    let mut text = String::new();
    for t in taps {
        text.push_str(&format!("echo '== {t}'; tc -j filter show dev {t} ingress 2>/dev/null; echo\n"));
    }
    text
}

/// Reads what [`redirects_script`] printed: per tap, the device its ingress filter
/// redirects every frame to (`Some("*")` when that device is gone), `None` when it has no
/// such filter. A tap whose section is missing or unreadable is left out.
pub fn parse_redirects(text: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut sections = text.split("== ").skip(1);
    for sec in sections.by_ref() {
        let (tap, json) = sec.split_once('\n').unwrap_or((sec, ""));
        let json = json.trim();
        if json.is_empty() {
            // No device (the tap is gone) or no ingress qdisc: nothing redirects.
            out.insert(tap.trim().to_string(), None);
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        let to = v.as_array().into_iter().flatten().find_map(|f| {
            f.pointer("/options/actions")?.as_array()?.iter().find_map(|a| {
                (a.get("kind")?.as_str()? == "mirred"
                    && a.get("mirred_action")?.as_str()? == "redirect"
                    && a.get("direction")?.as_str()? == "egress")
                    .then(|| a.get("to_dev")?.as_str().map(str::to_owned))
                    .flatten()
            })
        });
        out.insert(tap.trim().to_string(), to);
    }
    out
}

impl TapShaper for Tc {
    fn join(&self, a: &str, b: &str) -> Result<(), TcError> {
        // A saved plan is read from a file: its tap names are not trusted into a shell line.
        if let Some(bad) = [a, b].into_iter().find(|t| !crate::lab::wire::is_wire_tap(t)) {
            return Err(TcError {
                args: format!("join taps {a} and {b}"),
                message: format!("{bad:?} is not a wire tap's name (`tw` and 10 hex digits)"),
                cause: TcCause::Exit,
            });
        }
        let text = join_script(a, b);
        self.exec(&["sh", "-c", &text], &format!("join taps {a} and {b}")).map(|_| ())
    }

    fn redirects(&self, taps: &[String]) -> Result<std::collections::BTreeMap<String, Option<String>>, TcError> {
        if taps.is_empty() {
            return Ok(Default::default());
        }
        let text = self.exec(&["sh", "-c", &redirects_script(taps)], "-j filter show ... ingress")?;
        Ok(parse_redirects(&text))
    }

    fn show(&self, tap: &str) -> Result<TapQdiscs, TcError> {
        let args: Vec<String> = ["-j", "qdisc", "show", "dev", tap].iter().map(|s| s.to_string()).collect();
        let text = self.tc(&args)?;
        parse_tc_qdiscs(&text).map_err(|e| TcError {
            args: args.join(" "),
            message: e.to_string(),
            cause: TcCause::Output,
        })
    }

    fn show_all(&self) -> Result<std::collections::BTreeMap<String, TapQdiscs>, TcError> {
        let args: Vec<String> = ["-j", "qdisc", "show"].iter().map(|s| s.to_string()).collect();
        let text = self.tc(&args)?;
        parse_tc_qdiscs_by_dev(&text).map_err(|e| TcError {
            args: args.join(" "),
            message: e.to_string(),
            cause: TcCause::Output,
        })
    }

    fn run(&self, args: &[String]) -> Result<(), TcError> {
        self.tc(args).map(|_| ())
    }

    /// Every command in one `sh -c` script (`set -e`): one round trip.
    fn run_all(&self, commands: &[Vec<String>]) -> Result<(), TcError> {
        match commands {
            [] => Ok(()),
            [one] => self.run(one),
            _ => {
                let with_tc: Vec<Vec<String>> = commands
                    .iter()
                    .map(|c| std::iter::once("tc".to_owned()).chain(c.iter().cloned()).collect())
                    .collect();
                let argv = script(&with_tc);
                let words: Vec<&str> = argv.iter().map(String::as_str).collect();
                let shown: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
                self.exec(&words, &shown.join("; ")).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    /// What `tc -j filter show dev TAP ingress` prints (iproute2 6.1, kernel 6.x) for a wire's
    /// filter, for one whose peer tap was made again (`*`), and nothing for a tap without.
    #[test]
    fn redirects_are_read_from_tc_json() {
        let f = |to: &str| {
            format!(
                r#"[{{"parent":"ffff:","protocol":"all","pref":1,"kind":"u32","chain":0}},{{"parent":"ffff:","protocol":"all","pref":1,"kind":"u32","chain":0,"options":{{"fh":"800::800","order":2048,"match":{{"value":"0","mask":"0","offmask":"","off":0}},"actions":[{{"order":1,"kind":"mirred","mirred_action":"redirect","direction":"egress","to_dev":"{to}","control_action":{{"type":"stolen"}},"index":1,"ref":1,"bind":1}}]}}}}]"#
            )
        };
        let text = format!("== twa\n{}\n\n== twb\n{}\n\n== twc\n\n== twd\n[]\n", f("twb"), f("*"));
        let r = parse_redirects(&text);
        assert_eq!(r["twa"].as_deref(), Some("twb"));
        assert_eq!(r["twb"].as_deref(), Some("*"));
        assert_eq!(r["twc"], None);
        assert_eq!(r["twd"], None);
        assert_eq!(r.len(), 4);
    }

    /// A tap name that is not a wire tap's (a saved plan edited by hand) is refused before
    /// any shell runs.
    #[test]
    fn join_refuses_what_is_not_a_wire_tap() {
        let e = Tc::default().join("tw0123456789", "x; touch /tmp/topo-pwned").unwrap_err();
        assert!(e.message.contains("is not a wire tap's name"), "{e:?}");
        assert!(!std::path::Path::new("/tmp/topo-pwned").exists());
    }

    #[test]
    fn the_join_script_redirects_both_ways() {
        let s = join_script("twa", "twb");
        assert!(s.starts_with("set -e\n"));
        assert!(s.contains("tc filter add dev twa parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev twb"));
        assert!(s.contains("tc filter add dev twb parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev twa"));
        assert!(s.contains("tc qdisc del dev twa ingress 2>/dev/null || true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{FakeRunner, Output};

    /// tc through a runner: its JSON read; several changes in one script; a tc missing on the
    /// machine (exit 127) and an unknown qdisc kind get their hints.
    #[test]
    fn tc_over_a_runner() {
        let f = Arc::new(
            FakeRunner::new("root@h1")
                .on(&["tc", "-j", "qdisc", "show", "dev", "vnet0"], Ok(Output::ok("[]")))
                .on(&["tc", "qdisc", "add"], Ok(Output::failed(2, "Error: Specified qdisc kind is unknown.")))
                .on(&["sh", "-c", "set -e\n"], Ok(Output::ok(""))),
        );
        let tc = Tc::over(f.clone());
        assert_eq!(tc.show("vnet0").unwrap(), parse_tc_qdiscs("[]").unwrap());
        let add: Vec<String> = ["qdisc", "add", "dev", "vnet0", "root", "netem"].map(String::from).to_vec();
        assert!(tc.run(&add).unwrap_err().hint().is_some_and(|h| h.contains("sch_netem")));
        let del: Vec<String> = ["qdisc", "del", "dev", "vnet0", "root"].map(String::from).to_vec();
        tc.run_all(&[del.clone(), add.clone()]).unwrap();
        let calls = f.calls();
        assert_eq!(
            calls.last().unwrap()[2],
            "set -e\ntc qdisc del dev vnet0 root\ntc qdisc add dev vnet0 root netem\n"
        );
        let e = Tc::over(Arc::new(FakeRunner::new("root@h2"))).show_all().unwrap_err();
        assert_eq!(e.hint().as_deref(), Some("install iproute2 (it provides `tc`)"), "{e}");
        assert!(e.message.contains("root@h2"), "{e}");
    }
}
