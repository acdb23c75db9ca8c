//! The lab file, from text to a validated model: `source` (files and spans) -> `spec` (raw
//! YAML with spans) -> `shape` (structural checks against the schema) -> `validate` (every
//! semantic rule, all problems at once) -> `model` (validated newtypes), with `impair` (netem
//! values), `address` (typed resource addresses), `capture` (what `topo capture` listens on), `addressing` (the IPv4 address topo derives for a NIC), `ipv6` (the SLAAC address of a NIC), `group` (VM groups: `count:`, members' names, group targets), `wire` (point-to-point wires: names, MACs, taps, addresses), `ownership` (the tag and identity every
//! object topo makes carries) and `cloud_init_rules` (what cloud-init and sshd accept).

pub mod address;
pub mod addressing;
pub mod capture;
pub mod cloud_init_rules;
pub mod group;
pub mod hosts;
pub mod impair;
pub mod ipv6;
pub mod model;
pub mod names;
pub mod ownership;
pub mod schema;
pub mod shape;
pub mod source;
pub mod spec;
pub mod validate;
pub mod wire;
