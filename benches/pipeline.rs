//! `cargo bench`: the pure stages on a large lab, timed with a plain median-of-runs harness
//! (no daemon needed). Figures are recorded in docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use topo::host::observed::Observed;
use topo::lab::source::SourceFile;

/// A lab of `vms` VMs, each with 2 NICs on 2 of 8 isolated networks, one reservation each.
fn big_lab(vms: usize) -> String {
    let mut s = String::from("apiVersion: topo/v1\nname: bench\nnetworks:\n");
    for n in 0..8 {
        s += &format!("  net{n}:\n    mode: isolated\n    subnet: 10.{n}.0.0/16\n");
    }
    s += "vms:\n";
    for v in 0..vms {
        let (a, b) = (v % 8, (v + 3) % 8);
        s += &format!(
            "  vm{v}:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: tests/fixtures/boot/vmlinuz }}\n    nics:\n      - network: net{a}\n        ip: 10.{a}.{}.{}\n      - network: net{b}\n",
            v / 200 + 1,
            v % 200 + 10
        );
    }
    s
}

fn bench<T>(name: &str, runs: usize, mut f: impl FnMut() -> T) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    let med = times[runs / 2];
    println!(
        "{name:<48} median {:>10.3} ms  (min {:.3} ms, {runs} runs)",
        med.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    for vms in [10, 100, 500] {
        let text = big_lab(vms);
        let src = SourceFile::from_text(Path::new("bench.yaml"), text);
        bench(&format!("validate lab with {vms} VMs ({} bytes)", src.text.len()), 21, || {
            topo::lab::validate::load(&src).unwrap()
        });
        let lab = topo::lab::validate::load(&src).unwrap();
        // The session's entry point, on the in-memory host (the plan itself does no I/O).
        let hv = topo::host::hypervisor::memory::MemoryHypervisor::new();
        let session = topo::session::Session::over(&hv);
        let empty = Observed::default();
        bench(&format!("plan {vms} VMs against an empty host"), 21, || session.plan_on(&lab, &empty, &[]).unwrap());
        // An up-to-date host: observed state parsed from the XML the plan defines.
        let mut host = Observed::default();
        for op in session.plan_on(&lab, &empty, &[]).unwrap().changes.iter().flat_map(|c| &c.ops) {
            match op {
                topo::plan::Op::DefineNetwork { xml } => {
                    let flags = topo::host::xml::NetworkFlags { active: true, persistent: true, autostart: true };
                    let n = topo::host::xml::parse_network(xml, flags).unwrap();
                    host.networks.insert(n.name.clone(), n);
                }
                topo::plan::Op::DefineDomain { xml } => {
                    let d = topo::host::xml::parse_domain(xml, topo::host::observed::DomainState::Running).unwrap();
                    host.domains.insert(d.name.clone(), d);
                }
                _ => {}
            }
        }
        let plan = session.plan_on(&lab, &host, &[]).unwrap();
        assert!(plan.is_empty(), "a host built from the lab has nothing to change");
        bench(&format!("plan {vms} VMs against an up-to-date host"), 21, || session.plan_on(&lab, &host, &[]).unwrap());
    }
    let mac: topo::lab::model::MacAddr = "52:54:00:12:34:56".parse().unwrap();
    let frame = topo::verify::arp::build_request(mac, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    bench("parse 10k ARP reply frames", 21, || {
        (0..10_000).filter(|_| topo::verify::arp::parse_reply(black_box(&frame)).is_some()).count()
    });
}
