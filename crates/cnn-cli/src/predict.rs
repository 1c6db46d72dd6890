//! `cnn predict`: classify image files with one or more trained runs, side by side, and
//! optionally draw where each model looks (Grad-CAM).

use crate::shared_args::{WeightsArg, DEVICE_HELP};
use cnn_train::{open_run_with, Device, Guess, TrainedRun};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Side of the Grad-CAM pictures, pixels.
const CAM_SIDE: u32 = 224;

#[derive(clap::Args)]
pub struct Args {
    /// Run folder written by `cnn train`; repeat to compare models side by side.
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// Which weights of each run: last (where training stopped) or best (the epoch with
    /// the highest test accuracy).
    #[arg(long, value_enum, default_value_t = WeightsArg::Last)]
    weights: WeightsArg,
    /// Image files (JPEG, PNG, BMP, WebP), prepared as the run's test images were. One that
    /// cannot be read is reported and the others are still predicted (the exit status is
    /// then 1).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes shown per model and image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[arg(long, help = DEVICE_HELP, default_value = "auto")]
    device: Device,
    /// Write a Grad-CAM picture per image and model into this folder (created if missing):
    /// the photo as the model saw it, 224 px, with the top class's class-activation map
    /// over it (red: what speaks most for the class), named IMAGE-RUN.png. The map is the
    /// output of the last convolutional stage, by torchvision's module names: resnet18
    /// layer4.1 (layer4's last block), resnet34 layer4.2 (the same), alexnet features.11
    /// (the ReLU after the last conv), alexnet-d2l 11 (the same). A map under 4x4 (ResNet's
    /// at 96 px or less) is drawn as blocks and said to be too coarse [default: off].
    #[arg(long, value_name = "DIR")]
    cam: Option<PathBuf>,
    /// Print JSON instead of a table [default: off].
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct CamAnswer {
    file: PathBuf,
    layer: &'static str,
    class: String,
    /// Rows and columns of the map.
    map: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize)]
struct ModelAnswer<'a> {
    checkpoint: &'a PathBuf,
    arch: &'a str,
    epochs_trained: usize,
    top: Vec<Guess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cam: Option<CamAnswer>,
}

#[derive(Serialize)]
struct ImageAnswer<'a> {
    image: &'a PathBuf,
    models: Vec<ModelAnswer<'a>>,
    /// Why the image could not be predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    let device = args.device.open()?;
    let runs: Vec<TrainedRun> = args
        .checkpoint
        .iter()
        .map(|c| open_run_with(c, args.weights.into(), &device))
        .collect::<Result<_, _>>()?;
    if let Some(dir) = &args.cam {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("{}: cannot create the --cam folder: {e}", dir.display())
        })?;
    }
    let run_names = run_names(&args.checkpoint);
    let mut answers = Vec::new();
    for image in &args.images {
        let mut models = Vec::new();
        let mut error = None;
        for ((run, dir), name) in runs.iter().zip(&args.checkpoint).zip(&run_names) {
            let answer = answer(args, run, image, name).map(|(top, cam)| ModelAnswer {
                checkpoint: dir,
                arch: run.model.arch(),
                epochs_trained: run.epochs_done,
                top,
                cam,
            });
            match answer {
                Ok(a) => models.push(a),
                Err(e) => {
                    // One line per unreadable image; the others are still predicted.
                    eprintln!("error: {e:#}");
                    error = Some(format!("{e:#}"));
                    models.clear();
                    break;
                }
            }
        }
        answers.push(ImageAnswer {
            image,
            models,
            error,
        });
    }
    let failed = answers.iter().filter(|a| a.error.is_some()).count();
    print(args, &answers)?;
    if failed > 0 {
        std::io::stdout().flush()?;
        std::process::exit(1);
    }
    Ok(())
}

/// One run's top classes for `image`, and its Grad-CAM picture when `--cam` asks for one.
fn answer(
    args: &Args,
    run: &TrainedRun,
    image: &Path,
    run_name: &str,
) -> anyhow::Result<(Vec<Guess>, Option<CamAnswer>)> {
    let top = run.top_k(image, args.top_k)?;
    let Some(dir) = &args.cam else {
        return Ok((top, None));
    };
    let cam = run.photo_cam(image, CAM_SIDE)?;
    let stem = image
        .file_stem()
        .map_or("image".into(), |s| s.to_string_lossy());
    let file = dir.join(format!("{stem}-{run_name}.png"));
    cnn_data::save_png(&cam.picture, &file)?;
    let class = run
        .classes
        .get(cam.cam.class)
        .map_or_else(|| cam.cam.class.to_string(), |c| c.name.clone());
    Ok((
        top,
        Some(CamAnswer {
            file,
            layer: cam.cam.layer,
            class,
            map: [cam.cam.height, cam.cam.width],
            note: cam.note,
        }),
    ))
}

/// A name per run folder for file names: its last component, numbered where two are alike.
fn run_names(dirs: &[PathBuf]) -> Vec<String> {
    let base: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.canonicalize()
                .unwrap_or_else(|_| d.clone())
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    base.iter()
        .enumerate()
        .map(|(i, b)| {
            if base.iter().filter(|o| *o == b).count() > 1 {
                format!("{b}-{}", i + 1)
            } else {
                b.clone()
            }
        })
        .collect()
}

fn print(args: &Args, answers: &[ImageAnswer]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(answers)?)?;
        return Ok(());
    }
    for a in answers.iter().filter(|a| a.error.is_none()) {
        let headers: Vec<String> = a
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
        for cam in a.models.iter().filter_map(|m| m.cam.as_ref()) {
            writeln!(
                out,
                "  Grad-CAM of {} ({}, {}x{}): {}",
                cam.class,
                cam.layer,
                cam.map[0],
                cam.map[1],
                cam.file.display()
            )?;
            if let Some(note) = &cam.note {
                writeln!(out, "    note: {note}")?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// `1 epoch`, `3 epochs`.
pub fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}
