//! `topo completions` and `topo man`: shell completion scripts and man pages, generated from
//! the CLI definition itself (clap_complete, clap_mangen), so they never drift from the flags.

use std::path::PathBuf;

use clap::CommandFactory;
use miette::IntoDiagnostic;

use super::{Cli, GlobalArgs, Outcome};

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The subcommand whose page to print (`topo-plan(1)` for `plan`); the page of `topo`
    /// itself when omitted
    pub command: Option<String>,
    /// Write every page (topo.1 and topo-COMMAND.1) into DIR instead, and print their paths
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

/// The CLI definition as the pages and scripts see it: the program is always called `topo`.
fn definition() -> clap::Command {
    Cli::command().bin_name("topo")
}

/// The completion script for `shell`, as bytes.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = definition();
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail, so clap_complete's internal `expect` cannot fire.
    clap_complete::generate(shell, &mut cmd, "topo", &mut buf);
    buf
}

/// The roff man page of `topo` (`None`) or of `topo COMMAND`; `None` when there is no such
/// subcommand.
pub fn man_page(command: Option<&str>) -> Option<Vec<u8>> {
    let mut cmd = definition().disable_help_subcommand(true);
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => cmd.find_subcommand(name)?.clone(),
    };
    let mut buf = Vec::new();
    // Invariant: rendering into a Vec performs no I/O that can fail.
    clap_mangen::Man::new(page).render(&mut buf).expect("rendering into memory");
    Some(buf)
}

pub fn run_completions(_global: &GlobalArgs, args: &CompletionsArgs) -> miette::Result<Outcome> {
    super::ui::stdout_bytes(&completion_script(args.shell))?;
    Ok(Outcome::Ok)
}

pub fn run_man(_global: &GlobalArgs, args: &ManArgs) -> miette::Result<Outcome> {
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).into_diagnostic()?;
        let mut cmd = definition().disable_help_subcommand(true);
        cmd.build();
        let names: Vec<Option<String>> =
            std::iter::once(None).chain(cmd.get_subcommands().map(|s| Some(s.get_name().to_owned()))).collect();
        for name in names {
            let file = match &name {
                None => "topo.1".to_owned(),
                Some(n) => format!("topo-{n}.1"),
            };
            // Invariant: every name comes from the definition's own subcommands.
            let page = man_page(name.as_deref()).expect("a subcommand of the definition");
            let path = dir.join(file);
            std::fs::write(&path, page).map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
            crate::outln!("{}", path.display())?;
        }
        return Ok(Outcome::Ok);
    }
    let Some(page) = man_page(args.command.as_deref()) else {
        let names: Vec<String> = definition().get_subcommands().map(|s| s.get_name().to_owned()).collect();
        miette::bail!(
            help = format!("one of: {}", names.join(", ")),
            "no subcommand `{}`",
            args.command.as_deref().unwrap_or_default()
        );
    };
    super::ui::stdout_bytes(&page)?;
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_every_subcommand() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            for sub in definition().get_subcommands() {
                assert!(script.contains(sub.get_name()), "{shell}: {}", sub.get_name());
            }
        }
    }

    #[test]
    fn a_page_per_subcommand() {
        let top = String::from_utf8(man_page(None).unwrap()).unwrap();
        assert!(top.contains(".TH topo 1"), "{top}");
        for sub in definition().get_subcommands() {
            let page = String::from_utf8(man_page(Some(sub.get_name())).unwrap()).unwrap();
            assert!(page.contains(&format!(".TH topo-{} 1", sub.get_name())), "{page}");
        }
        assert!(man_page(Some("nope")).is_none());
    }
}
