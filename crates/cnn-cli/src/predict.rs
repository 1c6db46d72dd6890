//! `cnn predict`: classify image files with one or more trained runs, side by side.

use cnn_train::{open_run, Device, Guess, TrainedRun};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run folder written by `cnn train`; repeat to compare models side by side.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// Image files (JPEG, PNG, BMP, WebP), prepared as the run's test images were.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes shown per model and image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Print JSON instead of a table [default: off].
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ModelAnswer<'a> {
    checkpoint: &'a PathBuf,
    arch: &'a str,
    epochs_trained: usize,
    top: Vec<Guess>,
}

#[derive(Serialize)]
struct ImageAnswer<'a> {
    image: &'a PathBuf,
    models: Vec<ModelAnswer<'a>>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    let device = args.device.open()?;
    let runs: Vec<TrainedRun> = args
        .checkpoint
        .iter()
        .map(|c| open_run(c, &device))
        .collect::<Result<_, _>>()?;
    let mut answers = Vec::new();
    for image in &args.images {
        let mut models = Vec::new();
        for (run, dir) in runs.iter().zip(&args.checkpoint) {
            let top = run.top_k(image, args.top_k)?;
            models.push(ModelAnswer {
                checkpoint: dir,
                arch: run.model.arch(),
                epochs_trained: run.epochs_done,
                top,
            });
        }
        answers.push(ImageAnswer { image, models });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answers)?)?;
        return Ok(());
    }
    let headers: Vec<String> = answers[0]
        .models
        .iter()
        .map(|m| {
            format!(
                "{} ({}, {})",
                m.checkpoint.display(),
                m.arch,
                epochs(m.epochs_trained)
            )
        })
        .collect();
    for a in &answers {
        let cells: Vec<Vec<String>> = a
            .models
            .iter()
            .map(|m| {
                m.top
                    .iter()
                    .map(|g| format!("{} {:.1}%", g.name, 100.0 * g.probability))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = headers
            .iter()
            .zip(&cells)
            .map(|(h, c)| {
                c.iter()
                    .map(|s| s.chars().count())
                    .chain([h.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        writeln!(out, "{}", a.image.display())?;
        let mut line = format!("  {:>4}", "rank");
        for (h, w) in headers.iter().zip(&widths) {
            line.push_str(&format!("  {h:<w$}"));
        }
        writeln!(out, "{}", line.trim_end())?;
        for rank in 0..args.top_k {
            if cells.iter().all(|c| rank >= c.len()) {
                break;
            }
            let mut line = format!("  {:>4}", rank + 1);
            for (c, w) in cells.iter().zip(&widths) {
                line.push_str(&format!("  {:<w$}", c.get(rank).map_or("", String::as_str)));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// `1 epoch`, `3 epochs`.
pub fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}
