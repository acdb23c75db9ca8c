//! libvirt XML: renders network, domain, interface and DHCP-host XML from the model, and
//! parses the XML libvirt returns into `observed` types.
//!
//! Rendering goes through quick-xml's serde serializer only (values are escaped by it; no
//! user value is ever concatenated into markup). Parsing uses partial serde structs for the
//! plain fields (unknown elements are ignored) and a namespace-aware pass for the parts
//! whose prefix libvirt may change on re-serialization (topo's owner tag, dnsmasq options).
//! Parsed XML is for reading only: it is never written back to libvirt.

mod domain;
mod network;
mod snapshot;
mod storage;

use std::net::Ipv4Addr;

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde::Serialize;

use crate::lab::ownership::{OWNER_NS, OwnerTag};

pub use domain::{
    console_log_path, domain_xml, domain_xml_with_seed, ethernet_interface_xml, interface_xml, live_taps, parse_domain,
    parse_interface,
};
pub use network::{
    NetworkFlags, dhcp_host_xml, forward_mode, network_xml, network_xml_keeping, parse_dhcp_host, parse_network,
};
pub use snapshot::{SnapshotDisk, parse_snapshot, snapshot_disks, snapshot_xml};
pub use storage::{
    dir_pool_xml, overlay_volume_xml, parse_pool_path, parse_volume_backing, parse_volume_info, parse_volume_key,
    plain_interface_xml, raw_volume_xml,
};

/// XML namespace of libvirt's dnsmasq passthrough options in network XML.
pub const DNSMASQ_NS: &str = "http://libvirt.org/schemas/network/dnsmasq/1.0";

/// Why XML could not be rendered or parsed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum XmlError {
    #[error("could not serialize {what} XML: {message}")]
    #[diagnostic(code(topo::host::xml::serialize))]
    Serialize { what: &'static str, message: String },
    #[error("could not parse {what} XML: {message}")]
    #[diagnostic(code(topo::host::xml::parse))]
    Parse { what: &'static str, message: String },
    #[error("network {0} is external: topo does not render XML for it")]
    #[diagnostic(code(topo::host::xml::external))]
    External(String),
    #[error("vm {vm} refers to network {network}, which is not in the lab")]
    #[diagnostic(code(topo::host::xml::unknown_network))]
    UnknownNetwork { vm: String, network: String },
    #[error("path {0:?} is not valid UTF-8; libvirt XML needs text paths")]
    #[diagnostic(code(topo::host::xml::path))]
    NonUtf8Path(std::path::PathBuf),
}

/// XML text with the spec hash written into its owner tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub xml: String,
    /// See [`spec_hash`].
    pub spec_hash: String,
}

/// The spec hash of an object topo writes is given by the planner (the hash of its desired
/// managed fields): the planner compares it with the hash read back from the owner tag to
/// tell drift (host changed, file did not) from a changed lab file.
/// `<metadata><topo:owner xmlns:topo=OWNER_NS lab= resource= name= spec-hash= prefix= file=
/// applied= user=/></metadata>` (the last four only when known).
#[derive(Serialize)]
pub(crate) struct MetadataW {
    #[serde(rename = "topo:owner")]
    owner: OwnerW,
}

#[derive(Serialize)]
struct OwnerW {
    #[serde(rename = "@xmlns:topo")]
    ns: &'static str,
    #[serde(rename = "@lab")]
    lab: String,
    #[serde(rename = "@resource")]
    resource: String,
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@spec-hash")]
    spec_hash: String,
    #[serde(rename = "@prefix", skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(rename = "@file", skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(rename = "@applied", skip_serializing_if = "Option::is_none")]
    applied: Option<String>,
    #[serde(rename = "@user", skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

impl MetadataW {
    pub(crate) fn new(tag: &OwnerTag) -> Self {
        Self {
            owner: OwnerW {
                ns: OWNER_NS,
                lab: tag.lab.clone(),
                resource: tag.resource.clone(),
                name: tag.name.clone(),
                spec_hash: tag.spec_hash.clone(),
                prefix: tag.prefix.clone(),
                file: tag.file.clone(),
                applied: tag.applied.clone(),
                user: tag.user.clone(),
            },
        }
    }
}

/// Serializes `value` as an indented XML document rooted at `root`.
pub(crate) fn to_xml<T: Serialize>(what: &'static str, root: &str, value: &T) -> Result<String, XmlError> {
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::with_root(&mut out, Some(root))
        .map_err(|e| XmlError::Serialize { what, message: e.to_string() })?;
    ser.indent(' ', 2);
    value.serialize(ser).map_err(|e| XmlError::Serialize { what, message: e.to_string() })?;
    out.push('\n');
    Ok(out)
}

/// Deserializes `xml` after checking that its root element is `<root>` (serde alone would
/// accept any root name).
pub(crate) fn from_xml<'de, T: serde::Deserialize<'de>>(
    what: &'static str,
    root: &str,
    xml: &'de str,
) -> Result<T, XmlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().map_err(|e| parse_err(what, e))? {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name();
                if name.as_ref() != root {
                    return Err(parse_err(what, format!("expected a <{root}> element, found <{}>", name.as_ref())));
                }
                break;
            }
            Event::Eof => return Err(parse_err(what, "no root element")),
            _ => {}
        }
    }
    quick_xml::de::from_str(xml).map_err(|e| parse_err(what, e))
}

/// Renders an object with the owner tag `tag` in its metadata. `build` gets the metadata
/// to embed.
pub(crate) fn render_with_owner<T: Serialize>(
    what: &'static str,
    root: &str,
    tag: &OwnerTag,
    build: impl Fn(Option<MetadataW>) -> T,
) -> Result<Rendered, XmlError> {
    let xml = to_xml(what, root, &build(Some(MetadataW::new(tag))))?;
    Ok(Rendered { xml, spec_hash: tag.spec_hash.clone() })
}

/// What an existing object keeps when topo defines it again, as libvirt gave it: inputs of
/// the rendering (Terraform's computed attributes), never compared by the planner. `None`
/// fields are left to libvirt, as for a new object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kept<'a> {
    /// The object's UUID: libvirt refuses a same-named definition with another UUID
    /// (`virDomainObjListAddLocked`, `virNetworkObjAssignDef`: "already exists with uuid").
    pub uuid: Option<&'a str>,
    /// A network's bridge, used when its lab entry names none. Without it libvirt 9.0 gives
    /// the new config another free `virbrN` while the running network stays on the old one,
    /// so config and live bridge differ.
    pub bridge: Option<&'a str>,
    /// A network's bridge MAC (`<mac address>`): set at create and kept, so a network that an
    /// older topo let libvirt give a random one is not changed for it.
    pub mac: Option<crate::lab::model::MacAddr>,
}

/// Inserts `<uuid>` after the root's `<name>` element, as libvirt stores a definition that
/// had none (it generates one): for the memory double and tests, which define XML rendered
/// without [`Kept`]. The planner renders the UUID it keeps instead.
#[cfg(any(test, feature = "testing"))]
pub fn with_uuid(xml: &str, uuid: Option<&str>) -> String {
    match (uuid, xml.find("</name>")) {
        (Some(u), Some(at)) if !xml.contains("<uuid>") => {
            let end = at + "</name>".len();
            let u = quick_xml::escape::escape(u);
            format!("{}<uuid>{u}</uuid>{}", &xml[..end], &xml[end..])
        }
        _ => xml.to_string(),
    }
}

/// Gives a network definition without a bridge name the bridge `bridge`, as libvirt stores a
/// redefinition of a network that has one: for the memory double and tests. The planner
/// renders the bridge it keeps ([`Kept::bridge`]) instead.
#[cfg(any(test, feature = "testing"))]
pub fn with_bridge(xml: &str, bridge: Option<&str>) -> String {
    let Some(b) = bridge else { return xml.to_string() };
    match xml.find("<bridge ") {
        Some(at) if !xml[at..].split('>').next().unwrap_or_default().contains("name=") => {
            let end = at + "<bridge ".len();
            format!("{}name=\"{}\" {}", &xml[..end], quick_xml::escape::escape(b), &xml[end..])
        }
        _ => xml.to_string(),
    }
}

#[cfg(test)]
mod bridge_tests {
    use super::with_bridge;

    #[test]
    fn redefine_keeps_the_bridge_libvirt_chose() {
        let xml = "<network><name>n</name><bridge stp=\"off\" delay=\"0\"/></network>";
        assert_eq!(
            with_bridge(xml, Some("virbr1")),
            "<network><name>n</name><bridge name=\"virbr1\" stp=\"off\" delay=\"0\"/></network>"
        );
        assert_eq!(with_bridge(xml, None), xml, "a new network: libvirt picks");
        let named = "<network><name>n</name><bridge name=\"topobr0\" stp=\"off\"/></network>";
        assert_eq!(with_bridge(named, Some("virbr1")), named, "the lab's own name wins");
    }
}

/// Facts read with namespace resolution (prefixes may differ from what topo wrote).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct NsFacts {
    pub owner: Option<OwnerTag>,
    /// Values of `<dnsmasq:options><dnsmasq:option value=.../>` in document order.
    pub dnsmasq_options: Vec<String>,
}

fn parse_err(what: &'static str, e: impl std::fmt::Display) -> XmlError {
    XmlError::Parse { what, message: e.to_string() }
}

/// `xml` without topo's owner tag (the element [`read_ns_facts`] reads as the owner), the
/// rest byte for byte; unchanged when it has none.
pub fn without_owner(what: &'static str, xml: &str) -> Result<String, XmlError> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<(String, bool)> = Vec::new(); // (local name, in no namespace)
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, ev) = reader.read_resolved_event().map_err(|e| parse_err(what, e))?;
        let in_owner_ns = matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == OWNER_NS);
        let unbound = !matches!(&ns, ResolveResult::Bound(_));
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_owned();
                let is_owner = stack.len() == 2
                    && in_owner_ns
                    && local == "owner"
                    && stack.last().is_some_and(|(l, no_ns)| l == "metadata" && *no_ns);
                if is_owner {
                    let end = if matches!(ev, Event::Start(_)) {
                        let name = e.name().as_ref().to_owned();
                        reader.read_to_end(quick_xml::name::QName(&name)).map_err(|e| parse_err(what, e))?;
                        reader.buffer_position() as usize
                    } else {
                        reader.buffer_position() as usize
                    };
                    return Ok(format!("{}{}", &xml[..before], &xml[end..]));
                }
                if matches!(ev, Event::Start(_)) {
                    stack.push((local, unbound));
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => return Ok(xml.to_string()),
            _ => {}
        }
    }
}

/// Finds topo's owner tag (`<metadata>/<owner>` in [`OWNER_NS`], directly under the root)
/// and dnsmasq options (`<options>/<option>` in [`DNSMASQ_NS`], directly under the root).
pub(crate) fn read_ns_facts(what: &'static str, xml: &str) -> Result<NsFacts, XmlError> {
    let mut reader = NsReader::from_str(xml);
    let mut facts = NsFacts::default();
    // Local names (with "is in namespace X" flags) of the open elements.
    let mut stack: Vec<(String, Option<String>)> = Vec::new();
    loop {
        let (ns, ev) = reader.read_resolved_event().map_err(|e| parse_err(what, e))?;
        let ns_of = |r: &ResolveResult| match r {
            ResolveResult::Bound(n) => Some(n.as_ref().to_owned()),
            _ => None,
        };
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_owned();
                let this_ns = ns_of(&ns);
                let depth = stack.len();
                let parent = stack.last();
                let parent_local = parent.map(|p| p.0.as_str());
                let parent_ns = parent.and_then(|p| p.1.as_deref());
                if depth == 2
                    && this_ns.as_deref() == Some(OWNER_NS)
                    && local == "owner"
                    && parent_local == Some("metadata")
                    && parent_ns.is_none()
                    && facts.owner.is_none()
                {
                    let mut tag = OwnerTag::default();
                    for a in e.attributes() {
                        let a = a.map_err(|e| parse_err(what, e))?;
                        // Unprefixed attributes only: they carry no namespace.
                        if a.key.prefix().is_some() {
                            continue;
                        }
                        let v =
                            a.normalized_value(XmlVersion::Implicit1_0).map_err(|e| parse_err(what, e))?.into_owned();
                        match a.key.local_name().as_ref() {
                            "lab" => tag.lab = v,
                            "resource" => tag.resource = v,
                            "name" => tag.name = v,
                            "spec-hash" => tag.spec_hash = v,
                            "prefix" => tag.prefix = Some(v),
                            "file" => tag.file = Some(v),
                            "applied" => tag.applied = Some(v),
                            "user" => tag.user = Some(v),
                            _ => {}
                        }
                    }
                    facts.owner = Some(tag);
                }
                if depth == 2
                    && this_ns.as_deref() == Some(DNSMASQ_NS)
                    && local == "option"
                    && parent_local == Some("options")
                    && parent_ns == Some(DNSMASQ_NS)
                {
                    for a in e.attributes() {
                        let a = a.map_err(|e| parse_err(what, e))?;
                        if a.key.prefix().is_none() && a.key.local_name().as_ref() == "value" {
                            let v = a.normalized_value(XmlVersion::Implicit1_0).map_err(|e| parse_err(what, e))?;
                            facts.dnsmasq_options.push(v.into_owned());
                        }
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    stack.push((local, this_ns));
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(facts)
}

/// `255.255.255.0` for 24.
pub(crate) fn prefix_to_netmask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    Ipv4Addr::from(bits)
}

/// 24 for `255.255.255.0`; `None` when the mask is not contiguous.
pub(crate) fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return None;
    }
    u8::try_from(ones).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_conversions() {
        assert_eq!(prefix_to_netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_to_netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(prefix_to_netmask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn owner_tag_found_under_any_prefix_only_in_owner_ns() {
        let xml = format!(
            "<network><name>x</name><metadata><a:owner xmlns:a='{OWNER_NS}' lab='l' resource='network.x' spec-hash='00'/>\
             <owner lab='evil' resource='r' spec-hash='1'/></metadata></network>"
        );
        let f = read_ns_facts("network", &xml).unwrap();
        let o = f.owner.unwrap();
        assert_eq!((o.lab.as_str(), o.resource.as_str(), o.spec_hash.as_str()), ("l", "network.x", "00"));

        let other_ns = "<network><metadata><topo:owner xmlns:topo='urn:other' lab='l' resource='r' spec-hash='1'/></metadata></network>";
        assert_eq!(read_ns_facts("network", other_ns).unwrap().owner, None);

        // Default-namespace form is the same element.
        let default_ns = format!(
            "<domain><metadata><owner xmlns='{OWNER_NS}' lab='q' resource='vm.a' spec-hash='2'/></metadata></domain>"
        );
        assert_eq!(read_ns_facts("domain", &default_ns).unwrap().owner.unwrap().lab, "q");
    }

    #[test]
    fn dnsmasq_options_need_the_namespace() {
        let xml = format!(
            "<network xmlns:d='{DNSMASQ_NS}'><name>x</name><d:options><d:option value='no-ping'/><d:option value='x=1'/></d:options></network>"
        );
        assert_eq!(read_ns_facts("network", &xml).unwrap().dnsmasq_options, vec!["no-ping", "x=1"]);
        let wrong = "<network xmlns:d='urn:x'><d:options><d:option value='no-ping'/></d:options></network>";
        assert!(read_ns_facts("network", wrong).unwrap().dnsmasq_options.is_empty());
    }
}

#[cfg(test)]
mod round_trip_tests;
