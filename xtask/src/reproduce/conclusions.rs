//! The report's findings, written by code from the measured numbers: each says what was
//! measured and whether the assignment's conclusion holds again.

use super::report::Photos;
use super::RunResult;
use cnn_train::{EpochRecord, Verdict};

/// One of the four things a reproduction should show again.
pub struct Finding {
    pub title: &'static str,
    pub holds: bool,
    pub text: String,
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

fn last(run: &RunResult) -> Option<&EpochRecord> {
    run.report.records.last()
}

fn find<'a>(runs: &'a [RunResult], key_prefix: &str) -> Option<&'a RunResult> {
    runs.iter().find(|r| r.exp.key.starts_with(key_prefix))
}

pub fn findings(runs: &[RunResult], photos: &Photos) -> Vec<Finding> {
    let classes = runs.first().map_or(10, |r| r.config.num_classes);
    let chance = 1.0 / classes as f64;
    let mut out = Vec::new();

    if let (Some(a), Some(b)) = (
        find(runs, "1-").and_then(last),
        find(runs, "2-").and_then(last),
    ) {
        let train_gain = 100.0 * (b.train_accuracy - a.train_accuracy);
        let test_change = 100.0 * (b.test_accuracy - a.test_accuracy);
        let gap = |r: &EpochRecord| 100.0 * (r.train_accuracy - r.test_accuracy);
        out.push(Finding {
            title: "More epochs raise training accuracy; test accuracy levels off",
            holds: b.train_accuracy > a.train_accuracy,
            text: format!(
                "20 epochs raised training accuracy by {train_gain:+.1} points ({} → {}) while test accuracy changed by \
                 {test_change:+.1} points ({} → {}); the train-test gap went from {:.1} to {:.1} points.",
                pct(a.train_accuracy),
                pct(b.train_accuracy),
                pct(a.test_accuracy),
                pct(b.test_accuracy),
                gap(a),
                gap(b)
            ),
        });
    }

    if let Some(run) = find(runs, "3-") {
        let ln_c = (classes as f64).ln();
        let evidence = match last(run) {
            Some(r) => format!(
                " Last epoch: train loss {:.4} against ln {classes} = {ln_c:.4}; train accuracy {} and test accuracy {} against chance {}.",
                r.train_loss,
                pct(r.train_accuracy),
                pct(r.test_accuracy),
                pct(chance)
            ),
            None => String::new(),
        };
        out.push(Finding {
            title: "At lr 5e-3 training does not converge",
            holds: !matches!(run.report.verdict, Verdict::Converging),
            text: format!(
                "Verdict, decided by the trainer's rule: {}.{evidence}",
                run.report.verdict.describe()
            ),
        });
    }

    if let (Some(r18), Some(r34)) = (find(runs, "4-resnet18"), find(runs, "4-resnet34")) {
        if let (Some(a), Some(b)) = (last(r18), last(r34)) {
            let learned = |r: &EpochRecord| r.test_accuracy >= 2.0 * chance;
            out.push(Finding {
                title: "Both ResNets learn",
                holds: learned(a) && learned(b),
                text: format!(
                    "After {} epochs ResNet18 reached {} train / {} test accuracy and ResNet34 {} train / {} test \
                     (chance is {}; the bar for \"learned\" here is twice chance).",
                    a.epoch,
                    pct(a.train_accuracy),
                    pct(a.test_accuracy),
                    pct(b.train_accuracy),
                    pct(b.test_accuracy),
                    pct(chance)
                ),
            });
        }
    }

    // Only models that learned something (test accuracy at least twice chance) are compared:
    // a model at chance answers alike for every photo, which says nothing.
    let learned = |r: &RunResult| last(r).is_some_and(|e| e.test_accuracy >= 2.0 * chance);
    let learners: Vec<usize> = (0..runs.len()).filter(|&i| learned(&runs[i])).collect();
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
            "The {} models that learned (test accuracy at least twice chance) gave different top-1 classes for {} of {} photos{}",
            learners.len(),
            disagreements.len(),
            photos.files.len(),
            if disagreements.is_empty() { ".".to_string() } else { format!(": {}.", disagreements.join("; ")) }
        ),
    });
    out
}
