//! Same seed and threads give identical metrics; a run stopped (between or within epochs)
//! and resumed ends exactly as one that never stopped.

mod common;

use cnn_train::{Start, Stop};
use common::*;
use std::sync::atomic::Ordering;

const EPOCHS: usize = 3;
const PER_CLASS: usize = 6; // 60 training images: 4 batches of 16 (the last one 12)

/// The reference run every stopped one is compared with: `EPOCHS` epochs, never stopped.
fn straight_run(t: &tempfile::TempDir) -> (std::path::PathBuf, cnn_train::Report) {
    let dir = run_dir(t, "straight");
    let report = train(
        &small_config(&dir, PER_CLASS, EPOCHS),
        Start::Fresh,
        |_, _, _| {},
    );
    (dir, report)
}

#[test]
fn seed_determinism_and_resume_equivalence() {
    let t = temp();

    // The reference: never stopped.
    let (straight_dir, straight) = straight_run(&t);
    assert_eq!(straight.stop, Stop::Finished);
    assert_eq!(straight.records.len(), EPOCHS);

    // Same seed, same threads: identical metrics and weights.
    let again_dir = run_dir(&t, "again");
    let again = train(
        &small_config(&again_dir, PER_CLASS, EPOCHS),
        Start::Fresh,
        |_, _, _| {},
    );
    assert_eq!(
        outcomes(&again.records),
        outcomes(&straight.records),
        "same seed gave different metrics"
    );
    assert_eq!(weights(&again_dir), weights(&straight_dir));

    // A different seed gives a different run (the seed is really used).
    let other_dir = run_dir(&t, "other");
    let mut other_cfg = small_config(&other_dir, PER_CLASS, 1);
    other_cfg.seed = 8;
    let other = train(&other_cfg, Start::Fresh, |_, _, _| {});
    assert_ne!(outcome(&other.records[0]), outcome(&straight.records[0]));

    // Stopped after epoch 1 (a run of 1 epoch), then resumed to 3 epochs.
    let split_dir = run_dir(&t, "epoch-boundary");
    let first = train(
        &small_config(&split_dir, PER_CLASS, 1),
        Start::Fresh,
        |_, _, _| {},
    );
    assert_eq!(first.records.len(), 1);
    let resumed = train(
        &small_config(&split_dir, PER_CLASS, EPOCHS),
        Start::Resume,
        |_, _, _| {},
    );
    assert_eq!(
        outcomes(&resumed.records),
        outcomes(&straight.records),
        "resume after epoch 1 differs"
    );
    assert_eq!(weights(&split_dir), weights(&straight_dir));

    // Interrupted in the middle of epoch 2 (as Ctrl-C does), then resumed.
    let mid_dir = run_dir(&t, "mid-epoch");
    let cfg = small_config(&mid_dir, PER_CLASS, EPOCHS);
    let cut = train(&cfg, Start::Fresh, |epoch, batch, stop| {
        if epoch == 2 && batch == 2 {
            stop.store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(cut.stop, Stop::Interrupted { epoch: 2, batch: 2 });
    assert_eq!(cut.records.len(), 1);
    let state = cnn_train::checkpoint::read_state(&mid_dir)
        .unwrap()
        .unwrap();
    assert_eq!((state.epoch, state.batch), (1, 2));
    let finished = train(&cfg, Start::Resume, |_, _, _| {});
    assert_eq!(finished.stop, Stop::Finished);
    assert_eq!(
        outcomes(&finished.records),
        outcomes(&straight.records),
        "resume mid-epoch differs"
    );
    assert_eq!(weights(&mid_dir), weights(&straight_dir));

    // The metrics files hold exactly the run's epochs.
    let jsonl = std::fs::read_to_string(mid_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), EPOCHS);
    let csv = std::fs::read_to_string(mid_dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), EPOCHS + 1);
    // Only the current checkpoint and the best weights are kept, and no temporary file is
    // left behind.
    let kept: Vec<String> = std::fs::read_dir(mid_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let best = kept.iter().filter(|n| n.starts_with("best-")).count();
    assert_eq!((kept.len() - best, best), (1, 1), "{kept:?}");
    for entry in walk(&mid_dir) {
        assert!(
            !entry.to_string_lossy().ends_with(".tmp"),
            "left over: {}",
            entry.display()
        );
    }
}

#[test]
fn checkpoints_every_second_epoch_then_the_last_and_resumes_exactly() {
    let t = temp();
    let (straight_dir, straight) = straight_run(&t);

    let dir = run_dir(&t, "every-2");
    let mut cfg = small_config(&dir, PER_CLASS, EPOCHS);
    cfg.checkpoint_every = 2;
    // The epochs the current checkpoint holds as each epoch's first batch ends; then a
    // Ctrl-C in epoch 3.
    let seen = std::sync::Mutex::new(Vec::new());
    let cut = train(&cfg, Start::Fresh, |epoch, batch, stop| {
        if batch == 1 {
            let state = cnn_train::checkpoint::read_state(&dir).unwrap();
            seen.lock().unwrap().push((epoch, state.map(|s| s.epoch)));
        }
        if epoch == 3 && batch == 2 {
            stop.store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(
        seen.into_inner().unwrap(),
        [(1, None), (2, None), (3, Some(2))],
        "epoch 1 is not checkpointed, epoch 2 is"
    );
    assert_eq!(cut.stop, Stop::Interrupted { epoch: 3, batch: 2 });
    let state = cnn_train::checkpoint::read_state(&dir).unwrap().unwrap();
    assert_eq!((state.epoch, state.batch), (2, 2));

    let finished = train(&cfg, Start::Resume, |_, _, _| {});
    assert_eq!(finished.stop, Stop::Finished);
    assert_eq!(outcomes(&finished.records), outcomes(&straight.records));
    assert_eq!(weights(&dir), weights(&straight_dir));
    let state = cnn_train::checkpoint::read_state(&dir).unwrap().unwrap();
    assert_eq!(
        (state.epoch, state.batch),
        (EPOCHS, 0),
        "the last epoch is saved"
    );
}

#[test]
fn fresh_start_refuses_an_existing_run_and_resume_refuses_other_settings() {
    let t = temp();
    let dir = run_dir(&t, "run");
    train(&small_config(&dir, 2, 1), Start::Fresh, |_, _, _| {});
    let data = cnn_train::open_data(&small_config(&dir, 2, 1)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let model = cnn_train::build_model(&small_config(&dir, 2, 2)).unwrap();
    let err = cnn_train::fit(
        &small_config(&dir, 2, 2),
        &model,
        &data,
        Start::Fresh,
        &stop,
        &mut |_| {},
    )
    .err()
    .unwrap();
    // The engine says what is wrong; the CLI words the flags (tests/cli.rs checks those).
    assert!(
        matches!(err, cnn_train::TrainError::RunExists { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already holds a run"), "{err}");
    let mut changed = small_config(&dir, 2, 2);
    changed.lr = 0.5;
    let err = cnn_train::fit(&changed, &model, &data, Start::Resume, &stop, &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot resume"), "{err}");
    let mut other = small_config(&dir, 2, 2);
    other.arch = "resnet34".into();
    let wrong = cnn_train::build_model(&other).unwrap();
    let err = cnn_train::fit(
        &small_config(&dir, 2, 2),
        &wrong,
        &data,
        Start::Resume,
        &stop,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("resnet34"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
