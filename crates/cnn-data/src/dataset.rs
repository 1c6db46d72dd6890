//! The plain data a source produces: classes, a train and a test split, and what was skipped.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rgb::Rgb8;
use crate::spec::BadFilePolicy;

/// One class: the folder (or source) name and a display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// Folder name (e.g. `n01440764`); for CIFAR / IDX / synthetic the name again.
    pub folder: String,
    /// Display name (from `LABELS.tsv` when present, else the folder name).
    pub name: String,
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An encoded image file, decoded on demand.
    File(PathBuf),
    /// Pixels already in memory (CIFAR-10, IDX).
    Pixels(Arc<Rgb8>),
    /// Drawn on demand by the synthetic generator.
    Synthetic {
        seed: u64,
        id: u64,
        class: u32,
        size: u32,
    },
}

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Sample {
    pub origin: Origin,
    /// Class index: position in [`Dataset::classes`].
    pub label: u32,
}

/// A list of samples (one split). Sample `i` here is what [`crate::Batch::indices`] refers to.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub samples: Vec<Sample>,
    /// What the loader does with a file that fails to decode.
    pub bad_files: BadFilePolicy,
}

impl Split {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Labels in sample order.
    pub fn labels(&self) -> Vec<u32> {
        self.samples.iter().map(|s| s.label).collect()
    }

    /// The first `n` samples of each class, in this split's order.
    pub fn first_per_class(&self, n: usize) -> Split {
        let mut taken = std::collections::HashMap::<u32, usize>::new();
        let samples = self
            .samples
            .iter()
            .filter(|s| {
                let count = taken.entry(s.label).or_default();
                *count += 1;
                *count <= n
            })
            .cloned()
            .collect();
        Split {
            samples,
            bad_files: self.bad_files,
        }
    }

    /// Number of samples of each class, for `num_classes` classes.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for s in &self.samples {
            if let Some(c) = counts.get_mut(s.label as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// An opened data source.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// One line saying what this is (source, root, how it was split).
    pub description: String,
    /// Classes in index order (sorted folder names for folder sources).
    pub classes: Vec<ClassInfo>,
    pub train: Split,
    pub test: Split,
    /// Bad files left out under [`BadFilePolicy::Skip`].
    pub skipped: Vec<Skipped>,
    /// Hidden files and files without an image extension that were ignored.
    pub ignored: usize,
}

impl Dataset {
    /// Display names in class-index order.
    /// A data set whose images are already in memory (CIFAR-10, IDX): class folders are the
    /// class names, and a decoded image cannot be a bad file.
    pub(crate) fn decoded(
        description: String,
        names: Vec<String>,
        train: Vec<Sample>,
        test: Vec<Sample>,
    ) -> Self {
        let split = |samples| Split {
            samples,
            bad_files: BadFilePolicy::Fail,
        };
        Dataset {
            description,
            classes: names
                .into_iter()
                .map(|n| ClassInfo {
                    folder: n.clone(),
                    name: n,
                })
                .collect(),
            train: split(train),
            test: split(test),
            skipped: Vec::new(),
            ignored: 0,
        }
    }

    /// Every image of the source, train then test, as one split (to score a whole
    /// held-out folder).
    pub fn all(&self) -> Split {
        Split {
            samples: [&self.train.samples[..], &self.test.samples[..]].concat(),
            bad_files: self.train.bad_files,
        }
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}
