//! Divergence is detected, not eyeballed: a non-finite loss stops the run where it happens,
//! and a loss stuck at ln(classes) (or above it: exploded but finite) with accuracy at chance
//! for several epochs is flagged.

use crate::metrics::EpochRecord;
use serde::{Deserialize, Serialize};

/// What to do once a run is found not converging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStuck {
    /// Record the verdict and train on (the assignment's lr 0.005 run did all its epochs).
    #[default]
    Continue,
    /// Stop after the epoch that settles the verdict.
    Stop,
}

/// When a run counts as not converging.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DivergenceRule {
    /// Consecutive stuck epochs needed for the verdict.
    pub window: usize,
    /// An epoch is stuck when its train loss is no lower than ln(classes) less this fraction
    /// of it (stuck at a uniform guess, or worse)...
    pub loss_tolerance: f64,
    /// ...and both accuracies are within this fraction of chance (1/classes) of chance.
    pub chance_band: f64,
    pub on_stuck: OnStuck,
}

impl Default for DivergenceRule {
    fn default() -> Self {
        Self {
            window: 3,
            loss_tolerance: 0.02,
            chance_band: 0.5,
            on_stuck: OnStuck::Continue,
        }
    }
}

/// The health of a run, decided from its losses and accuracies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong seen (so far).
    Converging,
    /// The last `epochs` epochs (from `since_epoch`, 1-based) had a loss at or above that of
    /// a uniform guess, ln(classes) = `chance_loss`, with accuracy at chance.
    NotConverging {
        since_epoch: usize,
        epochs: usize,
        chance_loss: f64,
    },
    /// The training loss became NaN or infinite at this batch (1-based); the run stopped.
    Diverged {
        epoch: usize,
        batch: usize,
        #[serde(with = "crate::floats")]
        loss: f64,
    },
}

impl Verdict {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Converging => "converging".into(),
            Verdict::NotConverging { since_epoch, epochs, chance_loss } => format!(
                "not converging: loss at or above ln(classes) = {chance_loss:.4} with chance accuracy for {epochs} epochs since epoch {since_epoch}"
            ),
            Verdict::Diverged { epoch, batch, loss } => {
                format!("diverged: loss {} at epoch {epoch}, batch {batch}; run stopped", crate::floats::display(*loss))
            }
        }
    }
}

/// Whether one epoch looks like a model that learned nothing.
pub fn is_stuck(r: &EpochRecord, num_classes: usize, rule: &DivergenceRule) -> bool {
    let chance = 1.0 / num_classes.max(1) as f64;
    let chance_loss = (num_classes.max(1) as f64).ln();
    let near_chance = |acc: f64| (acc - chance).abs() <= rule.chance_band * chance;
    // A NaN loss counts as stuck too (it never compares lower).
    (r.train_loss >= chance_loss * (1.0 - rule.loss_tolerance) || r.train_loss.is_nan())
        && near_chance(r.train_accuracy)
        && near_chance(r.test_accuracy)
}

/// The verdict on a run's records so far: not converging when the last `rule.window`
/// epochs are all stuck (a run that recovers is converging again).
pub fn judge(records: &[EpochRecord], num_classes: usize, rule: &DivergenceRule) -> Verdict {
    let streak = records
        .iter()
        .rev()
        .take_while(|r| is_stuck(r, num_classes, rule))
        .count();
    if rule.window > 0 && streak >= rule.window && num_classes > 1 {
        Verdict::NotConverging {
            since_epoch: records[records.len() - streak].epoch,
            epochs: streak,
            chance_loss: (num_classes as f64).ln(),
        }
    } else {
        Verdict::Converging
    }
}
