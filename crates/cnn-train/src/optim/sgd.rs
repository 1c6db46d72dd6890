//! `torch.optim.SGD`'s update of one parameter (the single-tensor, non-`foreach` path).

use super::flush_subnormal;
use candle_core::{Result, Tensor};

pub(super) struct Sgd {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

impl Sgd {
    /// `(new parameter, new momentum buffer)`; the buffer is `None` when momentum is 0.
    ///
    /// ```text
    /// g = grad + wd * p
    /// buf = g                                   (first step)
    /// buf = momentum * buf + (1 - dampening) * g (later steps)
    /// g = g + momentum * buf if nesterov else buf
    /// p = p - lr * g
    /// ```
    pub fn update(
        &self,
        p: &Tensor,
        grad: &Tensor,
        buf: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut g = grad.clone();
        if self.weight_decay != 0.0 {
            g = (g + p.affine(self.weight_decay, 0.0)?)?;
        }
        let mut new_buf = None;
        if self.momentum != 0.0 {
            let b = match buf {
                None => g.copy()?,
                Some(b) => {
                    (b.affine(self.momentum, 0.0)? + g.affine(1.0 - self.dampening, 0.0)?)?
                }
            };
            g = if self.nesterov {
                (g + b.affine(self.momentum, 0.0)?)?
            } else {
                b.clone()
            };
            new_buf = Some(b);
        }
        let new_p = (p - g.affine(self.lr, 0.0)?)?;
        Ok((new_p, new_buf))
    }
}

impl Sgd {
    /// The same update in place on host slices (CPU fast path, same f32 arithmetic, but a
    /// momentum buffer below f32's normal range is stored as zero: see
    /// [`flush_subnormal`]).
    pub fn update_slice(&self, p: &mut [f32], grad: &[f32], buf: Option<&mut [f32]>, first: bool) {
        let (wd, mu, damp, lr) = (
            self.weight_decay as f32,
            self.momentum as f32,
            (1.0 - self.dampening) as f32,
            self.lr as f32,
        );
        match buf {
            None => {
                for (p, &g) in p.iter_mut().zip(grad) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *p -= g * lr;
                }
            }
            Some(buf) => {
                for ((p, &g), b) in p.iter_mut().zip(grad).zip(buf.iter_mut()) {
                    let g = if wd != 0.0 { g + *p * wd } else { g };
                    *b = flush_subnormal(if first { g } else { *b * mu + g * damp });
                    let g = if self.nesterov { g + *b * mu } else { *b };
                    *p -= g * lr;
                }
            }
        }
    }
}
