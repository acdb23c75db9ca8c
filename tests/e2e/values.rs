//! Issue 15 end-to-end checks (values): see the module list at the end of tests/e2e.rs.

use super::*;

/// A one-VM lab `val` on base image `image` with the given `disk:` extras.
fn image_lab(image: &Path, extra: &str) -> String {
    let g = guest_dir();
    format!(
        "apiVersion: topo/v1\nname: val\nnetworks:\n  lan: {{ mode: isolated, subnet: 192.168.171.0/24 }}\nvms:\n  d1:\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    disk: {{ image: {}{extra} }}\n    cloud_init: {{ enabled: false }}\n    nics: [{{ network: lan }}]\n",
        image.display()
    )
}

/// On the local host topo reads each base image's header itself (bounded) and the planner
/// applies the remote pools' rules to it: `disk.size` below the image's virtual size
/// (`qemu-img create -b` would make an overlay the guest sees cut short: QEMU block.c
/// `bdrv_img_create`) and a declared qcow2 that is raw (block/qcow2.c `qcow2_do_open`:
/// "Image is not in qcow2 format") are refused by `topo plan` and `topo apply` with
/// nothing touched; the right size plans.
#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_image_header_refusals() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    let tmp = tempfile::tempdir().expect("temp dir");
    let qcow = tmp.path().join("base.qcow2");
    let raw = tmp.path().join("raw.qcow2");
    for (file, format) in [(&qcow, "qcow2"), (&raw, "raw")] {
        let o = Command::new("qemu-img").args(["create", "-q", "-f", format]).arg(file).arg("64M").output();
        assert!(o.is_ok_and(|o| o.status.success()), "qemu-img create {format}");
    }
    assert!(leftovers("val").is_empty(), "{:?}", leftovers("val"));

    let small = write(tmp.path(), "small.yaml", &image_lab(&qcow, ", size: 32MiB"));
    for args in [vec!["plan", path(&small)], vec!["apply", "-y", path(&small)]] {
        let r = topo(&args);
        assert_eq!(r.code, 1, "{}", r.show());
        let flat = r.err_flat();
        assert!(flat.contains("topo::plan::disk_size"), "{}", r.show());
        assert!(flat.contains("disk.size 32MiB of vm `d1` is smaller than the virtual size"), "{}", r.show());
        assert!(flat.contains("64MiB (67108864 bytes, as its header on this machine says it)"), "{}", r.show());
        assert!(flat.contains("give `size: 64MiB` or more"), "{}", r.show());
    }
    assert!(leftovers("val").is_empty(), "refused, yet touched: {:?}", leftovers("val"));
    clock.step("disk.size below the qcow2 image's virtual size: refused, nothing touched");

    let wrong = write(tmp.path(), "wrong.yaml", &image_lab(&raw, ""));
    let r = topo(&["apply", "-y", path(&wrong)]);
    assert_eq!(r.code, 1, "{}", r.show());
    let flat = r.err_flat();
    assert!(flat.contains("topo::plan::image_format"), "{}", r.show());
    assert!(
        flat.contains("is declared qcow2 (the default), but its header on this machine says format raw"),
        "{}",
        r.show()
    );
    assert!(leftovers("val").is_empty(), "refused, yet touched: {:?}", leftovers("val"));
    clock.step("declared qcow2, raw on the local host: refused, nothing touched");

    // The same image at its own size, and the raw one declared raw, plan.
    let ok = write(tmp.path(), "ok.yaml", &image_lab(&qcow, ", size: 64MiB"));
    let r = topo(&["plan", "--detailed-exitcode", path(&ok)]);
    assert_eq!(r.code, 2, "{}", r.show());
    let ok = write(tmp.path(), "raw.yaml", &image_lab(&raw, ", format: raw"));
    let r = topo(&["plan", "--detailed-exitcode", path(&ok)]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(leftovers("val").is_empty(), "{:?}", leftovers("val"));
    clock.step("matching size and format plan");
}
