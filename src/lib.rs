//! topo: virtual-machine labs on libvirt from a YAML file (plan, apply, verify, destroy).
//!
//! Data flows one way: `source -> spec -> model -> graph -> plan(desired, observed) ->
//! render | apply -> verify`. See docs/architecture.md.

// Output goes through `cli::ui` only: `print!` panics on a closed stdout.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod apply;
pub mod cli;
pub mod diag;
pub mod files;
pub mod guest;
pub mod host;
pub mod lab;
pub mod plan;
pub mod results;
pub mod session;
pub mod table;
pub mod verify;
