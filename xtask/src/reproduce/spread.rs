//! The mean and spread of one figure over the seeds a profile repeats its runs with, and
//! the runs grouped by experiment so that each figure is taken over its seeds.

use super::{first_seed, RunResult};

/// Mean and sample standard deviation of `n` values (`sd` is 0 for one value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let values: Vec<f64> = values.into_iter().collect();
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        // The sample (n - 1) deviation: with three seeds the population one would
        // understate how far a fourth seed may land.
        let sd = match n {
            1 => 0.0,
            _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt(),
        };
        Some(Spread { mean, sd, n })
    }

    /// `12.3 %` for one value, `12.3 ± 1.2 %` for several; `scale` multiplies both
    /// (100 for fractions shown as percentages) and `unit` follows them.
    pub fn show(&self, scale: f64, decimals: usize, unit: &str) -> String {
        let sep = if unit.is_empty() { "" } else { " " };
        match self.n {
            1 => format!("{:.*}{sep}{unit}", decimals, scale * self.mean),
            _ => format!(
                "{:.*} ± {:.*}{sep}{unit}",
                decimals,
                scale * self.mean,
                decimals,
                scale * self.sd
            ),
        }
    }
}

/// The runs of each experiment, one per seed, in the plan's order.
pub fn by_experiment(runs: &[RunResult]) -> Vec<Vec<&RunResult>> {
    first_seed(runs)
        .iter()
        .map(|first| runs.iter().filter(|r| r.exp.key == first.exp.key).collect())
        .collect()
}

/// The runs of the experiment `key`, one per seed, if the plan has it.
pub fn group<'a, 'r>(groups: &'a [Vec<&'r RunResult>], key: &str) -> Option<&'a [&'r RunResult]> {
    groups
        .iter()
        .find(|g| g.first().is_some_and(|r| r.exp.key == key))
        .map(|g| g.as_slice())
}

/// `f` of the two runs of the same seed in `a` and `b`, for every seed both have: paired
/// differences cancel what a seed does to both runs alike (the weights' draw, the order).
pub fn paired(
    a: &[&RunResult],
    b: &[&RunResult],
    f: impl Fn(&RunResult, &RunResult) -> Option<f64>,
) -> Option<Spread> {
    Spread::of(a.iter().filter_map(|ra| {
        let rb = b.iter().find(|rb| rb.seed == ra.seed)?;
        f(ra, rb)
    }))
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_is_the_mean_and_the_sample_deviation() {
        // Hand-worked: mean 4, squared deviations 4 + 0 + 4 = 8, / (3 - 1) = 4, sd 2.
        let s = Spread::of([2.0, 4.0, 6.0]).unwrap();
        assert_eq!((s.mean, s.sd, s.n), (4.0, 2.0, 3));
        assert_eq!(s.show(1.0, 1, "s"), "4.0 ± 2.0 s");
        let one = Spread::of([0.25]).unwrap();
        assert_eq!(
            (one.sd, one.show(100.0, 1, "%")),
            (0.0, "25.0 %".to_string())
        );
        assert!(Spread::of([]).is_none());
    }
}
