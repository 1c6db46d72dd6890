//! Flags several commands share: `--device`'s help and `--weights`.

use cnn_train::Weights;

/// The help text of every `--device` flag.
pub const DEVICE_HELP: &str =
    "Device: auto (CUDA when this build has it, --features cuda, and a GPU \
answers; else the CPU), cpu, cuda or cuda:N";

/// `--weights`: which of a run's weights to use.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WeightsArg {
    /// Where training stopped (the current checkpoint).
    Last,
    /// The epoch with the highest test accuracy (kept beside the last).
    Best,
}

impl From<WeightsArg> for Weights {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::Last => Weights::Last,
            WeightsArg::Best => Weights::Best,
        }
    }
}
