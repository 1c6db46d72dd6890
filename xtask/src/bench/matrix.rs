//! The default job: every row and mode measured in its own processes, ours against PyTorch
//! and the chosen baselines, round after round, as one table.

use super::process::{op_times, ours, ours_sets, torch, Measure};
use super::{kernels_name, median, mode_name, sgemm_line, Args, Baseline, Mode, Row};
use anyhow::Result;

/// The whole matrix: for each row and mode, ours, then PyTorch, then candle, one process each.
pub(super) fn matrix(args: &Args) -> Result<()> {
    let rows = args
        .rows
        .split(',')
        .map(Row::parse)
        .collect::<Result<Vec<_>>>()?;
    println!(
        "bench: batch {}, {} timed steps after {} warm-ups, {} threads, malloc {:?}, train = forward + cross-entropy + backward + in-place AdamW",
        args.batch,
        args.steps,
        args.warmup,
        rayon::current_num_threads(),
        args.malloc
    );
    println!("{}", sgemm_line(args.steps)?);
    let mut table = Vec::new();
    for row in &rows {
        for &mode in &args.modes {
            let rounds = (0..args.rounds)
                .map(|_| one_round(args, row, mode))
                .collect::<Result<Vec<_>>>()?;
            let mine = combine(rounds.iter().map(|r| &r.ours));
            let mut line = format!(
                "{:14} {:5} ours {}",
                row.label(),
                mode_name(mode),
                mine.show()
            );
            let mut cells = vec![
                format!("{:.2}", mine.img_per_s),
                format!("{:.0}", mine.peak_rss_mb),
            ];
            if args.torch.is_some() {
                let t = combine(rounds.iter().filter_map(|r| r.torch.as_ref()));
                let ratio = median_over(&rounds, Round::ratio_to_torch);
                line += &format!(" | torch {} ratio={ratio:.2}", t.show());
                cells.push(format!("{:.2}", t.img_per_s));
                cells.push(format!("{:.0}", t.peak_rss_mb));
                cells.push(format!("{ratio:.2}"));
                if args.rounds > 1 {
                    let each: Vec<String> = rounds
                        .iter()
                        .map(|r| format!("{:.2}", r.ratio_to_torch()))
                        .collect();
                    line += &format!(" (rounds {})", each.join(", "));
                    cells.push(each.join(", "));
                }
            }
            for (k, &base) in args.baseline.iter().enumerate() {
                let c = combine(rounds.iter().map(|r| &r.baselines[k]));
                let speedup = median_over(&rounds, |r| r.ours.img_per_s / r.baselines[k].img_per_s);
                let name = kernels_name(base);
                line += &format!(" | {name} {} speedup={speedup:.2}", c.show());
                cells.push(format!("{:.2}", c.img_per_s));
                cells.push(format!("{speedup:.2}"));
            }
            println!("{line}");
            if args.op_times {
                print!("{}", op_times(args, row, mode)?);
            }
            table.push((row.label(), mode, cells));
        }
    }
    let mut head = vec!["ours img/s", "ours RSS MB"];
    if args.torch.is_some() {
        head.extend(["torch img/s", "torch RSS MB", "ratio"]);
        if args.rounds > 1 {
            head.push("ratio per round");
        }
    }
    let base_heads: Vec<String> = args
        .baseline
        .iter()
        .flat_map(|&b| {
            let name = kernels_name(b);
            [format!("{name} img/s"), format!("speedup vs {name}")]
        })
        .collect();
    head.extend(base_heads.iter().map(String::as_str));
    println!("\n| model@res | pass | {} |", head.join(" | "));
    println!("|---|---|{}", "---|".repeat(head.len()));
    for (label, mode, cells) in table {
        println!("| {label} | {} | {} |", mode_name(mode), cells.join(" | "));
    }
    Ok(())
}

/// One round of a row: our kernels, then PyTorch (with `--torch`), then each `--baseline`
/// set (in our process, step by step, with `--interleave`).
struct Round {
    ours: Measure,
    torch: Option<Measure>,
    baselines: Vec<Measure>,
}

impl Round {
    fn ratio_to_torch(&self) -> f64 {
        self.torch
            .as_ref()
            .map_or(f64::NAN, |t| self.ours.img_per_s / t.img_per_s)
    }
}

/// The median over `rounds` of a figure each round gives for itself (its ratio to PyTorch,
/// its speedup over a kernel set), so that both sides of it come from the same minute.
fn median_over(rounds: &[Round], figure: impl Fn(&Round) -> f64) -> f64 {
    median(&mut rounds.iter().map(figure).collect::<Vec<_>>())
}

fn one_round(args: &Args, row: &Row, mode: Mode) -> Result<Round> {
    let mut sets = vec![Baseline::Ours];
    sets.extend(&args.baseline);
    let mut together = match args.interleave {
        true => ours_sets(args, row, mode, &sets)?,
        false => vec![],
    };
    let ours_measure = match args.interleave {
        true => together.remove(0),
        false => ours(args, row, mode, Baseline::Ours)?,
    };
    let torch_measure = match &args.torch {
        Some(python) => Some(torch(args, python, row, mode)?),
        None => None,
    };
    let baselines = match args.interleave {
        true => together,
        false => args
            .baseline
            .iter()
            .map(|&base| ours(args, row, mode, base))
            .collect::<Result<_>>()?,
    };
    Ok(Round {
        ours: ours_measure,
        torch: torch_measure,
        baselines,
    })
}

/// Several rounds' figures as one: the median throughput, the slowest and fastest step of
/// any round, the largest peak RSS.
fn combine<'a>(rounds: impl Iterator<Item = &'a Measure>) -> Measure {
    let rounds: Vec<&Measure> = rounds.collect();
    let mut speeds: Vec<f64> = rounds.iter().map(|m| m.img_per_s).collect();
    Measure {
        img_per_s: median(&mut speeds),
        spread: (
            rounds
                .iter()
                .map(|m| m.spread.0)
                .fold(f64::INFINITY, f64::min),
            rounds.iter().map(|m| m.spread.1).fold(0.0, f64::max),
        ),
        peak_rss_mb: rounds.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::{combine, median_over, Measure, Round};

    fn measure(img_per_s: f64, spread: (f64, f64), peak_rss_mb: f64) -> Measure {
        Measure {
            img_per_s,
            spread,
            peak_rss_mb,
        }
    }

    #[test]
    fn rounds_combine_to_the_median_the_widest_spread_and_the_largest_rss() {
        let rounds = [
            measure(10.0, (9.0, 11.0), 100.0),
            measure(30.0, (28.0, 33.0), 90.0),
            measure(20.0, (19.0, 21.0), 120.0),
        ];
        let c = combine(rounds.iter());
        assert_eq!(c.img_per_s, 20.0);
        assert_eq!(c.spread, (9.0, 33.0));
        assert_eq!(c.peak_rss_mb, 120.0);
        assert_eq!(combine(rounds[..2].iter()).img_per_s, 20.0);
    }

    #[test]
    fn the_ratio_is_each_rounds_own_not_the_ratio_of_medians() {
        let round = |ours: f64, torch: f64| Round {
            ours: measure(ours, (ours, ours), 1.0),
            torch: Some(measure(torch, (torch, torch), 1.0)),
            baselines: vec![],
        };
        let rounds = [round(10.0, 10.0), round(30.0, 20.0), round(20.0, 5.0)];
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio_to_torch).collect();
        assert_eq!(ratios, [1.0, 1.5, 4.0]);
        assert_eq!(median_over(&rounds, Round::ratio_to_torch), 1.5);
        // The medians of each side (20 and 10) come from different rounds: their ratio, 2.0,
        // would pair measurements made at different times.
        let alone = Round {
            torch: None,
            ..round(1.0, 1.0)
        };
        assert!(alone.ratio_to_torch().is_nan());
    }
}
