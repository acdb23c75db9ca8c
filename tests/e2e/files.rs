//! Issue 15 end-to-end checks (files): see the module list at the end of tests/e2e.rs.
//! A seed upload cut short is repaired by the next apply; a lab whose user-data is a FIFO
//! cannot block `status` or `destroy` (docs/files.md).

use super::*;
use std::collections::BTreeSet;

const SEED_LAB: &str = "seedcut";

/// One tiny guest with a disk (so cloud-init, and a seed volume, are on).
fn seed_lab(user_data: Option<&str>) -> String {
    let g = guest_dir();
    let ud = user_data.map(|u| format!("cloud_init:\n  user_data: {u}\n")).unwrap_or_default();
    format!(
        "apiVersion: topo/v1\nname: {SEED_LAB}\n{ud}networks:\n  lan:\n    mode: isolated\n    subnet: 192.168.181.0/24\n\
         vms:\n  v1:\n    hypervisor: qemu\n    memory: 128MiB\n    \
         boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    \
         disk: {{ image: base.qcow2, size: 128MiB }}\n    nics: [{{ network: lan }}]\n"
    )
}

/// The seed volumes (and partial uploads) of the lab in the overlay pool.
fn seed_volumes() -> Vec<String> {
    let pool = topo::lab::ownership::OVERLAY_POOL;
    let _ = virsh(&["pool-refresh", pool]);
    names(&["vol-list", pool])
        .into_iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|v| v.starts_with(&format!("{SEED_LAB}-")) && v.contains("-cidata-"))
        .collect()
}

fn vol_sha(dir: &Path, vol: &str) -> String {
    let f = dir.join("vol.bin");
    virsh_ok(&["vol-download", "--pool", topo::lab::ownership::OVERLAY_POOL, vol, path(&f)]);
    sha256(&f)
}

/// What a kill of topo during the stream upload of a seed leaves, made on the real daemon
/// (a kill at the right byte cannot be timed): the seed volume gone and a `<seed>-partial`
/// volume of the full capacity holding only the first half of the bytes. The next plan
/// shows the partial volume deleted with reason `interrupted-upload` and the seed uploaded
/// again; apply makes the seed whole (same SHA-256 as the one a clean apply wrote); destroy
/// leaves nothing. Then `user_data` as a FIFO: `plan` refuses it at once (`not_a_file`),
/// `status` and `destroy` finish without blocking on it.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_files_seed_cut_short_and_fifo_user_data() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let o =
        Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(dir.join("base.qcow2")).arg("64M").output();
    assert!(o.expect("qemu-img").status.success());
    let lab = write(dir, "lab.yaml", &seed_lab(None));
    let r = topo(&["apply", "-y", "--no-verify", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    let seeds = seed_volumes();
    assert_eq!(seeds.len(), 1, "one seed, no partial left: {seeds:?}");
    let seed = seeds[0].clone();
    assert!(!seed.ends_with("-partial"), "{seed}");
    let whole = vol_sha(dir, &seed);
    clock.step("applied: one whole seed, no partial upload left");

    // The state a kill during the upload leaves.
    let pool = topo::lab::ownership::OVERLAY_POOL;
    let bytes = dir.join("vol.bin");
    virsh_ok(&["vol-download", "--pool", pool, &seed, path(&bytes)]);
    let len = std::fs::metadata(&bytes).expect("seed bytes").len();
    // Cut before the last non-zero byte (the tail of a FAT image is zeros: a cut there would
    // leave the same bytes).
    let data = std::fs::read(&bytes).expect("seed");
    let last = data.iter().rposition(|b| *b != 0).expect("a seed holds data");
    let half = dir.join("half.bin");
    std::fs::write(&half, &data[..last / 2]).expect("half");
    virsh_ok(&["vol-delete", "--pool", pool, &seed]);
    let partial = format!("{seed}-partial");
    virsh_ok(&["vol-create-as", pool, &partial, &len.to_string(), "--format", "raw"]);
    virsh_ok(&["vol-upload", "--pool", pool, &partial, path(&half)]);
    assert_ne!(vol_sha(dir, &partial), whole, "the partial volume is truncated");

    let p = plan_json(&lab);
    let changes = changes(&p);
    let cut = changes.get(&format!("volume.{partial}")).unwrap_or_else(|| panic!("the partial volume: {p:#}"));
    assert_eq!(cut["action"], "delete", "{p:#}");
    assert_eq!(cut["reasons"][0]["kind"], "interrupted-upload", "{p:#}");
    let vm = changes.get("vm.v1").unwrap_or_else(|| panic!("the VM's seed: {p:#}"));
    assert_eq!(vm["reasons"][0]["kind"], "deleted-outside-topo", "{p:#}");
    let r = topo(&["apply", "-y", "--no-verify", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_converged(&lab);
    assert_eq!(seed_volumes(), vec![seed.clone()], "the seed is back, the partial volume gone");
    assert_eq!(vol_sha(dir, &seed), whole, "the seed is whole again");
    clock.step("a seed upload cut short: planned as interrupted-upload, apply made the seed whole");

    // user_data a FIFO: refused by plan at once; status and destroy do not block on it.
    let fifo = dir.join("user-data");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let lab = write(dir, "lab.yaml", &seed_lab(Some("user-data")));
    let t = Instant::now();
    let r = topo(&["plan", path(&lab)]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert!(r.stderr.contains("topo::lab::not_a_file") && r.err_flat().contains("FIFO"), "{}", r.show());
    let r = topo(&["status", path(&lab)]);
    assert!(!r.stderr.contains("not_a_file"), "{}", r.show());
    let r = topo(&["destroy", "-y", path(&lab)]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(t.elapsed() < Duration::from_secs(60), "plan, status and destroy took {:?}", t.elapsed());
    assert_eq!(leftovers(SEED_LAB), Vec::<String>::new());
    clock.step("user_data a FIFO: plan refused it at once; status and destroy did not block");
}

// ------------------------------------------------------------------ host keys (cloud guests)

/// The known_hosts files topo keeps for lab `lab` (any libvirt host), under the state dir
/// of this environment (`topo ssh` runs with the same one).
pub(super) fn known_hosts_files(lab: &str) -> Vec<PathBuf> {
    let Some(dir) = topo::files::state_dir().map(|d| d.join("known_hosts")) else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{lab}-"))))
        .collect();
    v.sort();
    v
}

/// The host names (aliases) of the lines of the lab's one known_hosts file.
fn pinned(lab: &str) -> (PathBuf, BTreeSet<String>) {
    let files = known_hosts_files(lab);
    assert_eq!(files.len(), 1, "one known_hosts file for the lab: {files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("known_hosts");
    let names = text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    (files[0].clone(), names)
}

/// After `topo ssh` reached `vms` of the cloud lab: their host keys are pinned in the lab's
/// own known_hosts file (folder 0700) under `<libvirt name>.<domain UUID>` and nothing else;
/// a changed key for an alias is refused by ssh (the file is put back after).
pub(super) fn check_host_keys_pinned(lab: &Path, agent: &Agent, lab_name: &str, vms: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let (file, names) = pinned(lab_name);
    let want: BTreeSet<String> = vms
        .iter()
        .map(|vm| {
            let dom = format!("{lab_name}-{vm}");
            topo::verify::known_hosts::alias(&dom, virsh_ok(&["domuuid", &dom]).trim())
        })
        .collect();
    assert_eq!(names, want, "the keys of the VMs reached, by domain UUID: {}", file.display());
    let mode = std::fs::metadata(file.parent().expect("folder")).expect("folder").mode() & 0o777;
    assert_eq!(mode, 0o700, "the known_hosts folder is private");
    // A changed key (here: another ed25519 key, the agent's) is refused, as ssh does.
    let kept = std::fs::read_to_string(&file).expect("known_hosts");
    let other = agent.public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let forged: String = kept
        .lines()
        .map(|l| match l.split_whitespace().next() {
            Some(alias) if alias.starts_with(&format!("{lab_name}-{}.", vms[0])) => format!("{alias} {other}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&file, forged).expect("forge");
    let r = ssh(lab, agent, vms[0], &["true"]);
    assert_eq!(r.code, 255, "a changed host key is refused:\n{}", r.show());
    assert!(
        r.stderr.contains("HOST IDENTIFICATION HAS CHANGED") || r.stderr.contains("Host key verification failed"),
        "{}",
        r.show()
    );
    std::fs::write(&file, kept).expect("restore");
    let r = ssh(lab, agent, vms[0], &["true"]);
    assert_eq!(r.code, 0, "the pinned key again:\n{}", r.show());
}
