//! ReLU on the CPU as one parallel pass forward and one backward (candle's backward builds
//! a zero tensor, compares, converts and multiplies: four passes and three allocations).

use super::contiguous_slice;
use super::cpu::Element;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel piece: big enough to amortise scheduling, small enough to balance.
const PIECE: usize = 1 << 16;

pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && super::cpu_kernels().relu
    {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

fn forward<T: Element>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
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
    let mut gx = vec![T::ZERO; y.len()];
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
        let y = match s {
            CpuStorage::F32(x) => CpuStorage::F32(forward(contiguous_slice(x, l, "relu")?)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(contiguous_slice(x, l, "relu")?)),
            _ => bail!("relu: only f32 and f64 are supported"),
        };
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&gy.contiguous()?, &ReluBackward)?))
    }
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
        let gx = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(backward(
                contiguous_slice(y, l1, "relu")?,
                contiguous_slice(g, l2, "relu")?,
            )),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(backward(
                contiguous_slice(y, l1, "relu")?,
                contiguous_slice(g, l2, "relu")?,
            )),
            _ => bail!("relu backward: only f32 and f64 tensors of one type are supported"),
        };
        Ok((gx, l1.shape().clone()))
    }
}
