//! What `topo capture` listens on, named as on its command line and checked against the lab:
//! a VM's NIC (`VM`, `VM.ethN`, a wire end's NIC too), a lab network (`net:NAME`, or `NAME`
//! alone when no VM has that name) or a wire (`wire:NAME`). [`CaptureTarget`] is a closed
//! enum.

use std::fmt;

use crate::diag::suggest;
use crate::lab::model::{Lab, NetworkKind, nic_label};
use crate::lab::names::{HostName, NetworkName, VmName};

/// A place in a lab where packets can be captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureTarget {
    /// NIC `nic` (0-based position in the VM's `nics`, shown `ethN`) of VM `vm`: its tap on
    /// the VM's host.
    Nic { vm: VmName, nic: usize },
    /// A lab network: its bridge on a host it exists on.
    Network(NetworkName),
    /// A wire (`links:`): the tap of its first end, which sees every frame both ways (what
    /// that guest sends, before the host redirects it, and what the host sends it).
    Wire(crate::lab::wire::WireName),
}

impl fmt::Display for CaptureTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureTarget::Nic { vm, nic } => write!(f, "{vm}.{}", nic_label(*nic)),
            CaptureTarget::Network(n) => write!(f, "net:{n}"),
            CaptureTarget::Wire(w) => write!(f, "wire:{w}"),
        }
    }
}

/// Why a capture target names nothing in the lab.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum TargetError {
    /// Neither a VM nor a network of the lab.
    #[error("lab {lab} has no VM or network `{name}`")]
    #[diagnostic(code(topo::capture::unknown_target), help("{help}"))]
    Unknown { lab: String, name: String, help: String },
    /// `vm:NAME` (or `NAME.ethN`) names no VM.
    #[error("lab {lab} has no VM `{vm}`")]
    #[diagnostic(code(topo::capture::unknown_vm), help("{help}"))]
    UnknownVm { lab: String, vm: String, help: String },
    /// `wire:NAME` names no wire.
    #[error("lab {lab} has no wire `{wire}`")]
    #[diagnostic(code(topo::capture::unknown_wire), help("{help}"))]
    UnknownWire { lab: String, wire: String, help: String },
    /// `net:NAME` names no network.
    #[error("lab {lab} has no network `{network}`")]
    #[diagnostic(code(topo::capture::unknown_network), help("{help}"))]
    UnknownNetwork { lab: String, network: String, help: String },
    /// `VM.NIC` names no NIC of the VM.
    #[error("VM `{vm}` has no NIC `{nic}`")]
    #[diagnostic(code(topo::capture::unknown_nic), help("{help}"))]
    UnknownNic { vm: String, nic: String, help: String },
    /// A VM without NICs has nothing to capture on.
    #[error("VM `{vm}` has no NICs")]
    #[diagnostic(code(topo::capture::no_nics), help("capture on one of the lab's networks instead (net:NAME)"))]
    NoNics { vm: String },
    /// A plain name that is both a VM and a network.
    #[error("`{name}` is both a VM and a network of lab {lab}")]
    #[diagnostic(
        code(topo::capture::ambiguous),
        help("say which: `vm:{name}` (its first NIC) or `net:{name}` (the network's bridge)")
    )]
    Ambiguous { lab: String, name: String },
    /// A kind the command line does not know.
    #[error("`{text}` is not a capture target")]
    #[diagnostic(
        code(topo::capture::bad_target),
        help("VM (its eth0), VM.ethN (its NIC N, in the order of `nics:`, then its wires), net:NETWORK or wire:NAME")
    )]
    Syntax { text: String },
    /// `--on` in a lab on one host.
    #[error("--on names a host, and lab {lab} does not name its hosts")]
    #[diagnostic(code(topo::capture::on_without_hosts), help("leave --on out: the lab runs on one host"))]
    OnWithoutHosts { lab: String },
    /// `--on` for a VM's NIC, naming another host than the VM's.
    #[error("VM {vm} runs on host {host}: its NICs are captured there")]
    #[diagnostic(code(topo::capture::on_for_vm), help("leave --on out (it chooses a network's host)"))]
    OnForVm { vm: String, host: String },
    /// `--on` names a host the network is not on.
    #[error("network {network} is not on host {host}")]
    #[diagnostic(code(topo::capture::not_on_host), help("the hosts it is on: {known}"))]
    NotOnHost { network: String, host: String, known: String },
}

impl CaptureTarget {
    /// Reads `text` as `topo capture` takes it and checks it against `lab`: `VM` (its first
    /// NIC), `VM.ethN`, `vm:VM[.ethN]`, `net:NETWORK`, or `NETWORK` alone when no VM has that
    /// name. A name the lab lacks is refused with the closest one it has, as the lab file's
    /// own references are (`diag::did_you_mean`).
    ///
    /// # Errors
    /// [`TargetError`]: what was not found, what the lab has instead.
    pub fn parse(text: &str, lab: &Lab) -> Result<Self, TargetError> {
        let syntax = || TargetError::Syntax { text: text.to_owned() };
        let vms: Vec<String> = lab.vms.keys().map(ToString::to_string).collect();
        let nets: Vec<String> = lab.networks.keys().map(ToString::to_string).collect();
        let lab_name = lab.name.to_string();
        let unknown_vm = |vm: &str| TargetError::UnknownVm {
            lab: lab_name.clone(),
            vm: vm.to_owned(),
            help: suggest(vm, &vms, "VMs in this lab", "VMs in this lab"),
        };
        let unknown_net = |n: &str| TargetError::UnknownNetwork {
            lab: lab_name.clone(),
            network: n.to_owned(),
            help: suggest(n, &nets, "networks in this lab", "networks in this lab"),
        };
        let (kind, rest) = match text.split_once(':') {
            Some((k, r)) if matches!(k, "vm" | "net" | "wire") => (Some(k), r),
            // A colon elsewhere (a MAC): not a form topo knows.
            Some(_) => return Err(syntax()),
            None => (None, text),
        };
        if kind == Some("wire") {
            let wires: Vec<String> = lab.wires.keys().map(ToString::to_string).collect();
            let w = lab.wires.keys().find(|w| w.as_str() == rest).ok_or_else(|| TargetError::UnknownWire {
                lab: lab_name.clone(),
                wire: rest.to_owned(),
                help: if wires.is_empty() {
                    "the lab has no wires (`links:`)".to_owned()
                } else {
                    suggest(rest, &wires, "wires in this lab", "wires in this lab")
                },
            })?;
            return Ok(CaptureTarget::Wire(w.clone()));
        }
        if kind == Some("net") {
            let net = lab.networks.keys().find(|n| n.as_str() == rest).ok_or_else(|| unknown_net(rest))?;
            return Ok(CaptureTarget::Network(net.clone()));
        }
        let (name, nic) = match rest.split_once('.') {
            Some((n, nic)) => (n, Some(nic)),
            None => (rest, None),
        };
        if name.is_empty() || nic.is_some_and(str::is_empty) {
            return Err(syntax());
        }
        let vm = lab.vms.values().find(|v| v.name.as_str() == name);
        let Some(vm) = vm else {
            // A plain name: a network when no VM has it.
            if kind.is_none() && nic.is_none() {
                if let Some(net) = lab.networks.keys().find(|n| n.as_str() == name) {
                    return Ok(CaptureTarget::Network(net.clone()));
                }
                let close = crate::diag::did_you_mean(name, vms.iter().chain(&nets).map(String::as_str));
                let known = format!("VMs: {}; networks: {}", vms.join(", "), nets.join(", "));
                return Err(TargetError::Unknown {
                    lab: lab_name.clone(),
                    name: name.to_owned(),
                    help: match close {
                        Some(c) => format!("did you mean `{c}`? {known}"),
                        None => known,
                    },
                });
            }
            return Err(unknown_vm(name));
        };
        if kind.is_none() && nic.is_none() && lab.networks.keys().any(|n| n.as_str() == name) {
            return Err(TargetError::Ambiguous { lab: lab_name, name: name.to_owned() });
        }
        let wire_ends = lab.wire_ends(&vm.name);
        let index = match nic {
            None if vm.nics.is_empty() && wire_ends.is_empty() => {
                return Err(TargetError::NoNics { vm: name.to_owned() });
            }
            None => 0,
            Some(label) => {
                let labels: Vec<String> = vm
                    .nics
                    .iter()
                    .map(|n| n.label())
                    .chain(wire_ends.iter().map(|(w, k)| nic_label(w.ends[*k].index)))
                    .collect();
                let Some(i) = labels.iter().position(|l| l == label) else {
                    return Err(TargetError::UnknownNic {
                        vm: name.to_owned(),
                        nic: label.to_owned(),
                        help: if labels.is_empty() {
                            "it has no NICs".to_owned()
                        } else {
                            suggest(label, &labels, "its NICs", "its NICs")
                        },
                    });
                };
                i
            }
        };
        Ok(CaptureTarget::Nic { vm: vm.name.clone(), nic: index })
    }
}

impl CaptureTarget {
    /// The host whose machine has the target's device: a VM's host for its NIC; for a
    /// network, host `on` when given, else the host that serves it (`host:`: where its
    /// gateway and DHCP are, and the bridge every frame between its hosts crosses, by their
    /// tunnels), or, for an external network, the first host with a VM on it.
    /// [`HostName::DEFAULT`] in a lab on one host.
    ///
    /// # Errors
    /// `--on` in a lab on one host, for a VM on another host, or naming a host the network
    /// is not on.
    pub fn host(&self, lab: &Lab, on: Option<&HostName>) -> Result<HostName, TargetError> {
        if on.is_some() && !lab.is_multi_host() {
            return Err(TargetError::OnWithoutHosts { lab: lab.name.to_string() });
        }
        match self {
            CaptureTarget::Nic { vm, .. } => {
                let host = lab.vms.get(vm).map(|v| v.host.clone()).unwrap_or_else(HostName::default_host);
                match on {
                    Some(h) if *h != host => Err(TargetError::OnForVm { vm: vm.to_string(), host: host.to_string() }),
                    _ => Ok(host),
                }
            }
            CaptureTarget::Wire(w) => {
                // Both ends are on one host (validation): its first end's VM's.
                let host = lab
                    .wires
                    .get(w)
                    .and_then(|w| lab.vms.get(&w.ends[0].vm))
                    .map(|v| v.host.clone())
                    .unwrap_or_else(HostName::default_host);
                match on {
                    Some(h) if *h != host => Err(TargetError::OnForVm { vm: w.to_string(), host: host.to_string() }),
                    _ => Ok(host),
                }
            }
            CaptureTarget::Network(name) => {
                let Some(net) = lab.networks.get(name) else { return Ok(HostName::default_host()) };
                if !lab.is_multi_host() {
                    return Ok(HostName::default_host());
                }
                let hosts = lab.network_hosts(net);
                let chosen = match (on, &net.kind) {
                    (Some(h), _) => Some(h.clone()),
                    (None, NetworkKind::Managed(_)) => Some(net.host.clone()),
                    (None, NetworkKind::External) => hosts.iter().next().cloned(),
                };
                match chosen {
                    Some(h) if hosts.contains(&h) => Ok(h),
                    h => Err(TargetError::NotOnHost {
                        network: name.to_string(),
                        host: h.map(|h| h.to_string()).unwrap_or_else(|| "any".into()),
                        known: hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Lab {
        let text = r#"
apiVersion: topo/v1
name: caplab
networks:
  lan: {mode: isolated, subnet: 10.9.0.0/24}
  wan: {mode: isolated, subnet: 10.8.0.0/24}
  both: {mode: isolated, subnet: 10.7.0.0/24}
vms:
  r1:
    boot: {kernel: /k}
    nics: [{network: lan}, {network: wan}]
  both:
    boot: {kernel: /k}
    nics: [{network: both}]
  bare:
    boot: {kernel: /k}
    nics: []
"#;
        let source = crate::lab::source::SourceFile::from_text(std::path::Path::new("lab.yaml"), text.to_owned());
        crate::lab::validate::load_with(&source, crate::lab::validate::Files::NotOpened).expect("a valid lab")
    }

    fn ok(text: &str) -> String {
        CaptureTarget::parse(text, &lab()).map(|t| t.to_string()).unwrap_or_else(|e| format!("error: {e}"))
    }

    /// Each form, and the target it names (shown as topo names it back).
    #[test]
    fn forms() {
        assert_eq!(ok("r1"), "r1.eth0");
        assert_eq!(ok("r1.eth1"), "r1.eth1");
        assert_eq!(ok("vm:r1.eth1"), "r1.eth1");
        assert_eq!(ok("vm:both"), "both.eth0");
        assert_eq!(ok("net:lan"), "net:lan");
        assert_eq!(ok("lan"), "net:lan");
        assert_eq!(ok("net:both"), "net:both");
    }

    /// What is refused, with the code and the help that says what to type instead.
    #[test]
    fn refusals() {
        let err = |t: &str| CaptureTarget::parse(t, &lab()).expect_err(t);
        let help = |e: &TargetError| {
            use miette::Diagnostic;
            e.help().map(|h| h.to_string()).unwrap_or_default()
        };
        let e = err("lann");
        assert!(matches!(e, TargetError::Unknown { .. }), "{e:?}");
        assert_eq!(help(&e), "did you mean `lan`? VMs: bare, both, r1; networks: both, lan, wan");
        assert_eq!(help(&err("zzz")), "VMs: bare, both, r1; networks: both, lan, wan");
        let e = err("r1.eth2");
        assert_eq!(help(&e), "did you mean `eth1`? its NICs: eth0, eth1");
        let e = err("r1.nic1");
        assert!(matches!(e, TargetError::UnknownNic { .. }), "{e:?}");
        let e = err("net:lam");
        assert_eq!(help(&e), "did you mean `lan`? networks in this lab: both, lan, wan");
        let e = err("vm:r3.eth0");
        assert!(matches!(e, TargetError::UnknownVm { .. }), "{e:?}");
        assert!(matches!(err("both"), TargetError::Ambiguous { .. }));
        assert!(matches!(err("bare"), TargetError::NoNics { .. }));
        let e = err("wire:r1-r2");
        assert!(matches!(e, TargetError::UnknownWire { .. }), "{e:?}");
        assert_eq!(help(&e), "the lab has no wires (`links:`)");
        for bad in ["r1.", ".eth0", "", "net:", "r1.52:54:00:00:00:01"] {
            assert!(matches!(err(bad), TargetError::Syntax { .. } | TargetError::UnknownNetwork { .. }), "{bad}");
        }
    }
}
