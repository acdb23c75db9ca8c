//! Whole-lab snapshots (`topo snapshot save|restore|list|delete`): every VM of the lab
//! captured at one instant (all paused, an internal snapshot of each with its memory, all
//! resumed), restored together and proven again. The lab's own snapshots carry its instance
//! in their description ([`crate::lab::ownership::snapshot_description`]); no other
//! snapshot is ever touched here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Proven, Session, Stoppable, Ui};
use crate::apply::lock::LabLock;
use crate::host::hypervisor::{HvError, Hypervisor, SnapshotInfo};
use crate::host::observed::DomainState;
use crate::lab::model::{Lab, SnapshotName};
use crate::lab::ownership::{Ownership, snapshot_description};
use crate::verify::VerifyOptions;

/// Why a snapshot command refused or failed. Every refusal comes before anything is touched.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SnapshotError {
    /// A lab across hosts: not supported yet.
    #[error("snapshots of a lab across hosts are not supported")]
    #[diagnostic(code(topo::snapshot::across_hosts), help("snapshot each host's VMs by hand with virsh"))]
    AcrossHosts,
    /// VMs of the lab are not on the host (or not this instance's).
    #[error("the lab's VMs {vms} are not on {uri} (or not this lab instance's)")]
    #[diagnostic(code(topo::snapshot::vm_missing), help("run `topo apply` first"))]
    Missing { vms: String, uri: String },
    /// `save`: VMs that are not running.
    #[error("cannot save snapshot {name}: VMs {vms} are not running (a lab snapshot holds every VM's memory)")]
    #[diagnostic(
        code(topo::snapshot::not_running),
        help("start them (`state: running` and `topo apply`) and save again")
    )]
    NotRunning { name: String, vms: String },
    /// `save`: VMs without a qcow2 disk, which cannot hold an internal snapshot.
    #[error("cannot save snapshot {name}: VMs {vms} have no qcow2 disk to hold an internal snapshot")]
    #[diagnostic(
        code(topo::snapshot::no_disk),
        help(
            "libvirt keeps an internal snapshot (memory included) inside a qcow2 disk (qemuSnapshotPrepare: \
             \"internal and full system snapshots require all disks to be selected for snapshot\"); give those \
             VMs a `disk:` (a kernel-booted VM without one cannot be snapshotted)"
        )
    )]
    NoDisk { name: String, vms: String },
    /// `save`: the name is taken on some VM.
    #[error("snapshot {name} exists already on VMs {vms}")]
    #[diagnostic(code(topo::snapshot::exists), help("choose another name, or `topo snapshot delete {name}` first"))]
    Exists { name: String, vms: String },
    /// `restore`/`delete`: the lab has no such snapshot.
    #[error("the lab has no snapshot {name}")]
    #[diagnostic(code(topo::snapshot::not_found), help("`topo snapshot list` shows the lab's snapshots"))]
    NotFound { name: String },
    /// `restore`: some VMs lack the snapshot.
    #[error("snapshot {name} is missing on VMs {vms}: the lab cannot be restored to it as a whole")]
    #[diagnostic(code(topo::snapshot::incomplete), help("`topo snapshot delete {name}` removes what is left of it"))]
    Incomplete { name: String, vms: String },
    /// `save`: a VM's snapshot failed; those made in this run were deleted, every VM resumed.
    #[error("snapshot {name} of VM {vm} failed; the snapshots made in this run were deleted{left}, every VM resumed")]
    #[diagnostic(code(topo::snapshot::failed))]
    SaveFailed {
        name: String,
        vm: String,
        /// Empty, or `, except on ...` for those that could not be deleted.
        left: String,
        #[source]
        source: Box<HvError>,
    },
    /// `save` stopped by a signal: the snapshots made were deleted, every VM resumed.
    #[error("snapshot {name} was interrupted: the snapshots made in this run were deleted{left}, every VM resumed")]
    #[diagnostic(code(topo::snapshot::interrupted))]
    Interrupted { name: String, left: String },
    /// `restore`: a VM's revert failed; every VM was resumed.
    #[error("restoring VM {vm} to snapshot {name} failed (reverted: {reverted}); every VM was resumed")]
    #[diagnostic(code(topo::snapshot::restore_failed), help("run `topo snapshot restore {name}` again"))]
    RestoreFailed {
        name: String,
        vm: String,
        reverted: String,
        #[source]
        source: Box<HvError>,
    },
    /// VMs that could not be resumed after a save or a restore.
    #[error("VMs {vms} could not be resumed and are paused: {message}")]
    #[diagnostic(code(topo::snapshot::left_paused), help("resume them with `virsh resume VM`"))]
    LeftPaused { vms: String, message: String },
    /// A libvirt call failed.
    #[error(transparent)]
    #[diagnostic(code(topo::host::hypervisor))]
    Host(Box<HvError>),
}

/// One VM of a saved lab snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SavedVm {
    /// The VM's name in the lab file.
    pub vm: String,
    /// Its libvirt domain.
    pub domain: String,
    /// How long its CPUs were stopped: from its pause to its resume.
    #[serde(serialize_with = "millis")]
    pub paused: Duration,
    /// How long libvirt took to snapshot it (memory and disks).
    #[serde(serialize_with = "millis")]
    pub snapshot: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `topo snapshot save` did.
#[derive(Clone, Debug, Serialize)]
pub struct Saved {
    pub name: String,
    pub vms: Vec<SavedVm>,
    /// From the first pause to the last resume.
    #[serde(serialize_with = "millis")]
    pub total: Duration,
}

/// One lab snapshot as `topo snapshot list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabSnapshot {
    pub name: String,
    /// The earliest creation time of its VM snapshots, seconds since the Unix epoch.
    pub created: i64,
    /// The lab VMs that hold it.
    pub vms: Vec<String>,
    /// The lab VMs that lack it (a lab VM added since, or a snapshot deleted by hand).
    pub missing: Vec<String>,
}

/// What `topo snapshot restore` did: the VMs reverted and, when verified, the proof.
pub struct Restored {
    pub name: String,
    /// Each VM and how long its revert took.
    pub reverted: Vec<(String, Duration)>,
    /// The ARP/NDP proof (and `ready:`) after the VMs were resumed; `None` when not asked.
    pub proven: Option<Proven>,
}

/// A lab VM on the host: its name in the lab, its domain, its state, and its snapshots.
struct Member {
    vm: String,
    domain: String,
    state: DomainState,
    has_disk: bool,
    snapshots: Vec<SnapshotInfo>,
}

fn join(v: &[String]) -> String {
    v.join(", ")
}

impl Session<'_> {
    /// The lab's VMs on the host with their snapshots, in name order.
    ///
    /// # Errors
    /// A lab across hosts, VMs missing (or another instance's), a libvirt call failed.
    fn members(&self, lab: &Lab) -> Result<Vec<Member>, SnapshotError> {
        if self.is_multi_host() || lab.is_multi_host() {
            return Err(SnapshotError::AcrossHosts);
        }
        let observed = self.observe_host()?;
        let me = lab.instance();
        let mut missing = Vec::new();
        let mut out = Vec::new();
        for vm in lab.vms.values() {
            let name = vm.libvirt_name.as_str();
            match observed.domains.get(name) {
                Some(d) if Ownership::of(d.owner.as_ref(), &me, lab.take_over, name) == Ownership::ThisLab => {
                    out.push(Member {
                        vm: vm.name.to_string(),
                        domain: name.to_owned(),
                        state: d.state,
                        has_disk: vm.disk.is_some(),
                        snapshots: self.hv().snapshots(name)?,
                    });
                }
                _ => missing.push(vm.name.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(SnapshotError::Missing { vms: join(&missing), uri: self.uri() });
        }
        Ok(out)
    }

    fn snapshot_lock(&self, lab: &Lab, what: &str) -> miette::Result<LabLock> {
        let host = self.host_id()?;
        Ok(LabLock::acquire(lab.name.as_str(), &host, &self.uri(), what)?)
    }

    /// `topo snapshot save NAME`: under the lab lock, checks every VM of the lab runs, has a
    /// qcow2 disk and no snapshot `name`; then pauses them all, takes an internal snapshot
    /// of each (memory and qcow2 disks; the seed left out), and resumes them all. Every VM
    /// is resumed whatever happens (a failed snapshot, a signal: the first stops the run
    /// after the current VM); on a failure or a signal the snapshots made in this run are
    /// deleted again.
    ///
    /// # Errors
    /// Any refusal above ([`SnapshotError`]), a failed snapshot, a signal, a failed resume.
    pub fn snapshot_save(&self, lab: &Lab, name: &SnapshotName, ui: &dyn Ui) -> miette::Result<Saved> {
        let _lock = self.snapshot_lock(lab, "topo snapshot save")?;
        ui.status(&format!("Observing {} ...", self.uri()));
        let members = self.members(lab)?;
        let name_s = name.as_str();
        let pick =
            |f: &dyn Fn(&Member) -> bool| members.iter().filter(|m| f(m)).map(|m| m.vm.clone()).collect::<Vec<_>>();
        let stopped = pick(&|m| !matches!(m.state, DomainState::Running | DomainState::Paused));
        if !stopped.is_empty() {
            return Err(SnapshotError::NotRunning { name: name_s.into(), vms: join(&stopped) }.into());
        }
        let diskless = pick(&|m| !m.has_disk);
        if !diskless.is_empty() {
            return Err(SnapshotError::NoDisk { name: name_s.into(), vms: join(&diskless) }.into());
        }
        let taken = pick(&|m| m.snapshots.iter().any(|s| s.name == name_s));
        if !taken.is_empty() {
            return Err(SnapshotError::Exists { name: name_s.into(), vms: join(&taken) }.into());
        }
        let description = snapshot_description(&lab.instance());
        let hv = self.hv();
        ui.status(&format!("Pausing {} VMs and saving snapshot {name_s} ...", members.len()));
        let _stoppable = Stoppable::enter(ui);
        let t0 = Instant::now();
        let mut paused = Paused::new(hv);
        // A VM paused by hand stays paused afterwards.
        for m in &members {
            if m.state == DomainState::Running {
                paused.pause(&m.domain)?;
            }
        }
        let mut made: Vec<(&Member, Duration)> = Vec::new();
        let mut failed = None;
        for m in &members {
            if ui.cancel().load(Ordering::SeqCst) {
                break;
            }
            let t = Instant::now();
            match hv.create_snapshot(&m.domain, name_s, &description) {
                Ok(()) => made.push((m, t.elapsed())),
                Err(e) => {
                    failed = Some((m.vm.clone(), e));
                    break;
                }
            }
        }
        let interrupted = failed.is_none() && made.len() < members.len();
        if failed.is_some() || interrupted {
            let left: Vec<String> = made
                .iter()
                .filter(|(m, _)| hv.delete_snapshot(&m.domain, name_s).is_err())
                .map(|(m, _)| m.vm.clone())
                .collect();
            let left = if left.is_empty() { String::new() } else { format!(", except on {}", join(&left)) };
            paused.resume_all().map_err(miette::Report::new)?;
            return Err(match failed {
                Some((vm, source)) => {
                    SnapshotError::SaveFailed { name: name_s.into(), vm, left, source: Box::new(source) }
                }
                None => SnapshotError::Interrupted { name: name_s.into(), left },
            }
            .into());
        }
        let resumed = paused.resume_all()?;
        let total = t0.elapsed();
        let vms = made
            .into_iter()
            .map(|(m, snapshot)| SavedVm {
                vm: m.vm.clone(),
                domain: m.domain.clone(),
                paused: resumed.get(&m.domain).copied().unwrap_or_default(),
                snapshot,
            })
            .collect();
        Ok(Saved { name: name_s.into(), vms, total })
    }

    /// `topo snapshot restore NAME`: under the lab lock, checks every VM of the lab has the
    /// lab's snapshot `name`; pauses the running ones, reverts each (left paused), resumes
    /// them all together, then (with `verify`) proves every NIC again (and each VM's
    /// `ready:`), as `topo verify` does. Every VM is resumed even when a revert fails.
    ///
    /// # Errors
    /// A refusal ([`SnapshotError`]), a failed revert or resume, a verification that could
    /// not run. NICs that fail the proof are in the returned report, not an error.
    pub fn snapshot_restore(
        &self,
        lab: &Lab,
        name: &SnapshotName,
        verify: Option<VerifyOptions>,
        ui: &dyn Ui,
    ) -> miette::Result<Restored> {
        let lock = self.snapshot_lock(lab, "topo snapshot restore")?;
        ui.status(&format!("Observing {} ...", self.uri()));
        let members = self.members(lab)?;
        let name_s = name.as_str();
        let description = snapshot_description(&lab.instance());
        let ours =
            |m: &Member| m.snapshots.iter().any(|s| s.name == name_s && s.description.as_deref() == Some(&description));
        let lacking: Vec<String> = members.iter().filter(|m| !ours(m)).map(|m| m.vm.clone()).collect();
        if lacking.len() == members.len() {
            return Err(SnapshotError::NotFound { name: name_s.into() }.into());
        }
        if !lacking.is_empty() {
            return Err(SnapshotError::Incomplete { name: name_s.into(), vms: join(&lacking) }.into());
        }
        let hv = self.hv();
        ui.status(&format!("Restoring {} VMs to snapshot {name_s} ...", members.len()));
        let mut paused = Paused::new(hv);
        for m in &members {
            if m.state == DomainState::Running {
                paused.pause(&m.domain)?;
            }
        }
        let mut reverted = Vec::new();
        for m in &members {
            let t = Instant::now();
            // A revert leaves the VM paused, whatever it was: it is resumed with the others.
            paused.reverted(&m.domain);
            if let Err(source) = hv.revert_snapshot(&m.domain, name_s) {
                paused.resume_all()?;
                let done: Vec<String> = reverted.iter().map(|(v, _): &(String, Duration)| v.clone()).collect();
                return Err(SnapshotError::RestoreFailed {
                    name: name_s.into(),
                    vm: m.vm.clone(),
                    reverted: if done.is_empty() { "none".into() } else { join(&done) },
                    source: Box::new(source),
                }
                .into());
            }
            reverted.push((m.vm.clone(), t.elapsed()));
        }
        paused.resume_all()?;
        drop(lock);
        let proven = match verify {
            Some(opts) => Some(self.verify_ready(lab, opts, ui)?),
            None => None,
        };
        Ok(Restored { name: name_s.into(), reverted, proven })
    }

    /// `topo snapshot list`: the lab's snapshots (those with its description on its VMs),
    /// by name, each with its time and the VMs that hold it or lack it.
    ///
    /// # Errors
    /// A lab across hosts, VMs missing, a libvirt call failed.
    pub fn snapshot_list(&self, lab: &Lab) -> Result<Vec<LabSnapshot>, SnapshotError> {
        let members = self.members(lab)?;
        let description = snapshot_description(&lab.instance());
        let mut by_name: BTreeMap<String, LabSnapshot> = BTreeMap::new();
        for m in &members {
            for s in m.snapshots.iter().filter(|s| s.description.as_deref() == Some(&description)) {
                let e = by_name.entry(s.name.clone()).or_insert_with(|| LabSnapshot {
                    name: s.name.clone(),
                    created: s.created,
                    vms: Vec::new(),
                    missing: Vec::new(),
                });
                e.created = e.created.min(s.created);
                e.vms.push(m.vm.clone());
            }
        }
        for snap in by_name.values_mut() {
            snap.missing = members.iter().filter(|m| !snap.vms.contains(&m.vm)).map(|m| m.vm.clone()).collect();
        }
        Ok(by_name.into_values().collect())
    }

    /// `topo snapshot delete NAME`: under the lab lock, deletes the lab's snapshot `name`
    /// (data and metadata) from every VM that holds it. Returns those VMs.
    ///
    /// # Errors
    /// The lab has no such snapshot, or a delete failed (the others are still tried).
    pub fn snapshot_delete(&self, lab: &Lab, name: &SnapshotName, ui: &dyn Ui) -> miette::Result<Vec<String>> {
        let _lock = self.snapshot_lock(lab, "topo snapshot delete")?;
        let members = self.members(lab)?;
        let name_s = name.as_str();
        let description = snapshot_description(&lab.instance());
        let holders: Vec<&Member> = members
            .iter()
            .filter(|m| m.snapshots.iter().any(|s| s.name == name_s && s.description.as_deref() == Some(&description)))
            .collect();
        if holders.is_empty() {
            return Err(SnapshotError::NotFound { name: name_s.into() }.into());
        }
        ui.status(&format!("Deleting snapshot {name_s} from {} VMs ...", holders.len()));
        let mut first_err = None;
        let mut done = Vec::new();
        for m in holders {
            match self.hv().delete_snapshot(&m.domain, name_s) {
                Ok(()) => done.push(m.vm.clone()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(SnapshotError::from(e).into()),
            None => Ok(done),
        }
    }
}

/// The VMs a run paused (or reverted, which leaves them paused), resumed by `resume_all`
/// or, should the run end otherwise (a panic, an early return), when dropped: a snapshot
/// run never leaves a VM paused that it paused.
struct Paused<'h> {
    hv: &'h dyn Hypervisor,
    /// Domain -> when it was paused.
    since: BTreeMap<String, Instant>,
}

impl<'h> Paused<'h> {
    fn new(hv: &'h dyn Hypervisor) -> Self {
        Self { hv, since: BTreeMap::new() }
    }

    /// Pauses `domain`; on failure every VM paused so far is resumed.
    fn pause(&mut self, domain: &str) -> Result<(), SnapshotError> {
        let t = Instant::now();
        match self.hv.suspend_domain(domain) {
            Ok(()) => {
                self.since.insert(domain.to_owned(), t);
                Ok(())
            }
            Err(e) => {
                self.resume_all()?;
                Err(e.into())
            }
        }
    }

    /// `domain` was (or is about to be) reverted: paused, to be resumed.
    fn reverted(&mut self, domain: &str) {
        self.since.entry(domain.to_owned()).or_insert_with(Instant::now);
    }

    /// Resumes every VM paused here; returns how long each was paused.
    ///
    /// # Errors
    /// Those that could not be resumed (all are tried).
    fn resume_all(&mut self) -> Result<BTreeMap<String, Duration>, SnapshotError> {
        let mut out = BTreeMap::new();
        let mut failed = Vec::new();
        let mut message = String::new();
        for (domain, since) in std::mem::take(&mut self.since) {
            match self.hv.resume_domain(&domain) {
                Ok(()) => {
                    out.insert(domain, since.elapsed());
                }
                Err(e) => {
                    if message.is_empty() {
                        message = e.to_string();
                    }
                    failed.push(domain);
                }
            }
        }
        if failed.is_empty() { Ok(out) } else { Err(SnapshotError::LeftPaused { vms: join(&failed), message }) }
    }
}

impl From<HvError> for SnapshotError {
    fn from(e: HvError) -> Self {
        SnapshotError::Host(Box::new(e))
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = self.resume_all();
    }
}

impl Saved {
    /// The text `topo snapshot save` prints: each VM with how long it was paused and how
    /// long its snapshot took, then the total.
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let mut rows = vec![["VM", "DOMAIN", "PAUSED", "SNAPSHOT"].map(String::from)];
        rows.extend(self.vms.iter().map(|v| [v.vm.clone(), v.domain.clone(), ms(v.paused), ms(v.snapshot)]));
        format!(
            "{}Saved snapshot {} of {} VMs in {} ms.\n",
            crate::table::columns(rows, 2, &[]),
            self.name,
            self.vms.len(),
            self.total.as_millis()
        )
    }
}

/// The text `topo snapshot list` prints: each lab snapshot, when it was taken (UTC), its
/// VMs, and those of the lab that lack it.
pub fn list_table(snapshots: &[LabSnapshot]) -> String {
    if snapshots.is_empty() {
        return "The lab has no snapshots.\n".into();
    }
    let when = |t: i64| {
        u64::try_from(t)
            .ok()
            .map(|s| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s)).to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![["NAME", "CREATED", "VMS", "MISSING ON"].map(String::from)];
    rows.extend(snapshots.iter().map(|s| {
        [
            s.name.clone(),
            when(s.created),
            s.vms.join(","),
            if s.missing.is_empty() { "-".into() } else { s.missing.join(",") },
        ]
    }));
    crate::table::columns(rows, 2, &[])
}
