//! The host a lab runs on: what topo reads and changes through libvirt (`hypervisor`, with its
//! libvirt XML in `xml`), what it reads of the machine itself (`image` headers, `kernel`
//! features, `tc` qdiscs), and what it makes of both (`observed`, `labs`).

pub mod hypervisor;
pub mod image;
pub mod kernel;
pub mod labs;
pub mod observed;
pub mod tc;
pub mod xml;
