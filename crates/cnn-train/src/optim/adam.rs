//! `torch.optim.Adam` and `AdamW`'s update of one parameter (single-tensor path, no amsgrad).

use super::flush_subnormal;
use candle_core::{Result, Tensor};

pub(super) struct Adam {
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// AdamW: decay the parameter directly instead of adding `wd * p` to the gradient.
    pub decoupled: bool,
}

impl Adam {
    /// `(new parameter, exp_avg, exp_avg_sq)` after step number `step` (1-based).
    ///
    /// ```text
    /// AdamW: p = p * (1 - lr * wd)        Adam: g = grad + wd * p
    /// m = b1 * m + (1 - b1) * g
    /// v = b2 * v + (1 - b2) * g * g
    /// p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    /// ```
    pub fn update(
        &self,
        p: &Tensor,
        grad: &Tensor,
        moments: Option<(&Tensor, &Tensor)>,
        step: u64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b1, b2) = self.betas;
        let mut p = p.clone();
        let mut g = grad.clone();
        if self.weight_decay != 0.0 {
            if self.decoupled {
                p = p.affine(1.0 - self.lr * self.weight_decay, 0.0)?;
            } else {
                g = (g + p.affine(self.weight_decay, 0.0)?)?;
            }
        }
        let (m, v) = match moments {
            Some((m, v)) => (
                (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?,
                (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?,
            ),
            // Zero-initialised moments: b * 0 drops out.
            None => (g.affine(1.0 - b1, 0.0)?, g.sqr()?.affine(1.0 - b2, 0.0)?),
        };
        let t = step as i32;
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = self.lr / bias1;
        let denom = v.sqrt()?.affine(1.0 / bias2_sqrt, self.eps)?;
        let new_p = (p - (m.div(&denom)?).affine(step_size, 0.0)?)?;
        Ok((new_p, m, v))
    }
}

impl Adam {
    /// The same update in place on host slices (CPU fast path, same f32 arithmetic, but
    /// moments that fall below f32's normal range are stored as zero: see
    /// [`flush_subnormal`]); `m` and `v` start at zero on the first step.
    pub fn update_slice(
        &self,
        p: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
    ) {
        let (b1, b2) = self.betas;
        let t = step as i32;
        let step_size = (self.lr / (1.0 - b1.powi(t))) as f32;
        let inv_bias2_sqrt = (1.0 / (1.0 - b2.powi(t)).sqrt()) as f32;
        let (b1f, b2f, one_b1, one_b2) =
            (b1 as f32, b2 as f32, (1.0 - b1) as f32, (1.0 - b2) as f32);
        let eps = self.eps as f32;
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let wd = self.weight_decay as f32;
        for (((p, &g), m), v) in p.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
            let mut g = g;
            if self.weight_decay != 0.0 {
                if self.decoupled {
                    *p *= decay;
                } else {
                    g += *p * wd;
                }
            }
            *m = flush_subnormal(*m * b1f + g * one_b1);
            *v = flush_subnormal(*v * b2f + (g * g) * one_b2);
            let denom = v.sqrt() * inv_bias2_sqrt + eps;
            *p -= (*m / denom) * step_size;
        }
    }
}
