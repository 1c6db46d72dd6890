//! `cargo xtask bench`: images/s of a training step and of inference per model and input
//! size, each row in its own process (for its peak RSS), against PyTorch (`--torch`) and
//! candle's own kernels (`--baseline candle`) in the same run, interleaved; `--conv` instead
//! measures each convolution layer's passes against candle's `conv2d`.
//!
//! A row's process is this binary re-run as `<exe> bench --worker ROW ...`, so `main` must
//! hand the arguments after `bench` to [`run`].

use crate::bench_op_times;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use clap::{Parser, ValueEnum};
use cnn_models::{Model, Pass};
use cnn_ops::{self as ops, CpuChoice};
use cnn_train::{Optimizer, OptimizerState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
        let candle = CpuChoice::candle();
        match self {
            Baseline::Ours => CpuChoice::default(),
            Baseline::Candle => candle,
            Baseline::Conv => CpuChoice {
                conv: true,
                ..candle
            },
            Baseline::ConvBn => CpuChoice {
                conv: true,
                batch_norm: true,
                ..candle
            },
            Baseline::ConvBnRelu => CpuChoice {
                linear: false,
                ..CpuChoice::default()
            },
            Baseline::GemmSplit => CpuChoice {
                conv_split_batch: false,
                ..CpuChoice::default()
            },
            Baseline::NoWinograd => CpuChoice {
                winograd: false,
                ..CpuChoice::default()
            },
            Baseline::NoWinograd4x4 => CpuChoice {
                winograd_4x4: false,
                ..CpuChoice::default()
            },
            Baseline::NoTaps => CpuChoice {
                taps: false,
                ..CpuChoice::default()
            },
            Baseline::NoSimd => CpuChoice {
                simd: false,
                ..CpuChoice::default()
            },
        }
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
        return cnn_train::on_compute_pool(None, || worker(&args, &row))?;
    }
    if args.conv {
        return conv_layers(&args);
    }
    matrix(&args)
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

/// One measured process's figures.
#[derive(Clone, Debug)]
struct Measure {
    img_per_s: f64,
    /// Slowest and fastest step, in images/s.
    spread: (f64, f64),
    peak_rss_mb: f64,
}

impl Measure {
    fn from_result(fields: &HashMap<String, String>, batch: usize) -> Result<Self> {
        let get = |k: &str| -> Result<f64> {
            fields
                .get(k)
                .with_context(|| format!("RESULT line lacks {k}"))?
                .parse::<f64>()
                .with_context(|| format!("RESULT {k} is not a number"))
        };
        let b = batch as f64;
        Ok(Self {
            img_per_s: get("img_per_s")?,
            spread: (b / get("max_s")?, b / get("min_s")?),
            peak_rss_mb: get("peak_rss_mb")?,
        })
    }

    fn show(&self) -> String {
        format!(
            "{:7.2} img/s [{:.2}-{:.2}] rss {:5.0} MB",
            self.img_per_s, self.spread.0, self.spread.1, self.peak_rss_mb
        )
    }
}

/// The `key=value` pairs of each line starting with `RESULT`; a `PEAKRSS` line's pairs are
/// added to every one.
fn parse_result(stdout: &str) -> Result<Vec<HashMap<String, String>>> {
    let pairs = |line: &str| -> HashMap<String, String> {
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut results: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT"))
        .map(pairs)
        .collect();
    if let Some(line) = stdout.lines().find(|l| l.starts_with("PEAKRSS")) {
        results.iter_mut().for_each(|r| r.extend(pairs(line)));
    }
    if results.is_empty() {
        bail!("no RESULT line in:\n{stdout}")
    }
    Ok(results)
}

fn run_child(cmd: Command, what: &str) -> Result<Vec<HashMap<String, String>>> {
    parse_result(&child_stdout(cmd, what)?)
}

/// What `cmd` printed, or an error with its output if it failed.
fn child_stdout(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }
    Ok(stdout)
}

fn ours(args: &Args, row: &Row, mode: Mode, kernels: Baseline) -> Result<Measure> {
    Ok(ours_sets(args, row, mode, &[kernels])?.remove(0))
}

/// One process timing each kernel set in turn, step by step.
fn ours_sets(args: &Args, row: &Row, mode: Mode, sets: &[Baseline]) -> Result<Vec<Measure>> {
    let names: Vec<&str> = sets.iter().map(|&k| kernels_name(k)).collect();
    let cmd = worker_command(args, row, mode, &names)?;
    let what = format!("{} {mode:?} ({})", row.label(), names.join(","));
    let out = run_child(cmd, &what)?;
    names
        .iter()
        .map(|name| {
            let fields = out
                .iter()
                .find(|f| f.get("kernels").map(String::as_str) == Some(*name))
                .with_context(|| format!("{what}: no RESULT for {name}"))?;
            Measure::from_result(fields, args.batch)
        })
        .collect()
}

/// `--op-times`: the table of where our step goes, from a worker of its own.
fn op_times(args: &Args, row: &Row, mode: Mode) -> Result<String> {
    let mut cmd = worker_command(args, row, mode, &["ours"])?;
    cmd.arg("--worker-op-times");
    let stdout = child_stdout(cmd, &format!("{} {mode:?} op times", row.label()))?;
    bench_op_times::table(&stdout, OP_TIMES_SHOWN)
}

/// Ops listed under a row by `--op-times`.
const OP_TIMES_SHOWN: usize = 12;

/// This binary as the worker of one row, mode and kernel sets.
fn worker_command(args: &Args, row: &Row, mode: Mode, names: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(SUBCOMMAND)
        .args(["--worker", &row.label()])
        .args(["--worker-mode", mode_name(mode)])
        .args(["--worker-kernels", &names.join(",")])
        .args(["--batch", &args.batch.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--malloc", &malloc_arg(args.malloc)])
        .envs(args.malloc.env());
    Ok(cmd)
}

/// PyTorch's baseline script, wrapped to report the process's peak RSS as well.
fn torch(args: &Args, python: &Path, row: &Row, mode: Mode) -> Result<Measure> {
    let script = crate::shared_dir().join("bench/torch_baseline.py");
    let wrapper = "import resource, runpy, sys\n\
        sys.argv = sys.argv[1:]\n\
        runpy.run_path(sys.argv[0], run_name='__main__')\n\
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n\
        print(f'PEAKRSS peak_rss_mb={kb / 1024:.1f}')\n";
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(wrapper)
        .arg(&script)
        .arg(if mode == Mode::Train { "step" } else { "infer" })
        .arg(row.arch.replace('-', "_"))
        .arg(row.res.to_string())
        .args(["--batch", &args.batch.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .envs(args.malloc.env());
    let fields = run_child(cmd, &format!("torch {} {mode:?}", row.label()))?;
    Measure::from_result(&fields[0], args.batch)
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

/// The whole matrix: for each row and mode, ours, then PyTorch, then candle, one process each.
fn matrix(args: &Args) -> Result<()> {
    let rows = args
        .rows
        .split(',')
        .map(Row::parse)
        .collect::<Result<Vec<_>>>()?;
    println!(
        "bench: batch {}, {} timed steps after {} warm-ups, {} threads, malloc {:?}, train = forward + cross-entropy + backward + in-place AdamW",
        args.batch,
        args.steps,
        args.warmup,
        rayon::current_num_threads(),
        args.malloc
    );
    println!("{}", sgemm_line(args.steps)?);
    let mut table = Vec::new();
    for row in &rows {
        for &mode in &args.modes {
            let rounds = (0..args.rounds)
                .map(|_| one_round(args, row, mode))
                .collect::<Result<Vec<_>>>()?;
            let mine = combine(rounds.iter().map(|r| &r.ours));
            let mut line = format!(
                "{:14} {:5} ours {}",
                row.label(),
                mode_name(mode),
                mine.show()
            );
            let mut cells = vec![
                format!("{:.2}", mine.img_per_s),
                format!("{:.0}", mine.peak_rss_mb),
            ];
            if args.torch.is_some() {
                let t = combine(rounds.iter().filter_map(|r| r.torch.as_ref()));
                let ratio = median_over(&rounds, Round::ratio_to_torch);
                line += &format!(" | torch {} ratio={ratio:.2}", t.show());
                cells.push(format!("{:.2}", t.img_per_s));
                cells.push(format!("{:.0}", t.peak_rss_mb));
                cells.push(format!("{ratio:.2}"));
                if args.rounds > 1 {
                    let each: Vec<String> = rounds
                        .iter()
                        .map(|r| format!("{:.2}", r.ratio_to_torch()))
                        .collect();
                    line += &format!(" (rounds {})", each.join(", "));
                    cells.push(each.join(", "));
                }
            }
            for (k, &base) in args.baseline.iter().enumerate() {
                let c = combine(rounds.iter().map(|r| &r.baselines[k]));
                let speedup = median_over(&rounds, |r| r.ours.img_per_s / r.baselines[k].img_per_s);
                let name = kernels_name(base);
                line += &format!(" | {name} {} speedup={speedup:.2}", c.show());
                cells.push(format!("{:.2}", c.img_per_s));
                cells.push(format!("{speedup:.2}"));
            }
            println!("{line}");
            if args.op_times {
                print!("{}", op_times(args, row, mode)?);
            }
            table.push((row.label(), mode, cells));
        }
    }
    let mut head = vec!["ours img/s", "ours RSS MB"];
    if args.torch.is_some() {
        head.extend(["torch img/s", "torch RSS MB", "ratio"]);
        if args.rounds > 1 {
            head.push("ratio per round");
        }
    }
    let base_heads: Vec<String> = args
        .baseline
        .iter()
        .flat_map(|&b| {
            let name = kernels_name(b);
            [format!("{name} img/s"), format!("speedup vs {name}")]
        })
        .collect();
    head.extend(base_heads.iter().map(String::as_str));
    println!("\n| model@res | pass | {} |", head.join(" | "));
    println!("|---|---|{}", "---|".repeat(head.len()));
    for (label, mode, cells) in table {
        println!("| {label} | {} | {} |", mode_name(mode), cells.join(" | "));
    }
    Ok(())
}

/// One round of a row: our kernels, then PyTorch (with `--torch`), then each `--baseline`
/// set (in our process, step by step, with `--interleave`).
struct Round {
    ours: Measure,
    torch: Option<Measure>,
    baselines: Vec<Measure>,
}

impl Round {
    fn ratio_to_torch(&self) -> f64 {
        self.torch
            .as_ref()
            .map_or(f64::NAN, |t| self.ours.img_per_s / t.img_per_s)
    }
}

/// The median over `rounds` of a figure each round gives for itself (its ratio to PyTorch,
/// its speedup over a kernel set), so that both sides of it come from the same minute.
fn median_over(rounds: &[Round], figure: impl Fn(&Round) -> f64) -> f64 {
    median(&mut rounds.iter().map(figure).collect::<Vec<_>>())
}

fn one_round(args: &Args, row: &Row, mode: Mode) -> Result<Round> {
    let mut sets = vec![Baseline::Ours];
    sets.extend(&args.baseline);
    let mut together = match args.interleave {
        true => ours_sets(args, row, mode, &sets)?,
        false => vec![],
    };
    let ours_measure = match args.interleave {
        true => together.remove(0),
        false => ours(args, row, mode, Baseline::Ours)?,
    };
    let torch_measure = match &args.torch {
        Some(python) => Some(torch(args, python, row, mode)?),
        None => None,
    };
    let baselines = match args.interleave {
        true => together,
        false => args
            .baseline
            .iter()
            .map(|&base| ours(args, row, mode, base))
            .collect::<Result<_>>()?,
    };
    Ok(Round {
        ours: ours_measure,
        torch: torch_measure,
        baselines,
    })
}

/// Several rounds' figures as one: the median throughput, the slowest and fastest step of
/// any round, the largest peak RSS.
fn combine<'a>(rounds: impl Iterator<Item = &'a Measure>) -> Measure {
    let rounds: Vec<&Measure> = rounds.collect();
    let mut speeds: Vec<f64> = rounds.iter().map(|m| m.img_per_s).collect();
    Measure {
        img_per_s: median(&mut speeds),
        spread: (
            rounds
                .iter()
                .map(|m| m.spread.0)
                .fold(f64::INFINITY, f64::min),
            rounds.iter().map(|m| m.spread.1).fold(0.0, f64::max),
        ),
        peak_rss_mb: rounds.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max),
    }
}

/// Inside a row's own process: build the model, time the steps of each kernel set (in turn,
/// step by step, when there are several), print one RESULT line per set.
fn worker(args: &Args, row: &Row) -> Result<()> {
    let dev = Device::Cpu;
    let model = Model::new(&row.arch, 10, 0, &dev)?;
    let x = Tensor::randn(0f32, 1., (args.batch, 3, row.res, row.res), &dev)?;
    let labels: Vec<u32> = (0..args.batch as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, args.batch, &dev)?;
    // The optimiser `cnn train` uses, with PyTorch's AdamW settings as the baseline has them.
    let mut opt = OptimizerState::new(Optimizer::adamw(), 0.01);
    // Each step's phases in seconds, as `bench_op_times::PHASES` names them.
    let mut step = |i: usize| -> Result<[f64; 3]> {
        let t0 = Instant::now();
        match args.worker_mode {
            Mode::Train => {
                let pass = Pass::train(i as u64);
                let logits = model.forward(&x, &pass)?;
                let loss = cross_entropy(&logits, &labels)?;
                let t1 = Instant::now();
                let grads = loss.backward()?;
                let t2 = Instant::now();
                opt.step(model.params().trainable(), &grads, 1e-4)?;
                loss.to_scalar::<f32>()?;
                let elapsed = |a: Instant, b: Instant| (b - a).as_secs_f64();
                Ok([elapsed(t0, t1), elapsed(t1, t2), t2.elapsed().as_secs_f64()])
            }
            Mode::Infer => {
                let logits = model.forward(&x, &Pass::infer())?;
                logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                Ok([t0.elapsed().as_secs_f64(), 0.0, 0.0])
            }
        }
    };
    let sets = &args.worker_kernels;
    let mut times = vec![Vec::new(); sets.len()];
    let mut phases = [0.0; 3];
    for i in 0..args.warmup + args.steps {
        if args.worker_op_times && i == args.warmup {
            ops::set_op_timing(true);
            ops::take_op_times(); // the warm-ups' ops
        }
        for (k, set) in sets.iter().enumerate() {
            ops::set_cpu_choice(set.kernels());
            let t0 = Instant::now();
            let step_phases = step(i * sets.len() + k)?;
            if i >= args.warmup {
                times[k].push(t0.elapsed().as_secs_f64());
                phases
                    .iter_mut()
                    .zip(step_phases)
                    .for_each(|(p, s)| *p += s);
            }
        }
    }
    if args.worker_op_times {
        ops::set_op_timing(false);
        let lines = bench_op_times::worker_lines(phases, &ops::take_op_times(), args.steps);
        lines.iter().for_each(|l| println!("{l}"));
    }
    let rss = peak_rss_mb()?;
    for (set, times) in sets.iter().zip(times) {
        let median = median(&mut times.clone());
        let (min, max) = times
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        println!(
            "RESULT framework=cnn-models kernels={} mode={} arch={} res={} batch={} threads={} median_s={median:.4} min_s={min:.4} max_s={max:.4} img_per_s={:.2} peak_rss_mb={rss:.1}",
            kernels_name(*set),
            mode_name(args.worker_mode),
            row.arch,
            row.res,
            args.batch,
            rayon::current_num_threads(),
            args.batch as f64 / median,
        );
    }
    Ok(())
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

/// This process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Mean cross-entropy of logits `(n, classes)` against class indices, as PyTorch's.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&labels.unsqueeze(1)?, 1)?;
    Ok((log_z - picked)?.mean_all()?)
}

/// One convolution layer's shape for the micro-bench.
struct Layer {
    name: &'static str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    size: usize,
    /// How many layers of the network have this shape.
    count: usize,
}

fn conv_out(size: usize, k: usize, s: usize, p: usize) -> usize {
    (size + 2 * p - k) / s + 1
}

/// The distinct conv shapes of ResNet18 and AlexNet at input size `res`.
fn layers(res: usize) -> Vec<Layer> {
    let l = |name, cin, cout, k, stride, pad, size, count| Layer {
        name,
        cin,
        cout,
        k,
        stride,
        pad,
        size,
        count,
    };
    let r1 = conv_out(res, 7, 2, 3);
    let r2 = conv_out(r1, 3, 2, 1); // max-pool 3/2/1
    let r3 = conv_out(r2, 3, 2, 1);
    let r4 = conv_out(r3, 3, 2, 1);
    let a1 = conv_out(res, 11, 4, 2);
    let a2 = conv_out(a1, 3, 2, 0);
    let a3 = conv_out(a2, 3, 2, 0);
    vec![
        l("resnet18 conv1", 3, 64, 7, 2, 3, res, 1),
        l("resnet18 layer1", 64, 64, 3, 1, 1, r2, 4),
        l("resnet18 layer2.0.conv1", 64, 128, 3, 2, 1, r2, 1),
        l("resnet18 layer2.0.down", 64, 128, 1, 2, 0, r2, 1),
        l("resnet18 layer2", 128, 128, 3, 1, 1, r3, 3),
        l("resnet18 layer3.0.conv1", 128, 256, 3, 2, 1, r3, 1),
        l("resnet18 layer3.0.down", 128, 256, 1, 2, 0, r3, 1),
        l("resnet18 layer3", 256, 256, 3, 1, 1, r4, 3),
        l("resnet18 layer4.0.conv1", 256, 512, 3, 2, 1, r4, 1),
        l("resnet18 layer4.0.down", 256, 512, 1, 2, 0, r4, 1),
        l(
            "resnet18 layer4",
            512,
            512,
            3,
            1,
            1,
            conv_out(r4, 3, 2, 1),
            3,
        ),
        l("alexnet features.0", 3, 64, 11, 4, 2, res, 1),
        l("alexnet features.3", 64, 192, 5, 1, 2, a2, 1),
        l("alexnet features.6", 192, 384, 3, 1, 1, a3, 1),
        l("alexnet features.8", 384, 256, 3, 1, 1, a3, 1),
        l("alexnet features.10", 256, 256, 3, 1, 1, a3, 1),
    ]
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
    let (dev, m) = (Device::Cpu, 2048);
    let a = Tensor::randn(0f32, 1., (m, m), &dev)?;
    let b = Tensor::randn(0f32, 1., (m, m), &dev)?;
    let (t, _) = interleaved(steps.max(5), || Ok(a.matmul(&b)?), || Ok(a.clone()))?;
    Ok(format!(
        "SGEMM {m}x{m}x{m} (candle matmul = the gemm crate): {:.1} GFLOP/s",
        2.0 * (m * m * m) as f64 / t / 1e9
    ))
}

fn conv_layers(args: &Args) -> Result<()> {
    let dev = Device::Cpu;
    let n = args.conv_batch;
    println!(
        "conv layers at input {} batch {n}, {} threads: GFLOP/s candle -> ours (speedup), median of {} after a warm-up",
        args.conv_res,
        rayon::current_num_threads(),
        args.steps
    );
    println!("{}", sgemm_line(args.steps)?);
    println!(
        "| layer | shape | fwd candle | fwd ours | igrad candle | igrad ours | wgrad candle | wgrad ours | step speedup |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut total_candle, mut total_ours) = ([0f64; 3], [0f64; 3]);
    for layer in layers(args.conv_res) {
        let Layer {
            cin,
            cout,
            k,
            stride: s,
            pad: p,
            size,
            ..
        } = layer;
        let x = Tensor::randn(0f32, 1., (n, cin, size, size), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev)?;
        // Ours as the models run it, the kernel held tap by tap.
        let w_ohwi = w.permute((0, 2, 3, 1))?.contiguous()?;
        let o = conv_out(size, k, s, p);
        let gy = Tensor::randn(0f32, 1., (n, cout, o, o), &dev)?;
        let flops = 2.0 * (n * cout * o * o * cin * k * k) as f64;
        ops::set_cpu_choice(CpuChoice::default());
        let fwd = interleaved(
            args.steps,
            || Ok(x.conv2d(&w, p, s, 1, 1)?),
            || Ok(ops::conv2d_ohwi(&x, &w_ohwi, None, s, p)?),
        )?;
        let igrad = interleaved(
            args.steps,
            || {
                // candle's backward: a transposed convolution of the output gradient.
                let out_size = (o - 1) * s + k - 2 * p;
                Ok(gy.conv_transpose2d(&w, p, size - out_size, s, 1)?)
            },
            || Ok(ops::conv2d_ohwi_input_grad(&w_ohwi, &gy, x.dims(), s, p)?),
        )?;
        let wgrad = interleaved(
            args.steps,
            || {
                // candle's backward: the input convolved with the output gradient as kernel.
                let g = x
                    .transpose(0, 1)?
                    .conv2d(&gy.transpose(0, 1)?, p, 1, s, 1)?
                    .transpose(0, 1)?;
                Ok(g.narrow(2, 0, k)?.narrow(3, 0, k)?.contiguous()?)
            },
            || Ok(ops::conv2d_ohwi_weight_grad(&x, &gy, w_ohwi.dims(), s, p)?),
        )?;
        let gf = |t: f64| flops / t / 1e9;
        let passes = [fwd, igrad, wgrad];
        for (i, (c, m)) in passes.iter().enumerate() {
            total_candle[i] += c * layer.count as f64;
            total_ours[i] += m * layer.count as f64;
        }
        let step_c: f64 = passes.iter().map(|p| p.0).sum();
        let step_m: f64 = passes.iter().map(|p| p.1).sum();
        println!(
            "| {} | {cin}->{cout} k{k} s{s} @{size} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            layer.name,
            gf(fwd.0),
            gf(fwd.1),
            gf(igrad.0),
            gf(igrad.1),
            gf(wgrad.0),
            gf(wgrad.1),
            step_c / step_m
        );
    }
    let names = ["forward", "input grad", "weight grad"];
    for i in 0..3 {
        println!(
            "all layers x count, {}: candle {:.3} s, ours {:.3} s ({:.2}x)",
            names[i],
            total_candle[i],
            total_ours[i],
            total_candle[i] / total_ours[i]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{combine, median_over, Measure, Round};

    fn measure(img_per_s: f64, spread: (f64, f64), peak_rss_mb: f64) -> Measure {
        Measure {
            img_per_s,
            spread,
            peak_rss_mb,
        }
    }

    #[test]
    fn rounds_combine_to_the_median_the_widest_spread_and_the_largest_rss() {
        let rounds = [
            measure(10.0, (9.0, 11.0), 100.0),
            measure(30.0, (28.0, 33.0), 90.0),
            measure(20.0, (19.0, 21.0), 120.0),
        ];
        let c = combine(rounds.iter());
        assert_eq!(c.img_per_s, 20.0);
        assert_eq!(c.spread, (9.0, 33.0));
        assert_eq!(c.peak_rss_mb, 120.0);
        assert_eq!(combine(rounds[..2].iter()).img_per_s, 20.0);
    }

    #[test]
    fn the_ratio_is_each_rounds_own_not_the_ratio_of_medians() {
        let round = |ours: f64, torch: f64| Round {
            ours: measure(ours, (ours, ours), 1.0),
            torch: Some(measure(torch, (torch, torch), 1.0)),
            baselines: vec![],
        };
        let rounds = [round(10.0, 10.0), round(30.0, 20.0), round(20.0, 5.0)];
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio_to_torch).collect();
        assert_eq!(ratios, [1.0, 1.5, 4.0]);
        assert_eq!(median_over(&rounds, Round::ratio_to_torch), 1.5);
        // The medians of each side (20 and 10) come from different rounds: their ratio, 2.0,
        // would pair measurements made at different times.
        let alone = Round {
            torch: None,
            ..round(1.0, 1.0)
        };
        assert!(alone.ratio_to_torch().is_nan());
    }
}
