//! Batch normalisation over NCHW, as `nn.BatchNorm2d` computes it in train and eval mode.
//!
//! On the CPU each mode is one custom op whose forward and backward are single sweeps over
//! memory (`cpu::batch_norm`); elsewhere (CUDA) it is composed from candle ops.

use super::cpu::batch_norm::{self as kernel, Planes};
use super::cpu::Element;
use super::dispatch3;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

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
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, as one op on the CPU: its backward masks the
/// gradient itself, so no separate ReLU output, pass or gradient tensor exists.
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchNormStats)> {
    train(x, weight, bias, eps, true)
}

fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchNormStats)> {
    let (n, c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        bail!("batch_norm: expected more than 1 value per channel when training, got input {n}x{c}x{h}x{w}")
    }
    let (y, mean, var) = if fused(x, weight) {
        train_fused(x, weight, bias, eps, relu)?
    } else {
        let (y, mean, var) = train_composed(x, weight, bias, eps)?;
        (then_relu(y, relu)?, mean, var)
    };
    let stats = BatchNormStats {
        mean: mean.detach().flatten_all()?,
        unbiased_var: (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?,
    };
    Ok((y, stats))
}

/// `relu(y)` when asked (the composed paths).
fn then_relu(y: Tensor, relu: bool) -> Result<Tensor> {
    if relu {
        super::relu(&y)
    } else {
        Ok(y)
    }
}

/// Whether the CPU kernels apply (f32 or f64 on the CPU, switched on).
fn fused(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == x.dtype()
        && super::cpu_kernels().batch_norm
}

/// Output, batch mean and biased batch variance from candle ops (any device).
fn train_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = x.mean_keepdim((0, 2, 3))?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let scale = inv_std.broadcast_mul(&channel_view(weight)?)?;
    let y = centered
        .broadcast_mul(&scale)?
        .broadcast_add(&channel_view(bias)?)?;
    Ok((y, mean, var))
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
    eval(x, [weight, bias, running_mean, running_var], eps, false)
}

/// [`batch_norm_eval`] followed by a ReLU, as one op on the CPU.
pub fn batch_norm_relu_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    eval(x, [weight, bias, running_mean, running_var], eps, true)
}

fn eval(
    x: &Tensor,
    [weight, bias, running_mean, running_var]: [&Tensor; 4],
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let scale = (running_var + eps)?.sqrt()?.recip()?.mul(weight)?;
    let shift = bias.sub(&running_mean.mul(&scale)?)?;
    if fused(x, weight) {
        // Per-channel affine map as one op; the small per-channel math above stays
        // differentiable through candle, so weight and bias still get their gradients.
        x.contiguous()?.apply_op3(
            &scale.contiguous()?,
            &shift.contiguous()?,
            ChannelAffine { relu },
        )
    } else {
        let y = x
            .broadcast_mul(&channel_view(&scale)?)?
            .broadcast_add(&channel_view(&shift)?)?;
        then_relu(y, relu)
    }
}

fn planes(layout: &Layout) -> Result<Planes> {
    let (n, c, h, w) = layout.shape().dims4()?;
    Ok(Planes { n, c, hw: h * w })
}

/// A per-channel tensor's values in f64.
fn to_f64<T: Element>(data: &[T]) -> Vec<f64> {
    data.iter().map(|v| v.to_f64()).collect()
}

/// A per-channel vector as a tensor of `like`'s type and device.
fn channel_tensor(v: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.dim(1)?, like.device())?.to_dtype(like.dtype())
}

/// Train mode on the CPU: one op whose backward is one fused op too.
fn train_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = TrainOp {
        eps,
        relu,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let saved = saved.lock().unwrap();
    let mean = channel_tensor(saved.mean.clone(), x)?;
    Ok((y, mean, channel_tensor(saved.var.clone(), x)?))
}

/// Batch statistics the forward pass found, kept for the backward pass.
#[derive(Default, Clone)]
struct Saved {
    mean: Vec<f64>,
    var: Vec<f64>,
}

/// (x, weight, bias) -> y with the batch's statistics (then ReLU'd with `relu`).
struct TrainOp {
    eps: f64,
    relu: bool,
    saved: Arc<Mutex<Saved>>,
}

impl CustomOp3 for TrainOp {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(l1)?;
        fn run<T: Element>(op: &TrainOp, p: Planes, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
            let (w, b) = (to_f64(w), to_f64(b));
            let (mean, var) = kernel::channel_stats(p, x);
            let scale: Vec<f64> = var
                .iter()
                .zip(&w)
                .map(|(v, w)| w / (v + op.eps).sqrt())
                .collect();
            let y = kernel::normalise(p, x, &mean, &scale, &b, op.relu);
            *op.saved.lock().unwrap() = Saved { mean, var };
            y
        }
        let y = dispatch3(
            "batch_norm",
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, w, b| run(self, p, x, w, b),
            |x, w, b| run(self, p, x, w, b),
        )?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Saved { mean, var } = self.saved.lock().unwrap().clone();
        let gamma: Vec<f64> = weight.to_dtype(DType::F64)?.to_vec1()?;
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let back = Backward {
            mean: mean.clone(),
            coefficients: Coefficients::Train {
                gamma,
                inv_std: inv_std.clone(),
            },
            relu: self.relu,
            sums: Mutex::default(),
        };
        let gx = back.apply(x, gy, y)?;
        let (sum_gy, sum_gy_xc) = std::mem::take(&mut *back.sums.lock().unwrap());
        // Σ gy·x̂ = inv_std · Σ gy·(x − mean)
        let sum_gy_xhat = (0..mean.len()).map(|c| inv_std[c] * sum_gy_xc[c]).collect();
        let gw = match weight.track_op() {
            true => Some(channel_tensor(sum_gy_xhat, x)?),
            false => None,
        };
        let gb = match bias.track_op() {
            true => Some(channel_tensor(sum_gy, x)?),
            false => None,
        };
        Ok((x.track_op().then_some(gx), gw, gb))
    }
}

/// (x, scale, shift) -> x * scale[c] + shift[c] (then ReLU'd with `relu`): eval mode's map.
struct ChannelAffine {
    relu: bool,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(l1)?;
        fn run<T: Element>(p: Planes, relu: bool, x: &[T], a: &[T], b: &[T]) -> Vec<T> {
            let zero = vec![0.0; p.c];
            kernel::normalise(p, x, &zero, &to_f64(a), &to_f64(b), relu)
        }
        let relu = self.relu;
        let y = dispatch3(
            "batch_norm",
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, a, b| run(p, relu, x, a, b),
            |x, a, b| run(p, relu, x, a, b),
        )?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = scale.elem_count();
        let back = Backward {
            mean: vec![0.0; c],
            coefficients: Coefficients::Affine {
                scale: scale.to_dtype(DType::F64)?.to_vec1()?,
            },
            relu: self.relu,
            sums: Mutex::default(),
        };
        let gx = back.apply(x, gy, y)?;
        let (sum_gy, sum_gy_x) = std::mem::take(&mut *back.sums.lock().unwrap());
        let gscale = match scale.track_op() {
            true => Some(channel_tensor(sum_gy_x, x)?),
            false => None,
        };
        let gshift = match shift.track_op() {
            true => Some(channel_tensor(sum_gy, x)?),
            false => None,
        };
        Ok((x.track_op().then_some(gx), gscale, gshift))
    }
}

/// How the input gradient follows from the per-channel sums.
enum Coefficients {
    /// Train mode: `gx = γ·inv_std·(gy − Σgy/M − x̂·Σ(gy·x̂)/M)`.
    Train { gamma: Vec<f64>, inv_std: Vec<f64> },
    /// Eval mode: `gx = scale · gy`.
    Affine { scale: Vec<f64> },
}

/// (x, gy, y) -> gx, leaving `Σ gy` and `Σ gy·(x − mean)` per channel in `sums` for the
/// parameters.
/// With `relu` the op's output `y` masks `gy` (the fused ReLU's backward); else `y` is unread.
struct Backward {
    mean: Vec<f64>,
    coefficients: Coefficients,
    relu: bool,
    sums: Mutex<(Vec<f64>, Vec<f64>)>,
}

impl Backward {
    fn apply(&self, x: &Tensor, gy: &Tensor, y: &Tensor) -> Result<Tensor> {
        let gy = gy.contiguous()?;
        // Without a ReLU the mask is never read: pass gy itself rather than copy y.
        let mask = if self.relu {
            y.contiguous()?
        } else {
            gy.clone()
        };
        x.apply_op3_no_bwd(&gy, &mask, self)
    }

    fn run<T: Element>(&self, p: Planes, x: &[T], gy: &[T], y: &[T]) -> Vec<T> {
        let mask = (self.relu, y);
        let (sum_gy, sum_gy_xc) = kernel::grad_sums(p, x, gy, &self.mean, mask);
        let m = (p.n * p.hw) as f64;
        let gx = match &self.coefficients {
            Coefficients::Affine { scale } => {
                let zero = vec![0.0; p.c];
                kernel::input_grad(p, gy, x, &zero, [scale, &zero, &zero], mask)
            }
            Coefficients::Train { gamma, inv_std } => {
                let (mut a, mut b, mut d) = (vec![0.0; p.c], vec![0.0; p.c], vec![0.0; p.c]);
                for c in 0..p.c {
                    let k = gamma[c] * inv_std[c];
                    let sum_gy_xhat = inv_std[c] * sum_gy_xc[c];
                    a[c] = k;
                    b[c] = -k * inv_std[c] * sum_gy_xhat / m;
                    d[c] = -k * sum_gy[c] / m;
                }
                kernel::input_grad(p, gy, x, &self.mean, [&a, &b, &d], mask)
            }
        };
        *self.sums.lock().unwrap() = (sum_gy, sum_gy_xc);
        gx
    }
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = planes(l1)?;
        let gx = dispatch3(
            "batch_norm backward",
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, gy, y| self.run(p, x, gy, y),
            |x, gy, y| self.run(p, x, gy, y),
        )?;
        Ok((gx, l1.shape().clone()))
    }
}
