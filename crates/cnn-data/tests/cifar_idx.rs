//! CIFAR-10 binary batches and IDX files (plain and gzip), written by hand here.

use std::io::Write;
use std::path::Path;

use cnn_data::{open, DataSpec, LastBatch, Loader, LoaderConfig, Normalise, Order, Transform};

/// A CIFAR record: label, then R, G, B planes; pixel p of plane c is `(label * 10 + c * 3 + p) % 256`.
fn cifar_record(label: u8) -> Vec<u8> {
    let mut r = vec![label];
    for c in 0..3u32 {
        r.extend((0..1024u32).map(|p| ((label as u32 * 10 + c * 3 + p) % 256) as u8));
    }
    r
}

#[test]
fn cifar10_binary_batches() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(
        base.join("data_batch_1.bin"),
        [cifar_record(3), cifar_record(7)].concat(),
    )
    .unwrap();
    std::fs::write(base.join("data_batch_2.bin"), cifar_record(0)).unwrap();
    std::fs::write(base.join("test_batch.bin"), cifar_record(9)).unwrap();
    let ds = open(&DataSpec::Cifar10 {
        dir: dir.path().into(),
    })
    .unwrap();
    assert_eq!(ds.class_names()[3], "cat");
    assert_eq!(ds.train.labels(), vec![3, 7, 0]);
    assert_eq!(ds.test.labels(), vec![9]);
    let cnn_data::Origin::Pixels(img) = &ds.train.samples[0].origin else {
        panic!()
    };
    // Planar -> interleaved: pixel 5 (x=5, y=0) is (30+5, 33+5, 36+5).
    assert_eq!(img.get(5, 0), [35, 38, 41]);
    assert_eq!(img.get(0, 1), [62, 65, 68]); // p = 32
    let cfg = LoaderConfig {
        normalise: Normalise::UNIT,
        order: Order::Sequential,
        last_batch: LastBatch::Keep,
        transform: Transform::eval(32),
        ..LoaderConfig::train(32, 4)
    };
    let b = Loader::new(&ds.train, cfg).unwrap().batch(0, 0).unwrap();
    assert_eq!(b.images.shape(), &[3, 3, 32, 32]);
    assert_eq!(b.images[[0, 1, 0, 5]], 38.0 / 255.0);

    // Malformed: wrong length, label out of range.
    std::fs::write(base.join("test_batch.bin"), &cifar_record(1)[..100]).unwrap();
    let e = open(&DataSpec::Cifar10 { dir: base.clone() })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("multiple of 3073"),
        "{e}"
    );
    std::fs::write(base.join("test_batch.bin"), cifar_record(12)).unwrap();
    let e = open(&DataSpec::Cifar10 { dir: base.clone() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 12"), "{e}");
    let e = open(&DataSpec::Cifar10 {
        dir: dir.path().join("none"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_idx_set(dir: &Path, gzip: bool) {
    let images: Vec<u8> = (0..3 * 2 * 3).map(|i| i as u8 * 10).collect(); // 3 images, 2 rows x 3 cols
    let files = [
        ("train-images-idx3-ubyte", idx(&[3, 2, 3], &images)),
        ("train-labels-idx1-ubyte", idx(&[3], &[4, 0, 9])),
        ("t10k-images-idx3-ubyte", idx(&[1, 2, 3], &images[..6])),
        ("t10k-labels-idx1-ubyte", idx(&[1], &[2])),
    ];
    for (name, bytes) in files {
        if gzip {
            std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn idx_plain_and_gzip() {
    for gzip in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp
            .path()
            .join(if gzip { "fashion-mnist" } else { "mnist" });
        std::fs::create_dir(&dir).unwrap();
        write_idx_set(&dir, gzip);
        let ds = open(&DataSpec::Idx { dir: dir.clone() }).unwrap();
        assert_eq!(ds.train.labels(), vec![4, 0, 9]);
        assert_eq!(ds.test.labels(), vec![2]);
        assert_eq!(ds.class_names()[9], if gzip { "Ankle boot" } else { "9" });
        let cnn_data::Origin::Pixels(img) = &ds.train.samples[1].origin else {
            panic!()
        };
        assert_eq!((img.width, img.height), (3, 2));
        // Image 1 starts at byte 6: pixel (x=2, y=1) is byte 6 + 5 = 11 -> 110, grey to RGB.
        assert_eq!(img.get(2, 1), [110, 110, 110]);
    }
}

#[test]
fn idx_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_idx_set(dir, false);
    // Header declares more data than follows (a huge declared size allocates nothing).
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx(&[60000, 28, 28], &[1, 2, 3]),
    )
    .unwrap();
    let e = open(&DataSpec::Idx { dir: dir.into() })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("declares dimensions"),
        "{e}"
    );
    // Wrong element type.
    let mut bad = idx(&[1, 2, 3], &[0; 6]);
    bad[2] = 0x0d;
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), bad).unwrap();
    let e = open(&DataSpec::Idx { dir: dir.into() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("not unsigned byte"), "{e}");
    // Label count mismatch.
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[1, 2, 3], &[0; 6])).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[2], &[1, 1])).unwrap();
    let e = open(&DataSpec::Idx { dir: dir.into() })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-labels") && e.contains("labels for 1 images"),
        "{e}"
    );
    // Corrupt gzip.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        [0x1f, 0x8b, 8, 0, 1, 2, 3],
    )
    .unwrap();
    let e = open(&DataSpec::Idx { dir: dir.into() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad gzip data"), "{e}");
    // Missing file.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = open(&DataSpec::Idx { dir: dir.into() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing t10k-labels-idx1-ubyte"), "{e}");
}
