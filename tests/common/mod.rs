//! Helpers shared by the tier-2 tests: labs from YAML text, a memory host with the test
//! driver's `default` network, and apply/plan round trips on it.
#![allow(dead_code)] // each test crate uses a subset

use std::path::Path;
use std::sync::atomic::AtomicBool;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use topo::apply::progress::Silent;
use topo::apply::{ApplyError, Options, Report};
use topo::host::Host;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::observed::Observed;
use topo::lab::address::Address;
use topo::lab::model::Lab;
use topo::lab::source::SourceFile;
use topo::plan::{self, Plan};
use topo::session::Session;

/// The test driver's `default` network (NAT 192.168.122.0/24 on virbr0).
pub const DEFAULT_NET: &str = include_str!("../fixtures/test-driver-default.xml");

/// Where lab files "live": relative kernel paths resolve against tests/fixtures.
pub const LAB_PATH: &str = "tests/fixtures/lab.yaml";
/// Where topo defines the overlay pool on a host that has none.
pub const OVERLAY_DIR: &str = topo::lab::ownership::DEFAULT_OVERLAY_DIR;

/// A lab from YAML text, as if read from `tests/fixtures/lab.yaml`.
pub fn lab(yaml: &str) -> Lab {
    lab_at(LAB_PATH, yaml)
}

/// A lab from YAML text, as if read from `path` (another lab file is another lab instance).
pub fn lab_at(path: &str, yaml: &str) -> Lab {
    let source = SourceFile::from_text(Path::new(path), yaml.to_string());
    match topo::lab::validate::load(&source) {
        Ok(l) => l,
        Err(e) => panic!("test lab does not validate:\n{}", render_diag(&e)),
    }
}

/// A memory host with an active, autostarted `default` network.
pub fn host() -> MemoryHypervisor {
    MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, true).expect("default network")
}

pub fn options(parallelism: usize) -> Options {
    Options { parallelism, shutdown_timeout: std::time::Duration::from_secs(1), host: None }
}

/// Observes `hv` (a `&MemoryHypervisor`, or `Host::libvirt(&hv)` for the test driver) as
/// every plan is made on ([`Session::observe`]) and plans `lab` on it.
pub fn plan_on<'a>(lab: &Lab, hv: impl Into<Host<'a>>) -> (Plan, Observed) {
    let session = Session::over(hv);
    let observed = session.observe(lab).expect("observe");
    let p = match plan::plan(lab, &observed, &session.uri()) {
        Ok(p) => p,
        Err(e) => panic!("plan refused:\n{}", render_diag(&e)),
    };
    (p, observed)
}

/// Plans and applies `lab` on `hv` with `parallelism` workers; returns the plan and report.
pub fn apply_with<'a>(lab: &Lab, hv: impl Into<Host<'a>>, parallelism: usize) -> (Plan, Report) {
    let hv = hv.into();
    let (p, _) = plan_on(lab, hv);
    let cancel = AtomicBool::new(false);
    let report = Session::over(hv).execute(&p, &options(parallelism), &cancel, &Silent);
    (p, report)
}

/// Whether the host converged to `lab` (for the `targets`; empty: the whole lab), as apply
/// checks it after its steps ([`Session::converged`]).
pub fn converged_for<'a>(lab: &Lab, hv: impl Into<Host<'a>>, targets: &[Address]) -> Result<Observed, ApplyError> {
    Session::over(hv).converged(lab, targets).map(|(observed, _)| observed)
}

/// [`converged_for`] the whole lab.
pub fn converged<'a>(lab: &Lab, hv: impl Into<Host<'a>>) -> Result<Observed, ApplyError> {
    converged_for(lab, hv, &[])
}

/// Plans and applies `lab`, asserting every step is done and the host converged.
pub fn apply_ok<'a>(lab: &Lab, hv: impl Into<Host<'a>>) -> Plan {
    let hv = hv.into();
    let (p, report) = apply_with(lab, hv, 4);
    assert!(!report.failed(), "apply failed: {report:#?}");
    if let Err(e) = converged(lab, hv) {
        panic!("not converged:\n{}", render_diag(&e));
    }
    p
}

/// Destroys everything `lab` owns on `hv`; returns the plan and report.
pub fn destroy_with<'a>(lab: &Lab, hv: impl Into<Host<'a>>, parallelism: usize) -> (Plan, Report) {
    let session = Session::over(hv);
    let p = plan::plan_destroy(lab, &session.observe_host().expect("observe"));
    let cancel = AtomicBool::new(false);
    let report = session.execute(&p, &options(parallelism), &cancel, &Silent);
    (p, report)
}

/// A diagnostic as the CLI shows it, without colour, 100 columns.
pub fn render_diag(d: &dyn Diagnostic) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, d)
        .expect("render diagnostic");
    out
}

/// A hand-made domain (not created by topo) with one NIC per `(mac, network)`.
pub fn foreign_domain_xml(name: &str, nics: &[(&str, &str)]) -> String {
    let ifaces: String = nics
        .iter()
        .map(|(mac, net)| {
            format!("<interface type='network'><mac address='{mac}'/><source network='{net}'/></interface>")
        })
        .collect();
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os><devices>{ifaces}</devices></domain>"
    )
}

/// A hand-made network (not created by topo).
pub fn foreign_network_xml(name: &str, bridge: &str, cidr_host: &str, netmask: &str) -> String {
    format!(
        "<network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}' stp='on'/>\
         <ip address='{cidr_host}' netmask='{netmask}'/></network>"
    )
}

/// Three VMs on two lab networks and the host's external `default`: `router` on `default`
/// and `lan`, `web` on `lan` and `back` (both lab networks), `db` on `back`.
pub const BASE: &str = "\
apiVersion: topo/v1
name: demo
networks:
  default:
    external: true
  lan:
    mode: nat
    subnet: 10.50.0.0/24
    dhcp: {start: 10.50.0.100, end: 10.50.0.199}
    bridge: demo-lan
    autostart: true
  back:
    mode: isolated
    subnet: 10.51.0.0/24
    dhcp: true
vms:
  router:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz, initrd: boot/initrd.gz, cmdline: console=ttyS0}
    nics:
      - network: default
      - network: lan
        ip: 10.50.0.10
  web:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    nics:
      - network: lan
        ip: 10.50.0.20
      - network: back
  db:
    hypervisor: qemu
    memory: 256MiB
    boot: {kernel: boot/vmlinuz}
    nics:
      - network: back
        ip: 10.51.0.30
";

/// `text` with the first `from` replaced by `to` (which must be there).
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "edit: {from:?} not in the lab text");
    text.replacen(from, to, 1)
}

/// One VM `box` with a 1 GiB overlay on `images/base.qcow2` (and a cloud-init seed, on by
/// default) on one isolated network: lab `disky`.
pub const DISK_LAB: &str = "\
apiVersion: topo/v1
name: disky
networks:
  net:
    mode: isolated
    subnet: 10.80.0.0/24
vms:
  box:
    hypervisor: qemu
    boot: {kernel: boot/vmlinuz}
    disk: {image: images/base.qcow2, size: 1GiB}
    nics: [{network: net, ip: 10.80.0.5}]
";

/// The key tables of a JSON document's doc page: `<!-- json-table: NAME -->` followed by a
/// `| key | type | meaning |` table; NAME -> key -> the documented types (`string|null`).
pub fn json_tables(doc: &str) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("<!-- json-table: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        let mut keys = std::collections::BTreeMap::new();
        for row in lines.by_ref().skip(2) {
            if !row.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = row.split(" | ").map(|c| c.trim_matches(|ch| ch == '|' || ch == ' ')).collect();
            let key = cells[0].trim_matches('`').to_string();
            let ty = cells[1].replace("\\|", "|");
            keys.insert(key, ty.split('|').map(str::to_owned).collect());
        }
        out.insert(name.to_string(), keys);
    }
    out
}

/// The JSON type name of `v` as the doc pages write it.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `obj` has exactly the keys of table `name` in `doc` (the text of doc page `page`), with
/// the documented types (an integer is also a number); a key documented as possibly
/// `absent` may be left out.
pub fn check_json_table(page: &str, doc: &str, name: &str, obj: &serde_json::Value) {
    let t = json_tables(doc);
    let table = t.get(name).unwrap_or_else(|| panic!("{page} has no table {name}"));
    let map = obj.as_object().unwrap_or_else(|| panic!("{name}: not an object: {obj}"));
    for k in map.keys() {
        assert!(table.contains_key(k), "{name}: key `{k}` is not documented in {page}");
    }
    for (k, types) in table {
        // `absent` among a key's types: the key may be left out (e.g. `host` on one host).
        if !map.contains_key(k) && types.iter().any(|t| t == "absent") {
            continue;
        }
        let v = map.get(k).unwrap_or_else(|| panic!("{name}: documented key `{k}` missing in {obj}"));
        let t = json_type(v);
        let ok = types.iter().any(|d| d == t || (d == "number" && t == "integer"));
        assert!(ok, "{name}.{k}: documented as {types:?}, found {t} ({v})");
    }
}
