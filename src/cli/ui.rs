//! The CLI's two streams: results on stdout, progress and errors on stderr. The only place that
//! writes to them (clippy's `print_stdout`/`print_stderr` lints keep it so).
//!
//! A closed stdout (`topo plan --json lab.yaml | head -c 1`) is not an error and never a
//! panic: the first write that fails with `EPIPE` marks stdout closed, that write and every
//! later one are dropped, and the command finishes what it was doing (an `apply` does not stop
//! half way because nobody reads its output) with its usual exit status. Any other write error
//! on stdout (a full disk behind a redirection) is an error of the command. Writes to stderr
//! are best effort: a closed or broken stderr never stops a command.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writing a result to stdout failed for a reason other than a closed pipe.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("writing to standard output failed")]
#[diagnostic(code(topo::cli::stdout))]
pub struct StdoutError(#[source] pub io::Error);

/// Writes `args` to `w`, treating a broken pipe as "the reader is gone": marks `closed` and
/// returns `Ok`. Nothing is written once `closed` is set.
fn write_to(w: &mut dyn Write, closed: &AtomicBool, args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    if closed.load(Ordering::Relaxed) {
        return Ok(());
    }
    match w.write_fmt(args).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            closed.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(StdoutError(e)),
    }
}

/// Writes to stdout (see the module docs for a closed pipe). Use [`out!`](crate::out) and
/// [`outln!`](crate::outln).
pub fn stdout(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    write_to(&mut io::stdout().lock(), &STDOUT_CLOSED, args)
}

/// Writes raw bytes (a completion script, a man page) to stdout, like [`stdout`].
pub fn stdout_bytes(bytes: &[u8]) -> Result<(), StdoutError> {
    let closed = &STDOUT_CLOSED;
    if closed.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut w = io::stdout().lock();
    match w.write_all(bytes).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            closed.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(StdoutError(e)),
    }
}

/// Writes to stderr, ignoring every error (progress and diagnostics are best effort).
pub fn stderr(args: fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.flush());
}

/// Whether `--color auto` colours a stream that is (`is_terminal`) or is not a terminal:
/// never when `NO_COLOR` is set and not empty (the NO_COLOR convention: an empty value is
/// unset), always when `CLICOLOR_FORCE` is set, not empty and not `0` (the CLICOLOR
/// convention), else only on a terminal. `NO_COLOR` wins over `CLICOLOR_FORCE`, as in
/// anstream's own choice.
pub fn auto_colour(is_terminal: bool) -> bool {
    if anstyle_query::no_color() {
        return false;
    }
    let forced = anstyle_query::clicolor_force() && std::env::var_os("CLICOLOR_FORCE").is_some_and(|v| v != "0");
    forced || is_terminal
}

/// `print!` to stdout without the panic on a closed pipe; `?` it (a [`StdoutError`]).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::ui::stdout(format_args!($($t)*)) };
}

/// `println!` to stdout without the panic on a closed pipe; `?` it (a [`StdoutError`]).
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::ui::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::ui::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprintln!` that never panics (a closed stderr is ignored).
#[macro_export]
macro_rules! errln {
    () => { $crate::cli::ui::stderr(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::ui::stderr(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::cli::ui::stderr(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone away.
    struct Closed(usize);
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0 += 1;
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn broken_pipe_closes_quietly_and_drops_later_writes() {
        let closed = AtomicBool::new(false);
        let mut w = Closed(0);
        assert!(write_to(&mut w, &closed, format_args!("a")).is_ok());
        assert!(closed.load(Ordering::Relaxed));
        assert!(write_to(&mut w, &closed, format_args!("b")).is_ok());
        assert_eq!(w.0, 1, "nothing is written once the reader is gone");
    }

    #[test]
    fn other_write_errors_are_errors() {
        let closed = AtomicBool::new(false);
        let e = write_to(&mut Full, &closed, format_args!("a")).unwrap_err();
        assert_eq!(e.0.raw_os_error(), Some(nix::errno::Errno::ENOSPC as i32));
        assert!(!closed.load(Ordering::Relaxed));
    }
}
