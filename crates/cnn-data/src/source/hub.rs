//! The Hugging Face hub through its local cache: datasets laid out as class folders, and
//! single files of model repositories (weights to start from).
//!
//! The cache layout (shared with `huggingface_hub` and `hf-hub`) is
//! `<cache>/{datasets,models}--OWNER--NAME/refs/<revision>` (a commit hash),
//! `snapshots/<commit>/<files>` (symlinks into `blobs/`). The cache is `HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
//!
//! `hf-hub` 0.4 (no default features: no network code) names the repository folders and
//! finds a file at a branch or tag (`Cache`, `CacheRepo::get`). Three things it lacks are
//! done here, so nothing `huggingface_hub` users rely on regresses: the cache folder from
//! the environment (`Cache::from_env` reads only `HF_HOME` and panics without a home
//! folder), a commit hash as the revision (`CacheRepo` only reads `refs/<revision>`), and a
//! snapshot's folder for a dataset read as class folders (`CacheRepo` finds named files
//! only). With the `hub-download` feature, what the cache lacks is fetched through hf-hub's
//! blocking client unless `HF_HUB_OFFLINE` is set; without it nothing touches the network.
//! Parquet-only dataset repositories are not read (a parquet reader is a second heavy
//! dependency); the snapshot must hold `train/<class>/*` (+ `val|test/<class>/*`) or
//! `<class>/*`, at its top or under `data/`.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

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

/// `repo_id` of `kind` at `revision`, once the id is checked to be `OWNER/NAME` (or `NAME`)
/// with no part that could leave the cache folder.
fn repo(kind: RepoType, repo_id: &str, revision: &str) -> Result<Repo, DataError> {
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
    Ok(Repo::with_revision(
        repo_id.to_string(),
        kind,
        revision.to_string(),
    ))
}

/// The commit `revision` names in the repository folder `repo_dir`: itself when it is a
/// commit hash, else what `refs/<revision>` holds.
fn commit_of(repo_dir: &Path, revision: &str, hint: &str) -> Result<String, DataError> {
    if is_commit(revision) {
        return Ok(revision.to_string());
    }
    let r = repo_dir.join("refs").join(revision);
    let commit = std::fs::read_to_string(&r)
        .map_err(|_| DataError::path(&r, format!("revision {revision:?} not cached; {hint}")))?
        .trim()
        .to_string();
    match is_commit(&commit) {
        true => Ok(commit),
        false => Err(DataError::format(
            r,
            format!("does not hold a commit hash: {commit:?}"),
        )),
    }
}

/// The snapshot folder of dataset `repo_id` at `revision` in `cache`.
pub(crate) fn snapshot_dir(
    cache: &Path,
    repo_id: &str,
    revision: &str,
) -> Result<PathBuf, DataError> {
    let repo = repo(RepoType::Dataset, repo_id, revision)?;
    let dir = cache.join(repo.folder_name());
    let hint = format!(
        "dataset {repo_id} is not in the local hub cache (fetch it with `hf download --repo-type \
         dataset {repo_id}`; the cache is HF_HUB_CACHE or $HF_HOME/hub)"
    );
    if !dir.is_dir() {
        return Err(DataError::path(&dir, hint));
    }
    let snap = dir
        .join("snapshots")
        .join(commit_of(&dir, revision, &hint)?);
    if !snap.is_dir() {
        return Err(DataError::path(&snap, format!("snapshot missing; {hint}")));
    }
    Ok(snap)
}

/// The local copy of `filename` in model repository `repo_id` at `revision` (a branch, a
/// tag or a commit hash), from the hub cache; with the `hub-download` feature, downloaded
/// into it when missing (unless `HF_HUB_OFFLINE` is set).
pub fn hub_file(repo_id: &str, revision: &str, filename: &str) -> Result<PathBuf, DataError> {
    let repo = repo(RepoType::Model, repo_id, revision)?;
    let inside = !filename.is_empty()
        && !filename.starts_with('/')
        && filename.split('/').all(|p| !p.is_empty() && p != "..");
    if !inside {
        return Err(DataError::Config(format!(
            "hub file name {filename:?} is not a path inside the repository"
        )));
    }
    let cache_dir = hub_cache_dir();
    let cache = Cache::new(cache_dir.clone());
    if let Some(path) = cache.repo(repo.clone()).get(filename) {
        return Ok(path);
    }
    let dir = cache_dir.join(repo.folder_name());
    let hint = format!(
        "{filename} of {repo_id} is not in the local hub cache (fetch it with `hf download \
         {repo_id} {filename}`; the cache is HF_HUB_CACHE or $HF_HOME/hub)"
    );
    let cached = match dir.is_dir() {
        true => commit_of(&dir, revision, &hint)
            .map(|commit| dir.join("snapshots").join(commit).join(filename)),
        false => Err(DataError::path(&dir, &hint)),
    };
    match cached {
        Ok(path) if path.is_file() => Ok(path),
        Ok(path) => download::file(&cache, repo, filename)
            .unwrap_or_else(|| Err(DataError::path(path, format!("no such file; {hint}")))),
        Err(e) => download::file(&cache, repo, filename).unwrap_or(Err(e)),
    }
}

pub(crate) fn open(
    repo_id: &str,
    revision: &str,
    options: &FolderOptions,
) -> Result<Dataset, DataError> {
    let snap = match snapshot_dir(&hub_cache_dir(), repo_id, revision) {
        Ok(snap) => snap,
        Err(e) => {
            let repo = repo(RepoType::Dataset, repo_id, revision)?;
            match download::dataset(&Cache::new(hub_cache_dir()), repo) {
                Some(Ok(())) => snapshot_dir(&hub_cache_dir(), repo_id, revision)?,
                Some(Err(fetch)) => return Err(fetch),
                None => return Err(e),
            }
        }
    };
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

/// Fetching what the cache lacks: `None` where this build or the environment does not
/// download (no `hub-download` feature, or `HF_HUB_OFFLINE` set), so the caller reports
/// what is missing from the cache.
#[cfg(feature = "hub-download")]
mod download {
    use super::*;
    use hf_hub::api::sync::{Api, ApiBuilder};

    fn api(cache: &Cache) -> Option<Result<Api, DataError>> {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
        if offline {
            return None;
        }
        let mut builder = ApiBuilder::from_cache(cache.clone());
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        Some(
            builder
                .build()
                .map_err(|e| failed(cache, "the hub client", e)),
        )
    }

    fn failed(cache: &Cache, what: &str, e: impl std::fmt::Display) -> DataError {
        DataError::path(cache.path(), format!("downloading {what} failed: {e}"))
    }

    /// Downloads one file of a model repository into the cache.
    pub(super) fn file(
        cache: &Cache,
        repo: Repo,
        filename: &str,
    ) -> Option<Result<PathBuf, DataError>> {
        let api = match api(cache)? {
            Ok(api) => api,
            Err(e) => return Some(Err(e)),
        };
        Some(
            api.repo(repo)
                .download(filename)
                .map_err(|e| failed(cache, filename, e)),
        )
    }

    /// Downloads every file of a dataset repository into the cache, as `hf download` does.
    pub(super) fn dataset(cache: &Cache, repo: Repo) -> Option<Result<(), DataError>> {
        let api = match api(cache)? {
            Ok(api) => api,
            Err(e) => return Some(Err(e)),
        };
        let remote = api.repo(repo.clone());
        let name = repo.folder_name();
        let fetch = || -> Result<(), DataError> {
            let info = remote.info().map_err(|e| failed(cache, &name, e))?;
            for sibling in info.siblings {
                remote
                    .get(&sibling.rfilename)
                    .map_err(|e| failed(cache, &sibling.rfilename, e))?;
            }
            Ok(())
        };
        Some(fetch())
    }
}

#[cfg(not(feature = "hub-download"))]
mod download {
    use super::*;

    pub(super) fn file(
        _cache: &Cache,
        _repo: Repo,
        _filename: &str,
    ) -> Option<Result<PathBuf, DataError>> {
        None
    }

    pub(super) fn dataset(_cache: &Cache, _repo: Repo) -> Option<Result<(), DataError>> {
        None
    }
}
