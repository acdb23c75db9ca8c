//! The command line: argument parsing, output and exit codes. Each subcommand is an
//! `XArgs` struct plus one function; results go to stdout, progress and errors to stderr.

mod apply;
mod console;
mod graph;
mod inventory;
mod log;
mod plan;
mod shell;
mod ssh;
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
    /// libvirt connection URI
    #[arg(short = 'c', long = "connect", global = true, env = "LIBVIRT_DEFAULT_URI", default_value = "qemu:///system")]
    pub connect: String,
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
    /// Whether to colour what goes to a stream that is (or is not) a terminal.
    pub fn color_for(&self, is_terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && std::env::var_os("NO_COLOR").is_none(),
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
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    Completions(shell::CompletionsArgs),
    /// Print a man page (roff), or write all of them into a folder
    Man(shell::ManArgs),
}

/// Runs the CLI; the binary's `main` is this one call.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = cli.global.color_for(std::io::stderr().is_terminal());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().color(color).unicode(color).build())
    }));
    virt::error::clear_error_callback();
    if let Err(e) = log::init(cli.global.verbose, color) {
        eprintln!("{:?}", miette::Report::new(e));
        return ExitCode::from(1);
    }
    let result = match &cli.command {
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Plan(a) => plan::run(&cli.global, a),
        Command::Apply(a) => apply::run_apply(&cli.global, a),
        Command::Destroy(a) => apply::run_destroy(&cli.global, a),
        Command::Verify(a) => verify::run_verify(&cli.global, a),
        Command::Status(a) => verify::run_status(&cli.global, a),
        Command::Graph(a) => graph::run(&cli.global, a),
        Command::Inventory(a) => inventory::run(&cli.global, a),
        Command::Ssh(a) => ssh::run(&cli.global, a),
        Command::Console(a) => console::run(&cli.global, a),
        Command::Schema => {
            println!("{}", crate::schema::schema_json());
            Ok(Outcome::Ok)
        }
        Command::Completions(a) => shell::run_completions(&cli.global, a),
        Command::Man(a) => shell::run_man(&cli.global, a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

/// Reads and validates a lab file: the first step of most subcommands.
pub(crate) fn load_lab(path: &std::path::Path) -> miette::Result<crate::model::Lab> {
    let source = crate::source::SourceFile::read(path)?;
    let mut lab = crate::validate::load(&source)?;
    ssh::fill_default_keys(&mut lab);
    Ok(lab)
}

/// A status line on stderr unless `-q`.
pub(crate) fn status(global: &GlobalArgs, msg: impl std::fmt::Display) {
    if !global.quiet {
        eprintln!("{msg}");
    }
}

/// Connects to libvirt at the global `--connect` URI.
pub(crate) fn connect(global: &GlobalArgs) -> miette::Result<crate::hypervisor::libvirt::LibvirtHypervisor> {
    Ok(crate::hypervisor::libvirt::LibvirtHypervisor::connect(&global.connect)?)
}

/// The host the connection reaches, as libvirt names it: what locks key on.
pub(crate) fn host_id(hv: &dyn crate::hypervisor::Hypervisor) -> miette::Result<crate::apply::lock::HostId> {
    Ok(crate::apply::lock::HostId::new(&hv.hostname()?, &hv.uri()))
}
