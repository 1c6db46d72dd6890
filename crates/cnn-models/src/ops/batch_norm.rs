//! Batch normalisation over NCHW, as `nn.BatchNorm2d` computes it in train and eval mode.

use candle_core::{bail, Result, Tensor};

/// Per-channel statistics of one train-mode batch, for the running-average update.
pub struct BatchNormStats {
    /// Batch mean per channel.
    pub mean: Tensor,
    /// Unbiased batch variance per channel (divides by count - 1, as PyTorch's running update).
    pub unbiased_var: Tensor,
}

fn channel_view(t: &Tensor) -> Result<Tensor> {
    t.reshape((1, t.elem_count(), 1, 1))
}

/// Train mode: normalise with the batch's own mean and biased variance; return the output
/// and the (detached) statistics for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchNormStats)> {
    let (n, c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        bail!("batch_norm: expected more than 1 value per channel when training, got input {n}x{c}x{h}x{w}")
    }
    let mean = x.mean_keepdim((0, 2, 3))?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let scale = inv_std.broadcast_mul(&channel_view(weight)?)?;
    let y = centered
        .broadcast_mul(&scale)?
        .broadcast_add(&channel_view(bias)?)?;
    let stats = BatchNormStats {
        mean: mean.detach().flatten_all()?,
        unbiased_var: (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?,
    };
    Ok((y, stats))
}

/// Eval mode: normalise with the running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let scale = (running_var + eps)?.sqrt()?.recip()?.mul(weight)?;
    let shift = bias.sub(&running_mean.mul(&scale)?)?;
    x.broadcast_mul(&channel_view(&scale)?)?
        .broadcast_add(&channel_view(&shift)?)
}
