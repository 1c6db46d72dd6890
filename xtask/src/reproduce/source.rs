//! Which data a reproduction uses: `--data`, else `$CNN_DATA`, else the shared Imagenette
//! folder beside the project, else Imagenette from the local Hugging Face hub cache, else the
//! built-in synthetic set (with a banner in the report).

use super::plan::Sizes;
use cnn_data::{DataSpec, FolderOptions, PerClass, SyntheticSpec};
use std::path::PathBuf;

/// The hub repository tried when no path is given (read from the local cache only).
pub const HUB_REPO: &str = "frgfm/imagenette";

/// The workplace's Imagenette at 224 px, under the shared folder, as the tests find it.
fn shared_imagenette() -> PathBuf {
    crate::shared_dir().join("datasets/imagenette-224")
}

/// The chosen data and how it was chosen.
pub struct Source {
    pub spec: DataSpec,
    /// How the report names it, e.g. `folder ../shared/datasets/imagenette-224`.
    pub label: String,
    /// Real photographs comparable with the assignment's ImageNet-10.
    pub real: bool,
    /// Why this source (and what was tried before it).
    pub reason: String,
}

/// Folder options: the default seeded 80/20 split, cut to the profile's subset if it has one.
fn folder_options(sizes: Sizes) -> FolderOptions {
    let per_class = sizes
        .per_class
        .map(|(train, test)| PerClass { train, test });
    FolderOptions {
        per_class,
        ..Default::default()
    }
}

pub fn resolve(data: Option<PathBuf>, sizes: Sizes) -> Source {
    let folder = |path: PathBuf, reason: String| Source {
        label: format!("class folders at {}", path.display()),
        spec: DataSpec::Folder {
            root: path,
            options: folder_options(sizes),
        },
        real: true,
        reason,
    };
    if let Some(path) = data {
        return folder(path, "given with --data".into());
    }
    if let Some(path) = std::env::var_os("CNN_DATA").filter(|v| !v.is_empty()) {
        return folder(PathBuf::from(path), "from $CNN_DATA".into());
    }
    // Kept relative, as written: a run's config records it, and a finished run is reused
    // only under the same config, so the committed report's runs match in any clone.
    let shared = shared_imagenette();
    if shared.is_dir() {
        let reason = "no --data or $CNN_DATA; the shared Imagenette folder is there".into();
        return folder(shared, reason);
    }
    let hub = DataSpec::Hub {
        repo_id: HUB_REPO.into(),
        revision: "main".into(),
        options: folder_options(sizes),
    };
    let hub_error = match cnn_data::open(&hub) {
        Ok(_) => {
            return Source {
                spec: hub,
                label: format!("Hugging Face dataset {HUB_REPO} (local hub cache)"),
                real: true,
                reason: "no --data or $CNN_DATA; found in the local hub cache".into(),
            }
        }
        Err(e) => e.to_string(),
    };
    let (train, test) = sizes.per_class.unwrap_or((500, 100));
    let spec = SyntheticSpec {
        seed: 0,
        train_per_class: train,
        test_per_class: test,
        image_size: sizes.image_size as u32,
    };
    Source {
        label: format!(
            "built-in synthetic set ({train} train + {test} test images a class, {0}x{0})",
            sizes.image_size
        ),
        spec: DataSpec::Synthetic(spec),
        real: false,
        reason: format!(
            "no --data, no $CNN_DATA, no {}, and the hub copy is unavailable ({hub_error})",
            shared.display()
        ),
    }
}
