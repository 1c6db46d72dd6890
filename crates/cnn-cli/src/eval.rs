//! `cnn eval`: a run's model on a split: accuracy, per-class accuracy, confusion matrix.

use crate::data_arg::{self, BadFiles};
use crate::shared_args::{WeightsArg, DEVICE_HELP};
use anyhow::bail;
use cnn_data::{ClassInfo, SplitRule};
use cnn_train::{eval_loader, evaluate, open_run_with, skipped_files, Device};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run folder written by `cnn train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Which weights of the run: last (where training stopped) or best (the epoch with the
    /// highest test accuracy).
    #[arg(long, value_enum, default_value_t = WeightsArg::Last)]
    weights: WeightsArg,
    /// Data to evaluate on [default: the run's own data, as in its config.json]. Its class
    /// folders must be the run's.
    #[arg(long)]
    data: Option<String>,
    /// Which images of the data: test, train, or all (every image of a folder of class
    /// folders, e.g. a held-out set, unsplit).
    #[arg(long, default_value = "test", value_parser = ["test", "train", "all"])]
    split: String,
    /// What an image file that cannot be read does: fail (stop, naming it) or skip (leave
    /// it out, listed after the scores) [default: the run's setting with its own data, else
    /// fail].
    #[arg(long, value_enum)]
    bad_files: Option<BadFiles>,
    /// Images per batch [default: the run's batch size].
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, help = DEVICE_HELP, default_value = "auto")]
    device: Device,
    /// Print the result as JSON [default: off].
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let trained = open_run_with(&args.checkpoint, args.weights.into(), &device)?;
    let mut cfg = trained.config.clone();
    if let Some(d) = &args.data {
        let split = match &cfg.data.source {
            cnn_data::DataSpec::Folder { options, .. } => options.split,
            _ => SplitRule::default(),
        };
        cfg.data.source = data_arg::spec(d, split)?;
    }
    if let Some(bad) = args.bad_files {
        data_arg::set_bad_files(&mut cfg.data.source, bad);
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    cfg.data.cache = cnn_data::DecodeCache::Off;
    let data = cnn_data::open(&cfg.data.source)?;
    check_classes(&trained.classes, &data.classes)?;
    let all;
    let split = match args.split.as_str() {
        "train" => &data.train,
        "all" => {
            all = data.all();
            &all
        }
        _ => &data.test,
    };
    let loader = eval_loader(&cfg, split)?;
    let result = evaluate(&trained.model, &loader, &device, cfg.num_classes)?;
    let skipped = skipped_files(&data.skipped, &[&loader]);
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "checkpoint": args.checkpoint,
            "arch": cfg.arch,
            "epochs_trained": trained.epochs_done,
            "split": args.split,
            "weights": weights_name(args.weights),
            "classes": trained.classes.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "images": result.images,
            "loss": result.loss,
            "accuracy": result.accuracy,
            "per_class_accuracy": result.per_class_accuracy(),
            "confusion": result.confusion,
            "skipped": skipped,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    let which = if args.split == "all" {
        "every image".to_string()
    } else {
        format!("the {} split", args.split)
    };
    writeln!(
        out,
        "{} ({} after {}, {} weights) on {which} of {}",
        args.checkpoint.display(),
        cfg.arch,
        crate::predict::epochs(trained.epochs_done),
        weights_name(args.weights),
        data.description
    )?;
    writeln!(
        out,
        "images: {}  loss: {:.6}  accuracy: {:.3}%{}",
        result.images,
        result.loss,
        100.0 * result.accuracy,
        if skipped.is_empty() {
            String::new()
        } else {
            format!("  (bad files skipped: {}, listed below)", skipped.len())
        }
    )?;
    writeln!(out)?;
    let width = trained
        .classes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    writeln!(
        out,
        "{:>3}  {:<width$}  {:>7}  {:>9}",
        "#", "class", "images", "accuracy"
    )?;
    for (i, (c, acc)) in trained
        .classes
        .iter()
        .zip(result.per_class_accuracy())
        .enumerate()
    {
        let n: u64 = result.confusion[i].iter().sum();
        let acc = acc.map_or("-".to_string(), |a| format!("{:.3}%", 100.0 * a));
        writeln!(
            out,
            "{i:>3}  {:<width$}  {n:>7}  {acc:>9}",
            truncate(&c.name, width)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "confusion matrix (rows: true class, columns: predicted class)"
    )?;
    let cell = result
        .confusion
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len())
        .max(3);
    write!(out, "{:>3} ", "")?;
    for j in 0..result.confusion.len() {
        write!(out, " {j:>cell$}")?;
    }
    writeln!(out)?;
    for (i, row) in result.confusion.iter().enumerate() {
        write!(out, "{i:>3} ")?;
        for v in row {
            write!(out, " {v:>cell$}")?;
        }
        writeln!(out)?;
    }
    if !skipped.is_empty() {
        writeln!(out)?;
        writeln!(out, "skipped {} bad image files:", skipped.len())?;
        for s in &skipped {
            writeln!(out, "  {}: {}", s.path.display(), s.reason)?;
        }
    }
    Ok(())
}

fn weights_name(w: WeightsArg) -> &'static str {
    match w {
        WeightsArg::Last => "last",
        WeightsArg::Best => "best",
    }
}

fn check_classes(run: &[ClassInfo], data: &[ClassInfo]) -> anyhow::Result<()> {
    let folders = |c: &[ClassInfo]| c.iter().map(|c| c.folder.clone()).collect::<Vec<_>>();
    if folders(run) != folders(data) {
        bail!(
            "the data's classes ({}) are not the run's ({})",
            folders(data).join(", "),
            folders(run).join(", ")
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}
