//! One record per epoch, and the run's `metrics.jsonl` / `metrics.csv` written from them.

use crate::atomic;
use crate::error::Result;
use crate::memory::Memory;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Seconds spent in each phase of an epoch. Phases are timed back to back (the device is
/// synchronised at each boundary), so `data + forward + backward + optimizer` is the
/// training part of `total`; `eval` is the test pass; `checkpoint` is writing the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Waiting for the next batch (decode, augment, copy to device).
    pub data_s: f64,
    /// Forward pass and loss.
    pub forward_s: f64,
    /// `loss.backward()`.
    pub backward_s: f64,
    /// Optimiser step (and the accuracy count of the batch).
    pub optimizer_s: f64,
    /// Test-set evaluation.
    pub eval_s: f64,
    /// Wall time of the whole epoch, checkpoint included.
    pub total_s: f64,
}

impl Timing {
    /// Seconds of the training part (data + forward + backward + optimiser).
    pub fn train_s(&self) -> f64 {
        self.data_s + self.forward_s + self.backward_s + self.optimizer_s
    }
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based, as the log prints it.
    pub epoch: usize,
    /// Learning rate used throughout the epoch.
    pub lr: f64,
    /// Mean of the epoch's per-batch mean losses (train mode, before each update).
    #[serde(with = "crate::floats")]
    pub train_loss: f64,
    /// Running accuracy: correct predictions of the training forward passes (train mode,
    /// dropout on, weights changing batch to batch) over images seen, in `[0, 1]`.
    pub train_accuracy: f64,
    /// Mean per-image loss on the test split, eval mode, after the epoch.
    #[serde(with = "crate::floats")]
    pub test_loss: f64,
    /// Test accuracy, eval mode, after the epoch, in `[0, 1]`.
    pub test_accuracy: f64,
    pub train_images: usize,
    pub test_images: usize,
    pub time: Timing,
    /// Training images per second of training time (`train_images / time.train_s()`).
    pub images_per_sec: f64,
    pub memory: Memory,
    /// Bad image files left out so far (found when the data was opened or decoded), under
    /// `BadFilePolicy::Skip`; `train.log` and the report name them.
    #[serde(default)]
    pub skipped_files: usize,
}

const CSV_HEADER: &str = "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,train_images,test_images,\
data_s,forward_s,backward_s,optimizer_s,eval_s,total_s,images_per_sec,peak_rss_bytes,params_bytes,grads_bytes,\
optimizer_bytes,device_used_bytes,device_peak_bytes,device_total_bytes,device_tensor_bytes,device_tensor_peak_bytes,skipped_files";

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl EpochRecord {
    fn csv_row(&self) -> String {
        let (t, m) = (&self.time, &self.memory);
        format!(
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{},{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_accuracy,
            self.test_loss,
            self.test_accuracy,
            self.train_images,
            self.test_images,
            t.data_s,
            t.forward_s,
            t.backward_s,
            t.optimizer_s,
            t.eval_s,
            t.total_s,
            self.images_per_sec,
            opt(m.peak_rss_bytes),
            m.params_bytes,
            m.grads_bytes,
            m.optimizer_bytes,
            opt(m.device_used_bytes),
            opt(m.device_peak_bytes),
            opt(m.device_total_bytes),
            opt(m.device_tensor_bytes),
            opt(m.device_tensor_peak_bytes),
            self.skipped_files,
        )
    }
}

/// Rewrites `metrics.jsonl` (one JSON object per epoch) and `metrics.csv` in `dir` from
/// `records`, each atomically, so after a resume they hold exactly the run's epochs.
pub fn write_metrics(dir: impl AsRef<Path>, records: &[EpochRecord]) -> Result<()> {
    let dir = dir.as_ref();
    let mut jsonl = String::new();
    let mut csv = format!("{CSV_HEADER}\n");
    for r in records {
        jsonl.push_str(&serde_json::to_string(r).expect("records serialise"));
        jsonl.push('\n');
        csv.push_str(&r.csv_row());
        csv.push('\n');
    }
    atomic::write(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    atomic::write(&dir.join("metrics.csv"), csv.as_bytes())
}
