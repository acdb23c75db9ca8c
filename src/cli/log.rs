//! Diagnostic logs on stderr: `-v`/`-vv` and `TOPO_LOG` (`RUST_LOG` syntax) set up a
//! `tracing` subscriber; without either, none is installed and logging costs nothing.

use tracing_subscriber::EnvFilter;

/// The environment variable holding a log filter in `RUST_LOG` syntax (`debug`,
/// `topo::host::hypervisor=debug,warn`, ...), as documented by `tracing_subscriber::EnvFilter`.
pub const ENV: &str = "TOPO_LOG";

/// A `TOPO_LOG` value that is not a valid filter.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{ENV}={value:?} is not a log filter: {reason}")]
#[diagnostic(
    code(topo::cli::log_filter),
    help(
        "use the RUST_LOG syntax: a level (`debug`), or `target=level` pairs separated by commas (`topo=debug,warn`)"
    )
)]
pub struct BadFilter {
    pub value: String,
    pub reason: String,
}

/// The filter for `verbose` occurrences of `-v` and the `TOPO_LOG` value `env`: `None` when
/// neither asks for logs. `-v` shows topo's debug events (every libvirt call with its
/// duration), `-vv` also its trace events (the XML sent to libvirt); they are added to
/// whatever `TOPO_LOG` says.
pub fn filter(verbose: u8, env: Option<&str>) -> Result<Option<EnvFilter>, BadFilter> {
    let env = env.map(str::trim).filter(|s| !s.is_empty());
    if verbose == 0 && env.is_none() {
        return Ok(None);
    }
    let mut filter = match env {
        Some(value) => EnvFilter::builder()
            .parse(value)
            .map_err(|e| BadFilter { value: value.to_owned(), reason: e.to_string() })?,
        None => EnvFilter::new("warn"),
    };
    let own = match verbose {
        0 => None,
        1 => Some("topo=debug"),
        _ => Some("topo=trace"),
    };
    if let Some(d) = own {
        // Invariant: a constant directive that parses.
        filter = filter.add_directive(d.parse().expect("a valid directive"));
    }
    Ok(Some(filter))
}

/// Installs the stderr subscriber when `-v` or `TOPO_LOG` asks for one.
pub fn init(verbose: u8, color: bool) -> Result<(), BadFilter> {
    let env = std::env::var(ENV).ok();
    if let Some(filter) = filter(verbose, env.as_deref())? {
        // Fails only when a subscriber is already set (a second call): keep the first.
        // A failed write is not reported on stderr again (`eprintln!` would panic on a
        // closed stderr pipe): logs are best effort, like all of stderr (cli::ui).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .log_internal_errors(false)
            .try_init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_means_no_subscriber() {
        assert!(filter(0, None).unwrap().is_none());
        assert!(filter(0, Some("  ")).unwrap().is_none());
    }

    #[test]
    fn flags_and_env_combine() {
        assert_eq!(filter(1, None).unwrap().unwrap().to_string(), "topo=debug,warn");
        assert_eq!(filter(2, None).unwrap().unwrap().to_string(), "topo=trace,warn");
        assert_eq!(filter(0, Some("debug")).unwrap().unwrap().to_string(), "debug");
        assert_eq!(filter(1, Some("info")).unwrap().unwrap().to_string(), "topo=debug,info");
    }

    #[test]
    fn a_bad_filter_is_refused() {
        let e = filter(0, Some("topo=loud")).unwrap_err();
        assert_eq!(e.value, "topo=loud");
        assert!(e.to_string().starts_with("TOPO_LOG=\"topo=loud\" is not a log filter"), "{e}");
    }
}
