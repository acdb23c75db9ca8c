//! The backing file named in a qcow2 image's header: how `observe` follows a disk's chain on
//! a local host where libvirt's persistent XML lists none.
//!
//! Layout from QEMU's docs/interop/qcow2.txt: big-endian; bytes 0-3 the magic `QFI\xfb`,
//! 8-15 `backing_file_offset`, 16-19 `backing_file_size` (the name is not NUL-terminated and
//! "must not exceed 1023 bytes"). A file that is not qcow2 has no backing file here (raw).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// qcow2's magic number (`QFI\xfb`).
const MAGIC: [u8; 4] = *b"QFI\xfb";
/// QEMU's limit on the backing file name (block/qcow2.c: `if (len > 1023)` -> "Backing file
/// name too long").
const MAX_NAME: u32 = 1023;

/// The backing file of the image at `path`: `Ok(None)` when it has none or is not a qcow2
/// image. A relative name is resolved against the image's folder, as QEMU does. Reads at
/// most 20 + 1023 bytes.
///
/// # Errors
/// The file cannot be opened or read, or its header names a backing file past its end or
/// longer than QEMU allows.
pub fn backing_file(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 20];
    match f.read_exact(&mut head) {
        Ok(()) => {}
        // Shorter than a qcow2 header: not one.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if head[..4] != MAGIC {
        return Ok(None);
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&head[8..16]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[16..20]);
    let (offset, len) = (u64::from_be_bytes(off), u32::from_be_bytes(len));
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {m}", path.display()));
    if len > MAX_NAME {
        return Err(bad("backing file name longer than 1023 bytes"));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut name = vec![0u8; len as usize];
    f.read_exact(&mut name).map_err(|_| bad("backing file name past the end of the file"))?;
    let name = String::from_utf8_lossy(&name).into_owned();
    if name.starts_with('/') {
        return Ok(Some(name));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    Ok(Some(dir.join(name).display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, file: &str, backing: Option<&str>) -> std::path::PathBuf {
        let mut h = Vec::from(MAGIC);
        h.extend(3u32.to_be_bytes());
        let name = backing.unwrap_or("");
        let offset: u64 = if name.is_empty() { 0 } else { 104 };
        h.extend(offset.to_be_bytes());
        h.extend((name.len() as u32).to_be_bytes());
        h.resize(104, 0);
        h.extend(name.as_bytes());
        let p = dir.join(file);
        std::fs::write(&p, h).unwrap();
        p
    }

    #[test]
    fn reads_the_backing_file_name() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            backing_file(&image(d.path(), "a", Some("/img/base.qcow2"))).unwrap().as_deref(),
            Some("/img/base.qcow2")
        );
        // Relative to the image's folder, as QEMU resolves it.
        let rel = backing_file(&image(d.path(), "b", Some("a"))).unwrap().unwrap();
        assert_eq!(rel, d.path().join("a").display().to_string());
        assert_eq!(backing_file(&image(d.path(), "c", None)).unwrap(), None);
        std::fs::write(d.path().join("raw"), b"QF").unwrap();
        assert_eq!(backing_file(&d.path().join("raw")).unwrap(), None, "too short for a header");
        std::fs::write(d.path().join("raw2"), [0u8; 512]).unwrap();
        assert_eq!(backing_file(&d.path().join("raw2")).unwrap(), None, "not qcow2");
        assert!(backing_file(&d.path().join("missing")).is_err());
        // A header naming bytes past the end of the file.
        let mut h = std::fs::read(image(d.path(), "e", Some("/x"))).unwrap();
        h.truncate(104);
        std::fs::write(d.path().join("e"), h).unwrap();
        assert!(backing_file(&d.path().join("e")).is_err());
    }
}
