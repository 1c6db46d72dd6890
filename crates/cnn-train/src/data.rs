//! The run's data: open the source, build the train and test loaders from the config, and
//! turn host batches into device tensors.

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use candle_core::{Device, Tensor};
use cnn_data::{
    Batch, ClassInfo, LastBatch, Loader, LoaderConfig, Order, Skipped, Split, Transform,
};
use std::collections::BTreeMap;

/// An opened data source with its two loaders.
pub struct Data {
    /// One line saying what the source is.
    pub description: String,
    /// Class names in index order.
    pub classes: Vec<ClassInfo>,
    pub train: Loader,
    pub test: Loader,
    /// Bad files left out when the source was opened (`BadFilePolicy::Skip`).
    pub skipped_at_open: Vec<Skipped>,
}

impl Data {
    /// Every bad file left out so far, by path: those found when the source was opened and
    /// those the loaders have found decoding.
    pub fn skipped(&self) -> Vec<Skipped> {
        skipped_files(&self.skipped_at_open, &[&self.train, &self.test])
    }
}

/// `at_open` and the files `loaders` left out, each path once, in path order.
pub fn skipped_files(at_open: &[Skipped], loaders: &[&Loader]) -> Vec<Skipped> {
    let mut all: BTreeMap<_, _> = at_open
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect();
    for loader in loaders {
        all.extend(loader.skipped().into_iter().map(|s| (s.path, s.reason)));
    }
    all.into_iter()
        .map(|(path, reason)| Skipped { path, reason })
        .collect()
}

/// Opens `cfg.data.source` and builds a shuffled, augmented train loader and an in-order
/// eval-transform test loader, both seeded from `cfg.seed`. Where a transform resizes to a
/// fixed shorter side, each image is shrunk to it as it is decoded (same pixels: see
/// [`Transform::exact_working_size`]), so a decode cache holds what the network sees.
pub fn open_data(cfg: &RunConfig) -> Result<Data> {
    let dataset = cnn_data::open(&cfg.data.source)?;
    if dataset.test.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: the data has no test split",
            dataset.description
        )));
    }
    let d = &cfg.data;
    let size = cfg.image_size as u32;
    let transform = Transform::Train(d.augment);
    let base = LoaderConfig {
        batch_size: cfg.batch_size,
        image_size: size,
        transform,
        normalise: d.normalise,
        seed: cfg.seed,
        order: Order::Shuffled,
        last_batch: d.last_batch,
        prefetch: d.prefetch,
        cache: d.cache.clone(),
        working_size: transform.exact_working_size(size),
        threads: d.threads,
    };
    Ok(Data {
        description: dataset.description.clone(),
        classes: dataset.classes.clone(),
        train: Loader::new(&dataset.train, base)?,
        test: eval_loader(cfg, &dataset.test)?,
        skipped_at_open: dataset.skipped.clone(),
    })
}

/// An in-order loader with the eval transform over `split` (the test split during
/// training; any split for `cnn eval`).
pub fn eval_loader(cfg: &RunConfig, split: &Split) -> Result<Loader> {
    let d = &cfg.data;
    let transform = eval_transform(cfg);
    let config = LoaderConfig {
        batch_size: cfg.batch_size,
        image_size: cfg.image_size as u32,
        transform,
        normalise: d.normalise,
        seed: cfg.seed,
        order: Order::Sequential,
        last_batch: LastBatch::Keep,
        prefetch: d.prefetch,
        cache: d.cache.clone(),
        working_size: transform.exact_working_size(cfg.image_size as u32),
        threads: d.threads,
    };
    Ok(Loader::new(split, config)?)
}

/// The transform the test split and single photos get.
pub fn eval_transform(cfg: &RunConfig) -> Transform {
    Transform::Eval {
        resize: cfg.data.eval_resize.unwrap_or(cfg.image_size as u32),
    }
}

/// The batches of `epoch` from batch `start` on: prefetched from the start of an epoch,
/// assembled one by one when resuming mid-epoch (so skipped batches are not decoded).
pub fn batches(
    loader: &Loader,
    epoch: usize,
    start: usize,
) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
    if start == 0 {
        Box::new(
            loader
                .epoch(epoch as u64)
                .map(|b| b.map_err(TrainError::from)),
        )
    } else {
        Box::new((start..loader.num_batches()).map(move |i| Ok(loader.batch(epoch as u64, i)?)))
    }
}

/// `(images (N, 3, H, W) f32, labels (N) u32)` on `device`.
pub fn to_tensors(batch: Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let shape = batch.images.dim();
    let images = if batch.images.is_standard_layout() {
        batch.images
    } else {
        batch.images.as_standard_layout().into_owned()
    };
    let (data, _) = images.into_raw_vec_and_offset();
    let n = batch.labels.len();
    let x = Tensor::from_vec(data, shape, device)?;
    let y = Tensor::from_vec(batch.labels, n, device)?;
    Ok((x, y))
}
