//! A base image's header, read from this machine's disk with a bounded read: its format and
//! virtual size, the facts the planner checks `disk.format` and `disk.size` against
//! (`observed::PathFact::File` holds what it found).
//!
//! The layout is QEMU's docs/interop/qcow2.txt (all numbers big-endian): magic `QFI\xfb` at
//! 0, version (u32) at 4, backing file offset (u64) at 8 and length (u32) at 16, virtual
//! size in bytes (u64) at 24, encryption method (u32) at 32. Any other file is, to QEMU
//! opening it as the declared `raw`, its bytes: its virtual size is its length.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the start of the file: the qcow2 header's fixed part (72 bytes for
/// version 2, 104 for version 3) and the magic numbers of the other formats recognised.
const HEADER_BYTES: usize = 512;

/// The longest backing file name QEMU accepts in a qcow2 header (block/qcow2.c
/// `qcow2_do_open`: "Backing file name too long", `backing_file_size > 1023`).
pub const MAX_BACKING_NAME: u32 = 1023;

/// What a base image's first bytes say.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageHeader {
    /// The format its magic number names, as QEMU and libvirt spell it (`qcow2`, `qed`,
    /// `vmdk`, `vdi`, `vhdx`), or `raw` for a file with none of them.
    pub format: String,
    /// The virtual size the qcow2 header gives (bytes); for every other format, the file's
    /// length (what QEMU's raw driver shows the guest).
    pub virtual_size: u64,
    /// The file's length in bytes (the virtual size of the file opened as `raw`).
    pub file_size: u64,
    /// For a qcow2 image: its version (QEMU opens 2 and 3 only).
    pub qcow2_version: Option<u32>,
    /// For a qcow2 image: its encryption method (0 none, 1 AES, 2 LUKS).
    pub encryption: u32,
    /// For a qcow2 image: the backing file its header names, as written there.
    pub backing_file: Option<String>,
    /// For a backing file that is a plain path ([`ImageHeader::backing_path`]): whether it
    /// exists, seen when the header was read (QEMU opens it with the image).
    pub backing_exists: Option<bool>,
}

/// Why a base image's header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened (missing, not a regular file) or read.
    #[error("{0}")]
    File(#[from] crate::files::FileError),
    /// A qcow2 header whose backing file name lies beyond the file or exceeds QEMU's limit.
    #[error("{0}")]
    Corrupt(String),
}

/// The format named by the magic number at the start of `head`, `raw` when none is known.
/// Magic numbers: qcow2 `QFI\xfb` (docs/interop/qcow2.txt), qed `QED\0`
/// (docs/interop/qed_spec.txt), vmdk `KDMV` (block/vmdk.c `VMDK4_MAGIC`), vhdx `vhdxfile`
/// (block/vhdx.h), vdi `0xbeda107f` at 64 little-endian (block/vdi.c `VDI_SIGNATURE`).
fn format_of(head: &[u8]) -> &'static str {
    if head.starts_with(b"QFI\xfb") {
        "qcow2"
    } else if head.starts_with(b"QED\0") {
        "qed"
    } else if head.starts_with(b"KDMV") {
        "vmdk"
    } else if head.starts_with(b"vhdxfile") {
        "vhdx"
    } else if head.get(64..68) == Some(&0xbeda_107f_u32.to_le_bytes()[..]) {
        "vdi"
    } else {
        "raw"
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0)
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// The bytes of a file's start that [`parse_header`] reads (as [`read_header`] does).
pub const HEADER_READ: usize = HEADER_BYTES;

/// Parses the first bytes `head` (at most [`HEADER_READ`] of them, all there are of a shorter
/// file) of a file of `file_size` bytes; `backing` reads the backing file name (offset in
/// bytes, length in bytes) when the qcow2 header names one: the parser of [`read_header`],
/// for a header read elsewhere (another host). `backing_exists` is left `None`.
///
/// # Errors
/// [`ImageError::Corrupt`] as [`read_header`]; whatever `backing` returns.
pub fn parse_header(
    head: &[u8],
    file_size: u64,
    backing: impl FnOnce(u64, u32) -> Result<Vec<u8>, ImageError>,
) -> Result<ImageHeader, ImageError> {
    parse(head, file_size, backing)
}

/// Parses the first bytes `head` of a file of `file_size` bytes; `backing` reads the
/// backing file name (offset, length) when the qcow2 header names one.
fn parse(
    head: &[u8],
    file_size: u64,
    backing: impl FnOnce(u64, u32) -> Result<Vec<u8>, ImageError>,
) -> Result<ImageHeader, ImageError> {
    let format = format_of(head);
    let mut h = ImageHeader {
        format: format.to_owned(),
        virtual_size: file_size,
        file_size,
        qcow2_version: None,
        encryption: 0,
        backing_file: None,
        backing_exists: None,
    };
    // A qcow2 header is at least 72 bytes; a shorter file with the magic is not one QEMU
    // opens ("Could not read qcow2 header"), reported as its version 0.
    if format == "qcow2" {
        let full = head.len() >= 72;
        h.qcow2_version = Some(if full { be32(head, 4) } else { 0 });
        h.virtual_size = be64(head, 24);
        h.encryption = be32(head, 32);
        let (offset, len) = (be64(head, 8), be32(head, 16));
        if full && offset != 0 && len != 0 {
            if len > MAX_BACKING_NAME {
                return Err(ImageError::Corrupt(format!(
                    "its qcow2 header names a backing file of {len} bytes; QEMU accepts at most {MAX_BACKING_NAME}"
                )));
            }
            if offset.checked_add(u64::from(len)).is_none_or(|end| end > file_size) {
                return Err(ImageError::Corrupt(
                    "its qcow2 header's backing file name lies beyond the file's end".into(),
                ));
            }
            h.backing_file = Some(String::from_utf8_lossy(&backing(offset, len)?).into_owned());
        }
    }
    Ok(h)
}

/// Reads the header of the base image at `path`, bounded: opened as every file topo reads
/// ([`crate::files::open_regular`]: without blocking, so a FIFO does not hang the open,
/// and checked to be a regular file by `fstat` before any read), then at most
/// [`HEADER_BYTES`] bytes and a backing file name of at most [`MAX_BACKING_NAME`] bytes.
///
/// Errors: [`ImageError::File`] for anything but a regular file or when it cannot be opened
/// or read, [`ImageError::Corrupt`] for a qcow2 header whose backing name QEMU would not read.
pub fn read_header(path: &Path) -> Result<ImageHeader, ImageError> {
    let io = |e: std::io::Error| ImageError::File(crate::files::FileError::Io(e));
    let (mut f, meta) = crate::files::open_regular(path)?;
    let mut head = Vec::with_capacity(HEADER_BYTES);
    (&mut f).take(HEADER_BYTES as u64).read_to_end(&mut head).map_err(io)?;
    let mut h = parse(&head, meta.len(), |offset, len| {
        let mut name = Vec::with_capacity(len as usize);
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        (&mut f).take(u64::from(len)).read_to_end(&mut name).map_err(io)?;
        Ok(name)
    })?;
    // `exists` follows links as QEMU's open does, and reads nothing.
    h.backing_exists = h.backing_path(path).map(|b| b.exists());
    Ok(h)
}

impl ImageHeader {
    /// The backing file of a qcow2 image as QEMU resolves it, when it is a plain file name:
    /// relative to the image's own folder (QEMU block.c `bdrv_get_full_backing_filename`);
    /// `None` for no backing file or a protocol or `json:` name QEMU opens otherwise.
    pub fn backing_path(&self, image: &Path) -> Option<std::path::PathBuf> {
        let b = self.backing_file.as_deref()?;
        if b.starts_with("json:") || (b.contains("://") || b.split_once(':').is_some_and(|(p, _)| !p.contains('/'))) {
            return None;
        }
        Some(image.parent().unwrap_or(Path::new("/")).join(b))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A qcow2 header (docs/interop/qcow2.txt) of `version`, of `size` bytes, backing
    /// `backing`, with encryption method `crypt`.
    pub(crate) fn qcow2(version: u32, size: u64, backing: Option<&str>, crypt: u32) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[32..36].copy_from_slice(&crypt.to_be_bytes());
        if let Some(b) = backing {
            h[8..16].copy_from_slice(&104u64.to_be_bytes());
            h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            h.extend_from_slice(b.as_bytes());
        }
        h
    }

    fn read(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::write(&p, bytes).unwrap();
        read_header(&p)
    }

    /// QEMU docs/interop/qcow2.txt: the virtual size is the u64 at offset 24, big-endian; the
    /// version at 4; the backing file name at the offset (8) and length (16) given.
    #[test]
    fn qcow2_header_fields() {
        let h = read(&qcow2(3, 2 << 30, Some("base.raw"), 0)).unwrap();
        assert_eq!(h.format, "qcow2");
        assert_eq!(h.virtual_size, 2 << 30);
        assert_eq!(h.qcow2_version, Some(3));
        assert_eq!(h.backing_file.as_deref(), Some("base.raw"));
        assert_eq!(h.file_size, 112);
        assert_eq!(h.backing_path(Path::new("/srv/img/a.qcow2")), Some("/srv/img/base.raw".into()));
        let h = read(&qcow2(2, 1 << 20, None, 2)).unwrap();
        assert_eq!((h.qcow2_version, h.encryption, h.backing_file), (Some(2), 2, None));
    }

    /// A file with no known magic is raw to QEMU: its virtual size is its length.
    #[test]
    fn raw_is_the_file_length() {
        let h = read(&[7u8; 3000]).unwrap();
        assert_eq!((h.format.as_str(), h.virtual_size, h.qcow2_version), ("raw", 3000, None));
        let h = read(b"").unwrap();
        assert_eq!((h.format.as_str(), h.virtual_size), ("raw", 0));
        assert_eq!(read(b"KDMV....").unwrap().format, "vmdk");
        assert_eq!(read(b"QED\0....").unwrap().format, "qed");
    }

    /// block/qcow2.c `qcow2_do_open`: a backing name over 1023 bytes is refused ("Backing
    /// file name too long"), as is one beyond the end of the file; a short qcow2 file is
    /// version 0 (QEMU: "Could not read qcow2 header").
    #[test]
    fn corrupt_qcow2_headers() {
        let mut h = qcow2(3, 1, None, 0);
        h[8..16].copy_from_slice(&104u64.to_be_bytes());
        h[16..20].copy_from_slice(&2000u32.to_be_bytes());
        assert!(matches!(read(&h), Err(ImageError::Corrupt(m)) if m.contains("1023")));
        h[16..20].copy_from_slice(&50u32.to_be_bytes());
        assert!(matches!(read(&h), Err(ImageError::Corrupt(m)) if m.contains("beyond")));
        assert_eq!(read(b"QFI\xfb\0\0\0\x03").unwrap().qcow2_version, Some(0));
    }

    /// Opened without blocking and checked by fstat before any read: a FIFO (no writer) is
    /// refused at once instead of hanging, and so is a folder.
    #[test]
    fn fifo_and_folder_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        use crate::files::FileError;
        assert!(matches!(read_header(&fifo), Err(ImageError::File(FileError::NotRegular { .. }))));
        assert!(matches!(read_header(d.path()), Err(ImageError::File(FileError::NotRegular { .. }))));
        assert!(matches!(read_header(&d.path().join("none")), Err(ImageError::File(FileError::NotFound))));
    }

    /// QEMU resolves a relative backing name against the image's folder; protocol and
    /// `json:` names are not files topo can check.
    #[test]
    fn backing_paths() {
        let with = |b: &str| ImageHeader { backing_file: Some(b.into()), ..read(b"x").unwrap() };
        let img = Path::new("/srv/a.qcow2");
        assert_eq!(with("/abs/b.img").backing_path(img), Some("/abs/b.img".into()));
        assert_eq!(with("sub/b.img").backing_path(img), Some("/srv/sub/b.img".into()));
        assert_eq!(with("nbd://h/x").backing_path(img), None);
        assert_eq!(with("json:{}").backing_path(img), None);
        assert_eq!(with("nbd:unix:/s").backing_path(img), None);
    }
}
