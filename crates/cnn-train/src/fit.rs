//! The training loop: epochs of batches (each a [`train_step`]), a test pass in eval mode
//! after each epoch, metrics, logs, divergence checks and checkpoints.
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
use crate::finetune;
use crate::log;
use crate::memory::{self, DeviceSampler, Memory};
use crate::metrics::{write_metrics, EpochRecord};
use crate::optim::OptimizerState;
use crate::step::{train_step, Step};
use crate::{atomic, floats};
use cnn_data::Skipped;
use cnn_models::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    /// A non-finite loss: see the verdict. The checkpoint holds the last epoch checkpointed
    /// (the last finished one where every epoch is: `checkpoint_every` 1).
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
    /// Bad image files left out (`BadFilePolicy::Skip`), as this session found them.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
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
    let started = Instant::now();
    let (mut opt, state, notes) = open_run_folder(cfg, model, data, start)?;
    finetune::scale_backbone(cfg, model, &mut opt);
    let mut run = Session {
        cfg,
        model,
        data,
        log: Logger {
            file: open_log(&cfg.out)?,
            on_event,
        },
        sampler: DeviceSampler {
            last: None,
            peak: state.device_peak_bytes,
        },
        verdict: judge(&state.records, cfg.num_classes, &cfg.divergence),
        opt,
        state,
        skips_logged: BTreeSet::new(),
    };
    run.announce();
    for line in notes {
        run.log.line(&line);
    }
    let mut why = Stop::Finished;
    if run.stays_stopped() {
        why = Stop::NotConverging;
    }
    while why == Stop::Finished && run.state.epoch < cfg.epochs {
        let segment = Instant::now();
        let sums = match run.train_epoch(stop, segment)? {
            EpochEnd::Trained(sums) => sums,
            EpochEnd::Stopped(stopped) => {
                why = stopped;
                break;
            }
        };
        let best_file = run.end_epoch(sums, segment)?;
        let stopping = run.judge_epoch(stop);
        if stopping.is_some() || run.checkpoint_due() {
            run.save_checkpoint(best_file.as_deref())?;
        }
        if let Some(stopped) = stopping {
            why = stopped;
            break;
        }
    }
    run.finish(why, started)
}

/// A fresh run's folder written (its initial weights loaded first, if the config names a
/// file), or a resumed run's checkpoint loaded into `model`: the optimiser, where training
/// stands, and lines for the log.
fn open_run_folder(
    cfg: &RunConfig,
    model: &Model,
    data: &Data,
    start: Start,
) -> Result<(OptimizerState, TrainState, Vec<String>)> {
    let out = cfg.out.as_path();
    match start {
        Start::Fresh => {
            if let Some(dir) = checkpoint::current(out)? {
                return Err(TrainError::RunExists {
                    out: out.into(),
                    checkpoint: dir,
                });
            }
            // Before anything is written: a bad file leaves no half-made run behind.
            let notes = finetune::load_initial_weights(cfg, model)?;
            checkpoint::write_run_files(out, cfg, &data.classes)?;
            checkpoint::clear_best(out)?;
            reset_log(out)?;
            Ok((
                OptimizerState::new(cfg.optimizer, cfg.weight_decay),
                TrainState::fresh(cfg.seed),
                notes,
            ))
        }
        Start::Resume => {
            check_resumable(out, cfg, data)?;
            let (opt, state) = checkpoint::load(out, model, model.device())?;
            if opt.rule != cfg.optimizer || opt.weight_decay != cfg.weight_decay {
                return Err(TrainError::Resume {
                    path: out.into(),
                    what: "the optimiser state is for another optimiser".into(),
                });
            }
            // The config may extend the run (more epochs); save it as the run's config.
            checkpoint::write_run_files(out, cfg, &data.classes)?;
            let notes = match &cfg.init_from {
                Some(init) => vec![format!(
                    "The run started from {}; its checkpoint's weights continue it",
                    init.source
                )],
                None => Vec::new(),
            };
            Ok((opt, state, notes))
        }
    }
}

/// How an epoch's batches ended.
enum EpochEnd {
    /// All batches trained, with these sums.
    Trained(EpochSums),
    /// Training stops inside the epoch (diverged, or interrupted with a checkpoint saved).
    Stopped(Stop),
}

/// What one session of training carries from batch to batch and epoch to epoch.
struct Session<'a> {
    cfg: &'a RunConfig,
    model: &'a Model,
    data: &'a Data,
    log: Logger<'a>,
    sampler: DeviceSampler,
    verdict: Verdict,
    opt: OptimizerState,
    state: TrainState,
    /// Bad files already named in the log.
    skips_logged: BTreeSet<PathBuf>,
}

impl Session<'_> {
    /// Names in the log each bad file left out since the last call; returns how many
    /// have been left out in all.
    fn log_skips(&mut self) -> usize {
        let skipped = self.data.skipped();
        for s in &skipped {
            if self.skips_logged.insert(s.path.clone()) {
                let line = format!("Skipped bad file {}: {}", s.path.display(), s.reason);
                self.log.line(&line);
            }
        }
        skipped.len()
    }

    /// Tells the caller what is about to run, and logs where a resumed run continues.
    fn announce(&mut self) {
        let (state, data) = (&self.state, self.data);
        (self.log.on_event)(&Event::Started {
            train_images: data.train.len(),
            test_images: data.test.len(),
            batches: data.train.num_batches(),
            epochs: self.cfg.epochs,
            epoch: state.epoch,
            batch: state.batch,
        });
        if state.epoch > 0 || state.batch > 0 {
            let line = format!(
                "Resuming {} at epoch {}, batch {}",
                self.cfg.out.display(),
                state.epoch + 1,
                state.batch
            );
            self.log.line(&line);
        }
        self.log.line(&log::total_images(data.train.len()));
        self.log_skips();
    }

    /// Whether a resumed run already stopped for not converging (its records say so and
    /// the rule stops such runs): it stays stopped instead of training on, since the verdict
    /// would not change again to stop it.
    fn stays_stopped(&mut self) -> bool {
        let stuck = matches!(self.verdict, Verdict::NotConverging { .. });
        let stop = stuck && self.cfg.divergence.on_stuck == OnStuck::Stop;
        if stop && self.state.epoch < self.cfg.epochs {
            let line = format!("Stopped already: {}", self.verdict.describe());
            self.log.line(&line);
        }
        stop
    }

    /// Trains the rest of the current epoch's batches; `segment` is when this session
    /// started on the epoch (for its wall time).
    fn train_epoch(&mut self, stop: &AtomicBool, segment: Instant) -> Result<EpochEnd> {
        let (cfg, epoch) = (self.cfg, self.state.epoch);
        let device = self.model.device().clone();
        let batches_per_epoch = self.data.train.num_batches();
        let lr = cfg.lr_at(epoch);
        let mut sums = self.state.sums;
        let mut batch_index = self.state.batch;
        // The epoch's tensor peak starts here (on CUDA with a memory pool; else a no-op).
        memory::reset_tensor_peak(&device);
        let mut iter = batches(&self.data.train, epoch, batch_index);
        loop {
            let t0 = Instant::now();
            let Some(batch) = iter.next() else { break };
            let batch = batch?;
            if batch.labels.is_empty() {
                // Every image of the batch was a bad file, skipped: nothing to train on.
                batch_index += 1;
                continue;
            }
            let (x, y) = to_tensors(batch, &device)?;
            let n = y.elem_count();
            device.synchronize()?;
            let data_s = t0.elapsed().as_secs_f64();
            let seed = dropout_seed(cfg.seed, epoch, batch_index);
            let (loss, correct, times) =
                match train_step(self.model, &mut self.opt, (&x, &y), lr, seed)? {
                    Step::Updated {
                        loss,
                        correct,
                        times,
                    } => (loss, correct, times),
                    Step::Diverged { loss } => {
                        return Ok(self.diverged(epoch + 1, batch_index + 1, loss));
                    }
                };
            self.sampler.sample(&device);
            sums.time.data_s += data_s;
            sums.time.forward_s += times.forward_s;
            sums.time.backward_s += times.backward_s;
            sums.time.optimizer_s += times.optimizer_s;
            sums.loss_sum += loss;
            sums.batches += 1;
            sums.correct += correct;
            sums.seen += n as u64;
            sums.running_loss += loss;
            sums.running_batches += 1;
            batch_index += 1;
            self.state.steps += 1;
            (self.log.on_event)(&Event::Batch {
                epoch: epoch + 1,
                batch: batch_index,
                batches: batches_per_epoch,
                images: n,
                loss,
            });
            if cfg.log_every > 0 && batch_index.is_multiple_of(cfg.log_every) {
                let mean = sums.running_loss / sums.running_batches as f64;
                self.log
                    .line(&log::batch_line(epoch + 1, batch_index, mean));
                sums.running_loss = 0.0;
                sums.running_batches = 0;
            }
            if stop.load(Ordering::SeqCst) && batch_index < batches_per_epoch {
                sums.time.total_s += segment.elapsed().as_secs_f64();
                return self.interrupt_in_epoch(sums, batch_index);
            }
        }
        Ok(EpochEnd::Trained(sums))
    }

    /// A non-finite loss at (1-based) `epoch`, `batch`: logged, and training stops.
    fn diverged(&mut self, epoch: usize, batch: usize, loss: f64) -> EpochEnd {
        self.verdict = Verdict::Diverged { epoch, batch, loss };
        let line = format!(
            "[Epoch {epoch}, Batch {batch}] loss: {}",
            floats::display(loss)
        );
        self.log.line(&line);
        let line = format!("Stopped: {}", self.verdict.describe());
        self.log.line(&line);
        EpochEnd::Stopped(Stop::Diverged)
    }

    /// Saves a checkpoint after `batch` batches of the current epoch and stops.
    fn interrupt_in_epoch(&mut self, sums: EpochSums, batch: usize) -> Result<EpochEnd> {
        let epoch = self.state.epoch + 1;
        self.state.batch = batch;
        self.state.sums = sums;
        self.state.device_peak_bytes = self.sampler.peak;
        checkpoint::save(&self.cfg.out, self.model, &self.opt, &self.state, None)?;
        let line = format!("Interrupted at epoch {epoch}, batch {batch}: checkpoint saved");
        self.log.line(&line);
        Ok(EpochEnd::Stopped(Stop::Interrupted { epoch, batch }))
    }

    /// The test pass after an epoch, its record logged and written, and the best weights
    /// kept if they are; returns the best weights' file when this epoch wrote it.
    fn end_epoch(&mut self, mut sums: EpochSums, segment: Instant) -> Result<Option<PathBuf>> {
        let (cfg, model, epoch) = (self.cfg, self.model, self.state.epoch);
        (self.log.on_event)(&Event::Evaluating { epoch: epoch + 1 });
        let t_eval = Instant::now();
        let test = evaluate(model, &self.data.test, model.device(), cfg.num_classes)?;
        sums.time.eval_s += t_eval.elapsed().as_secs_f64();
        sums.time.total_s += segment.elapsed().as_secs_f64();
        let trainable_bytes: u64 = model
            .params()
            .trainable()
            .map(|p| (p.var.elem_count() * p.var.dtype().size_in_bytes()) as u64)
            .sum();
        let tensors = memory::tensor_bytes(model.device());
        let memory = Memory {
            peak_rss_bytes: memory::peak_rss_bytes(),
            params_bytes: model.params().bytes() as u64,
            grads_bytes: trainable_bytes,
            optimizer_bytes: self.opt.bytes() as u64,
            device_used_bytes: self.sampler.last.map(|(used, _)| used),
            device_peak_bytes: self.sampler.peak,
            device_total_bytes: self.sampler.last.map(|(_, total)| total),
            device_tensor_bytes: tensors.map(|t| t.held),
            device_tensor_peak_bytes: tensors.map(|t| t.peak),
        };
        let train_s = sums.time.train_s();
        let skipped_files = self.log_skips();
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: cfg.lr_at(epoch),
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
            skipped_files,
        };
        self.log.line(&log::epoch_line(&record));
        let best_file = self.keep_if_best(&record)?;
        let state = &mut self.state;
        state.records.push(record);
        state.epoch += 1;
        state.batch = 0;
        state.sums = EpochSums::default();
        state.device_peak_bytes = self.sampler.peak;
        write_metrics(&cfg.out, &state.records)?;
        (self.log.on_event)(&Event::EpochEnd(state.records.last().expect("just pushed")));
        Ok(best_file)
    }

    /// Whether the epoch just finished is one to checkpoint: every `checkpoint_every`th,
    /// and the last.
    fn checkpoint_due(&self) -> bool {
        let done = self.state.epoch;
        done.is_multiple_of(self.cfg.checkpoint_every) || done >= self.cfg.epochs
    }

    /// Saves the state after the epoch just finished as the run's checkpoint, taking the
    /// weights from `best_file` where that epoch wrote them as the best.
    fn save_checkpoint(&self, best_file: Option<&Path>) -> Result<()> {
        checkpoint::save(&self.cfg.out, self.model, &self.opt, &self.state, best_file)
    }

    /// Keeps the model as the run's best weights when `record`'s test accuracy beats every
    /// earlier epoch's (the best weights' on record, else the earlier records'); returns the
    /// file written, if it was.
    fn keep_if_best(&self, record: &EpochRecord) -> Result<Option<PathBuf>> {
        let out = &self.cfg.out;
        let best = match checkpoint::read_best(out)? {
            Some(best) => best.test_accuracy,
            None => self
                .state
                .records
                .iter()
                .map(|r| r.test_accuracy)
                .fold(f64::NEG_INFINITY, f64::max),
        };
        if record.test_accuracy <= best {
            return Ok(None);
        }
        let file = checkpoint::save_best(out, self.model, record.epoch, record.test_accuracy)?;
        Ok(Some(file))
    }

    /// After an epoch: the divergence verdict updated (a run that stopped converging may
    /// stop here), and a requested stop honoured. `Some` where training stops.
    fn judge_epoch(&mut self, stop: &AtomicBool) -> Option<Stop> {
        let cfg = self.cfg;
        let before = self.verdict.clone();
        self.verdict = judge(&self.state.records, cfg.num_classes, &cfg.divergence);
        if self.verdict != before {
            if let Verdict::NotConverging { .. } = self.verdict {
                let line = format!("Warning: {}", self.verdict.describe());
                self.log.line(&line);
                if cfg.divergence.on_stuck == OnStuck::Stop {
                    return Some(Stop::NotConverging);
                }
            }
        }
        let epoch = self.state.epoch;
        if stop.load(Ordering::SeqCst) && epoch < cfg.epochs {
            let line = format!("Interrupted after epoch {epoch}: checkpoint saved");
            self.log.line(&line);
            return Some(Stop::Interrupted {
                epoch: epoch + 1,
                batch: 0,
            });
        }
        None
    }

    /// The session's closing lines and its report, written to the run folder.
    fn finish(mut self, stop: Stop, started: Instant) -> Result<Report> {
        if let Some(last) = self.state.records.last() {
            let line = log::memory_line(&last.memory, self.model.device().is_cuda());
            self.log.line(&line);
        }
        if stop == Stop::Finished {
            self.log.line("Finished Training");
        }
        let report = Report {
            records: self.state.records,
            verdict: self.verdict,
            stop,
            train_images: self.data.train.len(),
            test_images: self.data.test.len(),
            session_s: started.elapsed().as_secs_f64(),
            skipped: self.data.skipped(),
        };
        atomic::write_json(&self.cfg.out.join(REPORT_FILE), &report)?;
        (self.log.on_event)(&Event::Finished(&report));
        Ok(report)
    }
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
    extended.checkpoint_every = cfg.checkpoint_every;
    extended.divergence.on_stuck = cfg.divergence.on_stuck;
    if extended.arch != cfg.arch {
        return Err(differs("architecture"));
    }
    if extended.seed != cfg.seed {
        return Err(differs("seed"));
    }
    if extended != *cfg {
        return Err(differs(
            "configuration (only epochs, device, threads, cache, prefetch, logging and \
             checkpoint interval may change)",
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
