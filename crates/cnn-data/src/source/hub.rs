//! Hugging Face hub datasets laid out as class folders, read from the local hub cache.
//!
//! The cache layout (shared with `huggingface_hub` and `hf-hub`) is
//! `<cache>/datasets--OWNER--NAME/refs/<revision>` (a commit hash),
//! `snapshots/<commit>/<files>` (symlinks into `blobs/`). The cache is `HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
//!
//! Reading it needs no client: `hf-hub` 1.0 is an async client whose every feature set pulls
//! in `reqwest`, `tokio`, `hf-xet` and `aws-lc-sys` (about 280 crates and a C build), so this
//! crate resolves the cache by hand and never touches the network; `HF_HUB_OFFLINE` is thus
//! always honoured. Fill the cache with `hf download --repo-type dataset OWNER/NAME` (or any
//! `huggingface_hub` client). Parquet-only repositories are not read (a parquet reader is a
//! second heavy dependency); the snapshot must hold `train/<class>/*` (+ `val|test/<class>/*`)
//! or `<class>/*`, at its top or under `data/`.

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::source::folder;
use crate::spec::FolderOptions;

/// The hub cache folder, from the environment as `huggingface_hub` resolves it.
pub fn hub_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("HF_HUB_CACHE") {
        return p;
    }
    if let Some(p) = env("HF_HOME") {
        return p.join("hub");
    }
    let base = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("huggingface").join("hub")
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot folder of `repo_id` at `revision` in `cache`.
pub(crate) fn snapshot_dir(
    cache: &Path,
    repo_id: &str,
    revision: &str,
) -> Result<PathBuf, DataError> {
    let valid = !repo_id.is_empty()
        && repo_id.split('/').count() <= 2
        && repo_id
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if !valid {
        return Err(DataError::Config(format!(
            "hub repo id {repo_id:?} is not of the form OWNER/NAME"
        )));
    }
    let repo = cache.join(format!("datasets--{}", repo_id.replace('/', "--")));
    let hint = format!(
        "dataset {repo_id} is not in the local hub cache (fetch it with `hf download --repo-type \
         dataset {repo_id}`; the cache is HF_HUB_CACHE or $HF_HOME/hub)"
    );
    if !repo.is_dir() {
        return Err(DataError::path(&repo, hint));
    }
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        let r = repo.join("refs").join(revision);
        std::fs::read_to_string(&r)
            .map_err(|_| DataError::path(&r, format!("revision {revision:?} not cached; {hint}")))?
            .trim()
            .to_string()
    };
    if !is_commit(&commit) {
        return Err(DataError::format(
            repo.join("refs").join(revision),
            format!("does not hold a commit hash: {commit:?}"),
        ));
    }
    let snap = repo.join("snapshots").join(&commit);
    if !snap.is_dir() {
        return Err(DataError::path(&snap, format!("snapshot missing; {hint}")));
    }
    Ok(snap)
}

pub(crate) fn open(
    repo_id: &str,
    revision: &str,
    options: &FolderOptions,
) -> Result<Dataset, DataError> {
    let snap = snapshot_dir(&hub_cache_dir(), repo_id, revision)?;
    let data = snap.join("data");
    let root = if !snap.join("train").is_dir() && data.is_dir() {
        data
    } else {
        snap.clone()
    };
    let mut ds = folder::open(&root, options).map_err(|e| {
        let has_parquet = walk_has_parquet(&snap, 3);
        match e {
            DataError::Layout { root, what } if has_parquet => DataError::Layout {
                root,
                what: format!(
                    "{what}; this repository holds parquet files, which cnn-data does not read"
                ),
            },
            other => other,
        }
    })?;
    let commit = snap
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    ds.description = format!(
        "hub dataset {repo_id}@{revision} (commit {}) from the local cache: {}",
        &commit[..commit.len().min(10)],
        ds.description
    );
    Ok(ds)
}

fn walk_has_parquet(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            depth > 0 && walk_has_parquet(&p, depth - 1)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
}
