//! Evaluation in eval mode: mean loss, accuracy, and the confusion matrix (per-class accuracy).

use crate::data::{batches, to_tensors};
use crate::error::{Result, TrainError};
use candle_core::{DType, Device};
use cnn_data::Loader;
use cnn_models::{Model, Pass};
use serde::{Deserialize, Serialize};

/// The result of one pass over a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean per-image cross-entropy.
    #[serde(with = "crate::floats")]
    pub loss: f64,
    /// Correct / images, in `[0, 1]`.
    pub accuracy: f64,
    pub images: usize,
    /// `confusion[true][predicted]` image counts.
    pub confusion: Vec<Vec<u64>>,
}

impl Evaluation {
    /// Accuracy of each true class (`None` for a class with no images).
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect()
    }
}

/// Runs `model` in eval mode over every batch of `loader`.
pub fn evaluate(
    model: &Model,
    loader: &Loader,
    device: &Device,
    num_classes: usize,
) -> Result<Evaluation> {
    crate::on_compute_pool(None, || evaluate_here(model, loader, device, num_classes))
        .map_err(|e| TrainError::Config(format!("thread pool: {e}")))?
}

/// [`evaluate`] on the calling thread.
fn evaluate_here(
    model: &Model,
    loader: &Loader,
    device: &Device,
    num_classes: usize,
) -> Result<Evaluation> {
    let mut confusion = vec![vec![0u64; num_classes]; num_classes];
    let (mut loss_sum, mut images, mut correct) = (0f64, 0usize, 0u64);
    let pass = Pass::infer();
    for batch in batches(loader, 0, 0) {
        let batch = batch?;
        if batch.labels.is_empty() {
            continue; // every image of it a bad file, skipped
        }
        let (x, y) = to_tensors(batch, device)?;
        let n = y.elem_count();
        let logits = model.forward(&x, &pass)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        loss_sum += loss * n as f64;
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        let truth = y.to_vec1::<u32>()?;
        for (t, p) in truth.into_iter().zip(pred) {
            if let Some(cell) = confusion
                .get_mut(t as usize)
                .and_then(|row| row.get_mut(p as usize))
            {
                *cell += 1;
            }
            correct += u64::from(t == p);
        }
        images += n;
    }
    Ok(Evaluation {
        loss: loss_sum / images.max(1) as f64,
        accuracy: correct as f64 / images.max(1) as f64,
        images,
        confusion,
    })
}
