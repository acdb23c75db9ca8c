//! `topo status` as a library function: every resource of the lab with its [`ResourceState`]
//! on the host, pending changes or drift from the planner, and each VM's addresses (proven by
//! a short ARP round, else leased or reserved). Rendered as a table or versioned JSON.

use std::fmt;

use serde::Serialize;

use crate::host::observed::{DomainState, Lease, Observed};
use crate::lab::address::Address;
use crate::lab::model::{Lab, NetworkKind};
use crate::lab::ownership::Ownership;
use crate::plan::{Action, Plan, Reason};
use crate::verify::{Family, NicState, VerifyReport};

/// The version of the `topo status --json` document.
pub const JSON_FORMAT_VERSION: &str = "1";

/// Where one resource of the lab stands on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceState {
    /// In the lab file, not on the host.
    Missing,
    /// An external network (read, never changed), active or not.
    External {
        active: bool,
    },
    /// An object of that name exists on the host but belongs to no lab or another one.
    Conflict,
    /// A lab network, running.
    Active,
    /// A lab network, defined but stopped.
    Inactive,
    Running,
    Paused,
    /// A VM, shut off.
    Stopped,
    /// A VM in another libvirt state (crashed, suspended by the host, shutting down).
    Other,
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceState::Missing => "missing",
            ResourceState::External { active: true } => "external, active",
            ResourceState::External { active: false } => "external, inactive",
            ResourceState::Conflict => "conflict (not owned by this lab)",
            ResourceState::Active => "active",
            ResourceState::Inactive => "inactive",
            ResourceState::Running => "running",
            ResourceState::Paused => "paused",
            ResourceState::Stopped => "stopped",
            ResourceState::Other => "other",
        })
    }
}

impl Serialize for ResourceState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One network or VM of the lab.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusResource {
    /// The host it is on, in a lab across hosts (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<crate::lab::model::HostName>,
    /// `network.NAME` or `vm.NAME`.
    pub address: Address,
    pub libvirt_name: String,
    pub state: ResourceState,
    /// The bridge; pending changes or drift with the fields concerned.
    pub detail: Option<String>,
    /// VMs only: one entry per NIC, in file order.
    pub addresses: Vec<StatusNic>,
}

/// A NIC's address as status knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusNic {
    pub nic: String,
    pub network: String,
    pub mac: String,
    /// Proven by ARP, else the newest lease, else the reservation.
    pub address: Option<String>,
    /// The address answered ARP from this NIC's MAC just now.
    pub verified: bool,
    /// On a network with `subnet6`: the NIC's SLAAC address (docs/addressing.md, section
    /// IPv6); `None` elsewhere.
    pub address6: Option<String>,
    /// `address6` answered a neighbour solicitation from this NIC's MAC just now.
    pub verified6: bool,
}

/// The whole status: networks (sorted by name), then VMs (sorted by name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub format_version: &'static str,
    pub lab: String,
    pub resources: Vec<StatusResource>,
}

/// Builds the status of `lab` from what the host has (`observed`), the plan against it (for
/// pending changes and drift; `None` when planning was refused), a verification report (`None`
/// when it could not run) and the current DHCP leases of the lab's networks. Pure.
pub fn status(
    lab: &Lab,
    observed: &Observed,
    plan: Option<&Plan>,
    report: Option<&VerifyReport>,
    leases: &[Lease],
) -> Status {
    let pending = |addr: &Address| -> Option<String> {
        let c = plan?.changes.iter().find(|c| c.address == *addr && c.action != Action::NoOp)?;
        let drift = c.reasons.contains(&Reason::Drift);
        let fields: Vec<_> = c.fields.iter().map(|f| f.path.as_str()).collect();
        Some(format!("{}: {}", if drift { "drifted" } else { "changes pending" }, fields.join(", ")))
    };
    let mut resources = Vec::new();
    for net in lab.networks.values() {
        let o = observed.networks.get(net.libvirt_name.as_str());
        let address = Address::Network(net.name.clone());
        let state = match (&net.kind, o) {
            (_, None) => ResourceState::Missing,
            (NetworkKind::External, Some(o)) => ResourceState::External { active: o.active },
            (NetworkKind::Managed(_), Some(o)) if o.ownership(lab) != Ownership::ThisLab => ResourceState::Conflict,
            (NetworkKind::Managed(_), Some(o)) => {
                if o.active {
                    ResourceState::Active
                } else {
                    ResourceState::Inactive
                }
            }
        };
        let bridge = o.and_then(|o| o.bridge_now()).map(|b| format!("bridge {b}"));
        let detail = match (bridge, pending(&address)) {
            (Some(d), Some(p)) => Some(format!("{d}; {p}")),
            (d, p) => d.or(p),
        };
        resources.push(StatusResource {
            host: None,
            address,
            libvirt_name: net.libvirt_name.to_string(),
            state,
            detail,
            addresses: vec![],
        });
    }
    for vm in lab.vms.values() {
        let o = observed.domains.get(vm.libvirt_name.as_str());
        let address = Address::Vm(vm.name.clone());
        let state = match o {
            None => ResourceState::Missing,
            Some(d) if d.ownership(lab) != Ownership::ThisLab => ResourceState::Conflict,
            Some(d) => match d.state {
                DomainState::Running => ResourceState::Running,
                DomainState::Paused => ResourceState::Paused,
                DomainState::Shutoff => ResourceState::Stopped,
                DomainState::Other => ResourceState::Other,
            },
        };
        let addresses = vm
            .nics
            .iter()
            .map(|nic| {
                let verified = report.and_then(|r| {
                    r.nics
                        .iter()
                        .find(|n| n.target.vm == vm.name && n.target.mac == nic.mac && n.target.family == Family::Ipv4)
                        .and_then(|n| match &n.state {
                            NicState::Verified { ip: std::net::IpAddr::V4(ip), .. } => Some(*ip),
                            _ => None,
                        })
                });
                let slaac = lab.networks.get(&nic.network).and_then(|n| match &n.kind {
                    NetworkKind::Managed(m) => m.subnet6.map(|p| crate::lab::ipv6::slaac_address(p, nic.mac)),
                    NetworkKind::External => None,
                });
                let verified6 = slaac.is_some()
                    && report.is_some_and(|r| {
                        r.nics.iter().any(|n| {
                            n.target.vm == vm.name
                                && n.target.mac == nic.mac
                                && n.target.family == Family::Ipv6
                                && matches!(n.state, NicState::Verified { .. })
                        })
                    });
                let network = lab.networks.get(&nic.network).map(|n| n.libvirt_name.as_str());
                let leased = leases
                    .iter()
                    .filter(|l| l.mac == nic.mac && network.is_none_or(|n| l.network == n))
                    .max_by_key(|l| l.expiry)
                    .map(|l| l.ip);
                StatusNic {
                    nic: nic.label(),
                    network: nic.network.to_string(),
                    mac: nic.mac.to_string(),
                    address: verified.or(leased).or(nic.ip).map(|a| a.to_string()),
                    verified: verified.is_some(),
                    address6: slaac.map(|a| a.to_string()),
                    verified6,
                }
            })
            .collect();
        resources.push(StatusResource {
            host: None,
            address: address.clone(),
            libvirt_name: vm.libvirt_name.to_string(),
            state,
            detail: pending(&address),
            addresses,
        });
    }
    Status { format_version: JSON_FORMAT_VERSION, lab: lab.name.to_string(), resources }
}

/// The least widths of `topo status`'s address and libvirt-name columns; a longer value
/// widens its whole column.
pub const STATUS_WIDTHS: [u16; 2] = [24, 28];

impl Status {
    /// The `topo status --json` document.
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: strings, booleans and options only.
        serde_json::to_value(self).expect("status JSON serialises")
    }

    /// The human view: one line per resource (address, libvirt name, state; the first two
    /// columns at least [`STATUS_WIDTHS`] wide), then each VM's addresses (`?` = not proven).
    pub fn table(&self) -> String {
        let across = self.resources.iter().any(|r| r.host.is_some());
        let rows = self.resources.iter().map(|r| {
            let detail = r.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default();
            let mut row = vec![r.address.to_string(), r.libvirt_name.clone(), format!("{}{detail}", r.state)];
            if across {
                row.insert(0, r.host.as_ref().map(ToString::to_string).unwrap_or_default());
            }
            row
        });
        let widths: &[u16] = if across { &[4, STATUS_WIDTHS[0], STATUS_WIDTHS[1]] } else { &STATUS_WIDTHS };
        let mut out = crate::table::columns(rows, 1, widths);
        let vms: Vec<&StatusResource> = self.resources.iter().filter(|r| matches!(r.address, Address::Vm(_))).collect();
        if !vms.is_empty() {
            out.push('\n');
            let mut unproven = false;
            for r in vms {
                let mut addrs: Vec<String> = r
                    .addresses
                    .iter()
                    .map(|a| match &a.address {
                        Some(ip) if a.verified => ip.clone(),
                        Some(ip) => {
                            unproven = true;
                            format!("{ip}?")
                        }
                        None => "-".into(),
                    })
                    .collect();
                // The IPv6 (SLAAC) addresses after the IPv4 ones, NICs in the same order.
                for a in &r.addresses {
                    match &a.address6 {
                        Some(ip) if a.verified6 => addrs.push(ip.clone()),
                        Some(ip) => {
                            unproven = true;
                            addrs.push(format!("{ip}?"));
                        }
                        None => {}
                    }
                }
                out.push_str(&format!("{} {}\n", r.address.name(), addrs.join(",")));
            }
            if unproven {
                out.push_str(
                    "\n(an address with `?` is leased, reserved or expected but did not answer ARP or NDP just now)\n",
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::host::observed::{ObservedDomain, ObservedMode, ObservedNetwork};
    use crate::lab::ownership::OwnerTag;
    use crate::verify::{Evidence, NicOutcome};

    const LAB: &str = "\
apiVersion: topo/v1
name: demo
networks:
  default:
    external: true
  lan:
    mode: isolated
    subnet: 10.0.0.0/24
    dhcp: true
vms:
  deb1:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: tests/fixtures/boot/vmlinuz}
    nics:
      - {network: lan, ip: 10.0.0.20, mac: 52:54:00:00:00:0a}
      - {network: lan, mac: 52:54:00:00:00:0b}
  deb2:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: tests/fixtures/boot/vmlinuz}
    nics: [{network: default, mac: 52:54:00:00:00:0c}]
  deb3:
    hypervisor: qemu
    memory: 128MiB
    boot: {kernel: tests/fixtures/boot/vmlinuz}
    nics: [{network: lan, mac: 52:54:00:00:00:0d}]
";

    fn network(name: &str, bridge: &str, owner: Option<&str>) -> ObservedNetwork {
        ObservedNetwork {
            name: name.into(),
            uuid: None,
            active: true,
            persistent: true,
            autostart: false,
            mode: ObservedMode::Known(crate::lab::model::NetworkMode::Isolated),
            bridge: Some(bridge.into()),
            live_bridge: Some(bridge.into()),
            stp: true,
            mac: None,
            ip: None,
            ip6: None,
            dhcp_ping: true,
            mtu: None,
            owner: owner.map(|l| OwnerTag {
                lab: l.into(),
                resource: "network.lan".into(),
                name: name.into(),
                spec_hash: "x".into(),
                ..OwnerTag::default()
            }),
        }
    }

    fn domain(name: &str, state: DomainState, owner: &str) -> ObservedDomain {
        ObservedDomain {
            name: name.into(),
            uuid: None,
            state,
            virt_type: "qemu".into(),
            memory_kib: 131072,
            vcpus: 1,
            kernel: None,
            initrd: None,
            cmdline: None,
            disks: vec![],
            backing: Vec::new(),
            chains_known: true,
            live_only: Vec::new(),
            snapshots: Vec::new(),
            interfaces: vec![],
            persistent: true,
            live: None,
            links: None,
            taps: Vec::new(),
            live_disks: None,
            seed: None,
            owner: Some(OwnerTag {
                lab: owner.into(),
                resource: format!("vm.{}", name.trim_start_matches("demo-")),
                name: name.into(),
                spec_hash: "x".into(),
                ..OwnerTag::default()
            }),
        }
    }

    #[test]
    fn status_as_users_see_it() {
        let source = crate::lab::source::SourceFile::from_text(Path::new("demo.yaml"), LAB.into());
        let lab = crate::lab::validate::load(&source).expect("valid lab");
        let mut observed = Observed::default();
        observed.networks.insert("demo-lan".into(), network("demo-lan", "virbr3", Some("demo")));
        observed.networks.insert("default".into(), network("default", "virbr0", None));
        observed.domains.insert("demo-deb1".into(), domain("demo-deb1", DomainState::Running, "demo"));
        observed.domains.insert("demo-deb2".into(), domain("demo-deb2", DomainState::Shutoff, "demo"));
        // deb3 is missing.
        let targets = crate::verify::targets(&lab, &observed, crate::verify::HostAccess::Local);
        let eth0 = targets[0].clone();
        let report = VerifyReport {
            nics: vec![NicOutcome {
                state: NicState::Verified {
                    ip: "10.0.0.20".parse().unwrap(),
                    evidence: Evidence { mac: eth0.mac, bridge: "virbr3".into(), ndp: false },
                    seconds: 0.1,
                    rtt_ms: None,
                },
                target: eth0,
            }],
            ready: Vec::new(),
        };
        let lease = |mac: &str, ip: &str, network: &str, expiry| Lease {
            network: network.into(),
            mac: mac.parse().unwrap(),
            ip: ip.parse().unwrap(),
            hostname: None,
            expiry,
        };
        let leases = [
            lease("52:54:00:00:00:0b", "10.0.0.101", "demo-lan", 10),
            lease("52:54:00:00:00:0b", "10.0.0.102", "demo-lan", 20),
            // The same MAC on another network is not this NIC's lease.
            lease("52:54:00:00:00:0b", "10.9.9.9", "elsewhere", 30),
        ];
        let s = status(&lab, &observed, None, Some(&report), &leases);
        insta::assert_snapshot!(s.table());
        insta::assert_json_snapshot!(s.to_json());
    }
}
