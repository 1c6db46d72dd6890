//! CUDA against the CPU in one process: the same weights (copied from the CPU model) and
//! the same batch on both devices, logits, loss and every gradient compared by relative
//! error with the tolerances cnn-models' parity tests hold the CPU path to (that path is
//! the one checked against PyTorch).

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use cnn_models::{Model, Pass};

/// Tolerances of `crates/cnn-models/tests/parity.rs`: logits and loss, then gradients.
/// Train mode's gradients get the looser one there: batch statistics of float32 sums.
const EVAL_TOL: (f64, f64) = (1e-5, 1e-4);
const TRAIN_TOL: (f64, f64) = (1e-5, 1e-2);

/// `||a - b|| / ||b||`, both read back to the host in float64.
fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let host = |t: &Tensor| -> Result<Tensor> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?)
    };
    let (a, b) = (host(a)?, host(b)?);
    let diff = (&a - &b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    let norm = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    Ok(if norm == 0.0 { diff } else { diff / norm })
}

/// One pass's logits, loss and gradients.
struct Run {
    logits: Tensor,
    loss: Tensor,
    grads: GradStore,
}

fn run(model: &Model, x: &Tensor, labels: &Tensor, pass: &Pass) -> Result<Run> {
    let logits = model.forward(x, pass)?;
    let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
    let grads = loss.backward()?;
    Ok(Run {
        logits,
        loss,
        grads,
    })
}

/// Checks `arch` on `cuda` (the device under test) against the CPU at `batch` images of `size` px, in eval and
/// train mode; prints one `PARITY` line per mode and returns whether both held.
pub fn check(cuda: &Device, arch: &str, batch: usize, size: usize) -> Result<bool> {
    let cpu_model = Model::new(arch, 10, 0, &Device::Cpu)?;
    let gpu_model = Model::new(arch, 10, 0, cuda)?;
    // Through torchvision's layout: each model holds its kernels as its device's path wants.
    for (from, to) in cpu_model
        .params()
        .all()
        .iter()
        .zip(gpu_model.params().all())
    {
        let value = from.to_torch(from.var.as_tensor())?.to_device(cuda)?;
        to.var.set(&to.from_torch(&value)?)?;
    }
    let x_cpu = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % 10).collect();
    let y_cpu = Tensor::from_vec(labels, batch, &Device::Cpu)?;
    let (x_gpu, y_gpu) = (x_cpu.to_device(cuda)?, y_cpu.to_device(cuda)?);
    let mut ok = true;
    // Eval first: the train pass moves the batch norm buffers on both models alike.
    for (mode, pass, (tol_out, tol_grad)) in [
        ("eval", Pass::eval(), EVAL_TOL),
        ("train", Pass::train(7), TRAIN_TOL),
    ] {
        let c = run(&cpu_model, &x_cpu, &y_cpu, &pass)?;
        let g = run(&gpu_model, &x_gpu, &y_gpu, &pass)?;
        let logits = relative_error(&g.logits, &c.logits)?;
        let loss = relative_error(&g.loss.reshape(1)?, &c.loss.reshape(1)?)?;
        let mut worst = (0.0f64, String::from("-"));
        let mut count = 0;
        let mut missing = Vec::new();
        for (pc, pg) in cpu_model
            .params()
            .trainable()
            .zip(gpu_model.params().trainable())
        {
            match (
                c.grads.get(pc.var.as_tensor()),
                g.grads.get(pg.var.as_tensor()),
            ) {
                (Some(gc), Some(gg)) => {
                    let e = relative_error(&pg.to_torch(gg)?, &pc.to_torch(gc)?)?;
                    count += 1;
                    if e > worst.0 || e.is_nan() {
                        worst = (e, pc.name.clone());
                    }
                }
                _ => missing.push(pc.name.clone()),
            }
        }
        // Batch norm buffers after the pass (train mode moves them): shown, not judged.
        let mut buffers = 0.0f64;
        for (pc, pg) in cpu_model
            .params()
            .all()
            .iter()
            .zip(gpu_model.params().all())
        {
            if pc.kind == cnn_models::ParamKind::Buffer {
                let (b_gpu, b_cpu) = (pg.var.as_tensor(), pc.var.as_tensor());
                buffers = buffers.max(relative_error(b_gpu, b_cpu)?);
            }
        }
        let held = logits < tol_out
            && loss < tol_out
            && worst.0 < tol_grad
            && missing.is_empty()
            && count > 0;
        ok &= held;
        println!(
            "PARITY arch={arch} pass={mode} batch={batch} size={size} logits_rel={logits:.2e} \
             loss_rel={loss:.2e} grads={count} worst_grad_rel={:.2e} worst_grad={} \
             buffers_rel={buffers:.2e} tol={tol_out:.0e}/{tol_grad:.0e} missing={} {}",
            worst.0,
            worst.1,
            missing.len(),
            if held { "ok" } else { "FAIL" }
        );
    }
    Ok(ok)
}
