//! The shared real data (`../shared/datasets`): Imagenette-224 and CIFAR-10-mini.
//! Absent data fails under `CI=true` and is skipped with a note otherwise.

mod common;

use std::path::Path;

use cnn_data::{open, DataSpec, LastBatch, Loader, LoaderConfig, Normalise, Order, Transform};
use image::ImageDecoder;

fn imagenette() -> Option<std::path::PathBuf> {
    common::shared_datasets().map(|d| d.join("imagenette-224"))
}

#[test]
fn imagenette_counts_split_and_names() {
    let Some(root) = imagenette() else { return };
    let t = std::time::Instant::now();
    let ds = open(&DataSpec::folder(&root)).unwrap();
    eprintln!(
        "opened imagenette-224 (header check of every file) in {:?}",
        t.elapsed()
    );
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.classes[0].folder, "n01440764");
    assert_eq!(ds.classes[0].name, "tench");
    assert_eq!(ds.classes[1].name, "English springer");
    assert!(ds.skipped.is_empty());
    let train = ds.train.class_counts(10);
    let test = ds.test.class_counts(10);
    let total: Vec<usize> = train.iter().zip(&test).map(|(a, b)| a + b).collect();
    assert_eq!(total.iter().sum::<usize>(), 9_469);
    assert!(total.iter().all(|&n| (858..=993).contains(&n)), "{total:?}");
    assert_eq!(*total.iter().min().unwrap(), 858);
    assert_eq!(*total.iter().max().unwrap(), 993);
    // Stratified: each class split round(0.8 n) / rest.
    for c in 0..10 {
        assert_eq!(
            train[c],
            (total[c] as f64 * 0.8).round() as usize,
            "class {c}"
        );
    }
    assert_eq!(ds.train.len() + ds.test.len(), 9_469);
    assert!(
        (7_570..=7_580).contains(&ds.train.len()),
        "{}",
        ds.train.len()
    );
    // Deterministic: same seed, same test files.
    let again = open(&DataSpec::folder(&root)).unwrap();
    let names = |s: &cnn_data::Split| -> Vec<String> {
        s.samples
            .iter()
            .map(|x| match &x.origin {
                cnn_data::Origin::File(p) => p.display().to_string(),
                _ => unreachable!(),
            })
            .collect()
    };
    assert_eq!(names(&ds.test), names(&again.test));
}

fn is_grey(path: &Path) -> bool {
    let reader = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap();
    reader.into_decoder().unwrap().color_type() == image::ColorType::L8
}

#[test]
fn imagenette_greyscale_images_load_as_rgb() {
    let Some(root) = imagenette() else { return };
    let ds = open(&DataSpec::folder(&root)).unwrap();
    let all: Vec<_> = ds.train.samples.iter().chain(&ds.test.samples).collect();
    let grey: Vec<_> = all
        .iter()
        .filter(|s| matches!(&s.origin, cnn_data::Origin::File(p) if is_grey(p)))
        .map(|s| (*s).clone())
        .collect();
    // The datasets README says 242 greyscale images; the files hold 173 single-channel
    // JPEGs (counted from their SOF markers too), plus 6 RGB-coded ones whose channels are
    // equal. The 173 are what a loader must expand to RGB.
    assert_eq!(grey.len(), 173);
    // Load a few through the eval loader: 3 equal channels before normalisation.
    let split = cnn_data::Split {
        samples: grey.into_iter().take(8).collect(),
        ..Default::default()
    };
    let cfg = LoaderConfig {
        normalise: Normalise::UNIT,
        ..LoaderConfig::eval(224, 8)
    };
    let b = Loader::new(&split, cfg).unwrap().batch(0, 0).unwrap();
    assert_eq!(b.images.shape(), &[8, 3, 224, 224]);
    for n in 0..8 {
        for (y, x) in [(0, 0), (100, 37), (223, 223)] {
            let r = b.images[[n, 0, y, x]];
            assert_eq!(r, b.images[[n, 1, y, x]]);
            assert_eq!(r, b.images[[n, 2, y, x]]);
        }
    }
}

#[test]
fn imagenette_batches_identical_with_one_and_two_threads() {
    let Some(root) = imagenette() else { return };
    let ds = open(&DataSpec::folder(&root)).unwrap();
    let cfg = |threads| LoaderConfig {
        threads: Some(threads),
        seed: 42,
        ..LoaderConfig::train(224, 32)
    };
    let take = |threads| -> Vec<cnn_data::Batch> {
        Loader::new(&ds.train, cfg(threads))
            .unwrap()
            .epoch(1)
            .take(2)
            .map(Result::unwrap)
            .collect()
    };
    let one = take(1);
    let two = take(2);
    assert_eq!(one.len(), 2);
    assert_eq!(one, two);
    assert_eq!(one[0].images.shape(), &[32, 3, 224, 224]);
    // Normalised ImageNet statistics: values within [-2.2, 2.7].
    let (lo, hi) = one[0]
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo >= -2.12 && hi <= 2.65, "{lo} {hi}");
    // Eval on 224x224 images at 224 is the decoded image itself.
    let eval = Loader::new(
        &ds.test,
        LoaderConfig {
            normalise: Normalise::UNIT,
            ..LoaderConfig::eval(224, 4)
        },
    )
    .unwrap();
    let b = eval.batch(0, 0).unwrap();
    let cnn_data::Origin::File(p) = &ds.test.samples[0].origin else {
        unreachable!()
    };
    let img = cnn_data::decode_file(p).unwrap();
    assert_eq!((img.width, img.height), (224, 224));
    for (y, x) in [(0, 0), (17, 200), (223, 5)] {
        let px = img.get(x as u32, y as u32);
        for (c, v) in px.iter().enumerate() {
            assert_eq!(b.images[[0, c, y, x]], *v as f32 / 255.0);
        }
    }
}

#[test]
fn cifar10_mini_uses_its_train_test_folders() {
    let Some(shared) = common::shared_datasets() else {
        return;
    };
    let ds = open(&DataSpec::folder(shared.join("cifar10-mini"))).unwrap();
    assert_eq!(ds.class_names()[0], "airplane");
    assert_eq!(ds.class_names()[9], "truck");
    assert_eq!(ds.train.class_counts(10), vec![500; 10]);
    assert_eq!(ds.test.class_counts(10), vec![100; 10]);
    assert!(
        ds.description.contains("train/ and test/"),
        "{}",
        ds.description
    );
    let cfg = LoaderConfig {
        order: Order::Sequential,
        last_batch: LastBatch::Keep,
        transform: Transform::eval(32),
        ..LoaderConfig::train(32, 64)
    };
    let loader = Loader::new(&ds.test, cfg).unwrap();
    assert_eq!(loader.num_batches(), 16);
    let b = loader.batch(0, 15).unwrap();
    assert_eq!(b.images.shape(), &[1000 - 15 * 64, 3, 32, 32]);
    assert!(b.labels.iter().all(|&l| l == 9));
}

#[test]
fn a_per_class_subset_is_balanced_and_drawn_from_the_seeded_split() {
    let Some(root) = imagenette() else { return };
    let options = |per_class| cnn_data::FolderOptions {
        per_class,
        ..Default::default()
    };
    let spec = |per_class| DataSpec::Folder {
        root: root.clone(),
        options: options(per_class),
    };
    let full = open(&spec(None)).unwrap();
    let limit = cnn_data::PerClass {
        train: 120,
        test: 40,
    };
    let sub = open(&spec(Some(limit))).unwrap();
    assert_eq!(sub.train.class_counts(10), vec![120; 10]);
    assert_eq!(sub.test.class_counts(10), vec![40; 10]);
    assert!(
        sub.description
            .contains("at most 120 train / 40 test images a class"),
        "{}",
        sub.description
    );
    // The subset is the head of each class of the full split: no image moves between splits.
    let files = |s: &cnn_data::Split| -> std::collections::HashSet<String> {
        s.samples
            .iter()
            .map(|x| format!("{:?}", x.origin))
            .collect()
    };
    assert!(files(&sub.train).is_subset(&files(&full.train)));
    assert!(files(&sub.test).is_subset(&files(&full.test)));
    // A limit above a class's size keeps the whole class.
    let big = open(&spec(Some(cnn_data::PerClass {
        train: 100_000,
        test: 100_000,
    })))
    .unwrap();
    assert_eq!(big.train.len() + big.test.len(), 9_469);
}
