//! A finished (or interrupted) run opened for use: its config, class names and the model
//! with the current checkpoint's weights; and classifying photos with it.

use crate::checkpoint::{self, Weights};
use crate::config::RunConfig;
use crate::data::eval_transform;
use crate::error::{Result, TrainError};
use candle_core::{Device, Tensor};
use cnn_data::{ClassInfo, Rgb8};
use cnn_models::{Model, Pass};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A run folder's model, ready to evaluate or predict.
pub struct TrainedRun {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub classes: Vec<ClassInfo>,
    pub model: Model,
    /// Finished epochs in the loaded weights.
    pub epochs_done: usize,
    /// Which weights were loaded.
    pub weights: Weights,
}

/// Opens the run folder `dir` (or the folder holding the `config.json` next to a path in
/// it) and loads its current checkpoint onto `device`.
pub fn open_run(dir: impl AsRef<Path>, device: &Device) -> Result<TrainedRun> {
    open_run_with(dir, Weights::Last, device)
}

/// [`open_run`] loading the weights `which` names (the last or the best).
pub fn open_run_with(dir: impl AsRef<Path>, which: Weights, device: &Device) -> Result<TrainedRun> {
    let dir = dir.as_ref();
    let dir = if dir.is_file() {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    if !dir.is_dir() {
        return Err(TrainError::file(dir, "no such run folder"));
    }
    let config = checkpoint::read_config(dir)?;
    let classes = checkpoint::read_classes(dir)?;
    let model = Model::new(&config.arch, config.num_classes, config.seed, device)?;
    let (weights, epochs_done) = checkpoint::weights_file(dir, which)?;
    model.load_weights(&weights)?;
    Ok(TrainedRun {
        dir: dir.to_path_buf(),
        config,
        classes,
        model,
        epochs_done,
        weights: which,
    })
}

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guess {
    pub class: usize,
    pub name: String,
    pub probability: f64,
}

impl TrainedRun {
    /// An image file prepared as the run's test images were (eval transform, normalisation):
    /// `(1, 3, S, S)`.
    pub fn load_photo(&self, path: impl AsRef<Path>) -> Result<Tensor> {
        self.prepare(&cnn_data::decode_file(path)?)
    }

    /// A decoded photo as the run's test images are prepared: `(1, 3, S, S)`.
    pub(crate) fn prepare(&self, img: &Rgb8) -> Result<Tensor> {
        let size = self.config.image_size as u32;
        let img = eval_transform(&self.config).apply(img, size, 0, 0, 0);
        let chw = cnn_data::normalise(&img, &self.config.data.normalise);
        let (data, _) = chw.into_raw_vec_and_offset();
        let s = size as usize;
        Ok(Tensor::from_vec(data, (1, 3, s, s), self.model.device())?)
    }

    /// Class probabilities (softmax of the logits, eval mode) for a batch `(N, 3, S, S)`.
    pub fn probabilities(&self, images: &Tensor) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.forward(images, &Pass::infer())?;
        Ok(candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?)
    }

    /// The `k` most probable classes for one image file, most probable first.
    pub fn top_k(&self, path: impl AsRef<Path>, k: usize) -> Result<Vec<Guess>> {
        let path = path.as_ref();
        let probs = self.probabilities(&self.load_photo(path)?)?;
        Ok(top_k(&probs[0], k, &self.classes))
    }
}

/// The `k` largest entries of `probs` with their class names, largest first (ties by index).
pub fn top_k(probs: &[f32], k: usize, classes: &[ClassInfo]) -> Vec<Guess> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|c| Guess {
            class: c,
            name: classes
                .get(c)
                .map_or_else(|| c.to_string(), |ci| ci.name.clone()),
            probability: probs[c] as f64,
        })
        .collect()
}
