//! Reading a lab file from disk into memory, with the size limit that keeps hostile input bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

/// Largest lab file topo reads (1 MiB). A real lab is a few KiB; anything bigger is refused
/// before the YAML parser sees it, so huge inputs end quickly and in bounded memory.
pub const MAX_SOURCE_BYTES: u64 = 1024 * 1024;

/// A lab file's text and where it came from. Cheap to clone; kept by the model so that
/// later stages (planning against the host) can still point at the file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user gave it (used in messages).
    pub path: PathBuf,
    /// The folder relative paths in the file are resolved against: the lab file's folder,
    /// absolute and with symlinks resolved (see [`resolve_path`]), so the same file gives the
    /// same paths whichever folder or symlink it was reached through.
    pub dir: PathBuf,
    pub text: Arc<String>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SourceError {
    #[error("cannot read lab file {path}: {source}")]
    #[diagnostic(code(topo::source::read), help("check the path and that you may read the file"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab file {path} is {size} bytes, more than the {max} bytes topo accepts")]
    #[diagnostic(
        code(topo::source::too_large),
        help("a lab file is normally a few KiB; check that this is the right file")
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("lab file {path} is not UTF-8 text")]
    #[diagnostic(code(topo::source::encoding), help("save the file as UTF-8"))]
    NotUtf8 { path: String },
}

impl SourceFile {
    /// Reads `path`, refusing files over [`MAX_SOURCE_BYTES`] without reading them whole.
    pub fn read(path: &Path) -> Result<Self, SourceError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let read_err = |source| SourceError::Read { path: shown.clone(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
        if bytes.len() as u64 > MAX_SOURCE_BYTES {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
            return Err(SourceError::TooLarge { path: shown, size, max: MAX_SOURCE_BYTES });
        }
        let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { path: shown })?;
        Ok(Self::from_text(path, text))
    }

    /// Wraps text that did not come from disk (tests, stdin). Relative paths in the lab
    /// resolve against `path`'s folder.
    pub fn from_text(path: &Path, text: String) -> Self {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = canonical_or_lexical(&parent);
        Self { path: path.to_path_buf(), dir, text: Arc::new(text) }
    }

    /// The name shown in diagnostics.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// A miette source for diagnostics that point into this file.
    pub fn named_source(&self) -> NamedSource<String> {
        NamedSource::new(self.name(), self.text.as_ref().clone()).with_language("yaml")
    }
}

/// The one canonical form of a path written in a lab file (disk image, kernel, initrd, and
/// any other file a lab names), used before the path is hashed (overlay names) or written
/// into libvirt XML, so that the same lab file gives the same plan from any working folder
/// and through any symlinked folder.
///
/// A relative `path` is joined to `dir` (the lab file's folder, itself canonical: see
/// [`SourceFile::dir`]). When the result exists on this machine it is canonicalised by the
/// file system (absolute, `.`/`..` removed, every symlink resolved, as `realpath(3)`). When it
/// does not exist here (with a remote libvirt URI the file lives on the remote host, which
/// this machine cannot see), it is normalised lexically: made absolute, `.` dropped, `..`
/// removing the component before it; symlinks on the remote host are then not resolved.
pub fn resolve_path(dir: &Path, path: &Path) -> PathBuf {
    canonical_or_lexical(&dir.join(path))
}

/// `fs::canonicalize` when `p` exists, else [`normalize_lexically`] of `p` made absolute.
fn canonical_or_lexical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        normalize_lexically(&abs)
    })
}

/// Removes `.` and resolves `..` against the preceding component without touching the file
/// system (`/a/b/../c` -> `/a/c`; `..` at the root stays at the root, as the kernel does).
pub fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                match out.components().next_back() {
                    Some(Component::Normal(_)) => {
                        out.pop();
                    }
                    // `/..` is `/`; a leading `..` of a relative path is kept.
                    Some(Component::RootDir | Component::Prefix(_)) => {}
                    _ => out.push(".."),
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalisation() {
        for (i, o) in [
            ("/a/b/../c", "/a/c"),
            ("/a/./b/", "/a/b"),
            ("/../a", "/a"),
            ("/a/b/../../..", "/"),
            ("a/../../b", "../b"),
            ("./", "."),
        ] {
            assert_eq!(normalize_lexically(Path::new(i)), PathBuf::from(o), "{i}");
        }
    }

    /// The same file reached through `..`, a symlinked folder, or a symlink to the file itself
    /// resolves to one path; a path that does not exist here is normalised lexically.
    #[test]
    fn one_path_however_reached() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::fs::write(real.join("base.qcow2"), b"x").unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("base.qcow2"), real.join("alias.qcow2")).unwrap();
        let want = std::fs::canonicalize(real.join("base.qcow2")).unwrap();
        for (lab, p) in [
            ("real/lab.yaml", "base.qcow2"),
            ("real/sub/../lab.yaml", "base.qcow2"),
            ("link/lab.yaml", "base.qcow2"),
            ("link/sub/../lab.yaml", "./base.qcow2"),
            ("real/sub/lab.yaml", "../base.qcow2"),
            ("link/lab.yaml", "alias.qcow2"),
        ] {
            let src = SourceFile::from_text(&tmp.path().join(lab), String::new());
            assert_eq!(resolve_path(&src.dir, Path::new(p)), want, "{lab} + {p}");
        }
        let src = SourceFile::from_text(&tmp.path().join("link/lab.yaml"), String::new());
        assert_eq!(
            resolve_path(&src.dir, Path::new("../elsewhere/./img.qcow2")),
            std::fs::canonicalize(tmp.path()).unwrap().join("elsewhere/img.qcow2"),
            "missing here: lexical, relative to the (canonical) lab folder"
        );
        assert_eq!(resolve_path(&src.dir, Path::new("/remote/x/../img")), PathBuf::from("/remote/img"));
    }
}
