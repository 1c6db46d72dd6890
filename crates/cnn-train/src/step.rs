//! One training step on a batch: forward in train mode, mean cross-entropy, backward, the
//! optimiser's update, each phase timed. `fit` and `cargo xtask bench` both run this.

use crate::error::Result;
use crate::optim::OptimizerState;
use candle_core::{DType, Tensor};
use cnn_models::{Model, Pass};
use std::time::Instant;

/// Seconds a step spent in each phase, the device synchronised at each boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Forward pass, loss, and reading the loss and the correct count back.
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The weights were updated.
    Updated {
        /// Mean cross-entropy of the batch before the update.
        loss: f64,
        /// Images of the batch whose arg-max was the label, before the update.
        correct: u64,
        times: StepTimes,
    },
    /// The loss was not finite: no gradient was taken and the weights are unchanged.
    Diverged { loss: f64 },
}

/// Trains `model` one step on images `x` (NCHW) with class indices `labels`: dropout masks
/// from `dropout_seed`, then `opt`'s update at learning rate `lr`.
pub fn train_step(
    model: &Model,
    opt: &mut OptimizerState,
    (x, labels): (&Tensor, &Tensor),
    lr: f64,
    dropout_seed: u64,
) -> Result<Step> {
    let device = model.device();
    let t0 = Instant::now();
    let logits = model.forward(x, &Pass::train(dropout_seed))?;
    let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
    // f64 for a float64 model (the precision references); f32 widened otherwise.
    let loss_value = match loss.dtype() {
        DType::F64 => loss.to_scalar::<f64>()?,
        _ => loss.to_scalar::<f32>()? as f64,
    };
    let correct = count_correct(&logits, labels)?;
    let t1 = Instant::now();
    if !loss_value.is_finite() {
        return Ok(Step::Diverged { loss: loss_value });
    }
    let grads = loss.backward()?;
    device.synchronize()?;
    let t2 = Instant::now();
    opt.step(model.params().trainable(), &grads, lr)?;
    drop(grads);
    device.synchronize()?;
    let t3 = Instant::now();
    let seconds = |a: Instant, b: Instant| (b - a).as_secs_f64();
    Ok(Step::Updated {
        loss: loss_value,
        correct,
        times: StepTimes {
            forward_s: seconds(t0, t1),
            backward_s: seconds(t1, t2),
            optimizer_s: seconds(t2, t3),
        },
    })
}

/// Number of rows whose arg-max equals the label.
pub(crate) fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}
