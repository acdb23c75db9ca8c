//! The tunnels of one host's share of a lab that spans hosts (`crate::lab::hosts`): each
//! stretched network's VXLAN device, planned like the other resources from what the host's
//! machine shows (`Observed::tunnels`), and the refusals that mirror the kernel's (a VNI one
//! device per host may carry, a source address the host must have).

use std::collections::BTreeSet;

use crate::diag::{Code, Problem};
use crate::host::observed::Observed;
use crate::host::tunnel::{ObservedTunnel, TunnelSpec};
use crate::lab::address::Address;
use crate::lab::hosts::{Tunnel, VXLAN_OVERHEAD, tunnel_alias_head};
use crate::lab::model::{Lab, NetworkName};

use super::change::{Action, Change, FieldChange, Op, Reason};
use super::fields::Field;

/// The tunnels of this share of the lab, as wanted ([`Lab::tunnels_on`] of its host).
fn wanted(lab: &Lab) -> Vec<Tunnel> {
    lab.share_host().map(|h| lab.tunnels_on(h)).unwrap_or_default()
}

/// The VXLAN devices on the host that this lab owns, as `(device, network)`: those whose
/// alias is this lab's tag for a network ([`crate::lab::hosts::tunnel_alias`]), in the lab file or not.
pub(super) fn owned(lab: &Lab, observed: &Observed) -> Vec<(String, NetworkName)> {
    let Some(tunnels) = &observed.tunnels else { return Vec::new() };
    let head = tunnel_alias_head(&lab.name, &lab.prefix);
    tunnels
        .values()
        .filter_map(|t| {
            let name = t.alias.as_deref()?.strip_prefix(head.as_str())?;
            let network = NetworkName::new(name).ok()?;
            Some((t.device.clone(), network))
        })
        .collect()
}

/// What the host must offer the share's tunnels: its machine reachable, the underlay
/// address its own, and each tunnel's device name and VNI free for this lab (the kernel
/// refuses a second VXLAN device with the same VNI and UDP port: drivers/net/vxlan/vxlan_core.c
/// `vxlan_vni_in_use`, "A VXLAN device with the specified VNI already exists").
pub(super) fn conflicts(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let wanted = wanted(lab);
    let Some(first) = wanted.first() else { return Vec::new() };
    let host = &first.host;
    let host_span = lab.hosts.get(host).map(|h| h.span).unwrap_or(lab.name_span);
    let Some(tunnels) = &observed.tunnels else {
        let nets: Vec<&str> = wanted.iter().map(|t| t.network.as_str()).collect();
        return vec![Problem::at(
            Code::TunnelUnreachable,
            host_span,
            format!(
                "network{} {} span{} hosts, and topo cannot reach host `{host}`'s machine to make the VXLAN tunnel there",
                if nets.len() == 1 { "" } else { "s" },
                nets.join(", "),
                if nets.len() == 1 { "s" } else { "" },
            ),
            "tunnels needed on this host",
            "reach the host over ssh (a qemu+ssh:// URI) or run topo on it: the tunnel is made with iproute2 on the \
             host itself (docs/multi-host.md)",
        )];
    };
    let mut out = Vec::new();
    if let Some(addrs) = &observed.host_addresses
        && !addrs.contains_key(&first.spec.local)
    {
        out.push(Problem::at(
            Code::UnderlayMissing,
            host_span,
            format!("host `{host}` has no address {}: its tunnels could not send from it", first.spec.local),
            "underlay not on this host",
            format!(
                "set `underlay:` to one of the host's addresses ({})",
                addrs.keys().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Every frame of the network goes out on the underlay's device inside an IPv4 packet
    // [`VXLAN_OVERHEAD`] bytes larger (outer IPv4, UDP, VXLAN, the inner Ethernet header): one
    // larger than the device's MTU is fragmented or dropped (RFC 7348 section 4.3: VTEPs
    // must not fragment VXLAN packets).
    let underlay = observed.host_addresses.as_ref().and_then(|a| a.get(&first.spec.local)).filter(|u| u.mtu > 0);
    if let Some(u) = underlay {
        for t in wanted.iter().filter(|t| t.spec.mtu + VXLAN_OVERHEAD > u.mtu) {
            let span = lab.networks.get(&t.network).map(|n| n.span).unwrap_or(lab.name_span);
            let fits = u.mtu.saturating_sub(VXLAN_OVERHEAD);
            out.push(Problem::at(
                Code::UnderlayMtu,
                span,
                format!(
                    "network `{}` has MTU {} and spans hosts, and on host `{host}` its tunnel sends from {} on device {} \
                     with MTU {}: a full-size frame with VXLAN's {VXLAN_OVERHEAD} bytes around it ({}) does not fit",
                    t.network,
                    t.spec.mtu,
                    first.spec.local,
                    u.device,
                    u.mtu,
                    t.spec.mtu + VXLAN_OVERHEAD,
                ),
                "too large for the underlay",
                format!(
                    "set `mtu: {fits}` (or less) on the network, or raise the MTU of {} on host `{host}` to at least {}",
                    u.device,
                    t.spec.mtu + VXLAN_OVERHEAD
                ),
            ));
        }
    }
    for t in &wanted {
        let span = lab.networks.get(&t.network).map(|n| n.span).unwrap_or(lab.name_span);
        for o in tunnels.values() {
            let same_name = o.device == t.spec.device;
            let same_vni = o.vni == t.spec.vni && o.dstport == t.spec.dstport;
            let ours = o.alias.is_none() && same_name || o.alias.as_deref() == Some(t.spec.alias.as_str());
            if (same_name || same_vni) && !ours {
                out.push(Problem::at(
                    Code::TunnelTaken,
                    span,
                    format!(
                        "network `{}` needs VXLAN device {} (VNI {}, UDP port {}) on host `{host}`, and device {} there \
                         holds {} ({})",
                        t.network,
                        t.spec.device,
                        t.spec.vni,
                        t.spec.dstport,
                        o.device,
                        if same_name { "that name" } else { "that VNI and port" },
                        o.alias.as_deref().map(|a| format!("alias `{a}`")).unwrap_or_else(|| "no alias".into()),
                    ),
                    "stretched across hosts",
                    "topo never changes a device it does not own: delete or renumber that device on the host, or rename \
                     the lab network (its VNI is derived from the lab and network names)",
                ));
            }
        }
    }
    out
}

/// The tunnel changes of this share: create what is missing, fix in place what differs in
/// peers, MTU, bridge or state, replace what differs in VNI, source or port, delete what the
/// lab owns and no longer wants.
///
/// A tunnel whose network's bridge the plan makes anew (a network created, replaced or
/// started again: the bridge is deleted and made again, and its ports with it) is ensured
/// again after it, so it is a port of the new bridge.
pub(super) fn plan(lab: &Lab, observed: &Observed, planned: &[Change]) -> Vec<Change> {
    let Some(tunnels) = &observed.tunnels else { return Vec::new() };
    let wanted = wanted(lab);
    let mut out = Vec::new();
    let keep: BTreeSet<&str> = wanted.iter().map(|t| t.spec.device.as_str()).collect();
    out.extend(owned(lab, observed).into_iter().filter(|(d, _)| !keep.contains(d.as_str())).map(deletion));
    for t in wanted {
        let spec = t.spec.clone();
        let address = Address::Tunnel(t.network.clone());
        let ensure = Op::EnsureTunnel { tunnel: spec.clone() };
        match tunnels.get(&t.spec.device) {
            None => {
                let fields = created(&spec);
                out.push(change(address, t.spec.device, Action::Create, vec![Reason::NotOnHost], fields, vec![ensure]))
            }
            Some(o) => {
                let fields = diff(&spec, o);
                if fields.is_empty() {
                    if bridge_renewed(lab, &t.network, planned) {
                        out.push(change(
                            address,
                            t.spec.device,
                            Action::Update,
                            vec![Reason::NetworkRenewed],
                            Vec::new(),
                            vec![ensure],
                        ));
                    }
                    continue;
                }
                let replace: Vec<Field> =
                    fields.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
                let (action, reasons, ops) = if replace.is_empty() {
                    let reason =
                        if fields.iter().all(|f| f.path == Field::Up) { Reason::Drift } else { Reason::LabFileChanged };
                    (Action::Update, vec![reason], vec![ensure])
                } else {
                    (
                        Action::Replace,
                        vec![Reason::RequiresReplace { fields: replace }],
                        vec![Op::DeleteTunnel { device: t.spec.device.clone() }, ensure],
                    )
                };
                out.push(change(address, t.spec.device, action, reasons, fields, ops));
            }
        }
    }
    out
}

/// Whether the plan makes the bridge of lab network `network` anew (creates, replaces or
/// starts the network).
fn bridge_renewed(lab: &Lab, network: &NetworkName, planned: &[Change]) -> bool {
    let Some(net) = lab.networks.get(network) else { return false };
    planned.iter().any(|c| {
        c.address == Address::Network(network.clone())
            && c.libvirt_name == net.libvirt_name.as_str()
            && c.ops.iter().any(|op| matches!(op, Op::StartNetwork))
    })
}

/// The deletion of every tunnel the lab owns on the host (`topo destroy`).
pub(super) fn deletions(lab: &Lab, observed: &Observed) -> Vec<Change> {
    owned(lab, observed).into_iter().map(deletion).collect()
}

fn deletion((device, network): (String, NetworkName)) -> Change {
    change(
        Address::Tunnel(network),
        device.clone(),
        Action::Delete,
        vec![Reason::NotInLabFile],
        Vec::new(),
        vec![Op::DeleteTunnel { device }],
    )
}

/// The fields a new tunnel shows.
fn created(spec: &TunnelSpec) -> Vec<FieldChange> {
    let peers = spec.peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    [
        (Field::Bridge, spec.bridge.clone()),
        (Field::Local, spec.local.to_string()),
        (Field::Mtu, spec.mtu.to_string()),
        (Field::Peers, peers),
        (Field::Vni, format!("{} port {}", spec.vni, spec.dstport)),
    ]
    .into_iter()
    .map(|(path, v)| FieldChange { path, before: None, after: Some(v), forces_replacement: false, restarts: false })
    .collect()
}

/// How the device on the host differs from `spec`: VNI, source and port force a new device
/// (the kernel fixes them at creation); peers, MTU, bridge and state change in place.
fn diff(spec: &TunnelSpec, o: &ObservedTunnel) -> Vec<FieldChange> {
    let join = |s: &BTreeSet<std::net::Ipv4Addr>| s.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let mut out = Vec::new();
    let mut field = |path: Field, before: String, after: String, forces: bool| {
        if before != after {
            out.push(FieldChange {
                path,
                before: Some(before),
                after: Some(after),
                forces_replacement: forces,
                restarts: false,
            });
        }
    };
    field(Field::Vni, o.vni.to_string(), spec.vni.to_string(), true);
    field(Field::Local, o.local.map(|a| a.to_string()).unwrap_or_else(|| "none".into()), spec.local.to_string(), true);
    field(Field::Peers, join(&o.peers), join(&spec.peers), false);
    field(Field::Mtu, o.mtu.to_string(), spec.mtu.to_string(), false);
    field(Field::Bridge, o.master.clone().unwrap_or_else(|| "none".into()), spec.bridge.clone(), false);
    field(Field::Up, o.up.to_string(), true.to_string(), false);
    // The port is part of the VNI's identity on the host; shown with the VNI.
    if o.dstport != spec.dstport {
        out.push(FieldChange {
            path: Field::Vni,
            before: Some(format!("{} port {}", o.vni, o.dstport)),
            after: Some(format!("{} port {}", spec.vni, spec.dstport)),
            forces_replacement: true,
            restarts: false,
        });
    }
    out
}

fn change(
    address: Address,
    device: String,
    action: Action,
    reasons: Vec<Reason>,
    fields: Vec<FieldChange>,
    ops: Vec<Op>,
) -> Change {
    Change { address, libvirt_name: device, action, reasons, fields, blast_radius: Vec::new(), after: Vec::new(), ops }
}
