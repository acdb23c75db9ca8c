//! Planning one lab network: create, update, replace, release, delete, and the NICs that a
//! network change cuts off.

use std::collections::{BTreeMap, BTreeSet};

use super::change::render_failed;
use super::change::{Action, Change, Detached, FieldChange, NicPlug, Op, Reason};
use super::diff::{all_fields, creation, deletion, diff, drifted, owner_address, retag};
use super::vm::{interface_xml, wanted_netem};
use crate::diag::Problem;
use crate::host::observed::{DomainState, Observed, ObservedNetwork, Ownership};
use crate::lab::address::Address;
use crate::lab::model::{Lab, MacAddr, ManagedNetwork, Network, NetworkKind, Reservation};
use crate::plan::fields::{self, Field, Fields};

/// Whether the lab network `m`, observed as `o`, must be replaced (a field that cannot
/// change in place differs).
pub(super) fn is_replaced(m: &crate::lab::model::ManagedNetwork, o: &ObservedNetwork) -> bool {
    let d = fields::desired_network(m);
    diff(&d, &fields::observed_network(o, &d)).iter().any(|f| f.forces_replacement)
}

/// Whether the plan starts lab network `m` (libvirt name `name`): it is created, replaced,
/// or defined but not active.
pub(super) fn starts_network(m: &crate::lab::model::ManagedNetwork, name: &str, observed: &Observed) -> bool {
    observed.networks.get(name).is_none_or(|o| !o.active || is_replaced(m, o))
}

pub(super) fn delete_network(lab: &Lab, n: &ObservedNetwork, observed: &Observed) -> Change {
    let d = fields::observed_network(n, &Fields::new());
    let mut ops = Vec::new();
    if n.active {
        ops.push(Op::StopNetwork);
    }
    if n.persistent {
        ops.push(Op::UndefineNetwork);
    }
    let mut c = deletion(owner_address(n.owner.as_ref()), &n.name, all_fields(&d, false), ops);
    c.blast_radius = network_users(lab, &n.name, observed);
    c
}

/// Every domain with a NIC on `network`, running or not, owned or not: deleting the
/// network cuts the running ones off and leaves the others unable to start. (Those the same
/// plan deletes are left out afterwards: [`prune_deleted_users`].)
pub(super) fn network_users(lab: &Lab, network: &str, observed: &Observed) -> Vec<Detached> {
    let mut out: Vec<Detached> = observed
        .domains
        .values()
        .flat_map(|d| {
            let owned = d.ownership(lab) == Ownership::ThisLab;
            d.interfaces
                .iter()
                .filter(|i| i.network.as_deref() == Some(network))
                .filter_map(move |i| Some(Detached { domain: d.name.clone(), mac: i.mac?, reattached: false, owned }))
        })
        .collect();
    out.sort();
    out
}

/// An owned network the lab file now declares `external: true`: its owner tag is removed, so
/// topo no longer owns it; it is not stopped or changed otherwise.
pub(super) fn release_network(net: &Network, o: &ObservedNetwork) -> Change {
    Change {
        address: Address::Network(net.name.clone()),
        libvirt_name: o.name.clone(),
        action: Action::Update,
        reasons: vec![Reason::Released],
        fields: vec![FieldChange {
            path: Field::Owner,
            before: o.owner.as_ref().map(|t| format!("lab {}", t.lab)),
            after: Some("none (external)".into()),
            forces_replacement: false,
            restarts: false,
        }],
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops: vec![Op::ReleaseNetwork],
    }
}

/// The network XML to define: the lab's, keeping the UUID, the bridge libvirt chose and the
/// bridge MAC the network has. The bridge MAC is set at create (derived,
/// `MacAddr::derived_bridge`) and never compared or changed afterwards, like a computed
/// attribute in Terraform: a network defined by an older topo keeps the random one libvirt
/// gave it (plan's `bridge_mac` refusal checks NICs against the observed one).
///
/// # Errors
/// The XML cannot be rendered ([`render_failed`]).
pub(super) fn network_define(
    lab: &Lab,
    net: &Network,
    desired: &Fields,
    o: Option<&ObservedNetwork>,
) -> Result<Op, Problem> {
    let hash = fields::spec_hash(desired);
    let kept = crate::host::xml::Kept {
        uuid: o.and_then(|o| o.uuid.as_deref()),
        bridge: o.and_then(|o| o.bridge.as_deref()),
        mac: o.and_then(|o| o.mac),
    };
    let xml = crate::host::xml::network_xml_keeping(lab, net, &hash, kept)
        .map_err(|e| render_failed(net.span, &format!("the network XML of {}", who(net)), e))?;
    Ok(Op::DefineNetwork { xml: xml.xml })
}

/// `network.NAME (libvirt name)`, for messages.
fn who(net: &Network) -> String {
    format!("{} ({})", Address::Network(net.name.clone()), net.libvirt_name)
}

/// The change that brings lab network `net` to what the lab file asks, `None` when the host
/// already has it so, or when it is external (read only; checked in `find_conflicts`).
/// `replaced`: the libvirt names of the networks this plan replaces.
///
/// # Errors
/// The network's XML, a DHCP host entry or a re-plugged NIC's XML cannot be rendered
/// ([`render_failed`]): the plan is refused rather than planned without the step.
pub(super) fn plan_network(
    lab: &Lab,
    net: &Network,
    observed: &Observed,
    replaced: &BTreeSet<String>,
) -> Result<Option<Change>, Problem> {
    let NetworkKind::Managed(m) = &net.kind else { return Ok(None) };
    let address = Address::Network(net.name.clone());
    let desired = fields::desired_network(m);
    let o = observed.networks.get(net.libvirt_name.as_str());
    let define = network_define(lab, net, &desired, o)?;
    let Some(o) = o else {
        let mut ops = vec![define, Op::StartNetwork];
        if m.autostart {
            ops.push(Op::SetNetworkAutostart { on: true });
        }
        return Ok(Some(creation(address, net.libvirt_name.as_str(), &desired, ops)));
    };
    let obs = fields::observed_network(o, &desired);
    let mut changed = diff(&desired, &obs);
    let mut reasons = Vec::new();
    let mut config_changed = changed.iter().any(|f| f.path != Field::Active);
    if config_changed {
        reasons.push(if drifted(o.owner.as_ref(), &desired) { Reason::Drift } else { Reason::LabFileChanged });
    }
    if let Some((reason, field)) = retag(lab, o.owner.as_ref()) {
        // The define writes the new tag; nothing else changes for it.
        reasons.push(reason);
        changed.push(field);
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        config_changed = true;
    }
    if replaced.contains(net.libvirt_name.as_str()) {
        let forced: Vec<Field> = changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
        reasons.push(Reason::RequiresReplace { fields: forced });
        let (blast, ops) = replace_ops(lab, net, m, o, observed, define)?;
        return Ok(Some(Change {
            address,
            libvirt_name: net.libvirt_name.to_string(),
            action: Action::Replace,
            reasons,
            fields: changed.into_iter().filter(|f| f.path != Field::Active).collect(),
            blast_radius: blast,
            after: Vec::new(),
            ops,
        }));
    }
    let (blast, mut ops) = start_ops(lab, net, o, observed, &mut reasons)?;
    if m.autostart != o.autostart {
        ops.push(Op::SetNetworkAutostart { on: m.autostart });
    }
    ops.extend(dhcp_host_ops(net, m, o)?);
    if ops.is_empty() && !config_changed {
        return Ok(None);
    }
    // Drifted or changed config that can be fixed in place is rewritten too, so the
    // metadata's spec hash matches the file again. Last: the DHCP host updates change the
    // live network and the persistent config together and must find the config as it was
    // observed (libvirt refuses to delete an entry the config no longer has); the final
    // define then only refreshes the persistent config, which already holds them.
    if config_changed {
        ops.push(define);
    }
    Ok(Some(Change {
        address,
        libvirt_name: net.libvirt_name.to_string(),
        action: Action::Update,
        reasons,
        fields: changed,
        blast_radius: blast,
        after: Vec::new(),
        ops,
    }))
}

/// The ops that replace network `net` (observed as `o`) with `define`: stopped, defined
/// again, started, and the lab's NICs it detached plugged in again; with the NICs it
/// detaches.
///
/// # Errors
/// A re-plugged NIC's XML cannot be rendered.
fn replace_ops(
    lab: &Lab,
    net: &Network,
    m: &ManagedNetwork,
    o: &ObservedNetwork,
    observed: &Observed,
    define: Op,
) -> Result<(Vec<Detached>, Vec<Op>), Problem> {
    let blast = blast_radius(lab, net, observed);
    let mut ops = Vec::new();
    if o.active {
        ops.push(Op::StopNetwork);
    }
    ops.push(define);
    ops.push(Op::StartNetwork);
    if m.autostart != o.autostart {
        ops.push(Op::SetNetworkAutostart { on: m.autostart });
    }
    let reattach = replugs(lab, &blast)?;
    if !reattach.is_empty() {
        ops.push(Op::ReattachNics { nics: reattach });
    }
    Ok((blast, ops))
}

/// The start of network `net` when it is defined but not active, with the NICs of running
/// domains that were on it when it stopped: they lost their link, and starting it again
/// does not plug them back in, so the lab's are plugged in again. Nothing for an active one.
///
/// # Errors
/// A re-plugged NIC's XML cannot be rendered.
fn start_ops(
    lab: &Lab,
    net: &Network,
    o: &ObservedNetwork,
    observed: &Observed,
    reasons: &mut Vec<Reason>,
) -> Result<(Vec<Detached>, Vec<Op>), Problem> {
    if o.active {
        return Ok((Vec::new(), Vec::new()));
    }
    reasons.push(Reason::NotActive);
    let mut ops = vec![Op::StartNetwork];
    let blast = blast_radius(lab, net, observed);
    let reattach = replugs(lab, &blast)?;
    if !reattach.is_empty() {
        ops.push(Op::ReattachNics { nics: reattach });
    }
    Ok((blast, ops))
}

/// The DHCP host entries of network `net` (observed as `o`) to delete and to add so that
/// they are the lab file's reservations: an entry that differs is deleted, then added.
///
/// # Errors
/// An entry's XML cannot be rendered.
fn dhcp_host_ops(net: &Network, m: &ManagedNetwork, o: &ObservedNetwork) -> Result<Vec<Op>, Problem> {
    let render = |r: &Reservation| {
        crate::host::xml::dhcp_host_xml(r)
            .map_err(|e| render_failed(net.span, &format!("the DHCP host entry {} of {}", r.mac, who(net)), e))
    };
    let mut ops = Vec::new();
    let observed_hosts: BTreeMap<MacAddr, &crate::host::observed::ObservedHost> =
        o.ip.iter().flat_map(|ip| ip.hosts.iter().map(|h| (h.mac, h))).collect();
    for (mac, h) in &observed_hosts {
        let keep = m.reservations.get(mac).is_some_and(|r| same_host(r, h));
        if !keep {
            let r = Reservation { mac: *mac, ip: h.ip, host: h.name.clone().unwrap_or_default() };
            ops.push(Op::DeleteDhcpHost { mac: *mac, ip: h.ip, host: h.name.clone(), xml: render(&r)? });
        }
    }
    for (mac, r) in &m.reservations {
        let have = observed_hosts.get(mac).is_some_and(|h| same_host(r, h));
        if !have {
            ops.push(Op::AddDhcpHost { mac: *mac, ip: r.ip, host: r.host.clone(), xml: render(r)? });
        }
    }
    Ok(ops)
}

pub(super) fn same_host(r: &Reservation, h: &crate::host::observed::ObservedHost) -> bool {
    r.ip == h.ip && h.name.as_deref() == Some(r.host.as_str())
}

/// The NICs of `blast` that topo plugs back in, with their interface XML.
///
/// # Errors
/// A NIC's XML cannot be rendered.
pub(super) fn replugs(lab: &Lab, blast: &[Detached]) -> Result<Vec<NicPlug>, Problem> {
    let mut out = Vec::new();
    for d in blast.iter().filter(|d| d.reattached) {
        let Some(vm) = lab.vms.values().find(|v| v.libvirt_name == d.domain) else { continue };
        let Some(nic) = vm.nics.iter().find(|n| n.mac == d.mac) else { continue };
        let xml = interface_xml(lab, vm, nic)?;
        out.push(NicPlug { domain: d.domain.clone(), mac: d.mac, xml, netem: wanted_netem(nic) });
    }
    Ok(out)
}

/// Running domains with a NIC on `net`: replacing the network detaches them.
pub(super) fn blast_radius(lab: &Lab, net: &Network, observed: &Observed) -> Vec<Detached> {
    let mut out = Vec::new();
    for d in observed.domains.values() {
        if d.state != DomainState::Running {
            continue;
        }
        let ours = d.ownership(lab) == Ownership::ThisLab && lab.vms.values().any(|v| v.libvirt_name == d.name);
        for i in &d.interfaces {
            if let (Some(mac), Some(n)) = (i.mac, i.network.as_deref())
                && n == net.libvirt_name.as_str()
            {
                out.push(Detached {
                    domain: d.name.clone(),
                    mac,
                    reattached: ours,
                    owned: d.ownership(lab) == Ownership::ThisLab,
                });
            }
        }
    }
    out.sort();
    out
}
