//! `DataSpec`: what to open, as plain serialisable data, and `open` which dispatches on it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::source;

/// What a loader does with a bad image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BadFilePolicy {
    /// Stop with an error naming the file (default).
    #[default]
    Fail,
    /// Leave the file out, count it and list it in [`Dataset::skipped`] (or, for files that
    /// only fail when decoded, in [`crate::Loader::skipped`]).
    Skip,
}

/// How thoroughly `open` checks image files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Check {
    /// Read each header: catches empty, non-image, mislabelled and oversized files (fast).
    #[default]
    Header,
    /// Decode every image in parallel: also catches truncated and corrupt pixel data.
    Decode,
}

/// How a folder without `train/` + `test/` (or `val/`) is split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitRule {
    /// Fraction of each class that goes to train, in `(0, 1]`.
    pub ratio: f64,
    pub seed: u64,
}

impl Default for SplitRule {
    fn default() -> Self {
        SplitRule {
            ratio: 0.8,
            seed: 0,
        }
    }
}

/// At most this many images of each class in each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerClass {
    pub train: usize,
    pub test: usize,
}

/// Options for class-folder sources (local folders and hub snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FolderOptions {
    pub split: SplitRule,
    pub bad_files: BadFilePolicy,
    pub check: Check,
    /// Keep a class-balanced subset: the first images of each class in split order (the
    /// seeded split's order, or file-name order for given train/test folders).
    #[serde(default)]
    pub per_class: Option<PerClass>,
}

/// The built-in synthetic set (see [`crate::synthetic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
    pub image_size: u32,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            seed: 0,
            train_per_class: 500,
            test_per_class: 100,
            image_size: 64,
        }
    }
}

/// A data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataSpec {
    /// `root/<class>/*.{jpg,png,bmp,webp}`, or `root/train/<class>/...` + `root/test|val/<class>/...`.
    Folder {
        root: PathBuf,
        options: FolderOptions,
    },
    /// CIFAR-10 binary batches (`data_batch_{1..5}.bin`, `test_batch.bin`) in `dir`
    /// or `dir/cifar-10-batches-bin`.
    Cifar10 { dir: PathBuf },
    /// MNIST / Fashion-MNIST IDX files (`train-images-idx3-ubyte[.gz]`, ...) in `dir`.
    Idx { dir: PathBuf },
    /// A Hugging Face dataset repository laid out as class folders, read from the local hub
    /// cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    Hub {
        repo_id: String,
        /// Branch, tag or commit; `"main"` by default.
        revision: String,
        options: FolderOptions,
    },
    /// The built-in synthetic 10-class set.
    Synthetic(SyntheticSpec),
}

impl DataSpec {
    /// A class-folder dataset with default options (80/20 split, seed 0, fail on bad files).
    pub fn folder(root: impl Into<PathBuf>) -> Self {
        DataSpec::Folder {
            root: root.into(),
            options: FolderOptions::default(),
        }
    }

    /// A hub dataset at revision `main` with default options.
    pub fn hub(repo_id: impl Into<String>) -> Self {
        DataSpec::Hub {
            repo_id: repo_id.into(),
            revision: "main".into(),
            options: FolderOptions::default(),
        }
    }
}

/// Opens a data source: scans, checks and splits it. Pixels are decoded later, by the loader.
pub fn open(spec: &DataSpec) -> Result<Dataset, DataError> {
    match spec {
        DataSpec::Folder { root, options } => source::folder::open(root, options),
        DataSpec::Cifar10 { dir } => source::cifar::open(dir),
        DataSpec::Idx { dir } => source::idx::open(dir),
        DataSpec::Hub {
            repo_id,
            revision,
            options,
        } => source::hub::open(repo_id, revision, options),
        DataSpec::Synthetic(s) => crate::synthetic::open(s),
    }
}
