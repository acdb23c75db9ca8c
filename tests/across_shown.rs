//! What a user sees of a lab across two in-memory hosts (`Session::over_hosts`): apply's
//! and destroy's progress lines name each step's host, one progress display serves every
//! host's thread, each step's report names its host, and each verified NIC names its host.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use topo::apply::Report;
use topo::apply::progress::{Lines, Progress};
use topo::host::Host;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::lab::model::HostName;
use topo::session::{ApplyRequest, DestroyRequest, Session, Ui};

fn lab_text() -> String {
    format!(
        "apiVersion: topo/v1\nname: mhshown\n\
         hosts:\n  h1: {{uri: \"qemu+ssh://root@h1/system\", underlay: 10.77.0.11}}\n  \
         h2: {{uri: \"qemu+ssh://root@h2/system\", underlay: 10.77.0.12}}\n\
         networks:\n  lan: {{mode: isolated, subnet: 10.10.0.0/24}}\n\
         vms:\n  g1:\n    boot: {{kernel: {k}}}\n    nics: [{{network: lan}}]\n  \
         g2:\n    host: h2\n    boot: {{kernel: {k}}}\n    nics: [{{network: lan, ip: 10.10.0.20}}]\n",
        k = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/boot/vmlinuz")
    )
}

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A [`Ui`] that keeps the progress lines, how many progress displays were made, and the
/// last run's report.
#[derive(Default)]
struct Recorded {
    lines: Buf,
    displays: AtomicUsize,
    report: Mutex<Option<Report>>,
    cancel: AtomicBool,
}

impl Recorded {
    /// Each progress line after its `[  0.0s] ` timestamp.
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| l.split_once("s] ").unwrap().1.to_string()).collect()
    }
}

impl Ui for Recorded {
    fn progress(&self) -> Box<dyn Progress + '_> {
        self.displays.fetch_add(1, Ordering::SeqCst);
        Box::new(Lines::to(Box::new(self.lines.clone())))
    }
    fn executed(&self, _command: topo::results::Command, report: &Report) -> miette::Result<()> {
        *self.report.lock().unwrap() = Some(report.clone());
        Ok(())
    }
    fn cancel(&self) -> &AtomicBool {
        &self.cancel
    }
}

#[test]
fn across_hosts_progress_reports_and_verification_name_the_host() {
    let l = lab(&lab_text());
    let hv1 = MemoryHypervisor::new().with_hostname("shown-h1").with_host_addresses(&["10.77.0.11"]);
    let hv2 = MemoryHypervisor::new().with_hostname("shown-h2").with_host_addresses(&["10.77.0.12"]);
    let h = |s: &str| HostName::new(s).unwrap();
    let s = Session::over_hosts([(h("h1"), Host::from(&hv1)), (h("h2"), Host::from(&hv2))]);

    let ui = Recorded::default();
    let req = ApplyRequest {
        saved: None,
        targets: &[],
        options: options(4),
        auto_approve: true,
        disconnect_foreign: false,
        verify: None,
    };
    let run = s.apply(&l, &req, &ui).unwrap_or_else(|e| panic!("{:?}", e.error));
    // The results JSON (docs/results-json.md) names each step's host.
    let doc = topo::results::run_json(topo::results::Command::Apply, &run.plan, run.executed.as_ref(), None);
    let steps = doc["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    for step in steps {
        check_json_table("docs/results-json.md", include_str!("../docs/results-json.md"), "step", step);
        let want = if step["address"] == "vm.g2" {
            "h2"
        } else if step["address"] == "vm.g1" {
            "h1"
        } else {
            ""
        };
        assert!(step["host"].is_string() && (want.is_empty() || step["host"] == want), "{step}");
    }
    assert_eq!(ui.displays.load(Ordering::SeqCst), 1, "one progress display for every host");
    let lines = ui.lines();
    for want in [
        "h1: network.lan: creating...",
        "h2: network.lan: creating...",
        "h1: vm.g1: creating...",
        "h2: vm.g2: creating...",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} in {lines:#?}");
    }
    assert!(lines.iter().all(|l| l.starts_with("h1: ") || l.starts_with("h2: ")), "{lines:#?}");
    let report = ui.report.lock().unwrap().take().unwrap();
    for step in &report.steps {
        let host = step.host.as_ref().map(|h| h.as_str());
        match step.address.to_string().as_str() {
            "vm.g1" => assert_eq!(host, Some("h1")),
            "vm.g2" => assert_eq!(host, Some("h2")),
            _ => assert!(host.is_some(), "{step:?}"),
        }
    }

    let proven = s
        .verify(
            &l,
            topo::verify::VerifyOptions { timeout: std::time::Duration::from_millis(200), ..Default::default() },
            &|_| true,
            &topo::session::Silent::default(),
        )
        .unwrap();
    assert_eq!(proven.report.nics.len(), 2);
    // The inventory names each VM's host (docs/results-json.md).
    let inv: serde_json::Value =
        serde_json::from_str(&topo::verify::inventory::Inventory::new(&l, &proven.report).json()).unwrap();
    for (vm, want) in inv["hosts"].as_array().unwrap().iter().zip(["h1", "h2"]) {
        check_json_table("docs/results-json.md", include_str!("../docs/results-json.md"), "inventory-host", vm);
        assert_eq!(vm["host"], want, "{vm}");
    }
    for n in &proven.report.nics {
        let want = if n.target.vm.as_str() == "g1" { "h1" } else { "h2" };
        assert_eq!(n.target.host.as_ref().map(|h| h.as_str()), Some(want), "{n:?}");
    }

    let ui = Recorded::default();
    let req = DestroyRequest { targets: &[], graceful: None, options: options(4), disconnect_foreign: false };
    s.destroy(&l, &req, &ui).unwrap_or_else(|e| panic!("{:?}", e.error));
    let lines = ui.lines();
    for want in ["h1: vm.g1: destroying...", "h2: vm.g2: destroying...", "h2: network.lan: destroying..."] {
        assert!(lines.iter().any(|l| l == want), "{want} in {lines:#?}");
    }
}
