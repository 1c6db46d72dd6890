//! `cnn train`: build a run config from flags (or the run folder's, with `--resume`), open
//! the data, and call `cnn_train::fit` with a console and a Ctrl-C handler.

use crate::data_arg::{self, BadFiles};
use crate::init_arg;
use crate::shared_args::DEVICE_HELP;
use crate::shell;
use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use cnn_data::{Augment, DecodeCache, LastBatch, SplitRule};
use cnn_train::{
    build_model, checkpoint, fit, open_data, Console, Device, Display, OnStuck, Optimizer,
    RunConfig, Schedule, Start, Stop, TrainError, Warmup,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, help = data_arg::HELP, required_unless_present = "resume")]
    data: Option<String>,
    /// Fraction of each class used for training when the data folder is not already split.
    #[arg(long, default_value_t = 0.8)]
    split: f64,
    /// Seed of that train/test split.
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// What an image file that cannot be read does: fail (stop, naming it) or skip (leave it
    /// out; train.log names it, metrics count it in skipped_files, report.json lists it).
    #[arg(long, value_enum, default_value_t = BadFiles::Fail)]
    bad_files: BadFiles,
    /// Architecture: alexnet, alexnet-d2l, resnet18 or resnet34.
    #[arg(long, default_value = "alexnet-d2l")]
    arch: String,
    /// Number of epochs (with --resume: the new total, to extend a run).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Optimiser, with PyTorch's update rules.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// SGD dampening.
    #[arg(long, default_value_t = 0.0)]
    dampening: f64,
    /// SGD: use Nesterov momentum [default: off].
    #[arg(long)]
    nesterov: bool,
    /// Adam/AdamW: beta1,beta2.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.9, 0.999])]
    betas: Vec<f64>,
    /// Adam/AdamW: epsilon.
    #[arg(long, default_value_t = 1e-8)]
    eps: f64,
    /// Weight decay: L2 added to the gradient (SGD, Adam) or decoupled (AdamW).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Learning-rate schedule, stepped once per epoch.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant)]
    schedule: ScheduleArg,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 30)]
    step_every: usize,
    /// Step schedule: decay factor.
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    /// Cosine schedule: final learning rate.
    #[arg(long, default_value_t = 0.0)]
    min_lr: f64,
    /// Epochs of linear warm-up before the schedule (0: none).
    #[arg(long, default_value_t = 0)]
    warmup_epochs: usize,
    /// Warm-up's first learning rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.1)]
    warmup_start: f64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Side of the square input, pixels.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Seed of the initial weights, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run folder (config, classes, metrics, log, checkpoints) [default: runs/ARCH].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint [default: off]. Its config.json is
    /// used; only --epochs, --device, --threads, --data-threads, --cache, --prefetch,
    /// --log-every, --checkpoint-every, --on-stuck and --progress may change.
    #[arg(long)]
    resume: bool,
    #[arg(long, help = DEVICE_HELP, default_value = "auto")]
    device: Device,
    /// Compute threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Image loading threads [default: all cores].
    #[arg(long)]
    data_threads: Option<usize>,
    /// CPU kernels: ours (the fastest measured), ours with one kernel switched off
    /// (no-winograd, no-winograd4x4, no-taps, no-simd, gemm-split), candle's own ops
    /// (candle), or steps between (conv, conv-bn, conv-bn-relu; `cnn_ops::CpuChoice::named`):
    /// to see whether a result depends on one kernel's rounding. Not saved with the run;
    /// another choice on --resume continues it, but not bit for bit.
    #[arg(long, default_value = "ours",
          value_parser = clap::builder::PossibleValuesParser::new(cnn_ops::CpuChoice::NAMES))]
    cpu_kernels: String,
    /// Training augmentation: none, flip (horizontal), crop-flip (RandomResizedCrop + flip).
    #[arg(long, value_enum, default_value_t = AugmentArg::None)]
    augment: AugmentArg,
    /// Test images: resize the shorter side to this before the centre crop [default: --image-size].
    #[arg(long)]
    eval_resize: Option<u32>,
    /// Drop the last, smaller training batch of each epoch [default: off, as PyTorch].
    #[arg(long)]
    drop_last: bool,
    /// Keep decoded images between epochs: off, memory, or a folder for a disk cache.
    /// Without crop-flip they are kept at --image-size on the shorter side (the pixels the
    /// network sees are the same either way); with crop-flip at full size.
    #[arg(long, default_value = "off")]
    cache: String,
    /// Batches prepared ahead of training.
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// Print `[Epoch e, Batch b] loss` every this many batches (0: never).
    #[arg(long, default_value_t = 100)]
    log_every: usize,
    /// Save a checkpoint every this many epochs (and always after the last, on an early stop
    /// and on Ctrl-C): for short epochs of a large model; a crash repeats at most this many.
    #[arg(long, default_value_t = 1)]
    checkpoint_every: usize,
    /// Consecutive epochs at chance (loss ~ ln(classes)) before a run is flagged "not converging".
    #[arg(long, default_value_t = 3)]
    stuck_epochs: usize,
    /// What a run flagged "not converging" does.
    #[arg(long, value_enum, default_value_t = OnStuckArg::Continue)]
    on_stuck: OnStuckArg,
    #[arg(long, help = init_arg::HELP)]
    init_from: Option<String>,
    /// Train only the classifier: the other layers' weights are not updated (BatchNorm's
    /// running statistics still follow the data) [default: off].
    #[arg(long, conflicts_with = "backbone_lr_factor")]
    freeze_backbone: bool,
    /// Learning rate of every layer but the classifier, as a factor of --lr (0.1 is usual
    /// for fine-tuning from --init-from).
    #[arg(long, default_value_t = 1.0)]
    backbone_lr_factor: f64,
    /// Progress display: auto (bars on a terminal, plain lines otherwise), bars, plain, quiet.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Constant,
    Step,
    Cosine,
}

#[derive(Clone, Copy, ValueEnum)]
enum AugmentArg {
    None,
    Flip,
    CropFlip,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnStuckArg {
    Continue,
    Stop,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Bars,
    Plain,
    Quiet,
}

/// Flags that may differ on `--resume` (they change how, not what, is trained).
const RESUMABLE: &[&str] = &[
    "epochs",
    "device",
    "threads",
    "data_threads",
    "cpu_kernels",
    "cache",
    "prefetch",
    "log_every",
    "checkpoint_every",
    "on_stuck",
    "progress",
    "out",
    "resume",
    "init_from",
];

pub fn run(args: &Args, matches: &ArgMatches) -> anyhow::Result<()> {
    let explicit = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&args.arch));
    let (mut cfg, start) = if args.resume {
        let saved = checkpoint::read_config(&out).context("--resume")?;
        let mut cfg = saved.clone();
        apply(&mut cfg, args, &explicit)?;
        cfg.out = out.clone();
        let mut same = cfg.clone();
        same.epochs = saved.epochs;
        same.device = saved.device;
        same.threads = saved.threads;
        same.data.threads = saved.data.threads;
        same.data.cache = saved.data.cache.clone();
        same.data.prefetch = saved.data.prefetch;
        same.log_every = saved.log_every;
        same.checkpoint_every = saved.checkpoint_every;
        same.divergence.on_stuck = saved.divergence.on_stuck;
        same.out = saved.out.clone();
        if args.init_from.is_some() {
            eprintln!(
                "note: --init-from is ignored with --resume: the run continues from its checkpoint"
            );
        }
        if same != saved {
            let flags: Vec<String> = matches
                .ids()
                .map(|id| id.as_str())
                .filter(|id| explicit(id) && !RESUMABLE.contains(id))
                .map(|id| format!("--{}", id.replace('_', "-")))
                .collect();
            bail!(
                "{} was started with other settings than {} (see its config.json): continue it with `{}`, or train a new run with another --out",
                out.display(),
                flags.join(", "),
                resume_command(&out, matches)
            );
        }
        (cfg, Start::Resume)
    } else {
        let data = args
            .data
            .as_deref()
            .expect("clap requires --data without --resume");
        let split = SplitRule {
            ratio: args.split,
            seed: args.split_seed,
        };
        let mut cfg = RunConfig::new(&args.arch, data_arg::spec(data, split)?, &out);
        apply(&mut cfg, args, &|_| true)?;
        cfg.init_from = args
            .init_from
            .as_deref()
            .map(init_arg::resolve)
            .transpose()?;
        (cfg, Start::Fresh)
    };
    if let Some(n) = cfg.threads {
        // candle's CPU kernels read the thread count from here; nothing else runs yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    cfg.validate()?;
    let kernels = cnn_ops::CpuChoice::named(&args.cpu_kernels)
        .with_context(|| format!("--cpu-kernels {}: unknown", args.cpu_kernels))?;
    cnn_ops::set_cpu_choice(kernels);
    let data = open_data(&cfg)?;
    cfg.num_classes = data.classes.len();

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nSecond Ctrl-C: quitting without saving");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this batch and saving a checkpoint (press again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;

    let mut console = Console::new(display(args.progress));
    if !matches!(args.progress, ProgressArg::Quiet) {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}, {} classes, {} epochs, {} lr {} ({:?}), batch {}, {}x{} px, seed {}, {}{}",
            cfg.arch,
            cfg.num_classes,
            cfg.epochs,
            cfg.optimizer.name(),
            cfg.lr,
            cfg.schedule,
            cfg.batch_size,
            cfg.image_size,
            cfg.image_size,
            cfg.seed,
            cfg.device,
            cfg.threads
                .map_or(String::new(), |n| format!(" ({n} threads)")),
        )?;
        writeln!(out, "data: {}", data.description)?;
        if kernels != cnn_ops::CpuChoice::default() {
            writeln!(out, "CPU kernels: {} (not the default)", args.cpu_kernels)?;
        }
        if cfg.backbone_lr_factor != 1.0 {
            let backbone = match cfg.backbone_lr_factor {
                0.0 => "frozen (only the classifier trains)".to_string(),
                f => format!("lr x{f}"),
            };
            writeln!(out, "backbone: {backbone}")?;
        }
        writeln!(out, "run folder: {}", cfg.out.display())?;
    }
    let model = build_model(&cfg)?;
    let report = fit(&cfg, &model, &data, start, &stop, &mut |e| {
        console.handle(e)
    })
    .map_err(|e| match e {
        TrainError::RunExists { .. } => anyhow::anyhow!(
            "{e}: continue it with `{}`, or choose another --out",
            resume_command(&cfg.out, matches)
        ),
        e => e.into(),
    })?;
    match report.stop {
        Stop::Interrupted { .. } => {
            eprintln!("continue with: {}", resume_command(&cfg.out, matches));
            std::process::exit(130)
        }
        _ => Ok(()),
    }
}

/// The command that continues the run in `out`: `cnn train --resume --out OUT` with the
/// flags of this command line that may change on a resume (the rest is in config.json).
fn resume_command(out: &Path, matches: &ArgMatches) -> String {
    let mut words = vec![
        "cnn train --resume --out".to_string(),
        shell::quote(out.as_os_str()),
    ];
    for id in RESUMABLE
        .iter()
        .filter(|id| !["out", "resume"].contains(id))
    {
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        for value in matches.get_raw(id).into_iter().flatten() {
            words.push(format!("--{}", id.replace('_', "-")));
            words.push(shell::quote(value));
        }
    }
    words.join(" ")
}

/// Sets `cfg`'s fields from the flags `take` selects.
fn apply(cfg: &mut RunConfig, a: &Args, take: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    if take("data") || take("split") || take("split_seed") {
        if let Some(d) = &a.data {
            cfg.data.source = data_arg::spec(
                d,
                SplitRule {
                    ratio: a.split,
                    seed: a.split_seed,
                },
            )?;
        }
    }
    if take("bad_files") || take("data") {
        data_arg::set_bad_files(&mut cfg.data.source, a.bad_files);
    }
    if take("arch") {
        cfg.arch = a.arch.clone();
    }
    if take("epochs") {
        cfg.epochs = a.epochs;
    }
    if take("lr") {
        cfg.lr = a.lr;
    }
    let opt_flags = [
        "optimizer",
        "momentum",
        "dampening",
        "nesterov",
        "betas",
        "eps",
    ];
    if opt_flags.iter().any(|f| take(f)) {
        let betas = (a.betas[0], a.betas[1]);
        cfg.optimizer = match a.optimizer {
            OptimizerArg::Sgd => Optimizer::Sgd {
                momentum: a.momentum,
                dampening: a.dampening,
                nesterov: a.nesterov,
            },
            OptimizerArg::Adam => Optimizer::Adam { betas, eps: a.eps },
            OptimizerArg::Adamw => Optimizer::AdamW { betas, eps: a.eps },
        };
    }
    if take("weight_decay") {
        cfg.weight_decay = a.weight_decay;
    }
    if ["schedule", "step_every", "gamma", "min_lr"]
        .iter()
        .any(|f| take(f))
    {
        cfg.schedule = match a.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step {
                every: a.step_every,
                gamma: a.gamma,
            },
            ScheduleArg::Cosine => Schedule::Cosine { min_lr: a.min_lr },
        };
    }
    if take("warmup_epochs") || take("warmup_start") {
        cfg.warmup = (a.warmup_epochs > 0).then_some(Warmup {
            epochs: a.warmup_epochs,
            start_factor: a.warmup_start,
        });
    }
    if take("batch_size") {
        cfg.batch_size = a.batch_size;
    }
    if take("image_size") {
        cfg.image_size = a.image_size;
    }
    if take("seed") {
        cfg.seed = a.seed;
    }
    if take("device") {
        cfg.device = a.device;
    }
    if take("threads") {
        cfg.threads = a.threads;
    }
    if take("data_threads") {
        cfg.data.threads = a.data_threads;
    }
    if take("augment") {
        cfg.data.augment = match a.augment {
            AugmentArg::None => Augment::None,
            AugmentArg::Flip => Augment::Flip,
            AugmentArg::CropFlip => Augment::RandomResizedCropFlip,
        };
    }
    if take("eval_resize") {
        cfg.data.eval_resize = a.eval_resize;
    }
    if take("drop_last") {
        cfg.data.last_batch = if a.drop_last {
            LastBatch::Drop
        } else {
            LastBatch::Keep
        };
    }
    if take("cache") {
        cfg.data.cache = match a.cache.as_str() {
            "off" => DecodeCache::Off,
            "memory" => DecodeCache::Memory,
            dir => DecodeCache::Disk(PathBuf::from(dir)),
        };
    }
    if take("prefetch") {
        cfg.data.prefetch = a.prefetch;
    }
    if take("log_every") {
        cfg.log_every = a.log_every;
    }
    if take("checkpoint_every") {
        cfg.checkpoint_every = a.checkpoint_every;
    }
    if take("freeze_backbone") || take("backbone_lr_factor") {
        cfg.backbone_lr_factor = match a.freeze_backbone {
            true => 0.0,
            false => a.backbone_lr_factor,
        };
    }
    if take("stuck_epochs") {
        cfg.divergence.window = a.stuck_epochs;
    }
    if take("on_stuck") {
        cfg.divergence.on_stuck = match a.on_stuck {
            OnStuckArg::Continue => OnStuck::Continue,
            OnStuckArg::Stop => OnStuck::Stop,
        };
    }
    Ok(())
}

fn display(p: ProgressArg) -> Display {
    match p {
        ProgressArg::Auto => Display::Auto,
        ProgressArg::Bars => Display::Bars,
        ProgressArg::Plain => Display::Plain,
        ProgressArg::Quiet => Display::Quiet,
    }
}
