//! `cargo xtask bench pipeline`: cnn-data's training pipeline throughput, cache off then on.
//!
//! Flags: `--data DIR` (a class-folder dataset; every image of it is used), `--res 224`,
//! `--batch 32`, `--threads 2`, `--epochs 2`, `--prefetch 4`. Prints
//! `RESULT pipeline cache=off ...` for one epoch without a cache (the train transform:
//! RandomResizedCrop + flip, ImageNet normalisation), then `RESULT pipeline cache=on ...` for
//! the median of epochs 2..=epochs of a loader with the memory decode cache (its first epoch
//! fills the cache and is not reported). Each line carries the process's peak RSS so far
//! (`VmHWM`). Timing starts when the first batch arrives (pool start-up and the first
//! batch's latency are excluded, as the PyTorch baseline excludes warm-up batches).
//! The batches are dropped on arrival: this measures the pipeline alone. With
//! `--consumer-ms MS` it measures memory against `--prefetch` instead (see
//! [`prefetch_memory`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cnn_data::{open, DataSpec, DecodeCache, Loader, LoaderConfig, Split};

struct Args {
    data: PathBuf,
    res: u32,
    batch: usize,
    threads: usize,
    epochs: u64,
    prefetch: usize,
    /// With a value: measure memory against the prefetch depth instead, a consumer taking
    /// this many milliseconds a batch so that the queue stays full.
    consumer_ms: Option<u64>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        data: PathBuf::new(),
        res: 224,
        batch: 32,
        threads: 2,
        epochs: 2,
        prefetch: 4,
        consumer_ms: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(value()?),
            "--res" => a.res = value()?.parse().context("--res")?,
            "--batch" => a.batch = value()?.parse().context("--batch")?,
            "--threads" => a.threads = value()?.parse().context("--threads")?,
            "--epochs" => a.epochs = value()?.parse().context("--epochs")?,
            "--prefetch" => a.prefetch = value()?.parse().context("--prefetch")?,
            "--consumer-ms" => a.consumer_ms = Some(value()?.parse().context("--consumer-ms")?),
            "-h" | "--help" => {
                println!(
                    "cargo xtask bench pipeline --data DIR [--res 224] [--batch 32] [--threads 2] \
                     [--epochs 2] [--prefetch 4] [--consumer-ms MS]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other} (try --help)"),
        }
    }
    if a.data.as_os_str().is_empty() {
        bail!("--data DIR is required (e.g. ../shared/datasets/imagenette-224)");
    }
    if a.epochs < 2 {
        bail!("--epochs must be at least 2 (the first fills the cache)");
    }
    Ok(a)
}

/// Peak resident set size of this process so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    cnn_train::memory::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64)
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    tick(11)
        .zip(tick(12))
        .map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One epoch's timing: images after the first batch, wall seconds since the first batch
/// arrived, and CPU seconds the whole process used over the epoch.
#[derive(Clone, Copy)]
struct Timing {
    images: usize,
    secs: f64,
    cpu_secs: f64,
    total_images: usize,
}

fn time_epoch(loader: &Loader, epoch: u64) -> Result<Timing> {
    let cpu0 = cpu_seconds();
    let mut start = None;
    let (mut images, mut total_images) = (0, 0);
    for batch in loader.epoch(epoch) {
        let batch = batch?;
        total_images += batch.len();
        match start {
            None => start = Some(Instant::now()),
            Some(_) => images += batch.len(),
        }
    }
    Ok(Timing {
        images,
        secs: start.map_or(0.0, |t| t.elapsed().as_secs_f64()),
        cpu_secs: cpu_seconds() - cpu0,
        total_images,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    let ds = open(&DataSpec::folder(&a.data))
        .with_context(|| format!("opening {}", a.data.display()))?;
    if let Some(ms) = a.consumer_ms {
        return prefetch_memory(&a, &ds.train, ms);
    }
    let all = Split {
        samples: ds
            .train
            .samples
            .iter()
            .chain(&ds.test.samples)
            .cloned()
            .collect(),
        ..ds.train.clone()
    };
    println!(
        "bench pipeline: {} images in {} classes from {}; load average at start {}",
        all.len(),
        ds.num_classes(),
        a.data.display(),
        load_average()
    );
    let config = |cache| loader_config(&a, cache);
    // cpu_ms_per_img is CPU time per image over the whole epoch: unlike img_per_s it does
    // not depend on how much of the machine other processes took.
    let line = |cache: &str, t: Timing| {
        println!(
            "RESULT pipeline cache={cache} res={} batch={} threads={} prefetch={} images={} \
             seconds={:.3} img_per_s={:.1} cpu_ms_per_img={:.3} peak_rss_mib={:.0}",
            a.res,
            a.batch,
            a.threads,
            a.prefetch,
            t.images,
            t.secs,
            t.images as f64 / t.secs,
            t.cpu_secs * 1000.0 / t.total_images as f64,
            peak_rss_mib()
        )
    };

    let off = Loader::new(&all, config(DecodeCache::Off))?;
    line("off", time_epoch(&off, 0)?);
    drop(off);

    let cached = Loader::new(&all, config(DecodeCache::Memory))?;
    time_epoch(&cached, 0)?; // fills the cache
    let mut runs = Vec::new();
    for epoch in 1..a.epochs {
        runs.push(time_epoch(&cached, epoch)?);
    }
    runs.sort_by(|x, y| (x.images as f64 / x.secs).total_cmp(&(y.images as f64 / y.secs)));
    line("on", runs[runs.len() / 2]);
    println!("load average at end {}", load_average());
    Ok(())
}

/// The train pipeline the flags ask for, with `cache`.
fn loader_config(a: &Args, cache: DecodeCache) -> LoaderConfig {
    LoaderConfig {
        threads: Some(a.threads),
        prefetch: a.prefetch,
        cache,
        ..LoaderConfig::train(a.res, a.batch)
    }
}

/// Peak memory against the prefetch depth: 40 batches of the train split, the consumer
/// sleeping `ms` a batch (a "training step") so that the loader keeps the queue full.
fn prefetch_memory(a: &Args, train: &Split, ms: u64) -> Result<()> {
    const BATCHES: usize = 40;
    let loader = Loader::new(train, loader_config(a, DecodeCache::Off))?;
    let mut n = 0;
    for batch in loader.epoch(0).take(BATCHES) {
        batch?;
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let batch_mib = (a.batch * 3 * (a.res * a.res) as usize * 4) as f64 / (1 << 20) as f64;
    println!(
        "RESULT prefetch_memory prefetch={} batches={n} consumer_ms={ms} peak_rss_mib={:.0} batch_mib={batch_mib:.1}",
        a.prefetch,
        peak_rss_mib()
    );
    Ok(())
}
