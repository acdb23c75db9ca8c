//! topo: virtual-machine labs on libvirt from a YAML file (plan, apply, verify, destroy).
//!
//! Data flows one way: `source -> spec -> model -> graph -> plan(desired, observed) ->
//! render | apply -> verify`. See docs/architecture.md.

// Output goes through `cli::ui` only: `print!` panics on a closed stdout.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod address;
pub mod apply;
pub mod arp;
pub mod cli;
pub mod diag;
pub mod files;
pub mod graph;
pub mod guest;
pub mod hypervisor;
pub mod image;
pub mod impair;
pub mod kernel;
pub mod labs;
pub mod model;
pub mod observed;
pub mod ownership;
pub mod plan;
pub mod prober;
pub mod results;
pub mod schema;
pub mod shape;
pub mod source;
pub mod spec;
pub mod status;
pub mod tc;
pub mod validate;
pub mod verify;
pub mod xml;
