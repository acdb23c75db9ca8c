//! `topo console`: a VM's serial console in this terminal, through libvirt's stream API
//! (like `virsh console`); Ctrl-] leaves.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use super::{GlobalArgs, Outcome};

/// The escape byte: Ctrl-] (0x1d), as in virsh console and telnet.
pub const ESCAPE: u8 = 0x1d;

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// The VM (its name in the lab file)
    pub vm: String,
    /// The lab file (default: the only topo.yaml or *.topo.yaml in the current folder)
    pub file: Option<PathBuf>,
    /// The lab file, as a flag: the same as the positional argument (kept for scripts
    /// written when this was the only way)
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "file", hide = true)]
    pub file_flag: Option<PathBuf>,
    /// Take the console over from another client that holds it
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConsoleError {
    #[error("lab {lab} has no VM `{vm}`")]
    #[diagnostic(code(topo::console::unknown_vm), help("VMs in this lab: {known}"))]
    UnknownVm { lab: String, vm: String, known: String },
    #[error("could not set the terminal to raw mode: {0}")]
    #[diagnostic(code(topo::console::terminal))]
    Terminal(nix::Error),
}

/// Restores the terminal's settings when dropped (also on the escape key's exit path).
struct RawMode {
    /// Behind a mutex: `Termios` is not `Sync`, and both console threads may restore it.
    saved: std::sync::Mutex<Option<nix::sys::termios::Termios>>,
}

impl RawMode {
    fn enter() -> Result<Self, ConsoleError> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(Self { saved: std::sync::Mutex::new(None) });
        }
        let saved = tcgetattr(&stdin).map_err(ConsoleError::Terminal)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(ConsoleError::Terminal)?;
        Ok(Self { saved: std::sync::Mutex::new(Some(saved)) })
    }
    fn restore(&self) {
        let saved = self.saved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = saved.as_ref() {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Connects the terminal to the VM's serial console until Ctrl-] or the console closes.
pub fn run(global: &GlobalArgs, args: &ConsoleArgs) -> miette::Result<Outcome> {
    let file = super::lab_path(global, args.file.as_deref().or(args.file_flag.as_deref()))?;
    let lab = super::load_lab_unopened(&file)?;
    let Some(vm) = lab.vms.values().find(|v| v.name.as_str() == args.vm) else {
        let known = lab.vms.keys().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
        return Err(ConsoleError::UnknownVm { lab: lab.name.to_string(), vm: args.vm.clone(), known }.into());
    };
    let session = super::connect_lab(global, &lab)?;
    let console = session.console(&vm.host, vm.libvirt_name.as_str(), args.force)?;
    let on = if lab.is_multi_host() { format!(" on host {}", vm.host) } else { String::new() };
    super::status(global, format!("Connected to {} ({}){on}. Escape character is ^]", args.vm, vm.libvirt_name));
    let raw = RawMode::enter()?;
    std::thread::scope(|s| {
        // Keyboard to guest; the escape key ends the session at once (the reader below
        // may be blocked in recv).
        s.spawn(|| {
            let mut buf = [0u8; 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (data, escape) = match buf[..n].iter().position(|b| *b == ESCAPE) {
                    Some(i) => (&buf[..i], true),
                    None => (&buf[..n], false),
                };
                if console.send(data).is_err() || escape {
                    raw.restore();
                    crate::errln!();
                    std::process::exit(0);
                }
            }
        });
        // Guest to terminal.
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = console.recv(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        raw.restore();
        crate::errln!("\r\nconsole closed");
        std::process::exit(0);
    })
}
