//! `cargo xtask reproduce`: the assignment's five tasks, end to end, into `REPORT.md`.
//!
//! A reproduction is a list of runs ([`plan`]), each trained (or reused, or resumed) with
//! `cnn-train`, then photo predictions and an evaluation of the best model, and the report
//! written from those measurements ([`report`]).

mod conclusions;
mod machine;
mod plan;
mod plot;
mod reference;
mod report;
mod source;
mod spread;
mod wall;

use anyhow::{bail, Context, Result};
use cnn_train::{Console, Display, Report, RunConfig, Start};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use plan::Profile;

/// `cargo xtask reproduce` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How big a reproduction: quick (minutes on 2 cores), cpu (all the data at 100 px: over an
    /// hour on 2 cores), assignment (224 px, all the data: for a GPU).
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    pub profile: Profile,
    /// Class-folder data set (one folder per class, e.g. the course's ImageNet-10). Default:
    /// $CNN_DATA, else ../shared/datasets/imagenette-224 (or under $CNN_SHARED_DIR), else
    /// Imagenette from the local hub cache, else the built-in synthetic set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu, cuda or cuda:N (cuda needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: cnn_train::Device,
    /// Output folder [default: docs/results/<profile>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Retrain every run even when a finished one is there.
    #[arg(long)]
    pub force: bool,
    /// Photos for task 5 [default: ../shared/photos].
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// The AlexNet of tasks 1-3: alexnet-d2l (the course's, whose memory matches the
    /// report) or alexnet (torchvision's).
    #[arg(long, default_value = "alexnet-d2l")]
    pub alexnet: String,
    /// Cap every run at this many epochs (a smoke test of the pipeline; the report says so).
    #[arg(long, hide = true)]
    pub max_epochs: Option<usize>,
    /// Rewrite the report from the run folders and `measurements.json` of an earlier
    /// reproduction in `--out`, training nothing.
    #[arg(long)]
    pub report_only: bool,
    /// Run on candle's own CPU ops instead of the project's kernels (the bench's `candle`
    /// baseline), to time the same reproduction without them: give it a scratch `--out`.
    #[arg(long, hide = true)]
    pub candle_ops: bool,
}

/// One finished run of the plan.
pub struct RunResult {
    pub exp: plan::Experiment,
    /// The training seed (the profile's seeds each train every experiment).
    pub seed: u64,
    pub config: RunConfig,
    pub report: Report,
}

/// What a reproduction measured beyond the run folders: kept beside the report so that
/// `--report-only` can rewrite it without the weights.
#[derive(Serialize, Deserialize)]
struct Measurements {
    /// The command that trained the runs.
    command: String,
    /// The machine's SGEMM rate when that command started (GFLOP/s, 2048^3, all threads);
    /// absent from reproductions made before it was measured.
    #[serde(default)]
    sgemm_gflops: Option<f64>,
    /// The command's wall time over all its sessions, as the report was written (absent from
    /// reproductions made before it was recorded).
    #[serde(default)]
    wall: Option<wall::WallTime>,
    photos: report::Photos,
    best: report::Best,
}

const MEASUREMENTS: &str = "measurements.json";

pub fn run(args: Args, root: &Path) -> Result<()> {
    let started = Instant::now();
    let sizes = args.profile.sizes();
    let source = source::resolve(args.data.clone(), sizes);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("docs/results").join(args.profile.name()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!(
        "reproduce: profile {}, data: {} ({})",
        args.profile.name(),
        source.label,
        source.reason
    );
    if !source.real {
        println!("reproduce: WARNING: synthetic data; the figures are not comparable with the assignment's");
    }
    if args.candle_ops {
        cnn_ops::set_cpu_choice(cnn_ops::CpuChoice::candle());
        println!("reproduce: candle's own CPU ops, not the project's kernels (--candle-ops)");
    }
    if args.report_only {
        return report_only(&args, &out, &source);
    }
    let stop = stop_on_ctrl_c()?;
    if args.force {
        forget_runs(&args, &out)?;
    }
    let clock = wall::WallClock::start(&out, args.force);
    // The host's speed, for the report: the figure that tells one 2-core machine from another.
    let sgemm_gflops = crate::bench::sgemm_gflops(5)?;
    let mut runs = Vec::new();
    for &seed in args.profile.seeds() {
        let seed_out = args.profile.seed_folder(&out, seed);
        for exp in plan::experiments(&args.alexnet) {
            let mut config =
                plan::config(&exp, args.profile, &source.spec, args.device, &out, seed);
            if let Some(cap) = args.max_epochs {
                config.epochs = config.epochs.min(cap);
            }
            let report = train(&exp, &mut config, &seed_out, stop)?;
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                bail!(
                    "interrupted: run `{}` again to resume from the last checkpoint",
                    command_line()
                );
            }
            runs.push(RunResult {
                exp,
                seed,
                config,
                report,
            });
        }
    }
    let photos_dir = args
        .photos
        .clone()
        .unwrap_or_else(|| root.join("../shared/photos"));
    let measured = Measurements {
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        sgemm_gflops: Some(sgemm_gflops),
        photos: report::predict_photos(first_seed(&runs), &photos_dir, &out)?,
        best: report::evaluate_best(first_seed(&runs))?,
        wall: None,
    };
    // Last, so that the figure covers all but the writing of the report itself.
    let measured = Measurements {
        wall: Some(clock.so_far()),
        ..measured
    };
    let json = serde_json::to_string_pretty(&measured)?;
    std::fs::write(out.join(MEASUREMENTS), json)
        .with_context(|| format!("writing {}", out.join(MEASUREMENTS).display()))?;
    let path = write_report(&args, &out, &source, &runs, &measured)?;
    println!(
        "reproduce: wrote {} in {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--report-only`: the runs' configs and reports and the measurements, read back.
fn report_only(args: &Args, out: &Path, source: &source::Source) -> Result<()> {
    let read = |path: PathBuf| -> Result<String> {
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: --report-only needs a finished reproduction there",
                path.display()
            )
        })
    };
    let measured: Measurements = serde_json::from_str(&read(out.join(MEASUREMENTS))?)
        .with_context(|| {
            format!(
                "{}: not a measurements file",
                out.join(MEASUREMENTS).display()
            )
        })?;
    let mut runs = Vec::new();
    for &seed in args.profile.seeds() {
        for exp in plan::experiments(&args.alexnet) {
            let dir = args.profile.seed_folder(out, seed).join(exp.key);
            let config = cnn_train::checkpoint::read_config(&dir)?;
            let path = dir.join(cnn_train::checkpoint::REPORT_FILE);
            let report: Report = serde_json::from_str(&read(path.clone())?)
                .with_context(|| format!("{}: not a run report", path.display()))?;
            runs.push(RunResult {
                exp,
                seed,
                config,
                report,
            });
        }
    }
    let path = write_report(args, out, source, &runs, &measured)?;
    println!(
        "reproduce: rewrote {} from the runs in {}",
        path.display(),
        out.display()
    );
    Ok(())
}

fn write_report(
    args: &Args,
    out: &Path,
    source: &source::Source,
    runs: &[RunResult],
    measured: &Measurements,
) -> Result<PathBuf> {
    let input = report::Input {
        profile: args.profile,
        source,
        runs,
        photos: &measured.photos,
        best: &measured.best,
        command: measured.command.clone(),
        sgemm_gflops: measured.sgemm_gflops,
        wall: measured.wall,
        device: args.device,
        max_epochs: args.max_epochs,
    };
    report::write(out, &input)
}

/// The runs of the profile's first seed: the ones that classify the photos and whose best
/// model is evaluated (the report's photo table and confusion matrix are per model, not
/// per seed).
pub fn first_seed(runs: &[RunResult]) -> &[RunResult] {
    let n = runs.iter().take_while(|r| r.seed == runs[0].seed).count();
    &runs[..n]
}

/// `--force`: every run folder of the profile removed before anything trains, so that a
/// forced reproduction stopped part-way and continued without `--force` resumes its own
/// runs rather than reusing those of an earlier reproduction.
fn forget_runs(args: &Args, out: &Path) -> Result<()> {
    for &seed in args.profile.seeds() {
        for exp in plan::experiments(&args.alexnet) {
            let dir = args.profile.seed_folder(out, seed).join(exp.key);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// Trains one run: reuses a finished one, resumes an interrupted one, starts a run that
/// continues another from that run's checkpoint, or starts afresh.
fn train(
    exp: &plan::Experiment,
    config: &mut RunConfig,
    out: &Path,
    stop: &'static AtomicBool,
) -> Result<Report> {
    let dir = config.out.clone();
    if dir.exists() && !has_weights(&dir)? {
        // A run folder without its weights (they are not committed: see .gitignore) cannot be
        // reused or resumed; its metrics describe weights that are gone, so it is retrained.
        println!(
            "reproduce: {} has no checkpoint weights; training it again",
            dir.display()
        );
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if let Some(base) = exp.continues.map(|b| out.join(b)) {
        if !dir.exists() && has_weights(&base)? {
            copy_dir(&base, &dir)?;
        }
    }
    let start = if has_weights(&dir)? {
        Start::Resume
    } else {
        Start::Fresh
    };
    println!(
        "\n== task {}: {} ({} epochs, lr {}) -> {}",
        exp.task,
        exp.arch,
        exp.epochs,
        exp.lr,
        dir.display()
    );
    let data = cnn_train::open_data(config)?;
    config.num_classes = data.classes.len();
    let mut console = Console::new(Display::Auto);
    // Each run's memory figures are its own, not the peak of the runs before it.
    cnn_train::memory::start_peak_rss_window();
    let model = cnn_train::build_model(config)?;
    let report = cnn_train::fit(config, &model, &data, start, stop, &mut |e| {
        console.handle(e)
    })?;
    Ok(report)
}

/// Whether `dir` holds a run whose current checkpoint is on disk.
fn has_weights(dir: &Path) -> Result<bool> {
    Ok(cnn_train::checkpoint::current(dir)?.is_some_and(|c| c.is_dir()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// This command as typed (`cargo xtask reproduce --profile cpu --out DIR`) less any
/// `--force` (which would start over), each word quoted for a shell where it needs it: what
/// to run again to continue.
fn command_line() -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c);
    let words = std::env::args()
        .skip(1)
        .filter(|w| w != "--force")
        .map(|w| {
            if !w.is_empty() && w.chars().all(safe) {
                w
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        });
    std::iter::once("cargo xtask".to_string())
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A flag set by Ctrl-C: the trainer saves a checkpoint and returns.
fn stop_on_ctrl_c() -> Result<&'static AtomicBool> {
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| {
        eprintln!("\nreproduce: stopping after the current batch (checkpoint follows)...");
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .context("installing the Ctrl-C handler")?;
    Ok(&STOP)
}
