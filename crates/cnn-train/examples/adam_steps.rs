//! Several Adam training steps of a ResNet or AlexNet from given weights on given batches,
//! in float32 or float64: this project's side of `scripts/resnet-depth/one_step.py`, which
//! runs the same steps in PyTorch and compares the results.
//!
//! ```text
//! cargo run --release -p cnn-train --example adam_steps -- \
//!     --arch resnet34 --classes 10 --weights init.safetensors --batches batches.safetensors \
//!     --steps 20 --lr 1e-3 --dtype f64 --save-at 1,5,20 --out-prefix out/ours_f64
//! ```
//! `--weights` holds torchvision's `state_dict` (BatchNorm running statistics included;
//! `num_batches_tracked` is ignored). `--batches` holds `x.0`, `y.0`, `x.1`, `y.1`, ...:
//! images NCHW (any float dtype) and labels (any integer dtype); step `k` (1-based) trains
//! on batch `(k - 1) % count`. Each step runs `cnn_train::train_step` in train mode with
//! `torch.optim.Adam`'s defaults and no weight decay, and prints `STEP k LOSS v`; after each
//! step named in `--save-at` every tensor (parameters and running statistics, torchvision's
//! names and layout) is written to `PREFIX_stepK.safetensors`. `--grads FILE` also writes
//! the gradients of the first step's loss (torchvision's names and layout), taken on a copy
//! of the model so the steps themselves are untouched. `--kernels` picks the CPU kernels
//! by a name of `cnn_ops::CpuChoice::named`, such as `ours` (the default),
//! `no-winograd4x4` (F(2x2, 3x3) where F(4x4, 3x3) would run), `no-winograd` (im2col +
//! GEMM for every convolution) or `candle` (candle's own ops), to tell one kernel's
//! rounding from the rest.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use cnn_models::{Model, Pass};
use cnn_train::{train_step, Optimizer, OptimizerState, Step};
use std::collections::HashMap;
use std::path::PathBuf;

struct Args {
    arch: String,
    classes: usize,
    weights: PathBuf,
    batches: PathBuf,
    steps: u64,
    lr: f64,
    dtype: DType,
    save_at: Vec<u64>,
    out_prefix: String,
    grads: Option<PathBuf>,
    kernels: cnn_ops::CpuChoice,
}

/// The kernel set `--kernels NAME` names.
fn kernels(name: &str) -> Result<cnn_ops::CpuChoice> {
    cnn_ops::CpuChoice::named(name).with_context(|| {
        format!(
            "--kernels must be one of {}, got {name}",
            cnn_ops::CpuChoice::NAMES.join(", ")
        )
    })
}

fn parse_args() -> Result<Args> {
    let mut arch = "resnet34".to_string();
    let mut classes = 10;
    let (mut weights, mut batches, mut out_prefix, mut grads) = (None, None, None, None);
    let (mut steps, mut lr, mut dtype) = (1, 1e-3, DType::F32);
    let mut save_at = Vec::new();
    let mut kernel_set = cnn_ops::CpuChoice::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--arch" => arch = value()?,
            "--classes" => classes = value()?.parse().context("--classes")?,
            "--weights" => weights = Some(PathBuf::from(value()?)),
            "--batches" => batches = Some(PathBuf::from(value()?)),
            "--steps" => steps = value()?.parse().context("--steps")?,
            "--lr" => lr = value()?.parse().context("--lr")?,
            "--dtype" => {
                dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "f64" => DType::F64,
                    other => bail!("--dtype must be f32 or f64, got {other}"),
                }
            }
            "--save-at" => {
                for k in value()?.split(',') {
                    save_at.push(k.trim().parse().with_context(|| format!("--save-at {k}"))?);
                }
            }
            "--out-prefix" => out_prefix = Some(value()?),
            "--grads" => grads = Some(PathBuf::from(value()?)),
            "--kernels" => kernel_set = kernels(&value()?)?,
            other => bail!("unknown argument {other} (see the example's doc comment)"),
        }
    }
    if save_at.is_empty() {
        save_at.push(steps);
    }
    Ok(Args {
        arch,
        classes,
        weights: weights.context("--weights FILE is required")?,
        batches: batches.context("--batches FILE is required")?,
        steps,
        lr,
        dtype,
        save_at,
        out_prefix: out_prefix.context("--out-prefix PREFIX is required")?,
        grads,
        kernels: kernel_set,
    })
}

/// The batches `(x.i, y.i)` of `path`, images in `dtype` and labels as u32.
fn load_batches(path: &PathBuf, dtype: DType) -> Result<Vec<(Tensor, Tensor)>> {
    let file = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("{}: cannot read batches", path.display()))?;
    let mut out = Vec::new();
    while let Some(x) = file.get(&format!("x.{}", out.len())) {
        let i = out.len();
        let y = file
            .get(&format!("y.{i}"))
            .with_context(|| format!("{}: has x.{i} but no y.{i}", path.display()))?;
        if !x.dtype().is_float() || y.dtype().is_float() {
            bail!(
                "{}: x.{i} must be float and y.{i} integer, got {:?} and {:?}",
                path.display(),
                x.dtype(),
                y.dtype()
            );
        }
        if x.rank() != 4 || y.dims() != [x.dim(0)?] {
            bail!(
                "{}: x.{i} must be NCHW and y.{i} hold one label per image, got {:?} and {:?}",
                path.display(),
                x.dims(),
                y.dims()
            );
        }
        out.push((x.to_dtype(dtype)?, y.to_dtype(DType::U32)?));
    }
    if out.is_empty() {
        bail!("{}: no batch x.0 / y.0 in the file", path.display());
    }
    Ok(out)
}

/// Writes the gradients of `args.weights`' mean cross-entropy on `batch` (train mode) to
/// `path`, computed on a model of its own.
fn save_grads(args: &Args, (x, y): &(Tensor, Tensor), path: &PathBuf) -> Result<()> {
    let model = Model::with_dtype(&args.arch, args.classes, 0, &Device::Cpu, args.dtype)?;
    model.load_weights(&args.weights)?;
    let logits = model.forward(x, &Pass::train(0))?;
    let grads = candle_nn::loss::cross_entropy(&logits, y)?.backward()?;
    let mut out = HashMap::new();
    for p in model.params().trainable() {
        let g = grads
            .get(p.var.as_tensor())
            .with_context(|| format!("no gradient for {}", p.name))?;
        out.insert(p.name.clone(), p.to_torch(g)?);
    }
    candle_core::safetensors::save(&out, path)
        .with_context(|| format!("{}: cannot write gradients", path.display()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    cnn_ops::set_cpu_choice(args.kernels);
    let device = Device::Cpu;
    let model = Model::with_dtype(&args.arch, args.classes, 0, &device, args.dtype)?;
    model.load_weights(&args.weights)?;
    let batches = load_batches(&args.batches, args.dtype)?;
    if let Some(path) = &args.grads {
        save_grads(&args, &batches[0], path)?;
    }
    let mut opt = OptimizerState::new(Optimizer::adam(), 0.0);
    for k in 1..=args.steps {
        let (x, y) = &batches[((k - 1) % batches.len() as u64) as usize];
        match train_step(&model, &mut opt, (x, y), args.lr, 0)? {
            Step::Updated { loss, .. } => println!("STEP {k} LOSS {loss:e}"),
            Step::Diverged { loss } => bail!("step {k}: loss {loss} is not finite"),
        }
        if args.save_at.contains(&k) {
            let path = format!("{}_step{k}.safetensors", args.out_prefix);
            model.save_weights(&path)?;
        }
    }
    Ok(())
}
