//! The planner: a pure function from (desired lab, observed host) to a `Plan`, and the
//! refusals found on the way. No I/O happens here.

pub mod fields;
pub mod json;
pub mod render;
pub mod saved;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use miette::NamedSource;
use serde::Serialize;

use crate::diag::{Code, Problem};
use crate::graph::{GraphError, LabGraph, Node};
use crate::model::{Lab, MacAddr, Network, NetworkKind, Reservation, Vm};
use crate::observed::{DomainState, Observed, ObservedDomain, ObservedNetwork, Ownership};
use fields::{FieldClass, Fields};

/// What will happen to one resource. A closed vocabulary: renderers and apply match it
/// exhaustively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    NoOp,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
        }
    }
}

/// Why a change is planned. Every change carries at least one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// In the lab file, not on the host.
    NotOnHost,
    /// Owned by this lab on the host, no longer in the lab file.
    NotInLabFile,
    /// The lab file asks for other values than the host has.
    LabFileChanged,
    /// The host differs from what topo last wrote, and the lab file did not change:
    /// someone changed it outside topo.
    Drift,
    /// These fields cannot change in place.
    RequiresReplace { fields: Vec<String> },
    /// The network is defined but not active (after a host reboot, or stopped by hand).
    NotActive,
    /// The VM is defined but not running.
    NotRunning,
    /// The VM's config changes take effect only after a restart.
    RequiresRestart { fields: Vec<String> },
    /// `topo destroy` removes everything the lab owns.
    DestroyRequested,
}

impl Reason {
    /// One line for the human plan.
    pub fn describe(&self) -> String {
        match self {
            Reason::NotOnHost => "it is in the lab file but not on the host".into(),
            Reason::NotInLabFile => "it is owned by this lab but no longer in the lab file".into(),
            Reason::LabFileChanged => "the lab file changed".into(),
            Reason::Drift => "changed outside topo since the last apply (drift)".into(),
            Reason::RequiresReplace { fields } => {
                format!("{} cannot change in place", fields.join(", "))
            }
            Reason::NotActive => "the network is defined but not active".into(),
            Reason::NotRunning => "the VM is defined but not running".into(),
            Reason::RequiresRestart { fields } => {
                let verb = if fields.len() == 1 { "takes" } else { "take" };
                format!("{} {verb} effect after a restart; the VM will be restarted", fields.join(", "))
            }
            Reason::DestroyRequested => "topo destroy removes everything the lab owns".into(),
        }
    }
}

/// One field's difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub forces_replacement: bool,
    /// True when the change needs the VM restarted.
    pub restarts: bool,
}

/// A NIC of a running domain detached by a network replacement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Detached {
    pub domain: String,
    pub mac: MacAddr,
    /// Whether topo re-attaches it (only domains this lab owns and keeps).
    pub reattached: bool,
}

/// The libvirt operations of one change, in order. A closed vocabulary executed by apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    DefineNetwork,
    StartNetwork,
    SetNetworkAutostart {
        on: bool,
    },
    AddDhcpHost {
        mac: MacAddr,
        ip: std::net::Ipv4Addr,
        host: String,
    },
    DeleteDhcpHost {
        mac: MacAddr,
        ip: std::net::Ipv4Addr,
        host: Option<String>,
    },
    StopNetwork,
    UndefineNetwork,
    /// Re-plug NICs of running domains after their network was restarted.
    ReattachNics {
        nics: Vec<Detached>,
    },
    CreateDisk,
    DefineDomain,
    StartDomain,
    /// Graceful shutdown with a timeout, then forced off.
    StopDomain,
    AttachNic {
        mac: MacAddr,
    },
    DetachNic {
        mac: MacAddr,
        network: String,
    },
    UndefineDomain,
    DeleteDisk,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub address: String,
    pub libvirt_name: String,
    pub action: Action,
    pub reasons: Vec<Reason>,
    pub fields: Vec<FieldChange>,
    /// For a network replacement: the NICs of running domains it detaches. For the start
    /// of an inactive network: the NICs of running domains that lost their link when it
    /// stopped.
    pub blast_radius: Vec<Detached>,
    pub ops: Vec<Op>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
}

/// The whole plan: changes in execution order (deletions of VMs, then networks, then
/// creations and updates in dependency order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub lab: String,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::NoOp => {}
            }
        }
        s
    }
    /// True when applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::NoOp)
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("lab {lab} conflicts with what is on {uri}: {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    #[diagnostic(code(topo::plan::refused), help("nothing was changed; fix the lab file or the host and plan again"))]
    Refused {
        lab: String,
        uri: String,
        /// The lab file, which the problems point into.
        #[source_code]
        src: Arc<NamedSource<String>>,
        #[related]
        problems: Vec<Problem>,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
}

/// Plans `lab` against `observed`. Pure: reads its arguments only. `uri` is for messages.
pub fn plan(lab: &Lab, observed: &Observed, uri: &str) -> Result<Plan, PlanError> {
    let graph = LabGraph::build(lab)?;
    let conflicts = find_conflicts(lab, observed);
    if !conflicts.is_empty() {
        return Err(PlanError::Refused {
            lab: lab.name.to_string(),
            uri: uri.to_string(),
            src: Arc::new(lab.source.named_source()),
            problems: conflicts,
        });
    }
    let lab_name = lab.name.as_str();
    let mut deletes = Vec::new();
    // Owned objects no longer in the file: VMs first, then networks (reverse dependency).
    let desired_domains: BTreeSet<&str> = lab.vms.values().map(|v| v.libvirt_name.as_str()).collect();
    let desired_networks: BTreeSet<&str> = lab
        .networks
        .values()
        .filter(|n| matches!(n.kind, NetworkKind::Managed(_)))
        .map(|n| n.libvirt_name.as_str())
        .collect();
    for d in observed.domains.values() {
        if Ownership::of(d.owner.as_ref(), lab_name) == Ownership::ThisLab && !desired_domains.contains(d.name.as_str())
        {
            deletes.push(delete_domain(lab, d));
        }
    }
    for n in observed.networks.values() {
        if Ownership::of(n.owner.as_ref(), lab_name) == Ownership::ThisLab
            && !desired_networks.contains(n.name.as_str())
        {
            deletes.push(delete_network(n));
        }
    }

    let replaced_networks: BTreeSet<String> = lab
        .networks
        .values()
        .filter_map(|n| match (&n.kind, observed.networks.get(&n.libvirt_name)) {
            (NetworkKind::Managed(m), Some(o)) => {
                let d = fields::desired_network(m);
                let ob = fields::observed_network(o, &d);
                diff(&d, &ob).iter().any(|f| f.forces_replacement).then(|| n.libvirt_name.clone())
            }
            _ => None,
        })
        .collect();

    let mut changes = deletes;
    for node in graph.create_order() {
        let change = match node {
            Node::Network(name) => match lab.networks.get(name) {
                Some(net) => plan_network(lab, net, observed, &replaced_networks),
                None => continue,
            },
            Node::Vm(name) => match lab.vms.get(name) {
                Some(vm) => plan_vm(lab, vm, observed),
                None => continue,
            },
        };
        if let Some(c) = change {
            changes.push(c);
        }
    }
    Ok(Plan { lab: lab.name.to_string(), changes })
}

/// The destroy plan: every object this lab owns on the host, whether or not it is still in
/// the lab file; VMs first, then networks. Objects in the file go in the graph's
/// `delete_order` (exactly the reverse of creation); owned objects no longer in the file go
/// first within their kind, by name. Pure, like `plan`.
pub fn plan_destroy(lab: &Lab, observed: &Observed) -> Plan {
    let lab_name = lab.name.as_str();
    // Position of each address in the reverse creation order; a lab whose graph cannot be
    // built (a cycle) keeps name order.
    let rank: BTreeMap<String, usize> = LabGraph::build(lab)
        .map(|g| g.delete_order().iter().enumerate().map(|(i, n)| (n.address(), i + 1)).collect())
        .unwrap_or_default();
    let by_rank = |c: &Change| rank.get(&c.address).copied().unwrap_or(0);
    let mut changes: Vec<Change> = observed
        .domains
        .values()
        .filter(|d| Ownership::of(d.owner.as_ref(), lab_name) == Ownership::ThisLab)
        .map(|d| delete_domain(lab, d))
        .collect();
    changes.sort_by_key(by_rank); // stable: ties (not in the file) stay in name order
    let mut networks: Vec<Change> = observed
        .networks
        .values()
        .filter(|n| Ownership::of(n.owner.as_ref(), lab_name) == Ownership::ThisLab)
        .map(delete_network)
        .collect();
    networks.sort_by_key(by_rank);
    changes.extend(networks);
    for c in &mut changes {
        if lab_has(lab, &c.address) {
            c.reasons = vec![Reason::DestroyRequested];
        }
    }
    Plan { lab: lab.name.to_string(), changes }
}

fn lab_has(lab: &Lab, address: &str) -> bool {
    match address.split_once('.') {
        Some(("network", n)) => lab.networks.keys().any(|k| k.as_str() == n),
        Some(("vm", n)) => lab.vms.keys().any(|k| k.as_str() == n),
        _ => false,
    }
}

fn diff(desired: &Fields, observed: &Fields) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = desired.keys().chain(observed.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let d = desired.get(k);
            let o = observed.get(k);
            if d.map(|v| &v.value) == o.map(|v| &v.value) {
                return None;
            }
            let class = d.or(o).map(|v| v.class).unwrap_or(FieldClass::InPlace);
            Some(FieldChange {
                path: k.clone(),
                before: o.map(|v| v.value.clone()),
                after: d.map(|v| v.value.clone()),
                forces_replacement: class == FieldClass::Replace,
                restarts: class == FieldClass::Restart,
            })
        })
        .collect()
}

fn all_fields(f: &Fields, created: bool) -> Vec<FieldChange> {
    f.iter()
        .filter(|(_, v)| v.class != FieldClass::State)
        .map(|(k, v)| FieldChange {
            path: k.clone(),
            before: (!created).then(|| v.value.clone()),
            after: created.then(|| v.value.clone()),
            forces_replacement: false,
            restarts: false,
        })
        .collect()
}

/// A change that creates an object: every desired field is new.
fn creation(address: String, libvirt_name: &str, desired: &Fields, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Create,
        reasons: vec![Reason::NotOnHost],
        fields: all_fields(desired, true),
        blast_radius: Vec::new(),
        ops,
    }
}

fn delete_network(n: &ObservedNetwork) -> Change {
    let d = fields::observed_network(n, &Fields::new());
    let mut ops = Vec::new();
    if n.active {
        ops.push(Op::StopNetwork);
    }
    if n.persistent {
        ops.push(Op::UndefineNetwork);
    }
    deletion(owner_address(n.owner.as_ref(), "network", &n.name), &n.name, all_fields(&d, false), ops)
}

/// A change that deletes an owned object no longer in the lab file.
fn deletion(address: String, libvirt_name: &str, fields: Vec<FieldChange>, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Delete,
        reasons: vec![Reason::NotInLabFile],
        fields,
        blast_radius: Vec::new(),
        ops,
    }
}

fn delete_domain(lab: &Lab, d: &ObservedDomain) -> Change {
    // What is destroyed, as the host has it (shown like a created VM's fields).
    let fields = all_fields(&fields::observed_vm(lab, d, &Fields::new()), false);
    let mut ops = Vec::new();
    if d.state != DomainState::Shutoff {
        ops.push(Op::StopDomain);
    }
    ops.push(Op::UndefineDomain);
    ops.push(Op::DeleteDisk);
    deletion(owner_address(d.owner.as_ref(), "vm", &d.name), &d.name, fields, ops)
}

fn owner_address(owner: Option<&crate::observed::OwnerTag>, kind: &str, name: &str) -> String {
    owner.map(|t| t.resource.clone()).unwrap_or_else(|| format!("{kind}.{name}"))
}

/// Whether the host differs from the last apply while the file did not change.
fn drifted(owner: Option<&crate::observed::OwnerTag>, desired: &Fields) -> bool {
    owner.is_some_and(|t| t.spec_hash == fields::spec_hash(desired))
}

fn plan_network(lab: &Lab, net: &Network, observed: &Observed, replaced: &BTreeSet<String>) -> Option<Change> {
    let NetworkKind::Managed(m) = &net.kind else {
        return None; // external: read only, checked in find_conflicts
    };
    let address = format!("network.{}", net.name);
    let desired = fields::desired_network(m);
    let Some(o) = observed.networks.get(&net.libvirt_name) else {
        let mut ops = vec![Op::DefineNetwork, Op::StartNetwork];
        if m.autostart {
            ops.push(Op::SetNetworkAutostart { on: true });
        }
        return Some(creation(address, &net.libvirt_name, &desired, ops));
    };
    let obs = fields::observed_network(o, &desired);
    let changed = diff(&desired, &obs);
    let mut reasons = Vec::new();
    let config_changed = changed.iter().any(|f| f.path != "active");
    if config_changed {
        reasons.push(if drifted(o.owner.as_ref(), &desired) { Reason::Drift } else { Reason::LabFileChanged });
    }
    if replaced.contains(&net.libvirt_name) {
        let forced: Vec<String> = changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
        reasons.push(Reason::RequiresReplace { fields: forced });
        let blast = blast_radius(lab, net, observed);
        let mut ops = Vec::new();
        if o.active {
            ops.push(Op::StopNetwork);
        }
        ops.push(Op::DefineNetwork);
        ops.push(Op::StartNetwork);
        if m.autostart != o.autostart {
            ops.push(Op::SetNetworkAutostart { on: m.autostart });
        }
        let reattach: Vec<Detached> = blast.iter().filter(|d| d.reattached).cloned().collect();
        if !reattach.is_empty() {
            ops.push(Op::ReattachNics { nics: reattach });
        }
        return Some(Change {
            address,
            libvirt_name: net.libvirt_name.clone(),
            action: Action::Replace,
            reasons,
            fields: changed.into_iter().filter(|f| f.path != "active").collect(),
            blast_radius: blast,
            ops,
        });
    }
    let mut ops = Vec::new();
    let mut blast = Vec::new();
    if !o.active {
        reasons.push(Reason::NotActive);
        ops.push(Op::StartNetwork);
        // Running domains whose NICs were on the network when it stopped lost their link;
        // starting it again does not plug them back in.
        blast = blast_radius(lab, net, observed);
        let reattach: Vec<Detached> = blast.iter().filter(|d| d.reattached).cloned().collect();
        if !reattach.is_empty() {
            ops.push(Op::ReattachNics { nics: reattach });
        }
    }
    if m.autostart != o.autostart {
        ops.push(Op::SetNetworkAutostart { on: m.autostart });
    }
    let observed_hosts: BTreeMap<MacAddr, &crate::observed::ObservedHost> =
        o.ip.iter().flat_map(|ip| ip.hosts.iter().map(|h| (h.mac, h))).collect();
    for (mac, h) in &observed_hosts {
        let keep = m.reservations.get(mac).is_some_and(|r| same_host(r, h));
        if !keep {
            ops.push(Op::DeleteDhcpHost { mac: *mac, ip: h.ip, host: h.name.clone() });
        }
    }
    for (mac, r) in &m.reservations {
        let have = observed_hosts.get(mac).is_some_and(|h| same_host(r, h));
        if !have {
            ops.push(Op::AddDhcpHost { mac: *mac, ip: r.ip, host: r.host.clone() });
        }
    }
    if ops.is_empty() {
        return None;
    }
    // Drifted or changed config that can be fixed in place is rewritten too, so the
    // metadata's spec hash matches the file again. Last: the DHCP host updates change the
    // live network and the persistent config together and must find the config as it was
    // observed (libvirt refuses to delete an entry the config no longer has); the final
    // define then only refreshes the persistent config, which already holds them.
    if config_changed {
        ops.push(Op::DefineNetwork);
    }
    Some(Change {
        address,
        libvirt_name: net.libvirt_name.clone(),
        action: Action::Update,
        reasons,
        fields: changed,
        blast_radius: blast,
        ops,
    })
}

fn same_host(r: &Reservation, h: &crate::observed::ObservedHost) -> bool {
    r.ip == h.ip && h.name.as_deref() == Some(r.host.as_str())
}

/// Running domains with a NIC on `net`: replacing the network detaches them.
fn blast_radius(lab: &Lab, net: &Network, observed: &Observed) -> Vec<Detached> {
    let mut out = Vec::new();
    for d in observed.domains.values() {
        if d.state != DomainState::Running {
            continue;
        }
        let ours = Ownership::of(d.owner.as_ref(), lab.name.as_str()) == Ownership::ThisLab
            && lab.vms.values().any(|v| v.libvirt_name == d.name);
        for i in &d.interfaces {
            if let (Some(mac), Some(n)) = (i.mac, i.network.as_deref())
                && n == net.libvirt_name
            {
                out.push(Detached { domain: d.name.clone(), mac, reattached: ours });
            }
        }
    }
    out.sort();
    out
}

fn plan_vm(lab: &Lab, vm: &Vm, observed: &Observed) -> Option<Change> {
    let address = format!("vm.{}", vm.name);
    let desired = fields::desired_vm(vm);
    let Some(o) = observed.domains.get(&vm.libvirt_name) else {
        let mut ops = Vec::new();
        if vm.disk.is_some() {
            ops.push(Op::CreateDisk);
        }
        ops.extend([Op::DefineDomain, Op::StartDomain]);
        return Some(creation(address, &vm.libvirt_name, &desired, ops));
    };
    let obs = fields::observed_vm(lab, o, &desired);
    let changed = diff(&desired, &obs);
    let config_changed = changed.iter().any(|f| f.path != "state");
    let mut reasons = Vec::new();
    if config_changed {
        reasons.push(if drifted(o.owner.as_ref(), &desired) { Reason::Drift } else { Reason::LabFileChanged });
    }
    let forced: Vec<String> = changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
    if !forced.is_empty() {
        reasons.push(Reason::RequiresReplace { fields: forced });
        let mut ops = Vec::new();
        if o.state != DomainState::Shutoff {
            ops.push(Op::StopDomain);
        }
        ops.extend([Op::UndefineDomain, Op::DeleteDisk]);
        if vm.disk.is_some() {
            ops.push(Op::CreateDisk);
        }
        ops.extend([Op::DefineDomain, Op::StartDomain]);
        return Some(Change {
            address,
            libvirt_name: vm.libvirt_name.clone(),
            action: Action::Replace,
            reasons,
            fields: changed.into_iter().filter(|f| f.path != "state").collect(),
            blast_radius: Vec::new(),
            ops,
        });
    }
    let running = o.state == DomainState::Running;
    let restart: Vec<String> = changed.iter().filter(|f| f.restarts).map(|f| f.path.clone()).collect();
    let mut ops = Vec::new();
    // NICs: hot-plug by MAC. A NIC whose network changed is unplugged and plugged again.
    let observed_nics: BTreeMap<MacAddr, Option<&str>> =
        o.interfaces.iter().filter_map(|i| Some((i.mac?, i.network.as_deref()))).collect();
    for (mac, net) in &observed_nics {
        let want = vm.nics.iter().find(|n| n.mac == *mac).and_then(|n| lab.networks.get(&n.network));
        if want.map(|w| w.libvirt_name.as_str()) != *net {
            ops.push(Op::DetachNic { mac: *mac, network: net.unwrap_or_default().to_string() });
        }
    }
    for nic in &vm.nics {
        let want = lab.networks.get(&nic.network).map(|w| w.libvirt_name.as_str());
        if observed_nics.get(&nic.mac).copied().flatten() != want {
            ops.push(Op::AttachNic { mac: nic.mac });
        }
    }
    if !restart.is_empty() {
        reasons.push(Reason::RequiresRestart { fields: restart });
        ops.push(Op::DefineDomain);
        if running {
            ops.push(Op::StopDomain);
        }
        ops.push(Op::StartDomain);
    } else if config_changed {
        // Rewrite the config so the metadata's spec hash matches the file again.
        ops.push(Op::DefineDomain);
    }
    if !running && !ops.contains(&Op::StartDomain) {
        reasons.push(Reason::NotRunning);
        ops.push(Op::StartDomain);
    }
    if ops.is_empty() {
        return None;
    }
    Some(Change {
        address,
        libvirt_name: vm.libvirt_name.clone(),
        action: Action::Update,
        reasons,
        fields: changed,
        blast_radius: Vec::new(),
        ops,
    })
}

/// Everything that stops the plan before anything is touched, all at once.
fn find_conflicts(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let lab_name = lab.name.as_str();
    let mut out = Vec::new();
    let conflict = Problem::at;
    let owner_text = |o: Option<&crate::observed::OwnerTag>| match o {
        Some(t) => format!("owned by topo lab `{}`", t.lab),
        None => "not created by topo".to_string(),
    };
    for net in lab.networks.values() {
        let on_host = observed.networks.get(&net.libvirt_name);
        match (&net.kind, on_host) {
            (NetworkKind::External, None) => out.push(conflict(
                Code::ExternalMissing,
                net.span,
                format!("external network `{}` does not exist on the host", net.libvirt_name),
                "declared external here",
                format!(
                    "create and start it first (virsh net-define, net-start {0}), or declare it as a lab network with `mode` and `subnet`",
                    net.libvirt_name
                ),
            )),
            (NetworkKind::External, Some(o)) if !o.active => out.push(conflict(
                Code::ExternalInactive,
                net.span,
                format!("external network `{}` exists but is not active", net.libvirt_name),
                "declared external here",
                format!("start it with `virsh net-start {}`; topo never changes external networks", net.libvirt_name),
            )),
            (NetworkKind::External, Some(_)) => {}
            (NetworkKind::Managed(_), Some(o)) if Ownership::of(o.owner.as_ref(), lab_name) != Ownership::ThisLab => {
                out.push(conflict(
                    Code::NetworkNameTaken,
                    net.span,
                    format!(
                        "network name `{}` is already taken on the host by a network this lab does not own ({})",
                        net.libvirt_name,
                        owner_text(o.owner.as_ref())
                    ),
                    "this network would be created as that name",
                    "rename the network or set another `prefix:`; to use the existing network, declare it with `external: true`. topo never adopts or overwrites objects it did not create".into(),
                ));
            }
            (NetworkKind::Managed(m), _) => {
                for other in observed.networks.values() {
                    if Ownership::of(other.owner.as_ref(), lab_name) == Ownership::ThisLab {
                        continue; // the lab's own networks are updated, replaced or deleted first
                    }
                    if let (Some(subnet), Some(ip)) = (m.subnet, &other.ip)
                        && let Ok(theirs) = ipnetwork::Ipv4Network::new(ip.address, ip.prefix)
                        && subnet.overlaps(theirs)
                    {
                        out.push(conflict(
                            Code::HostSubnetOverlap,
                            net.span,
                            format!(
                                "subnet {subnet} of network `{}` overlaps network `{}` on the host ({}/{}, {})",
                                net.name,
                                other.name,
                                ip.address,
                                ip.prefix,
                                owner_text(other.owner.as_ref())
                            ),
                            "this network",
                            "pick a subnet that no network on the host uses (see `virsh net-list --all` and `virsh net-dumpxml`)".into(),
                        ));
                    }
                    if let (Some(b), Some(theirs)) = (&m.bridge, &other.bridge)
                        && b.as_str() == theirs
                    {
                        out.push(conflict(
                            Code::HostBridgeTaken,
                            net.span,
                            format!("bridge `{b}` of network `{}` is already used by network `{}` on the host", net.name, other.name),
                            "this network",
                            "choose another `bridge:` name, or leave it out and libvirt picks a free virbrN".into(),
                        ));
                    }
                }
            }
        }
    }
    for vm in lab.vms.values() {
        if let Some(o) = observed.domains.get(&vm.libvirt_name)
            && Ownership::of(o.owner.as_ref(), lab_name) != Ownership::ThisLab
        {
            out.push(conflict(
                Code::VmNameTaken,
                vm.span,
                format!(
                    "VM name `{}` is already taken on the host by a domain this lab does not own ({})",
                    vm.libvirt_name,
                    owner_text(o.owner.as_ref())
                ),
                "this VM would be created as that name",
                "rename the VM or set another `prefix:`; topo never adopts or overwrites objects it did not create"
                    .into(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
