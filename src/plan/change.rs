//! The plan's types: what happens to each resource (`Change`), why (`Reason`), the libvirt
//! operations that do it (`Op`), and the refusals (`PlanError`).

use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use serde::{Deserialize, Serialize};

use crate::diag::{Code, Problem};
use crate::host::hypervisor::VolumeSpec;
use crate::lab::address::Address;
use crate::lab::impair::{Netem, Rate};
use crate::lab::model::{MacAddr, PoolName, VolumeName};
use crate::plan::fields::Field;

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
    RequiresReplace { fields: Vec<Field> },
    /// The network is defined but not active (after a host reboot, or stopped by hand).
    NotActive,
    /// The VM is defined but not running.
    NotRunning,
    /// The VM's config changes take effect only after a restart.
    RequiresRestart { fields: Vec<Field> },
    /// These fields of NICs of the running VM cannot change on a running NIC (a NIC's
    /// `mtu`: QEMU sets virtio's `host_mtu` when it makes the device; a NIC's reserved `ip`:
    /// the guest keeps its DHCP lease): each such NIC is unplugged and plugged in again with
    /// its new settings, without a restart.
    Replugged { fields: Vec<Field> },
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
    /// plugged in again.
    Unplugged { nics: Vec<NicTap> },
    /// The network the tunnel is a port of gets a new bridge (created, replaced or started
    /// again): the tunnel is made a port of it again.
    NetworkRenewed,
    /// A VM the wire joins is started, or the wire's NIC plugged, by this plan: its tap is
    /// made anew, and the host joins the wire's taps again.
    WireEndRenewed,
    /// The lab owned this network and now declares it `external: true`: topo releases it
    /// (removes its owner tag) and leaves it running.
    Released,
    /// The netem settings (`delay`, `jitter`, `loss`) on the taps of these NICs of the
    /// running VM differ from the lab file: they are set in place with tc.
    Netem { nics: Vec<NicTap> },
    /// The running VM's persistent config was removed outside topo (`virsh undefine` while
    /// it runs): libvirt keeps it as a transient domain, which is gone once it stops. Its
    /// config is defined again, in place, before anything stops it. Source of the rule:
    /// libvirt's virDomainUndefine of an active domain, virDomainIsPersistent.
    UndefinedOutsideTopo,
    /// These volumes of the VM (names in the overlay pool) were deleted outside topo
    /// (`virsh vol-delete`, a file removed) while its domain still uses them: a seed is
    /// uploaded again with the same content, in place; a lost overlay replaces the VM.
    DeletedOutsideTopo { volumes: Vec<VolumeName> },
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
    /// The reason's kind, as its `kind` key in the plan's JSON and the saved plan:
    /// `not-on-host`, `requires-replace`, ... The wording for people is the renderers'
    /// ([`render`](super::render)).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::NotOnHost => "not-on-host",
            Reason::NotInLabFile => "not-in-lab-file",
            Reason::LabFileChanged => "lab-file-changed",
            Reason::Drift => "drift",
            Reason::RequiresReplace { .. } => "requires-replace",
            Reason::NotActive => "not-active",
            Reason::NotRunning => "not-running",
            Reason::RequiresRestart { .. } => "requires-restart",
            Reason::Replugged { .. } => "replugged",
            Reason::DestroyRequested => "destroy-requested",
            Reason::StopRequested => "stop-requested",
            Reason::Paused => "paused",
            Reason::Orphaned => "orphaned",
            Reason::InterruptedUpload => "interrupted-upload",
            Reason::PoolNeeded => "pool-needed",
            Reason::Unplugged { .. } => "unplugged",
            Reason::Released => "released",
            Reason::NetworkRenewed => "network-renewed",
            Reason::WireEndRenewed => "wire-end-renewed",
            Reason::Netem { .. } => "netem",
            Reason::UndefinedOutsideTopo => "undefined-outside-topo",
            Reason::DeletedOutsideTopo { .. } => "deleted-outside-topo",
            Reason::Snapshots { .. } => "snapshots",
            Reason::Adopted => "adopted",
            Reason::TakenOver { .. } => "taken-over",
        }
    }
}

/// A NIC of a running VM as a reason names it: where it is in the VM's list, its MAC, and
/// the tap device it is plugged in through (as observed on the host).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NicTap {
    /// Position in the VM's `nics` list (0-based), shown as `eth0`, `eth1`, ...
    /// ([`nic_label`](crate::lab::model::nic_label)).
    pub index: usize,
    pub mac: MacAddr,
    /// The tap device's name on the host (`vnet3`).
    pub tap: String,
}

/// One field's difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Which field; shown and saved as its path (`memory`, `nic[MAC].rate`).
    pub path: Field,
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
    /// domain that is not is refused unless the user insists (see [`check_foreign`](super::check_foreign)).
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
        name: PoolName,
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
    /// Make the tunnel on the host's machine what `tunnel` says (create it, or fix its peers,
    /// MTU, bridge and state in place), idempotently.
    EnsureTunnel {
        tunnel: crate::host::tunnel::TunnelSpec,
    },
    /// Join taps `a` and `b` into a wire on the host's machine: each one's received frames
    /// sent out the other (`crate::host::tc::join_script`), made anew, so idempotent.
    JoinWire {
        a: String,
        b: String,
    },
    /// Delete the tunnel device `device` (gone already is done).
    DeleteTunnel {
        device: String,
    },
    /// Re-plug NICs of running domains after their network was restarted.
    ReattachNics {
        nics: Vec<NicPlug>,
    },
    CreateVolume {
        volume: VolumeSpec,
    },
    DeleteVolume {
        pool: PoolName,
        name: VolumeName,
    },
    /// Create the VM's cloud-init seed volume `name` in `pool`: the FAT image of `seed`
    /// (made at apply time, the same bytes on every run), uploaded through libvirt.
    UploadSeed {
        pool: PoolName,
        name: VolumeName,
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
            Op::EnsureTunnel { .. } => "ensure-tunnel",
            Op::DeleteTunnel { .. } => "delete-tunnel",
            Op::JoinWire { .. } => "join-wire",
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
    /// `--target` addresses, sorted: the plan is partial (see [`target`](super::target)). Empty for a
    /// whole plan.
    #[serde(default)]
    pub targets: Vec<Address>,
    /// What the plan warns about without refusing it (`paths::warnings`: a file of the lab
    /// that libvirt's storage pools cannot speak for, an image declared raw that the pool
    /// finds to be another format), located in the lab file; in the JSON as `warnings`.
    #[serde(default)]
    pub warnings: Vec<crate::diag::JsonProblem>,
    /// A lab across several hosts: each host's plan (of its share of the lab,
    /// `Lab::on_host`), by host name; `changes` is then empty. Empty for a lab on one host.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hosts: std::collections::BTreeMap<crate::lab::model::HostName, Plan>,
}

impl Plan {
    /// The plan of a lab across hosts: each host's plan under its name.
    pub fn across(
        lab: &str,
        targets: Vec<Address>,
        hosts: std::collections::BTreeMap<crate::lab::model::HostName, Plan>,
    ) -> Self {
        let warnings = hosts.values().flat_map(|p| p.warnings.iter().cloned()).collect::<Vec<_>>();
        Plan { lab: lab.to_owned(), changes: Vec::new(), targets, warnings, hosts }
    }

    /// Every change with the host it is on (`None` in a lab on one host), hosts in name
    /// order.
    pub fn all_changes(&self) -> Vec<(Option<&crate::lab::model::HostName>, &Change)> {
        let mut out: Vec<_> = self.changes.iter().map(|c| (None, c)).collect();
        for (h, p) in &self.hosts {
            out.extend(p.changes.iter().map(|c| (Some(h), c)));
        }
        out
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for (_, c) in self.all_changes() {
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
        self.all_changes().iter().all(|(_, c)| c.action == Action::NoOp)
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
    #[error(
        "topo could not render the libvirt definitions of lab {lab}: {} problem{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )]
    #[diagnostic(
        code(topo::plan::render_failed),
        help(
            "nothing was changed; a lab that validates always renders, so this is a bug in topo: report it with the lab file"
        )
    )]
    RenderFailed {
        lab: String,
        /// One per resource that cannot be rendered ([`render_failed`]), pointing into `src`.
        #[related]
        problems: Vec<Problem>,
        #[source_code]
        src: Arc<NamedSource<String>>,
    },
    /// The plan's steps wait for each other in a cycle: a bug in topo, since the rules of the
    /// resource graph exclude it (docs/apply.md, "Order").
    #[error("internal error: the plan's steps wait for each other in a cycle: {}", cycle.join(" -> "))]
    #[diagnostic(
        code(topo::plan::cycle),
        help("this is a bug in topo (please report it with the plan): nothing was changed")
    )]
    Cycle {
        /// The addresses of the steps in the cycle, sorted, the first repeated at the end.
        cycle: Vec<String>,
    },
}

/// The refusal of a resource whose libvirt definition could not be rendered: `what` (e.g.
/// "the domain XML of vm.a (lab-a)") and the renderer's `error`, located at `span` in the
/// lab file. Renderers fail only on a bug (validation checked every input they read), and
/// the plan is refused ([`PlanError::RenderFailed`]) rather than made without the step.
pub(super) fn render_failed(span: SourceSpan, what: &str, error: impl std::fmt::Display) -> Problem {
    Problem::at(
        Code::RenderFailed,
        span,
        format!("could not render {what}: {error}"),
        "rendered from here",
        "nothing was changed; report this lab file as a bug of topo",
    )
}
