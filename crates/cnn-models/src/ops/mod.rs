//! Every tensor op the networks call, in one place, so faster kernels can replace them here.
//!
//! candle 0.11 lacks or gets wrong several ops these networks need for training: max-pool
//! with padding and a backward when kernel != stride, adaptive average pooling, and a
//! seedable dropout. They are implemented in the sub-modules; the rest forward to candle.
//! On the CPU, convolution and batch norm run the project's own kernels (`cpu/`, chosen
//! with [`set_cpu_kernels`]), measured faster than candle's in `docs/PERFORMANCE.md`.

mod adaptive_pool;
mod batch_norm;
mod bias;
mod conv;
mod cpu;
mod dropout;
mod kernels;
mod linear;
mod max_pool;
mod relu;
mod timing;

pub use adaptive_pool::{adaptive_avg_pool2d, adaptive_bounds};
pub use batch_norm::{
    batch_norm_add_relu_eval, batch_norm_add_relu_train, batch_norm_eval, batch_norm_relu_eval,
    batch_norm_relu_train, batch_norm_train, BatchNormStats,
};
pub(crate) use conv::KernelLayout;
pub use conv::{conv2d_ohwi_input_grad, conv2d_ohwi_weight_grad};
pub use dropout::{dropout, dropout_mask};
pub use kernels::{cpu_kernels, set_cpu_kernels, tune_candle_pool, CpuKernels};
pub use max_pool::{max_pool2d, max_pool2d_composed, pool_output_size};
pub use timing::{set_op_timing, take_op_times, OpTime};

use crate::weight_grads::WeightGrads;
use candle_core::{bail, CpuStorage, Layout, Result, Tensor};

/// Runs the f32 or f64 function on one contiguous CPU storage (a unary op's CPU forward);
/// `name` names the op in errors.
pub(crate) fn dispatch1(
    name: &'static str,
    (s, l): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l]);
    Ok(match s {
        CpuStorage::F32(a) => CpuStorage::F32(f32_fn(contiguous_slice(a, l, name)?)),
        CpuStorage::F64(a) => CpuStorage::F64(f64_fn(contiguous_slice(a, l, name)?)),
        _ => bail!("{name}: only f32 or f64 tensors are supported"),
    })
}

/// Runs the f32 or f64 function on two same-typed contiguous CPU storages (a binary op's
/// CPU forward); `name` names the op in errors.
pub(crate) fn dispatch2(
    name: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l1, l2]);
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(f32_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(f64_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
        )),
        _ => bail!("{name}: only f32 or f64 tensors of one type are supported"),
    })
}

/// [`dispatch2`] for a ternary op: the f32 or f64 function on three same-typed contiguous
/// CPU storages.
pub(crate) fn dispatch3(
    name: &'static str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    f32_fn: impl FnOnce(&[f32], &[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let _timer = timing::start(name, &[l1, l2, l3]);
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32(f32_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
            contiguous_slice(c, l3, name)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64(f64_fn(
            contiguous_slice(a, l1, name)?,
            contiguous_slice(b, l2, name)?,
            contiguous_slice(c, l3, name)?,
        )),
        _ => bail!("{name}: only f32 or f64 tensors of one type are supported"),
    })
}

/// The values of a contiguous CPU tensor's storage; `op` names the caller in the error.
pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected contiguous tensors"),
    }
}

/// 2-D convolution (NCHW input, OIHW kernel) with an optional per-channel bias.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let weight = (weight, conv::KernelLayout::Oihw);
    conv2d_collecting(x, weight, bias, stride, padding, None)
}

/// [`conv2d`] with the kernel laid out tap by tap, `[out][kh][kw][in]` (OHWI), as the
/// models hold theirs: on small maps the CPU path multiplies it in place, where an OIHW
/// kernel is copied into this layout and its gradient back on every step.
pub fn conv2d_ohwi(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let weight = (weight, conv::KernelLayout::Ohwi);
    conv2d_collecting(x, weight, bias, stride, padding, None)
}

/// [`conv2d`] or [`conv2d_ohwi`] by the layout given with the kernel, its gradient going to
/// `weight_grads` where given (on the CPU path).
pub(crate) fn conv2d_collecting(
    x: &Tensor,
    weight: (&Tensor, conv::KernelLayout),
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    weight_grads: Option<&WeightGrads>,
) -> Result<Tensor> {
    let y = conv::conv2d_no_bias(x, weight, stride, padding, weight_grads)?;
    match bias {
        Some(b) => bias::add_channel_bias(&y, b),
        None => Ok(y),
    }
}

/// Fully connected layer as PyTorch's `nn.Linear`: `x @ weight.T + bias`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_collecting(x, weight, bias, None)
}

/// [`linear`], its weight's gradient going to `weight_grads` where given (on the CPU path).
pub(crate) fn linear_collecting(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    weight_grads: Option<&WeightGrads>,
) -> Result<Tensor> {
    let y = linear::matmul_t(x, weight, weight_grads)?;
    match bias {
        // Rank 2: the features are axis 1, where the per-channel bias op adds.
        Some(b) if y.rank() == 2 => bias::add_channel_bias(&y, b),
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Rectified linear unit.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    relu::relu(x)
}
