//! The best weights kept beside the last ones, and bad image files skipped, named in the
//! log and counted in the metrics and the report.

mod common;

use cnn_data::{BadFilePolicy, DataSpec, FolderOptions, Rgb8};
use cnn_train::{checkpoint, evaluate, open_run_with, Start, Stop, Weights};
use common::*;

#[test]
fn the_best_weights_are_those_of_the_best_epoch() {
    let t = temp();
    let dir = run_dir(&t, "run");
    let cfg = small_config(&dir, 6, 3);
    let report = train(&cfg, Start::Fresh, |_, _, _| {});
    assert_eq!(report.stop, Stop::Finished);
    // The earliest epoch with the highest test accuracy.
    let mut want = &report.records[0];
    for r in &report.records {
        if r.test_accuracy > want.test_accuracy {
            want = r;
        }
    }
    let best = checkpoint::read_best(&dir).unwrap().expect("best.json");
    assert_eq!(best.epoch, want.epoch);
    assert_eq!(best.test_accuracy, want.test_accuracy);

    // Each set of weights scores on the test split what its epoch's record says.
    let data = cnn_train::open_data(&cfg).unwrap();
    for (which, record) in [
        (Weights::Best, want),
        (Weights::Last, report.records.last().unwrap()),
    ] {
        let run = open_run_with(&dir, which, &candle_core::Device::Cpu).unwrap();
        assert_eq!(run.epochs_done, record.epoch);
        let e = evaluate(&run.model, &data.test, &candle_core::Device::Cpu, 10).unwrap();
        assert_eq!(e.accuracy, record.test_accuracy, "{which:?}");
        assert_eq!(e.loss.to_bits(), record.test_loss.to_bits(), "{which:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_best_epoch_s_checkpoint_shares_the_best_weights_file() {
    use std::os::unix::fs::MetadataExt;
    let t = temp();
    let dir = run_dir(&t, "run");
    // The first epoch is always the best so far.
    let report = train(&small_config(&dir, 2, 1), Start::Fresh, |_, _, _| {});
    assert_eq!(report.stop, Stop::Finished);
    let (best, _) = checkpoint::weights_file(&dir, Weights::Best).unwrap();
    let (last, _) = checkpoint::weights_file(&dir, Weights::Last).unwrap();
    assert_ne!(best, last);
    let (best, last) = (best.metadata().unwrap(), last.metadata().unwrap());
    assert_eq!((best.dev(), best.ino()), (last.dev(), last.ino()));
    assert_eq!(best.nlink(), 2);
}

/// A 32x32 picture of one colour.
fn flat(rgb: [u8; 3]) -> Rgb8 {
    Rgb8::new(32, 32, rgb.repeat(32 * 32)).unwrap()
}

#[test]
fn bad_files_are_skipped_named_and_counted() {
    let t = temp();
    let root = t.path().join("data");
    for (class, base) in [("dark", 30u8), ("light", 220u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..10u8 {
            let pixel = [base, base.wrapping_add(i), base];
            cnn_data::save_png(&flat(pixel), dir.join(format!("{i}.png"))).unwrap();
        }
    }
    // Found when the data is opened (an empty file) ...
    let empty = root.join("dark/empty.png");
    std::fs::write(&empty, b"").unwrap();
    // ... and only when decoded (a PNG cut in half: its header reads fine).
    let cut = root.join("light/cut.png");
    let whole = std::fs::read(root.join("light/0.png")).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();

    let dir = run_dir(&t, "run");
    let mut cfg = small_config(&dir, 1, 1);
    cfg.num_classes = 2;
    cfg.batch_size = 6; // no batch of one image (BatchNorm needs two)
    let options = FolderOptions {
        bad_files: BadFilePolicy::Skip,
        ..FolderOptions::default()
    };
    cfg.data.source = DataSpec::Folder {
        root: root.clone(),
        options,
    };
    let report = train(&cfg, Start::Fresh, |_, _, _| {});
    let skipped: Vec<_> = report.skipped.iter().map(|s| s.path.clone()).collect();
    assert_eq!(skipped, vec![empty.clone(), cut.clone()]);
    assert_eq!(report.records[0].skipped_files, 2);
    assert_eq!(
        report.records[0].train_images + report.records[0].test_images,
        20
    );
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    for path in [&empty, &cut] {
        let line = format!("Skipped bad file {}: ", path.display());
        assert_eq!(log.matches(&line).count(), 1, "{log}");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let (header, row) = csv.trim_end().split_once('\n').unwrap();
    assert!(
        header.ends_with(",skipped_files") && row.ends_with(",2"),
        "{csv}"
    );
    let saved: cnn_train::Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join(checkpoint::REPORT_FILE)).unwrap())
            .unwrap();
    assert_eq!(saved.skipped.len(), 2);

    // The default policy stops at the first bad file, naming it.
    let mut strict = cfg.clone();
    strict.out = run_dir(&t, "strict");
    strict.data.source = DataSpec::folder(&root);
    let err = cnn_train::open_data(&strict).err().expect("a bad file");
    assert!(err.to_string().contains("empty.png"), "{err}");
}
