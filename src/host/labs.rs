//! `topo list`: every lab instance on a host, read from the owner tags alone (no lab file),
//! as a pure function of what was observed; rendered as a table or versioned JSON
//! (docs/list-json.md).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::host::observed::{DomainState, Observed, OwnerTag};
use crate::lab::address::Address;
use crate::lab::ownership::{volume_domain, volume_owned_by};

/// The version of the `topo list --json` document.
pub const JSON_FORMAT_VERSION: &str = "1";

/// Objects counted two ways: how many are up (running VMs, active networks) of how many.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// VMs running, or networks active.
    pub up: usize,
    pub total: usize,
}

/// One lab instance on the host: the objects whose owner tags name the same lab, prefix and
/// lab file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabEntry {
    /// The lab's `name:`.
    pub name: String,
    /// The lab's `prefix:`; for tags of an older topo, derived from the names (`null` when
    /// they give none).
    pub prefix: Option<String>,
    /// The lab file's canonical path; `null` for objects tagged by a topo older than lab
    /// identity (which recorded no file).
    pub file: Option<String>,
    /// When topo last wrote one of its objects (RFC 3339 UTC, the latest of the tags);
    /// `null` when no tag says.
    pub applied: Option<String>,
    /// Who ran topo then (the login names in its tags, sorted).
    pub users: Vec<String>,
    /// Its domains: running of total.
    pub vms: Counts,
    /// Its networks: active of total.
    pub networks: Counts,
    /// The libvirt names of its domains, sorted.
    pub domain_names: Vec<String>,
    /// The libvirt names of its networks, sorted.
    pub network_names: Vec<String>,
    /// Volumes in the overlay pool (overlays, cloud-init seeds) tagged for its domains.
    pub volumes: usize,
}

/// Every lab instance on a host, sorted by name, prefix, then file (older tags first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabList {
    pub format_version: &'static str,
    /// The libvirt URI observed.
    pub uri: String,
    pub labs: Vec<LabEntry>,
}

type Key = (String, Option<String>, Option<String>);

/// A tag that topo trusts as its own for `name` (see `ownership::Ownership::of`): it names
/// that libvirt name and a valid resource.
fn trusted<'a>(owner: Option<&'a OwnerTag>, name: &str) -> Option<&'a OwnerTag> {
    owner.filter(|t| t.name == name && t.resource.parse::<Address>().is_ok())
}

fn entry<'a>(by: &'a mut BTreeMap<Key, LabEntry>, t: &OwnerTag) -> &'a mut LabEntry {
    let prefix = t.lab_prefix();
    let e = by.entry((t.lab.clone(), prefix.clone(), t.file.clone())).or_insert_with(|| LabEntry {
        name: t.lab.clone(),
        prefix,
        file: t.file.clone(),
        applied: None,
        users: Vec::new(),
        vms: Counts::default(),
        networks: Counts::default(),
        domain_names: Vec::new(),
        network_names: Vec::new(),
        volumes: 0,
    });
    if t.applied > e.applied {
        e.applied.clone_from(&t.applied);
    }
    if let Some(u) = &t.user
        && !e.users.contains(u)
    {
        e.users.push(u.clone());
        e.users.sort();
    }
    e
}

/// Every lab instance with a network or domain on the host `uri`, from `observed`. Pure.
pub fn list(observed: &Observed, uri: &str) -> LabList {
    let mut by: BTreeMap<Key, LabEntry> = BTreeMap::new();
    for n in observed.networks.values() {
        let Some(t) = trusted(n.owner.as_ref(), &n.name) else { continue };
        let e = entry(&mut by, t);
        e.networks.total += 1;
        e.networks.up += usize::from(n.active);
        e.network_names.push(n.name.clone());
    }
    let mut owner_of: BTreeMap<&str, Key> = BTreeMap::new();
    for d in observed.domains.values() {
        let Some(t) = trusted(d.owner.as_ref(), &d.name) else { continue };
        let e = entry(&mut by, t);
        e.vms.total += 1;
        e.vms.up += usize::from(d.state == DomainState::Running);
        e.domain_names.push(d.name.clone());
        owner_of.insert(d.name.as_str(), (t.lab.clone(), t.lab_prefix(), t.file.clone()));
    }
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    for v in observed.volumes.values() {
        let Some(key) = volume_domain(&v.name).and_then(|d| owner_of.get(d)) else { continue };
        if volume_owned_by(&key.0, &v.name)
            && counted.insert(v.name.as_str())
            && let Some(e) = by.get_mut(key)
        {
            e.volumes += 1;
        }
    }
    let mut labs: Vec<LabEntry> = by.into_values().collect();
    for l in &mut labs {
        l.domain_names.sort();
        l.network_names.sort();
    }
    LabList { format_version: JSON_FORMAT_VERSION, uri: uri.to_string(), labs }
}

impl LabList {
    /// The `topo list --json` document.
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: strings, numbers, arrays and options only.
        serde_json::to_value(self).expect("list JSON serialises")
    }

    /// The human view: a header and one line per lab instance, columns padded to their
    /// widest value; `-` where a tag does not say.
    pub fn table(&self) -> String {
        if self.labs.is_empty() {
            return format!("No topo labs on {}.\n", self.uri);
        }
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        let mut rows: Vec<[String; 6]> =
            vec![["LAB", "PREFIX", "VMS", "NETWORKS", "APPLIED", "FILE"].map(String::from)];
        for l in &self.labs {
            let prefix = match &l.prefix {
                Some(p) if p.is_empty() => "\"\"".to_string(),
                other => dash(other),
            };
            let applied = match (&l.applied, l.users.is_empty()) {
                (Some(a), false) => format!("{a} by {}", l.users.join(",")),
                (a, _) => dash(a),
            };
            let file = l.file.clone().unwrap_or_else(|| "- (tagged by an older topo)".into());
            rows.push([
                l.name.clone(),
                prefix,
                format!("{}/{} running", l.vms.up, l.vms.total),
                format!("{}/{} active", l.networks.up, l.networks.total),
                applied,
                file,
            ]);
        }
        crate::table::columns(rows, 2, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::hypervisor::memory::MemoryHypervisor;

    fn tagged(lab: &str, prefix: Option<&str>, file: Option<&str>, resource: &str, name: &str) -> String {
        let attr = |k: &str, v: Option<&str>| v.map(|v| format!(" {k}=\"{v}\"")).unwrap_or_default();
        format!(
            "<metadata><topo:owner xmlns:topo=\"{}\" lab=\"{lab}\" resource=\"{resource}\" name=\"{name}\" \
             spec-hash=\"00\"{}{} applied=\"2026-12-07T01:00:00Z\" user=\"alice\"/></metadata>",
            crate::lab::ownership::OWNER_NS,
            attr("prefix", prefix),
            attr("file", file)
        )
    }

    fn domain(name: &str, metadata: &str) -> String {
        format!(
            "<domain type='qemu'><name>{name}</name>{metadata}<memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
             <os><type>hvm</type><kernel>/k</kernel></os><devices></devices></domain>"
        )
    }

    fn network(name: &str, bridge: &str, metadata: &str) -> String {
        format!("<network><name>{name}</name>{metadata}<bridge name='{bridge}'/></network>")
    }

    /// Two instances of `demo` (two files), `demo` under another prefix, an older topo's
    /// lab, a copy under another name and an untagged domain: grouped by instance, sorted;
    /// the copy and the untagged domain are no lab's.
    #[test]
    fn every_lab_instance_from_the_tags_alone() {
        let a = Some("/labs/a/lab.yaml");
        let b = Some("/labs/b/lab.yaml");
        let hv = MemoryHypervisor::new()
            .with_network_xml(
                &network("demo-lan", "virbr1", &tagged("demo", Some("demo-"), a, "network.lan", "demo-lan")),
                true,
                true,
            )
            .unwrap()
            .with_domain_xml(&domain("demo-web", &tagged("demo", Some("demo-"), a, "vm.web", "demo-web")), true)
            .unwrap()
            .with_domain_xml(&domain("demo-db", &tagged("demo", Some("demo-"), a, "vm.db", "demo-db")), false)
            .unwrap()
            .with_domain_xml(&domain("x-web", &tagged("demo", Some("x-"), b, "vm.web", "x-web")), true)
            .unwrap()
            .with_domain_xml(&domain("old-vm", &tagged("old", None, None, "vm.vm", "old-vm")), true)
            .unwrap()
            .with_domain_xml(&domain("copy", &tagged("demo", Some("demo-"), a, "vm.web", "demo-web")), true)
            .unwrap()
            .with_domain_xml(&domain("mine", ""), true)
            .unwrap();
        let list = list(&hv.observe().unwrap(), "test:///default");
        let keys: Vec<(&str, Option<&str>, Option<&str>)> =
            list.labs.iter().map(|l| (l.name.as_str(), l.prefix.as_deref(), l.file.as_deref())).collect();
        assert_eq!(keys, [("demo", Some("demo-"), a), ("demo", Some("x-"), b), ("old", Some("old-"), None)]);
        let demo = &list.labs[0];
        assert_eq!((demo.vms.up, demo.vms.total, demo.networks.up, demo.networks.total), (1, 2, 1, 1));
        assert_eq!(demo.domain_names, ["demo-db", "demo-web"]);
        assert_eq!(demo.applied.as_deref(), Some("2026-12-07T01:00:00Z"));
        let table = list.table();
        assert!(table.starts_with("LAB   PREFIX  VMS          NETWORKS    APPLIED  "), "{table}");
        assert!(table.contains("- (tagged by an older topo)"), "{table}");
        let json = list.to_json();
        assert_eq!(json["labs"][0]["vms"]["total"], 2);
        assert_eq!(json["labs"][2]["file"], serde_json::Value::Null);
        assert_eq!(super::list(&MemoryHypervisor::new().observe().unwrap(), "u").table(), "No topo labs on u.\n");
    }
}
