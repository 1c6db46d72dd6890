//! Adaptive average pooling as PyTorch defines it, for any input and output size.
//!
//! Output cell `i` of `out` averages input rows `floor(i*in/out) .. ceil((i+1)*in/out)`.
//! Separable, so it is two small matrix products `P_h · X · P_wᵀ`: differentiable, and the
//! same code runs on every device.

use candle_core::{Result, Tensor};

/// The `[start, end)` input range PyTorch averages for each of `out` cells over `input`.
pub fn adaptive_bounds(input: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out)
        .map(|i| ((i * input) / out, ((i + 1) * input).div_ceil(out)))
        .collect()
}

/// `(out, input)` matrix whose row `i` averages the input range of cell `i`.
fn pooling_matrix(input: usize, out: usize, x: &Tensor) -> Result<Tensor> {
    let mut m = vec![0f64; out * input];
    for (i, (start, end)) in adaptive_bounds(input, out).into_iter().enumerate() {
        let share = 1.0 / (end - start) as f64;
        for j in start..end {
            m[i * input + j] = share;
        }
    }
    Tensor::from_vec(m, (out, input), x.device())?.to_dtype(x.dtype())
}

/// `nn.AdaptiveAvgPool2d((out_h, out_w))` on an NCHW tensor.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    if (out_h, out_w) == (1, 1) {
        return x.mean_keepdim(3)?.mean_keepdim(2);
    }
    let rows = pooling_matrix(h, out_h, x)?; // (out_h, h)
    let cols = pooling_matrix(w, out_w, x)?.t()?; // (w, out_w)
    let x = x.contiguous()?.broadcast_matmul(&cols)?; // (n, c, h, out_w)
    rows.broadcast_matmul(&x)
}
