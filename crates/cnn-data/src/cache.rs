//! The decode cache: a sample's "working image" (decoded 8-bit RGB, optionally shrunk) kept in memory or on disk.
//!
//! The working image is what every transform starts from, with the cache on or off, so the
//! cache changes speed only, never pixels. On disk each image is one file
//! `<dir>/<key>.rgb8` (a 16-byte header, then the raw pixels); the key hashes the file's path,
//! size and modification time with the working size, so a changed file is decoded afresh. A
//! damaged cache file is treated as a miss and rewritten.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::dataset::{Origin, Sample};
use crate::decode::decode_file;
use crate::error::DataError;
use crate::resize::cap_shorter;
use crate::rgb::Rgb8;
use crate::synthetic;

/// Where decoded images are kept between epochs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DecodeCache {
    /// Decode every time (default).
    #[default]
    Off,
    /// Keep every decoded working image in RAM (`width * height * 3` bytes each).
    Memory,
    /// Keep them as raw files in this folder (created if missing), reused across runs.
    Disk(PathBuf),
}

const MAGIC: &[u8; 8] = b"CNNRGB8\x01";

/// The cache as the loader holds it.
pub(crate) enum Store {
    Off,
    Memory(Vec<OnceLock<Arc<Rgb8>>>),
    Disk(PathBuf),
}

/// Decodes (or draws) a sample's working image: RGB8, shorter side at most `working`.
pub(crate) fn working_image(sample: &Sample, working: Option<u32>) -> Result<Arc<Rgb8>, DataError> {
    let img = match &sample.origin {
        Origin::File(path) => decode_file(path)?,
        Origin::Pixels(px) => match working {
            Some(w) if px.width.min(px.height) > w => (**px).clone(),
            _ => return Ok(px.clone()),
        },
        Origin::Synthetic {
            seed,
            id,
            class,
            size,
        } => synthetic::generate(*seed, *id, *class, *size),
    };
    Ok(Arc::new(match working {
        Some(w) => cap_shorter(img, w),
        None => img,
    }))
}

/// FNV-1a, 64 bit: a stable hash for cache keys.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn disk_key(sample: &Sample, working: Option<u32>) -> Option<u64> {
    let w = working.unwrap_or(0).to_le_bytes();
    match &sample.origin {
        Origin::File(path) => {
            let meta = std::fs::metadata(path).ok()?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            Some(fnv(&[
                abs.as_os_str().as_encoded_bytes(),
                &meta.len().to_le_bytes(),
                &mtime.to_le_bytes(),
                &w,
            ]))
        }
        Origin::Synthetic {
            seed,
            id,
            class,
            size,
        } => Some(fnv(&[
            b"synthetic",
            &seed.to_le_bytes(),
            &id.to_le_bytes(),
            &class.to_le_bytes(),
            &size.to_le_bytes(),
            &w,
        ])),
        Origin::Pixels(_) => None,
    }
}

fn read_entry(path: &Path) -> Option<Rgb8> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return None;
    }
    let w = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let h = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    Rgb8::new(w, h, bytes[16..].to_vec())
}

fn write_entry(path: &Path, img: &Rgb8) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(16 + img.pixels.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&img.width.to_le_bytes());
    bytes.extend_from_slice(&img.height.to_le_bytes());
    bytes.extend_from_slice(&img.pixels);
    let tmp = path.with_extension(
        format!(
            "{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let err = |source| DataError::Cache {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, &bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Store {
    pub(crate) fn new(cache: &DecodeCache, len: usize) -> Result<Store, DataError> {
        Ok(match cache {
            DecodeCache::Off => Store::Off,
            DecodeCache::Memory => Store::Memory((0..len).map(|_| OnceLock::new()).collect()),
            DecodeCache::Disk(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DataError::Cache {
                    path: dir.clone(),
                    source,
                })?;
                Store::Disk(dir.clone())
            }
        })
    }

    /// The working image of sample `index`, from the cache when it holds it.
    pub(crate) fn get(
        &self,
        index: usize,
        sample: &Sample,
        working: Option<u32>,
    ) -> Result<Arc<Rgb8>, DataError> {
        match self {
            Store::Off => working_image(sample, working),
            Store::Memory(cells) => {
                if let Some(img) = cells[index].get() {
                    return Ok(img.clone());
                }
                let img = working_image(sample, working)?;
                let _ = cells[index].set(img.clone());
                Ok(img)
            }
            Store::Disk(dir) => {
                let Some(key) = disk_key(sample, working) else {
                    return working_image(sample, working);
                };
                let path = dir.join(format!("{key:016x}.rgb8"));
                if let Some(img) = read_entry(&path) {
                    return Ok(Arc::new(img));
                }
                let img = working_image(sample, working)?;
                write_entry(&path, &img)?;
                Ok(img)
            }
        }
    }
}
