//! Divergence is classified automatically: the assignment's own lr 0.005 log is "not
//! converging", its lr 1e-4 log is converging, and an absurd learning rate is caught.

mod common;

use cnn_train::{
    judge, DivergenceRule, EpochRecord, Memory, Optimizer, Start, Stop, Timing, Verdict,
};

/// One record per `(loss, train %, test %)` row, epochs numbered from 1.
fn records_of(log: &[(f64, f64, f64)]) -> Vec<EpochRecord> {
    log.iter()
        .enumerate()
        .map(|(i, &(l, a, b))| record(i + 1, l, a, b))
        .collect()
}

fn record(epoch: usize, loss: f64, train: f64, test: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        lr: 0.005,
        train_loss: loss,
        train_accuracy: train / 100.0,
        test_loss: loss,
        test_accuracy: test / 100.0,
        train_images: 10400,
        test_images: 2600,
        time: Timing::default(),
        images_per_sec: 0.0,
        memory: Memory::default(),
        skipped_files: 0,
    }
}

#[test]
fn the_assignments_lr_0005_run_is_not_converging() {
    // Epoch loss, train and test accuracy as printed in the report (task 3).
    let log = [
        (108.40259063, 9.846, 10.615),
        (2.30403672, 10.202, 9.192),
        (2.30363615, 9.933, 10.269),
        (2.30361349, 10.144, 9.423),
        (2.30312130, 10.279, 8.885),
        (2.30320058, 10.029, 9.885),
        (2.30330786, 10.279, 8.885),
        (2.30319809, 10.029, 9.885),
        (2.30311617, 10.279, 8.885),
        (2.30298322, 10.202, 9.192),
    ];
    let records = records_of(&log);
    let rule = DivergenceRule::default();
    // Epoch 1 exploded (loss 108, finite) and the rest sat at ln 10: all ten at chance.
    assert_eq!(
        judge(&records[..2], 10, &rule),
        Verdict::Converging,
        "two stuck epochs are not yet a verdict"
    );
    assert!(matches!(
        judge(&records[..3], 10, &rule),
        Verdict::NotConverging {
            since_epoch: 1,
            epochs: 3,
            ..
        }
    ));
    match judge(&records, 10, &rule) {
        Verdict::NotConverging {
            since_epoch,
            epochs,
            ..
        } => assert_eq!((since_epoch, epochs), (1, 10)),
        v => panic!("expected not converging, got {v:?}"),
    }
}

#[test]
fn the_assignments_lr_1e4_run_is_converging() {
    let log = [
        (2.00081805, 35.271, 33.935),
        (1.45982642, 57.302, 55.227),
        (1.14177276, 67.717, 65.949),
        (0.96880386, 69.937, 66.449),
    ];
    let records = records_of(&log);
    assert_eq!(
        judge(&records, 10, &DivergenceRule::default()),
        Verdict::Converging
    );
    // A slow start near ln 10 that then learns is not flagged either.
    let slow = [
        (2.30, 10.5, 10.0),
        (2.29, 11.0, 10.2),
        (2.28, 12.0, 11.0),
        (2.10, 22.0, 21.0),
    ];
    let records = records_of(&slow);
    assert_eq!(
        judge(&records, 10, &DivergenceRule::default()),
        Verdict::Converging
    );
}

#[test]
fn an_absurd_learning_rate_is_caught() {
    let t = common::temp();
    let dir = common::run_dir(&t, "absurd");
    let mut cfg = common::small_config(&dir, 4, 3);
    cfg.optimizer = Optimizer::sgd(0.9);
    cfg.lr = 1e4;
    cfg.divergence.window = 2;
    let report = common::train(&cfg, Start::Fresh, |_, _, _| {});
    match &report.verdict {
        Verdict::Diverged { epoch, batch, loss } => {
            assert!(!loss.is_finite());
            assert_eq!(report.stop, Stop::Diverged);
            assert!(*epoch >= 1 && *batch >= 1);
            // Recorded in the run folder too.
            let saved = std::fs::read_to_string(dir.join("report.json")).unwrap();
            assert!(saved.contains("diverged"), "{saved}");
            let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
            assert!(log.contains("Stopped: diverged"), "{log}");
        }
        Verdict::NotConverging { .. } => {}
        Verdict::Converging => panic!("lr 1e4 was not flagged: {:?}", report.records),
    }
}

#[test]
fn a_run_stopped_for_not_converging_stays_stopped_when_resumed() {
    let t = common::temp();
    let dir = common::run_dir(&t, "stuck");
    let mut cfg = common::small_config(&dir, 4, 3);
    // Every epoch counts as stuck: any loss, any accuracy, a verdict after one epoch.
    cfg.divergence.window = 1;
    cfg.divergence.loss_tolerance = 1.0;
    cfg.divergence.chance_band = 100.0;
    cfg.divergence.on_stuck = cnn_train::OnStuck::Stop;
    let report = common::train(&cfg, Start::Fresh, |_, _, _| {});
    assert_eq!(report.stop, Stop::NotConverging);
    assert_eq!(report.records.len(), 1);
    // Resumed (as `cargo xtask reproduce` resumes every run it finds), it trains nothing.
    let again = common::train(&cfg, Start::Resume, |_, _, _| {});
    assert_eq!(again.stop, Stop::NotConverging);
    assert_eq!(again.records.len(), 1, "the stopped run trained on");
}
