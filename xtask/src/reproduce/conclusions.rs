//! The report's findings, written by code from the measured numbers: each says what was
//! measured and whether the assignment's conclusion holds again. Where a profile repeats
//! its runs over seeds, each figure is the mean ± standard deviation over them.

use super::report::Photos;
use super::spread::{group, paired, Spread};
use super::{first_seed, RunResult};
use cnn_train::{EpochRecord, Verdict};

/// One of the four things a reproduction should show again.
pub struct Finding {
    pub title: &'static str,
    pub holds: bool,
    pub text: String,
}

fn last(run: &RunResult) -> Option<&EpochRecord> {
    run.report.records.last()
}

/// A figure of the last epoch over a group's seeds, as a percentage.
fn final_pct(runs: &[&RunResult], f: fn(&EpochRecord) -> f64) -> String {
    Spread::of(runs.iter().filter_map(|r| last(r).map(f)))
        .map_or("-".into(), |s| s.show(100.0, 1, "%"))
}

/// The difference `b - a` of a last-epoch figure, paired by seed, in points.
fn change(a: &[&RunResult], b: &[&RunResult], f: fn(&EpochRecord) -> f64) -> Option<Spread> {
    paired(a, b, |ra, rb| Some(100.0 * (f(last(rb)?) - f(last(ra)?))))
}

fn points(s: Option<Spread>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => format!("{:+.1} points", s.mean),
        Some(s) => format!("{:+.1} ± {:.1} points", s.mean, s.sd),
    }
}

/// ", higher in 3 of 3 seeds" where there are several seeds, else nothing.
fn in_seeds(count: usize, n: usize) -> String {
    match n {
        1 => String::new(),
        _ => format!(", higher in {count} of {n} seeds"),
    }
}

pub fn findings(groups: &[Vec<&RunResult>], runs: &[RunResult], photos: &Photos) -> Vec<Finding> {
    let classes = runs.first().map_or(10, |r| r.config.num_classes);
    let chance = 1.0 / classes as f64;
    let mut out = Vec::new();

    if let (Some(a), Some(b)) = (
        group(groups, "1-alexnet-10ep"),
        group(groups, "2-alexnet-20ep"),
    ) {
        let train_gain = change(a, b, |e| e.train_accuracy);
        let rose = paired(a, b, |ra, rb| {
            Some(f64::from(u8::from(
                last(rb)?.train_accuracy > last(ra)?.train_accuracy,
            )))
        });
        let gap = |g: &[&RunResult]| {
            Spread::of(
                g.iter()
                    .filter_map(|r| last(r).map(|e| e.train_accuracy - e.test_accuracy)),
            )
            .map_or("-".into(), |s| s.show(100.0, 1, "points"))
        };
        out.push(Finding {
            title: "More epochs raise training accuracy; test accuracy levels off",
            holds: train_gain.is_some_and(|g| g.mean > 0.0),
            text: format!(
                "20 epochs raised training accuracy by {}{} ({} → {}) while test accuracy changed by {} ({} → {}); \
                 the train-test gap went from {} to {}.",
                points(train_gain),
                // The mean of 0/1 "it rose" flags, times n: the seeds in which it rose.
                rose.map_or(String::new(), |r| in_seeds((r.mean * r.n as f64).round() as usize, r.n)),
                final_pct(a, |e| e.train_accuracy),
                final_pct(b, |e| e.train_accuracy),
                points(change(a, b, |e| e.test_accuracy)),
                final_pct(a, |e| e.test_accuracy),
                final_pct(b, |e| e.test_accuracy),
                gap(a),
                gap(b)
            ),
        });
    }

    if let Some(g) = group(groups, "3-alexnet-lr5e-3") {
        let ln_c = (classes as f64).ln();
        let stuck = g
            .iter()
            .filter(|r| !matches!(r.report.verdict, Verdict::Converging))
            .count();
        let loss = Spread::of(g.iter().filter_map(|r| last(r).map(|e| e.train_loss)));
        let evidence = match loss {
            Some(loss) => format!(
                " Last epoch: train loss {} against ln {classes} = {ln_c:.4}; train accuracy {} and test accuracy {} against \
                 chance {:.1} %.",
                loss.show(1.0, 4, ""),
                final_pct(g, |e| e.train_accuracy),
                final_pct(g, |e| e.test_accuracy),
                100.0 * chance
            ),
            None => String::new(),
        };
        let first = g[0];
        out.push(Finding {
            title: "At lr 5e-3 training does not converge",
            holds: stuck == g.len(),
            text: format!(
                "Verdict, decided by the trainer's rule{}: {}.{}{evidence}",
                if g.len() > 1 {
                    format!(" (seed {})", first.seed)
                } else {
                    String::new()
                },
                first.report.verdict.describe(),
                match g.len() {
                    1 => String::new(),
                    n => format!(" Judged not converging in {stuck} of {n} seeds."),
                }
            ),
        });
    }

    if let (Some(r18), Some(r34)) = (group(groups, "4-resnet18"), group(groups, "4-resnet34")) {
        let test = |g: &[&RunResult]| {
            Spread::of(g.iter().filter_map(|r| last(r).map(|e| e.test_accuracy)))
        };
        let learned = |g: &[&RunResult]| test(g).is_some_and(|s| s.mean >= 2.0 * chance);
        let epochs = last(r18[0]).map_or(0, |e| e.epoch);
        out.push(Finding {
            title: "Both ResNets learn",
            holds: learned(r18) && learned(r34),
            text: format!(
                "After {epochs} epochs ResNet18 reached {} train / {} test accuracy and ResNet34 {} train / {} test \
                 (chance is {:.1} %; the bar for \"learned\" here is twice chance). ResNet34 minus ResNet18 in test accuracy: {}.",
                final_pct(r18, |e| e.train_accuracy),
                final_pct(r18, |e| e.test_accuracy),
                final_pct(r34, |e| e.train_accuracy),
                final_pct(r34, |e| e.test_accuracy),
                100.0 * chance,
                points(change(r18, r34, |e| e.test_accuracy))
            ),
        });
    }

    // Only models that learned something (test accuracy at least twice chance) are compared:
    // a model at chance answers alike for every photo, which says nothing. The photos were
    // classified by the first seed's models.
    let models = first_seed(runs);
    let learned = |r: &RunResult| last(r).is_some_and(|e| e.test_accuracy >= 2.0 * chance);
    let learners: Vec<usize> = (0..models.len()).filter(|&i| learned(&models[i])).collect();
    let mut disagreements = Vec::new();
    for (p, photo) in photos.files.iter().enumerate() {
        let tops: Vec<&str> = learners
            .iter()
            .filter_map(|&i| photos.guesses[i].get(p)?.first().map(|g| g.name.as_str()))
            .collect();
        if tops.windows(2).any(|w| w[0] != w[1]) {
            let name = photo
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            disagreements.push(format!("{name} ({})", tops.join(" / ")));
        }
    }
    out.push(Finding {
        title: "The models disagree on photos from outside their classes",
        holds: !disagreements.is_empty(),
        text: format!(
            "The {} models that learned (test accuracy at least twice chance{}) gave different top-1 classes for {} of {} photos{}",
            learners.len(),
            if models.len() < runs.len() { format!("; seed {}'s", models[0].seed) } else { String::new() },
            disagreements.len(),
            photos.files.len(),
            if disagreements.is_empty() { ".".to_string() } else { format!(": {}.", disagreements.join("; ")) }
        ),
    });
    out
}
