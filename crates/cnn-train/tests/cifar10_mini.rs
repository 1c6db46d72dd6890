//! The real-data regression test: ResNet18 at 32x32 on cifar10-mini (5,000 train / 1,000
//! test real JPEGs) learns well above chance (>= 35 %, chance is 10 %) in a few epochs.
//!
//! The data is read from `../shared/datasets/cifar10-mini` beside the project (or
//! `$CNN_SHARED_DIR/datasets/cifar10-mini`); without it the test is skipped, or fails when
//! `CI=true`.

use cnn_data::DataSpec;
use cnn_train::{build_model, fit, open_data, Optimizer, RunConfig, Start, Stop, Verdict};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn cifar10_mini() -> Option<PathBuf> {
    let shared = std::env::var_os("CNN_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("datasets/cifar10-mini");
    if dir.join("train").is_dir() && dir.join("test").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{}: cifar10-mini is missing (set CNN_SHARED_DIR to the shared folder)",
            dir.display()
        );
    }
    eprintln!("skipping: {} not found (set CNN_SHARED_DIR)", dir.display());
    None
}

#[test]
fn resnet18_learns_cifar10_mini() {
    let Some(data_dir) = cifar10_mini() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let mut cfg = RunConfig::new(
        "resnet18",
        DataSpec::folder(&data_dir),
        out.path().join("run"),
    );
    cfg.image_size = 32;
    cfg.epochs = 2;
    cfg.batch_size = 64;
    cfg.optimizer = Optimizer::adam();
    cfg.lr = 1e-3;
    cfg.log_every = 0;
    cfg.data.cache = cnn_data::DecodeCache::Memory;
    let data = open_data(&cfg).unwrap();
    cfg.num_classes = data.classes.len();
    assert_eq!(
        (data.train.len(), data.test.len(), cfg.num_classes),
        (5000, 1000, 10)
    );

    let stop = AtomicBool::new(false);
    let model = build_model(&cfg).unwrap();
    let report = fit(&cfg, &model, &data, Start::Fresh, &stop, &mut |e| {
        if let cnn_train::Event::Line(l) = e {
            eprintln!("{l}");
        }
    })
    .unwrap();
    eprintln!("{}", cnn_train::timing_line(report.last().unwrap()));
    assert_eq!(report.stop, Stop::Finished);
    assert_eq!(report.verdict, Verdict::Converging);
    let last = report.last().unwrap();
    assert!(
        last.test_accuracy >= 0.35,
        "test accuracy {:.1}% < 35%",
        100.0 * last.test_accuracy
    );
    assert!(
        last.train_loss < report.records[0].train_loss,
        "loss did not fall"
    );
    assert!(last.images_per_sec > 0.0 && last.memory.params_bytes > 0);
}
