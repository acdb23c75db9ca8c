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
    /// The lab file itself, canonical (absolute, every symlink and `..` resolved, as
    /// `realpath(3)`; lexically normalised when it does not exist here): the lab instance's
    /// identity (`ownership::Instance::file`), the same from any folder or symlink.
    pub file: PathBuf,
    pub text: Arc<String>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SourceError {
    #[error("cannot read lab file {path}: {source}")]
    #[diagnostic(code(topo::lab::source::read), help("check the path and that you may read the file"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab file {path} is {size} bytes, more than the {max} bytes topo accepts")]
    #[diagnostic(
        code(topo::lab::source::too_large),
        help("a lab file is normally a few KiB; check that this is the right file")
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("lab file {path} is {kind}, not a regular file")]
    #[diagnostic(
        code(topo::lab::source::not_a_file),
        help(
            "name the lab file itself; topo reads no FIFO, device or folder (save what a pipe gives to a file first)"
        )
    )]
    NotRegular { path: String, kind: &'static str },
    #[error("lab file {path} is not UTF-8 text")]
    #[diagnostic(code(topo::lab::source::encoding), help("save the file as UTF-8"))]
    NotUtf8 { path: String },
    #[error("no lab file given, and none in {dir} (looked for topo.yaml, topo.yml, *.topo.yaml, *.topo.yml)")]
    #[diagnostic(
        code(topo::lab::source::none_found),
        help("name the lab file (`topo plan LAB.yaml`), or call it topo.yaml or NAME.topo.yaml")
    )]
    NoneFound { dir: String },
    #[error("no lab file given, and {} in {dir}: {}", candidates.len(), candidates.join(", "))]
    #[diagnostic(
        code(topo::lab::source::ambiguous),
        help("name the one to use (`topo plan FILE`), or keep one lab file per folder")
    )]
    Ambiguous { dir: String, candidates: Vec<String> },
    #[error("cannot list {dir} to find the lab file: {source}")]
    #[diagnostic(code(topo::lab::source::list), help("name the lab file, or run topo in a folder you may read"))]
    List {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` is one topo picks up by itself: `topo.yaml`, `topo.yml`, or `NAME.topo.yaml`
/// / `NAME.topo.yml` with a non-empty `NAME` not starting with a dot (hidden files are not
/// candidates). The convention follows containerlab's `*.clab.yml`.
pub fn is_lab_file_name(name: &str) -> bool {
    if matches!(name, "topo.yaml" | "topo.yml") {
        return true;
    }
    let stem = name.strip_suffix(".topo.yaml").or_else(|| name.strip_suffix(".topo.yml"));
    stem.is_some_and(|s| !s.is_empty() && !s.starts_with('.'))
}

/// The lab file in `dir` when none is named: the single regular file (or symlink to one)
/// whose name passes [`is_lab_file_name`], returned as `dir` joined with its name (so an
/// empty `dir`, meaning the current folder, gives the bare name).
///
/// # Errors
/// [`SourceError::NoneFound`] when there is none, [`SourceError::Ambiguous`] (candidates
/// sorted by name) when there are several, [`SourceError::List`] when `dir` cannot be read.
pub fn discover(dir: &Path) -> Result<PathBuf, SourceError> {
    let shown = if dir.as_os_str().is_empty() { ".".to_string() } else { dir.display().to_string() };
    let list = |source| SourceError::List { dir: shown.clone(), source };
    let mut found = Vec::new();
    // An empty `dir` is the current folder, and the result is then the bare file name.
    let read_from = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    for entry in std::fs::read_dir(read_from).map_err(list)? {
        let entry = entry.map_err(list)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        // `metadata` follows symlinks: a link to a lab file counts, a folder does not.
        if is_lab_file_name(&name) && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            found.push(name);
        }
    }
    found.sort();
    match found.len() {
        0 => Err(SourceError::NoneFound { dir: shown }),
        1 => Ok(dir.join(&found[0])),
        _ => Err(SourceError::Ambiguous { dir: shown, candidates: found }),
    }
}

impl SourceFile {
    /// Reads `path` with [`crate::files::read_bounded`]: a regular file (a symlink to one is
    /// resolved first) of at most [`MAX_SOURCE_BYTES`], refused by its size before it is read;
    /// a FIFO, a device or a folder is refused without blocking or reading.
    pub fn read(path: &Path) -> Result<Self, SourceError> {
        let text = read_lab_text(path, MAX_SOURCE_BYTES)?;
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
        let file = canonical_or_lexical(path);
        Self { path: path.to_path_buf(), dir, file, text: Arc::new(text) }
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

/// The text of the lab file (or saved plan) at `path`, read with
/// [`crate::files::read_bounded`] with the bound `max`.
///
/// # Errors
/// [`SourceError::Read`] (missing, unreadable), [`SourceError::NotRegular`],
/// [`SourceError::TooLarge`], [`SourceError::NotUtf8`].
pub fn read_lab_text(path: &Path, max: u64) -> Result<String, SourceError> {
    use crate::files::FileError;
    let shown = path.display().to_string();
    crate::files::read_text_bounded(path, max).map_err(|e| match e {
        FileError::NotFound => SourceError::Read { path: shown, source: std::io::ErrorKind::NotFound.into() },
        FileError::NotRegular { kind } => SourceError::NotRegular { path: shown, kind },
        FileError::TooLarge { size, max } => SourceError::TooLarge { path: shown, size, max },
        FileError::NotUtf8 => SourceError::NotUtf8 { path: shown },
        FileError::Io(source) => SourceError::Read { path: shown, source },
        FileError::NotPrivate { why } => SourceError::Read { path: shown, source: std::io::Error::other(why) },
    })
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
    fn lab_file_names() {
        for ok in ["topo.yaml", "topo.yml", "demo.topo.yaml", "a.b.topo.yml"] {
            assert!(is_lab_file_name(ok), "{ok}");
        }
        for no in
            ["lab.yaml", ".topo.yaml", ".x.topo.yaml", "topo.yaml.bak", "demo.topo.json", "Topo.yaml", "x.clab.yml"]
        {
            assert!(!is_lab_file_name(no), "{no}");
        }
    }

    #[test]
    fn discovery_picks_the_single_candidate_or_lists_them() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert!(matches!(discover(d), Err(SourceError::NoneFound { .. })));
        std::fs::write(d.join("notes.yaml"), "").unwrap();
        std::fs::create_dir(d.join("dir.topo.yaml")).unwrap();
        std::fs::write(d.join(".hidden.topo.yaml"), "").unwrap();
        assert!(matches!(discover(d), Err(SourceError::NoneFound { .. })), "folders and hidden files do not count");
        std::fs::write(d.join("b.topo.yaml"), "").unwrap();
        assert_eq!(discover(d).unwrap(), d.join("b.topo.yaml"));
        std::os::unix::fs::symlink(d.join("b.topo.yaml"), d.join("topo.yml")).unwrap();
        std::fs::write(d.join("a.topo.yml"), "").unwrap();
        match discover(d) {
            Err(e @ SourceError::Ambiguous { .. }) => {
                let SourceError::Ambiguous { candidates, .. } = &e else { unreachable!() };
                assert_eq!(candidates, &["a.topo.yml", "b.topo.yaml", "topo.yml"]);
                assert!(e.to_string().contains("3 in "), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(discover(&d.join("missing")), Err(SourceError::List { .. })));
    }

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
