//! The planner: a pure function from (desired lab, observed host) to a `Plan`, and the
//! refusals found on the way. No I/O happens here.

pub mod fields;
pub mod graph;
pub mod json;
pub mod paths;
pub mod render;
pub mod saved;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use miette::NamedSource;
use serde::{Deserialize, Serialize};

use crate::diag::{Code, Problem};
use crate::host::hypervisor::VolumeSpec;
use crate::host::observed::{
    DomainState, LiveConfig, Observed, ObservedDomain, ObservedMode, ObservedNetwork, Ownership,
};
use crate::lab::address::Address;
use crate::lab::impair::{Netem, Rate};
use crate::lab::model::{Lab, MacAddr, Network, NetworkKind, Reservation, Verify, Vm, VmState};
use crate::lab::ownership::{DEFAULT_OVERLAY_DIR, OVERLAY_POOL, volume_owned_by};
use crate::plan::graph::{GraphError, LabGraph, Node};
use fields::{FieldClass, Fields};

/// What will happen to one resource. A closed vocabulary: renderers and apply match it
/// exhaustively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// The lab file says `state: stopped` and the VM runs: it is shut down.
    StopRequested,
    /// The VM is paused: it is resumed.
    Paused,
    /// A volume tagged as this lab's that no domain uses (left by an interrupted apply or
    /// destroy, or by a define that libvirt refused).
    Orphaned,
    /// A seed upload that never got its seed's own name (`guest::partial_seed_name`): the
    /// run uploading it was killed or failed before the copy to the seed's name; its content
    /// may be truncated, so it is deleted (the seed, if still missing, is uploaded again).
    InterruptedUpload,
    /// The shared overlay pool is missing or inactive and a VM disk needs it.
    PoolNeeded,
    /// NICs of the running VM are not on their network's bridge (the network was stopped
    /// and started again under them, e.g. `virsh net-destroy` + `net-start`): they are
    /// plugged in again. Each entry: `eth0 (52:54:00:..., tap vnet3)`.
    Unplugged { nics: Vec<String> },
    /// The lab owned this network and now declares it `external: true`: topo releases it
    /// (removes its owner tag) and leaves it running.
    Released,
    /// The netem settings (`delay`, `jitter`, `loss`) on the taps of these NICs of the
    /// running VM differ from the lab file: they are set in place with tc. Each entry:
    /// `eth0 (tap vnet3)`.
    Netem { nics: Vec<String> },
    /// The running VM's persistent config was removed outside topo (`virsh undefine` while
    /// it runs): libvirt keeps it as a transient domain, which is gone once it stops. Its
    /// config is defined again, in place, before anything stops it. Source of the rule:
    /// libvirt's virDomainUndefine of an active domain, virDomainIsPersistent.
    UndefinedOutsideTopo,
    /// These volumes of the VM (names in the overlay pool) were deleted outside topo
    /// (`virsh vol-delete`, a file removed) while its domain still uses them: a seed is
    /// uploaded again with the same content, in place; a lost overlay replaces the VM.
    DeletedOutsideTopo { volumes: Vec<String> },
    /// The VM being deleted or replaced has snapshots (libvirt's metadata, internal or
    /// external; sorted names). libvirt refuses to undefine an inactive domain that has any
    /// ("cannot delete inactive domain with N snapshots"), so their metadata is removed
    /// first, while the VM still runs; their data goes with the VM's disk (internal
    /// snapshots live in its qcow2 overlay, external ones are the layers above it).
    Snapshots { names: Vec<String> },
    /// The object's owner tag was written by a topo older than lab identity (it names no
    /// lab file): this lab adopts it, and its tag gains the prefix and this lab file, in
    /// place (a define; nothing restarts).
    Adopted,
    /// The object was made by another instance of this lab (the same name and prefix,
    /// lab file `from`), and this run takes the lab over (`--take-over`): its tag names this
    /// lab file from now on, in place (a define; nothing restarts).
    TakenOver { from: String },
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
            Reason::StopRequested => "the lab file says `state: stopped`; the VM will be shut down".into(),
            Reason::Paused => "the VM is paused; it will be resumed".into(),
            Reason::Orphaned => "it is tagged as this lab's and no domain uses it (orphaned)".into(),
            Reason::InterruptedUpload => {
                "an interrupted seed upload left it (it may be truncated; seeds get their own name only when whole)"
                    .into()
            }
            Reason::PoolNeeded => {
                "a VM disk needs the overlay pool that all labs share, and it is missing or not active (topo never deletes it)"
                    .into()
            }
            Reason::Released => {
                "the lab file now declares it `external: true`: topo stops owning it and leaves it as it is".into()
            }
            Reason::Netem { nics } => {
                let verb = if nics.len() == 1 { "differs" } else { "differ" };
                format!(
                    "the delay, jitter or loss on {} {verb} from the lab file; set in place on the tap (tc netem), no restart",
                    nics.join(", ")
                )
            }
            Reason::UndefinedOutsideTopo => {
                "undefined outside topo (running, transient): its config is defined again, in place, so it is not lost when it stops"
                    .into()
            }
            Reason::DeletedOutsideTopo { volumes } => {
                let verb = if volumes.len() == 1 { "was" } else { "were" };
                let what = if volumes.iter().all(|v| crate::guest::is_seed_volume(v)) {
                    "the seed is uploaded again with the same content, in place (cloud-init does not run again)"
                } else {
                    "the VM's disk is lost, so the VM is replaced"
                };
                format!("{} {verb} deleted outside topo; {what}", volumes.join(", "))
            }
            Reason::Snapshots { names } => {
                let (n, them) = if names.len() == 1 { ("snapshot", "its") } else { ("snapshots", "their") };
                format!(
                    "the VM has {n} {}: {them} metadata is removed first (libvirt will not undefine a VM with snapshots), and {them} data goes with the VM's disk",
                    names.join(", ")
                )
            }
            Reason::Unplugged { nics } => {
                let (verb, whose) = if nics.len() == 1 { ("is", "its") } else { ("are", "their") };
                format!(
                    "{} {verb} off {whose} network's bridge (the network was restarted under the running VM); plugged in again",
                    nics.join(", ")
                )
            }
            Reason::Adopted => {
                "an older topo tagged it without the lab file; its tag now records this lab file and prefix, in place"
                    .into()
            }
            Reason::TakenOver { from } => {
                format!("--take-over: it was applied from {from}; its tag now names this lab file, in place")
            }
        }
    }
}

/// One field's difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub forces_replacement: bool,
    /// True when the change needs the VM restarted.
    pub restarts: bool,
}

/// A NIC that a network change cuts off: detached by a network replacement or stop, or left
/// without a network by its deletion.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Detached {
    pub domain: String,
    pub mac: MacAddr,
    /// Whether topo re-attaches it (only domains this lab owns and keeps).
    pub reattached: bool,
    /// Whether the domain is this lab's. A network deletion or replacement that cuts off a
    /// domain that is not is refused unless the user insists (see [`check_foreign`]).
    pub owned: bool,
}

/// How a running VM is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shutdown {
    /// ACPI shutdown request, then forced off after apply's shutdown timeout.
    Graceful,
    /// Forced off at once (`virsh destroy`): used when the VM's disk is deleted next.
    Force,
}

/// A NIC to plug back in after its network was restarted: the domain, the NIC's MAC and
/// the `<interface>` XML to detach and attach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlug {
    pub domain: String,
    pub mac: MacAddr,
    pub xml: String,
    /// The NIC's netem settings, set again on its new tap once it is plugged in (a re-plug
    /// makes a new tap, without them).
    #[serde(default)]
    pub netem: Option<Netem>,
}

/// The libvirt operations of one change, in order, each with what it needs (decided at
/// plan time). A closed vocabulary executed by apply; the object is the change's
/// `libvirt_name` unless the op names another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Make sure the storage pool `name` exists (a dir pool over `path` when it does not),
    /// is built, active and autostarted. Looked up by name.
    EnsurePool {
        name: String,
        path: String,
    },
    DefineNetwork {
        xml: String,
    },
    StartNetwork,
    SetNetworkAutostart {
        on: bool,
    },
    AddDhcpHost {
        mac: MacAddr,
        ip: std::net::Ipv4Addr,
        host: String,
        xml: String,
    },
    DeleteDhcpHost {
        mac: MacAddr,
        ip: std::net::Ipv4Addr,
        host: Option<String>,
        xml: String,
    },
    StopNetwork,
    UndefineNetwork,
    /// Remove topo's owner tag from the network's persistent config (it becomes external).
    ReleaseNetwork,
    /// Re-plug NICs of running domains after their network was restarted.
    ReattachNics {
        nics: Vec<NicPlug>,
    },
    CreateVolume {
        volume: VolumeSpec,
    },
    DeleteVolume {
        pool: String,
        name: String,
    },
    /// Create the VM's cloud-init seed volume `name` in `pool`: the FAT image of `seed`
    /// (made at apply time, the same bytes on every run), uploaded through libvirt.
    UploadSeed {
        pool: String,
        name: String,
        seed: crate::guest::Seed,
    },
    DefineDomain {
        xml: String,
    },
    StartDomain,
    ResumeDomain,
    StopDomain {
        shutdown: Shutdown,
    },
    AttachNic {
        mac: MacAddr,
        xml: String,
    },
    DetachNic {
        mac: MacAddr,
        network: String,
        xml: String,
    },
    /// Set the rate limit of the running VM's NIC live (libvirt's `<bandwidth>`, both
    /// directions; `None` removes it). The persistent config is written by a define.
    SetBandwidth {
        mac: MacAddr,
        rate: Option<Rate>,
    },
    /// Set netem on the running VM's NIC's tap with tc (`None` removes topo's netem).
    SetNetem {
        mac: MacAddr,
        netem: Option<Netem>,
    },
    UndefineDomain,
    /// Remove these snapshots of the domain from libvirt's metadata only (`virsh
    /// snapshot-delete VM S --metadata`), so that it can be undefined; their files go with
    /// the domain's volumes.
    DeleteSnapshotMetadata {
        names: Vec<String>,
    },
}

impl Op {
    /// The op's name for messages and tests: `define-network`, `start-domain`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Op::EnsurePool { .. } => "ensure-pool",
            Op::DefineNetwork { .. } => "define-network",
            Op::StartNetwork => "start-network",
            Op::SetNetworkAutostart { .. } => "set-network-autostart",
            Op::AddDhcpHost { .. } => "add-dhcp-host",
            Op::DeleteDhcpHost { .. } => "delete-dhcp-host",
            Op::StopNetwork => "stop-network",
            Op::UndefineNetwork => "undefine-network",
            Op::ReleaseNetwork => "release-network",
            Op::ReattachNics { .. } => "reattach-nics",
            Op::CreateVolume { .. } => "create-volume",
            Op::DeleteVolume { .. } => "delete-volume",
            Op::UploadSeed { .. } => "upload-seed",
            Op::DefineDomain { .. } => "define-domain",
            Op::StartDomain => "start-domain",
            Op::ResumeDomain => "resume-domain",
            Op::StopDomain { .. } => "stop-domain",
            Op::AttachNic { .. } => "attach-nic",
            Op::DetachNic { .. } => "detach-nic",
            Op::SetBandwidth { .. } => "set-bandwidth",
            Op::SetNetem { .. } => "set-netem",
            Op::UndefineDomain => "undefine-domain",
            Op::DeleteSnapshotMetadata { .. } => "delete-snapshot-metadata",
        }
    }
}

/// One step of the plan: what happens to one resource, why, and the ops that do it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub libvirt_name: String,
    pub action: Action,
    pub reasons: Vec<Reason>,
    pub fields: Vec<FieldChange>,
    /// For a network replacement: the NICs of running domains it detaches. For the start
    /// of an inactive network: the NICs of running domains that lost their link when it
    /// stopped.
    pub blast_radius: Vec<Detached>,
    /// The changes of this plan that must be done before this one starts: the lab graph's
    /// dependencies for creation, its exact reverse for deletion.
    pub after: Vec<Address>,
    pub ops: Vec<Op>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
}

/// The whole plan: changes in execution order (deletions of VMs, volumes, then networks,
/// then creations and updates in dependency order). `Change::after` holds the order apply
/// must keep; independent changes may run in parallel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub lab: String,
    pub changes: Vec<Change>,
    /// `--target` addresses, sorted: the plan is partial (see [`target`]). Empty for a
    /// whole plan.
    #[serde(default)]
    pub targets: Vec<Address>,
    /// What the plan warns about without refusing it (`paths::warnings`: a file of the lab
    /// that libvirt's storage pools cannot speak for, an image declared raw that the pool
    /// finds to be another format), located in the lab file; in the JSON as `warnings`.
    #[serde(default)]
    pub warnings: Vec<crate::diag::JsonProblem>,
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
    #[error(
        "lab {lab} would {verb} on {uri} that VMs this lab does not own are on: {}",
        networks.join("; ")
    )]
    #[diagnostic(
        code(topo::plan::cuts_foreign),
        help(
            "nothing was changed. Move those VMs to another network or remove them first; or, to go ahead anyway, \
             run again with --disconnect-foreign (their NICs lose their link: topo never touches a domain it does not \
             own, so a replaced network's running users stay off its new bridge until they are re-plugged or \
             restarted, and a deleted network's users cannot start)"
        )
    )]
    CutsForeign {
        lab: String,
        uri: String,
        /// `delete a network`, `replace networks`, `delete and replace networks`.
        verb: String,
        /// One entry per network: `network.lan (x-lan): used by other-vm`.
        networks: Vec<String>,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
}

/// Refuses a destroy of `lab` when another instance of it made objects on the host
/// ([`other_instances`]; `plan` refuses the same in its conflicts). `uri` is for messages.
pub fn check_instances(lab: &Lab, observed: &Observed, uri: &str) -> Result<(), PlanError> {
    refused(lab, uri, other_instances(lab, observed))
}

/// [`PlanError::Refused`] with `problems` (located in `lab`'s file), or `Ok` when there are none.
fn refused(lab: &Lab, uri: &str, problems: Vec<Problem>) -> Result<(), PlanError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(PlanError::Refused {
        lab: lab.name.to_string(),
        uri: uri.to_string(),
        src: Arc::new(lab.source.named_source()),
        problems,
    })
}

/// Plans `lab` against `observed`. Pure: reads its arguments only. `uri` is for messages.
pub fn plan(lab: &Lab, observed: &Observed, uri: &str) -> Result<Plan, PlanError> {
    let graph = LabGraph::build(lab)?;
    check_conflicts(lab, observed, uri)?;
    let pool = Pool::of(observed);
    let mut changes = Vec::new();
    // Owned objects no longer in the file: VMs first, then networks (reverse dependency).
    let desired_domains: BTreeSet<&str> = lab.vms.values().map(|v| v.libvirt_name.as_str()).collect();
    let desired_networks: BTreeSet<&str> = lab
        .networks
        .values()
        .filter(|n| matches!(n.kind, NetworkKind::Managed(_)))
        .map(|n| n.libvirt_name.as_str())
        .collect();
    for d in observed.domains.values() {
        if d.ownership(lab) == Ownership::ThisLab && !desired_domains.contains(d.name.as_str()) {
            changes.push(delete_domain(lab, d, observed, &pool, Shutdown::Force));
        }
    }
    changes.extend(orphaned_volumes(lab, observed, &changes, false));
    for n in observed.networks.values() {
        if n.ownership(lab) == Ownership::ThisLab && !desired_networks.contains(n.name.as_str()) {
            // Re-declared `external: true`: the lab stops owning it, and it stays, with
            // the VMs on it.
            let external =
                lab.networks.values().find(|l| l.libvirt_name == n.name && matches!(l.kind, NetworkKind::External));
            changes.push(match external {
                Some(l) => release_network(l, n),
                None => delete_network(lab, n, observed),
            });
        }
    }

    let replaced_networks: BTreeSet<String> = lab
        .networks
        .values()
        .filter_map(|n| match (&n.kind, observed.networks.get(&n.libvirt_name)) {
            (NetworkKind::Managed(m), Some(o)) => is_replaced(m, o).then(|| n.libvirt_name.clone()),
            _ => None,
        })
        .collect();

    for node in graph.create_order() {
        let change = match node {
            Node::Network(name) => match lab.networks.get(name) {
                Some(net) => plan_network(lab, net, observed, &replaced_networks),
                None => continue,
            },
            Node::Vm(name) => match lab.vms.get(name) {
                Some(vm) => plan_vm(lab, vm, observed, &pool, &replaced_networks),
                None => continue,
            },
        };
        if let Some(c) = change {
            changes.push(c);
        }
    }
    if let Some(c) = pool.change(&changes) {
        // After the deletions, before every creation: the pool has no dependencies.
        let at = changes.iter().position(|c| c.action != Action::Delete).unwrap_or(changes.len());
        changes.insert(at, c);
    }
    prune_deleted_users(&mut changes);
    let unsafe_disks = disks_in_use(lab, observed, &changes);
    if !unsafe_disks.is_empty() {
        return Err(PlanError::Refused {
            lab: lab.name.to_string(),
            uri: uri.to_string(),
            src: Arc::new(lab.source.named_source()),
            problems: unsafe_disks,
        });
    }
    order_changes(lab, Some(&graph), observed, &mut changes);
    let file = lab.source.name();
    let warnings = paths::warnings(lab, observed)
        .iter()
        .map(|w| crate::diag::JsonProblem::of(&file, &lab.source.text, w))
        .collect();
    Ok(Plan { lab: lab.name.to_string(), changes, targets: Vec::new(), warnings })
}

/// The destroy plan: every object this lab owns on the host, whether or not it is still in
/// the lab file; VMs (forced off with `Shutdown::Force`, as `topo destroy` does unless asked
/// for `--graceful`) and their volumes first, then orphaned volumes, then networks. Objects
/// in the file go in the graph's `delete_order` (exactly the reverse of creation); owned
/// objects no longer in the file go first within their kind, by name. Pure, like `plan`.
pub fn plan_destroy(lab: &Lab, observed: &Observed) -> Plan {
    plan_destroy_with(lab, observed, Shutdown::Force)
}

/// [`plan_destroy`] with the given way of stopping running VMs.
pub fn plan_destroy_with(lab: &Lab, observed: &Observed, shutdown: Shutdown) -> Plan {
    let pool = Pool::of(observed);
    let graph = LabGraph::build(lab).ok();
    // Position of each address in the reverse creation order; a lab whose graph cannot be
    // built (a cycle) keeps name order.
    let rank: BTreeMap<Address, usize> = graph
        .as_ref()
        .map(|g| g.delete_order().iter().enumerate().map(|(i, n)| (n.address(), i + 1)).collect())
        .unwrap_or_default();
    let by_rank = |c: &Change| rank.get(&c.address).copied().unwrap_or(0);
    let mut changes: Vec<Change> = observed
        .domains
        .values()
        .filter(|d| d.ownership(lab) == Ownership::ThisLab)
        .map(|d| delete_domain(lab, d, observed, &pool, shutdown))
        .collect();
    changes.sort_by_key(by_rank); // stable: ties (not in the file) stay in name order
    let orphans = orphaned_volumes(lab, observed, &changes, true);
    changes.extend(orphans);
    let mut networks: Vec<Change> = observed
        .networks
        .values()
        .filter(|n| n.ownership(lab) == Ownership::ThisLab)
        .map(|n| delete_network(lab, n, observed))
        .collect();
    networks.sort_by_key(by_rank);
    changes.extend(networks);
    for c in &mut changes {
        if lab_has(lab, &c.address) {
            // Why it goes; the other reasons (its snapshots) say what else happens.
            c.reasons.retain(|r| *r != Reason::NotInLabFile);
            c.reasons.insert(0, Reason::DestroyRequested);
        }
    }
    if let Some(c) = pool.change(&changes) {
        changes.insert(0, c);
    }
    prune_deleted_users(&mut changes);
    order_changes(lab, graph.as_ref(), observed, &mut changes);
    Plan { lab: lab.name.to_string(), changes, targets: Vec::new(), warnings: Vec::new() }
}

fn lab_has(lab: &Lab, address: &Address) -> bool {
    match address {
        Address::Network(n) => lab.networks.contains_key(n),
        Address::Vm(v) => lab.vms.contains_key(v),
        Address::Volume(_) | Address::Pool(_) => false,
    }
}

/// The shared overlay pool as the plan sees it: where volumes go, and whether a step must
/// create or start it first.
struct Pool {
    path: String,
    observed: Option<(String, bool)>,
}

impl Pool {
    fn of(observed: &Observed) -> Self {
        match &observed.pool {
            Some(p) => Pool { path: p.path.clone(), observed: Some((p.name.clone(), p.active)) },
            None => Pool { path: DEFAULT_OVERLAY_DIR.to_string(), observed: None },
        }
    }

    /// Full path of volume `name` in the pool.
    fn volume_path(&self, name: &str) -> String {
        format!("{}/{name}", self.path.trim_end_matches('/'))
    }

    /// A step that creates or starts the pool, when a change of `changes` needs it.
    fn change(&self, changes: &[Change]) -> Option<Change> {
        let needed = changes
            .iter()
            .flat_map(|c| &c.ops)
            .any(|op| matches!(op, Op::CreateVolume { .. } | Op::DeleteVolume { .. } | Op::UploadSeed { .. }));
        let (action, reasons) = match &self.observed {
            _ if !needed => return None,
            Some((_, true)) => return None,
            Some((_, false)) => (Action::Update, vec![Reason::PoolNeeded]),
            None => (Action::Create, vec![Reason::PoolNeeded]),
        };
        let fields = vec![FieldChange {
            path: "path".into(),
            before: (action == Action::Update).then(|| self.path.clone()),
            after: Some(self.path.clone()),
            forces_replacement: false,
            restarts: false,
        }];
        Some(Change {
            address: Address::Pool(OVERLAY_POOL.to_string()),
            libvirt_name: OVERLAY_POOL.to_string(),
            action,
            reasons,
            fields,
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops: vec![Op::EnsurePool { name: OVERLAY_POOL.to_string(), path: self.path.clone() }],
        })
    }
}

/// Fills every change's `after`: deletions of VMs and volumes first (VMs before the
/// networks they use, in the graph's reverse order), network deletions after every VM
/// deletion and after the VM changes that unplug NICs from them, creations and updates
/// after every deletion and after the changes of what they depend on in the lab graph;
/// every change with a volume op after the pool step.
fn order_changes(lab: &Lab, graph: Option<&LabGraph>, observed: &Observed, changes: &mut [Change]) {
    let is_delete = |c: &Change| c.action == Action::Delete;
    let vm_deletes: Vec<Address> = changes
        .iter()
        .filter(|c| is_delete(c) && matches!(c.address, Address::Vm(_) | Address::Volume(_)))
        .map(|c| c.address.clone())
        .collect();
    let all_deletes: Vec<Address> = changes.iter().filter(|c| is_delete(c)).map(|c| c.address.clone()).collect();
    let present: BTreeSet<Address> = changes.iter().map(|c| c.address.clone()).collect();
    let pool_step = changes.iter().find(|c| matches!(c.address, Address::Pool(_))).map(|c| c.address.clone());
    // VM changes that take a NIC off a network (by libvirt name): hot-unplugged, or left
    // out of the VM's new definition.
    let unplugs: Vec<(Address, String)> = changes
        .iter()
        .filter(|c| !is_delete(c))
        .filter_map(|c| match &c.address {
            Address::Vm(v) => Some((c, lab.vms.get(v)?, observed.domains.get(&c.libvirt_name)?)),
            _ => None,
        })
        .flat_map(|(c, vm, d)| {
            let wanted: BTreeSet<&str> =
                vm.nics.iter().filter_map(|n| lab.networks.get(&n.network)).map(|n| n.libvirt_name.as_str()).collect();
            d.interfaces
                .iter()
                .filter_map(|i| i.network.clone())
                .filter(|n| !wanted.contains(n.as_str()))
                .map(|n| (c.address.clone(), n))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut afters: Vec<Vec<Address>> = Vec::with_capacity(changes.len());
    for c in changes.iter() {
        let mut after: BTreeSet<Address> = BTreeSet::new();
        match (&c.address, is_delete(c)) {
            (Address::Vm(_) | Address::Volume(_), true) => {}
            (Address::Network(_), true) => {
                after.extend(vm_deletes.iter().cloned());
                after.extend(unplugs.iter().filter(|(_, n)| *n == c.libvirt_name).map(|(a, _)| a.clone()));
            }
            (Address::Pool(_), _) => {}
            (Address::Network(_), false) => after.extend(all_deletes.iter().cloned()),
            (Address::Vm(v), false) => {
                // Not after network deletions: a network deletion may wait for this VM to
                // unplug from it. A network the VM needs waits for them itself.
                after.extend(vm_deletes.iter().cloned());
                for dep in graph.map(|g| g.dependencies(&Node::Vm(v.clone()))).unwrap_or_default() {
                    after.insert(dep.address());
                }
            }
            (Address::Volume(_), false) => after.extend(all_deletes.iter().cloned()),
        }
        if let Some(p) = &pool_step
            && c.ops
                .iter()
                .any(|op| matches!(op, Op::CreateVolume { .. } | Op::DeleteVolume { .. } | Op::UploadSeed { .. }))
        {
            after.insert(p.clone());
        }
        after.remove(&c.address);
        after.retain(|a| present.contains(a));
        afters.push(after.into_iter().collect());
    }
    // A network deletion waits for VM changes that unplug from it, unless that VM change
    // waits (through its own dependencies) for the deletion: it needs a network that
    // reuses the bridge or subnet, and libvirt lets the network go from under it.
    let index: BTreeMap<Address, usize> = changes.iter().enumerate().map(|(i, c)| (c.address.clone(), i)).collect();
    for i in 0..changes.len() {
        if !(is_delete(&changes[i]) && matches!(changes[i].address, Address::Network(_))) {
            continue;
        }
        let deps = afters[i].clone();
        for d in deps {
            let Some(&j) = index.get(&d) else { continue };
            if !is_delete(&changes[j]) && waits_for(&afters, &index, j, i) {
                afters[i].retain(|a| *a != d);
            }
        }
    }
    for (c, after) in changes.iter_mut().zip(afters) {
        c.after = after;
    }
}

/// Whether the lab network `m`, observed as `o`, must be replaced (a field that cannot
/// change in place differs).
fn is_replaced(m: &crate::lab::model::ManagedNetwork, o: &ObservedNetwork) -> bool {
    let d = fields::desired_network(m);
    diff(&d, &fields::observed_network(o, &d)).iter().any(|f| f.forces_replacement)
}

/// Whether the plan starts lab network `m` (libvirt name `name`): it is created, replaced,
/// or defined but not active.
fn starts_network(m: &crate::lab::model::ManagedNetwork, name: &str, observed: &Observed) -> bool {
    observed.networks.get(name).is_none_or(|o| !o.active || is_replaced(m, o))
}

/// Whether change `from` (transitively) waits for change `to`.
fn waits_for(afters: &[Vec<Address>], index: &BTreeMap<Address, usize>, from: usize, to: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if seen.insert(i) {
            stack.extend(afters[i].iter().filter_map(|a| index.get(a).copied()));
        }
    }
    false
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
fn creation(address: Address, libvirt_name: &str, desired: &Fields, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Create,
        reasons: vec![Reason::NotOnHost],
        fields: all_fields(desired, true),
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }
}

fn delete_network(lab: &Lab, n: &ObservedNetwork, observed: &Observed) -> Change {
    let d = fields::observed_network(n, &Fields::new());
    let mut ops = Vec::new();
    if n.active {
        ops.push(Op::StopNetwork);
    }
    if n.persistent {
        ops.push(Op::UndefineNetwork);
    }
    let mut c = deletion(owner_address(n.owner.as_ref(), &n.name), &n.name, all_fields(&d, false), ops);
    c.blast_radius = network_users(lab, &n.name, observed);
    c
}

/// Every domain with a NIC on `network`, running or not, owned or not: deleting the
/// network cuts the running ones off and leaves the others unable to start. (Those the same
/// plan deletes are left out afterwards: [`prune_deleted_users`].)
fn network_users(lab: &Lab, network: &str, observed: &Observed) -> Vec<Detached> {
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

/// Leaves out of networks' blast radius (deletion, replacement, restart) the domains the
/// same plan deletes: they are gone before the network changes.
fn prune_deleted_users(changes: &mut [Change]) {
    let deleted: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.action == Action::Delete && matches!(c.address, Address::Vm(_)))
        .map(|c| c.libvirt_name.clone())
        .collect();
    for c in changes.iter_mut() {
        if matches!(c.address, Address::Network(_)) {
            c.blast_radius.retain(|d| !deleted.contains(&d.domain));
        }
    }
}

/// The checks every plan passes before apply or destroy executes it, whether it is the plan
/// shown, the plan made again under the host lock (`apply -y` after the host changed), or a
/// saved plan: one function, so that no path skips one.
///
/// - for apply (`direction` [`Direction::Apply`](target::Direction::Apply)): every conflict
///   of the lab with the host ([`PlanError::Refused`], the refusals of [`plan`]), observed in
///   `observed`;
/// - for destroy: no object of another instance of this lab is on the host, unless
///   `--take-over` ([`check_instances`]);
/// - for both: no network deletion or replacement cuts off a domain this lab does not own,
///   unless `disconnect_foreign` ([`PlanError::CutsForeign`], see [`check_foreign`]).
///
/// `uri` is for messages.
///
/// # Errors
/// The first check that fails.
pub fn check_executable(
    lab: &Lab,
    observed: &Observed,
    plan: &Plan,
    uri: &str,
    direction: target::Direction,
    disconnect_foreign: bool,
) -> Result<(), PlanError> {
    match direction {
        target::Direction::Apply => check_conflicts(lab, observed, uri)?,
        // Another instance's objects are refused for destroy too (apply's conflicts
        // include them).
        target::Direction::Destroy => check_instances(lab, observed, uri)?,
    }
    check_foreign(plan, uri, disconnect_foreign)
}

/// [`PlanError::Refused`] with every conflict of `lab` with the host (`find_conflicts`).
fn check_conflicts(lab: &Lab, observed: &Observed, uri: &str) -> Result<(), PlanError> {
    refused(lab, uri, find_conflicts(lab, observed))
}

/// Refuses `plan` when it deletes or replaces a network that a domain this lab does not own
/// is on: a deletion leaves every such domain without its network (running or not), a
/// replacement stops the network under the running ones and topo plugs back only the lab's
/// NICs. topo never cuts off what it does not own unless `insist` (the
/// `--disconnect-foreign` flag). `uri` is for the message. Part of [`check_executable`].
///
/// # Errors
/// [`PlanError::CutsForeign`], naming each network and the domains it cuts off.
pub fn check_foreign(plan: &Plan, uri: &str, insist: bool) -> Result<(), PlanError> {
    if insist {
        return Ok(());
    }
    let mut verbs = BTreeSet::new();
    let networks: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Delete | Action::Replace) && matches!(c.address, Address::Network(_)))
        .filter_map(|c| {
            let mut foreign: Vec<&str> =
                c.blast_radius.iter().filter(|d| !d.owned).map(|d| d.domain.as_str()).collect();
            foreign.dedup();
            if foreign.is_empty() {
                return None;
            }
            verbs.insert(c.action);
            Some(match c.action {
                Action::Replace => format!(
                    "{} ({}) is replaced (stopped and started again) under running {}",
                    c.address,
                    c.libvirt_name,
                    foreign.join(", ")
                ),
                _ => format!("{} ({}): used by {}", c.address, c.libvirt_name, foreign.join(", ")),
            })
        })
        .collect();
    if networks.is_empty() {
        return Ok(());
    }
    let what = if networks.len() == 1 { "a network" } else { "networks" };
    let verb = match (verbs.contains(&Action::Delete), verbs.contains(&Action::Replace)) {
        (true, true) => format!("delete and replace {what}"),
        (false, true) => format!("replace {what}"),
        _ => format!("delete {what}"),
    };
    Err(PlanError::CutsForeign { lab: plan.lab.clone(), uri: uri.to_string(), verb, networks })
}

/// An owned network the lab file now declares `external: true`: its owner tag is removed, so
/// topo no longer owns it; it is not stopped or changed otherwise.
fn release_network(net: &Network, o: &ObservedNetwork) -> Change {
    Change {
        address: Address::Network(net.name.clone()),
        libvirt_name: o.name.clone(),
        action: Action::Update,
        reasons: vec![Reason::Released],
        fields: vec![FieldChange {
            path: "owner".into(),
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

/// A change that deletes an owned object no longer in the lab file.
fn deletion(address: Address, libvirt_name: &str, fields: Vec<FieldChange>, ops: Vec<Op>) -> Change {
    Change {
        address,
        libvirt_name: libvirt_name.to_string(),
        action: Action::Delete,
        reasons: vec![Reason::NotInLabFile],
        fields,
        blast_radius: Vec::new(),
        after: Vec::new(),
        ops,
    }
}

/// The volumes deleted with domain `d` (deleted or replaced): walking each disk's backing
/// chain from its source down, every file that is a volume of the overlay pool (by identity,
/// [`Observed::same_file`]) and that no other domain may use, down to and including the
/// first one tagged as this lab's (its overlay or seed). So the layers of external snapshots
/// stacked on the lab's overlay go with it. Never a file below a lab volume (a base image),
/// never one outside the overlay pool, never one that another domain may use (running or
/// not, its whole chain), never a lab VM's base image; top layers first.
fn domain_volumes(lab: &Lab, d: &ObservedDomain, observed: &Observed, pool: &Pool) -> Vec<Op> {
    let Some((pool_name, _)) = &pool.observed else { return Vec::new() };
    let lab_name = lab.name.as_str();
    let bases: Vec<String> =
        lab.vms.values().filter_map(|v| v.disk.as_ref()).map(|x| x.image.display().to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for i in 0..d.disks.len() {
        let mut below_lab = false;
        for file in d.chain(i) {
            // The pool volume this file is: by identity in an active pool (a tagged lab
            // volume also when only its name says so); in an inactive pool, which lists no
            // volumes, a file in its folder.
            let volume = observed
                .volumes
                .values()
                .find(|v| match observed.same_file(&v.path, file) {
                    crate::host::observed::Same::Yes => true,
                    crate::host::observed::Same::Maybe => volume_owned_by(lab_name, &v.name),
                    crate::host::observed::Same::No => false,
                })
                .map(|v| (v.name.clone(), v.path.clone()))
                .or_else(|| {
                    let p = std::path::Path::new(file);
                    (observed.volumes.is_empty()
                        && p.parent().is_some_and(|dir| dir == std::path::Path::new(&pool.path)))
                    .then(|| (file.rsplit('/').next().unwrap_or_default().to_string(), file.to_string()))
                });
            let Some((name, path)) = volume else {
                continue; // outside the pool: not topo's; the layers below may still be
            };
            let shared = observed.domains.values().any(|o| o.name != d.name && o.may_use(observed, &path));
            let base = bases.iter().any(|b| observed.same_file(b, &path) != crate::host::observed::Same::No);
            let tagged = volume_owned_by(lab_name, &name);
            // Under a lab volume only lab volumes go (a layer named by libvirt after the
            // overlay keeps its tag: `NAME.TAG.s1`); the first other one is a base.
            if shared || base || (below_lab && !tagged) {
                break; // it and everything under it stay
            }
            below_lab |= tagged;
            if !out.contains(&name) {
                out.push(name.clone());
            }
        }
    }
    out.into_iter().map(|name| Op::DeleteVolume { pool: pool_name.clone(), name }).collect()
}

/// Volumes the plan makes anew (`CreateVolume`, `UploadSeed`) that are there, are not
/// deleted first by the plan, and are files another domain may use: a create would fail on
/// "exists" after the VM it replaces is gone, and an upload deletes the old volume first,
/// under that domain. Refused before anything is touched, with the commands that free it.
fn disks_in_use(lab: &Lab, observed: &Observed, changes: &[Change]) -> Vec<Problem> {
    let deleted: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| &c.ops)
        .filter_map(|op| match op {
            Op::DeleteVolume { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for c in changes {
        let Address::Vm(vm_name) = &c.address else { continue };
        let Some(vm) = lab.vms.get(vm_name) else { continue };
        for op in &c.ops {
            let name = match op {
                Op::CreateVolume { volume } => &volume.name,
                Op::UploadSeed { name, .. } => name,
                _ => continue,
            };
            let Some(v) = observed.volumes.get(name) else { continue };
            if deleted.contains(name.as_str()) {
                continue;
            }
            let users: Vec<&ObservedDomain> = observed
                .domains
                .values()
                .filter(|d| d.name != vm.libvirt_name)
                .filter(|d| d.may_use(observed, &v.path))
                .collect();
            let Some(user) = users.first() else { continue };
            let how = if user.state == DomainState::Running {
                format!("`virsh blockpull {} <disk> --wait` (copies the data into its top layer)", user.name)
            } else {
                format!(
                    "`qemu-img rebase -b '' <its top layer>` while it is shut off, or `virsh undefine {}`",
                    user.name
                )
            };
            out.push(Problem::at(
                Code::DiskInUse,
                vm.span,
                format!(
                    "vm {}: volume {name} ({}) must be made anew, but domain `{}` uses it (a layer of its disk's backing chain): topo never deletes a disk under a domain",
                    vm.name, v.path, user.name
                ),
                "this VM's disk",
                format!("make {} stop using it first: {how}; then plan again", user.name),
            ));
        }
    }
    out
}

/// The snapshot metadata removal of a VM that is deleted or replaced, with its reason and
/// field; nothing when it has no snapshots.
fn snapshot_removal(d: &ObservedDomain) -> Option<(Op, Reason, FieldChange)> {
    if d.snapshots.is_empty() {
        return None;
    }
    Some((
        Op::DeleteSnapshotMetadata { names: d.snapshots.clone() },
        Reason::Snapshots { names: d.snapshots.clone() },
        FieldChange {
            path: "snapshots".into(),
            before: Some(d.snapshots.join(", ")),
            after: None,
            forces_replacement: false,
            restarts: false,
        },
    ))
}

fn delete_domain(lab: &Lab, d: &ObservedDomain, observed: &Observed, pool: &Pool, shutdown: Shutdown) -> Change {
    // What is destroyed, as the host has it (shown like a created VM's fields).
    let mut fields = all_fields(&fields::observed_vm(lab, d, &Fields::new()), false);
    let mut ops = Vec::new();
    let snapshots = snapshot_removal(d);
    if let Some((op, _, field)) = &snapshots {
        // First, while the VM still runs: should it fail, the VM is left as it was.
        ops.push(op.clone());
        fields.push(field.clone());
        fields.sort_by(|a, b| a.path.cmp(&b.path));
    }
    if d.state != DomainState::Shutoff {
        ops.push(Op::StopDomain { shutdown });
    }
    ops.push(Op::UndefineDomain);
    ops.extend(domain_volumes(lab, d, observed, pool));
    let mut c = deletion(owner_address(d.owner.as_ref(), &d.name), &d.name, fields, ops);
    c.reasons.extend(snapshots.map(|(_, r, _)| r));
    c
}

/// Volumes of this lab instance ([`volume_is_ours`]) that are not deleted by `changes` and
/// that no domain left after `changes` may use (with `all`, for destroy: no domain but this
/// lab's): one deletion each. "Use" is decided by identity over each domain's whole backing
/// chain, running or not ([`ObservedDomain::may_use`]): a file reached through another path
/// (a pool folder moved, a symlink at the old path) or below an external snapshot's layer
/// is in use.
fn orphaned_volumes(lab: &Lab, observed: &Observed, changes: &[Change], all: bool) -> Vec<Change> {
    let Some(pool) = &observed.pool else { return Vec::new() };
    let deleted: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| &c.ops)
        .filter_map(|op| match op {
            Op::DeleteVolume { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let gone: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.action == Action::Delete && matches!(c.address, Address::Vm(_)))
        .map(|c| c.libvirt_name.as_str())
        .collect();
    let users: Vec<&ObservedDomain> = observed
        .domains
        .values()
        .filter(|d| !gone.contains(d.name.as_str()) && (!all || d.ownership(lab) != Ownership::ThisLab))
        .collect();
    observed
        .volumes
        .values()
        .filter(|v| volume_is_ours(lab, observed, &v.name) && !deleted.contains(v.name.as_str()))
        .filter(|v| !users.iter().any(|d| d.may_use(observed, &v.path)))
        .map(|v| Change {
            address: Address::Volume(v.name.clone()),
            libvirt_name: v.name.clone(),
            action: Action::Delete,
            reasons: vec![if crate::guest::is_partial_seed(&v.name) {
                Reason::InterruptedUpload
            } else {
                Reason::Orphaned
            }],
            fields: vec![FieldChange {
                path: "path".into(),
                before: Some(v.path.clone()),
                after: None,
                forces_replacement: false,
                restarts: false,
            }],
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops: vec![Op::DeleteVolume { pool: pool.name.clone(), name: v.name.clone() }],
        })
        .collect()
}

/// Whether tagged volume `name` is this lab instance's. Volumes carry no metadata, only a
/// checksum of the lab name in their name (`ownership::volume_name`), which every instance
/// of a lab name shares; so a volume is also checked against the VM it was made for
/// (`ownership::volume_domain`): that name must carry this instance's prefix, and a domain
/// of that name, if there is one, must be this instance's. Another instance's volumes (a
/// copy of the lab under another prefix, or another lab file holding the VM) are never
/// deleted. Left ambiguous, and documented: an orphan (no domain) of a lab with the same
/// name whose prefix starts with this one's (`prefix: ""` beside `demo-`).
fn volume_is_ours(lab: &Lab, observed: &Observed, name: &str) -> bool {
    volume_owned_by(lab.name.as_str(), name)
        && crate::lab::ownership::volume_domain(name).is_some_and(|vm| {
            vm.starts_with(lab.prefix.as_str())
                && observed.domains.get(vm).is_none_or(|d| d.ownership(lab) == Ownership::ThisLab)
        })
}

/// The problems that stop a plan (apply or destroy) of `lab` because another instance of
/// it (the same name and prefix, another lab file) made objects on the host: one per other
/// lab file, at the lab's `name:`, naming the file, when it was last applied and by whom,
/// and its objects. Empty with `--take-over` (`Lab::take_over`): those objects are then
/// this instance's.
pub fn other_instances(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    /// What one other lab file made: its objects, when it last wrote one, who ran it.
    #[derive(Default)]
    struct Holder {
        objects: Vec<String>,
        applied: Option<String>,
        users: BTreeSet<String>,
    }
    let mut by_file: BTreeMap<String, Holder> = BTreeMap::new();
    let tagged = observed
        .networks
        .values()
        .filter(|n| n.ownership(lab) == Ownership::OtherInstance)
        .map(|n| (n.owner.as_ref(), &n.name))
        .chain(
            observed
                .domains
                .values()
                .filter(|d| d.ownership(lab) == Ownership::OtherInstance)
                .map(|d| (d.owner.as_ref(), &d.name)),
        );
    for (tag, name) in tagged {
        let Some(t) = tag else { continue };
        let Some(file) = &t.file else { continue };
        let e = by_file.entry(file.clone()).or_default();
        e.objects.push(format!("{} ({name})", t.resource));
        if t.applied > e.applied {
            e.applied.clone_from(&t.applied);
        }
        e.users.extend(t.user.clone());
    }
    let me = lab.instance();
    by_file
        .into_iter()
        .map(|(file, Holder { objects, applied, users })| {
            let when = applied.map_or_else(|| "at an unknown time".to_string(), |a| format!("last at {a}"));
            let by = if users.is_empty() {
                String::new()
            } else {
                format!(" by {}", users.into_iter().collect::<Vec<_>>().join(", "))
            };
            Problem::at(
                Code::OtherInstance,
                lab.name_span,
                format!(
                    "lab `{}` (prefix `{}`) on the host was applied from another lab file, {file}, {when}{by}; \
                     this is {}. Its objects: {}",
                    me.lab,
                    me.prefix,
                    me.file,
                    objects.join(", ")
                ),
                "the same name and prefix as that lab",
                format!(
                    "nothing was changed. To keep both labs, give this file another `name:` or `prefix:`; to make \
                     this file the owner of that lab (a moved folder, a fresh clone), run again with --take-over \
                     (its objects are re-tagged, not replaced; then this file's plan applies to them); or run \
                     topo from {file}"
                ),
            )
        })
        .collect()
}

/// The owner tag change when an object of this lab carries a tag other than the one this
/// instance writes: adopted from an older topo (no lab file recorded), or taken over from
/// another lab file (`--take-over`). The object is defined again with the new tag, in place.
fn retag(lab: &Lab, owner: Option<&crate::host::observed::OwnerTag>) -> Option<(Reason, FieldChange)> {
    let t = owner?;
    let me = lab.instance();
    if t.is_of(&me) {
        return None;
    }
    let reason = match &t.file {
        Some(file) => Reason::TakenOver { from: file.clone() },
        None => Reason::Adopted,
    };
    let before = match &t.file {
        Some(file) => format!("lab {} from {file}", t.lab),
        None => format!("lab {} (no lab file recorded)", t.lab),
    };
    let field = FieldChange {
        path: "owner".into(),
        before: Some(before),
        after: Some(format!("lab {} from {}", me.lab, me.file)),
        forces_replacement: false,
        restarts: false,
    };
    Some((reason, field))
}

/// The address an owned object is planned under: its owner tag's resource (ownership
/// checked that it parses).
fn owner_address(owner: Option<&crate::host::observed::OwnerTag>, name: &str) -> Address {
    owner.and_then(|t| t.resource.parse().ok()).unwrap_or_else(|| Address::Volume(name.to_string()))
}

/// Whether the host differs from the last apply while the file did not change.
fn drifted(owner: Option<&crate::host::observed::OwnerTag>, desired: &Fields) -> bool {
    owner.is_some_and(|t| t.spec_hash == fields::spec_hash(desired))
}

/// The network XML to define: the lab's, keeping the UUID, the bridge libvirt chose and the
/// bridge MAC the network has. The bridge MAC is set at create (derived,
/// `MacAddr::derived_bridge`) and never compared or changed afterwards, like a computed
/// attribute in Terraform: a network defined by an older topo keeps the random one libvirt
/// gave it (plan's `bridge_mac` refusal checks NICs against the observed one).
fn network_define(lab: &Lab, net: &Network, desired: &Fields, o: Option<&ObservedNetwork>) -> Result<Op, String> {
    let hash = fields::spec_hash(desired);
    let xml = match o.and_then(|o| o.mac) {
        Some(kept) => crate::host::xml::network_xml_with_mac(lab, net, &hash, kept),
        None => crate::host::xml::network_xml(lab, net, &hash),
    }
    .map_err(|e| e.to_string())?;
    let uuid = o.and_then(|o| o.uuid.as_deref());
    let bridge = o.and_then(|o| o.bridge.as_deref());
    Ok(Op::DefineNetwork { xml: crate::host::xml::with_bridge(&crate::host::xml::with_uuid(&xml.xml, uuid), bridge) })
}

fn plan_network(lab: &Lab, net: &Network, observed: &Observed, replaced: &BTreeSet<String>) -> Option<Change> {
    let NetworkKind::Managed(m) = &net.kind else {
        return None; // external: read only, checked in find_conflicts
    };
    let address = Address::Network(net.name.clone());
    let desired = fields::desired_network(m);
    let o = observed.networks.get(&net.libvirt_name);
    // Rendering a validated network cannot fail (names and values were checked); if it
    // does, the change carries no define and apply reports the missing op's effect.
    let define = network_define(lab, net, &desired, o);
    let define_op = |ops: &mut Vec<Op>| {
        if let Ok(op) = &define {
            ops.push(op.clone());
        }
    };
    let Some(o) = o else {
        let mut ops = Vec::new();
        define_op(&mut ops);
        ops.push(Op::StartNetwork);
        if m.autostart {
            ops.push(Op::SetNetworkAutostart { on: true });
        }
        return Some(creation(address, &net.libvirt_name, &desired, ops));
    };
    let obs = fields::observed_network(o, &desired);
    let mut changed = diff(&desired, &obs);
    let mut reasons = Vec::new();
    let mut config_changed = changed.iter().any(|f| f.path != "active");
    if config_changed {
        reasons.push(if drifted(o.owner.as_ref(), &desired) { Reason::Drift } else { Reason::LabFileChanged });
    }
    if let Some((reason, field)) = retag(lab, o.owner.as_ref()) {
        // The define below writes the new tag; nothing else changes for it.
        reasons.push(reason);
        changed.push(field);
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        config_changed = true;
    }
    if replaced.contains(&net.libvirt_name) {
        let forced: Vec<String> = changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
        reasons.push(Reason::RequiresReplace { fields: forced });
        let blast = blast_radius(lab, net, observed);
        let mut ops = Vec::new();
        if o.active {
            ops.push(Op::StopNetwork);
        }
        define_op(&mut ops);
        ops.push(Op::StartNetwork);
        if m.autostart != o.autostart {
            ops.push(Op::SetNetworkAutostart { on: m.autostart });
        }
        let reattach = replugs(lab, &blast);
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
            after: Vec::new(),
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
        let reattach = replugs(lab, &blast);
        if !reattach.is_empty() {
            ops.push(Op::ReattachNics { nics: reattach });
        }
    }
    if m.autostart != o.autostart {
        ops.push(Op::SetNetworkAutostart { on: m.autostart });
    }
    let observed_hosts: BTreeMap<MacAddr, &crate::host::observed::ObservedHost> =
        o.ip.iter().flat_map(|ip| ip.hosts.iter().map(|h| (h.mac, h))).collect();
    for (mac, h) in &observed_hosts {
        let keep = m.reservations.get(mac).is_some_and(|r| same_host(r, h));
        if !keep {
            let r = Reservation { mac: *mac, ip: h.ip, host: h.name.clone().unwrap_or_default() };
            if let Ok(xml) = crate::host::xml::dhcp_host_xml(&r) {
                ops.push(Op::DeleteDhcpHost { mac: *mac, ip: h.ip, host: h.name.clone(), xml });
            }
        }
    }
    for (mac, r) in &m.reservations {
        let have = observed_hosts.get(mac).is_some_and(|h| same_host(r, h));
        if !have && let Ok(xml) = crate::host::xml::dhcp_host_xml(r) {
            ops.push(Op::AddDhcpHost { mac: *mac, ip: r.ip, host: r.host.clone(), xml });
        }
    }
    if ops.is_empty() && !config_changed {
        return None;
    }
    // Drifted or changed config that can be fixed in place is rewritten too, so the
    // metadata's spec hash matches the file again. Last: the DHCP host updates change the
    // live network and the persistent config together and must find the config as it was
    // observed (libvirt refuses to delete an entry the config no longer has); the final
    // define then only refreshes the persistent config, which already holds them.
    if config_changed {
        define_op(&mut ops);
    }
    Some(Change {
        address,
        libvirt_name: net.libvirt_name.clone(),
        action: Action::Update,
        reasons,
        fields: changed,
        blast_radius: blast,
        after: Vec::new(),
        ops,
    })
}

fn same_host(r: &Reservation, h: &crate::host::observed::ObservedHost) -> bool {
    r.ip == h.ip && h.name.as_deref() == Some(r.host.as_str())
}

/// The NICs of `blast` that topo plugs back in, with their interface XML.
fn replugs(lab: &Lab, blast: &[Detached]) -> Vec<NicPlug> {
    blast
        .iter()
        .filter(|d| d.reattached)
        .filter_map(|d| {
            let vm = lab.vms.values().find(|v| v.libvirt_name == d.domain)?;
            let nic = vm.nics.iter().find(|n| n.mac == d.mac)?;
            let xml = crate::host::xml::interface_xml(lab, vm, nic).ok()?;
            Some(NicPlug { domain: d.domain.clone(), mac: d.mac, xml, netem: wanted_netem(nic) })
        })
        .collect()
}

/// Running domains with a NIC on `net`: replacing the network detaches them.
fn blast_radius(lab: &Lab, net: &Network, observed: &Observed) -> Vec<Detached> {
    let mut out = Vec::new();
    for d in observed.domains.values() {
        if d.state != DomainState::Running {
            continue;
        }
        let ours = d.ownership(lab) == Ownership::ThisLab && lab.vms.values().any(|v| v.libvirt_name == d.name);
        for i in &d.interfaces {
            if let (Some(mac), Some(n)) = (i.mac, i.network.as_deref())
                && n == net.libvirt_name
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

/// The file a disk of the domain opens now, when it is not `volume`'s path in the pool but
/// its chain holds that volume: the top layer of external snapshots above it, or the
/// volume by another path to the same file (a pool folder moved, a symlink left at the old
/// path). `None` when the disk is the volume's path, or no disk's chain holds it.
fn kept_top(o: &ObservedDomain, observed: &Observed, pool: &Pool, volume: &str) -> Option<String> {
    let overlay = pool.volume_path(volume);
    let name = volume.to_owned();
    (0..o.disks.len()).find_map(|i| {
        let chain = o.chain(i);
        let top = chain.first()?;
        if *top == overlay {
            return None;
        }
        chain
            .iter()
            .any(|f| match observed.same_file(f, &overlay) {
                crate::host::observed::Same::Yes => true,
                // No identity known: the lab's tagged name says it.
                crate::host::observed::Same::Maybe => f.rsplit('/').next() == Some(name.as_str()),
                crate::host::observed::Same::No => false,
            })
            .then(|| top.to_string())
    })
}

/// The domain XML to define for `vm`, keeping the observed UUID; its disk and seed disk
/// open `kept` when given ([`kept_top`]), else the overlay and the seed in the pool.
fn domain_define(
    lab: &Lab,
    vm: &Vm,
    desired: &Fields,
    pool: &Pool,
    o: Option<&ObservedDomain>,
    kept: (Option<String>, Option<String>),
) -> Option<Op> {
    let disk = kept.0.or_else(|| vm.overlay_name(&lab.name).map(|f| pool.volume_path(&f)));
    let seed = kept.1.or_else(|| seed_of(lab, vm).map(|(_, name)| pool.volume_path(&name)));
    let xml =
        crate::host::xml::domain_xml_with_seed(lab, vm, disk.as_deref(), seed.as_deref(), &fields::spec_hash(desired))
            .ok()?;
    Some(Op::DefineDomain { xml: crate::host::xml::with_uuid(&xml.xml, o.and_then(|o| o.uuid.as_deref())) })
}

/// The VM's cloud-init seed and its volume name, when cloud-init is on for it. (Validation
/// checked every input, so generating the seed does not fail for a validated lab.)
fn seed_of(lab: &Lab, vm: &Vm) -> Option<(crate::guest::Seed, String)> {
    let seed = crate::guest::Seed::of(lab, vm).ok()??;
    let name = seed.volume_name(lab, vm);
    Some((seed, name))
}

/// The seed volume `vm` needs, if cloud-init is on for it.
fn seed_volume(lab: &Lab, vm: &Vm) -> Option<Op> {
    let (seed, name) = seed_of(lab, vm)?;
    Some(Op::UploadSeed { pool: OVERLAY_POOL.to_string(), name, seed })
}

/// The volumes of the VM that its domain uses under the names the lab file asks for but
/// that the overlay pool no longer has (deleted outside topo): `("disk", overlay name)`,
/// `("cloud_init", seed name)`. Only an active pool lists its volumes: with the pool
/// inactive or missing nothing is known (the pool is started or created by the plan, and
/// the next plan looks again).
fn deleted_volumes(lab: &Lab, vm: &Vm, o: &ObservedDomain, observed: &Observed) -> Vec<(&'static str, String)> {
    let Some(pool) = observed.pool.as_ref().filter(|p| p.active) else { return Vec::new() };
    let path = |name: &str| format!("{}/{name}", pool.path.trim_end_matches('/'));
    let overlay = vm.overlay_name(&lab.name).map(|n| ("disk", n));
    let seed = seed_of(lab, vm).map(|(_, n)| ("cloud_init", n));
    overlay
        .into_iter()
        .chain(seed)
        .filter(|(_, name)| !observed.volumes.contains_key(name) && o.files().any(|f| f == path(name)))
        .collect()
}

/// The overlay volume `vm` needs, if it has a disk.
fn overlay_volume(lab: &Lab, vm: &Vm) -> Option<Op> {
    let d = vm.disk.as_ref()?;
    Some(Op::CreateVolume {
        volume: VolumeSpec {
            pool: OVERLAY_POOL.to_string(),
            name: vm.overlay_name(&lab.name)?,
            backing: d.image.display().to_string(),
            backing_format: d.format,
            size: d.size.map(|s| s.bytes()),
        },
    })
}

/// Restart-bound fields whose running value differs from the desired one even though the
/// persistent config may already match (a define done without the restart that follows).
fn pending_restart(lab: &Lab, o: &ObservedDomain, desired: &Fields) -> Vec<FieldChange> {
    let Some(live) = &o.live else { return Vec::new() };
    if *live == LiveConfig::of(o) {
        return Vec::new();
    }
    let running = ObservedDomain {
        virt_type: live.virt_type.clone(),
        memory_kib: live.memory_kib,
        vcpus: live.vcpus,
        kernel: live.kernel.clone(),
        initrd: live.initrd.clone(),
        cmdline: live.cmdline.clone(),
        ..o.clone()
    };
    diff(desired, &fields::observed_vm(lab, &running, desired)).into_iter().filter(|f| f.restarts).collect()
}

/// The NICs of a running lab VM that are off their network's bridge, as observed where each
/// tap is plugged (`ObservedDomain::links`): the plug op, the field shown, and the reason's
/// text for each. NICs are left out when nothing is known (remote host, taps not visible),
/// when their network is inactive or replaced by this plan (that change plugs them in), or
/// when their network changes (hot-plugged anyway).
fn unplugged_nics(
    lab: &Lab,
    vm: &Vm,
    o: &ObservedDomain,
    observed: &Observed,
    replaced: &BTreeSet<String>,
) -> Vec<(NicPlug, FieldChange, String)> {
    let (DomainState::Running, Some(links)) = (o.state, &o.links) else { return Vec::new() };
    let mut out = Vec::new();
    for nic in &vm.nics {
        let Some(net) = lab.networks.get(&nic.network) else { continue };
        let Some(on) = observed.networks.get(&net.libvirt_name).filter(|n| n.active) else { continue };
        let Some(want) = on.live_bridge.as_ref().or(on.bridge.as_ref()) else { continue };
        let same_network =
            o.interfaces.iter().any(|i| i.mac == Some(nic.mac) && i.network.as_deref() == Some(&net.libvirt_name));
        if replaced.contains(&net.libvirt_name) || !same_network {
            continue;
        }
        let Some(link) = links.iter().find(|l| l.mac == nic.mac) else { continue };
        if link.bridge.as_ref() == Some(want) {
            continue;
        }
        let Ok(xml) = crate::host::xml::interface_xml(lab, vm, nic) else { continue };
        let field = FieldChange {
            path: format!("nic[{}].bridge", nic.mac),
            before: Some(link.bridge.clone().unwrap_or_else(|| "none".into())),
            after: Some(want.clone()),
            forces_replacement: false,
            restarts: false,
        };
        let why = format!("{} ({}, tap {})", nic.label(), nic.mac, link.tap);
        out.push((
            NicPlug { domain: vm.libvirt_name.clone(), mac: nic.mac, xml, netem: wanted_netem(nic) },
            field,
            why,
        ));
    }
    out
}

/// The netem settings the lab file asks for on `nic`; `None` when it asks for none, or for
/// settings that do nothing (`delay: 0ms`).
fn wanted_netem(nic: &crate::lab::model::Nic) -> Option<Netem> {
    nic.impairment.netem.map(|n| n.normalized()).filter(|n| !n.is_none())
}

/// Live rate changes of the running VM's NICs that stay plugged where they are (a NIC
/// plugged in by `ops` gets its rate from its XML): one `SetBandwidth` per NIC whose
/// `nic[MAC].rate` field is in `changed`.
fn bandwidth_ops(vm: &Vm, changed: &[FieldChange], ops: &[Op]) -> Vec<Op> {
    vm.nics
        .iter()
        .filter(|nic| changed.iter().any(|f| f.path == format!("nic[{}].rate", nic.mac)))
        .filter(|nic| !ops.iter().any(|op| matches!(op, Op::AttachNic { mac, .. } if *mac == nic.mac)))
        .map(|nic| Op::SetBandwidth { mac: nic.mac, rate: nic.impairment.rate })
        .collect()
}

/// The netem steps of a VM after `ops` ran: on a tap that `ops` makes new (the VM is started
/// or resumed, the NIC hot-plugged) the lab file's settings are set when it has any; on a tap
/// that stays, they are set when they differ from what `tc` shows there
/// (`ObservedDomain::links`), with the field and the reason's text (`eth0 (tap vnet3)`), and
/// also, unchanged, after its rate is set live (libvirt then clears the tap's qdiscs). NICs
/// re-plugged by `ReattachNics` get theirs from their `NicPlug`. Nothing for a VM that does
/// not run afterwards.
fn netem_ops(vm: &Vm, o: Option<&ObservedDomain>, ops: &[Op]) -> (Vec<Op>, Vec<FieldChange>, Vec<String>) {
    let starts = ops.iter().any(|op| matches!(op, Op::StartDomain | Op::ResumeDomain));
    let stops = ops.iter().any(|op| matches!(op, Op::StopDomain { .. }));
    let runs = o.is_some_and(|o| o.state == DomainState::Running);
    let (mut out, mut fields, mut why) = (Vec::new(), Vec::new(), Vec::new());
    if !(starts || (runs && !stops)) {
        return (out, fields, why);
    }
    for nic in &vm.nics {
        let want = wanted_netem(nic);
        let replugged =
            ops.iter().any(|op| matches!(op, Op::ReattachNics { nics } if nics.iter().any(|p| p.mac == nic.mac)));
        if replugged {
            continue;
        }
        let new_tap = starts || ops.iter().any(|op| matches!(op, Op::AttachNic { mac, .. } if *mac == nic.mac));
        if new_tap {
            if want.is_some() {
                out.push(Op::SetNetem { mac: nic.mac, netem: want });
            }
            continue;
        }
        // A rate set live on a tap that stays: libvirt clears the tap's qdiscs, so the lab's
        // netem is set again whether or not it changed; a change is still shown as one.
        let rate_set = ops.iter().any(|op| matches!(op, Op::SetBandwidth { mac, .. } if *mac == nic.mac));
        let set_again = |out: &mut Vec<Op>| {
            if rate_set && want.is_some() {
                out.push(Op::SetNetem { mac: nic.mac, netem: want });
            }
        };
        let Some(link) = o.and_then(|o| o.links.as_ref()).and_then(|l| l.iter().find(|l| l.mac == nic.mac)) else {
            // Not known here: refused before planning when netem is asked (find_conflicts).
            set_again(&mut out);
            continue;
        };
        let have = match &link.qdiscs {
            Some(q) => q.netem.map(|(_, n)| n),
            None if want.is_none() => continue,
            None => None, // tc's view could not be read: set it (apply reports tc's error)
        };
        if have == want {
            set_again(&mut out);
            continue;
        }
        let show = |n: Option<Netem>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
        fields.push(FieldChange {
            path: format!("nic[{}].netem", nic.mac),
            before: Some(if link.qdiscs.is_some() { show(have) } else { "unknown (tc could not read the tap)".into() }),
            after: Some(show(want)),
            forces_replacement: false,
            restarts: false,
        });
        why.push(format!("{} (tap {})", nic.label(), link.tap));
        out.push(Op::SetNetem { mac: nic.mac, netem: want });
    }
    (out, fields, why)
}

fn plan_vm(lab: &Lab, vm: &Vm, observed: &Observed, pool: &Pool, replaced: &BTreeSet<String>) -> Option<Change> {
    let address = Address::Vm(vm.name.clone());
    let desired = fields::desired_vm(lab, vm);
    let o = observed.domains.get(&vm.libvirt_name);
    let define = domain_define(lab, vm, &desired, pool, o, (None, None));
    // `state: stopped`: defined, disk kept, not running.
    let run = vm.state == VmState::Running;
    let Some(o) = o else {
        let mut ops: Vec<Op> = overlay_volume(lab, vm).into_iter().collect();
        ops.extend(seed_volume(lab, vm));
        ops.extend(define);
        if run {
            ops.push(Op::StartDomain);
        }
        let (netem, _, _) = netem_ops(vm, None, &ops);
        ops.extend(netem);
        let mut c = creation(address, &vm.libvirt_name, &desired, ops);
        if run {
            for nic in &vm.nics {
                if let Some(n) = wanted_netem(nic) {
                    c.fields.push(FieldChange {
                        path: format!("nic[{}].netem", nic.mac),
                        before: None,
                        after: Some(n.to_string()),
                        forces_replacement: false,
                        restarts: false,
                    });
                }
            }
            c.fields.sort_by(|a, b| a.path.cmp(&b.path));
        }
        if !run {
            // Created stopped: said, since "will be created" reads as running.
            c.fields.push(FieldChange {
                path: "state".into(),
                before: None,
                after: Some(vm.state.to_string()),
                forces_replacement: false,
                restarts: false,
            });
            c.fields.sort_by(|a, b| a.path.cmp(&b.path));
        }
        return Some(c);
    };
    let obs = fields::observed_vm(lab, o, &desired);
    let mut changed = diff(&desired, &obs);
    let mut config_changed = changed.iter().any(|f| f.path != "state");
    for f in pending_restart(lab, o, &desired) {
        if !changed.iter().any(|c| c.path == f.path) {
            changed.push(f);
        }
    }
    let mut reasons = Vec::new();
    if config_changed {
        reasons.push(if drifted(o.owner.as_ref(), &desired) { Reason::Drift } else { Reason::LabFileChanged });
    }
    if let Some((reason, field)) = retag(lab, o.owner.as_ref()) {
        // Written by the define of whatever else changes (a replace, a restart), or by the
        // in-place define below: never a restart or a replacement of its own.
        reasons.push(reason);
        changed.push(field);
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        config_changed = true;
    }
    let gone = deleted_volumes(lab, vm, o, observed);
    if !gone.is_empty() {
        reasons.push(Reason::DeletedOutsideTopo { volumes: gone.iter().map(|(_, name)| name.clone()).collect() });
        for (path, name) in &gone {
            // The overlay's content is lost: the VM is replaced. The seed is the same
            // content again (its name is its hash): uploaded in place below.
            let overlay = *path == "disk";
            if !changed.iter().any(|f| f.path == *path) {
                let after = desired.get(*path).map(|v| v.value.clone()).unwrap_or_else(|| name.clone());
                changed.push(FieldChange {
                    path: path.to_string(),
                    before: Some(format!("{name} (deleted outside topo)")),
                    after: Some(after),
                    forces_replacement: overlay,
                    restarts: false,
                });
            }
        }
        changed.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let forced: Vec<String> = changed.iter().filter(|f| f.forces_replacement).map(|f| f.path.clone()).collect();
    if !forced.is_empty() {
        reasons.push(Reason::RequiresReplace { fields: forced });
        let mut ops = Vec::new();
        if o.state != DomainState::Shutoff {
            // Its disk is deleted next: nothing to shut down gracefully for.
            ops.push(Op::StopDomain { shutdown: Shutdown::Force });
        }
        if let Some((op, reason, field)) = snapshot_removal(o) {
            // First, while the VM still runs: should it fail, the VM is left as it was.
            ops.insert(0, op);
            reasons.push(reason);
            changed.push(field);
            changed.sort_by(|a, b| a.path.cmp(&b.path));
        }
        ops.push(Op::UndefineDomain);
        ops.extend(domain_volumes(lab, o, observed, pool));
        ops.extend(overlay_volume(lab, vm));
        ops.extend(seed_volume(lab, vm));
        ops.extend(define);
        if run {
            ops.push(Op::StartDomain);
        }
        let (netem, _, _) = netem_ops(vm, Some(o), &ops);
        ops.extend(netem);
        return Some(Change {
            address,
            libvirt_name: vm.libvirt_name.clone(),
            action: Action::Replace,
            reasons,
            // The run state a replacement ends in is shown when the file asks for `stopped`.
            fields: changed.into_iter().filter(|f| f.path != "state" || !run).collect(),
            blast_radius: Vec::new(),
            after: Vec::new(),
            ops,
        });
    }
    let restart: Vec<String> = changed.iter().filter(|f| f.restarts).map(|f| f.path.clone()).collect();
    let mut ops = Vec::new();
    // The VM keeps its disk: a define keeps the file its disk opens now (the top layer of
    // an external snapshot above the lab's overlay, or the overlay by the path the domain
    // names it), so no layer is dropped from under it.
    let kept = |volume: Option<String>| volume.and_then(|v| kept_top(o, observed, pool, &v));
    let mut define = match (kept(vm.overlay_name(&lab.name)), kept(seed_of(lab, vm).map(|(_, n)| n))) {
        (None, None) => define,
        (disk, seed) => domain_define(lab, vm, &desired, pool, Some(o), (disk, seed)),
    };
    if gone.iter().any(|(path, _)| *path == "cloud_init") {
        // First: a start or restart below needs it.
        ops.extend(seed_volume(lab, vm));
    }
    if !o.persistent && o.state != DomainState::Shutoff {
        // Undefined by hand while running: libvirt forgets a transient domain when it
        // stops, so its config is defined again before any stop below (and only once).
        reasons.push(Reason::UndefinedOutsideTopo);
        changed.push(FieldChange {
            path: "persistent".into(),
            before: Some("no (transient)".into()),
            after: Some("yes".into()),
            forces_replacement: false,
            restarts: false,
        });
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        ops.extend(define.take());
    }
    if !run {
        // Stopped first (so NIC changes below touch the config only); a paused or crashed
        // VM has no guest to ask.
        match o.state {
            DomainState::Shutoff => {}
            DomainState::Running => {
                reasons.push(Reason::StopRequested);
                ops.push(Op::StopDomain { shutdown: Shutdown::Graceful });
            }
            DomainState::Paused | DomainState::Other => {
                reasons.push(Reason::StopRequested);
                ops.push(Op::StopDomain { shutdown: Shutdown::Force });
            }
        }
    }
    if !run && !restart.is_empty() {
        // A VM that stays stopped takes the new settings at its next start: the config
        // is rewritten (it carries the NICs too), nothing restarts.
        for f in &mut changed {
            f.restarts = false;
        }
        ops.extend(define);
    } else if !restart.is_empty() {
        // Stop, then define, then start: a death between any two leaves a state the next
        // plan sees (stopped with the old config, or stopped with the new one), never a
        // running VM whose config already matches while it runs the old settings. The new
        // definition carries the NICs, so none is hot-plugged.
        reasons.push(Reason::RequiresRestart { fields: restart });
        if o.state != DomainState::Shutoff {
            ops.push(Op::StopDomain { shutdown: Shutdown::Graceful });
        }
        ops.extend(define);
        ops.push(Op::StartDomain);
        let (netem, _, _) = netem_ops(vm, Some(o), &ops);
        ops.extend(netem);
    } else {
        // NICs: hot-plugged by MAC, live and config together. A NIC whose network changed
        // is unplugged and plugged again.
        let observed_nics: BTreeMap<MacAddr, Option<&str>> =
            o.interfaces.iter().filter_map(|i| Some((i.mac?, i.network.as_deref()))).collect();
        for (mac, net) in &observed_nics {
            let want = vm.nics.iter().find(|n| n.mac == *mac).and_then(|n| lab.networks.get(&n.network));
            if want.map(|w| w.libvirt_name.as_str()) != *net {
                let network = net.unwrap_or_default().to_string();
                let xml = crate::host::xml::plain_interface_xml(*mac, &network);
                ops.push(Op::DetachNic { mac: *mac, network, xml });
            }
        }
        for nic in &vm.nics {
            let want = lab.networks.get(&nic.network).map(|w| w.libvirt_name.as_str());
            if observed_nics.get(&nic.mac).copied().flatten() != want
                && let Ok(xml) = crate::host::xml::interface_xml(lab, vm, nic)
            {
                ops.push(Op::AttachNic { mac: nic.mac, xml });
            }
        }
        let cut = unplugged_nics(lab, vm, o, observed, replaced);
        if !cut.is_empty() {
            let mut nics = Vec::new();
            let mut why = Vec::new();
            for (plug, field, text) in cut {
                nics.push(plug);
                changed.push(field);
                why.push(text);
            }
            reasons.push(Reason::Unplugged { nics: why });
            ops.push(Op::ReattachNics { nics });
        }
        // Live first, then the config: a stop between leaves the config behind, which the
        // next plan sees; the other way round a live change would go unnoticed.
        if run && o.state == DomainState::Running {
            let bw = bandwidth_ops(vm, &changed, &ops);
            ops.extend(bw);
        }
        if config_changed {
            // Rewrite the config so the metadata's spec hash matches the file again.
            ops.extend(define);
        }
        match o.state {
            // Stopped above when the file says so.
            _ if !run => {}
            DomainState::Running => {}
            DomainState::Shutoff => {
                reasons.push(Reason::NotRunning);
                ops.push(Op::StartDomain);
            }
            // libvirt refuses to start a paused domain ("already running"): resume it.
            DomainState::Paused => {
                reasons.push(Reason::Paused);
                ops.push(Op::ResumeDomain);
            }
            // Crashed, suspended by the host, shutting down: forced off, then started.
            DomainState::Other => {
                reasons.push(Reason::NotRunning);
                ops.push(Op::StopDomain { shutdown: Shutdown::Force });
                ops.push(Op::StartDomain);
            }
        }
        let (netem, fields, why) = netem_ops(vm, Some(o), &ops);
        if !why.is_empty() {
            reasons.push(Reason::Netem { nics: why });
            changed.extend(fields);
        }
        ops.extend(netem);
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
        after: Vec::new(),
        ops,
    })
}

/// Everything that stops the plan before anything is touched, all at once.
fn find_conflicts(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let held = other_instances(lab, observed);
    if !held.is_empty() {
        // The same libvirt names are another lab file's: every other check would only
        // repeat this one (names taken, subnets overlapping themselves).
        return held;
    }
    let mut out = Vec::new();
    let conflict = Problem::at;
    let owner_text = |o: Option<&crate::host::observed::OwnerTag>, name: &str| match o {
        Some(t) if t.name.is_empty() => {
            format!("tagged by topo lab `{}` without the object's name (an older topo): not trusted", t.lab)
        }
        Some(t) if t.name != name => format!("a copy of `{}` of topo lab `{}`, not the lab's own", t.name, t.lab),
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
            (NetworkKind::External, Some(o)) => {
                // What verification may ask in: libvirt's subnet, else the declared one.
                let libvirt_subnet = o.ip.as_ref().and_then(|ip| {
                    let any = ipnetwork::Ipv4Network::new(ip.address, ip.prefix).ok()?;
                    ipnetwork::Ipv4Network::new(any.network(), ip.prefix).ok()
                });
                match (libvirt_subnet, net.declared_subnet) {
                    (Some(have), Some(declared)) if have != declared => out.push(conflict(
                        Code::ExternalSubnetMismatch,
                        net.span,
                        format!(
                            "external network `{}` is declared with subnet {declared}, but libvirt reports {have}",
                            net.libvirt_name
                        ),
                        "declared external here",
                        format!("write `subnet: {have}`, or remove `subnet:` (libvirt's is used)"),
                    )),
                    // A network without a host bridge is refused below, with its reason.
                    (None, None) if no_host_bridge(o).is_none() => {
                        for (vm, nic) in lab.nics().filter(|(_, n)| n.network == net.name && n.verify == Verify::Arp) {
                            out.push(conflict(
                                Code::ExternalUnprovable,
                                nic.span,
                                format!(
                                    "{} of vm `{}` is on external network `{}`, which has no IPv4 address in \
                                     libvirt (a bridge to a LAN): its address cannot be proven by ARP without \
                                     sweeping a LAN topo knows nothing of",
                                    nic.label(),
                                    vm.name,
                                    net.libvirt_name
                                ),
                                "verified by ARP (`verify: arp`, the default)",
                                format!(
                                    "set `verify: none` on this NIC, or declare the LAN's subnet on the network \
                                     (`subnet: 192.168.1.0/24` beside `external: true` under `{}`)",
                                    net.name
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
                out.extend(external_unserved(lab, net, o));
            }
            (NetworkKind::Managed(_), Some(o)) if o.ownership(lab) != Ownership::ThisLab => {
                out.push(conflict(
                    Code::NetworkNameTaken,
                    net.span,
                    format!(
                        "network name `{}` is already taken on the host by a network this lab does not own ({})",
                        net.libvirt_name,
                        owner_text(o.owner.as_ref(), &o.name)
                    ),
                    "this network would be created as that name",
                    "rename the network or set another `prefix:`; to use the existing network, declare it with `external: true`. topo never adopts or overwrites objects it did not create".into(),
                ));
            }
            (NetworkKind::Managed(m), _) => {
                for other in observed.networks.values() {
                    if other.ownership(lab) == Ownership::ThisLab {
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
                                owner_text(other.owner.as_ref(), &other.name)
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
                // A route of the host with exactly this subnet (a VPN, docker0, a hand-made
                // bridge): libvirt refuses to start the network (bridge_driver_linux.c
                // `networkCheckRouteCollision`), for a create or a replace alike, and a
                // replace would have stopped the working network first. Routes on libvirt
                // networks' bridges are left out: the lab's own are replaced with them, and
                // other networks' subnets are refused above from their XML.
                if let (Some(subnet), Some(routes)) = (m.subnet, &observed.host_routes)
                    && starts_network(m, &net.libvirt_name, observed)
                {
                    let bridges: BTreeSet<&str> = observed
                        .networks
                        .values()
                        .flat_map(|n| n.live_bridge.iter().chain(n.bridge.iter()))
                        .map(String::as_str)
                        .collect();
                    for r in routes.iter().filter(|r| !bridges.contains(r.device.as_str()) && r.collides(subnet)) {
                        out.push(Problem::at(
                            Code::HostRouteTaken,
                            net.span,
                            format!(
                                "subnet {subnet} of network `{}` is already a route of the host, through `{}`: \
                                 libvirt refuses to start a network on it (\"Network is already in use by interface {}\")",
                                net.name, r.device, r.device
                            ),
                            "this network would start on that subnet",
                            format!(
                                "pick a subnet that no route of the host uses (see `ip -4 route`), or take `{}` down first",
                                r.device
                            ),
                        ));
                    }
                }
                // An interface of that name that no libvirt network has: the kernel refuses
                // a second one (libvirt's virNetDevBridgeCreate fails with EEXIST at start).
                if let (Some(b), Some(ifaces)) = (&m.bridge, &observed.host_interfaces)
                    && ifaces.contains(b.as_str())
                    && !observed.networks.values().any(|o| {
                        o.bridge.as_deref() == Some(b.as_str()) || o.live_bridge.as_deref() == Some(b.as_str())
                    })
                {
                    out.push(Problem::at(
                        Code::HostInterfaceTaken,
                        net.span,
                        format!(
                            "bridge `{b}` of network `{}` already exists on the host as an interface that is no libvirt network's",
                            net.name
                        ),
                        "this network's bridge",
                        "choose another `bridge:` name (see `ip link`), or leave it out and libvirt picks a free virbrN",
                    ));
                }
            }
        }
    }
    // A MAC that a guest outside the lab already has on the same network: two guests with
    // one MAC on one bridge break each other's traffic and DHCP (dnsmasq keys leases and
    // reservations by MAC). Checked where topo would bring the MAC onto the network (a NIC
    // the lab's domain does not have yet); a copy made later is the copier's conflict.
    for vm in lab.vms.values() {
        let ours = observed.domains.get(&vm.libvirt_name).filter(|d| d.ownership(lab) == Ownership::ThisLab);
        for nic in &vm.nics {
            let Some(net) = lab.networks.get(&nic.network) else { continue };
            let present = ours.is_some_and(|d| {
                d.interfaces
                    .iter()
                    .any(|i| i.mac == Some(nic.mac) && i.network.as_deref() == Some(net.libvirt_name.as_str()))
            });
            if present {
                continue;
            }
            let bridge =
                observed.networks.get(&net.libvirt_name).and_then(|o| o.live_bridge.clone().or(o.bridge.clone()));
            let holder = observed.domains.values().filter(|d| d.ownership(lab) != Ownership::ThisLab).find(|d| {
                d.interfaces.iter().any(|i| {
                    i.mac == Some(nic.mac)
                        && (i.network.as_deref() == Some(net.libvirt_name.as_str())
                            || (i.bridge.is_some() && i.bridge == bridge))
                })
            });
            if let Some(d) = holder {
                let help = if nic.mac_derived {
                    "set another `mac:` on this NIC (derived MACs can collide with hand-picked ones)"
                } else {
                    "choose another `mac:` for this NIC, or remove it to get a derived one"
                };
                out.push(Problem::at(
                    Code::HostMacTaken,
                    nic.span,
                    format!(
                        "{}.{}: MAC {} is already used on network `{}` by domain `{}` ({})",
                        vm.name,
                        nic.label(),
                        nic.mac,
                        net.libvirt_name,
                        d.name,
                        owner_text(d.owner.as_ref(), &d.name)
                    ),
                    "this NIC",
                    help,
                ));
            }
        }
    }
    // A NIC whose MAC is its network's bridge's own: the bridge holds its own address as a
    // local forwarding entry, so frames to that MAC are passed up to the host and never
    // forwarded to the guest's port (Linux net/bridge/br_input.c `br_handle_frame_finish`,
    // a local `dst`; the host's own frames to it are dropped, br_device.c `br_dev_xmit` ->
    // br_forward.c with no port), and the guest's frames carry the bridge's address as
    // source (net/bridge/br_fdb.c `br_fdb_update`: "received packet on ... with own
    // address as source address"): no DHCP reply or ARP reply ever reaches the guest.
    // Lab networks topo creates get a derived bridge MAC that validation keeps apart from
    // every NIC's (`bridge_mac` in validate); external networks and lab networks made by an
    // older topo have libvirt's random one (52:54:00:.., generated at define), known only
    // once the network exists: checked here, for lab and external networks alike.
    for vm in lab.vms.values() {
        for nic in &vm.nics {
            let Some(net) = lab.networks.get(&nic.network) else { continue };
            let Some(o) = observed.networks.get(&net.libvirt_name) else { continue };
            let bridge = o.live_bridge.as_ref().or(o.bridge.as_ref());
            let held = if o.mac == Some(nic.mac) {
                Some(format!(
                    "the MAC of the bridge of network `{0}` on the host (`<mac address>` in `virsh net-dumpxml {0}`)",
                    net.libvirt_name
                ))
            } else {
                bridge.filter(|b| observed.bridge_macs.get(*b).is_some_and(|m| m.contains(&nic.mac))).map(|b| {
                    format!(
                        "an address that bridge `{b}` of network `{}` holds as its own on the host (the bridge's or one of its ports', /sys/class/net)",
                        net.libvirt_name
                    )
                })
            };
            if let Some(held) = held {
                let help = if nic.mac_derived {
                    "set `mac:` on this NIC to another address (a derived MAC collided with one of the bridge's)"
                } else {
                    "choose another `mac:` for this NIC, or remove it to get a derived one"
                };
                out.push(Problem::at(
                    Code::HostBridgeMac,
                    nic.span,
                    format!(
                        "{}.{}: MAC {} is {held}: the bridge keeps frames to its own addresses for the host, so the guest would get no DHCP or ARP reply",
                        vm.name,
                        nic.label(),
                        nic.mac,
                    ),
                    "this NIC",
                    help,
                ));
            }
        }
    }
    out.extend(paths::conflicts(lab, observed));
    for vm in lab.vms.values() {
        if let Some(o) = observed.domains.get(&vm.libvirt_name)
            && o.ownership(lab) != Ownership::ThisLab
        {
            out.push(conflict(
                Code::VmNameTaken,
                vm.span,
                format!(
                    "VM name `{}` is already taken on the host by a domain this lab does not own ({})",
                    vm.libvirt_name,
                    owner_text(o.owner.as_ref(), &o.name)
                ),
                "this VM would be created as that name",
                "rename the VM or set another `prefix:`; topo never adopts or overwrites objects it did not create"
                    .into(),
            ));
        }
    }
    // netem is set with tc on the VM's tap, a device of the libvirt host: topo must run
    // there, in the daemon's network namespace. (`rate:` goes through libvirt: any URI.)
    for vm in lab.vms.values() {
        let running = observed
            .domains
            .get(&vm.libvirt_name)
            .filter(|d| d.ownership(lab) == Ownership::ThisLab && d.state == DomainState::Running);
        for nic in vm.nics.iter().filter(|n| wanted_netem(n).is_some()) {
            let span = nic.netem_span.unwrap_or(nic.span);
            let who = format!("{}.{}", vm.name, nic.label());
            if observed.host_interfaces.is_none() {
                out.push(Problem::at(
                    Code::NetemUnreachable,
                    span,
                    format!(
                        "{who}: delay, jitter and loss are set with tc on the VM's tap, which is on the libvirt host, \
                         and the URI names another host (or the test driver, which has no taps)"
                    ),
                    "netem needs the tap on this machine",
                    "run topo on the libvirt host itself (e.g. qemu:///system), or remove `delay`, `jitter` and `loss`; \
                     `rate:` works on every URI (libvirt's <bandwidth>)",
                ));
            } else if running.is_some_and(|d| d.links.is_none()) {
                out.push(Problem::at(
                    Code::NetemUnreachable,
                    span,
                    format!(
                        "{who}: the VM's taps are not visible from here (topo runs in another network namespace than \
                         libvirtd), so their netem settings can be neither read nor set"
                    ),
                    "netem needs the tap",
                    "run topo in the daemon's network namespace (`ip netns exec NS topo ...`)",
                ));
            }
        }
    }
    out.extend(kernel_refusals(lab, observed));
    out
}

/// NICs whose `delay`/`jitter`/`loss` (netem) or `rate` (libvirt's `<bandwidth>`: htb, sfq,
/// fw, ingress, u32, police) need what the host kernel was built without: the kernel would
/// refuse them at apply ("Specified qdisc kind is unknown"), after the network and other VMs
/// were made. Only where the kernel is known (a local host with a readable config).
fn kernel_refusals(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    use crate::host::kernel::KernelFeature;
    let Some(kernel) = &observed.kernel else { return Vec::new() };
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        for nic in &vm.nics {
            let who = format!("{}.{}", vm.name, nic.label());
            let mut refuse = |need: &[KernelFeature], span: Option<miette::SourceSpan>, what: &str, key: &str| {
                let lacks = kernel.lacks(need);
                if lacks.is_empty() {
                    return;
                }
                let names: Vec<String> = lacks.iter().map(|f| f.to_string()).collect();
                let modules: Vec<&str> = lacks.iter().map(|f| f.module()).collect();
                out.push(Problem::at(
                    Code::KernelLacksQdisc,
                    span.unwrap_or(nic.span),
                    format!(
                        "{who}: the host kernel was built without {} (read from {}), which {what} needs: the kernel \
                         would refuse it at apply",
                        names.join(", "),
                        kernel.source
                    ),
                    "the kernel cannot do this",
                    format!(
                        "run a kernel built with these (=y, or =m and then `modprobe -a {}`), or remove `{key}` from the lab file",
                        modules.join(" ")
                    ),
                ));
            };
            if wanted_netem(nic).is_some() {
                refuse(
                    &KernelFeature::NETEM,
                    nic.netem_span,
                    "netem on the VM's tap (`delay`, `jitter`, `loss`)",
                    "delay`/`jitter`/`loss",
                );
            }
            if nic.impairment.rate.is_some() {
                refuse(
                    &KernelFeature::RATE,
                    nic.rate_span,
                    "libvirt's <bandwidth> for `rate` (htb, sfq and a fw filter; ingress, u32 and police)",
                    "rate",
                );
            }
        }
    }
    out
}

/// Why ARP verification cannot prove the NICs on external network `o`, when it cannot:
/// `None` when it can (a bridge on this host and a DHCP server libvirt runs or the LAN's).
///
/// - libvirt's `<forward>` modes `private`, `vepa`, `passthrough` and `bridge` without a
///   `<bridge name>` put each guest on a macvtap device over a host NIC (libvirt
///   src/network/bridge_driver.c `networkAllocatePort`, `VIR_DOMAIN_NET_TYPE_DIRECT`), and
///   `hostdev` hands the guest a PCI function: no host bridge carries the guest's frames,
///   and a macvtap guest cannot reach its host through the lower device at all (macvtap
///   sends the lower device's traffic out, never up to the host's own stack).
/// - an `<ip>` without `<dhcp>`: libvirt's dnsmasq serves no addresses (bridge_driver.c
///   `networkDnsmasqConfContents` writes `dhcp-range` only from `<range>`, `dhcp-host` only
///   from `<host>`), so a NIC whose MAC has no `<host>` entry gets none.
fn unprovable_on(o: &ObservedNetwork, mac: MacAddr) -> Option<String> {
    if let Some(why) = no_host_bridge(o) {
        return Some(why);
    }
    let ip = o.ip.as_ref()?;
    (ip.dhcp_range.is_none() && !ip.hosts.iter().any(|h| h.mac == mac)).then(|| {
        format!(
            "has an IPv4 address in libvirt ({}/{}) but no DHCP range{}: libvirt's dnsmasq gives this NIC no address",
            ip.address,
            ip.prefix,
            if ip.hosts.is_empty() { "" } else { " and no `<host>` entry for this NIC's MAC" }
        )
    })
}

/// Why no bridge on this host carries the frames of guests on network `o` (its forward
/// mode; see [`unprovable_on`]), `None` for a bridge.
fn no_host_bridge(o: &ObservedNetwork) -> Option<String> {
    const CANNOT: &str = "no host bridge carries the guest's frames, and a macvtap guest cannot reach its own host";
    match &o.mode {
        ObservedMode::Other(m) if matches!(m.as_str(), "private" | "vepa" | "passthrough") => {
            Some(format!("forwards by macvtap (`<forward mode='{m}'>`): {CANNOT}"))
        }
        ObservedMode::Other(m) if m == "bridge" && o.bridge.is_none() => Some(format!(
            "forwards by macvtap (`<forward mode='bridge'>` over a host interface, with no `<bridge name>`): {CANNOT}"
        )),
        ObservedMode::Other(m) if m == "hostdev" => Some(
            "hands each guest a host PCI device (`<forward mode='hostdev'>`): no host bridge carries the guest's frames"
                .into(),
        ),
        _ => None,
    }
}

/// Refusals for the NICs with `verify: arp` on external network `net` (found on the host as
/// `o`) that verification could only fail, 120 s after apply ([`unprovable_on`]): said at
/// plan time, at the NIC, with the fix (`verify: none`; the NIC's address is then the
/// guest's business and `topo verify` lists it as skipped).
fn external_unserved(lab: &Lab, net: &Network, o: &ObservedNetwork) -> Vec<Problem> {
    lab.nics()
        .filter(|(_, n)| n.network == net.name && n.verify == Verify::Arp)
        .filter_map(|(vm, nic)| {
            let why = unprovable_on(o, nic.mac)?;
            Some(Problem::at(
                Code::ExternalUnprovable,
                nic.span,
                format!(
                    "{} of vm `{}` is on external network `{}`, which {why}: ARP verification could not prove its address",
                    nic.label(),
                    vm.name,
                    net.libvirt_name
                ),
                "verified by ARP (`verify: arp`, the default)",
                "set `verify: none` on this NIC (configure its address in the guest yourself), or put it on a network \
                 whose bridge and DHCP libvirt runs on this host",
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
