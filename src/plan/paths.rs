//! The lab's files on another libvirt host: the facts libvirt's storage API gave
//! ([`Observed::paths`], gathered by [`crate::hypervisor::observe_paths`]) turned into plan
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

use crate::model::{HostFileRole, ImageFormat, Lab, VmName};
use crate::observed::{Observed, PathFact};

/// Each lab file, with its VM, as the host's facts know it (paths not gathered are left out).
fn facts<'a>(
    lab: &'a Lab,
    observed: &'a Observed,
) -> impl Iterator<Item = (&'a crate::model::Vm, HostFileRole, String, miette::SourceSpan, &'a PathFact)> + 'a {
    lab.vms.values().flat_map(move |vm| {
        vm.host_files().into_iter().filter_map(move |(role, path, span)| {
            let key = path.to_string_lossy().into_owned();
            let fact = observed.paths.get(&key)?;
            Some((vm, role, key, span, fact))
        })
    })
}

/// The format libvirt reports for a base image, when it differs from the declared one.
fn other_format<'a>(vm: &crate::model::Vm, role: HostFileRole, fact: &'a PathFact) -> Option<(ImageFormat, &'a str)> {
    let (HostFileRole::Image, Some(d), PathFact::Volume { format: Some(found), .. }) = (role, &vm.disk, fact) else {
        return None;
    };
    (found != d.format.as_str()).then_some((d.format, found.as_str()))
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
        if let Some((ImageFormat::Qcow2, found)) = other_format(vm, role, fact) {
            out.push(Problem::at(
                Code::HostImageFormat,
                span,
                format!(
                    "disk.image `{path}` of vm `{}` is declared qcow2 (the default), but libvirt's storage pool reports format {found}",
                    vm.name
                ),
                "not a qcow2 image",
                format!(
                    "set `format: {found}` under `disk` if it is a {found} image (topo writes the declared format into the overlay; QEMU refuses a backing file that is not of it)"
                ),
            ));
        }
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
        if let Some((ImageFormat::Raw, found)) = other_format(vm, role, fact) {
            out.push(Problem::at(
                Code::HostImageFormat,
                span,
                format!(
                    "disk.image `{path}` of vm `{}` is declared raw, but libvirt's storage pool reports format {found}: the guest will see the {found} file's bytes as its disk",
                    vm.name
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
    use crate::observed::PathFact;

    fn lab(yaml_disk: &str) -> (tempfile::TempDir, Lab) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "apiVersion: topo/v1\nname: p\nvms:\n  v:\n    hypervisor: qemu\n    boot:\n      kernel: /srv/boot/vmlinuz\n      initrd: /srv/boot/initrd\n{yaml_disk}"
        );
        let file = dir.path().join("lab.yaml");
        std::fs::write(&file, &text).unwrap();
        let src = crate::source::SourceFile::read(&file).unwrap();
        (dir, crate::validate::load_with(&src, crate::validate::Files::NotChecked).unwrap())
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
            ("/srv/boot/vmlinuz", PathFact::Volume { pool: "boot".into(), format: Some("raw".into()) }),
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
        let src = crate::source::SourceFile::read(&file).unwrap();
        let lab = crate::validate::load_with(&src, crate::validate::Files::NotChecked).unwrap();
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
        let vol = |f: &str| PathFact::Volume { pool: "images".into(), format: Some(f.into()) };
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
}
