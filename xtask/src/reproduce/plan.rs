//! The assignment's experiments and the three profiles that size them for the hardware.

use cnn_data::{DataSpec, DecodeCache};
use cnn_train::{Device, OnStuck, RunConfig};
use std::path::{Path, PathBuf};

/// How big a reproduction to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// The report's settings exactly: 224 px, all the data (for a GPU, or a patient CPU).
    Assignment,
    /// All the data at 100 px, the smallest round size at which the d2l AlexNet's classifier
    /// sees a 2x2 map (from 97 px; at 96 its last map is 1x1): about an hour on 2 cores.
    Cpu,
    /// A class-balanced subset at the `cpu` profile's size, every run repeated over three
    /// seeds: minutes on 2 cores.
    Quick,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Assignment => "assignment",
            Profile::Cpu => "cpu",
            Profile::Quick => "quick",
        }
    }

    /// Image side, batch size and images per class (train, test; `None` = all).
    pub fn sizes(self) -> Sizes {
        match self {
            Profile::Assignment => Sizes {
                image_size: 224,
                batch_size: 64,
                per_class: None,
            },
            Profile::Cpu => Sizes {
                image_size: 100,
                batch_size: 64,
                per_class: None,
            },
            Profile::Quick => Sizes {
                image_size: 100,
                batch_size: 64,
                per_class: Some((16, 20)),
            },
        }
    }

    /// The training seeds each run is repeated with. The quick profile's runs are small
    /// enough for the seed alone to move their accuracies by points, so it trains each run
    /// once per seed and the report gives the mean and spread; the longer profiles train
    /// once.
    pub fn seeds(self) -> &'static [u64] {
        match self {
            Profile::Quick => &[0, 1, 2],
            Profile::Assignment | Profile::Cpu => &[0],
        }
    }

    /// Epochs between checkpoints. The quick profile's epochs take seconds, and saving d2l
    /// AlexNet's 0.56 GB checkpoint after each took about as long as the epoch; the last
    /// epoch, an early stop and a Ctrl-C are always saved.
    pub fn checkpoint_every(self) -> usize {
        match self {
            Profile::Quick => 5,
            Profile::Assignment | Profile::Cpu => 1,
        }
    }

    /// Where decoded images stay between epochs. The `cpu` and `quick` profiles keep them in
    /// memory at the 100 px the networks see: decoding and shrinking every JPEG again each
    /// epoch took ~9 % of a d2l AlexNet epoch's 2 cores (50 s -> 46 s on the 2-vCPU Xeon the
    /// `cpu` report names), for ~0.25 GB more resident memory. The `assignment` profile
    /// decodes every epoch: at 224 px the cache would hold ~2.6 GB for the course's 13,000
    /// images.
    pub fn decode_cache(self) -> DecodeCache {
        match self {
            Profile::Cpu | Profile::Quick => DecodeCache::Memory,
            Profile::Assignment => DecodeCache::Off,
        }
    }

    /// The folder that holds one seed's runs: `out` itself when the profile trains once,
    /// else `out/seed-<seed>`.
    pub fn seed_folder(self, out: &Path, seed: u64) -> PathBuf {
        match self.seeds().len() {
            1 => out.to_path_buf(),
            _ => out.join(format!("seed-{seed}")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub image_size: usize,
    pub batch_size: usize,
    /// Images per class kept for (train, test), or all of them.
    pub per_class: Option<(usize, usize)>,
}

/// One training run of the assignment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Folder name under the output directory.
    pub key: &'static str,
    /// The assignment's task number.
    pub task: &'static str,
    pub arch: String,
    pub epochs: usize,
    pub lr: f64,
    /// A run whose checkpoint this one continues (same seed and data order, so its first
    /// epochs are exactly that run's: the 20-epoch run extends the 10-epoch one).
    pub continues: Option<&'static str>,
    /// Stop once the divergence rule judges the run not converging (task 3's lr 5e-3):
    /// the verdict is the finding, and the epochs after it only repeat chance. Not in the
    /// `assignment` profile, which runs every epoch the report did.
    pub stop_when_stuck: bool,
}

/// Tasks 1-4: AlexNet 10 and 20 epochs at 1e-4, 10 epochs at 5e-3, ResNet18 and ResNet34.
pub fn experiments(alexnet: &str) -> Vec<Experiment> {
    let e = |key, task, arch: &str, epochs, lr, continues| Experiment {
        key,
        task,
        arch: arch.to_string(),
        epochs,
        lr,
        continues,
        stop_when_stuck: task == "3",
    };
    vec![
        e("1-alexnet-10ep", "1", alexnet, 10, 1e-4, None),
        e(
            "2-alexnet-20ep",
            "2",
            alexnet,
            20,
            1e-4,
            Some("1-alexnet-10ep"),
        ),
        e("3-alexnet-lr5e-3", "3", alexnet, 10, 5e-3, None),
        e("4-resnet18", "4", "resnet18", 10, 1e-4, None),
        e("4-resnet34", "4", "resnet34", 10, 1e-4, None),
    ]
}

/// The run config of `exp`: the assignment's settings (Adam, constant lr, no augmentation)
/// at the profile's sizes, trained with `seed` (weights, shuffle order, dropout; the split is
/// the data spec's own, the same for every seed), writing to `<seed folder>/<key>`.
pub fn config(
    exp: &Experiment,
    profile: Profile,
    source: &DataSpec,
    device: Device,
    out: &Path,
    seed: u64,
) -> RunConfig {
    let sizes = profile.sizes();
    let folder = profile.seed_folder(out, seed).join(exp.key);
    let mut cfg = RunConfig::new(&exp.arch, source.clone(), folder);
    cfg.seed = seed;
    if exp.stop_when_stuck && profile != Profile::Assignment {
        cfg.divergence.on_stuck = OnStuck::Stop;
    }
    cfg.epochs = exp.epochs;
    cfg.lr = exp.lr;
    cfg.image_size = sizes.image_size;
    cfg.batch_size = sizes.batch_size;
    cfg.device = device;
    cfg.log_every = 100;
    cfg.checkpoint_every = profile.checkpoint_every();
    cfg.data.cache = profile.decode_cache();
    cfg
}
