//! ReLU on the CPU as one parallel pass forward and one backward (candle's backward builds
//! a zero tensor, compares, converts and multiplies: four passes and three allocations).

use crate::cpu::Element;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel piece: big enough to amortise scheduling, small enough to balance.
const PIECE: usize = 1 << 16;

pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && crate::choice::cpu_choice().relu
    {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

fn forward<T: Element>(x: &[T]) -> Vec<T> {
    let mut y = crate::cpu::zeros(x.len());
    y.par_chunks_mut(PIECE)
        .zip(x.par_chunks(PIECE))
        .for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                // NaN propagates, as PyTorch's does.
                *y = if x < T::ZERO { T::ZERO } else { x };
            }
        });
    y
}

/// The gradient passes where the output is positive (PyTorch's convention at 0: none).
fn backward<T: Element>(y: &[T], gy: &[T]) -> Vec<T> {
    let mut gx = crate::cpu::zeros(y.len());
    gx.par_chunks_mut(PIECE)
        .zip(y.par_chunks(PIECE).zip(gy.par_chunks(PIECE)))
        .for_each(|(gx, (y, gy))| {
            for ((gx, &y), &g) in gx.iter_mut().zip(y).zip(gy) {
                *gx = if y > T::ZERO { g } else { T::ZERO };
            }
        });
    gx
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = crate::storage::dispatch1("relu", (s, l), forward, forward)?;
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(relu_grad(y, gy)?))
    }
}

/// The input gradient of a ReLU (or an op ending in one) from its output `y` and output
/// gradient `gy`, on the CPU.
pub(crate) fn relu_grad(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&gy.contiguous()?, &ReluBackward)
}

/// (output, output gradient) -> input gradient.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gx =
            crate::storage::dispatch2("relu backward", (s1, l1), (s2, l2), backward, backward)?;
        Ok((gx, l1.shape().clone()))
    }
}
