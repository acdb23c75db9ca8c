//! Issue 15 end-to-end checks (identity): see the module list at the end of tests/e2e.rs.
//! Two lab files with one `name:` on real libvirt: the second is refused and the first
//! stays intact; the same file through a symlinked folder is the same lab; `--take-over`
//! re-tags in place (no VM restarted); `topo list` shows every lab instance.

use super::*;

const IDENT: &str = "ident";

/// Lab `ident` (or `prefix:` given): one isolated network, tiny guests with an overlay on
/// the shared `base` image (an absolute path, so every copy of the file names the same one).
fn ident_lab(prefix: Option<&str>, subnet: &str, base: &Path, vms: &[&str]) -> String {
    let g = guest_dir();
    let prefix = prefix.map(|p| format!("prefix: {p}\n")).unwrap_or_default();
    let vms: String = vms
        .iter()
        .map(|n| {
            format!(
                "  {n}:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    disk: {{ image: {} }}\n    nics: [{{ network: lan }}]\n",
                base.display()
            )
        })
        .collect();
    format!(
        "apiVersion: topo/v1\nname: {IDENT}\n{prefix}networks:\n  lan:\n    mode: isolated\n    subnet: {subnet}.0/24\nvms:\n{vms}"
    )
}

fn domid(dom: &str) -> String {
    virsh_ok(&["domid", dom]).trim().to_string()
}

/// The labs `topo list --json` shows, as (name, prefix, file, vms running, vms total).
fn listed() -> Vec<(String, String, String, u64, u64)> {
    let r = topo_ok(&["list", "--json"]);
    let doc: Value = serde_json::from_str(&r.stdout).expect("list JSON");
    doc["labs"]
        .as_array()
        .expect("labs")
        .iter()
        .filter(|l| l["name"] == IDENT)
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_string(),
                l["prefix"].as_str().unwrap_or_default().to_string(),
                l["file"].as_str().unwrap_or_default().to_string(),
                l["vms"]["up"].as_u64().unwrap_or(99),
                l["vms"]["total"].as_u64().unwrap_or(99),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_two_lab_files_with_one_name() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = std::fs::canonicalize(tmp.path()).expect("canonical temp dir");
    let base = root.join("base.qcow2");
    make_base(&base);
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(root.join(d)).expect("lab folder");
    }
    std::os::unix::fs::symlink(root.join("a"), root.join("link")).expect("symlinked folder");
    let full = ident_lab(None, "192.168.186", &base, &["web", "db"]);
    let a = write(&root.join("a"), "lab.topo.yaml", &full);
    let b = write(&root.join("b"), "lab.topo.yaml", &ident_lab(None, "192.168.186", &base, &["web"]));

    topo_ok(&["apply", "-y", "--no-verify", path(&a)]);
    let (web_id, db_id) = (domid("ident-web"), domid("ident-db"));
    let db_disk = disk_sources("ident-db");
    clock.step("lab a applied: ident-web, ident-db with overlays");

    // The same file through a symlinked folder, and from its own folder by a bare name:
    // the same lab instance, nothing to do.
    let r = topo(&["plan", "--detailed-exitcode", root.join("link/lab.topo.yaml").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.show());
    let r = topo_in(&root.join("a"), &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.show());

    // The copy without db: plan, apply -y and destroy -y are refused before anything is
    // touched, naming the other file; the first lab is intact.
    for args in [&["plan"][..], &["apply", "-y", "--no-verify"], &["destroy", "-y"]] {
        let mut args = args.to_vec();
        args.push(path(&b));
        let r = topo(&args);
        assert_eq!(r.code, 1, "topo {args:?}: {}", r.show());
        let flat = r.err_flat();
        assert!(flat.contains("topo::plan::other_instance"), "{}", r.show());
        assert!(flat.contains(path(&a)) && flat.contains("vm.db (ident-db)"), "{}", r.show());
        assert!(flat.contains("--take-over"), "{}", r.show());
    }
    assert_eq!((domid("ident-web"), domid("ident-db")), (web_id.clone(), db_id.clone()), "lab a untouched");
    for d in &db_disk {
        assert!(Path::new(d).exists(), "db's disk {d} is gone");
    }
    let r = topo(&["plan", "--detailed-exitcode", path(&a)]);
    assert_eq!(r.code, 0, "lab a still plans empty: {}", r.show());
    clock.step("the copy without db refused (plan, apply, destroy); lab a intact");

    // The same name under another prefix is another lab beside it; `topo list` shows both.
    let c = write(&root.join("c"), "lab.topo.yaml", &ident_lab(Some("c-"), "192.168.187", &base, &["web"]));
    topo_ok(&["apply", "-y", "--no-verify", path(&c)]);
    let want = vec![
        ("ident".to_string(), "c-".to_string(), path(&c).to_string(), 1, 1),
        ("ident".to_string(), "ident-".to_string(), path(&a).to_string(), 2, 2),
    ];
    assert_eq!(listed(), want);
    let table = topo_ok(&["list"]).stdout;
    assert!(table.starts_with("LAB "), "{table}");
    assert!(table.contains(path(&a)) && table.contains(path(&c)), "{table}");
    assert_eq!(topo_ok(&["status", "--all"]).stdout, table);
    assert_eq!((domid("ident-web"), domid("ident-db")), (web_id.clone(), db_id.clone()), "lab c touched lab a");
    clock.step("lab c (prefix c-) applied beside it; topo list shows both");

    // A fresh clone (b now holds the full file) takes the lab over: re-tagged in place.
    std::fs::write(&b, &full).expect("write b");
    let r = topo_ok(&["apply", "-y", "--no-verify", "--take-over", path(&b)]);
    assert!(r.stdout.contains("0 added, 3 changed, 0 replaced, 0 destroyed"), "{}", r.show());
    assert_eq!((domid("ident-web"), domid("ident-db")), (web_id, db_id), "take-over restarted a VM");
    let xml = virsh_ok(&["dumpxml", "--inactive", "ident-db"]);
    assert!(xml.contains(&format!("file=\"{}\"", path(&b))), "{xml}");
    let r = topo(&["plan", "--detailed-exitcode", path(&b)]);
    assert_eq!(r.code, 0, "{}", r.show());
    let r = topo(&["plan", path(&a)]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.err_flat().contains(path(&b)), "{}", r.show());
    assert!(listed().iter().any(|l| l.2 == path(&b) && l.4 == 2), "{:?}", listed());
    clock.step("lab taken over by b in place (same domain ids); a now refused");

    topo_ok(&["destroy", "-y", path(&b)]);
    topo_ok(&["destroy", "-y", path(&c)]);
    assert_eq!(leftovers(IDENT), Vec::<String>::new());
    assert_eq!(leftovers("c"), Vec::<String>::new());
    assert_eq!(listed(), vec![]);
    clock.step("both destroyed; nothing left");
}
