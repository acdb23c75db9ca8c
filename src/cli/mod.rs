//! The command line: argument parsing, output and exit codes. Each subcommand is an
//! `XArgs` struct plus one function; results go to stdout, progress and errors to stderr
//! (through [`ui`]). Exit status: 0 success, 1 any error (usage errors included), 2 only for
//! `plan --detailed-exitcode` with changes, 130 when a signal ended the command abruptly.

mod apply;
mod capture;
mod console;
pub mod duration;
mod graph;
pub mod interrupt;
mod inventory;
mod list;
mod log;
mod plan;
mod shell;
mod shown;
mod snapshot;
mod ssh;
pub mod ui;
mod validate;
mod verify;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, mapped once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success (and, for `plan --detailed-exitcode`, no changes).
    Ok,
    /// `plan --detailed-exitcode` found changes.
    Changes,
}

#[derive(Parser, Debug)]
#[command(
    name = "topo",
    version,
    about = "Virtual-machine labs on libvirt from a YAML file: validate, plan, apply, verify, destroy",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// libvirt connection URI (default: the one libvirt chooses, as for virsh)
    #[arg(short = 'c', long = "connect", global = true, env = "LIBVIRT_DEFAULT_URI")]
    pub connect: Option<String>,
    /// For a lab that names its hosts: reach host NAME at libvirt URI URI for this run, in
    /// place of the lab file's `uri` (repeat for each host)
    #[arg(long = "host", global = true, value_name = "NAME=URI", value_parser = parse_host_uri)]
    pub host_uris: Vec<(crate::lab::model::HostName, String)>,
    /// When to colour output
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Print only results and errors, no progress or status lines
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log on stderr: -v every libvirt call with its duration, -vv also the XML sent (adds
    /// to TOPO_LOG, a filter in RUST_LOG syntax)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl GlobalArgs {
    /// Whether to colour what goes to a stream that is (or is not) a terminal (`auto`:
    /// [`ui::auto_colour`], with the NO_COLOR and CLICOLOR_FORCE conventions).
    pub fn color_for(&self, is_terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => ui::auto_colour(is_terminal),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a lab file and explain every mistake in it
    Validate(validate::ValidateArgs),
    /// Show what apply would change on the host, and why
    Plan(plan::PlanArgs),
    /// Create, change and start what the plan shows, then check the host matches the file
    Apply(apply::ApplyArgs),
    /// Remove everything the lab owns on the host (and nothing else)
    Destroy(apply::DestroyArgs),
    /// Prove by ARP that every NIC of every VM holds an IPv4 address
    Verify(verify::VerifyArgs),
    /// Show every resource of the lab, its state, and each VM's addresses
    Status(verify::StatusArgs),
    /// List every lab on the host (name, prefix, lab file, VMs, networks) from its tags
    List(list::ListArgs),
    /// Print the lab's networks, VMs and NIC links as a graph (DOT or Mermaid)
    Graph(graph::GraphArgs),
    /// Print the JSON Schema of the lab file
    Schema,
    /// Every VM with its proven addresses and login user, for ssh, /etc/hosts or Ansible
    Inventory(inventory::InventoryArgs),
    /// Log in to a VM by SSH as the lab's user, on an address proven by ARP
    Ssh(ssh::SshArgs),
    /// Connect to a VM's serial console (Ctrl-] leaves)
    Console(console::ConsoleArgs),
    /// Capture the packets of a VM's NIC or a lab network as pcap (stdout or -w FILE)
    Capture(capture::CaptureArgs),
    /// Whole-lab snapshots (every VM at one instant): save, restore, list, delete
    Snapshot(snapshot::SnapshotArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    Completions(shell::CompletionsArgs),
    /// Print a man page (roff), or write all of them into a folder
    Man(shell::ManArgs),
}

/// Runs the CLI; the binary's `main` is this one call.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    interrupt::install();
    let color = cli.global.color_for(std::io::stderr().is_terminal());
    let _ = miette::set_hook(Box::new(move |_| {
        // Wrapped at spaces only: a command in a help line (`virsh pool-define-as ...`)
        // is never split at its hyphens, so it can be copied.
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .word_splitter(textwrap::WordSplitter::NoHyphenation)
                .break_words(false)
                .build(),
        )
    }));
    virt::error::clear_error_callback();
    if let Err(e) = log::init(cli.global.verbose, color) {
        crate::errln!("{:?}", miette::Report::new(e));
        return ExitCode::from(1);
    }
    let result = match &cli.command {
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Plan(a) => plan::run(&cli.global, a),
        Command::Apply(a) => apply::run_apply(&cli.global, a),
        Command::Destroy(a) => apply::run_destroy(&cli.global, a),
        Command::Verify(a) => verify::run_verify(&cli.global, a),
        Command::Status(a) if a.all => list::run(&cli.global, a.json),
        Command::Status(a) => verify::run_status(&cli.global, a),
        Command::List(a) => list::run(&cli.global, a.json),
        Command::Graph(a) => graph::run(&cli.global, a),
        Command::Inventory(a) => inventory::run(&cli.global, a),
        Command::Ssh(a) => ssh::run(&cli.global, a),
        Command::Console(a) => console::run(&cli.global, a),
        Command::Capture(a) => capture::run(&cli.global, a),
        Command::Snapshot(a) => snapshot::run(&cli.global, a),
        Command::Schema => {
            crate::outln!("{}", crate::lab::schema::schema_json()).map(|()| Outcome::Ok).map_err(Into::into)
        }
        Command::Completions(a) => shell::run_completions(&cli.global, a),
        Command::Man(a) => shell::run_man(&cli.global, a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(report) => {
            crate::errln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

/// `--help` and `--version` print to stdout and exit 0; every other parse error (unknown
/// flag, missing or bad value) goes to stderr and exits 1, never clap's 2: `plan
/// --detailed-exitcode` uses 2 for "changes present", and a typo must not read as that.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    // A closed stdout or stderr is not worth a panic here either.
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Reads and validates a lab file: the first step of most subcommands. The paths in it
/// (kernel, initrd, image) are checked on this machine's disk when that is where libvirt
/// opens them (a local, real driver: [`crate::host::hypervisor::libvirt::files_are_local`]);
/// otherwise `topo plan` and `topo apply` check them through libvirt's storage pools
/// ([`crate::session::Session::observe`]).
pub(crate) fn load_lab(path: &std::path::Path, global: &GlobalArgs) -> miette::Result<crate::lab::model::Lab> {
    load_lab_with(path, files_checked(global))
}

/// Reads and validates a lab file for a command that opens none of the files it names
/// (`destroy`, `status`, `verify`, `inventory`, `ssh`, `console`): a kernel, image or key
/// file gone since the apply does not stop it ([`crate::lab::validate::Files::NotOpened`]).
pub(crate) fn load_lab_unopened(path: &std::path::Path) -> miette::Result<crate::lab::model::Lab> {
    load_lab_with(path, crate::lab::validate::Files::NotOpened)
}

fn load_lab_with(path: &std::path::Path, files: crate::lab::validate::Files) -> miette::Result<crate::lab::model::Lab> {
    let source = crate::lab::source::SourceFile::read(path)?;
    let mut lab = crate::lab::validate::load_with(&source, files)?;
    ssh::fill_default_keys(&mut lab);
    // What the tags this run writes record besides the lab instance (docs/lab-file.md).
    lab.stamp = crate::lab::ownership::Stamp::now();
    Ok(lab)
}

/// Whether validation checks the lab's paths on this machine's disk: when `--connect`
/// names a local URI of a real driver, or names none (libvirt's default is, nearly always,
/// the local hypervisor; `topo plan` and `topo apply` then check again on the URI libvirt
/// chose, [`check_files_on`]).
pub(crate) fn files_checked(global: &GlobalArgs) -> crate::lab::validate::Files {
    match &global.connect {
        Some(uri) if !crate::host::hypervisor::libvirt::files_are_local(uri) => crate::lab::validate::Files::NotChecked,
        _ => crate::lab::validate::Files::Checked,
    }
}

/// Reads and validates a lab file for a command that connects next (`plan`, `apply`):
/// with no `--connect`, where libvirt opens the lab's files is known only once connected,
/// so its paths are left to [`check_files_on`].
pub(crate) fn load_lab_to_plan(path: &std::path::Path, global: &GlobalArgs) -> miette::Result<crate::lab::model::Lab> {
    match global.connect {
        Some(_) => load_lab(path, global),
        None => load_lab_with(path, crate::lab::validate::Files::NotChecked),
    }
}

/// With no `--connect`: checks the paths of `lab` (read by [`load_lab_to_plan`]) on this
/// machine's disk when the URI libvirt chose opens them here, as [`load_lab`] does for a
/// URI given.
pub(crate) fn check_files_on(
    lab: &crate::lab::model::Lab,
    global: &GlobalArgs,
    session: &crate::session::Session<'_>,
) -> miette::Result<()> {
    if global.connect.is_none() && crate::host::hypervisor::libvirt::files_are_local(&session.uri()) {
        crate::lab::validate::load_with(&lab.source, crate::lab::validate::Files::Checked)?;
    }
    Ok(())
}

/// A status line on stderr unless `-q`.
pub(crate) fn status(global: &GlobalArgs, msg: impl std::fmt::Display) {
    if !global.quiet {
        crate::errln!("{msg}");
    }
}

/// A session over the libvirt host at the global `--connect` URI, or, with none, the one
/// libvirt chooses (`virConnectOpen(NULL)`, as virsh): every message, tag, lock and saved
/// plan then uses the canonical URI the connection reports (`virConnectGetURI`).
pub(crate) fn connect(global: &GlobalArgs) -> miette::Result<crate::session::Session<'static>> {
    Ok(crate::session::Session::connect(global.connect.as_deref())?)
}

/// A session over the hosts of `lab`: the `--connect` one for a lab on one host; for a lab
/// that names its hosts, each at its `uri` or the one `--host NAME=URI` gives
/// ([`crate::session::Session::connect_lab`]).
pub(crate) fn connect_lab(
    global: &GlobalArgs,
    lab: &crate::lab::model::Lab,
) -> miette::Result<crate::session::Session<'static>> {
    if lab.is_multi_host() && global.connect.is_some() {
        status(
            global,
            "note: the lab names its hosts: --connect (or LIBVIRT_DEFAULT_URI) is not used; --host NAME=URI replaces a host's uri",
        );
    }
    let uris = global.host_uris.iter().cloned().collect();
    Ok(crate::session::Session::connect_lab(lab, global.connect.as_deref(), &uris)?)
}

/// `--host NAME=URI`.
fn parse_host_uri(s: &str) -> Result<(crate::lab::model::HostName, String), String> {
    let (name, uri) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=URI"))?;
    let name = crate::lab::model::HostName::new(name).map_err(|e| format!("host name `{name}` {e}"))?;
    if uri.is_empty() {
        return Err(format!("`{s}` gives host {name} no URI"));
    }
    Ok((name, uri.to_owned()))
}

/// The lab file to use: `file` when given, else the one [`crate::lab::source::discover`] finds in
/// the current folder, announced on stderr (unless `-q`) so the choice is never silent.
pub(crate) fn lab_path(global: &GlobalArgs, file: Option<&std::path::Path>) -> miette::Result<std::path::PathBuf> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    let found = crate::lab::source::discover(std::path::Path::new(""))?;
    // `Path::new("").join(name)` is the bare name: shown and saved as the user would type it.
    status(global, format_args!("Using lab file {} (found in the current folder)", found.display()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `topo ssh` and `topo console` take the lab file as a positional argument after the
    /// VM, like every other command, and still as `-f FILE` (not both).
    #[test]
    fn ssh_and_console_take_the_lab_file_as_an_argument() {
        let file = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Ssh(a)) => (a.vm, a.file.or(a.file_flag), a.command),
            Ok(Command::Console(a)) => (a.vm, a.file.or(a.file_flag), Vec::new()),
            other => panic!("{argv:?}: {other:?}"),
        };
        let lab = Some(std::path::PathBuf::from("lab.yaml"));
        let cmd = vec!["hostname".to_string()];
        assert_eq!(file(&["topo", "ssh", "deb1", "lab.yaml", "--", "hostname"]), ("deb1".into(), lab.clone(), cmd));
        assert_eq!(file(&["topo", "ssh", "-f", "lab.yaml", "deb1"]), ("deb1".into(), lab.clone(), vec![]));
        assert_eq!(file(&["topo", "ssh", "deb1", "--", "hostname"]).1, None);
        assert_eq!(file(&["topo", "console", "deb1", "lab.yaml"]), ("deb1".into(), lab.clone(), vec![]));
        assert_eq!(file(&["topo", "console", "--file", "lab.yaml", "deb1"]), ("deb1".into(), lab, vec![]));
        assert!(Cli::try_parse_from(["topo", "ssh", "deb1", "a.yaml", "-f", "b.yaml"]).is_err(), "one lab file");
    }

    /// Every flag of every subcommand that takes a time (one whose value parses to a
    /// `Duration`, or named `*timeout*`, `*interval*`, `*wait*`, `*delay*`, `*graceful*`)
    /// parses through [`duration::parse_duration`]: the same forms everywhere, and an error
    /// rather than an overflow for what no `Duration` holds.
    #[test]
    fn every_duration_flag_takes_the_same_forms() {
        let cli = Cli::command();
        let mut seen = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                // The subcommand with nothing required: its other arguments do not matter
                // here. `--flag=value` suits optional values too.
                let parse = |v: &str| {
                    sub.clone().mut_args(|a| a.required(false)).try_get_matches_from(["t", &format!("--{long}={v}")])
                };
                let id = arg.get_id().as_str();
                let takes_duration = ["90", "90s"]
                    .iter()
                    .any(|v| parse(v).is_ok_and(|m| matches!(m.try_get_one::<std::time::Duration>(id), Ok(Some(_)))));
                let named = ["timeout", "interval", "wait", "delay", "graceful"].iter().any(|w| long.contains(w));
                if !takes_duration && !named {
                    continue;
                }
                seen.push(format!("{} --{long}", sub.get_name()));
                for (ok, secs) in [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600)] {
                    let m = parse(ok).unwrap_or_else(|e| panic!("{} --{long} {ok}: {e}", sub.get_name()));
                    let d = m.get_one::<std::time::Duration>(id);
                    assert_eq!(d, Some(&std::time::Duration::from_secs(secs)), "{} --{long} {ok}", sub.get_name());
                }
                assert!(parse("400000000000000000m").is_err(), "{} --{long}", sub.get_name());
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(help.contains("90, 90s, 2m, 1h"), "{} --{long}: help names the forms: {help}", sub.get_name());
            }
        }
        assert!(seen.len() >= 5, "apply, destroy and verify have duration flags: {seen:?}");
    }
}
