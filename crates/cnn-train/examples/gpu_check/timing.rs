//! The training step on the device, timed as `../shared/bench/torch_gpu_baseline.py` times
//! PyTorch's: a fixed random batch already on the device, forward + cross-entropy +
//! backward + AdamW (lr 1e-4, weight decay 0.01: `torch.optim.AdamW`'s defaults), warm-up
//! steps, then rounds of steps each closed by a synchronisation, the median round's time per
//! step; peak memory is the pool's high-water mark of tensor bytes over the timed steps (MiB,
//! as the script's `max_memory_allocated() / 2**20`).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use cnn_models::Model;
use cnn_train::memory::{reset_tensor_peak, tensor_bytes};
use cnn_train::{train_step, Optimizer, OptimizerState, Step};
use std::time::Instant;

/// Sizes and counts of the timed steps (the Python script's defaults: 10, 20, 3).
pub struct Protocol {
    pub batch: usize,
    pub size: usize,
    pub warmup: usize,
    pub steps: usize,
    pub rounds: usize,
}

/// One network's measured step.
pub struct Timed {
    arch: String,
    batch: usize,
    size: usize,
    step_s: f64,
    /// Peak and held-after tensor bytes over the timed steps; `None` without a pool.
    peak: Option<u64>,
    held: Option<u64>,
    loss: f64,
}

impl Timed {
    /// `OURS arch=... img_per_s=... step_ms=... peak_mb=...` (MiB), the line the device
    /// script joins with PyTorch's.
    pub fn line(&self) -> String {
        let mib =
            |b: Option<u64>| b.map_or("na".into(), |b| format!("{:.0}", b as f64 / 1048576.0));
        format!(
            "OURS arch={} res={} batch={} precision=fp32 tf32={} conv={} img_per_s={:.1} \
             step_ms={:.2} peak_mb={} held_mb={} last_loss={:.4}",
            self.arch,
            self.size,
            self.batch,
            tf32_setting(),
            if cfg!(feature = "cudnn") {
                "cudnn"
            } else {
                "candle"
            },
            self.batch as f64 / self.step_s,
            self.step_s * 1e3,
            mib(self.peak),
            mib(self.held),
            self.loss
        )
    }
}

/// Times `arch`'s training step on `device` under `p`.
pub fn run(device: &Device, arch: &str, p: &Protocol) -> Result<Timed> {
    let model = Model::new(arch, 10, 0, device)?;
    let mut opt = OptimizerState::new(Optimizer::adamw(), 0.01);
    let x = Tensor::randn(0f32, 1f32, (p.batch, 3, p.size, p.size), device)?;
    let labels: Vec<u32> = (0..p.batch as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, p.batch, device)?;
    let mut seed = 0u64;
    let mut step = || -> Result<f64> {
        seed += 1;
        match train_step(&model, &mut opt, (&x, &y), 1e-4, seed)? {
            Step::Updated { loss, .. } => Ok(loss),
            Step::Diverged { loss } => bail!("{arch}: loss {loss} is not finite"),
        }
    };
    let mut loss = f64::NAN;
    for _ in 0..p.warmup {
        loss = step()?;
    }
    device.synchronize()?;
    reset_tensor_peak(device);
    let mut per_step = Vec::with_capacity(p.rounds);
    for _ in 0..p.rounds {
        let t0 = Instant::now();
        for _ in 0..p.steps {
            loss = step()?;
        }
        device.synchronize()?;
        per_step.push(t0.elapsed().as_secs_f64() / p.steps.max(1) as f64);
    }
    per_step.sort_by(f64::total_cmp);
    let pool = tensor_bytes(device);
    Ok(Timed {
        arch: arch.to_string(),
        batch: p.batch,
        size: p.size,
        step_s: per_step[per_step.len() / 2],
        peak: pool.map(|b| b.peak),
        held: pool.map(|b| b.held),
        loss,
    })
}

/// Lets (or stops) cuBLAS's float32 matmuls and, in a `cudnn` build, cuDNN's convolutions
/// use TF32.
pub fn allow_tf32(on: bool) {
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
    #[cfg(feature = "cudnn")]
    cnn_ops::set_cudnn_tf32(on);
    let _ = on;
}

/// Whether the timed steps may use TF32: `tf32=gemm,conv` as 0/1 each (conv is `-` without
/// cuDNN: candle's own convolution kernels never use it).
fn tf32_setting() -> String {
    #[cfg(feature = "cuda")]
    let gemm = candle_core::cuda_backend::gemm_reduced_precision_f32() as u8;
    #[cfg(not(feature = "cuda"))]
    let gemm = 0;
    #[cfg(feature = "cudnn")]
    let conv = (cnn_ops::cudnn_tf32() as u8).to_string();
    #[cfg(not(feature = "cudnn"))]
    let conv = "-";
    format!("{gemm},{conv}")
}

/// `DEVICE name=... driver_api=... async_pool=... cudnn=...`: what the binary sees of the card.
pub fn device_line(device: &Device) -> String {
    let held = tensor_bytes(device).map(|b| b.held);
    format!("DEVICE{} tensor_bytes_now={held:?}", card(device))
}

#[cfg(feature = "cuda")]
fn card(device: &Device) -> String {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let Ok(cuda) = device.as_cuda_device() else {
        return String::new();
    };
    let stream = cuda.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().unwrap_or_else(|e| format!("? ({e})"));
    let mut version = 0i32;
    // SAFETY: writes one int.
    let _ = unsafe { sys::cuDriverGetVersion(&mut version) };
    #[cfg(feature = "cudnn")]
    let cudnn = format!(" cudnn={}", cnn_ops::cudnn_version());
    #[cfg(not(feature = "cudnn"))]
    let cudnn = "";
    format!(
        " name=\"{name}\" driver_api={}.{} async_pool={}{cudnn}",
        version / 1000,
        version % 1000 / 10,
        ctx.has_async_alloc(),
    )
}

#[cfg(not(feature = "cuda"))]
fn card(_device: &Device) -> String {
    String::new()
}
