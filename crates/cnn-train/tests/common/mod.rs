//! Helpers shared by the integration tests: a small synthetic run and record comparison.

#![allow(dead_code)]

use cnn_data::{DataSpec, SyntheticSpec};
use cnn_train::{build_model, fit, open_data, EpochRecord, Event, Report, RunConfig, Start};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// ResNet18 at 32 px on 10 x `per_class` synthetic training images, batch 16, Adam 1e-3.
pub fn small_config(out: &Path, per_class: usize, epochs: usize) -> RunConfig {
    let source = DataSpec::Synthetic(SyntheticSpec {
        seed: 3,
        train_per_class: per_class,
        test_per_class: 2,
        image_size: 32,
    });
    let mut cfg = RunConfig::new("resnet18", source, out);
    cfg.image_size = 32;
    cfg.batch_size = 16;
    cfg.epochs = epochs;
    cfg.lr = 1e-3;
    cfg.seed = 7;
    cfg.num_classes = 10;
    cfg.log_every = 2;
    cfg.threads = Some(2);
    cfg.data.augment = cnn_data::Augment::Flip;
    cfg.data.cache = cnn_data::DecodeCache::Memory;
    cfg
}

/// Runs `cfg`, calling `on_batch(epoch, batch, stop)` after every batch (to interrupt it).
pub fn train(
    cfg: &RunConfig,
    start: Start,
    on_batch: impl Fn(usize, usize, &AtomicBool) + Sync,
) -> Report {
    let data = open_data(cfg).expect("open data");
    let stop = AtomicBool::new(false);
    let stop_ref = &stop;
    let model = build_model(cfg).expect("model");
    fit(cfg, &model, &data, start, &stop, &mut |e| {
        if let Event::Batch { epoch, batch, .. } = e {
            on_batch(*epoch, *batch, stop_ref);
        }
    })
    .expect("fit")
}

/// The parts of a record that must repeat exactly (not timings or memory), floats as bits.
pub type Outcome = (usize, u64, u64, u64, u64, u64, usize, usize);

pub fn outcome(r: &EpochRecord) -> Outcome {
    (
        r.epoch,
        r.lr.to_bits(),
        r.train_loss.to_bits(),
        r.train_accuracy.to_bits(),
        r.test_loss.to_bits(),
        r.test_accuracy.to_bits(),
        r.train_images,
        r.test_images,
    )
}

pub fn outcomes(rs: &[EpochRecord]) -> Vec<Outcome> {
    rs.iter().map(outcome).collect()
}

/// The bytes of a run folder's current weights.
pub fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(cnn_train::checkpoint::model_file(out).unwrap()).unwrap()
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn run_dir(t: &tempfile::TempDir, name: &str) -> PathBuf {
    t.path().join(name)
}
