//! Checks a device (e.g. a CUDA GPU) against the PyTorch parity fixture and times training
//! steps there: `cargo run --release --example device_check --features cuda -- FIXTURE_DIR cuda`.
//!
//! Prints the relative error of eval/train logits, losses and gradients against the fixture,
//! then images/s of forward + backward + an SGD update for each network at 224x224.

use candle_core::{DType, Device, Tensor};
use cnn_models::{Model, Pass};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn relative_error(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?;
    Ok(diff / b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f64>()?)
}

fn parity(dir: &Path, dev: &Device) -> anyhow::Result<()> {
    let model = Model::new("resnet18", 10, 0, dev)?;
    model.load_weights(dir.join("resnet18.weights.safetensors"))?;
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("resnet18.expected.safetensors"), dev)?;
    let labels = expected["labels"].to_dtype(DType::U32)?;
    for (mode, pass, prefix) in [
        ("eval", Pass::eval(), "grad."),
        ("train", Pass::train(0), "grad_train."),
    ] {
        let logits = model.forward(&expected["input"], &pass)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let grads = loss.backward()?;
        println!(
            "PARITY {mode} logits rel_err={:.2e}",
            relative_error(&logits, &expected[&format!("logits_{mode}")])?
        );
        println!(
            "PARITY {mode} loss rel_err={:.2e}",
            relative_error(&loss.reshape(1)?, &expected[&format!("loss_{mode}")])?
        );
        let mut names: Vec<&String> = expected.keys().filter(|k| k.starts_with(prefix)).collect();
        names.sort();
        for key in names {
            let var = &model
                .params()
                .get(&key[prefix.len()..])
                .expect("fixture names a model tensor")
                .var;
            let g = grads.get(var.as_tensor()).expect("gradient");
            println!(
                "PARITY {mode} {key} rel_err={:.2e}",
                relative_error(g, &expected[key])?
            );
        }
    }
    Ok(())
}

fn timing(dev: &Device, arch: &str, batch: usize, size: usize) -> anyhow::Result<()> {
    let model = Model::new(arch, 10, 0, dev)?;
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), dev)?;
    let y = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        batch,
        dev,
    )?;
    let mut times = Vec::new();
    for step in 0..8 {
        let t = Instant::now();
        let loss = candle_nn::loss::cross_entropy(&model.forward(&x, &Pass::train(step))?, &y)?;
        let grads = loss.backward()?;
        for p in model.params().trainable() {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                p.var.set(&(p.var.as_tensor() - (g * 1e-3)?)?)?;
            }
        }
        let value = loss.to_scalar::<f32>()?; // waits for the device
        if step >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
        if step == 7 {
            println!("loss after 8 steps: {value:.4}");
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "TRAIN {arch} batch={batch} res={size} step_s={median:.4} img_per_s={:.1}",
        batch as f64 / median
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("../shared/reference/parity"),
    );
    let dev = match args.get(2).map(String::as_str) {
        Some("cuda") => Device::new_cuda(0)?,
        _ => Device::Cpu,
    };
    println!("device: {dev:?}");
    parity(&dir, &dev)?;
    let batch = if dev.is_cpu() { 4 } else { 64 };
    for arch in ["alexnet-d2l", "alexnet", "resnet18", "resnet34"] {
        timing(&dev, arch, batch, 224)?;
    }
    Ok(())
}
