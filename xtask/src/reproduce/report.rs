//! `REPORT.md`: the assignment's table beside this run's, per-epoch tables and curves, the
//! divergence verdict, photo predictions, the best model's confusion matrix, conclusions
//! and the machine, every figure taken from the runs just measured.

use super::conclusions;
use super::machine;
use super::plan::Profile;
use super::plot::{line_chart, Series, ValueAxis};
use super::reference::{REFERENCE, SOURCE};
use super::source::Source;
use super::spread::{by_experiment, group, Spread};
use super::{first_seed, RunResult};
use anyhow::{Context, Result};
use cnn_train::{EpochRecord, Evaluation, Guess, Verdict};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Top-3 guesses of every run (index as in `runs`) for every photo, and where each run
/// looks for its top class (Grad-CAM).
#[derive(Serialize, Deserialize)]
pub struct Photos {
    pub files: Vec<PathBuf>,
    /// `guesses[run][photo]`.
    pub guesses: Vec<Vec<Vec<Guess>>>,
    /// `cams[run][photo]` (none in reproductions made before the maps were drawn).
    #[serde(default)]
    pub cams: Vec<Vec<CamPicture>>,
}

/// One run's Grad-CAM picture of one photo.
#[derive(Serialize, Deserialize)]
pub struct CamPicture {
    /// The PNG, relative to the report.
    pub file: PathBuf,
    /// The module whose map it is, and the map's rows and columns.
    pub layer: String,
    pub map: [usize; 2],
    /// Why the map cannot show where the model looks, when it is too coarse.
    pub note: Option<String>,
}

/// Side of the Grad-CAM pictures in the report, pixels.
const CAM_SIDE: u32 = 128;

/// The best run (highest final test accuracy) and its evaluation on the test split.
#[derive(Serialize, Deserialize)]
pub struct Best {
    pub run: usize,
    pub eval: Evaluation,
    pub class_names: Vec<String>,
}

pub struct Input<'a> {
    pub profile: Profile,
    pub source: &'a Source,
    pub runs: &'a [RunResult],
    pub photos: &'a Photos,
    pub best: &'a Best,
    /// The command that trained the runs.
    pub command: String,
    /// The machine's SGEMM rate as that command started, GFLOP/s.
    pub sgemm_gflops: Option<f64>,
    /// That command's wall time over all its sessions, where recorded.
    pub wall: Option<super::wall::WallTime>,
    pub device: cnn_train::Device,
    /// Set when a smoke test capped the epochs.
    pub max_epochs: Option<usize>,
}

/// Image files directly in `dir`, sorted.
fn photo_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading photos from {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "bmp" | "webp")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Every run's top-3 for every photo in `dir`, and its Grad-CAM picture written under
/// `out/cams/`.
pub fn predict_photos(runs: &[RunResult], dir: &Path, out: &Path) -> Result<Photos> {
    let files = photo_files(dir)?;
    let cam_dir = out.join("cams");
    std::fs::create_dir_all(&cam_dir).with_context(|| format!("creating {}", cam_dir.display()))?;
    let mut guesses = Vec::new();
    let mut cams = Vec::new();
    for r in runs {
        let trained = cnn_train::open_run(&r.config.out, &candle_core::Device::Cpu)?;
        let per_photo = files
            .iter()
            .map(|f| trained.top_k(f, 3))
            .collect::<Result<Vec<_>, _>>()?;
        guesses.push(per_photo);
        // The run's folder under `out` names its pictures (unique across the plan).
        let run = r.config.out.strip_prefix(out).unwrap_or(&r.config.out);
        let run = run.to_string_lossy().replace(['/', '\\'], "-");
        let mut pictures = Vec::new();
        for f in &files {
            let cam = trained.photo_cam(f, CAM_SIDE)?;
            let stem = f.file_stem().unwrap_or_default().to_string_lossy();
            let file = PathBuf::from("cams").join(format!("{stem}-{run}.png"));
            cnn_data::save_png(&cam.picture, out.join(&file))?;
            pictures.push(CamPicture {
                file,
                layer: cam.cam.layer.to_string(),
                map: [cam.cam.height, cam.cam.width],
                note: cam.note,
            });
        }
        cams.push(pictures);
    }
    Ok(Photos {
        files,
        guesses,
        cams,
    })
}

pub fn evaluate_best(runs: &[RunResult]) -> Result<Best> {
    let score = |r: &RunResult| r.report.records.last().map_or(-1.0, |e| e.test_accuracy);
    let run = (0..runs.len())
        .max_by(|&a, &b| score(&runs[a]).total_cmp(&score(&runs[b])))
        .context("no runs")?;
    let config = &runs[run].config;
    let trained = cnn_train::open_run(&config.out, &candle_core::Device::Cpu)?;
    let data = cnn_train::open_data(config)?;
    let eval = cnn_train::evaluate(
        &trained.model,
        &data.test,
        trained.model.device(),
        config.num_classes,
    )?;
    Ok(Best {
        run,
        eval,
        class_names: data.classes.iter().map(|c| c.name.clone()).collect(),
    })
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn duration(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec} s"),
        (0, m, sec) => format!("{m} min {sec} s"),
        (h, m, sec) => format!("{h} h {m} min {sec} s"),
    }
}

fn total_time(records: &[EpochRecord]) -> f64 {
    records.iter().map(|r| r.time.total_s).sum()
}

/// Wall time the runs trained for, each epoch once: a run that continues another leaves
/// out the epochs it copied from it.
fn training_time(runs: &[RunResult]) -> f64 {
    let copied = |r: &RunResult| {
        let base = runs
            .iter()
            .find(|b| Some(b.exp.key) == r.exp.continues && b.seed == r.seed);
        base.map_or(0, |b| b.report.records.len())
    };
    runs.iter()
        .map(|r| total_time(&r.report.records[copied(r).min(r.report.records.len())..]))
        .sum()
}

fn best_test(records: &[EpochRecord]) -> Option<&EpochRecord> {
    records
        .iter()
        .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
}

/// Memory cell of one epoch record, or of the last records of a group of seeds (their mean,
/// with the spread where there are several): on CUDA the tensor peak of the epoch and the
/// bytes held at its end (the pool's counters, as `max_memory_allocated`/`memory_allocated`)
/// where measured, else the device peak; on the CPU the host peak RSS; plus the tensor bytes
/// by arithmetic.
fn memory_cell(records: &[&EpochRecord]) -> String {
    let Some(first) = records.first() else {
        return "-".into();
    };
    let spread = |f: fn(&EpochRecord) -> Option<u64>| {
        Spread::of(records.iter().filter_map(|e| f(e).map(|b| b as f64)))
            .map(|s| s.show(1e-6, 0, "MB"))
    };
    if let Some(peak) = spread(|e| e.memory.device_tensor_peak_bytes) {
        let held = spread(|e| e.memory.device_tensor_bytes).unwrap_or_else(|| "-".into());
        return format!("tensor peak {peak}; held at end {held}");
    }
    let tensors = format!("tensors {}", mb(first.memory.tensors_bytes()));
    match (
        spread(|e| e.memory.device_peak_bytes),
        spread(|e| e.memory.peak_rss_bytes),
    ) {
        (Some(dev), _) => format!("device peak {dev}; {tensors}"),
        (None, Some(rss)) => format!("host peak RSS {rss}; {tensors}"),
        (None, None) => tensors,
    }
}

/// The subset a run's data spec keeps: images per class for (train, test), if it keeps one.
fn subset(spec: &cnn_data::DataSpec) -> Option<(usize, usize)> {
    match spec {
        cnn_data::DataSpec::Folder { options, .. } | cnn_data::DataSpec::Hub { options, .. } => {
            options.per_class.map(|p| (p.train, p.test))
        }
        cnn_data::DataSpec::Synthetic(s) => Some((s.train_per_class, s.test_per_class)),
        cnn_data::DataSpec::Cifar10 { .. } | cnn_data::DataSpec::Idx { .. } => None,
    }
}

fn model_name(arch: &str) -> &str {
    match arch {
        "alexnet-d2l" => "AlexNet (d2l)",
        "alexnet" => "AlexNet (torchvision)",
        "resnet18" => "ResNet18",
        "resnet34" => "ResNet34",
        other => other,
    }
}

pub fn write(out: &Path, input: &Input) -> Result<PathBuf> {
    let mut md = String::new();
    let runs = input.runs;
    let first = runs.first().context("no runs")?;
    let groups = by_experiment(runs);
    let seeds: Vec<u64> = groups[0].iter().map(|r| r.seed).collect();
    let m = machine::describe();
    let train_images = first.report.train_images;
    let test_images = first.report.test_images;

    writeln!(
        md,
        "# Classic CNNs (assignment 05), reproduced: profile `{}`\n",
        input.profile.name()
    )?;
    if !input.source.real {
        writeln!(md, "> **Synthetic data.** No image folder was given or found, so these runs used the built-in synthetic set. \
            Its figures show the method working, but they are not comparable with the assignment's ImageNet-10 figures. \
            Point `--data` (or `$CNN_DATA`) at the real class folders.\n")?;
    }
    let training = duration(training_time(runs));
    let wall = match input.wall {
        Some(w) if w.sessions > 1 => format!(
            "The command ran for **{}** in all, over {} sessions (it was stopped or failed \
             and run again; each went on from the runs on disk), of which its training took \
             **{training}**",
            duration(w.seconds),
            w.sessions
        ),
        Some(w) => format!(
            "The command ran for **{}**, of which its training took **{training}**",
            duration(w.seconds)
        ),
        None => format!("Its training took **{training}**"),
    };
    writeln!(md, "Generated by `cargo xtask {}` on this machine ({} threads, device {}). {wall}: every run's \
        epochs with their test passes, summed, interrupted and resumed parts included (the 20-epoch run counts its last 10 epochs; its \
        first 10 are task 1's); the rest is setup, checkpoints, the photos and this report. Every figure below was measured by that \
        command; nothing is typed in except the assignment's own reference figures.\n",
        input.command, m.threads, input.device)?;

    if let Some(cap) = input.max_epochs {
        writeln!(md, "> **Smoke test.** Every run was capped at {cap} epochs (`--max-epochs`), so the epoch counts differ from the assignment's.\n")?;
    }
    writeln!(md, "## Settings\n")?;
    writeln!(md, "| setting | value |\n|---|---|")?;
    writeln!(
        md,
        "| data | {} ({}) |",
        input.source.label, input.source.reason
    )?;
    writeln!(
        md,
        "| images | {train_images} train / {test_images} test, {} classes |",
        first.config.num_classes
    )?;
    match subset(&first.config.data.source) {
        Some((tr, te)) => writeln!(
            md,
            "| subset | at most {tr} train and {te} test images a class (profile `{}`) |",
            input.profile.name()
        )?,
        None => writeln!(md, "| subset | none: every image |")?,
    }
    writeln!(md, "| image size | {0}x{0} |", first.config.image_size)?;
    writeln!(md, "| batch size | {} |", first.config.batch_size)?;
    writeln!(
        md,
        "| optimiser | {} (PyTorch's update rule), constant learning rate, no weight decay |",
        first.config.optimizer.name()
    )?;
    writeln!(
        md,
        "| augmentation | {:?} (test: resize + centre crop) |",
        first.config.data.augment
    )?;
    let kept_at = match cnn_data::Transform::Train(first.config.data.augment)
        .exact_working_size(first.config.image_size as u32)
    {
        Some(side) => format!("shrunk to {side} px on the shorter side"),
        None => "at full size".to_string(),
    };
    writeln!(
        md,
        "| decoded images | {} |",
        match &first.config.data.cache {
            cnn_data::DecodeCache::Off => "decoded again every epoch".to_string(),
            cnn_data::DecodeCache::Memory =>
                format!("kept in memory between epochs, {kept_at} (counted in the memory figures)"),
            cnn_data::DecodeCache::Disk(dir) => {
                format!("kept on disk in {}, {kept_at}", dir.display())
            }
        }
    )?;
    match seeds.as_slice() {
        [one] => writeln!(md, "| seed | {one} (weights, shuffle, dropout) |")?,
        many => writeln!(
            md,
            "| seeds | {} (weights, shuffle, dropout): every run trained once per seed |",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )?,
    }
    writeln!(
        md,
        "| AlexNet | `{}` |",
        runs.iter()
            .find(|r| r.exp.task == "1")
            .map_or("-", |r| r.config.arch.as_str())
    )?;
    writeln!(md, "\nAssumed, because the assignment does not state them: Adam at the given learning rates, batch 64 \
        (this profile uses {}), an 80/20 split drawn by seed and stratified by class, the d2l.ai AlexNet (its memory fits the report's; \
        torchvision's is `--alexnet alexnet`), no augmentation, ImageNet normalisation. The 20-epoch run continues the 10-epoch run's \
        checkpoint: with the same seed its first 10 epochs are exactly that run's (resume is exact on the CPU, a tested property), \
        so its time includes them.\n", first.config.batch_size)?;
    write_what_the_classifiers_see(&mut md, runs)?;
    if seeds.len() > 1 {
        writeln!(md, "Seeds: every run was trained {} times, once per seed, on the same images (the split and the subset are \
            fixed); the seed draws the initial weights, the shuffle order and the dropout masks. Each figure below is the mean ± the \
            sample standard deviation over the {} seeds, and each difference between two runs (a finding's change, ResNet34 against \
            ResNet18) is paired by seed before its mean and spread are taken. A difference smaller than its spread is not a finding \
            at this size. The photo table, the confusion matrix and the epoch-by-epoch tables are seed {}'s; the other seeds' runs \
            are in `seed-N/` beside this report.\n", seeds.len(), seeds.len(), seeds[0])?;
    }
    writeln!(md, "Deterministic: on one host, with the same build and thread count, this command gives the same figures again, bit \
        for bit (the seed fixes weights, split, order and dropout; resume and rerun are tested to be exact). Not across hosts: \
        another CPU takes other vector paths (AVX-512, AVX2, or the portable loops), whose rounding differs, and over tens of \
        epochs that moves accuracies by a few points on a small subset, as another seed does.\n")?;

    writeln!(md, "## This run beside the assignment's\n")?;
    writeln!(md, "The assignment's figures: {SOURCE}\n")?;
    writeln!(md, "| task | model | epochs | lr | wall time | GPU memory | final train acc | final test acc |\n|---|---|---|---|---|---|---|---|")?;
    for x in REFERENCE {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            x.task, x.model, x.epochs, x.lr, x.wall_time, x.gpu_memory, x.train_acc, x.test_acc
        )?;
    }
    writeln!(md, "\nThis run, with the reference figures of the same task repeated beside each measured one. The wall times are of \
        different work: the reference's trained 10,400 images an epoch at 224x224 on one T4 GPU; here {train_images} images at {}x{} on {} \
        ({} threads).\n", first.config.image_size, first.config.image_size, input.device, m.threads)?;
    writeln!(md, "| task | model | epochs | lr | wall time (ref) | wall time (here) | per epoch (here) | memory (ref) | memory (here) | train acc (ref) | train acc (here) | test acc (ref) | test acc (here) | best test (here) |")?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for g in &groups {
        let r = g[0];
        let reference = REFERENCE
            .iter()
            .find(|x| x.task == r.exp.task && (x.task != "4" || r.config.arch == "resnet34"));
        let lasts: Vec<&EpochRecord> = g.iter().filter_map(|r| r.report.records.last()).collect();
        if lasts.is_empty() {
            continue;
        }
        let over =
            |f: &dyn Fn(&RunResult) -> Option<f64>| Spread::of(g.iter().filter_map(|r| f(r)));
        let accuracy = |f: fn(&EpochRecord) -> f64| {
            over(&|r| r.report.records.last().map(f)).map_or("-".into(), |s| s.show(100.0, 2, "%"))
        };
        let epochs = {
            let (lo, hi) = lasts.iter().fold((usize::MAX, 0), |(lo, hi), e| {
                (lo.min(e.epoch), hi.max(e.epoch))
            });
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        let total =
            over(&|r| Some(total_time(&r.report.records))).map_or("-".into(), |s| match s.n {
                1 => duration(s.mean),
                _ => format!("{} ± {:.0} s", duration(s.mean), s.sd),
            });
        let per_epoch = over(&|r| {
            let recs = &r.report.records;
            (!recs.is_empty()).then(|| total_time(recs) / recs.len() as f64)
        })
        .map_or("-".into(), |s| s.show(1.0, 1, "s"));
        let best = match g.len() {
            1 => best_test(&r.report.records).map_or("-".into(), |b| {
                format!("{} (epoch {})", pct(b.test_accuracy), b.epoch)
            }),
            _ => over(&|r| best_test(&r.report.records).map(|b| b.test_accuracy))
                .map_or("-".into(), |s| s.show(100.0, 2, "%")),
        };
        let (rt, rm, rtr, rte) = reference.map_or(("-", "-", "-", "-"), |x| {
            (x.wall_time, x.gpu_memory, x.train_acc, x.test_acc)
        });
        writeln!(md, "| {} | {} | {epochs} | {} | {rt} | {total} | {per_epoch} | {rm} | {} | {rtr} | {} | {rte} | {} | {best} |",
            r.exp.task, model_name(&r.config.arch), r.config.lr, memory_cell(&lasts),
            accuracy(|e| e.train_accuracy), accuracy(|e| e.test_accuracy))?;
    }
    writeln!(md, "\nMemory here: on CUDA the last epoch's peak of the bytes held by tensors and those held at its end, from the device's \
        memory pool (as `torch.cuda.max_memory_allocated` and `memory_allocated`; where the device allocates without a pool, the device \
        memory in use sampled at batch ends (its peak) and the bytes of parameters, gradients and optimiser state; the reference \
        column shows the assignment's `torch.cuda.memory_allocated`); on the CPU the \
        run's peak resident set (`VmHWM`, reset when the run starts, so a run's figure is its own) and the same tensor bytes. \
        Train accuracy is the running accuracy of the epoch's training batches (train mode), as the assignment's code computes it.\n")?;

    writeln!(md, "## Findings\n")?;
    let findings = conclusions::findings(&groups, runs, input.photos);
    for f in &findings {
        writeln!(
            md,
            "- **{}** — {} {}",
            f.title,
            if f.holds {
                "shown again."
            } else {
                "**not** shown by this run."
            },
            f.text
        )?;
    }
    writeln!(md)?;

    writeln!(md, "## Task 3: the verdict on lr 5e-3\n")?;
    let task3: Vec<&RunResult> = runs.iter().filter(|r| r.exp.task == "3").collect();
    if let Some(r3) = task3.first() {
        let classes = r3.config.num_classes as f64;
        writeln!(md, "Verdict: **{}**.\n", r3.report.verdict.describe())?;
        writeln!(md, "| epoch | train loss | loss − ln {0} | train acc | test acc | chance |\n|---|---|---|---|---|---|", r3.config.num_classes)?;
        for e in &r3.report.records {
            writeln!(
                md,
                "| {} | {:.4} | {:+.4} | {} | {} | {} |",
                e.epoch,
                e.train_loss,
                e.train_loss - classes.ln(),
                pct(e.train_accuracy),
                pct(e.test_accuracy),
                pct(1.0 / classes)
            )?;
        }
        if let (cnn_train::Stop::NotConverging, Some(last)) =
            (&r3.report.stop, r3.report.records.last())
        {
            writeln!(md, "\nThe trainer stopped the run after epoch {} once it reached that verdict (this profile stops task 3 when \
                it is judged not converging; the `assignment` profile runs all {} epochs, as the assignment did).", last.epoch, r3.exp.epochs)?;
        }
        if let Verdict::Diverged { epoch, batch, .. } = r3.report.verdict {
            writeln!(md, "\nThe loss became non-finite at epoch {epoch}, batch {batch}, and the trainer stopped the run there.")?;
        }
        if task3.len() > 1 {
            writeln!(
                md,
                "\nThe table is seed {}'s. Every seed's verdict:\n",
                r3.seed
            )?;
            for r in &task3 {
                let epochs = r.report.records.len();
                writeln!(
                    md,
                    "- seed {}: {} ({epochs} epochs run)",
                    r.seed,
                    r.report.verdict.describe()
                )?;
            }
        }
        writeln!(md)?;
    }

    write_comparisons(&mut md, out, &groups)?;

    writeln!(md, "## Task 5: the photos\n")?;
    write_photos(&mut md, input)?;

    let best = &first_seed(runs)[input.best.run];
    writeln!(
        md,
        "## Best model: {} (task {}{})\n",
        model_name(&best.config.arch),
        best.exp.task,
        if seeds.len() > 1 {
            format!(", seed {}", best.seed)
        } else {
            String::new()
        }
    )?;
    write_confusion(&mut md, input.best)?;

    writeln!(md, "## Each run, epoch by epoch\n")?;
    if seeds.len() > 1 {
        writeln!(
            md,
            "Seed {}'s runs; every seed's are in its folder's `metrics.csv`.\n",
            seeds[0]
        )?;
    }
    for r in first_seed(runs) {
        write_run(&mut md, out, r)?;
    }

    writeln!(md, "## Machine\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| CPU | {} |", m.cpu)?;
    writeln!(md, "| threads | {} |", m.threads)?;
    match input.sgemm_gflops {
        Some(g) => writeln!(md, "| SGEMM 2048³ | {g:.0} GFLOP/s (candle's matmul on all threads, as the command started) |")?,
        None => writeln!(md, "| SGEMM 2048³ | not measured (the runs predate that measurement) |")?,
    }
    if let Some(g) = m.memory_gib {
        writeln!(md, "| memory | {g:.1} GiB |")?;
    }
    writeln!(md, "| device | {} |", input.device)?;
    writeln!(md, "| OS | {} |", m.os)?;
    writeln!(md, "| toolchain | {} |", m.rustc)?;
    let crates: Vec<String> = m.crates.iter().map(|(n, v)| format!("{n} {v}")).collect();
    writeln!(md, "| crates | {} |", crates.join(", "))?;
    writeln!(
        md,
        "| data | {} — {} images ({train_images} train / {test_images} test) |",
        input.source.label,
        train_images + test_images
    )?;
    writeln!(md, "\nEach run's folder beside this report holds its `config.json`, `classes.json`, `metrics.csv`, `metrics.jsonl`, \
        `report.json` and `train.log`; `measurements.json` holds the photo predictions and the best model's evaluation, so that \
        `cargo xtask reproduce --report-only` rewrites this report from them. The weights (`checkpoints/`, ~190 MB per AlexNet run) \
        are written where the command runs but not committed: a clone retrains them with the command above, after which \
        `cnn predict --checkpoint <folder> IMAGE` uses them.")?;

    let path = out.join("REPORT.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn write_photos(md: &mut String, input: &Input) -> Result<()> {
    let runs = first_seed(input.runs);
    let photos = input.photos;
    if photos.files.is_empty() {
        writeln!(md, "No photos were found.\n")?;
        return Ok(());
    }
    write!(md, "| photo |")?;
    for r in runs {
        write!(md, " task {} {} |", r.exp.task, model_name(&r.config.arch))?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|".repeat(runs.len()))?;
    for (p, file) in photos.files.iter().enumerate() {
        write!(
            md,
            "| {} |",
            file.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        )?;
        for (r, guesses) in photos.guesses.iter().enumerate() {
            let mut cell: Vec<String> = guesses[p]
                .iter()
                .map(|g| format!("{} {:.0} %", g.name, 100.0 * g.probability))
                .collect();
            if let Some(cam) = photos.cams.get(r).and_then(|c| c.get(p)) {
                cell.push(format!(
                    "<img src=\"{}\" width=\"{CAM_SIDE}\" alt=\"Grad-CAM, {} {}x{}\">",
                    cam.file.display(),
                    cam.layer,
                    cam.map[0],
                    cam.map[1]
                ));
                if let Some(note) = &cam.note {
                    cell.push(format!("<i>{note}</i>"));
                }
            }
            write!(md, " {} |", cell.join("<br>"))?;
        }
        writeln!(md)?;
    }
    writeln!(md, "\nTop-3 classes with their softmax probabilities. None of these photos shows a class of the training set \
        (china.jpg, a temple, is nearest to \"church\"): each model can only answer with one of its 10 classes, and what it \
        picks shows what it learned from its data set.\n")?;
    if let Some(maps) = cam_layers(input) {
        writeln!(md, "Under each answer, the Grad-CAM of its top class (`cnn predict --cam`): the photo as the model saw it with \
            the class-activation map of its last convolutional stage over it, red where the evidence for that class lies. The \
            maps: {maps}; under 4x4 a map is too coarse to say where a model looks, and the picture says so.\n")?;
    }
    Ok(())
}

/// `AlexNet (d2l) 11 5x5, ResNet18 layer4.1 4x4, ...`: each run's CAM layer and map size,
/// once per model; `None` without maps.
fn cam_layers(input: &Input) -> Option<String> {
    let mut seen = Vec::new();
    for (r, cams) in input.runs.iter().zip(&input.photos.cams) {
        let cam = cams.first()?;
        let line = format!(
            "{} `{}` {}x{}",
            model_name(&r.config.arch),
            cam.layer,
            cam.map[0],
            cam.map[1]
        );
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    (!seen.is_empty()).then(|| seen.join(", "))
}

fn write_confusion(md: &mut String, best: &Best) -> Result<()> {
    let e = &best.eval;
    writeln!(
        md,
        "Test accuracy {} over {} images (eval mode).\n",
        pct(e.accuracy),
        e.images
    )?;
    writeln!(md, "| class | accuracy | images |\n|---|---|---|")?;
    for (c, acc) in e.per_class_accuracy().iter().enumerate() {
        let n: u64 = e.confusion[c].iter().sum();
        writeln!(
            md,
            "| {} | {} | {n} |",
            best.class_names[c],
            acc.map_or("-".into(), pct)
        )?;
    }
    writeln!(
        md,
        "\nConfusion matrix (rows: true class, columns: predicted):\n"
    )?;
    write!(md, "| true \\ predicted |")?;
    for c in 0..e.confusion.len() {
        write!(md, " {c} |")?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|".repeat(e.confusion.len()))?;
    for (c, row) in e.confusion.iter().enumerate() {
        write!(md, "| {c} {} |", best.class_names[c])?;
        for v in row {
            write!(md, " {v} |")?;
        }
        writeln!(md)?;
    }
    writeln!(md)?;
    Ok(())
}

fn write_run(md: &mut String, out: &Path, r: &RunResult) -> Result<()> {
    let recs = &r.report.records;
    writeln!(
        md,
        "### Task {}: {}, {} epochs, lr {} (`{}`)\n",
        r.exp.task,
        model_name(&r.config.arch),
        r.config.epochs,
        r.config.lr,
        r.exp.key
    )?;
    writeln!(
        md,
        "Verdict: {}. Stopped: {:?}.\n",
        r.report.verdict.describe(),
        r.report.stop
    )?;
    let series = |label: &str, f| epoch_series(label.to_string(), recs, f);
    let loss_png = format!("{}-loss.png", r.exp.key);
    let acc_png = format!("{}-accuracy.png", r.exp.key);
    let title = format!("task {}: {}", r.exp.task, model_name(&r.config.arch));
    let classes = r.config.num_classes;
    line_chart(
        &out.join(&loss_png),
        &title,
        &loss_axis(classes),
        &[
            series("train", |e| e.train_loss),
            series("test", |e| e.test_loss),
        ],
    )?;
    line_chart(
        &out.join(&acc_png),
        &title,
        &accuracy_axis(classes),
        &[
            series("train", |e| 100.0 * e.train_accuracy),
            series("test", |e| 100.0 * e.test_accuracy),
        ],
    )?;
    writeln!(md, "![loss]({loss_png}) ![accuracy]({acc_png})\n")?;
    writeln!(md, "| epoch | train loss | train acc | test loss | test acc | time | data / fwd / bwd / opt (s) | img/s | memory |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for e in recs {
        let t = &e.time;
        writeln!(md, "| {} | {:.4} | {} | {:.4} | {} | {:.1} s | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {} |",
            e.epoch, e.train_loss, pct(e.train_accuracy), e.test_loss, pct(e.test_accuracy), t.total_s,
            t.data_s, t.forward_s, t.backward_s, t.optimizer_s, e.images_per_sec, memory_cell(&[e]))?;
    }
    writeln!(md)?;
    Ok(())
}

/// One value of each epoch as a chart line.
fn epoch_series(label: String, recs: &[EpochRecord], f: fn(&EpochRecord) -> f64) -> Series {
    Series {
        label,
        points: recs.iter().map(|e| (e.epoch as f64, f(e))).collect(),
    }
}

/// A loss axis: logarithmic, with a uniform guess's loss, ln(classes), drawn.
fn loss_axis(classes: usize) -> ValueAxis {
    ValueAxis {
        label: "loss (log scale)".into(),
        log: true,
        reference: Some((
            (classes as f64).ln(),
            format!("ln {classes}: a uniform guess"),
        )),
    }
}

/// An accuracy axis in percent, with chance drawn.
fn accuracy_axis(classes: usize) -> ValueAxis {
    ValueAxis {
        label: "accuracy (%)".into(),
        log: false,
        reference: Some((100.0 / classes as f64, "chance".into())),
    }
}

/// The comparisons the assignment asks for, each as one chart of two runs: 10 against 20
/// epochs (tasks 1 and 2), lr 1e-4 against 5e-3 (tasks 1 and 3), ResNet18 against ResNet34.
/// Over several seeds each line is the mean of the seeds' curves.
fn write_comparisons(md: &mut String, out: &Path, groups: &[Vec<&RunResult>]) -> Result<()> {
    let pairs = [
        (
            "1-alexnet-10ep",
            "2-alexnet-20ep",
            "AlexNet, 10 against 20 epochs",
            "compare-epochs",
        ),
        (
            "1-alexnet-10ep",
            "3-alexnet-lr5e-3",
            "AlexNet, lr 1e-4 against 5e-3",
            "compare-lr",
        ),
        (
            "4-resnet18",
            "4-resnet34",
            "ResNet18 against ResNet34",
            "compare-depth",
        ),
    ];
    writeln!(md, "## The comparisons, side by side\n")?;
    if groups.first().is_some_and(|g| g.len() > 1) {
        writeln!(
            md,
            "Each line is the mean over the {} seeds of that epoch's figure.\n",
            groups[0].len()
        )?;
    }
    for (a, b, title, file) in pairs {
        let (Some(a), Some(b)) = (group(groups, a), group(groups, b)) else {
            continue;
        };
        let name = |g: &[&RunResult]| {
            let r = g[0];
            format!(
                "task {} {} lr {}",
                r.exp.task,
                model_name(&r.config.arch),
                r.config.lr
            )
        };
        let series = |g: &[&RunResult], what: &str, f| {
            mean_epoch_series(format!("{} {what}", name(g)), g, f)
        };
        let classes = a[0].config.num_classes;
        let (loss_png, acc_png) = (format!("{file}-loss.png"), format!("{file}-accuracy.png"));
        line_chart(
            &out.join(&loss_png),
            title,
            &loss_axis(classes),
            &[
                series(a, "train", |e| e.train_loss),
                series(a, "test", |e| e.test_loss),
                series(b, "train", |e| e.train_loss),
                series(b, "test", |e| e.test_loss),
            ],
        )?;
        line_chart(
            &out.join(&acc_png),
            title,
            &accuracy_axis(classes),
            &[
                series(a, "train", |e| 100.0 * e.train_accuracy),
                series(a, "test", |e| 100.0 * e.test_accuracy),
                series(b, "train", |e| 100.0 * e.train_accuracy),
                series(b, "test", |e| 100.0 * e.test_accuracy),
            ],
        )?;
        writeln!(
            md,
            "**{title}**\n\n![loss]({loss_png}) ![accuracy]({acc_png})\n"
        )?;
    }
    Ok(())
}

/// One value of each epoch, averaged over the runs that reached that epoch, as a chart line
/// (runs stopped early, like task 3's, leave the later epochs to the others).
fn mean_epoch_series(label: String, runs: &[&RunResult], f: fn(&EpochRecord) -> f64) -> Series {
    let epochs = runs
        .iter()
        .map(|r| r.report.records.len())
        .max()
        .unwrap_or(0);
    let points = (1..=epochs)
        .filter_map(|epoch| {
            let at = runs
                .iter()
                .filter_map(|r| r.report.records.iter().find(|e| e.epoch == epoch).map(f));
            Spread::of(at).map(|s| (epoch as f64, s.mean))
        })
        .collect();
    Series { label, points }
}

/// A sentence on the feature map each network's classifier receives at the runs' image
/// size (the input of its adaptive pool), from a traced pass of each network.
fn write_what_the_classifiers_see(md: &mut String, runs: &[RunResult]) -> Result<()> {
    let (mut archs, mut seen): (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
    for r in runs {
        let size = r.config.image_size;
        let name = model_name(&r.config.arch);
        if archs.contains(&r.config.arch.as_str()) {
            continue;
        }
        archs.push(&r.config.arch);
        let model = cnn_models::Model::new(
            &r.config.arch,
            r.config.num_classes,
            0,
            &candle_core::Device::Cpu,
        )?;
        let layers = model.summary(size, 1)?.layers;
        let before_pool = layers
            .iter()
            .position(|l| l.name == "avgpool")
            .and_then(|i| i.checked_sub(1));
        if let Some(&[c, h, w]) = before_pool.map(|i| layers[i].output_shape.as_slice()) {
            seen.push(format!("{name} {c} maps of {h}x{w}"));
        }
    }
    if let Some(first) = runs.first() {
        writeln!(md, "What the classifiers see at {0}x{0}: {1}, each pooled to the classifier's input size. At this size the d2l \
            AlexNet's last map is at least 2x2 (it is from 97 px up; at 96 px and below it is 1x1 and the adaptive pool only copies \
            one value per channel), and every network gets the same images, so the comparisons between them are fair.\n",
            first.config.image_size, seen.join("; "))?;
    }
    Ok(())
}
