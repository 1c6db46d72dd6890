//! The crate's one error type: every variant names the file or setting at fault.

use std::path::PathBuf;

/// Everything that can go wrong while scanning, decoding or batching.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data path does not exist or cannot be read.
    #[error("{path}: {what}")]
    Path { path: PathBuf, what: String },
    /// One image file cannot be used (empty, truncated, corrupt, wrong extension, too large...).
    #[error("bad image file {path}: {what}")]
    BadFile { path: PathBuf, what: String },
    /// The folder layout is not a usable class-folder dataset.
    #[error("{root}: {what}")]
    Layout { root: PathBuf, what: String },
    /// A CIFAR-10 / IDX / hub file is malformed.
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    /// The loader settings do not fit the split (batch larger than the split, zero sizes...).
    #[error("loader configuration: {0}")]
    Config(String),
    /// Reading or writing the decode cache failed.
    #[error("decode cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::BadFile {
            path: path.into(),
            what: what.into(),
        }
    }
    pub(crate) fn path(path: impl Into<PathBuf>, what: impl ToString) -> Self {
        DataError::Path {
            path: path.into(),
            what: what.to_string(),
        }
    }
    pub(crate) fn layout(root: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Layout {
            root: root.into(),
            what: what.into(),
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}
