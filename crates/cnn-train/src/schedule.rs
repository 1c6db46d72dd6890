//! Learning-rate schedules, stepped once per epoch as PyTorch's `lr_scheduler`s usually are:
//! constant, step decay, cosine annealing, each with an optional linear warm-up first.

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// How the learning rate changes after the warm-up (if any).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout (the assignment's setting).
    #[default]
    Constant,
    /// `StepLR`: multiply by `gamma` every `every` epochs.
    Step { every: usize, gamma: f64 },
    /// `CosineAnnealingLR` over the epochs after warm-up, from the base rate down to `min_lr`.
    Cosine { min_lr: f64 },
}

/// `LinearLR` before the schedule: the rate climbs from `start_factor * lr` to `lr` over
/// `epochs` epochs (epoch `e < epochs` uses `start_factor + (1 - start_factor) * e / epochs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    pub epochs: usize,
    pub start_factor: f64,
}

impl Schedule {
    /// The learning rate of epoch `epoch` (0-based) of a run of `epochs` epochs.
    pub fn lr(&self, base_lr: f64, warmup: Option<&Warmup>, epoch: usize, epochs: usize) -> f64 {
        let warm = warmup.map_or(0, |w| w.epochs);
        if let Some(w) = warmup {
            if epoch < w.epochs {
                return base_lr
                    * (w.start_factor + (1.0 - w.start_factor) * epoch as f64 / w.epochs as f64);
            }
        }
        let t = epoch - warm;
        match *self {
            Schedule::Constant => base_lr,
            Schedule::Step { every, gamma } => base_lr * gamma.powi((t / every.max(1)) as i32),
            Schedule::Cosine { min_lr } => {
                let span = epochs.saturating_sub(warm).max(1) as f64;
                min_lr
                    + (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * t as f64 / span).cos())
                        / 2.0
            }
        }
    }

    pub fn validate(&self, warmup: Option<&Warmup>, epochs: usize) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        match *self {
            Schedule::Step { every: 0, .. } => {
                return bad("step schedule needs every >= 1 epoch".into())
            }
            Schedule::Step { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => {
                return bad(format!("step schedule needs gamma > 0, got {gamma}"))
            }
            Schedule::Cosine { min_lr } if !(min_lr.is_finite() && min_lr >= 0.0) => {
                return bad(format!("cosine schedule needs min_lr >= 0, got {min_lr}"))
            }
            _ => {}
        }
        if let Some(w) = warmup {
            if w.epochs == 0 || w.epochs >= epochs.max(1) {
                return bad(format!(
                    "warm-up must last 1..{} epochs (fewer than the run), got {}",
                    epochs, w.epochs
                ));
            }
            if !(w.start_factor > 0.0 && w.start_factor <= 1.0) {
                return bad(format!(
                    "warm-up start factor must be in (0, 1], got {}",
                    w.start_factor
                ));
            }
        }
        Ok(())
    }
}
