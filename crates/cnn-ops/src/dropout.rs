//! Dropout with a mask drawn from the project's seeded generator, so a training step is
//! reproducible (candle's CPU generator cannot be seeded).

use candle_core::{Result, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The keep-mask of `nn.Dropout(p)` in train mode: each element is `1/(1-p)` with
/// probability `1-p` and 0 otherwise, drawn from `seed`.
pub fn dropout_mask(len: usize, p: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = (1.0 / (1.0 - p)) as f32;
    (0..len)
        .map(|_| if rng.random::<f64>() >= p { scale } else { 0.0 })
        .collect()
}

/// Train-mode dropout of `x` with drop probability `p` and mask seed `seed`.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout: probability {p} is outside [0, 1)")
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask = dropout_mask(x.elem_count(), p, seed);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}
