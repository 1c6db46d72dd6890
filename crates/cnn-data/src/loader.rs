//! The loader: per-epoch shuffled order, rayon-parallel batch assembly, a bounded prefetch queue.
//!
//! Memory: an epoch keeps at most `prefetch` finished batches in its queue, one being
//! assembled and the one the caller holds, i.e. `prefetch + 2` batches of
//! `batch_size * 3 * image_size^2 * 4` bytes (19 MB each at 32 x 224^2), plus the decode
//! cache if one is on.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ndarray::Array4;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::cache::{DecodeCache, Store};
use crate::dataset::{Sample, Skipped, Split};
use crate::error::DataError;
use crate::normalise::{write_chw, Normalise};
use crate::rng::{Purpose, Stream};
use crate::spec::BadFilePolicy;
use crate::transform::Transform;

/// Sample order within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// A fresh permutation each epoch, drawn from `(seed, epoch)`.
    Shuffled,
    /// Split order, every epoch.
    Sequential,
}

/// What to do with a last batch smaller than `batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastBatch {
    Keep,
    Drop,
}

/// Loader settings: plain data, serialisable next to a run's other settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Output images are `image_size x image_size`.
    pub image_size: u32,
    pub transform: Transform,
    pub normalise: Normalise,
    /// Seeds the shuffle and every augmentation draw.
    pub seed: u64,
    pub order: Order,
    pub last_batch: LastBatch,
    /// Finished batches queued ahead of the consumer.
    pub prefetch: usize,
    pub cache: DecodeCache,
    /// Shrink decoded images whose shorter side exceeds this before transforming (and
    /// caching). `None` keeps full resolution, exactly as torchvision does.
    pub working_size: Option<u32>,
    /// Worker threads for this loader; `None` uses rayon's default (all cores, or
    /// `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
}

impl LoaderConfig {
    /// Training defaults: RandomResizedCrop + flip, shuffled, last partial batch dropped,
    /// ImageNet normalisation, prefetch 4, no cache.
    pub fn train(image_size: u32, batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            image_size,
            transform: Transform::train(),
            normalise: Normalise::IMAGENET,
            seed: 0,
            order: Order::Shuffled,
            last_batch: LastBatch::Drop,
            prefetch: 4,
            cache: DecodeCache::Off,
            working_size: None,
            threads: None,
        }
    }

    /// Evaluation defaults: resize shorter side + centre crop, in order, every sample kept.
    pub fn eval(image_size: u32, batch_size: usize) -> Self {
        LoaderConfig {
            transform: Transform::eval(image_size),
            order: Order::Sequential,
            last_batch: LastBatch::Keep,
            ..LoaderConfig::train(image_size, batch_size)
        }
    }
}

struct Inner {
    samples: Vec<Sample>,
    bad_files: BadFilePolicy,
    config: LoaderConfig,
    lut: [[f32; 256]; 3],
    pool: rayon::ThreadPool,
    store: Store,
    skipped: Mutex<BTreeMap<PathBuf, String>>,
}

/// Turns a split into batches. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.inner.samples.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Loader {
    /// Checks the settings against the split and sets up the thread pool and cache.
    pub fn new(split: &Split, config: LoaderConfig) -> Result<Self, DataError> {
        let c = &config;
        if c.batch_size == 0 || c.image_size == 0 {
            return Err(DataError::Config(format!(
                "batch_size and image_size must be positive (got {} and {})",
                c.batch_size, c.image_size
            )));
        }
        if c.threads == Some(0) || c.working_size == Some(0) {
            return Err(DataError::Config(
                "threads and working_size must be positive".into(),
            ));
        }
        if let Transform::Eval { resize } = c.transform {
            if resize == 0 {
                return Err(DataError::Config("Eval resize must be positive".into()));
            }
        }
        if split.is_empty() {
            return Err(DataError::Config("the split has no images".into()));
        }
        if c.last_batch == LastBatch::Drop && split.len() < c.batch_size {
            return Err(DataError::Config(format!(
                "only {} images, fewer than one batch of {} (with LastBatch::Drop no batch \
                 would be left): lower batch_size or use LastBatch::Keep",
                split.len(),
                c.batch_size
            )));
        }
        let mut pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("cnn-data-{i}"));
        if let Some(n) = c.threads {
            pool = pool.num_threads(n);
        }
        let pool = pool
            .build()
            .map_err(|e| DataError::Config(format!("thread pool: {e}")))?;
        Ok(Loader {
            inner: Arc::new(Inner {
                samples: split.samples.clone(),
                bad_files: split.bad_files,
                lut: c.normalise.lut(),
                store: Store::new(&c.cache, split.len())?,
                pool,
                config,
                skipped: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.inner.samples.len(), self.inner.config.batch_size);
        match self.inner.config.last_batch {
            LastBatch::Drop => n / b,
            LastBatch::Keep => n.div_ceil(b),
        }
    }

    /// Samples delivered per epoch (fewer than the split when the last batch is dropped).
    pub fn len(&self) -> usize {
        let (n, b) = (self.inner.samples.len(), self.inner.config.batch_size);
        match self.inner.config.last_batch {
            LastBatch::Drop => n / b * b,
            LastBatch::Keep => n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The epoch's sample order (split indices).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.inner.samples.len()).collect();
        if self.inner.config.order == Order::Shuffled {
            Stream::new(self.inner.config.seed, Purpose::Shuffle, epoch, 0).shuffle(&mut order);
        }
        order
    }

    /// Batch `index` of `epoch`, assembled now on the loader's threads (no prefetch).
    pub fn batch(&self, epoch: u64, index: usize) -> Result<Batch, DataError> {
        if index >= self.num_batches() {
            return Err(DataError::Config(format!(
                "batch {index} out of range ({} batches)",
                self.num_batches()
            )));
        }
        self.inner.build(&self.order(epoch), epoch, index)
    }

    /// The batches of `epoch`, assembled ahead on a background thread. Stops after the
    /// first error. Dropping the iterator early stops the work.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let (tx, rx) = sync_channel(self.inner.config.prefetch);
        let inner = self.inner.clone();
        let num_batches = self.num_batches();
        let order = self.order(epoch);
        let handle = std::thread::Builder::new()
            .name("cnn-data-prefetch".into())
            .spawn(move || {
                for b in 0..num_batches {
                    let result = inner.build(&order, epoch, b);
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Epoch {
            rx: Some(rx),
            handle: Some(handle),
            remaining: num_batches,
        }
    }

    /// Files that failed to decode and were left out under [`BadFilePolicy::Skip`].
    pub fn skipped(&self) -> Vec<Skipped> {
        let map = self.inner.skipped.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(path, reason)| Skipped {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect()
    }
}

impl Inner {
    fn build(&self, order: &[usize], epoch: u64, b: usize) -> Result<Batch, DataError> {
        let bs = self.config.batch_size;
        let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
        let s = self.config.image_size as usize;
        let per = 3 * s * s;
        // Uninitialised: every element is written below (failed samples with zeros), which
        // saves zeroing 19 MB per batch first.
        let mut data: Vec<f32> = Vec::with_capacity(idx.len() * per);
        let results: Vec<Result<(), DataError>> = self.pool.install(|| {
            data.spare_capacity_mut()[..idx.len() * per]
                .par_chunks_mut(per)
                .zip(idx.par_iter())
                .map(|(out, &i)| {
                    let r = self.one(i, epoch, out);
                    if r.is_err() {
                        out.fill(MaybeUninit::new(0.0));
                    }
                    r
                })
                .collect()
        });
        // SAFETY: each chunk was fully written by `one` (write_chw writes every element) or
        // zero-filled after an error.
        unsafe { data.set_len(idx.len() * per) };
        let mut keep = Vec::with_capacity(idx.len());
        for (k, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => keep.push(k),
                Err(DataError::BadFile { path, what }) if self.bad_files == BadFilePolicy::Skip => {
                    let mut map = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
                    map.insert(path, what);
                }
                Err(e) => return Err(e),
            }
        }
        if keep.len() < idx.len() {
            for (dst, &k) in keep.iter().enumerate() {
                data.copy_within(k * per..(k + 1) * per, dst * per);
            }
            data.truncate(keep.len() * per);
        }
        let indices: Vec<usize> = keep.iter().map(|&k| idx[k]).collect();
        Ok(Batch {
            images: Array4::from_shape_vec((keep.len(), 3, s, s), data)
                .expect("buffer sized for the batch"),
            labels: indices.iter().map(|&i| self.samples[i].label).collect(),
            indices,
        })
    }

    fn one(&self, i: usize, epoch: u64, out: &mut [MaybeUninit<f32>]) -> Result<(), DataError> {
        let c = &self.config;
        let img = self.store.get(i, &self.samples[i], c.working_size)?;
        let (img, mirror) =
            c.transform
                .apply_unflipped(&img, c.image_size, c.seed, epoch, i as u64);
        write_chw(&img, &self.lut, mirror, out);
        Ok(())
    }
}

/// One epoch's batches, in order. Iterating blocks until the next batch is ready.
pub struct Epoch {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for Epoch {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.rx.as_ref()?.recv().ok();
        match &item {
            Some(Ok(_)) => self.remaining = self.remaining.saturating_sub(1),
            _ => self.remaining = 0,
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the receiver makes the producer's next send fail, so it stops.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
