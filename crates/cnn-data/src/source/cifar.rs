//! CIFAR-10 binary batches (`data_batch_1..5.bin`, `test_batch.bin`), parsed by hand.
//!
//! Why not `candle-datasets`: it returns candle `Tensor`s (this crate must not depend on
//! candle), and it pulls in `parquet` and `tokenizers`, minutes of extra compile time on a
//! 2-core CI for a format that is one label byte plus 3,072 planar pixel bytes per record.

use std::path::Path;
use std::sync::Arc;

use crate::dataset::{Dataset, Origin, Sample};
use crate::error::DataError;
use crate::rgb::Rgb8;

/// CIFAR-10's class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const RECORD: usize = 1 + 3 * 32 * 32;

/// Parses one batch file: records of one label byte and 32x32 R, G, B planes.
pub(crate) fn parse_batch(path: &Path, bytes: &[u8]) -> Result<Vec<Sample>, DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::format(
            path,
            format!(
                "length {} is not a positive multiple of {RECORD} (1 label byte + 3072 pixel bytes)",
                bytes.len()
            ),
        ));
    }
    bytes
        .chunks_exact(RECORD)
        .enumerate()
        .map(|(i, rec)| {
            let label = rec[0];
            if label >= 10 {
                return Err(DataError::format(
                    path,
                    format!("record {i} has label {label} (CIFAR-10 labels are 0-9)"),
                ));
            }
            let (r, g, b) = (&rec[1..1025], &rec[1025..2049], &rec[2049..3073]);
            let pixels = (0..1024).flat_map(|p| [r[p], g[p], b[p]]).collect();
            Ok(Sample {
                origin: Origin::Pixels(Arc::new(Rgb8 {
                    width: 32,
                    height: 32,
                    pixels,
                })),
                label: label as u32,
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::path(path, e))?;
    parse_batch(path, &bytes)
}

pub(crate) fn open(dir: &Path) -> Result<Dataset, DataError> {
    let nested = dir.join("cifar-10-batches-bin");
    let base = if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    if !base.is_dir() {
        return Err(DataError::path(dir, "CIFAR-10 folder does not exist"));
    }
    let mut train = Vec::new();
    for k in 1..=5 {
        let p = base.join(format!("data_batch_{k}.bin"));
        if p.is_file() {
            train.extend(read(&p)?);
        }
    }
    let test_path = base.join("test_batch.bin");
    if train.is_empty() || !test_path.is_file() {
        return Err(DataError::layout(
            &base,
            "expected CIFAR-10 binary batches data_batch_1.bin .. data_batch_5.bin and test_batch.bin",
        ));
    }
    let test = read(&test_path)?;
    let names: Vec<String> = match std::fs::read_to_string(base.join("batches.meta.txt")) {
        Ok(t) => t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    };
    let names = if names.len() == 10 {
        names
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    };
    Ok(Dataset::decoded(
        format!("CIFAR-10 binary batches in {}", base.display()),
        names,
        train,
        test,
    ))
}
