//! Batch normalisation over NCHW, as `nn.BatchNorm2d` computes it in train and eval mode.
//!
//! On the CPU each mode is one custom op whose forward and backward are single sweeps over
//! memory (`sweeps`); elsewhere (CUDA) it is composed from candle ops.

mod sweeps;

use crate::cpu::Element;
use crate::storage::dispatch3;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};
use sweeps::Planes;

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
    train(x, weight, bias, eps, (None, false))
}

/// [`batch_norm_train`] followed by a ReLU, as one op on the CPU: its backward masks the
/// gradient itself, so no separate ReLU output, pass or gradient tensor exists.
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchNormStats)> {
    train(x, weight, bias, eps, (None, true))
}

/// `relu(batch_norm_train(x) + residual)`, a ResNet block's end, as one op on the CPU: no
/// separate normalised, summed or ReLU'd tensor exists, forward or backward.
pub fn batch_norm_add_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchNormStats)> {
    train(x, weight, bias, eps, (Some(residual), true))
}

fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    (residual, relu): (Option<&Tensor>, bool),
) -> Result<(Tensor, BatchNormStats)> {
    let (n, c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        bail!("batch_norm: expected more than 1 value per channel when training, got input {n}x{c}x{h}x{w}")
    }
    if let Some(r) = residual {
        check_residual(x, r)?;
    }
    let (y, mean, var) = if fused(x, weight) {
        train_fused(x, weight, bias, eps, (residual, relu))?
    } else {
        let (y, mean, var) = train_composed(x, weight, bias, eps)?;
        (then_add_relu(y, residual, relu)?, mean, var)
    };
    let stats = BatchNormStats {
        mean: mean.detach().flatten_all()?,
        unbiased_var: (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?,
    };
    Ok((y, stats))
}

/// A residual must match the input's shape exactly (no broadcasting).
fn check_residual(x: &Tensor, residual: &Tensor) -> Result<()> {
    if residual.dims() != x.dims() {
        bail!(
            "batch_norm: residual of shape {:?} for input {:?}",
            residual.dims(),
            x.dims()
        )
    }
    Ok(())
}

/// `y + residual`, then `relu` of it, as asked (the composed paths).
fn then_add_relu(y: Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let y = match residual {
        Some(r) => (y + r)?,
        None => y,
    };
    if relu {
        crate::relu::relu(&y)
    } else {
        Ok(y)
    }
}

/// Whether the CPU code applies (f32 or f64 on the CPU, switched on).
fn fused(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == x.dtype()
        && crate::choice::cpu_choice().batch_norm
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
    eval(
        x,
        [weight, bias, running_mean, running_var],
        eps,
        (None, false),
    )
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
    eval(
        x,
        [weight, bias, running_mean, running_var],
        eps,
        (None, true),
    )
}

/// `relu(batch_norm_eval(x) + residual)`, as one op on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_add_relu_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    residual: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    check_residual(x, residual)?;
    let params = [weight, bias, running_mean, running_var];
    eval(x, params, eps, (Some(residual), true))
}

fn eval(
    x: &Tensor,
    [weight, bias, running_mean, running_var]: [&Tensor; 4],
    eps: f64,
    (residual, relu): (Option<&Tensor>, bool),
) -> Result<Tensor> {
    let scale = (running_var + eps)?.sqrt()?.recip()?.mul(weight)?;
    let shift = bias.sub(&running_mean.mul(&scale)?)?;
    if fused(x, weight) {
        // Per-channel affine map as one op; the small per-channel math above stays
        // differentiable through candle, so weight and bias still get their gradients.
        let op = ChannelAffine {
            relu,
            residual: residual.is_some(),
        };
        let x = x.contiguous()?;
        match residual {
            Some(r) => {
                let scale_shift = Tensor::cat(&[&scale, &shift], 0)?;
                x.apply_op3(&scale_shift, &r.contiguous()?, op)
            }
            None => x.apply_op3(&scale.contiguous()?, &shift.contiguous()?, op),
        }
    } else {
        let y = x
            .broadcast_mul(&channel_view(&scale)?)?
            .broadcast_add(&channel_view(&shift)?)?;
        then_add_relu(y, residual, relu)
    }
}

/// The per-channel pair `(a, b)` and the residual among a fused op's 2nd and 3rd inputs:
/// `(a, b, None)` as given, or with a residual, `a` and `b` as halves of the 2nd.
fn split_inputs<'a, T>(
    residual: bool,
    s2: &'a [T],
    s3: &'a [T],
) -> (&'a [T], &'a [T], Option<&'a [T]>) {
    match residual {
        true => {
            let (a, b) = s2.split_at(s2.len() / 2);
            (a, b, Some(s3))
        }
        false => (s2, s3, None),
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

/// A per-channel vector (or several side by side) as a tensor of `like`'s type and device.
fn channel_tensor(v: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    let len = v.len();
    Tensor::from_vec(v, len, like.device())?.to_dtype(like.dtype())
}

/// Train mode on the CPU: one op whose backward is one fused op too.
fn train_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    (residual, relu): (Option<&Tensor>, bool),
) -> Result<(Tensor, Tensor, Tensor)> {
    let saved = Arc::new(Mutex::new(Saved::default()));
    let op = TrainOp {
        eps,
        relu,
        residual: residual.is_some(),
        saved: saved.clone(),
    };
    let x = x.contiguous()?;
    let y = match residual {
        // Three inputs at most: weight and bias travel as one (cat's backward splits
        // their gradient).
        Some(r) => x.apply_op3(&Tensor::cat(&[weight, bias], 0)?, &r.contiguous()?, op)?,
        None => x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?,
    };
    let saved = saved.lock().unwrap();
    let mean = channel_tensor(saved.mean.clone(), &x)?;
    Ok((y, mean, channel_tensor(saved.var.clone(), &x)?))
}

/// Batch statistics the forward pass found, kept for the backward pass.
#[derive(Default, Clone)]
struct Saved {
    mean: Vec<f64>,
    var: Vec<f64>,
}

/// (x, weight, bias) -> y with the batch's statistics (then ReLU'd with `relu`); with
/// `residual`, (x, [weight | bias], residual) -> y with the residual added before the ReLU.
struct TrainOp {
    eps: f64,
    relu: bool,
    residual: bool,
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
        fn run<T: Element>(op: &TrainOp, p: Planes, x: &[T], s2: &[T], s3: &[T]) -> Vec<T> {
            let (w, b, residual) = split_inputs(op.residual, s2, s3);
            let (w, b) = (to_f64(w), to_f64(b));
            let (mean, var) = sweeps::channel_stats(p, x);
            let scale: Vec<f64> = var
                .iter()
                .zip(&w)
                .map(|(v, w)| w / (v + op.eps).sqrt())
                .collect();
            let y = sweeps::normalise(p, x, &mean, &scale, &b, (residual, op.relu));
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
        s2: &Tensor,
        s3: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Saved { mean, var } = self.saved.lock().unwrap().clone();
        let gamma: Vec<f64> = s2.to_dtype(DType::F64)?.to_vec1()?[..mean.len()].to_vec();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let (g, relu) = gradient_past_add_relu(self.residual, self.relu, y, gy)?;
        let back = Backward {
            mean,
            coefficients: Coefficients::Train {
                gamma,
                inv_std: inv_std.clone(),
            },
            relu,
            sums: Mutex::default(),
        };
        let gx = back.apply(x, &g, y)?;
        let (sum_gy, sum_gy_xc) = std::mem::take(&mut *back.sums.lock().unwrap());
        // Σ gy·x̂ = inv_std · Σ gy·(x − mean)
        let sum_gy_xhat = (0..inv_std.len())
            .map(|c| inv_std[c] * sum_gy_xc[c])
            .collect();
        let (g2, g3) = param_grads(self.residual, (s2, s3), (sum_gy_xhat, sum_gy), g, x)?;
        Ok((x.track_op().then_some(gx), g2, g3))
    }
}

/// The gradient that reaches the normalisation, and whether the BN backward must still
/// mask it by the fused ReLU's output. With a residual the masked gradient is made here,
/// once: it is also the residual's gradient.
fn gradient_past_add_relu(
    residual: bool,
    relu: bool,
    y: &Tensor,
    gy: &Tensor,
) -> Result<(Tensor, bool)> {
    Ok(match (residual, relu) {
        (true, true) => (crate::relu::relu_grad(y, gy)?, false),
        (true, false) => (gy.clone(), false),
        (false, relu) => (gy.clone(), relu),
    })
}

/// The gradients of a fused op's 2nd and 3rd inputs from the per-channel sums: (weight,
/// bias), or with a residual ([weight | bias], the residual's gradient `g`); `None` for
/// inputs that do not track gradients.
fn param_grads(
    residual: bool,
    (s2, s3): (&Tensor, &Tensor),
    (ga, gb): (Vec<f64>, Vec<f64>),
    g: Tensor,
    x: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let channels = |v: Vec<f64>| channel_tensor(v, x);
    if residual {
        let both = s2
            .track_op()
            .then(|| channels([ga, gb].concat()))
            .transpose()?;
        Ok((both, s3.track_op().then_some(g)))
    } else {
        let ga = s2.track_op().then(|| channels(ga)).transpose()?;
        let gb = s3.track_op().then(|| channels(gb)).transpose()?;
        Ok((ga, gb))
    }
}

/// (x, scale, shift) -> x * scale[c] + shift[c] (then ReLU'd with `relu`): eval mode's map;
/// with `residual`, (x, [scale | shift], residual) -> the same plus the residual before the ReLU.
struct ChannelAffine {
    relu: bool,
    residual: bool,
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
        fn run<T: Element>(op: &ChannelAffine, p: Planes, x: &[T], s2: &[T], s3: &[T]) -> Vec<T> {
            let (a, b, residual) = split_inputs(op.residual, s2, s3);
            let zero = vec![0.0; p.c];
            sweeps::normalise(p, x, &zero, &to_f64(a), &to_f64(b), (residual, op.relu))
        }
        let y = dispatch3(
            "batch_norm",
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, a, b| run(self, p, x, a, b),
            |x, a, b| run(self, p, x, a, b),
        )?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        s2: &Tensor,
        s3: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = x.dim(1)?;
        let (g, relu) = gradient_past_add_relu(self.residual, self.relu, y, gy)?;
        let back = Backward {
            mean: vec![0.0; c],
            coefficients: Coefficients::Affine {
                scale: s2.to_dtype(DType::F64)?.to_vec1()?[..c].to_vec(),
            },
            relu,
            sums: Mutex::default(),
        };
        let gx = back.apply(x, &g, y)?;
        let (sum_gy, sum_gy_x) = std::mem::take(&mut *back.sums.lock().unwrap());
        let (g2, g3) = param_grads(self.residual, (s2, s3), (sum_gy_x, sum_gy), g, x)?;
        Ok((x.track_op().then_some(gx), g2, g3))
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
        let (sum_gy, sum_gy_xc) = sweeps::grad_sums(p, x, gy, &self.mean, mask);
        let m = (p.n * p.hw) as f64;
        let gx = match &self.coefficients {
            Coefficients::Affine { scale } => {
                let zero = vec![0.0; p.c];
                sweeps::input_grad(p, gy, x, &zero, [scale, &zero, &zero], mask)
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
                sweeps::input_grad(p, gy, x, &self.mean, [&a, &b, &d], mask)
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
