//! The GPU check's Rust side: CUDA against the CPU on the same weights and batch, then the
//! training step of each network timed on the device, as `scripts/gpu/device.sh` runs it.
//!
//! ```text
//! cargo build --release -p cnn-train --features cuda --example gpu_check
//! gpu_check [--parity-batch 8] [--batch 64] [--size 224] [--warmup 10] [--steps 20]
//!           [--rounds 3] [--no-parity] [--no-timing] [--tf32] [--cpu] [ARCH...]
//! ```
//! `--tf32` lets cuBLAS's matmuls and (in a `cudnn` build) cuDNN's convolutions use TF32, as
//! PyTorch's defaults do for convolutions; parity is checked without it either way. `--cpu`
//! runs it all with the CPU standing in for the device: a dry run of this program's logic
//! on a machine without a GPU (its parity is then the CPU against itself).
//! Prints `DEVICE ...`, one `PARITY ...` line per network and pass, and one `OURS ...` line per
//! network; the script joins the `OURS` lines with PyTorch's into the issue's `RESULT` lines.
//! An example of cnn-train rather than an xtask command: it needs only the crates (the step
//! and AdamW of cnn-train, the pool counters of its `memory`), builds with their `cuda`
//! feature alone and stays small enough to carry; xtask would bring plotters and the report.

mod parity;
mod timing;

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// What to run, from the command line.
struct Args {
    cpu: bool,
    tf32: bool,
    parity: bool,
    timing: bool,
    parity_batch: usize,
    step: timing::Protocol,
    archs: Vec<String>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        cpu: false,
        tf32: false,
        parity: true,
        timing: true,
        parity_batch: 8,
        step: timing::Protocol {
            batch: 64,
            size: 224,
            warmup: 10,
            steps: 20,
            rounds: 3,
        },
        archs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} {v}: not a count"))
        };
        match arg.as_str() {
            "--no-parity" => a.parity = false,
            "--no-timing" => a.timing = false,
            "--tf32" => a.tf32 = true,
            "--cpu" => a.cpu = true,
            "--parity-batch" => a.parity_batch = value(&arg)?,
            "--batch" => a.step.batch = value(&arg)?,
            "--size" => a.step.size = value(&arg)?,
            "--warmup" => a.step.warmup = value(&arg)?,
            "--steps" => a.step.steps = value(&arg)?,
            "--rounds" => a.step.rounds = value(&arg)?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => a.archs.push(s.to_string()),
        }
    }
    if a.archs.is_empty() {
        a.archs = ["alexnet", "alexnet-d2l", "resnet18", "resnet34"]
            .map(String::from)
            .to_vec();
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse()?;
    let device = match args.cpu {
        true => Device::Cpu,
        false => Device::new_cuda(0).context("no CUDA device (is this the GPU machine?)")?,
    };
    println!("{}", timing::device_line(&device));
    let mut failed = Vec::new();
    if args.parity {
        for arch in &args.archs {
            if !parity::check(&device, arch, args.parity_batch, args.step.size)? {
                failed.push(arch.clone());
            }
        }
    }
    if args.timing {
        timing::allow_tf32(args.tf32);
        for arch in &args.archs {
            println!("{}", timing::run(&device, arch, &args.step)?.line());
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => bail!(
            "CUDA outside the CPU's tolerances for {}",
            failed.join(", ")
        ),
    }
}
