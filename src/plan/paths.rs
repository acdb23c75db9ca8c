//! The lab's files on another libvirt host: the facts libvirt's storage API gave
//! ([`Observed::paths`], gathered by [`crate::host::hypervisor::observe_paths`]) turned into plan
//! refusals (a missing file, a base image of another format) and warnings (a file topo
//! cannot check). Pure.
//!
//! A file libvirt's storage pools can speak for is checked there: a volume means the file
//! exists; a pool over the file's folder without that volume means it does not (a directory
//! pool lists every regular file of its folder once refreshed). A file in no active pool is
//! a warning, not an error: `virsh` and Terraform's libvirt provider accept such paths
//! (kernels usually live outside any pool), and refusing them would rule out most remote
//! labs. docs/lab-file.md, "Host conflicts".

use crate::diag::{Code, Problem};
use std::collections::BTreeSet;

use crate::host::observed::{Observed, PathFact};
use crate::lab::model::{ByteSize, HostFileRole, ImageFormat, Lab, VmName};

/// Each lab file, with its VM, as the host's facts know it (paths not gathered are left out).
fn facts<'a>(
    lab: &'a Lab,
    observed: &'a Observed,
) -> impl Iterator<Item = (&'a crate::lab::model::Vm, HostFileRole, String, miette::SourceSpan, &'a PathFact)> + 'a {
    lab.vms.values().flat_map(move |vm| {
        vm.host_files().into_iter().filter_map(move |(role, path, span)| {
            let key = path.to_string_lossy().into_owned();
            let fact = observed.paths.get(&key)?;
            Some((vm, role, key, span, fact))
        })
    })
}

/// What the host says about a base image: the format found, its virtual size in bytes
/// (for a file of that format), and who says so (for messages).
struct ImageSays<'a> {
    format: &'a str,
    virtual_size: Option<u64>,
    by: String,
}

/// The facts about the base image of `vm` when `fact` is its image's, from a remote pool
/// or from its header on this machine; `None` for other files or no such facts.
fn image_says<'a>(vm: &crate::lab::model::Vm, role: HostFileRole, fact: &'a PathFact) -> Option<ImageSays<'a>> {
    vm.disk.as_ref().filter(|_| role == HostFileRole::Image)?;
    match fact {
        PathFact::Volume { pool, format: Some(format), capacity } => {
            Some(ImageSays { format, virtual_size: *capacity, by: format!("libvirt's storage pool `{pool}` reports") })
        }
        PathFact::File(Ok(h)) => Some(ImageSays {
            format: &h.format,
            virtual_size: Some(h.virtual_size),
            by: "its header on this machine says".to_owned(),
        }),
        _ => None,
    }
}

/// The format the host finds for a base image, when it differs from the declared one.
fn other_format<'a>(
    vm: &crate::lab::model::Vm,
    role: HostFileRole,
    fact: &'a PathFact,
) -> Option<(ImageFormat, ImageSays<'a>)> {
    let d = vm.disk.as_ref()?;
    let says = image_says(vm, role, fact)?;
    (says.format != d.format.as_str()).then_some((d.format, says))
}

/// QEMU's `qemu-img create -b` makes an overlay of any size the caller gives, smaller than
/// its backing file too (block.c `bdrv_img_create` takes the backing file's size only when
/// none is given); the guest then sees the disk cut at the overlay's size (its partition
/// table names sectors past the end; the file systems there fail to mount or are corrupt).
/// So a `disk.size` below the base image's virtual size is refused, located at `size`.
fn smaller_than_image(vm: &crate::lab::model::Vm, role: HostFileRole, fact: &PathFact, path: &str) -> Option<Problem> {
    let d = vm.disk.as_ref()?;
    let (size, span) = (d.size?, d.size_span?);
    let says = image_says(vm, role, fact)?;
    // Declared another format: the size found is that format's, not the one QEMU opens.
    let virtual_size = says.virtual_size.filter(|_| says.format == d.format.as_str())?;
    let shown = ByteSize::from_bytes(virtual_size);
    (size.bytes() < virtual_size).then(|| {
        Problem::at(
            Code::HostDiskSize,
            span,
            format!(
                "disk.size {size} of vm `{}` is smaller than the virtual size of its base image `{path}`, {shown} ({virtual_size} bytes, as {} it): the guest would see that disk cut short",
                vm.name, says.by
            ),
            "below the image's virtual size",
            format!(
                "give `size: {}` or more, or remove `size` to keep the image's size",
                ByteSize::from_bytes(virtual_size.div_ceil(ByteSize::KIB) * ByteSize::KIB)
            ),
        )
    })
}

/// What QEMU cannot open in a qcow2 base image read on this machine (block/qcow2.c
/// `qcow2_do_open`): a version other than 2 and 3 ("Unsupported qcow2 version"), an
/// encrypted image (the domain gives QEMU no `<encryption>` secret: "Parameter
/// 'encrypt.key-secret' is required for cipher"), a header it cannot read; and a backing
/// file that is not there (block.c `bdrv_open_backing_file`: "Could not open backing file").
fn unopenable(
    vm: &crate::lab::model::Vm,
    role: HostFileRole,
    fact: &PathFact,
    path: &str,
    span: miette::SourceSpan,
) -> Vec<Problem> {
    let (Some(d), HostFileRole::Image, PathFact::File(read)) = (&vm.disk, role, fact) else { return Vec::new() };
    let refuse = |code, what: String, label: &str, help: &str| {
        Problem::at(
            code,
            span,
            format!("disk.image `{path}` of vm `{}` {what}", vm.name),
            label.to_owned(),
            help.to_owned(),
        )
    };
    let h = match read {
        Ok(h) => h,
        Err(e) if d.format == ImageFormat::Qcow2 && e.starts_with("its qcow2 header") => {
            return vec![refuse(
                Code::HostImageFormat,
                format!("cannot be opened by QEMU: {e}"),
                "corrupt qcow2 header",
                "check the image with `qemu-img check`, or use another image",
            )];
        }
        Err(_) => return Vec::new(),
    };
    if h.format != "qcow2" || d.format != ImageFormat::Qcow2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(v) = h.qcow2_version.filter(|v| !(2..=3).contains(v)) {
        out.push(refuse(
            Code::HostImageFormat,
            format!("is qcow2 version {v}; QEMU opens versions 2 and 3 only"),
            "unsupported qcow2 version",
            "convert it: `qemu-img convert -O qcow2 IMAGE NEW.qcow2`",
        ));
    }
    if h.encryption != 0 {
        out.push(refuse(
            Code::HostImageFormat,
            "is an encrypted qcow2 image; topo gives QEMU no key for it".to_owned(),
            "encrypted",
            "use an image that is not encrypted (`qemu-img convert` with the image's secret to a plain qcow2)",
        ));
    }
    if let (Some(false), Some(b)) = (h.backing_exists, &h.backing_file) {
        out.push(refuse(
            Code::HostMissingFile,
            format!("names backing file `{b}` in its qcow2 header, which does not exist (QEMU opens it with the image)"),
            "backing file missing",
            "restore the backing file, or use an image without one (`qemu-img convert -O qcow2 IMAGE NEW.qcow2` where the backing file exists)",
        ));
    }
    out
}

/// Refusals: a file missing where its pool shows its folder, and a base image declared
/// qcow2 that libvirt's pool finds to be another format (QEMU opens the backing file as
/// the declared format, and its qcow2 driver refuses a file without the qcow2 header,
/// block/qcow2.c `qcow2_do_open`: "Image is not in qcow2 format"; the VM would not start).
pub(super) fn conflicts(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for (vm, role, path, span, fact) in facts(lab, observed) {
        if let PathFact::Missing { pool } = fact {
            out.push(Problem::at(
                Code::HostMissingFile,
                span,
                format!(
                    "{} `{path}` of vm `{}` does not exist on the libvirt host: storage pool `{pool}` over its folder has no such file",
                    role.key(),
                    vm.name
                ),
                "file not found on the libvirt host",
                format!(
                    "copy the file there (it must be a regular file; `virsh vol-list {pool}` lists what the pool has), or fix the path"
                ),
            ));
        }
        if let Some((ImageFormat::Qcow2, says)) = other_format(vm, role, fact) {
            let found = says.format;
            out.push(Problem::at(
                Code::HostImageFormat,
                span,
                format!(
                    "disk.image `{path}` of vm `{}` is declared qcow2 (the default), but {} format {found}",
                    vm.name, says.by
                ),
                "not a qcow2 image",
                format!(
                    "set `format: {found}` under `disk` if it is a {found} image (topo writes the declared format into the overlay; QEMU refuses a backing file that is not of it)"
                ),
            ));
        }
        out.extend(smaller_than_image(vm, role, fact, &path));
        out.extend(unopenable(vm, role, fact, &path, span));
    }
    out
}

/// Warnings: files libvirt's pools cannot speak for (checked by nobody before libvirt
/// opens them), and an image declared raw that the pool finds to be another format (the
/// guest then sees that format's bytes as its disk; right for a raw disk whose guest wrote
/// such a header, so not refused).
pub fn warnings(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    warnings_for(lab, observed, None)
}

/// [`warnings`] about the VMs in `only` (the VMs a `--target` plan reaches), or about every
/// VM when `None`: a file only VMs outside the targets use is not the plan's business.
pub fn warnings_for(lab: &Lab, observed: &Observed, only: Option<&BTreeSet<VmName>>) -> Vec<Problem> {
    let facts = |lab, observed| facts(lab, observed).filter(move |f| only.is_none_or(|o| o.contains(&f.0.name)));
    let mut out = Vec::new();
    // One warning per file, at its first use (VMs in name order), naming every VM that
    // uses it: VMs sharing a kernel (often through a YAML alias) need one fix, not one each.
    /// A file: its path, key, first use, VMs and the stopped pool over its folder.
    type Unchecked<'a> = (String, &'a str, miette::SourceSpan, Vec<String>, Option<&'a String>);
    let mut unchecked: Vec<Unchecked> = Vec::new();
    for (vm, role, path, span, fact) in facts(lab, observed) {
        if let PathFact::Unchecked { inactive_pool } = fact {
            match unchecked.iter_mut().find(|u| u.0 == path) {
                Some(u) => {
                    if !u.3.contains(&vm.name.to_string()) {
                        u.3.push(vm.name.to_string());
                    }
                }
                None => {
                    unchecked.push((path.clone(), role.key(), span, vec![vm.name.to_string()], inactive_pool.as_ref()))
                }
            }
        }
    }
    for (path, key, span, vms, inactive_pool) in unchecked {
        // The command on a line of its own, so it is never wrapped into pieces.
        let help = match inactive_pool {
            Some(pool) => {
                format!("start storage pool `{pool}` so topo can check the file through it:\n  virsh pool-start {pool}")
            }
            None => {
                let dir = path.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/" } else { d }).unwrap_or("/");
                format!(
                    "put the file in a storage pool so topo can check it:\n  virsh pool-define-as NAME dir --target {dir}\n  virsh pool-start NAME"
                )
            }
        };
        let who = match vms.as_slice() {
            [one] => format!("vm `{one}`"),
            many => format!("vms {}", many.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")),
        };
        out.push(Problem::at(
            Code::HostFileUnchecked,
            span,
            format!(
                "{key} `{path}` of {who} is in no active storage pool on the libvirt host: topo cannot check it there; libvirt reports a missing file only when it opens it"
            ),
            "not checked",
            help,
        ));
    }
    for (vm, role, path, span, fact) in facts(lab, observed) {
        if let Some((ImageFormat::Raw, says)) = other_format(vm, role, fact) {
            let found = says.format;
            out.push(Problem::at(
                Code::HostImageFormat,
                span,
                format!(
                    "disk.image `{path}` of vm `{}` is declared raw, but {} format {found}: the guest will see the {found} file's bytes as its disk",
                    vm.name, says.by
                ),
                "declared raw",
                format!("set `format: {found}` under `disk` if the file is a {found} image; keep `raw` if the guest's disk holds that header itself"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::observed::PathFact;

    fn lab(yaml_disk: &str) -> (tempfile::TempDir, Lab) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "apiVersion: topo/v1\nname: p\nvms:\n  v:\n    hypervisor: qemu\n    boot:\n      kernel: /srv/boot/vmlinuz\n      initrd: /srv/boot/initrd\n{yaml_disk}"
        );
        let file = dir.path().join("lab.yaml");
        std::fs::write(&file, &text).unwrap();
        let src = crate::lab::source::SourceFile::read(&file).unwrap();
        (dir, crate::lab::validate::load_with(&src, crate::lab::validate::Files::NotChecked).unwrap())
    }

    fn observed(facts: &[(&str, PathFact)]) -> Observed {
        Observed { paths: facts.iter().map(|(p, f)| ((*p).to_owned(), f.clone())).collect(), ..Default::default() }
    }

    fn codes(p: &[Problem]) -> Vec<&'static str> {
        p.iter().map(|p| p.code.as_str()).collect()
    }

    /// Every missing file is reported at once, each at its own path in the lab file.
    #[test]
    fn missing_files_are_refused_at_their_paths() {
        let (_d, lab) = lab("    disk:\n      image: /srv/images/base.qcow2\n");
        let missing = PathFact::Missing { pool: "boot".into() };
        let o = observed(&[
            ("/srv/boot/vmlinuz", missing.clone()),
            ("/srv/boot/initrd", missing),
            ("/srv/images/base.qcow2", PathFact::Missing { pool: "images".into() }),
        ]);
        let c = conflicts(&lab, &o);
        assert_eq!(codes(&c), ["topo::plan::missing_file"; 3]);
        let text = &lab.source.text;
        let at = |p: &Problem| {
            let s = p.labels[0].inner();
            &text[s.offset()..s.offset() + s.len()]
        };
        assert_eq!(
            [at(&c[0]), at(&c[1]), at(&c[2])],
            ["/srv/boot/vmlinuz", "/srv/boot/initrd", "/srv/images/base.qcow2"]
        );
        assert!(c[2].message.contains("storage pool `images`"), "{}", c[2].message);
        assert!(warnings(&lab, &o).is_empty());
    }

    /// A volume is an existing file; a path in no pool is a warning that says how to make
    /// it checkable; paths not gathered (a local host) say nothing.
    #[test]
    fn found_unchecked_and_not_gathered() {
        let (_d, lab) = lab("");
        let o = observed(&[
            ("/srv/boot/vmlinuz", PathFact::Volume { pool: "boot".into(), format: Some("raw".into()), capacity: None }),
            ("/srv/boot/initrd", PathFact::Unchecked { inactive_pool: None }),
        ]);
        assert!(conflicts(&lab, &o).is_empty());
        let w = warnings(&lab, &o);
        assert_eq!(codes(&w), ["topo::plan::file_unchecked"]);
        assert!(w[0].help.as_deref().unwrap().contains("virsh pool-define-as NAME dir --target /srv/boot"), "{w:?}");
        let o = observed(&[("/srv/boot/initrd", PathFact::Unchecked { inactive_pool: Some("boot".into()) })]);
        assert!(warnings(&lab, &o)[0].help.as_deref().unwrap().contains("virsh pool-start boot"));
        assert!(conflicts(&lab, &Observed::default()).is_empty() && warnings(&lab, &Observed::default()).is_empty());
    }

    /// One warning per file, however many VMs use it (VMs sharing a YAML alias too), naming
    /// them; the command in its help stands on a line of its own, so it is never wrapped.
    #[test]
    fn one_warning_per_unchecked_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = "apiVersion: topo/v1\nname: p\nvms:\n  a: &vm\n    boot: {kernel: /srv/boot/vmlinuz}\n  b: *vm\n  c:\n    boot: {kernel: /srv/boot/vmlinuz}\n";
        let file = dir.path().join("lab.yaml");
        std::fs::write(&file, text).unwrap();
        let src = crate::lab::source::SourceFile::read(&file).unwrap();
        let lab = crate::lab::validate::load_with(&src, crate::lab::validate::Files::NotChecked).unwrap();
        let w = warnings(&lab, &observed(&[("/srv/boot/vmlinuz", PathFact::Unchecked { inactive_pool: None })]));
        assert_eq!(codes(&w), ["topo::plan::file_unchecked"]);
        assert!(w[0].message.contains("of vms `a`, `b`, `c`"), "{}", w[0].message);
        let help = w[0].help.as_deref().unwrap();
        assert!(help.lines().any(|l| l.trim() == "virsh pool-define-as NAME dir --target /srv/boot"), "{help}");
        assert!(help.lines().any(|l| l.trim() == "virsh pool-start NAME"), "{help}");
    }

    /// QEMU opens the backing file as the declared format: a non-qcow2 file declared qcow2
    /// does not start (block/qcow2.c "Image is not in qcow2 format"), so it is refused; a
    /// qcow2 file declared raw boots with the wrong bytes, or rightly so, so it is a warning.
    #[test]
    fn declared_format_against_the_pools() {
        let vol = |f: &str| PathFact::Volume { pool: "images".into(), format: Some(f.into()), capacity: None };
        let (_d, qcow) = lab("    disk:\n      image: /srv/images/base.img\n");
        let c = conflicts(&qcow, &observed(&[("/srv/images/base.img", vol("raw"))]));
        assert_eq!(codes(&c), ["topo::plan::image_format"]);
        assert!(c[0].help.as_deref().unwrap().contains("format: raw"));
        assert!(conflicts(&qcow, &observed(&[("/srv/images/base.img", vol("qcow2"))])).is_empty());
        let (_d, raw) = lab("    disk:\n      image: /srv/images/base.img\n      format: raw\n");
        let o = observed(&[("/srv/images/base.img", vol("qcow2"))]);
        assert!(conflicts(&raw, &o).is_empty());
        assert_eq!(codes(&warnings(&raw, &o)), ["topo::plan::image_format"]);
        // The kernel's format is not the disk's business.
        let o = observed(&[("/srv/boot/vmlinuz", vol("raw"))]);
        assert!(conflicts(&qcow, &o).is_empty() && warnings(&qcow, &o).is_empty());
    }

    fn header(format: &str, virtual_size: u64) -> crate::host::image::ImageHeader {
        crate::host::image::ImageHeader {
            format: format.into(),
            virtual_size,
            file_size: 200_000,
            qcow2_version: (format == "qcow2").then_some(3),
            encryption: 0,
            backing_file: None,
            backing_exists: None,
        }
    }

    /// The same rule for this machine's disk (the header topo read) as for a remote pool:
    /// declared qcow2 but raw is refused (block/qcow2.c `qcow2_do_open`, "Image is not in
    /// qcow2 format"), declared raw but qcow2 is a warning.
    #[test]
    fn declared_format_against_the_local_header() {
        let img = "/srv/images/base.img";
        let (_d, qcow) = lab(&format!("    disk:\n      image: {img}\n"));
        let c = conflicts(&qcow, &observed(&[(img, PathFact::File(Ok(header("raw", 200_000))))]));
        assert_eq!(codes(&c), ["topo::plan::image_format"]);
        assert!(c[0].message.contains("its header on this machine says format raw"), "{}", c[0].message);
        let (_d, raw) = lab(&format!("    disk:\n      image: {img}\n      format: raw\n"));
        let o = observed(&[(img, PathFact::File(Ok(header("qcow2", 1 << 30))))]);
        assert!(conflicts(&raw, &o).is_empty());
        assert_eq!(codes(&warnings(&raw, &o)), ["topo::plan::image_format"]);
        // A header topo could not read (permissions: libvirt's QEMU may read what topo
        // cannot) says nothing.
        let o = observed(&[(img, PathFact::File(Err("Permission denied (os error 13)".into())))]);
        assert!(conflicts(&qcow, &o).is_empty() && warnings(&qcow, &o).is_empty());
    }

    /// QEMU block.c `bdrv_img_create`: `qemu-img create -b BASE -s SIZE` makes an overlay
    /// smaller than its backing file, which the guest sees cut short; refused at `size`,
    /// from the local header and from a remote pool's capacity alike, with the image's size.
    #[test]
    fn disk_size_below_the_image_virtual_size() {
        let img = "/srv/images/base.qcow2";
        let (_d, small) = lab(&format!("    disk:\n      image: {img}\n      size: 1GiB\n"));
        let big = 2 * ByteSize::GIB + 512;
        for fact in [
            PathFact::File(Ok(header("qcow2", big))),
            PathFact::Volume { pool: "images".into(), format: Some("qcow2".into()), capacity: Some(big) },
        ] {
            let c = conflicts(&small, &observed(&[(img, fact)]));
            assert_eq!(codes(&c), ["topo::plan::disk_size"], "{c:?}");
            let s = c[0].labels[0].inner();
            assert_eq!(&small.source.text[s.offset()..s.offset() + s.len()], "1GiB");
            assert!(c[0].message.contains(&format!("({big} bytes")), "{}", c[0].message);
            assert_eq!(
                c[0].help.as_deref(),
                Some("give `size: 2097153KiB` or more, or remove `size` to keep the image's size")
            );
        }
        // Equal or larger, or no size: nothing to say.
        for size in ["2GiB", "3GiB"] {
            let (_d, l) = lab(&format!("    disk:\n      image: {img}\n      size: {size}\n"));
            assert!(
                conflicts(&l, &observed(&[(img, PathFact::File(Ok(header("qcow2", 2 * ByteSize::GIB))))])).is_empty()
            );
        }
        let (_d, none) = lab(&format!("    disk:\n      image: {img}\n"));
        assert!(conflicts(&none, &observed(&[(img, PathFact::File(Ok(header("qcow2", big))))])).is_empty());
        // A raw image's virtual size is its length.
        let (_d, raw) = lab(&format!("    disk:\n      image: {img}\n      format: raw\n      size: 64KiB\n"));
        let c = conflicts(&raw, &observed(&[(img, PathFact::File(Ok(header("raw", 200_000))))]));
        assert_eq!(codes(&c), ["topo::plan::disk_size"]);
        // An unknown capacity (a pool's XML without one) says nothing.
        let o = observed(&[(img, PathFact::Volume { pool: "i".into(), format: Some("qcow2".into()), capacity: None })]);
        assert!(conflicts(&small, &o).is_empty());
    }

    /// block/qcow2.c `qcow2_do_open`: versions 2 and 3 only; an encrypted image needs a
    /// secret the domain does not give; block.c `bdrv_open_backing_file`: a missing backing
    /// file fails the start. Each is refused at the image's path.
    #[test]
    fn qcow2_images_qemu_cannot_open() {
        let img = "/srv/images/base.qcow2";
        let (_d, l) = lab(&format!("    disk:\n      image: {img}\n"));
        let with = |f: &dyn Fn(&mut crate::host::image::ImageHeader)| {
            let mut h = header("qcow2", 1 << 20);
            f(&mut h);
            conflicts(&l, &observed(&[(img, PathFact::File(Ok(h)))]))
        };
        assert!(with(&|_| {}).is_empty());
        let c = with(&|h| h.qcow2_version = Some(4));
        assert_eq!(codes(&c), ["topo::plan::image_format"]);
        assert!(c[0].message.contains("version 4"));
        assert_eq!(codes(&with(&|h| h.encryption = 2)), ["topo::plan::image_format"]);
        let c = with(&|h| {
            h.backing_file = Some("gone.raw".into());
            h.backing_exists = Some(false);
        });
        assert_eq!(codes(&c), ["topo::plan::missing_file"]);
        assert!(c[0].message.contains("`gone.raw`"));
        assert!(
            with(&|h| {
                h.backing_file = Some("there.raw".into());
                h.backing_exists = Some(true);
            })
            .is_empty()
        );
        let c = conflicts(
            &l,
            &observed(&[(
                img,
                PathFact::File(Err(
                    "its qcow2 header names a backing file of 2000 bytes; QEMU accepts at most 1023".into()
                )),
            )]),
        );
        assert_eq!(codes(&c), ["topo::plan::image_format"]);
    }
}
