//! Inside a row's own process: the steps timed, one `RESULT` line per kernel set.

use super::{kernels_name, median, mode_name, op_times, Args, Mode, Row};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use cnn_models::{Model, Pass};
use cnn_ops as ops;
use cnn_train::memory::peak_rss_bytes;
use cnn_train::{train_step, Optimizer, OptimizerState, Step};
use std::time::Instant;

/// Inside a row's own process: build the model, time the steps of each kernel set (in turn,
/// step by step, when there are several), print one RESULT line per set.
pub(super) fn worker(args: &Args, row: &Row) -> Result<()> {
    let dev = Device::Cpu;
    let model = Model::new(&row.arch, 10, 0, &dev)?;
    let x = Tensor::randn(0f32, 1., (args.batch, 3, row.res, row.res), &dev)?;
    let labels: Vec<u32> = (0..args.batch as u32).map(|i| i % 10).collect();
    let labels = Tensor::from_vec(labels, args.batch, &dev)?;
    // The optimiser `cnn train` uses, with PyTorch's AdamW settings as the baseline has them.
    let mut opt = OptimizerState::new(Optimizer::adamw(), 0.01);
    // Each step's phases in seconds, as `bench_op_times::PHASES` names them.
    let mut step = |i: usize| -> Result<[f64; 3]> {
        match args.worker_mode {
            Mode::Train => match train_step(&model, &mut opt, (&x, &labels), 1e-4, i as u64)? {
                Step::Updated { times, .. } => {
                    Ok([times.forward_s, times.backward_s, times.optimizer_s])
                }
                Step::Diverged { loss } => bail!("{}: loss {loss} at step {i}", row.arch),
            },
            Mode::Infer => {
                let t0 = Instant::now();
                let logits = model.forward(&x, &Pass::infer())?;
                logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                Ok([t0.elapsed().as_secs_f64(), 0.0, 0.0])
            }
        }
    };
    let sets = &args.worker_kernels;
    let mut times = vec![Vec::new(); sets.len()];
    let mut phases = [0.0; 3];
    for i in 0..args.warmup + args.steps {
        if args.worker_op_times && i == args.warmup {
            ops::set_op_timing(true);
            ops::take_op_times(); // the warm-ups' ops
        }
        for (k, set) in sets.iter().enumerate() {
            ops::set_cpu_choice(set.kernels());
            let t0 = Instant::now();
            let step_phases = step(i * sets.len() + k)?;
            if i >= args.warmup {
                times[k].push(t0.elapsed().as_secs_f64());
                phases
                    .iter_mut()
                    .zip(step_phases)
                    .for_each(|(p, s)| *p += s);
            }
        }
    }
    if args.worker_op_times {
        ops::set_op_timing(false);
        let lines = op_times::worker_lines(phases, &ops::take_op_times(), args.steps);
        lines.iter().for_each(|l| println!("{l}"));
    }
    let rss = peak_rss_bytes().context("peak RSS")? as f64 / 1e6;
    for (set, times) in sets.iter().zip(times) {
        let median = median(&mut times.clone());
        let (min, max) = times
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        println!(
            "RESULT framework=cnn-models kernels={} mode={} arch={} res={} batch={} threads={} median_s={median:.4} min_s={min:.4} max_s={max:.4} img_per_s={:.2} peak_rss_mb={rss:.1}",
            kernels_name(*set),
            mode_name(args.worker_mode),
            row.arch,
            row.res,
            args.batch,
            rayon::current_num_threads(),
            args.batch as f64 / median,
        );
    }
    Ok(())
}
