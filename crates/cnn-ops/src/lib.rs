//! Fast CPU convolution, batch norm, pooling, ReLU and linear ops for candle, each with its
//! backward pass, as candle custom ops that any candle user can call on plain tensors.
//!
//! On the CPU the ops run this crate's own code (chosen with [`set_cpu_choice`]): the
//! convolution picks im2col + GEMM, Winograd F(2x2, 3x3) or F(4x4, 3x3), or tap-by-tap
//! GEMMs per layer and pass (see `conv/`), batch norm runs one sweep of memory per pass.
//! candle 0.11 lacks or gets wrong several ops that classic CNNs need for training:
//! max-pool with padding and a backward when kernel != stride, adaptive average pooling,
//! and a seedable dropout; they are here too. Elsewhere (CUDA) every op forwards to candle,
//! except the float32 convolution with the `cudnn` feature: its forward, input gradient and
//! kernel gradient run through cuDNN (`conv/cudnn.rs`).
//!
//! A convolution's kernel is a tensor of its weights, in PyTorch's OIHW layout or tap by
//! tap (OHWI, `[out][kh][kw][in]`); "kernel" means those weights throughout this crate.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! let x = Var::randn(0f32, 1.0, (8, 16, 32, 32), &Device::Cpu)?;
//! let w = Var::randn(0f32, 0.1, (32, 16, 3, 3), &Device::Cpu)?;
//! let y = cnn_ops::conv2d(&x, &w, None, 1, 1)?; // (8, 32, 32, 32)
//! let y = cnn_ops::max_pool2d(&cnn_ops::relu(&y)?, 3, 2, 1)?;
//! let grads = y.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[32, 16, 3, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

#[macro_use]
mod cpu;
mod adaptive_pool;
mod batch_norm;
mod bias;
mod choice;
mod conv;
mod dropout;
mod linear;
mod max_pool;
mod relu;
mod storage;
mod timing;

pub use adaptive_pool::{adaptive_avg_pool2d, adaptive_bounds};
pub use batch_norm::{
    batch_norm_add_relu_eval, batch_norm_add_relu_train, batch_norm_eval, batch_norm_relu_eval,
    batch_norm_relu_train, batch_norm_train, BatchNormStats,
};
pub use choice::{cpu_choice, set_cpu_choice, tune_candle_pool, CpuChoice};
pub use conv::{conv2d_ohwi_input_grad, conv2d_ohwi_weight_grad};
#[cfg(feature = "cudnn")]
pub use conv::{cudnn_tf32, cudnn_version, set_cudnn_tf32};
pub use dropout::{dropout, dropout_mask};
pub use max_pool::{max_pool2d, max_pool2d_composed, pool_output_size};
pub use timing::{set_op_timing, take_op_times, OpTime};

use candle_core::{Result, Tensor};

/// 2-D convolution (NCHW input, OIHW kernel) with an optional per-channel bias.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = conv::conv2d_no_bias(x, (weight, conv::KernelLayout::Oihw), stride, padding)?;
    add_bias(y, bias)
}

/// [`conv2d`] with the kernel laid out tap by tap, `[out][kh][kw][in]` (OHWI), as
/// cnn-models holds its kernels: on small maps the CPU path multiplies it in place, where
/// an OIHW kernel is copied into this layout and its gradient back on every step.
pub fn conv2d_ohwi(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = conv::conv2d_no_bias(x, (weight, conv::KernelLayout::Ohwi), stride, padding)?;
    add_bias(y, bias)
}

/// `y + bias` per channel (axis 1), where there is a bias.
fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => bias::add_channel_bias(&y, b),
        None => Ok(y),
    }
}

/// Fully connected layer as PyTorch's `nn.Linear`: `x @ weight.T + bias`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = linear::matmul_t(x, weight)?;
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
