//! The training loop: epochs of batches (forward, loss, backward, optimiser step), a test
//! pass in eval mode after each epoch, metrics, logs, divergence checks and checkpoints.
//!
//! Every random choice derives from the run's seed: initial weights, the loader's shuffle
//! and augmentation (seed, epoch, index) and dropout masks (seed, epoch, batch). With the
//! checkpoint holding weights, BatchNorm statistics, optimiser moments and the epoch's
//! running sums, a resumed run repeats the uninterrupted one exactly (same thread count).

use crate::checkpoint::{self, EpochSums, TrainState, LOG_FILE, REPORT_FILE};
use crate::config::RunConfig;
use crate::data::{batches, to_tensors, Data};
use crate::divergence::{judge, OnStuck, Verdict};
use crate::error::{Result, TrainError};
use crate::evaluate::evaluate;
use crate::log;
use crate::memory::{self, DeviceSampler, Memory};
use crate::metrics::{write_metrics, EpochRecord};
use crate::optim::OptimizerState;
use crate::{atomic, floats};
use candle_core::{DType, Tensor};
use cnn_models::{Model, Pass};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How `fit` treats the run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run: the folder must not hold a checkpoint already.
    Fresh,
    /// Continue from the folder's current checkpoint (its config must match).
    Resume,
}

/// Why a session of training ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// All epochs done.
    Finished,
    /// Stopped on request (Ctrl-C) after saving a checkpoint at this point (1-based epoch,
    /// batches of it done); `--resume` continues from there.
    Interrupted { epoch: usize, batch: usize },
    /// A non-finite loss: see the verdict. The checkpoint holds the last finished epoch.
    Diverged,
    /// Not converging and the rule says stop.
    NotConverging,
}

/// What a session of training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One record per finished epoch of the run (earlier sessions included).
    pub records: Vec<EpochRecord>,
    pub verdict: Verdict,
    pub stop: Stop,
    pub train_images: usize,
    pub test_images: usize,
    /// Wall time of this session, seconds.
    pub session_s: f64,
}

impl Report {
    /// The last finished epoch's record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.records.last()
    }
}

/// What `fit` tells its caller as it goes (for progress bars and printing).
#[derive(Debug)]
pub enum Event<'a> {
    /// Training starts at `epoch` (0-based) batch `batch` of `epochs` epochs.
    Started {
        train_images: usize,
        test_images: usize,
        batches: usize,
        epochs: usize,
        epoch: usize,
        batch: usize,
    },
    /// A training batch finished (1-based epoch and batch).
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        images: usize,
        loss: f64,
    },
    /// The test pass of an epoch starts.
    Evaluating {
        epoch: usize,
    },
    /// A log line (the assignment's format), also appended to `train.log`.
    Line(&'a str),
    EpochEnd(&'a EpochRecord),
    Finished(&'a Report),
}

/// The model a run trains: `cfg.arch` for `cfg.num_classes` classes on `cfg.device`, its
/// initial weights drawn from `cfg.seed` (a resumed run then loads its checkpoint over them).
pub fn build_model(cfg: &RunConfig) -> Result<Model> {
    let device = cfg.device.open()?;
    Ok(Model::new(&cfg.arch, cfg.num_classes, cfg.seed, &device)?)
}

/// Trains `model` (from [`build_model`]) on `data` as `cfg` says, writing the run folder
/// `cfg.out`; with [`Start::Resume`] the model first gets the checkpoint's weights. Setting
/// `stop` makes the loop save a checkpoint after the current batch and return with
/// [`Stop::Interrupted`]. After `fit` the model holds the last weights trained.
pub fn fit(
    cfg: &RunConfig,
    model: &Model,
    data: &Data,
    start: Start,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<Report> {
    cfg.validate()?;
    if model.arch() != cnn_models::find_arch(&cfg.arch)?.name
        || model.num_classes() != cfg.num_classes
    {
        return Err(TrainError::Config(format!(
            "the model is {} for {} classes but the config says {} for {}",
            model.arch(),
            model.num_classes(),
            cfg.arch,
            cfg.num_classes
        )));
    }
    if cfg.num_classes != data.classes.len() {
        return Err(TrainError::Config(format!(
            "the config says {} classes but the data has {}",
            cfg.num_classes,
            data.classes.len()
        )));
    }
    crate::on_compute_pool(cfg.threads, || run(cfg, model, data, start, stop, on_event))
        .map_err(|e| TrainError::Config(format!("thread pool: {e}")))?
}

fn run(
    cfg: &RunConfig,
    model: &Model,
    data: &Data,
    start: Start,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<Report> {
    let session = Instant::now();
    let device = model.device().clone();
    let out = cfg.out.as_path();
    let (mut opt, mut state) = match start {
        Start::Fresh => {
            if let Some(dir) = checkpoint::current(out)? {
                return Err(TrainError::Config(format!(
                    "{} already holds a run (checkpoint {}): pass --resume to continue it or choose another --out",
                    out.display(),
                    dir.display()
                )));
            }
            checkpoint::write_run_files(out, cfg, &data.classes)?;
            reset_log(out)?;
            (
                OptimizerState::new(cfg.optimizer, cfg.weight_decay),
                TrainState::fresh(cfg.seed),
            )
        }
        Start::Resume => {
            check_resumable(out, cfg, data)?;
            let (opt, state) = checkpoint::load(out, model, &device)?;
            if opt.rule != cfg.optimizer || opt.weight_decay != cfg.weight_decay {
                return Err(TrainError::Resume {
                    path: out.into(),
                    what: "the optimiser state is for another optimiser".into(),
                });
            }
            // The config may extend the run (more epochs); save it as the run's config.
            checkpoint::write_run_files(out, cfg, &data.classes)?;
            (opt, state)
        }
    };
    let mut log = Logger {
        file: open_log(out)?,
        on_event,
    };
    let train_images = data.train.len();
    let test_images = data.test.len();
    let batches_per_epoch = data.train.num_batches();
    (log.on_event)(&Event::Started {
        train_images,
        test_images,
        batches: batches_per_epoch,
        epochs: cfg.epochs,
        epoch: state.epoch,
        batch: state.batch,
    });
    if state.epoch > 0 || state.batch > 0 {
        log.line(&format!(
            "Resuming {} at epoch {}, batch {}",
            out.display(),
            state.epoch + 1,
            state.batch
        ));
    }
    log.line(&log::total_images(train_images));

    let mut sampler = DeviceSampler {
        last: None,
        peak: state.device_peak_bytes,
    };
    let trainable_bytes: u64 = model
        .params()
        .trainable()
        .map(|p| (p.var.elem_count() * p.var.dtype().size_in_bytes()) as u64)
        .sum();
    let mut verdict = judge(&state.records, cfg.num_classes, &cfg.divergence);
    let mut stop_reason = Stop::Finished;

    'epochs: while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let lr = cfg.lr_at(epoch);
        let segment = Instant::now();
        let mut sums = state.sums;
        let mut batch_index = state.batch;
        let mut iter = batches(&data.train, epoch, state.batch);
        loop {
            let t0 = Instant::now();
            let Some(batch) = iter.next() else { break };
            let (x, y) = to_tensors(batch?, &device)?;
            let n = y.elem_count();
            device.synchronize()?;
            let t1 = Instant::now();
            let pass = Pass::train(dropout_seed(cfg.seed, epoch, batch_index));
            let logits = model.forward(&x, &pass)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            let correct = count_correct(&logits, &y)?;
            let t2 = Instant::now();
            if !loss_value.is_finite() {
                verdict = Verdict::Diverged {
                    epoch: epoch + 1,
                    batch: batch_index + 1,
                    loss: loss_value,
                };
                log.line(&format!(
                    "[Epoch {}, Batch {}] loss: {}",
                    epoch + 1,
                    batch_index + 1,
                    floats::display(loss_value)
                ));
                log.line(&format!("Stopped: {}", verdict.describe()));
                stop_reason = Stop::Diverged;
                break 'epochs;
            }
            let grads = loss.backward()?;
            device.synchronize()?;
            let t3 = Instant::now();
            opt.step(model.params().trainable(), &grads, lr)?;
            drop(grads);
            device.synchronize()?;
            let t4 = Instant::now();
            sampler.sample(&device);

            sums.time.data_s += (t1 - t0).as_secs_f64();
            sums.time.forward_s += (t2 - t1).as_secs_f64();
            sums.time.backward_s += (t3 - t2).as_secs_f64();
            sums.time.optimizer_s += (t4 - t3).as_secs_f64();
            sums.loss_sum += loss_value;
            sums.batches += 1;
            sums.correct += correct;
            sums.seen += n as u64;
            sums.running_loss += loss_value;
            sums.running_batches += 1;
            batch_index += 1;
            state.steps += 1;
            (log.on_event)(&Event::Batch {
                epoch: epoch + 1,
                batch: batch_index,
                batches: batches_per_epoch,
                images: n,
                loss: loss_value,
            });
            if cfg.log_every > 0 && batch_index % cfg.log_every == 0 {
                let mean = sums.running_loss / sums.running_batches as f64;
                log.line(&log::batch_line(epoch + 1, batch_index, mean));
                sums.running_loss = 0.0;
                sums.running_batches = 0;
            }
            if stop.load(Ordering::SeqCst) && batch_index < batches_per_epoch {
                sums.time.total_s += segment.elapsed().as_secs_f64();
                state.batch = batch_index;
                state.sums = sums;
                state.device_peak_bytes = sampler.peak;
                checkpoint::save(out, model, &opt, &state)?;
                log.line(&format!(
                    "Interrupted at epoch {}, batch {}: checkpoint saved; continue with --resume",
                    epoch + 1,
                    batch_index
                ));
                stop_reason = Stop::Interrupted {
                    epoch: epoch + 1,
                    batch: batch_index,
                };
                break 'epochs;
            }
        }
        drop(iter);

        (log.on_event)(&Event::Evaluating { epoch: epoch + 1 });
        let t_eval = Instant::now();
        let test = evaluate(model, &data.test, &device, cfg.num_classes)?;
        sums.time.eval_s += t_eval.elapsed().as_secs_f64();
        sums.time.total_s += segment.elapsed().as_secs_f64();
        let memory = Memory {
            peak_rss_bytes: memory::peak_rss_bytes(),
            params_bytes: model.params().bytes() as u64,
            grads_bytes: trainable_bytes,
            optimizer_bytes: opt.bytes() as u64,
            device_used_bytes: sampler.last.map(|(used, _)| used),
            device_peak_bytes: sampler.peak,
            device_total_bytes: sampler.last.map(|(_, total)| total),
        };
        let train_s = sums.time.train_s();
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: sums.loss_sum / sums.batches.max(1) as f64,
            train_accuracy: sums.correct as f64 / sums.seen.max(1) as f64,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            train_images: sums.seen as usize,
            test_images: test.images,
            time: sums.time,
            images_per_sec: if train_s > 0.0 {
                sums.seen as f64 / train_s
            } else {
                0.0
            },
            memory,
        };
        log.line(&log::epoch_line(&record));
        state.records.push(record);
        state.epoch += 1;
        state.batch = 0;
        state.sums = EpochSums::default();
        state.device_peak_bytes = sampler.peak;
        write_metrics(out, &state.records)?;
        checkpoint::save(out, model, &opt, &state)?;
        (log.on_event)(&Event::EpochEnd(state.records.last().expect("just pushed")));

        let before = verdict.clone();
        verdict = judge(&state.records, cfg.num_classes, &cfg.divergence);
        if verdict != before {
            if let Verdict::NotConverging { .. } = verdict {
                log.line(&format!("Warning: {}", verdict.describe()));
                if cfg.divergence.on_stuck == OnStuck::Stop {
                    stop_reason = Stop::NotConverging;
                    break;
                }
            }
        }
        if stop.load(Ordering::SeqCst) && state.epoch < cfg.epochs {
            log.line(&format!(
                "Interrupted after epoch {}: checkpoint saved; continue with --resume",
                state.epoch
            ));
            stop_reason = Stop::Interrupted {
                epoch: state.epoch + 1,
                batch: 0,
            };
            break;
        }
    }

    if let Some(last) = state.records.last() {
        log.line(&log::memory_line(&last.memory, device.is_cuda()));
    }
    if stop_reason == Stop::Finished {
        log.line("Finished Training");
    }
    let report = Report {
        records: state.records,
        verdict,
        stop: stop_reason,
        train_images,
        test_images,
        session_s: session.elapsed().as_secs_f64(),
    };
    atomic::write_json(&out.join(REPORT_FILE), &report)?;
    (log.on_event)(&Event::Finished(&report));
    Ok(report)
}

/// The seed of the dropout masks of batch `batch` of epoch `epoch`.
pub fn dropout_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    splitmix(splitmix(seed ^ 0x6472_6f70_6f75_7421) ^ ((epoch as u64) << 32 | batch as u64))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Number of rows whose arg-max equals the label.
pub(crate) fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}

/// A resumed run must be the same run: same architecture, classes, data and seed.
fn check_resumable(out: &Path, cfg: &RunConfig, data: &Data) -> Result<()> {
    let saved = checkpoint::read_config(out)?;
    let differs = |what: &str| TrainError::Resume {
        path: out.to_path_buf(),
        what: format!("the run was started with a different {what}"),
    };
    let mut extended = saved.clone();
    extended.epochs = cfg.epochs;
    extended.out = cfg.out.clone();
    extended.device = cfg.device;
    extended.threads = cfg.threads;
    extended.data.threads = cfg.data.threads;
    extended.data.prefetch = cfg.data.prefetch;
    extended.data.cache = cfg.data.cache.clone();
    extended.log_every = cfg.log_every;
    extended.divergence.on_stuck = cfg.divergence.on_stuck;
    if extended.arch != cfg.arch {
        return Err(differs("architecture"));
    }
    if extended.seed != cfg.seed {
        return Err(differs("seed"));
    }
    if extended != *cfg {
        return Err(differs(
            "configuration (only epochs, device, threads, cache, prefetch and logging may change)",
        ));
    }
    let classes = checkpoint::read_classes(out)?;
    if classes != data.classes {
        return Err(differs("class list"));
    }
    Ok(())
}

struct Logger<'a> {
    file: std::fs::File,
    on_event: &'a mut (dyn FnMut(&Event) + Send),
}

impl Logger<'_> {
    fn line(&mut self, text: &str) {
        // The log file is a record for people; a full disk shows up at the next checkpoint.
        let _ = writeln!(self.file, "{text}");
        (self.on_event)(&Event::Line(text));
    }
}

fn reset_log(out: &Path) -> Result<()> {
    let path = out.join(LOG_FILE);
    std::fs::write(&path, "").map_err(|e| TrainError::file(&path, e))
}

fn open_log(out: &Path) -> Result<std::fs::File> {
    let path = out.join(LOG_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TrainError::file(&path, e))
}
