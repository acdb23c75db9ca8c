//! The host a lab runs on: what topo reads and changes through libvirt (`hypervisor`, with its
//! libvirt XML in `xml`), what it reads and changes of the machine that runs it (`machine`:
//! bridges and taps, `tc` qdiscs, `kernel` features, routes; `image` headers), and what it
//! makes of both (`observed`, `labs`).

pub mod hypervisor;
pub mod image;
pub mod kernel;
pub mod labs;
pub mod machine;
pub mod observed;
pub mod tc;
pub mod xml;
