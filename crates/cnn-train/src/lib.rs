//! Training engine for classic CNNs on candle: a run is plain data ([`RunConfig`], saved as
//! `config.json`); [`fit`] trains it and returns a [`Report`] with one [`EpochRecord`] per
//! epoch (losses, accuracies, learning rate, timings, images/s, memory), writing metrics,
//! logs and atomic checkpoints that [`Start::Resume`] continues exactly. Optimisers follow
//! PyTorch's update rules; divergence is judged, not eyeballed.
//!
//! ```no_run
//! use cnn_train::{build_model, fit, open_data, Console, Display, RunConfig, Start};
//! let mut cfg = RunConfig::new("resnet18", cnn_data::DataSpec::folder("data/cifar10-mini"), "runs/x");
//! let data = open_data(&cfg)?;
//! cfg.num_classes = data.classes.len();
//! let mut console = Console::new(Display::Auto);
//! let stop = std::sync::atomic::AtomicBool::new(false);
//! let model = build_model(&cfg)?;
//! let report = fit(&cfg, &model, &data, Start::Fresh, &stop, &mut |e| console.handle(e))?;
//! println!("{}", report.verdict.describe());
//! # Ok::<(), cnn_train::TrainError>(())
//! ```

mod atomic;
mod cam;
pub mod checkpoint;
mod config;
mod console;
mod data;
mod divergence;
mod error;
mod evaluate;
mod finetune;
mod fit;
mod floats;
pub mod log;
pub mod memory;
mod metrics;
mod optim;
mod run;
mod schedule;
mod step;
mod tuning;

pub use cam::{PhotoCam, MIN_CAM_SIDE};
pub use checkpoint::Weights;
pub use config::{DataConfig, Device, InitFrom, RunConfig};
pub use console::{timing_line, Console, Display};
pub use data::{batches, eval_loader, eval_transform, open_data, skipped_files, to_tensors, Data};
pub use divergence::{is_stuck, judge, DivergenceRule, OnStuck, Verdict};
pub use error::TrainError;
pub use evaluate::{evaluate, Evaluation};
pub use fit::{build_model, dropout_seed, fit, Event, Report, Start, Stop};
pub use memory::Memory;
pub use metrics::{write_metrics, EpochRecord, Timing};
pub use optim::{Optimizer, OptimizerState};
pub use run::{open_run, open_run_with, top_k, Guess, TrainedRun};
pub use schedule::{Schedule, Warmup};
pub use step::{train_step, Step, StepTimes};
pub use tuning::{on_compute_pool, tune_for_training};
