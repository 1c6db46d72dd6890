//! Optimisers against PyTorch's update rules: hand-worked numbers first, then several steps
//! of every option against a scalar reference written from PyTorch's documented algorithm.

use candle_core::{Device, Tensor, Var};
use cnn_train::{Optimizer, OptimizerState};

fn var(values: &[f64]) -> Var {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
}

fn grad(values: &[f64]) -> Tensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn values(v: &Var) -> Vec<f64> {
    v.as_tensor()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * w.abs().max(1.0);
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

/// Runs `steps` updates with the given gradients, returning the parameter after each.
fn run(rule: Optimizer, wd: f64, lr: f64, p0: &[f64], grads: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut opt = OptimizerState::new(rule, wd);
    let p = var(p0);
    grads
        .iter()
        .map(|g| {
            opt.update("w", &p, &grad(g), lr).unwrap();
            values(&p)
        })
        .collect()
}

// ---- hand-worked cases (numbers computed on paper) ----

#[test]
fn sgd_plain_is_p_minus_lr_g() {
    let out = run(
        Optimizer::sgd(0.0),
        0.0,
        0.1,
        &[1.0, -2.0],
        &[vec![0.5, -1.0], vec![0.5, -1.0]],
    );
    assert_close(&out[0], &[0.95, -1.9], "step 1");
    assert_close(&out[1], &[0.90, -1.8], "step 2");
}

#[test]
fn sgd_momentum_hand_worked() {
    // g = 1 always, lr 0.1, momentum 0.9: buf 1, 1.9, 2.71 -> p 0.9, 0.71, 0.439.
    let g = vec![vec![1.0]; 3];
    let out = run(Optimizer::sgd(0.9), 0.0, 0.1, &[1.0], &g);
    assert_close(&out[0], &[0.9], "step 1");
    assert_close(&out[1], &[0.71], "step 2");
    assert_close(&out[2], &[0.439], "step 3");
}

#[test]
fn sgd_dampening_skips_first_step() {
    // momentum 0.9, dampening 0.5, g = 1: buf 1 (first step copies g), then 0.9 + 0.5 = 1.4.
    let rule = Optimizer::Sgd {
        momentum: 0.9,
        dampening: 0.5,
        nesterov: false,
    };
    let out = run(rule, 0.0, 0.1, &[0.0], &[vec![1.0], vec![1.0]]);
    assert_close(&out[0], &[-0.1], "step 1");
    assert_close(&out[1], &[-0.24], "step 2");
}

#[test]
fn sgd_nesterov_hand_worked() {
    // g = 1, momentum 0.9, lr 0.1: buf 1 -> step 1 + 0.9 = 1.9; buf 1.9 -> step 1 + 1.71 = 2.71.
    let rule = Optimizer::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    let out = run(rule, 0.0, 0.1, &[0.0], &[vec![1.0], vec![1.0]]);
    assert_close(&out[0], &[-0.19], "step 1");
    assert_close(&out[1], &[-0.461], "step 2");
}

#[test]
fn sgd_weight_decay_adds_wd_p_to_the_gradient() {
    // p 2, g 0, wd 0.1, lr 0.5, momentum 0.9: g' = 0.2 -> p 1.9; then g' = 0.19, buf 0.18 + 0.19 = 0.37 -> p 1.715.
    let out = run(
        Optimizer::sgd(0.9),
        0.1,
        0.5,
        &[2.0],
        &[vec![0.0], vec![0.0]],
    );
    assert_close(&out[0], &[1.9], "step 1");
    assert_close(&out[1], &[1.715], "step 2");
}

#[test]
fn adam_first_step_moves_by_lr_times_sign() {
    // Step 1: m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps).
    let out = run(Optimizer::adam(), 0.0, 0.1, &[1.0, 1.0], &[vec![0.5, -2.0]]);
    assert_close(
        &out[0],
        &[
            1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
            1.0 + 0.1 * 2.0 / (2.0 + 1e-8),
        ],
        "step 1",
    );
}

#[test]
fn adam_second_step_hand_worked() {
    // g1 = 1, g2 = 3, lr 0.01, betas (0.9, 0.999):
    // m = 0.9*0.1 + 0.1*3 = 0.39, v = 0.999*0.001 + 0.001*9 = 0.009999,
    // m_hat = 0.39 / 0.19, v_hat = 0.009999 / 0.001999, p2 = p1 - 0.01 * m_hat / (sqrt(v_hat) + 1e-8).
    let out = run(
        Optimizer::adam(),
        0.0,
        0.01,
        &[0.0],
        &[vec![1.0], vec![3.0]],
    );
    let p1 = -0.01 * 1.0 / (1.0 + 1e-8);
    let p2 = p1 - 0.01 * (0.39 / 0.19) / ((0.009999f64 / 0.001999).sqrt() + 1e-8);
    assert_close(&out[1], &[p2], "step 2");
}

#[test]
fn adamw_decays_the_weight_directly() {
    // g = 0: moments stay 0, so only the decay acts: p *= 1 - lr * wd each step.
    let out = run(
        Optimizer::adamw(),
        0.1,
        0.1,
        &[1.0, -4.0],
        &[vec![0.0, 0.0], vec![0.0, 0.0]],
    );
    assert_close(&out[0], &[0.99, -3.96], "step 1");
    assert_close(&out[1], &[0.9801, -3.9204], "step 2");
}

#[test]
fn adam_weight_decay_is_l2_in_the_gradient() {
    // g = 0, p = 1, wd 0.1: g' = 0.1 at step 1, so p = 1 - lr * 0.1 / (0.1 + eps) ~ 1 - lr.
    let out = run(Optimizer::adam(), 0.1, 0.01, &[1.0], &[vec![0.0]]);
    assert_close(&out[0], &[1.0 - 0.01 * 0.1 / (0.1 + 1e-8)], "step 1");
}

// ---- several steps against a scalar reference of PyTorch's algorithm ----

/// `torch.optim.SGD` on one scalar, as in PyTorch's documentation.
fn sgd_reference(
    p0: f64,
    grads: &[f64],
    lr: f64,
    wd: f64,
    mu: f64,
    damp: f64,
    nesterov: bool,
) -> Vec<f64> {
    let (mut p, mut b, mut out) = (p0, None::<f64>, vec![]);
    for &g in grads {
        let mut g = g + wd * p;
        if mu != 0.0 {
            let nb = match b {
                None => g,
                Some(b) => mu * b + (1.0 - damp) * g,
            };
            b = Some(nb);
            g = if nesterov { g + mu * nb } else { nb };
        }
        p -= lr * g;
        out.push(p);
    }
    out
}

/// `torch.optim.Adam` / `AdamW` on one scalar, as in PyTorch's documentation.
fn adam_reference(
    p0: f64,
    grads: &[f64],
    lr: f64,
    wd: f64,
    (b1, b2, eps): (f64, f64, f64),
    decoupled: bool,
) -> Vec<f64> {
    let (mut p, mut m, mut v, mut out) = (p0, 0.0, 0.0, vec![]);
    for (t, &g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        let mut g = g;
        if decoupled {
            p *= 1.0 - lr * wd;
        } else {
            g += wd * p;
        }
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let m_hat = m / (1.0 - b1.powi(t));
        let v_hat = v / (1.0 - b2.powi(t));
        p -= lr * m_hat / (v_hat.sqrt() + eps);
        out.push(p);
    }
    out
}

const P0: [f64; 4] = [0.5, -1.25, 2.0, 0.0];

fn gradient_sequence() -> Vec<Vec<f64>> {
    (0..6)
        .map(|s| {
            P0.iter()
                .enumerate()
                .map(|(i, _)| ((s * 7 + i * 3) % 11) as f64 / 5.0 - 1.0)
                .collect()
        })
        .collect()
}

fn check_against(rule: Optimizer, wd: f64, lr: f64, reference: impl Fn(f64, &[f64]) -> Vec<f64>) {
    let grads = gradient_sequence();
    let got = run(rule, wd, lr, &P0, &grads);
    for (i, &p0) in P0.iter().enumerate() {
        let gi: Vec<f64> = grads.iter().map(|g| g[i]).collect();
        let want = reference(p0, &gi);
        for (step, w) in want.iter().enumerate() {
            assert_close(
                &[got[step][i]],
                &[*w],
                &format!("{rule:?} wd {wd} step {} elem {i}", step + 1),
            );
        }
    }
}

#[test]
fn sgd_matches_reference_for_every_option() {
    for (mu, damp, nesterov) in [
        (0.0, 0.0, false),
        (0.9, 0.0, false),
        (0.9, 0.3, false),
        (0.9, 0.0, true),
        (0.5, 0.0, true),
    ] {
        for wd in [0.0, 5e-4, 0.1] {
            let rule = Optimizer::Sgd {
                momentum: mu,
                dampening: damp,
                nesterov,
            };
            check_against(rule, wd, 0.05, |p0, g| {
                sgd_reference(p0, g, 0.05, wd, mu, damp, nesterov)
            });
        }
    }
}

#[test]
fn adam_and_adamw_match_reference() {
    for (b1, b2, eps) in [(0.9, 0.999, 1e-8), (0.8, 0.9, 1e-3)] {
        for wd in [0.0, 0.01, 0.5] {
            let adam = Optimizer::Adam {
                betas: (b1, b2),
                eps,
            };
            check_against(adam, wd, 1e-2, |p0, g| {
                adam_reference(p0, g, 1e-2, wd, (b1, b2, eps), false)
            });
            let adamw = Optimizer::AdamW {
                betas: (b1, b2),
                eps,
            };
            check_against(adamw, wd, 1e-2, |p0, g| {
                adam_reference(p0, g, 1e-2, wd, (b1, b2, eps), true)
            });
        }
    }
}

// ---- state ----

/// A kernel `[out 2][kh 1][kw 2][in 3]` held tap by tap, as the models hold theirs, after one
/// Adam step with distinct gradients, and its optimiser state.
fn kernel_after_one_step() -> (Var, OptimizerState) {
    let k = Tensor::arange(0f32, 12., &Device::Cpu).unwrap();
    let p = Var::from_tensor(&k.reshape((2, 1, 2, 3)).unwrap()).unwrap();
    let g = ((k.reshape((2, 1, 2, 3)).unwrap() * 0.1).unwrap() - 0.5).unwrap();
    let mut opt = OptimizerState::new(Optimizer::adam(), 0.0);
    opt.update("k", &p, &g, 0.1).unwrap();
    (p, opt)
}

#[test]
fn an_older_state_file_has_its_kernel_slots_laid_out_as_the_kernels_are_now() {
    // Before the models held conv kernels tap by tap, a state file's 4-D slots were OIHW
    // and it had no `kernels` entry; resumed as they were, Adam would pair each weight with
    // another's moments.
    let dir = tempfile::tempdir().unwrap();
    let (p, opt) = kernel_after_one_step();
    let path = dir.path().join("opt.safetensors");
    opt.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    assert_eq!(meta.remove("kernels").as_deref(), Some("ohwi"));
    let slots = opt.slots().unwrap();
    let oihw: Vec<(String, Tensor)> = slots
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap(),
            )
        })
        .collect();
    let older = dir.path().join("older.safetensors");
    safetensors::serialize_to_file(oihw.iter().map(|(k, t)| (k, t)), Some(meta), &older).unwrap();

    let back = OptimizerState::load(&older, &Device::Cpu)
        .unwrap()
        .slots()
        .unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(slots.len(), 2);
    for (k, t) in &slots {
        assert_eq!(back[k].dims(), p.dims(), "{k}");
        assert_eq!(flat(&back[k]), flat(t), "{k}");
    }
}

#[test]
fn a_slot_of_another_shape_than_its_parameter_is_refused_and_kept() {
    let (_, mut opt) = kernel_after_one_step();
    // The same 12 values shaped as the kernel used to be (OIHW).
    let oihw = Var::from_tensor(
        &Tensor::zeros((2, 3, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let err = opt
        .update("k", &oihw, &oihw.ones_like().unwrap(), 0.1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optimiser slot k.exp_avg is [2, 1, 2, 3], its parameter [2, 3, 1, 2]"),
        "{err}"
    );
    assert_eq!(opt.slots().unwrap().len(), 2, "both moments still held");
    assert_eq!(opt.steps("k"), 1);
}

#[test]
fn state_round_trips_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for rule in [
        Optimizer::sgd(0.9),
        Optimizer::Sgd {
            momentum: 0.9,
            dampening: 0.1,
            nesterov: false,
        },
        Optimizer::adam(),
        Optimizer::adamw(),
    ] {
        let grads = gradient_sequence();
        let straight = run(rule, 0.01, 0.1, &P0, &grads);

        let mut opt = OptimizerState::new(rule, 0.01);
        let p = var(&P0);
        for g in &grads[..3] {
            opt.update("w", &p, &grad(g), 0.1).unwrap();
        }
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        assert!(!dir.path().join("opt.safetensors.tmp").exists());
        let mut loaded = OptimizerState::load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.rule, rule);
        assert_eq!(loaded.steps("w"), 3);
        assert_eq!(loaded.bytes(), opt.bytes());
        // Each slot comes back with its values and its parameter's shape.
        let (saved, back) = (opt.slots().unwrap(), loaded.slots().unwrap());
        assert_eq!(
            saved.keys().collect::<Vec<_>>(),
            back.keys().collect::<Vec<_>>()
        );
        for (k, t) in &saved {
            assert_eq!(back[k].dims(), p.dims(), "{rule:?} {k}");
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&back[k]), flat(t), "{rule:?} {k}");
        }
        let shaped = Var::from_tensor(&p.as_tensor().reshape((2, 2)).unwrap()).unwrap();
        opt.update("m", &shaped, &shaped.ones_like().unwrap(), 0.1)
            .unwrap();
        opt.save(&path).unwrap();
        let back = OptimizerState::load(&path, &Device::Cpu)
            .unwrap()
            .slots()
            .unwrap();
        let key = back.keys().find(|k| k.starts_with("m.")).unwrap();
        assert_eq!(
            back[key].dims(),
            &[2, 2],
            "{rule:?}: a 2-D parameter's slot shape"
        );
        for g in &grads[3..] {
            loaded.update("w", &p, &grad(g), 0.1).unwrap();
        }
        assert_eq!(
            values(&p),
            straight[grads.len() - 1],
            "{rule:?}: resumed state differs"
        );
    }
}

#[test]
fn invalid_settings_are_refused() {
    let nesterov_without_momentum = Optimizer::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        nesterov: true,
    };
    assert!(nesterov_without_momentum.validate(0.1, 0.0).is_err());
    assert!(Optimizer::Adam {
        betas: (1.0, 0.999),
        eps: 1e-8
    }
    .validate(0.1, 0.0)
    .is_err());
    assert!(Optimizer::adam().validate(-1.0, 0.0).is_err());
    assert!(Optimizer::adam().validate(0.1, f64::NAN).is_err());
    assert!(Optimizer::adamw().validate(0.1, 0.01).is_ok());
}
