//! Adding a per-channel bias (`y[n][c][..] = x[n][c][..] + b[c]`) on the CPU as one op whose
//! backward sums the gradient per channel in one pass. candle's `broadcast_add` backward
//! reduces over the broadcast axes with a generic strided loop: on AlexNet@224 training
//! that reduction over the conv outputs took ~12 % of the step.

use crate::cpu::Element;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x + bias` with `bias` (c) along axis 1 of `x` (n, c, ...).
pub(crate) fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let c = bias.elem_count();
    if x.rank() < 2 || x.dim(1)? != c {
        bail!("bias: {c} values for input of shape {:?}", x.dims())
    }
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == bias.dtype();
    if !fast {
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        return x.broadcast_add(&bias.reshape(shape)?);
    }
    let inner = x.dims()[2..].iter().product();
    let op = AddBias { channels: c, inner };
    x.contiguous()?.apply_op2(&bias.contiguous()?, op)
}

/// Geometry: `x` is (outer, channels, inner) in memory.
#[derive(Clone, Copy)]
struct AddBias {
    channels: usize,
    inner: usize,
}

impl AddBias {
    fn forward<T: Element>(&self, x: &[T], b: &[T]) -> Vec<T> {
        let mut y = crate::cpu::zeros(x.len());
        let row = self.channels * self.inner;
        y.par_chunks_mut(row)
            .zip(x.par_chunks(row))
            .for_each(|(y, x)| {
                let planes = y.chunks_mut(self.inner).zip(x.chunks(self.inner));
                for ((y, x), &b) in planes.zip(b) {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = x + b;
                    }
                }
            });
        y
    }

    /// `∂L/∂b[c] = Σ gy[n][c][..]`, accumulated in f64 per channel.
    fn bias_grad<T: Element>(&self, gy: &[T]) -> Vec<T> {
        let row = self.channels * self.inner;
        (0..self.channels)
            .into_par_iter()
            .map(|c| {
                let sum: f64 = gy
                    .chunks(row)
                    .map(|r| {
                        r[c * self.inner..][..self.inner]
                            .iter()
                            .map(|v| v.to_f64())
                            .sum::<f64>()
                    })
                    .sum();
                T::from_f64(sum)
            })
            .collect()
    }
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = crate::storage::dispatch2(
            self.name(),
            (s1, l1),
            (s2, l2),
            |x, b| self.forward(x, b),
            |x, b| self.forward(x, b),
        )?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gb = match b.track_op() {
            true => Some(gy.contiguous()?.apply_op1_no_bwd(&BiasGrad(*self))?),
            false => None,
        };
        Ok((Some(gy.clone()), gb))
    }
}

/// (output gradient) -> bias gradient.
struct BiasGrad(AddBias);

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "add-bias-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let gb = crate::storage::dispatch1(
            self.name(),
            (s, l),
            |g| self.0.bias_grad(g),
            |g| self.0.bias_grad(g),
        )?;
        Ok((gb, Shape::from(self.0.channels)))
    }
}
