//! `cargo xtask bench`: images/s of a training step and of inference per model and input
//! size, each row in its own process (for its peak RSS), against PyTorch (`--torch`) and
//! candle's own kernels (`--baseline candle`) in the same run, interleaved; `--conv` instead
//! measures each convolution layer's passes against candle's `conv2d`.
//!
//! A row's process is this binary re-run as `<exe> bench --worker ROW ...`, so `main` must
//! hand the arguments after `bench` to [`run`]. The jobs: `matrix` (the default table),
//! `worker` (inside a row's process), `conv_layers` (`--conv`), `op_times` (`--op-times`),
//! `pipeline` (`cargo xtask bench pipeline`); `process` runs and reads the workers.

mod conv_layers;
mod matrix;
mod op_times;
pub mod pipeline;
mod process;
mod worker;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, ValueEnum};
use cnn_ops::CpuChoice;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const SUBCOMMAND: &str = "bench";
const DEFAULT_ROWS: &str =
    "alexnet:224,alexnet:64,resnet18:224,resnet18:64,resnet18:32,resnet34:224";

/// Train and inference throughput per model@resolution, against PyTorch and candle.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// Rows to measure, as model:resolution, comma separated.
    #[arg(long, default_value = DEFAULT_ROWS)]
    rows: String,
    /// A Python with torch and torchvision: run ../shared/bench/torch_baseline.py (or under
    /// $CNN_SHARED_DIR) for the same rows, interleaved, and print ratio=ours/torch per row.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Also run each row with these kernel sets, interleaved, and print our speedup over each
    /// (candle = stock candle; the others switch on only some of ours, to measure each).
    #[arg(long, value_enum, value_delimiter = ',')]
    baseline: Vec<Baseline>,
    /// Passes to time.
    #[arg(long, value_delimiter = ',', default_value = "train,infer")]
    modes: Vec<Mode>,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps per row (median and spread are over these).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Times to measure each row, the frameworks (and kernel sets) alternating within each
    /// round: the table shows medians over the rounds, the ratio as the median of each
    /// round's own ratio, so that a drift of the machine between rows or rounds cancels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// glibc allocator settings of every measured process (both frameworks get the same).
    #[arg(long, value_enum, default_value_t = Malloc::Tuned)]
    malloc: Malloc,
    /// Instead of the model rows: each conv layer of ResNet18 and AlexNet, our kernels
    /// against candle's conv2d (forward, input gradient, weight gradient), in GFLOP/s.
    #[arg(long)]
    conv: bool,
    /// Input size of the `--conv` layers.
    #[arg(long, default_value_t = 224)]
    conv_res: usize,
    /// Batch of the `--conv` layers.
    #[arg(long, default_value_t = 8)]
    conv_batch: usize,
    /// Internal: measure one row in this process and print a RESULT line.
    #[arg(long, hide = true)]
    worker: Option<String>,
    #[arg(long, hide = true, value_enum, default_value_t = Mode::Train)]
    worker_mode: Mode,
    #[arg(
        long,
        hide = true,
        value_enum,
        value_delimiter = ',',
        default_value = "ours"
    )]
    worker_kernels: Vec<Baseline>,
    /// With --baseline: time every kernel set in one process per row, alternating step by
    /// step, so all see the same machine load (peak RSS is then the process's, shared).
    #[arg(long)]
    interleave: bool,
    /// Also print where our step goes under each row: forward, backward and optimiser, and
    /// the most costly ops by input shapes, in ms per step, timed in one more process (the
    /// measured rows run without the timing).
    #[arg(long)]
    op_times: bool,
    /// Internal: time the phases and ops of the steps and print OPTIME lines.
    #[arg(long, hide = true)]
    worker_op_times: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Forward, cross-entropy, backward and an in-place AdamW update.
    Train,
    /// Forward in eval mode, no gradient.
    Infer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// This project's kernels.
    Ours,
    /// candle's own conv2d, composed batch norm and relu.
    Candle,
    /// Only our convolution.
    Conv,
    /// Our convolution and batch norm (candle's relu and matmul).
    ConvBn,
    /// Our convolution, batch norm and relu (candle's matmul for linear layers).
    ConvBnRelu,
    /// All ours, but each conv GEMM split across threads instead of the batch.
    GemmSplit,
    /// All ours, but every convolution through im2col + GEMM (no Winograd).
    NoWinograd,
    /// All ours, but Winograd F(2x2, 3x3) where F(4x4, 3x3) would run.
    NoWinograd4x4,
    /// All ours, but small maps through im2col + GEMM too (no tap-by-tap GEMMs).
    NoTaps,
    /// All ours, but the portable loops (baseline x86-64) instead of the AVX-512 and AVX2 code.
    NoSimd,
}

impl Baseline {
    fn kernels(self) -> CpuChoice {
        CpuChoice::named(kernels_name(self)).expect("every baseline's name is a CpuChoice name")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Malloc {
    /// glibc's defaults.
    Default,
    /// Keep freed memory for reuse: no mmap per large block, no trimming of the heap, one
    /// arena for all threads (as `cnn_train::tune_for_training`), so steady-state steps
    /// touch few fresh pages (each costs ~15x a reused one on this VM).
    Tuned,
}

impl Malloc {
    /// Whether this process started with these settings (glibc reads them at start only).
    fn in_effect(self) -> bool {
        let set = |(k, v): &(&str, &str)| std::env::var(k).is_ok_and(|value| value == *v);
        self.env().iter().all(set)
    }

    fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Malloc::Default => vec![],
            Malloc::Tuned => vec![
                ("MALLOC_MMAP_MAX_", "0"),
                ("MALLOC_TRIM_THRESHOLD_", "17179869184"),
                ("MALLOC_TOP_PAD_", "268435456"),
                ("MALLOC_ARENA_MAX", "1"),
            ],
        }
    }
}

/// Runs the bench; `args` are the command-line arguments after `bench`.
pub fn run(args: &[String]) -> Result<()> {
    let args = match Args::try_parse_from(
        std::iter::once(SUBCOMMAND.to_string()).chain(args.iter().cloned()),
    ) {
        Ok(args) => args,
        // --help is an answer, not an error; clap prints it (and real errors) itself.
        Err(e) => e.exit(),
    };
    if let Some(row) = &args.worker {
        if !args.malloc.in_effect() {
            return rerun_with(args.malloc);
        }
        // On a pool thread, as cnn-train runs its steps, so that this thread computes too.
        let row = Row::parse(row)?;
        return cnn_train::on_compute_pool(None, || worker::worker(&args, &row))?;
    }
    if args.conv {
        return conv_layers::conv_layers(&args);
    }
    matrix::matrix(&args)
}

/// Runs this command again in a child process that starts with `malloc`'s settings: a
/// worker started by hand (`--worker`, whose `--malloc` defaults to tuned) would otherwise
/// run on glibc's defaults, unlike the matrix's workers, and touch fresh pages every step
/// (ResNet18@64 training: ~4,700 page faults a step against none).
fn rerun_with(malloc: Malloc) -> Result<()> {
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .envs(malloc.env())
        .status()?;
    if !status.success() {
        bail!("the worker, run again with malloc {malloc:?}, failed: {status}");
    }
    Ok(())
}

/// `malloc` as `--malloc` takes it (clap's name for the value).
fn malloc_arg(malloc: Malloc) -> String {
    malloc
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// One model at one input size.
#[derive(Clone, Debug)]
struct Row {
    arch: String,
    res: usize,
}

impl Row {
    fn parse(s: &str) -> Result<Self> {
        let (arch, res) = s
            .split_once(':')
            .with_context(|| format!("row {s:?}: expected model:resolution"))?;
        Ok(Self {
            arch: arch.to_string(),
            res: res
                .parse()
                .with_context(|| format!("row {s:?}: bad resolution"))?,
        })
    }

    fn label(&self) -> String {
        format!("{}:{}", self.arch, self.res)
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Train => "train",
        Mode::Infer => "infer",
    }
}

fn kernels_name(k: Baseline) -> &'static str {
    match k {
        Baseline::Ours => "ours",
        Baseline::Candle => "candle",
        Baseline::Conv => "conv",
        Baseline::ConvBn => "conv-bn",
        Baseline::ConvBnRelu => "conv-bn-relu",
        Baseline::GemmSplit => "gemm-split",
        Baseline::NoWinograd => "no-winograd",
        Baseline::NoWinograd4x4 => "no-winograd4x4",
        Baseline::NoTaps => "no-taps",
        Baseline::NoSimd => "no-simd",
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median seconds of `reps` runs of each closure, interleaved so both see the same noise.
fn interleaved(
    reps: usize,
    mut a: impl FnMut() -> Result<Tensor>,
    mut b: impl FnMut() -> Result<Tensor>,
) -> Result<(f64, f64)> {
    a()?;
    b()?;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t0 = Instant::now();
        a()?.to_dtype(DType::F32)?; // a CPU op finishes before it returns
        ta.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        b()?.to_dtype(DType::F32)?;
        tb.push(t0.elapsed().as_secs_f64());
    }
    Ok((median(&mut ta), median(&mut tb)))
}

/// This machine's SGEMM rate on the pool's threads (2048^3 through candle's matmul, i.e.
/// the gemm crate; median of `steps`, at least 5), as a line to print: the peak the
/// kernels' GFLOP/s compare with, and what tells one host from another when tables
/// measured on different days disagree.
fn sgemm_line(steps: usize) -> Result<String> {
    Ok(format!(
        "SGEMM 2048x2048x2048 (candle matmul = the gemm crate): {:.1} GFLOP/s",
        sgemm_gflops(steps)?
    ))
}

/// GFLOP/s of a 2048^3 SGEMM through candle's matmul on the pool's threads (median of
/// `steps`, at least 5).
pub fn sgemm_gflops(steps: usize) -> Result<f64> {
    let (dev, m) = (Device::Cpu, 2048);
    let a = Tensor::randn(0f32, 1., (m, m), &dev)?;
    let b = Tensor::randn(0f32, 1., (m, m), &dev)?;
    let (t, _) = interleaved(steps.max(5), || Ok(a.matmul(&b)?), || Ok(a.clone()))?;
    Ok(2.0 * (m * m * m) as f64 / t / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_baseline_names_a_cpu_choice() {
        for b in Baseline::value_variants() {
            assert!(CpuChoice::named(kernels_name(*b)).is_some(), "{b:?}");
        }
    }
}
