//! The pipeline as one library type: a [`Session`] holds a connection per libvirt host (with
//! the machine that runs it, when that is this one) and
//! runs each command's stages, `observe -> plan -> guard -> lock -> observe again -> execute
//! -> converge check -> verify`, so the command line only parses arguments, makes one call
//! and renders what it returns. What a run says while it runs (progress, warnings, the plan
//! to confirm) goes through the [`Ui`] the caller passes; nothing here writes to a stream.
//!
//! Stage: above `verify/` and `results.rs`, below `cli/`. Nothing below imports it.

mod across;
mod capture;
mod check;
mod run;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

pub use capture::{CapturePoint, CaptureRequest, CaptureTargetError};
pub use check::Proven;
pub use run::{ApplyRequest, DestroyRequest, Run, RunError};
pub use snapshot::{LabSnapshot, Restored, Saved, SavedVm, SnapshotError, list_table as snapshot_list_table};

use crate::apply::lock::HostId;
use crate::apply::progress::{Progress, Silent as SilentProgress};
use crate::apply::{ApplyError, Options, Report};
use crate::host::Host;
use crate::host::hypervisor::libvirt::{Console, LibvirtHypervisor, files_are_local};
use crate::host::hypervisor::{HvError, Hypervisor};
use crate::host::machine::{LocalMachine, Machine, RemoteMachine};
use crate::host::observed::Observed;
use crate::lab::address::Address;
use crate::lab::model::Lab;
use crate::plan::Plan;
use crate::plan::target::{Direction, Reach};
use crate::verify::{NicProgress, VerifyReport};

pub use crate::lab::names::HostName;

/// A host the session opened (the command line's libvirt connection, and this machine when
/// it runs the host) or borrows (a test's doubles, which the test keeps to arm faults and
/// look at calls).
enum Conn<'h> {
    Libvirt {
        hv: Box<LibvirtHypervisor>,
        machine: Option<Box<dyn Machine>>,
    },
    Borrowed(Host<'h>),
    /// A host of a lab across hosts that could not be reached when the session opened.
    Unreachable(HvError),
}

impl Conn<'_> {
    /// The host, when it was reached.
    fn host(&self) -> Option<Host<'_>> {
        match self {
            Conn::Libvirt { hv, machine } => Some(Host { hv: hv.as_ref(), machine: machine.as_deref() }),
            Conn::Borrowed(h) => Some(*h),
            Conn::Unreachable(_) => None,
        }
    }
}

/// What a run tells the person running it while it runs. The command line writes each to
/// its stream (progress on stderr, results on stdout, nothing with `-q` but results and
/// errors); [`Silent`] says nothing and approves every plan, for tests and benchmarks.
pub trait Ui: Sync {
    /// A progress line: `Observing URI ...`, `Verifying 3 NICs by ARP ...`.
    fn status(&self, _line: &str) {}
    /// Warnings about the lab file that do not stop the run (files no storage pool can
    /// speak for), as one diagnostic located in the file.
    fn warnings(&self, _warnings: crate::diag::Warnings) {}
    /// Something that failed beside the run without stopping it (a known_hosts file that
    /// could not be updated): shown even when progress is not.
    fn warn(&self, _line: &str) {}
    /// The plan about to be confirmed and executed (again when the host changed and apply
    /// follows it). `file` is the lab file as the user named it.
    fn plan(&self, _plan: &Plan, _file: &str) -> miette::Result<()> {
        Ok(())
    }
    /// Asks whether to `what` (`apply these changes`); an error cancels the run.
    fn confirm(&self, _what: &str) -> miette::Result<()> {
        Ok(())
    }
    /// Where apply's step events go while it executes.
    fn progress(&self) -> Box<dyn Progress + '_> {
        Box::new(SilentProgress)
    }
    /// A run's steps have finished (or it stopped): its report, before the session decides
    /// whether that is an error.
    fn executed(&self, _command: crate::results::Command, _report: &Report) -> miette::Result<()> {
        Ok(())
    }
    /// A NIC's state changed during verification.
    fn nic(&self, _progress: &NicProgress<'_>) {}
    /// Apply's verification has finished (before its verdict is checked).
    fn verified(&self, _report: &VerifyReport) -> miette::Result<()> {
        Ok(())
    }
    /// Enters (`true`) or leaves (`false`) a phase that a signal stops gracefully (apply's
    /// steps, verification): the first signal then only sets [`Ui::cancel`].
    fn stoppable(&self, _on: bool) {}
    /// Set when the person asked the run to stop.
    fn cancel(&self) -> &AtomicBool;
}

/// A [`Ui`] that says nothing and approves every plan: for tests and benchmarks.
#[derive(Default)]
pub struct Silent {
    cancel: AtomicBool,
}

impl Ui for Silent {
    fn cancel(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// A stoppable phase of `ui`, left when dropped.
struct Stoppable<'u>(&'u dyn Ui);

impl<'u> Stoppable<'u> {
    fn enter(ui: &'u dyn Ui) -> Self {
        ui.stoppable(true);
        Self(ui)
    }
}

impl Drop for Stoppable<'_> {
    fn drop(&mut self) {
        self.0.stoppable(false);
    }
}

/// One run of topo against its libvirt hosts: a connection per host (and its machine, when
/// topo can reach it), keyed by the name the lab gives it (one host, [`HostName::DEFAULT`],
/// today).
pub struct Session<'h> {
    hosts: BTreeMap<HostName, Conn<'h>>,
}

/// Why a session cannot run a command.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SessionError {
    /// A confirmed or saved plan would no longer be the one executed.
    #[error("the host changed while the plan was being confirmed: nothing was changed")]
    #[diagnostic(help("run `topo plan` again and review the new plan"))]
    HostChanged,
    /// `--target` with a saved plan.
    #[error("--target does not apply to a saved plan: it runs exactly the steps it holds")]
    #[diagnostic(help(
        "make the saved plan with `topo plan --target ... --out FILE`, or apply the lab file with --target"
    ))]
    TargetsOnSaved,
    /// `topo console` over a connection that is not libvirt's (a test double).
    #[error("this connection has no serial consoles")]
    #[diagnostic(code(topo::console::unsupported))]
    NoConsole,
    /// A libvirt call failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Host(#[from] HvError),
    /// A host of a lab across hosts cannot be reached: nothing was changed on any host.
    #[error("host {host} of the lab cannot be reached")]
    #[diagnostic(
        code(topo::host::unreachable),
        help("nothing was changed on any host; check that the host's uri (or --host {host}=URI) reaches its libvirtd")
    )]
    HostUnreachable {
        host: String,
        #[source]
        source: Box<HvError>,
    },
    /// `--host NAME=URI` names a host the lab file does not declare.
    #[error("--host names host `{host}`, which the lab file does not declare (its hosts: {known})")]
    #[diagnostic(code(topo::host::unknown), help("use the names under `hosts:` in the lab file"))]
    UnknownHost { host: String, known: String },
    /// Destroy could not reach some hosts: their part of the lab is still there.
    #[error("destroy could not reach every host of the lab; left there: {left}")]
    #[diagnostic(
        code(topo::host::left_on_unreachable),
        help("the hosts that answered were cleaned; run `topo destroy` again when the others answer")
    )]
    LeftOnUnreachable { left: String },
}

/// A plan and the observation it was made on.
pub struct Planned {
    pub plan: Plan,
    pub observed: Observed,
    /// A lab across hosts: each host's URI and the fingerprint of what was observed there,
    /// for a saved plan (`topo plan --out`). Empty for a lab on one host.
    pub hosts: BTreeMap<String, crate::plan::saved::SavedHost>,
}

impl Planned {
    /// The plan to save (`topo plan --out`): its steps and what they were made from (the lab
    /// file at `lab_file`, canonical; the connection `uri`; each host's URI and observation
    /// across hosts), so that `topo apply FILE` runs exactly these steps or refuses them as
    /// stale.
    pub fn saved(&self, lab: &Lab, lab_file: String, uri: String) -> crate::plan::saved::SavedPlan {
        use crate::plan::saved::{SAVED_FORMAT, SavedPlan, fingerprint, sha256_hex};
        SavedPlan {
            format: SAVED_FORMAT.into(),
            lab_file,
            lab_sha256: sha256_hex(lab.source.text.as_bytes()),
            uri,
            observed_sha256: fingerprint(&self.observed),
            plan: crate::plan::json::to_json(&self.plan),
            steps: self.plan.clone(),
            take_over: lab.take_over,
            hosts: self.hosts.clone(),
        }
    }
}

impl<'h> Session<'h> {
    /// A session over the libvirt host at `uri` (`None`: the one libvirt chooses, as virsh
    /// does: `LIBVIRT_DEFAULT_URI`, then `uri_default` in libvirt.conf, then probing), with
    /// this machine as the machine that runs it when libvirt opens files here
    /// ([`files_are_local`] of the URI libvirt names the connection by); none for another
    /// host or the test driver.
    ///
    /// # Errors
    /// The connection cannot be opened.
    pub fn connect(uri: Option<&str>) -> Result<Session<'static>, HvError> {
        let conn = Self::open(uri.unwrap_or(""))?;
        Ok(Session { hosts: BTreeMap::from([(HostName::default_host(), conn)]) })
    }

    /// A connection to the libvirt host at `uri` ("": libvirt's choice) with the machine that
    /// runs it when topo reaches that: this machine for a local URI of a real driver
    /// ([`files_are_local`]), the host over ssh for a `qemu+ssh://` URI (with ssh's own
    /// config, agent and the URI's `keyfile`: [`RemoteMachine::ssh`]); none otherwise.
    fn open(uri: &str) -> Result<Conn<'static>, HvError> {
        let hv = LibvirtHypervisor::connect(uri)?;
        let canonical = hv.uri();
        let machine: Option<Box<dyn Machine>> = if files_are_local(&canonical) {
            Some(Box::new(LocalMachine::new()))
        } else {
            RemoteMachine::ssh(if uri.is_empty() { &canonical } else { uri }).map(|m| Box::new(m) as Box<dyn Machine>)
        };
        Ok(Conn::Libvirt { hv: Box::new(hv), machine })
    }

    /// A session over the hosts of `lab`: for a lab on one host, [`Session::connect`] of
    /// `connect` (`--connect`); for a lab that names its hosts, one connection per host, to
    /// the URI `--host NAME=URI` gives it (`uris`) or else the lab file's, each opened as
    /// [`Session::connect`] opens one. A host that cannot be reached is kept as such: a run
    /// that needs it stops before changing anything, naming it; `--target` on the other
    /// hosts and destroy go on without it (docs/multi-host.md).
    ///
    /// # Errors
    /// No host can be reached (the error names the first), or `uris` names a host the lab
    /// does not.
    pub fn connect_lab(
        lab: &Lab,
        connect: Option<&str>,
        uris: &BTreeMap<HostName, String>,
    ) -> Result<Session<'static>, SessionError> {
        if let Some(h) = uris.keys().find(|h| !lab.hosts.contains_key(*h)) {
            return Err(SessionError::UnknownHost {
                host: h.to_string(),
                known: lab.hosts.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            });
        }
        if !lab.is_multi_host() {
            return Ok(Self::connect(connect)?);
        }
        let mut hosts = BTreeMap::new();
        for (name, h) in &lab.hosts {
            let uri = uris.get(name).unwrap_or(&h.uri);
            hosts.insert(name.clone(), Self::open(uri).unwrap_or_else(Conn::Unreachable));
        }
        if hosts.values().all(|c| matches!(c, Conn::Unreachable(_)))
            && let Some((name, Conn::Unreachable(e))) = hosts.iter().next()
        {
            return Err(SessionError::HostUnreachable { host: name.to_string(), source: Box::new(e.clone()) });
        }
        Ok(Session { hosts })
    }

    /// Whether the session spans several hosts (a lab that names its hosts).
    pub fn is_multi_host(&self) -> bool {
        !self.hosts.contains_key(&HostName::default_host())
    }

    /// The names of the session's hosts, in name order (the order locks are taken in).
    pub fn host_names(&self) -> Vec<HostName> {
        self.hosts.keys().cloned().collect()
    }

    /// A session over host `name` of this one alone, as its default host; `None` when the
    /// session has no such host or could not reach it.
    pub fn for_host(&self, name: &HostName) -> Option<Session<'_>> {
        let host = self.hosts.get(name)?.host()?;
        Some(Session { hosts: BTreeMap::from([(HostName::default_host(), Conn::Borrowed(host))]) })
    }

    /// Host `name`'s session, or why it cannot be had.
    ///
    /// # Errors
    /// [`SessionError::HostUnreachable`] (with the error libvirt gave when the session
    /// opened), or `UnknownHost` for a name the session lacks.
    pub fn reach(&self, name: &HostName) -> Result<Session<'_>, SessionError> {
        match self.hosts.get(name).map(|c| (c, c.host())) {
            Some((_, Some(host))) => {
                Ok(Session { hosts: BTreeMap::from([(HostName::default_host(), Conn::Borrowed(host))]) })
            }
            Some((Conn::Unreachable(e), None)) => {
                Err(SessionError::HostUnreachable { host: name.to_string(), source: Box::new(e.clone()) })
            }
            _ => Err(SessionError::UnknownHost {
                host: name.to_string(),
                known: self.hosts.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// A session over `host` (kept by the caller: a test's doubles, `&MemoryHypervisor`) as
    /// its default host.
    pub fn over(host: impl Into<Host<'h>>) -> Self {
        Self { hosts: BTreeMap::from([(HostName::default_host(), Conn::Borrowed(host.into()))]) }
    }

    /// A session over several hosts (kept by the caller: a test's doubles), by the names a
    /// lab across hosts gives them.
    pub fn over_hosts(hosts: impl IntoIterator<Item = (HostName, Host<'h>)>) -> Self {
        Self { hosts: hosts.into_iter().map(|(n, h)| (n, Conn::Borrowed(h))).collect() }
    }

    /// This session with host `name` as one that could not be reached, with `error` (what a
    /// test plays for a host that is down).
    pub fn with_unreachable(mut self, name: HostName, error: HvError) -> Self {
        self.hosts.insert(name, Conn::Unreachable(error));
        self
    }

    /// The default host: its libvirt connection and, when reachable, its machine.
    pub fn host(&self) -> Host<'_> {
        // Invariant: every constructor inserts at least one reached host (`connect_lab`
        // refuses a lab none of whose hosts answers); a session over one host has it under
        // the default name, one across hosts answers for its first reached host.
        self.hosts
            .get(&HostName::default_host())
            .and_then(Conn::host)
            .or_else(|| self.hosts.values().find_map(Conn::host))
            .expect("a session has a reached host")
    }

    /// The default host's libvirt connection.
    pub fn hv(&self) -> &dyn Hypervisor {
        self.host().hv
    }

    /// The default host's canonical URI, as libvirt names the connection
    /// (`virConnectGetURI`): what tags, saved plans and messages record.
    pub fn uri(&self) -> String {
        self.hv().uri()
    }

    /// The host the connection reaches, as libvirt names it: what locks and pinned host
    /// keys key on.
    ///
    /// # Errors
    /// The host name cannot be read.
    pub fn host_id(&self) -> Result<HostId, HvError> {
        let hv = self.hv();
        Ok(HostId::new(&hv.hostname()?, &hv.uri()))
    }

    /// What the host has ([`Host::observe`]: libvirt's objects, and the machine's facts where
    /// the session has the machine), for a command that makes no plan from them
    /// (verify, inventory, destroy's teardown, the list of labs).
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn observe_host(&self) -> Result<Observed, HvError> {
        self.host().observe()
    }

    /// [`Session::observe_host`] with, for a lab across hosts (`lab` its share of this
    /// host), the machine's tunnels ([`Host::observe_tunnels`]): what destroy plans on.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn observe_host_for(&self, lab: &Lab) -> Result<Observed, HvError> {
        let host = self.host();
        let mut observed = host.observe()?;
        if lab.is_multi_host() {
            host.observe_tunnels(&mut observed);
        }
        Ok(observed)
    }

    /// Observes the host for a plan of `lab`: the one way every plan is made on (`plan`,
    /// `apply` before and under the host lock, the convergence check after it, `status`,
    /// tests). Every libvirt object and the machine's facts ([`Host::observe`]), the seeds
    /// that changed
    /// ([`crate::host::hypervisor::read_changed_seeds`], for the plan's diff), and the path
    /// facts of the files the lab's domains open (`Observed::paths`): when the libvirt
    /// host's files are not this machine's, what its storage pools say about each; on a
    /// local host, each base image's header ([`crate::host::observed::observe_images`]).
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn observe(&self, lab: &Lab) -> Result<Observed, HvError> {
        let host = self.host();
        let hv = host.hv;
        let mut observed = host.observe()?;
        if lab.is_multi_host() {
            host.observe_tunnels(&mut observed);
        }
        crate::host::hypervisor::read_changed_seeds(hv, lab, &mut observed);
        if !files_are_local(&hv.uri()) {
            let paths: Vec<String> = lab
                .vms
                .values()
                .flat_map(|vm| vm.host_files().into_iter().map(|(_, p, _)| p.to_string_lossy().into_owned()))
                .collect();
            observed.paths = crate::host::hypervisor::observe_paths(hv, paths.iter().map(String::as_str))?;
        } else {
            // This machine's disk: each base image's header, read bounded, is the same kind of
            // fact as a remote pool's volume, so `disk.format` and `disk.size` are checked alike.
            observed.paths = crate::host::observed::observe_images(
                lab.vms.values().filter_map(|vm| vm.disk.as_ref().map(|d| d.image.as_path())),
            );
        }
        Ok(observed)
    }

    /// [`Session::observe`], announced on `ui`, with the files no pool can speak for warned
    /// about, each at its place in the lab file (with `targets`, only those of the VMs the
    /// plan reaches). Missing ones are the plan's refusals.
    fn observe_announced(&self, lab: &Lab, targets: &[Address], ui: &dyn Ui) -> Result<(Observed, Reach), HvError> {
        ui.status(&format!("Observing {} ...", self.uri()));
        let observed = self.observe(lab)?;
        if let Some((network, bridge)) = observed.bridges_out_of_sight().first() {
            ui.warn(&format!(
                "warning: libvirt's network {network} is active on bridge {bridge}, which is not in topo's \
                 network namespace: topo runs outside libvirtd's, so the ARP proof after apply will fail; \
                 run topo where libvirtd runs (e.g. `ip netns exec NS topo ...`)"
            ));
        }
        let reach = Reach::of(lab, &observed, targets, Direction::Apply);
        let warnings = crate::plan::paths::warnings_for(lab, &observed, reach.vms().as_ref());
        if !warnings.is_empty() {
            ui.warnings(crate::diag::Warnings {
                path: lab.source.name(),
                src: lab.source.named_source(),
                warnings: warnings.into_iter().map(crate::diag::Warning).collect(),
            });
        }
        Ok((observed, reach))
    }

    /// `topo plan`: observes the host (announced on `ui`, with its warnings) and plans `lab`
    /// on it, cut to `targets` (`--target`; empty: the whole lab).
    ///
    /// # Errors
    /// A libvirt call fails, the planner refuses, or a target is not in the lab.
    pub fn plan(&self, lab: &Lab, targets: &[Address], ui: &dyn Ui) -> miette::Result<Planned> {
        if self.is_multi_host() {
            return self.plan_across(lab, targets, ui);
        }
        let (observed, reach) = self.observe_announced(lab, targets, ui)?;
        let plan = self.plan_in(lab, &observed, targets, &reach)?;
        Ok(Planned { plan, observed, hosts: BTreeMap::new() })
    }

    /// The plan of `lab` on `observed`, cut to `targets`: no I/O.
    ///
    /// # Errors
    /// The planner refuses, or a target is not in the lab.
    pub fn plan_on(&self, lab: &Lab, observed: &Observed, targets: &[Address]) -> miette::Result<Plan> {
        self.plan_in(lab, observed, targets, &Reach::of(lab, observed, targets, Direction::Apply))
    }

    /// [`Session::plan_on`] with what the targets reach on `observed` already known.
    fn plan_in(&self, lab: &Lab, observed: &Observed, targets: &[Address], reach: &Reach) -> miette::Result<Plan> {
        let full = crate::plan::plan(lab, observed, &self.uri())?;
        Ok(crate::plan::target::targeted_in(lab, observed, full, targets, reach)?)
    }

    /// Executes `plan`'s steps (no guard, no lock: [`Session::apply`] adds those), with
    /// `progress` told of each step.
    pub fn execute(&self, plan: &Plan, opts: &Options, cancel: &AtomicBool, progress: &dyn Progress) -> Report {
        crate::apply::apply(plan, self.host(), opts, cancel, progress)
    }

    /// After apply: observes `lab` again (as for a plan) and plans it; any change left for
    /// the `targets` (empty: the whole lab) and what they depend on is an inconsistent
    /// result. Returns what was observed and what the targets reach on it, for the
    /// verification that follows.
    ///
    /// # Errors
    /// [`ApplyError::Inconsistent`] with each change left, or a failed observation.
    pub fn converged(&self, lab: &Lab, targets: &[Address]) -> Result<(Observed, Reach), ApplyError> {
        let observed = self.observe(lab)?;
        let reach = Reach::of(lab, &observed, targets, Direction::Apply);
        crate::apply::check_converged_on(lab, &observed, &self.uri(), &reach)?;
        Ok((observed, reach))
    }

    /// Every lab on the host, from the owner tags alone (`topo list`).
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn labs(&self) -> Result<crate::host::labs::LabList, HvError> {
        Ok(crate::host::labs::list(&self.observe_host()?, &self.uri()))
    }

    /// The serial console of domain `libvirt_name` on host `host` (`topo console`: the VM's
    /// `host`, [`HostName::DEFAULT`] in a lab on one host); `force` takes it over from another
    /// client.
    ///
    /// # Errors
    /// The session has no host `host`, its connection is a test double's, or libvirt cannot
    /// open the console.
    pub fn console(&self, host: &HostName, libvirt_name: &str, force: bool) -> Result<Console, SessionError> {
        let Some(Conn::Libvirt { hv, .. }) = self.hosts.get(host) else {
            return Err(SessionError::NoConsole);
        };
        Ok(hv.open_console(libvirt_name, force)?)
    }
}
