//! The measured processes: a worker of this binary per row (or PyTorch's script), and the
//! figures their `RESULT` lines carry.

use super::{
    kernels_name, malloc_arg, mode_name, op_times as op_table, Args, Baseline, Mode, Row,
    SUBCOMMAND,
};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One measured process's figures.
#[derive(Clone, Debug)]
pub(super) struct Measure {
    pub(super) img_per_s: f64,
    /// Slowest and fastest step, in images/s.
    pub(super) spread: (f64, f64),
    pub(super) peak_rss_mb: f64,
}

impl Measure {
    fn from_result(fields: &HashMap<String, String>, batch: usize) -> Result<Self> {
        let get = |k: &str| -> Result<f64> {
            fields
                .get(k)
                .with_context(|| format!("RESULT line lacks {k}"))?
                .parse::<f64>()
                .with_context(|| format!("RESULT {k} is not a number"))
        };
        let b = batch as f64;
        Ok(Self {
            img_per_s: get("img_per_s")?,
            spread: (b / get("max_s")?, b / get("min_s")?),
            peak_rss_mb: get("peak_rss_mb")?,
        })
    }

    pub(super) fn show(&self) -> String {
        format!(
            "{:7.2} img/s [{:.2}-{:.2}] rss {:5.0} MB",
            self.img_per_s, self.spread.0, self.spread.1, self.peak_rss_mb
        )
    }
}

/// The `key=value` pairs of each line starting with `RESULT`; a `PEAKRSS` line's pairs are
/// added to every one.
fn parse_result(stdout: &str) -> Result<Vec<HashMap<String, String>>> {
    let pairs = |line: &str| -> HashMap<String, String> {
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut results: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT"))
        .map(pairs)
        .collect();
    if let Some(line) = stdout.lines().find(|l| l.starts_with("PEAKRSS")) {
        results.iter_mut().for_each(|r| r.extend(pairs(line)));
    }
    if results.is_empty() {
        bail!("no RESULT line in:\n{stdout}")
    }
    Ok(results)
}

fn run_child(cmd: Command, what: &str) -> Result<Vec<HashMap<String, String>>> {
    parse_result(&child_stdout(cmd, what)?)
}

/// What `cmd` printed, or an error with its output if it failed.
fn child_stdout(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }
    Ok(stdout)
}

pub(super) fn ours(args: &Args, row: &Row, mode: Mode, kernels: Baseline) -> Result<Measure> {
    Ok(ours_sets(args, row, mode, &[kernels])?.remove(0))
}

/// One process timing each kernel set in turn, step by step.
pub(super) fn ours_sets(
    args: &Args,
    row: &Row,
    mode: Mode,
    sets: &[Baseline],
) -> Result<Vec<Measure>> {
    let names: Vec<&str> = sets.iter().map(|&k| kernels_name(k)).collect();
    let cmd = worker_command(args, row, mode, &names)?;
    let what = format!("{} {mode:?} ({})", row.label(), names.join(","));
    let out = run_child(cmd, &what)?;
    names
        .iter()
        .map(|name| {
            let fields = out
                .iter()
                .find(|f| f.get("kernels").map(String::as_str) == Some(*name))
                .with_context(|| format!("{what}: no RESULT for {name}"))?;
            Measure::from_result(fields, args.batch)
        })
        .collect()
}

/// `--op-times`: the table of where our step goes, from a worker of its own.
pub(super) fn op_times(args: &Args, row: &Row, mode: Mode) -> Result<String> {
    let mut cmd = worker_command(args, row, mode, &["ours"])?;
    cmd.arg("--worker-op-times");
    let stdout = child_stdout(cmd, &format!("{} {mode:?} op times", row.label()))?;
    op_table::table(&stdout, OP_TIMES_SHOWN)
}

/// Ops listed under a row by `--op-times`.
const OP_TIMES_SHOWN: usize = 12;

/// This binary as the worker of one row, mode and kernel sets.
fn worker_command(args: &Args, row: &Row, mode: Mode, names: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(SUBCOMMAND)
        .args(["--worker", &row.label()])
        .args(["--worker-mode", mode_name(mode)])
        .args(["--worker-kernels", &names.join(",")])
        .args(["--batch", &args.batch.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--malloc", &malloc_arg(args.malloc)])
        .envs(args.malloc.env());
    Ok(cmd)
}

/// PyTorch's baseline script, wrapped to report the process's peak RSS as well.
pub(super) fn torch(args: &Args, python: &Path, row: &Row, mode: Mode) -> Result<Measure> {
    let script = crate::shared_dir().join("bench/torch_baseline.py");
    let wrapper = "import resource, runpy, sys\n\
        sys.argv = sys.argv[1:]\n\
        runpy.run_path(sys.argv[0], run_name='__main__')\n\
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n\
        print(f'PEAKRSS peak_rss_mb={kb / 1024:.1f}')\n";
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(wrapper)
        .arg(&script)
        .arg(if mode == Mode::Train { "step" } else { "infer" })
        .arg(row.arch.replace('-', "_"))
        .arg(row.res.to_string())
        .args(["--batch", &args.batch.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .envs(args.malloc.env());
    let fields = run_child(cmd, &format!("torch {} {mode:?}", row.label()))?;
    Measure::from_result(&fields[0], args.batch)
}
