//! `cargo xtask bench --op-times`: where one of our steps goes, as the row's worker process
//! reports it (phases of the step and each op by input shapes, ms per step) and as the
//! bench prints it under the row.

use anyhow::{bail, Context, Result};
use cnn_ops::OpTime;

/// The phases a worker times: forward (with the loss), backward, optimiser step.
pub const PHASES: [&str; 3] = ["forward", "backward", "optimiser"];

/// The lines a worker prints after `steps` timed steps: each phase's and each op's time per
/// step (phases that took no time, as the backward and optimiser of inference, left out).
pub fn worker_lines(phase_seconds: [f64; 3], ops: &[OpTime], steps: usize) -> Vec<String> {
    let per_step = |s: f64| s * 1e3 / steps.max(1) as f64;
    let phases = PHASES
        .iter()
        .zip(phase_seconds)
        .filter(|(_, s)| *s > 0.0)
        .map(|(name, s)| format!("OPTIME phase={name} ms={:.3}", per_step(s)));
    let ops = ops.iter().map(|t| {
        let shapes: Vec<String> = t.shapes.iter().map(|s| dims(s)).collect();
        format!(
            "OPTIME calls={:.2} ms={:.3} shapes={} op={}",
            t.calls as f64 / steps.max(1) as f64,
            per_step(t.seconds),
            shapes.join(","),
            t.op
        )
    });
    phases.chain(ops).collect()
}

fn dims(shape: &[usize]) -> String {
    let each: Vec<String> = shape.iter().map(usize::to_string).collect();
    each.join("x")
}

/// One op's line from a worker.
#[derive(Debug, PartialEq)]
struct OpLine {
    op: String,
    shapes: String,
    calls: f64,
    ms: f64,
}

/// What a worker's OPTIME lines say: each phase's ms per step, and each op's line.
struct Report {
    phases: Vec<(String, f64)>,
    ops: Vec<OpLine>,
}

/// The OPTIME lines of a worker's output.
fn parse(stdout: &str) -> Result<Report> {
    let (mut phases, mut ops) = (Vec::new(), Vec::new());
    for line in stdout.lines().filter_map(|l| l.strip_prefix("OPTIME ")) {
        let number = |key: &str| -> Result<f64> {
            let field = line.split_whitespace().find_map(|f| f.strip_prefix(key));
            field
                .with_context(|| format!("OPTIME line lacks {key}: {line}"))?
                .parse()
                .with_context(|| format!("OPTIME {key} is not a number: {line}"))
        };
        if let Some(rest) = line.strip_prefix("phase=") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            phases.push((name.to_string(), number("ms=")?));
            continue;
        }
        // The op's name comes last: it may hold spaces ("batch_norm backward").
        let Some((head, op)) = line.split_once(" op=") else {
            bail!("OPTIME line without op=: {line}")
        };
        let shapes = head
            .split_whitespace()
            .find_map(|f| f.strip_prefix("shapes="));
        ops.push(OpLine {
            op: op.to_string(),
            shapes: shapes.unwrap_or_default().to_string(),
            calls: number("calls=")?,
            ms: number("ms=")?,
        });
    }
    if phases.is_empty() {
        bail!("no OPTIME phase line in:\n{stdout}")
    }
    Ok(Report { phases, ops })
}

/// The table printed under a row: its phases, then the `top` most costly ops (by op and
/// input shapes, ms per step), and what the timed ops leave of the step (candle's own ops
/// and the autograd bookkeeping).
pub fn table(stdout: &str, top: usize) -> Result<String> {
    let Report { phases, ops } = parse(stdout)?;
    let step: f64 = phases.iter().map(|(_, ms)| ms).sum();
    let named: Vec<String> = phases
        .iter()
        .map(|(name, ms)| format!("{name} {ms:.1}"))
        .collect();
    let mut out = format!(
        "  one step {step:.1} ms (timed in a process of its own): {}\n",
        named.join(", ")
    );
    out += "    ms/step  share  calls  op [input shapes]\n";
    for o in ops.iter().take(top) {
        out += &format!(
            "    {:7.2}  {:4.1}%  {:5.1}  {} [{}]\n",
            o.ms,
            100.0 * o.ms / step,
            o.calls,
            o.op,
            o.shapes
        );
    }
    let timed: f64 = ops.iter().map(|o| o.ms).sum();
    let rest: f64 = ops.iter().skip(top).map(|o| o.ms).sum();
    out += &format!(
        "    {rest:7.2}  {:4.1}%         the other {} (op, shapes) entries\n",
        100.0 * rest / step,
        ops.len().saturating_sub(top)
    );
    out += &format!(
        "    {:7.2}  {:4.1}%         outside these kernels (optimiser, candle's ops, autograd)\n",
        step - timed,
        100.0 * (step - timed) / step
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, shapes: &[&[usize]], calls: u64, seconds: f64) -> OpTime {
        OpTime {
            op: name.to_string(),
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            calls,
            seconds,
        }
    }

    #[test]
    fn worker_lines_read_back_per_step() {
        let ops = [
            op("batch_norm backward", &[&[32, 64, 8, 8], &[64]], 10, 0.05),
            op("relu", &[&[32, 64, 8, 8]], 5, 0.01),
        ];
        let lines = worker_lines([0.2, 0.3, 0.0], &ops, 5);
        // The optimiser took nothing (inference): no line for it.
        assert_eq!(lines.len(), 4, "{lines:?}");
        let Report {
            phases,
            ops: parsed,
        } = parse(&lines.join("\n")).unwrap();
        assert_eq!(
            phases,
            [
                ("forward".to_string(), 40.0),
                ("backward".to_string(), 60.0)
            ]
        );
        assert_eq!(
            parsed[0],
            OpLine {
                op: "batch_norm backward".into(),
                shapes: "32x64x8x8,64".into(),
                calls: 2.0,
                ms: 10.0
            }
        );
        assert_eq!(parsed[1].ms, 2.0);
    }

    #[test]
    fn the_table_accounts_for_the_whole_step() {
        let ops = [op("a", &[&[2]], 1, 0.030), op("b", &[&[3]], 1, 0.020)];
        let stdout = worker_lines([0.1, 0.0, 0.0], &ops, 1).join("\n");
        let table = table(&stdout, 1).unwrap();
        assert!(table.contains("one step 100.0 ms"), "{table}");
        assert!(table.contains("30.00  30.0%    1.0  a [2]"), "{table}");
        // b is past the top 1, and 50 ms of the step is in no listed op.
        assert!(
            table.contains("20.00  20.0%         the other 1 (op, shapes) entries"),
            "{table}"
        );
        assert!(table.contains("50.00  50.0%         outside"), "{table}");
    }

    #[test]
    fn a_worker_without_phase_lines_is_an_error() {
        let err = table("RESULT x=1\n", 5).unwrap_err().to_string();
        assert!(err.contains("no OPTIME phase line"), "{err}");
    }
}
