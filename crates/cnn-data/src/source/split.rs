//! Deterministic stratified split: each class is shuffled from the seed and cut at the ratio.

use crate::dataset::Sample;
use crate::error::DataError;
use crate::rng::{Purpose, Stream};
use crate::spec::SplitRule;

/// Train count for a class of `n`: `round(n * ratio)`, at least one when `n > 0`.
pub(crate) fn train_count(n: usize, ratio: f64) -> usize {
    if n == 0 {
        return 0;
    }
    ((n as f64 * ratio).round() as usize).clamp(1, n)
}

pub(crate) fn check_ratio(rule: &SplitRule) -> Result<(), DataError> {
    if rule.ratio > 0.0 && rule.ratio <= 1.0 {
        Ok(())
    } else {
        Err(DataError::Config(format!(
            "split ratio must be in (0, 1], got {}",
            rule.ratio
        )))
    }
}

/// Splits `by_class[c]` (samples of class `c`, in a fixed order) into train and test.
/// Within each split, samples keep their class-then-input order.
pub(crate) fn stratified(
    by_class: Vec<Vec<Sample>>,
    rule: &SplitRule,
) -> (Vec<Sample>, Vec<Sample>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (c, samples) in by_class.into_iter().enumerate() {
        let n = samples.len();
        let mut order: Vec<usize> = (0..n).collect();
        Stream::new(rule.seed, Purpose::Split, c as u64, 0).shuffle(&mut order);
        let mut in_train = vec![false; n];
        for &i in &order[..train_count(n, rule.ratio)] {
            in_train[i] = true;
        }
        for (s, t) in samples.into_iter().zip(in_train) {
            if t {
                train.push(s)
            } else {
                test.push(s)
            }
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Origin;

    fn fake(class: u32, n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                origin: Origin::File(format!("{class}/{i}").into()),
                label: class,
            })
            .collect()
    }

    #[test]
    fn assignment_sizes_13000_to_10400_2600() {
        let by_class = (0..10).map(|c| fake(c, 1300)).collect();
        let (train, test) = stratified(by_class, &SplitRule::default());
        assert_eq!((train.len(), test.len()), (10_400, 2_600));
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let names = |v: &[Sample]| -> Vec<String> {
            v.iter()
                .map(|s| match &s.origin {
                    Origin::File(p) => p.display().to_string(),
                    _ => unreachable!(),
                })
                .collect()
        };
        let rule = SplitRule {
            ratio: 0.5,
            seed: 9,
        };
        let (a, b) = stratified(vec![fake(0, 10), fake(1, 7)], &rule);
        let (a2, _) = stratified(vec![fake(0, 10), fake(1, 7)], &rule);
        assert_eq!(names(&a), names(&a2));
        // round(3.5) = 4 (half away from zero) for class 1, 5 for class 0.
        assert_eq!((a.len(), b.len()), (9, 8));
        let (a3, _) = stratified(
            vec![fake(0, 10), fake(1, 7)],
            &SplitRule {
                ratio: 0.5,
                seed: 10,
            },
        );
        assert_ne!(names(&a), names(&a3));
        let mut all = names(&a);
        all.extend(names(&b));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 17);
    }
}
