//! `cargo xtask ci`: small trainings on real data (`../shared/datasets`) held to the floors
//! in `xtask/baselines.json`; fails when an accuracy falls below its floor or when the lr 5e-3
//! AlexNet run stops being flagged as not converging.

use anyhow::{bail, Context, Result};
use cnn_data::{DataSpec, FolderOptions, PerClass};
use cnn_train::{Console, Display, Report, RunConfig, Start, Verdict};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// `cargo xtask ci` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The baselines file.
    #[arg(long, default_value = "xtask/baselines.json")]
    pub baselines: PathBuf,
    /// The shared folder holding `datasets/` [default: $CNN_SHARED_DIR, else ../shared].
    #[arg(long)]
    pub shared: Option<PathBuf>,
    /// Where the runs go (emptied first).
    #[arg(long, default_value = "target/xtask-ci")]
    pub out: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct Baselines {
    /// What the floors are for and how they were set.
    pub why: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
pub struct Check {
    pub name: String,
    pub arch: String,
    /// Class folders, relative to the shared folder.
    pub data: PathBuf,
    pub image_size: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub lr: f64,
    /// At most this many (train, test) images a class.
    pub per_class: Option<(usize, usize)>,
    pub expect: Expect,
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Final test accuracy at least `baseline - tolerance` (fractions in [0, 1]).
    TestAccuracy { baseline: f64, tolerance: f64 },
    /// The run is judged diverged or not converging (`true`).
    Flagged(bool),
}

/// Whether `report` meets `expect`: `Ok(what was seen)` or `Err(why not)`.
pub fn judge(expect: &Expect, report: &Report) -> std::result::Result<String, String> {
    match *expect {
        Expect::TestAccuracy {
            baseline,
            tolerance,
        } => {
            let Some(last) = report.records.last() else {
                return Err(format!("no epoch finished ({})", report.verdict.describe()));
            };
            let floor = baseline - tolerance;
            let seen = format!(
                "test accuracy {:.2} % (floor {:.2} % = baseline {:.2} % - {:.2})",
                100.0 * last.test_accuracy,
                100.0 * floor,
                100.0 * baseline,
                100.0 * tolerance
            );
            if last.test_accuracy >= floor {
                Ok(seen)
            } else {
                Err(seen)
            }
        }
        Expect::Flagged(want) => {
            let flagged = !matches!(report.verdict, Verdict::Converging);
            let seen = format!("verdict: {}", report.verdict.describe());
            if flagged == want {
                Ok(seen)
            } else {
                Err(seen)
            }
        }
    }
}

fn config(check: &Check, shared: &Path, out: &Path) -> RunConfig {
    let per_class = check
        .per_class
        .map(|(train, test)| PerClass { train, test });
    let source = DataSpec::Folder {
        root: shared.join(&check.data),
        options: FolderOptions {
            per_class,
            ..Default::default()
        },
    };
    let mut cfg = RunConfig::new(&check.arch, source, out.join(&check.name));
    cfg.image_size = check.image_size;
    cfg.batch_size = check.batch_size;
    cfg.epochs = check.epochs;
    cfg.lr = check.lr;
    cfg.log_every = 0;
    cfg
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.baselines)
        .with_context(|| format!("reading {}", args.baselines.display()))?;
    let baselines: Baselines = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.baselines.display()))?;
    let shared = args.shared.unwrap_or_else(crate::shared_dir);
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("emptying {}", args.out.display()))?;
    }
    println!("ci: {}", baselines.why);
    let stop = AtomicBool::new(false);
    let mut failures = Vec::new();
    for check in &baselines.checks {
        let mut cfg = config(check, &shared, &args.out);
        let data =
            cnn_train::open_data(&cfg).with_context(|| format!("ci check {}", check.name))?;
        cfg.num_classes = data.classes.len();
        let started = std::time::Instant::now();
        let mut console = Console::new(Display::Plain);
        let model = cnn_train::build_model(&cfg)?;
        let report = cnn_train::fit(&cfg, &model, &data, Start::Fresh, &stop, &mut |e| {
            console.handle(e)
        })?;
        let verdict = judge(&check.expect, &report);
        let (status, seen) = match &verdict {
            Ok(s) => ("pass", s),
            Err(s) => ("FAIL", s),
        };
        println!(
            "RESULT ci {} {status}: {seen} in {:.0} s ({})",
            check.name,
            started.elapsed().as_secs_f64(),
            check.why
        );
        if verdict.is_err() {
            failures.push(check.name.clone());
        }
    }
    let passed = baselines.checks.len() - failures.len();
    println!("{passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        bail!(
            "ci baselines missed: {} (floors and reasons in {})",
            failures.join(", "),
            args.baselines.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnn_train::{EpochRecord, Stop};

    fn report(test_accuracy: f64, verdict: Verdict) -> Report {
        let record = EpochRecord {
            epoch: 3,
            lr: 1e-3,
            train_loss: 1.5,
            train_accuracy: 0.5,
            test_loss: 1.6,
            test_accuracy,
            train_images: 100,
            test_images: 50,
            time: Default::default(),
            images_per_sec: 10.0,
            memory: Default::default(),
            skipped_files: 0,
        };
        Report {
            records: vec![record],
            verdict,
            stop: Stop::Finished,
            train_images: 100,
            test_images: 50,
            session_s: 1.0,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn an_accuracy_below_the_floor_fails_and_one_above_passes() {
        let expect = Expect::TestAccuracy {
            baseline: 0.45,
            tolerance: 0.05,
        };
        assert!(judge(&expect, &report(0.41, Verdict::Converging)).is_ok());
        let err = judge(&expect, &report(0.39, Verdict::Converging)).unwrap_err();
        assert!(
            err.contains("39.00 %") && err.contains("floor 40.00 %"),
            "{err}"
        );
        // A tightened baseline makes the same run fail: what CI would do after a regression.
        let tightened = Expect::TestAccuracy {
            baseline: 0.60,
            tolerance: 0.05,
        };
        assert!(judge(&tightened, &report(0.41, Verdict::Converging)).is_err());
    }

    #[test]
    fn a_run_that_stops_being_flagged_fails() {
        let flagged = Verdict::NotConverging {
            since_epoch: 1,
            epochs: 3,
            chance_loss: 10f64.ln(),
        };
        assert!(judge(&Expect::Flagged(true), &report(0.1, flagged)).is_ok());
        let diverged = Verdict::Diverged {
            epoch: 1,
            batch: 3,
            loss: f64::NAN,
        };
        assert!(judge(&Expect::Flagged(true), &report(0.1, diverged)).is_ok());
        assert!(judge(&Expect::Flagged(true), &report(0.3, Verdict::Converging)).is_err());
    }

    #[test]
    fn the_committed_baselines_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines.json");
        let b: Baselines = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(b
            .checks
            .iter()
            .any(|c| matches!(c.expect, Expect::Flagged(true))));
        assert!(
            b.checks.iter().any(
                |c| matches!(c.expect, Expect::TestAccuracy { baseline, .. } if baseline > 0.2)
            ),
            "set the accuracy baseline from a measured run"
        );
    }
}
