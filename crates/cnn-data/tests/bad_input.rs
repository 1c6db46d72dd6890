//! Bad files: each gives an error naming the file and the fault, or is skipped and listed;
//! nothing panics and a huge declared size allocates nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cnn_data::{
    decode_bytes, open, BadFilePolicy, Check, DataSpec, FolderOptions, LastBatch, Loader,
    LoaderConfig,
};
use common::{class_tree, jpeg_bytes, pattern};

fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG whose header claims `w x h` RGB (with valid CRCs) followed by a tiny IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    out.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// (file name, bytes, what the error must say, caught by the header check?)
fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str, bool)> {
    let jpeg = jpeg_bytes(40, 30);
    let png = png_bytes(&pattern(40, 30, 0));
    let mut bad_crc = png.clone();
    let n = bad_crc.len();
    bad_crc[n / 2] ^= 0xff; // inside IDAT: checksum or inflate fails
    vec![
        ("zero.jpg", Vec::new(), "empty file", true),
        (
            "text.png",
            b"hello, I am not an image".to_vec(),
            "not an image",
            true,
        ),
        (
            "random.jpeg",
            (0..500u32).map(|i| (i * 7919 % 251) as u8).collect(),
            "not an image",
            true,
        ),
        (
            "png_named.jpg",
            png.clone(),
            "mislabelled: extension says Jpeg but the content is Png",
            true,
        ),
        (
            "huge.png",
            png_claiming(100_000, 100_000),
            "beyond the limit",
            true,
        ),
        (
            "trunc.jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            "truncated JPEG",
            false,
        ),
        ("trunc.png", png[..png.len() * 2 / 3].to_vec(), "Png", false),
        ("badcrc.png", bad_crc, "corrupt Png", false),
        (
            "huge_alloc.png",
            png_claiming(16_000, 16_000),
            "limits",
            false,
        ),
    ]
}

fn write_corpus(root: &Path) -> Vec<PathBuf> {
    class_tree(root, &["good1", "good2"], 5);
    corpus()
        .into_iter()
        .map(|(name, bytes, _, _)| {
            let p = root.join("good2").join(name);
            fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

#[test]
fn each_bad_file_alone_gives_an_error_naming_it() {
    for (name, bytes, expect, by_header) in corpus() {
        let dir = tempfile::tempdir().unwrap();
        class_tree(dir.path(), &["a", "b"], 3);
        let path = dir.path().join("b").join(name);
        fs::write(&path, &bytes).unwrap();
        // Decoding directly always reports it.
        let e = decode_bytes(&path, &bytes).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(expect), "{name}: {e}");
        // Opening (header check) reports the header-detectable ones.
        let opened = open(&DataSpec::folder(dir.path()));
        if by_header {
            let e = opened.unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(expect), "{name}: {e}");
        } else {
            // The loader meets it when decoding and stops with the same message.
            let ds = opened.unwrap();
            let all = cnn_data::Split {
                samples: ds
                    .train
                    .samples
                    .iter()
                    .chain(&ds.test.samples)
                    .cloned()
                    .collect(),
                ..ds.train.clone()
            };
            let loader = Loader::new(&all, LoaderConfig::eval(8, 7)).unwrap();
            let err = loader.epoch(0).find_map(Result::err).expect("an error");
            let e = err.to_string();
            assert!(e.contains(name) && e.contains(expect), "{name}: {e}");
        }
        // With a full decode check, open catches everything.
        let e = open(&DataSpec::Folder {
            root: dir.path().into(),
            options: FolderOptions {
                check: Check::Decode,
                ..Default::default()
            },
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(name) && e.contains(expect), "{name}: {e}");
    }
}

#[test]
fn skip_policy_skips_counts_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_corpus(dir.path());
    let skip = FolderOptions {
        bad_files: BadFilePolicy::Skip,
        ..Default::default()
    };
    // Header check: header-level faults are skipped at open, the rest by the loader.
    let ds = open(&DataSpec::Folder {
        root: dir.path().into(),
        options: skip,
    })
    .unwrap();
    let n_header = corpus().iter().filter(|c| c.3).count();
    assert_eq!(ds.skipped.len(), n_header, "{:?}", ds.skipped);
    for s in &ds.skipped {
        assert!(bad.contains(&s.path) && !s.reason.is_empty(), "{s:?}");
    }
    let all = cnn_data::Split {
        samples: ds
            .train
            .samples
            .iter()
            .chain(&ds.test.samples)
            .cloned()
            .collect(),
        ..ds.train.clone()
    };
    assert_eq!(all.len(), 10 + (corpus().len() - n_header));
    let cfg = LoaderConfig {
        last_batch: LastBatch::Keep,
        ..LoaderConfig::eval(8, 4)
    };
    let loader = Loader::new(&all, cfg).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    let delivered: usize = batches.iter().map(|b| b.len()).sum();
    assert_eq!(delivered, 10);
    for b in &batches {
        assert_eq!(b.images.shape()[0], b.labels.len());
        assert_eq!(b.indices.len(), b.labels.len());
    }
    let late = loader.skipped();
    assert_eq!(late.len(), corpus().len() - n_header, "{late:?}");

    // Decode check: everything is caught at open.
    let ds = open(&DataSpec::Folder {
        root: dir.path().into(),
        options: FolderOptions {
            check: Check::Decode,
            ..skip
        },
    })
    .unwrap();
    assert_eq!(ds.skipped.len(), corpus().len());
    assert_eq!(ds.train.len() + ds.test.len(), 10);
}

#[test]
fn a_class_of_only_bad_files_is_an_error_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    class_tree(dir.path(), &["a"], 2);
    fs::create_dir(dir.path().join("b")).unwrap();
    fs::write(dir.path().join("b/x.jpg"), b"").unwrap();
    let e = open(&DataSpec::Folder {
        root: dir.path().into(),
        options: FolderOptions {
            bad_files: BadFilePolicy::Skip,
            ..Default::default()
        },
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no usable images") && e.contains("1 skipped"),
        "{e}"
    );
}

/// Every prefix of a valid JPEG and PNG, and a few bit flips, decode or fail cleanly.
#[test]
fn no_panic_on_any_prefix_or_bit_flip() {
    let p = Path::new("fuzz.bin");
    for bytes in [jpeg_bytes(17, 9), png_bytes(&pattern(17, 9, 3))] {
        assert!(decode_bytes(p, &bytes).is_ok());
        for cut in 0..bytes.len() {
            let r = decode_bytes(p, &bytes[..cut]);
            assert!(
                cut > bytes.len() / 2 || r.is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        for i in (0..bytes.len()).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = decode_bytes(p, &b);
        }
    }
}
