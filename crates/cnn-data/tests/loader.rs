//! The loader: order, batching, determinism across thread counts, cache equivalence, errors.

mod common;

use std::collections::BTreeSet;

use cnn_data::{
    open, Augment, DataError, DataSpec, DecodeCache, LastBatch, Loader, LoaderConfig, Normalise,
    Order, Split, SyntheticSpec, Transform,
};

fn files_split(dir: &std::path::Path, per_class: usize) -> Split {
    common::class_tree(dir, &["a", "b", "c"], per_class);
    let ds = open(&DataSpec::Folder {
        root: dir.into(),
        options: cnn_data::FolderOptions {
            split: cnn_data::SplitRule {
                ratio: 1.0,
                seed: 0,
            },
            ..Default::default()
        },
    })
    .unwrap();
    ds.train
}

fn synthetic(n_per_class: usize) -> Split {
    open(&DataSpec::Synthetic(SyntheticSpec {
        seed: 11,
        train_per_class: n_per_class,
        test_per_class: 1,
        image_size: 24,
    }))
    .unwrap()
    .train
}

fn collect(loader: &Loader, epoch: u64) -> Vec<cnn_data::Batch> {
    loader.epoch(epoch).map(Result::unwrap).collect()
}

#[test]
fn epochs_cover_every_sample_once_and_shuffle_per_epoch() {
    let split = synthetic(5); // 50 samples
    let loader = Loader::new(&split, LoaderConfig::train(16, 8)).unwrap();
    assert_eq!((loader.num_batches(), loader.len()), (6, 48)); // last 2 dropped
    let e0 = collect(&loader, 0);
    assert_eq!(e0.len(), 6);
    let idx0: Vec<usize> = e0.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(idx0.iter().collect::<BTreeSet<_>>().len(), 48);
    assert_eq!(idx0, loader.order(0)[..48]);
    for b in &e0 {
        let expect: Vec<u32> = b.indices.iter().map(|&i| split.samples[i].label).collect();
        assert_eq!(b.labels, expect);
        assert_eq!(b.images.shape(), &[8, 3, 16, 16]);
    }
    assert_ne!(loader.order(0), loader.order(1));
    assert_eq!(loader.batch(0, 3).unwrap(), e0[3]);

    let keep = Loader::new(
        &split,
        LoaderConfig {
            last_batch: LastBatch::Keep,
            order: Order::Sequential,
            ..LoaderConfig::train(16, 8)
        },
    )
    .unwrap();
    let all = collect(&keep, 0);
    assert_eq!((keep.num_batches(), keep.len(), all.len()), (7, 50, 7));
    assert_eq!(all[6].len(), 2);
    assert_eq!(all[6].indices, vec![48, 49]);
    assert!(keep.batch(0, 7).is_err());
}

#[test]
fn same_batches_with_one_and_two_threads_and_any_prefetch() {
    let dir = tempfile::tempdir().unwrap();
    for split in [synthetic(3), files_split(dir.path(), 6)] {
        let cfg = |threads, prefetch| LoaderConfig {
            threads: Some(threads),
            prefetch,
            seed: 5,
            ..LoaderConfig::train(12, 5)
        };
        let one = collect(&Loader::new(&split, cfg(1, 0)).unwrap(), 2);
        let two = collect(&Loader::new(&split, cfg(2, 3)).unwrap(), 2);
        assert!(!one.is_empty());
        assert_eq!(one, two);
        let other_epoch = collect(&Loader::new(&split, cfg(2, 3)).unwrap(), 3);
        assert_ne!(one, other_epoch);
    }
}

#[test]
fn decode_cache_changes_speed_not_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let split = files_split(&dir.path().join("data"), 4);
    let cache_dir = dir.path().join("cache");
    let cfg = |cache| LoaderConfig {
        cache,
        working_size: Some(4), // images are 6x5: shrunk to 4 on the short side first
        ..LoaderConfig::train(8, 4)
    };
    let off = Loader::new(&split, cfg(DecodeCache::Off)).unwrap();
    let mem = Loader::new(&split, cfg(DecodeCache::Memory)).unwrap();
    let disk = Loader::new(&split, cfg(DecodeCache::Disk(cache_dir.clone()))).unwrap();
    for epoch in 0..2 {
        let want = collect(&off, epoch);
        assert_eq!(collect(&mem, epoch), want);
        assert_eq!(collect(&disk, epoch), want);
    }
    let entries: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 12); // 3 classes x 4 = 3 full batches, every image cached once
                                   // An entry holds the working image: 6x5 shrunk to short side 4 is int(4*6/5) x 4 = 4x4.
    let bytes = std::fs::read(&entries[0]).unwrap();
    assert_eq!(bytes.len(), 16 + 4 * 4 * 3);
    // A damaged entry is a miss: rewritten, same pixels.
    std::fs::write(&entries[0], b"garbage").unwrap();
    let disk2 = Loader::new(&split, cfg(DecodeCache::Disk(cache_dir.clone()))).unwrap();
    assert_eq!(collect(&disk2, 0), collect(&off, 0));
    assert_eq!(std::fs::read(&entries[0]).unwrap().len(), 16 + 48);
}

/// A 2x2 image through `Train(Flip)` at size 2 is either itself or its mirror, normalised.
#[test]
fn flip_augmentation_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/x.png");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_raw(
        2,
        2,
        vec![0, 0, 0, 255, 255, 255, 51, 51, 51, 102, 102, 102],
    )
    .unwrap()
    .save(&p)
    .unwrap();
    let split = Split {
        samples: vec![cnn_data::Sample {
            origin: cnn_data::Origin::File(p),
            label: 0,
        }],
        ..Default::default()
    };
    let cfg = LoaderConfig {
        transform: Transform::Train(Augment::Flip),
        normalise: Normalise::UNIT,
        ..LoaderConfig::train(2, 1)
    };
    let loader = Loader::new(&split, cfg).unwrap();
    let mut seen = BTreeSet::new();
    for epoch in 0..16 {
        let b = loader.batch(epoch, 0).unwrap();
        let row0 = [b.images[[0, 0, 0, 0]], b.images[[0, 0, 0, 1]]];
        let row1 = [b.images[[0, 1, 1, 0]], b.images[[0, 1, 1, 1]]];
        if row0 == [0.0, 1.0] {
            assert_eq!(row1, [0.2, 0.4]);
            seen.insert("plain");
        } else {
            assert_eq!(row0, [1.0, 0.0]);
            assert_eq!(row1, [0.4, 0.2]);
            seen.insert("flipped");
        }
    }
    assert_eq!(seen.len(), 2, "16 epochs should show both flips");
}

#[test]
fn configuration_errors_are_clear() {
    let split = synthetic(1); // 10 samples
    let e = Loader::new(&split, LoaderConfig::train(8, 32)).unwrap_err();
    assert!(
        matches!(e, DataError::Config(_)) && e.to_string().contains("only 10 images"),
        "{e}"
    );
    // Keeping the partial batch is fine.
    let ok = Loader::new(
        &split,
        LoaderConfig {
            last_batch: LastBatch::Keep,
            ..LoaderConfig::train(8, 32)
        },
    )
    .unwrap();
    assert_eq!(ok.num_batches(), 1);
    assert!(Loader::new(&split, LoaderConfig::train(8, 0)).is_err());
    assert!(Loader::new(&split, LoaderConfig::train(0, 4)).is_err());
    assert!(Loader::new(
        &split,
        LoaderConfig {
            threads: Some(0),
            ..LoaderConfig::train(8, 4)
        }
    )
    .is_err());
    assert!(Loader::new(&Split::default(), LoaderConfig::eval(8, 4)).is_err());
}

#[test]
fn dropping_an_epoch_early_stops_the_producer() {
    let split = synthetic(10);
    let loader = Loader::new(
        &split,
        LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::train(16, 4)
        },
    )
    .unwrap();
    let mut epoch = loader.epoch(0);
    assert!(epoch.next().unwrap().is_ok());
    drop(epoch); // must return (joins the producer), not hang
    assert_eq!(collect(&loader, 0).len(), 25);
}

#[test]
fn config_round_trips_through_json() {
    let cfg = LoaderConfig {
        cache: DecodeCache::Disk("/tmp/x".into()),
        transform: Transform::Eval { resize: 256 },
        ..LoaderConfig::train(224, 32)
    };
    let text = serde_json::to_string(&cfg).unwrap();
    let back: LoaderConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    let spec = DataSpec::folder("/data/imagenet10");
    let back: DataSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
}
