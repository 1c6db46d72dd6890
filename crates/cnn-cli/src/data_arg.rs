//! `--data PATH`: which kind of source a path is (class folders, CIFAR-10 binaries, IDX
//! files, the built-in synthetic set, a hub dataset).

use cnn_data::{BadFilePolicy, DataSpec, FolderOptions, SplitRule, SyntheticSpec};
use std::path::Path;

/// The help text shared by every `--data` flag.
pub const HELP: &str = "Data: a folder of class folders (split --split train/test unless it has train/ and test/ \
(or val/) inside), a CIFAR-10 binary folder, an MNIST-style IDX folder, `synthetic`, or `hub:OWNER/NAME` \
(a Hugging Face dataset of class folders in the local hub cache)";

/// The source `arg` names, splitting class folders by `split`.
pub fn spec(arg: &str, split: SplitRule) -> anyhow::Result<DataSpec> {
    let options = FolderOptions {
        split,
        ..FolderOptions::default()
    };
    if arg == "synthetic" {
        return Ok(DataSpec::Synthetic(SyntheticSpec::default()));
    }
    if let Some(repo) = arg.strip_prefix("hub:") {
        return Ok(DataSpec::Hub {
            repo_id: repo.to_string(),
            revision: "main".into(),
            options,
        });
    }
    let path = Path::new(arg);
    if !path.exists() {
        anyhow::bail!("{arg}: no such data folder");
    }
    if !path.is_dir() {
        anyhow::bail!("{arg}: not a folder (expected a folder of class folders)");
    }
    // Absolute, so `--resume`, `eval` and `predict` work from any folder.
    let path = &std::fs::canonicalize(path).map_err(|e| anyhow::anyhow!("{arg}: {e}"))?;
    let has = |name: &str| path.join(name).exists();
    if has("data_batch_1.bin") || has("cifar-10-batches-bin") {
        return Ok(DataSpec::Cifar10 {
            dir: path.to_path_buf(),
        });
    }
    if has("train-images-idx3-ubyte") || has("train-images-idx3-ubyte.gz") {
        return Ok(DataSpec::Idx {
            dir: path.to_path_buf(),
        });
    }
    Ok(DataSpec::Folder {
        root: path.to_path_buf(),
        options,
    })
}

/// `--bad-files`: what an image file that cannot be read does.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BadFiles {
    /// Stop with an error naming the file.
    Fail,
    /// Leave it out; the log, metrics and report name and count it.
    Skip,
}

/// Sets what `spec`'s bad files do (class folders and hub sets; other sources hold no
/// files that can be bad).
pub fn set_bad_files(spec: &mut DataSpec, bad: BadFiles) {
    if let DataSpec::Folder { options, .. } | DataSpec::Hub { options, .. } = spec {
        options.bad_files = match bad {
            BadFiles::Fail => BadFilePolicy::Fail,
            BadFiles::Skip => BadFilePolicy::Skip,
        };
    }
}
