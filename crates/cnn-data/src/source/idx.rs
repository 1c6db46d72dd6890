//! MNIST / Fashion-MNIST IDX files (plain or gzip), parsed by hand (see `cifar.rs` for why not `candle-datasets`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataset::{Dataset, Origin, Sample};
use crate::error::DataError;
use crate::rgb::Rgb8;

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Largest decompressed IDX file accepted (the MNIST training images are 47 MB).
const MAX_IDX_BYTES: u64 = 1 << 30;

/// Reads a file, gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::path(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("bad gzip data: {e}")))?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(DataError::format(path, "decompresses to more than 1 GiB"));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file of unsigned bytes: returns its dimensions and data.
pub(crate) fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            "not an IDX file (bad magic number)",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(DataError::format(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let data = &bytes[header..];
    if expected != Some(data.len()) {
        return Err(DataError::format(
            path,
            format!(
                "IDX header declares dimensions {dims:?} but {} data bytes follow",
                data.len()
            ),
        ));
    }
    Ok((dims, data))
}

fn find(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    stems
        .iter()
        .flat_map(|s| [dir.join(s), dir.join(format!("{s}.gz"))])
        .find(|p| p.is_file())
}

fn load_pair(dir: &Path, prefix: &str) -> Result<Vec<Sample>, DataError> {
    let images = find(
        dir,
        &[
            &format!("{prefix}-images-idx3-ubyte"),
            &format!("{prefix}-images.idx3-ubyte"),
        ],
    )
    .ok_or_else(|| DataError::layout(dir, format!("missing {prefix}-images-idx3-ubyte[.gz]")))?;
    let labels = find(
        dir,
        &[
            &format!("{prefix}-labels-idx1-ubyte"),
            &format!("{prefix}-labels.idx1-ubyte"),
        ],
    )
    .ok_or_else(|| DataError::layout(dir, format!("missing {prefix}-labels-idx1-ubyte[.gz]")))?;
    let img_bytes = read_maybe_gz(&images)?;
    let lab_bytes = read_maybe_gz(&labels)?;
    let (idims, idata) = parse_idx(&images, &img_bytes)?;
    let (ldims, ldata) = parse_idx(&labels, &lab_bytes)?;
    if idims.len() != 3 || idims[1] == 0 || idims[2] == 0 {
        return Err(DataError::format(
            &images,
            format!("expected N x rows x cols, got {idims:?}"),
        ));
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(DataError::format(
            &labels,
            format!("{ldims:?} labels for {} images", idims[0]),
        ));
    }
    let (rows, cols) = (idims[1], idims[2]);
    idata
        .chunks_exact(rows * cols)
        .zip(ldata)
        .enumerate()
        .map(|(i, (px, &label))| {
            if label >= 10 {
                return Err(DataError::format(
                    &labels,
                    format!("label {label} at index {i} (expected 0-9)"),
                ));
            }
            Ok(Sample {
                origin: Origin::Pixels(Arc::new(Rgb8::from_grey(cols as u32, rows as u32, px))),
                label: label as u32,
            })
        })
        .collect()
}

pub(crate) fn open(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::path(dir, "IDX folder does not exist"));
    }
    let train = load_pair(dir, "train")?;
    let test = load_pair(dir, "t10k")?;
    let fashion = dir
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("fashion");
    let names: Vec<String> = if fashion {
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    };
    Ok(Dataset::decoded(
        format!(
            "{} IDX files in {}",
            if fashion { "Fashion-MNIST" } else { "MNIST" },
            dir.display()
        ),
        names,
        train,
        test,
    ))
}
