//! Atomic file writes: write a temporary file beside the target, then rename it into place,
//! so a kill mid-write leaves the previous file whole.

use crate::error::{Result, TrainError};
use std::path::{Path, PathBuf};

/// `path` with `.tmp` appended to its file name.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| TrainError::file(path, e))?;
    text.push('\n');
    write(path, text.as_bytes())
}

/// Reads JSON from `path`, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::file(path, e))
}
