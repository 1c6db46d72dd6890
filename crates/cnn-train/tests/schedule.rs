//! Learning-rate schedules: constant, step, cosine, and linear warm-up before each.

use cnn_train::{Schedule, Warmup};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn constant_step_and_cosine() {
    for e in 0..10 {
        close(Schedule::Constant.lr(0.1, None, e, 10), 0.1);
    }
    let step = Schedule::Step {
        every: 3,
        gamma: 0.1,
    };
    let lrs: Vec<f64> = (0..7).map(|e| step.lr(1.0, None, e, 7)).collect();
    for (got, want) in lrs.iter().zip([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01]) {
        close(*got, want);
    }
    let cos = Schedule::Cosine { min_lr: 0.0 };
    close(cos.lr(1.0, None, 0, 4), 1.0);
    close(
        cos.lr(1.0, None, 1, 4),
        (1.0 + (std::f64::consts::PI / 4.0).cos()) / 2.0,
    );
    close(cos.lr(1.0, None, 2, 4), 0.5);
    let cos_min = Schedule::Cosine { min_lr: 0.1 };
    close(cos_min.lr(1.0, None, 2, 4), 0.1 + 0.9 * 0.5);
}

#[test]
fn warmup_climbs_linearly_then_hands_over() {
    let w = Warmup {
        epochs: 2,
        start_factor: 0.25,
    };
    let cos = Schedule::Cosine { min_lr: 0.0 };
    // LinearLR: 0.25, 0.625; then cosine over the remaining 4 epochs starting at the base.
    close(cos.lr(0.4, Some(&w), 0, 6), 0.1);
    close(cos.lr(0.4, Some(&w), 1, 6), 0.25);
    close(cos.lr(0.4, Some(&w), 2, 6), 0.4);
    close(cos.lr(0.4, Some(&w), 4, 6), 0.2);
    let step = Schedule::Step {
        every: 1,
        gamma: 0.5,
    };
    close(step.lr(1.0, Some(&w), 3, 6), 0.5);
}

#[test]
fn bad_schedules_are_refused() {
    assert!(Schedule::Step {
        every: 0,
        gamma: 0.1
    }
    .validate(None, 10)
    .is_err());
    assert!(Schedule::Constant
        .validate(
            Some(&Warmup {
                epochs: 10,
                start_factor: 0.1
            }),
            10
        )
        .is_err());
    assert!(Schedule::Constant
        .validate(
            Some(&Warmup {
                epochs: 2,
                start_factor: 0.0
            }),
            10
        )
        .is_err());
    assert!(Schedule::Cosine { min_lr: 0.0 }
        .validate(
            Some(&Warmup {
                epochs: 2,
                start_factor: 0.1
            }),
            10
        )
        .is_ok());
}
