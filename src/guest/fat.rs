//! The seed image: a FAT filesystem labelled `CIDATA` holding the seed files, written in
//! memory by the `fatfs` crate with fixed timestamps, so equal files give equal bytes.

use std::io::{Cursor, Write};

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// The volume label cloud-init's NoCloud datasource looks for (it also accepts `cidata`).
pub const SEED_LABEL: &str = "CIDATA";

/// Smallest image: 1 MiB, a FAT12 volume (what `mkfs.vfat -C seed.img 1024` makes).
const MIN_SIZE: u64 = 1024 * 1024;

/// Every timestamp in the image: the FAT epoch, 1980-01-01 00:00:00.
#[derive(Debug)]
struct Epoch;

const EPOCH_DATE: Date = Date { year: 1980, month: 1, day: 1 };
const EPOCH_TIME: DateTime = DateTime { date: EPOCH_DATE, time: Time { hour: 0, min: 0, sec: 0, millis: 0 } };

impl TimeProvider for Epoch {
    fn get_current_date(&self) -> Date {
        EPOCH_DATE
    }
    fn get_current_date_time(&self) -> DateTime {
        EPOCH_TIME
    }
}

static EPOCH: Epoch = Epoch;

/// A FAT image holding `files` (`(name, text)`, written in the order given) in its root
/// folder, labelled [`SEED_LABEL`], serial number `volume_id`. Its size is whole MiB: at
/// least 1 MiB, and at least twice the files' total size plus 512 KiB of room for the
/// filesystem's own structures. Errors: only if `fatfs` fails to write into memory.
pub fn fat_image(files: &[(&str, &str)], volume_id: u32) -> std::io::Result<Vec<u8>> {
    let payload: u64 = files.iter().map(|(_, t)| t.len() as u64).sum();
    let want = (payload * 2 + 512 * 1024).max(MIN_SIZE);
    let size = want.div_ceil(MIN_SIZE) * MIN_SIZE;
    let mut buf = Cursor::new(vec![0u8; size as usize]);
    let mut label = [b' '; 11];
    label[..SEED_LABEL.len()].copy_from_slice(SEED_LABEL.as_bytes());
    fatfs::format_volume(&mut buf, FormatVolumeOptions::new().volume_label(label).volume_id(volume_id))?;
    buf.set_position(0);
    {
        let fs = FileSystem::new(&mut buf, FsOptions::new().time_provider(&EPOCH).update_accessed_date(false))?;
        for (name, text) in files {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(text.as_bytes())?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    Ok(buf.into_inner())
}

/// The files in the root folder of a FAT image, `(name, text)` in directory order; the
/// read-back of [`fat_image`] (topo reads a seed volume's files to show what changed).
/// Errors: not a FAT image, or a file that is not UTF-8 text.
pub fn read_fat_files(image: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    use std::io::Read;
    // fatfs wants a writable device; a copy keeps `image` untouched (seeds are ~1 MiB).
    let fs = FileSystem::new(Cursor::new(image.to_vec()), FsOptions::new().update_accessed_date(false))?;
    let mut out = Vec::new();
    for e in fs.root_dir().iter() {
        let e = e?;
        if !e.is_file() {
            continue;
        }
        let mut text = String::new();
        e.to_file().read_to_string(&mut text)?;
        out.push((e.file_name(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn files_read_back_with_label_and_fixed_times() {
        let files = [("meta-data", "instance-id: iid-1\n"), ("user-data", "#cloud-config\n{}\n")];
        let img = fat_image(&files, 0x1234_5678).unwrap();
        assert_eq!(img.len(), 1024 * 1024);
        assert_eq!(img, fat_image(&files, 0x1234_5678).unwrap(), "same input, same bytes");
        let fs = FileSystem::new(Cursor::new(img), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let mut names = Vec::new();
        for e in fs.root_dir().iter() {
            let e = e.unwrap();
            assert_eq!(e.modified(), EPOCH_TIME);
            let mut text = String::new();
            e.to_file().read_to_string(&mut text).unwrap();
            names.push((e.file_name(), text));
        }
        let want: Vec<(String, String)> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(names, want);
        let img = fat_image(&files, 1).unwrap();
        assert_eq!(read_fat_files(&img).unwrap(), want);
        assert!(read_fat_files(&[0u8; 4096]).is_err(), "not a FAT image");
    }

    #[test]
    fn large_files_get_a_larger_image() {
        let big = "x".repeat(700 * 1024);
        let img = fat_image(&[("user-data", &big)], 1).unwrap();
        assert_eq!(img.len(), 2 * 1024 * 1024);
        let fs = FileSystem::new(Cursor::new(img), FsOptions::new()).unwrap();
        let mut text = String::new();
        fs.root_dir().open_file("user-data").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text.len(), big.len());
    }
}
