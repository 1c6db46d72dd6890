//! A run as plain data: every setting of one training run in one struct, saved as
//! `config.json` beside the run's outputs. Options that belong together are one enum.

use crate::divergence::DivergenceRule;
use crate::error::{Result, TrainError};
use crate::optim::Optimizer;
use crate::schedule::{Schedule, Warmup};
use cnn_data::{Augment, DataSpec, DecodeCache, LastBatch, Normalise};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where tensors live and the arithmetic runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl Device {
    /// CUDA device 0 when this build has CUDA support and a GPU answers, else the CPU.
    pub fn auto() -> Device {
        if cfg!(feature = "cuda") && candle_core::Device::new_cuda(0).is_ok() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    /// The candle device; CUDA without the `cuda` feature is a clear error.
    pub fn open(&self) -> Result<candle_core::Device> {
        match *self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            Device::Cuda(i) => candle_core::Device::new_cuda(i).map_err(|e| {
                let hint = if cfg!(feature = "cuda") {
                    ""
                } else {
                    " (this build has no CUDA support: rebuild with the cuda feature, e.g. `cargo build --release -p cnn-cli --features cuda`)"
                };
                TrainError::Config(format!("cannot open CUDA device {i}: {e}{hint}"))
            }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    /// `auto` ([`Device::auto`]), `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::auto()),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

/// Where the images come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// The source to open (class folders, CIFAR-10 files, synthetic...).
    pub source: DataSpec,
    /// Training-time augmentation (the test split always gets the eval transform).
    pub augment: Augment,
    /// Eval transform: shorter side resized to this, then a centre crop of `image_size`.
    /// `None` resizes to `image_size` (keeps the whole shorter side).
    pub eval_resize: Option<u32>,
    pub normalise: Normalise,
    /// Whether the last, smaller training batch is used (PyTorch's default) or dropped.
    pub last_batch: LastBatch,
    /// Decoded images kept between epochs (memory or disk) or decoded each time.
    pub cache: DecodeCache,
    /// Batches assembled ahead of the trainer.
    pub prefetch: usize,
    /// Loader threads; `None` uses all cores.
    pub threads: Option<usize>,
}

impl DataConfig {
    /// `source` with the assignment's preparation: no augmentation, ImageNet normalisation,
    /// every image used, images decoded afresh each epoch.
    pub fn new(source: DataSpec) -> Self {
        Self {
            source,
            augment: Augment::None,
            eval_resize: None,
            normalise: Normalise::IMAGENET,
            last_batch: LastBatch::Keep,
            cache: DecodeCache::Off,
            prefetch: 4,
            threads: None,
        }
    }
}

/// Every setting of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Architecture name (`alexnet`, `alexnet-d2l`, `resnet18`, `resnet34`).
    pub arch: String,
    /// Output classes; must equal the data's class count.
    pub num_classes: usize,
    /// Side of the square input, pixels.
    pub image_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// Base learning rate.
    pub lr: f64,
    pub schedule: Schedule,
    /// Linear warm-up before the schedule, if any.
    pub warmup: Option<Warmup>,
    /// L2 (SGD, Adam) or decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Seeds the initial weights, the shuffle, augmentation and dropout.
    pub seed: u64,
    pub device: Device,
    /// Compute threads (candle's CPU kernels); `None` uses all cores.
    pub threads: Option<usize>,
    /// Print `[Epoch e, Batch b] loss: ...` every this many batches (0: never).
    pub log_every: usize,
    /// Save a checkpoint after every this many epochs (1: each), and always after the last
    /// one, when training stops early and when it is interrupted. Where epochs take seconds
    /// and the checkpoint is large (d2l AlexNet's is 0.56 GB), saving each costs as much as
    /// the epoch; a crash then loses at most this many epochs, which a resume repeats exactly.
    #[serde(default = "every_epoch")]
    pub checkpoint_every: usize,
    /// The run folder: config, classes, metrics, log, checkpoints.
    pub out: PathBuf,
    pub data: DataConfig,
    pub divergence: DivergenceRule,
    /// Initial weights from a file instead of `seed` alone (fine-tuning); a resumed run
    /// takes its checkpoint's and ignores this.
    #[serde(default)]
    pub init_from: Option<InitFrom>,
    /// The learning rate of every tensor but the classifier, as a factor of the run's:
    /// 1 trains the whole network alike, 0 freezes the backbone (its weights are not
    /// updated; BatchNorm's running statistics still follow the data, as in PyTorch's
    /// train mode).
    #[serde(default = "full_rate")]
    pub backbone_lr_factor: f64,
}

fn full_rate() -> f64 {
    1.0
}

fn every_epoch() -> usize {
    1
}

/// Where a run's initial weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitFrom {
    /// As the user gave it: a path, or `hub:OWNER/NAME/FILE`.
    pub source: String,
    /// The file read (safetensors or PyTorch `.pth`), for a hub file its cache snapshot's.
    pub path: PathBuf,
}

impl RunConfig {
    /// The assignment's settings (Adam, lr 1e-4, 10 epochs, batch 64, 224 px, constant lr)
    /// for `arch` on `source`, writing to `out`. `num_classes` is set when the data is opened.
    pub fn new(arch: &str, source: DataSpec, out: impl Into<PathBuf>) -> Self {
        Self {
            arch: arch.to_string(),
            num_classes: 0,
            image_size: 224,
            epochs: 10,
            batch_size: 64,
            optimizer: Optimizer::adam(),
            lr: 1e-4,
            schedule: Schedule::Constant,
            warmup: None,
            weight_decay: 0.0,
            seed: 0,
            device: Device::Cpu,
            threads: None,
            log_every: 100,
            checkpoint_every: 1,
            out: out.into(),
            data: DataConfig::new(source),
            divergence: DivergenceRule::default(),
            init_from: None,
            backbone_lr_factor: 1.0,
        }
    }

    /// Checks every setting that can be checked without the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        let spec = cnn_models::find_arch(&self.arch)?;
        if self.image_size < spec.min_image_size {
            return bad(format!(
                "{} needs an image size of at least {}, got {}",
                spec.name, spec.min_image_size, self.image_size
            ));
        }
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.checkpoint_every == 0 {
            return bad("the checkpoint interval must be at least 1 epoch".into());
        }
        if self.threads == Some(0) || self.data.threads == Some(0) {
            return bad("thread counts must be at least 1".into());
        }
        if self
            .data
            .eval_resize
            .is_some_and(|r| (r as usize) < self.image_size)
        {
            return bad(format!(
                "eval resize must be at least the image size {}",
                self.image_size
            ));
        }
        if !(self.backbone_lr_factor.is_finite() && self.backbone_lr_factor >= 0.0) {
            return bad(format!(
                "the backbone's learning-rate factor must be >= 0, got {}",
                self.backbone_lr_factor
            ));
        }
        self.optimizer.validate(self.lr, self.weight_decay)?;
        self.schedule.validate(self.warmup.as_ref(), self.epochs)
    }

    /// The learning rate of epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.schedule
            .lr(self.lr, self.warmup.as_ref(), epoch, self.epochs)
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn devices_parse_by_name() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda:2".parse::<Device>(), Ok(Device::Cuda(2)));
        // Without the cuda feature, auto can only be the CPU; with it, whichever answers.
        let auto = "Auto".parse::<Device>().unwrap();
        assert_eq!(auto, Device::auto());
        if !cfg!(feature = "cuda") {
            assert_eq!(auto, Device::Cpu);
        }
        let err = "tpu".parse::<Device>().unwrap_err();
        assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
    }
}
