//! The run folder and its checkpoints.
//!
//! ```text
//! <out>/config.json          the RunConfig
//! <out>/classes.json         class folders and names, in index order
//! <out>/metrics.jsonl, .csv  one record per finished epoch
//! <out>/train.log            the log lines, as printed
//! <out>/report.json          the Report, when a session ends
//! <out>/checkpoint.json      which checkpoint is current (written last, atomically)
//! <out>/checkpoints/<name>/  model.safetensors, optimizer.safetensors, state.json
//! <out>/best.json            which weights scored the best test accuracy, and when
//! <out>/checkpoints/best-epochNNNN/model.safetensors   those weights
//! ```
//! A checkpoint is written into a fresh folder (each file via temporary + rename), then
//! `checkpoint.json` is switched to it, then older folders are removed: a kill at any
//! point leaves `checkpoint.json` naming a whole checkpoint. The best weights are kept
//! the same way through `best.json`.

use crate::atomic;
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::metrics::{EpochRecord, Timing};
use crate::optim::OptimizerState;
use candle_core::Device;
use cnn_data::ClassInfo;
use cnn_models::Model;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const CLASSES_FILE: &str = "classes.json";
pub const POINTER_FILE: &str = "checkpoint.json";
pub const REPORT_FILE: &str = "report.json";
pub const LOG_FILE: &str = "train.log";
const CHECKPOINTS_DIR: &str = "checkpoints";
const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";
pub const BEST_FILE: &str = "best.json";
/// Folders of best weights start so; the last checkpoint's cleanup leaves them.
const BEST_PREFIX: &str = "best-";

/// Which of a run's weights to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The current checkpoint's (where training stopped).
    #[default]
    Last,
    /// Those of the epoch with the highest test accuracy (the earliest of equals).
    Best,
}

/// `best.json`: the best weights' folder, the epoch (1-based) and its test accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub dir: String,
    pub epoch: usize,
    pub test_accuracy: f64,
}

/// Running sums of an epoch in progress (all that is needed to finish it exactly).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochSums {
    /// Sum of per-batch mean losses.
    pub loss_sum: f64,
    pub batches: usize,
    pub correct: u64,
    pub seen: u64,
    /// Loss sum and batch count since the last `[Epoch e, Batch b]` line.
    pub running_loss: f64,
    pub running_batches: usize,
    pub time: Timing,
}

/// Where training stands: the next batch to run and what the finished ones summed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epoch in progress (0-based); equals the number of finished epochs at an epoch end.
    pub epoch: usize,
    /// Batches of `epoch` already done.
    pub batch: usize,
    pub sums: EpochSums,
    /// Optimiser steps taken in the whole run.
    pub steps: u64,
    pub seed: u64,
    /// Records of the finished epochs.
    pub records: Vec<EpochRecord>,
    /// Largest device memory use seen (CUDA), carried across sessions.
    pub device_peak_bytes: Option<u64>,
}

impl TrainState {
    pub fn fresh(seed: u64) -> Self {
        Self {
            epoch: 0,
            batch: 0,
            sums: EpochSums::default(),
            steps: 0,
            seed,
            records: Vec::new(),
            device_peak_bytes: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    dir: String,
    epoch: usize,
    batch: usize,
}

/// Writes the model, optimiser state and training state as the run's current checkpoint.
/// `model_file`, where given, already holds these very weights (the best weights, just kept):
/// it is hard-linked into the checkpoint rather than written again (190 MB for d2l
/// AlexNet), and written afresh where the file system cannot link. Files are never
/// changed once written, so the two names can share one file.
pub fn save(
    out: impl AsRef<Path>,
    model: &Model,
    opt: &OptimizerState,
    state: &TrainState,
    model_file: Option<&Path>,
) -> Result<()> {
    let out = out.as_ref();
    let root = out.join(CHECKPOINTS_DIR);
    let name = format!("epoch{:04}-batch{:06}", state.epoch, state.batch);
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    let linked = model_file.is_some_and(|f| std::fs::hard_link(f, dir.join(MODEL_FILE)).is_ok());
    if !linked {
        model.save_weights(dir.join(MODEL_FILE))?;
    }
    opt.save(dir.join(OPTIMIZER_FILE))?;
    atomic::write_json(&dir.join(STATE_FILE), state)?;
    let pointer = Pointer {
        dir: format!("{CHECKPOINTS_DIR}/{name}"),
        epoch: state.epoch,
        batch: state.batch,
    };
    atomic::write_json(&out.join(POINTER_FILE), &pointer)?;
    for entry in std::fs::read_dir(&root)
        .map_err(|e| TrainError::file(&root, e))?
        .flatten()
    {
        let file_name = entry.file_name();
        let kept =
            file_name == name.as_str() || file_name.to_string_lossy().starts_with(BEST_PREFIX);
        if !kept {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Keeps `model` as the run's best weights, those after `epoch` (1-based) with
/// `test_accuracy`: written into a fresh folder, then `best.json` switched to it, then
/// older best folders removed. Returns the weights file written.
pub fn save_best(
    out: impl AsRef<Path>,
    model: &Model,
    epoch: usize,
    test_accuracy: f64,
) -> Result<PathBuf> {
    let out = out.as_ref();
    let root = out.join(CHECKPOINTS_DIR);
    let name = format!("{BEST_PREFIX}epoch{epoch:04}");
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    let file = dir.join(MODEL_FILE);
    model.save_weights(&file)?;
    let best = Best {
        dir: format!("{CHECKPOINTS_DIR}/{name}"),
        epoch,
        test_accuracy,
    };
    atomic::write_json(&out.join(BEST_FILE), &best)?;
    for entry in std::fs::read_dir(&root)
        .map_err(|e| TrainError::file(&root, e))?
        .flatten()
    {
        let file_name = entry.file_name();
        if file_name != name.as_str() && file_name.to_string_lossy().starts_with(BEST_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(file)
}

/// The run's `best.json`, if it has one.
pub fn read_best(out: impl AsRef<Path>) -> Result<Option<Best>> {
    let path = out.as_ref().join(BEST_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(atomic::read_json(&path)?))
}

/// Forgets the best weights (a fresh run in a folder that held a run stopped before its
/// first checkpoint).
pub(crate) fn clear_best(out: &Path) -> Result<()> {
    let path = out.join(BEST_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TrainError::file(&path, e)),
    }
}

/// The weights file `which` names and the finished epochs it holds.
pub fn weights_file(out: impl AsRef<Path>, which: Weights) -> Result<(PathBuf, usize)> {
    let out = out.as_ref();
    match which {
        Weights::Last => {
            let epochs = read_state(out)?.map_or(0, |s| s.epoch);
            Ok((model_file(out)?, epochs))
        }
        Weights::Best => match read_best(out)? {
            Some(best) => Ok((out.join(best.dir).join(MODEL_FILE), best.epoch)),
            None => Err(TrainError::file(
                out,
                "no best weights here (no best.json): the run has not finished an epoch, \
                 or was trained before best weights were kept",
            )),
        },
    }
}

/// The current checkpoint's folder, if the run has one.
pub fn current(out: impl AsRef<Path>) -> Result<Option<PathBuf>> {
    let out = out.as_ref();
    let path = out.join(POINTER_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let p: Pointer = atomic::read_json(&path)?;
    Ok(Some(out.join(p.dir)))
}

/// The current checkpoint's weights file.
pub fn model_file(out: impl AsRef<Path>) -> Result<PathBuf> {
    let out = out.as_ref();
    match current(out)? {
        Some(dir) => Ok(dir.join(MODEL_FILE)),
        None => Err(TrainError::file(
            out,
            "no checkpoint here (no checkpoint.json): has this run finished an epoch?",
        )),
    }
}

/// Loads the current checkpoint into `model`; returns the optimiser and training state.
pub fn load(
    out: impl AsRef<Path>,
    model: &Model,
    device: &Device,
) -> Result<(OptimizerState, TrainState)> {
    let out = out.as_ref();
    let dir = current(out)?.ok_or_else(|| TrainError::Resume {
        path: out.to_path_buf(),
        what: "no checkpoint to resume from".into(),
    })?;
    model.load_weights(dir.join(MODEL_FILE))?;
    let opt = OptimizerState::load(dir.join(OPTIMIZER_FILE), device)?;
    let state: TrainState = atomic::read_json(&dir.join(STATE_FILE))?;
    Ok((opt, state))
}

/// Writes `config.json` and `classes.json` into `out` (created if missing).
pub fn write_run_files(
    out: impl AsRef<Path>,
    cfg: &RunConfig,
    classes: &[ClassInfo],
) -> Result<()> {
    let out = out.as_ref();
    std::fs::create_dir_all(out)
        .map_err(|e| TrainError::file(out, format!("cannot create the run folder: {e}")))?;
    atomic::write_json(&out.join(CONFIG_FILE), cfg)?;
    atomic::write_json(&out.join(CLASSES_FILE), &classes)
}

/// Reads a run folder's `config.json`.
pub fn read_config(out: impl AsRef<Path>) -> Result<RunConfig> {
    let out = out.as_ref();
    let path = out.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(TrainError::file(out, "not a run folder (no config.json)"));
    }
    atomic::read_json(&path)
}

/// Reads a run folder's `classes.json`.
pub fn read_classes(out: impl AsRef<Path>) -> Result<Vec<ClassInfo>> {
    let out = out.as_ref();
    atomic::read_json(&out.join(CLASSES_FILE))
}

/// The verdict and records a run folder holds, for callers that only read.
pub fn read_state(out: impl AsRef<Path>) -> Result<Option<TrainState>> {
    let out = out.as_ref();
    match current(out)? {
        Some(dir) => Ok(Some(atomic::read_json(&dir.join(STATE_FILE))?)),
        None => Ok(None),
    }
}
