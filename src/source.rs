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
    /// The folder relative paths in the file are resolved against.
    pub dir: PathBuf,
    pub text: Arc<String>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SourceError {
    #[error("cannot read lab file {path}: {source}")]
    #[diagnostic(
        code(topo::source::read),
        help("check the path and that you may read the file")
    )]
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
        let read_err = |source| SourceError::Read {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_SOURCE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_SOURCE_BYTES {
            let size = std::fs::metadata(path)
                .map(|m| m.len())
                .unwrap_or(bytes.len() as u64);
            return Err(SourceError::TooLarge {
                path: shown,
                size,
                max: MAX_SOURCE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { path: shown })?;
        Ok(Self::from_text(path, text))
    }

    /// Wraps text that did not come from disk (tests, stdin). Relative paths in the lab
    /// resolve against `path`'s folder.
    pub fn from_text(path: &Path, text: String) -> Self {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            path: path.to_path_buf(),
            dir,
            text: Arc::new(text),
        }
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
