//! The ops the project implements itself, checked against hand-worked values and their
//! gradients against central finite differences in f64 on random inputs.

use candle_core::{DType, Device, Tensor, Var};
use cnn_ops as ops;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Checks d/dx sum(f(x) * r) from backward against central differences, element by element.
fn gradcheck(f: impl Fn(&Tensor) -> Tensor, x: &Tensor, seed: u64) {
    let x = Var::from_tensor(x).unwrap();
    let y = f(x.as_tensor());
    let r = random(y.dims(), seed ^ 0xFFFF);
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let analytic = values(
        grads
            .get(x.as_tensor())
            .expect("no gradient reached the input"),
    );
    let base = values(x.as_tensor());
    let objective = |v: &[f64]| {
        let t = Tensor::from_vec(v.to_vec(), x.dims(), &Device::Cpu).unwrap();
        (f(&t) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-6;
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += h;
        let mut minus = base.clone();
        minus[i] -= h;
        let numeric = (objective(&plus) - objective(&minus)) / (2.0 * h);
        let err = (numeric - analytic[i]).abs();
        assert!(
            err < 1e-6 * (1.0 + numeric.abs()),
            "element {i} of {:?}: backward {} vs finite difference {numeric}",
            x.dims(),
            analytic[i]
        );
    }
}

/// Max-pooling by the definition, for comparison.
fn reference_max_pool(x: &Tensor, k: usize, s: usize, p: usize) -> Vec<f64> {
    let (n, c, h, w) = x.dims4().unwrap();
    let v = values(x);
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut out = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let (y, xx) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            m = m.max(v[plane * h * w + y as usize * w + xx as usize]);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

const POOL_CASES: &[(&[usize], usize, usize, usize)] = &[
    (&[2, 3, 7, 7], 3, 2, 0),  // AlexNet's overlapping pool, odd size
    (&[1, 2, 8, 5], 3, 2, 1),  // ResNet's pool with padding, non-square
    (&[3, 1, 6, 6], 2, 2, 0),  // kernel == stride
    (&[1, 1, 9, 11], 3, 1, 1), // stride 1
    (&[2, 2, 5, 5], 5, 3, 2),  // big window, padding 2
    (&[1, 1, 3, 3], 3, 2, 1),
];

#[test]
fn max_pool_forward_matches_the_definition_on_both_paths() {
    for (i, &(shape, k, s, p)) in POOL_CASES.iter().enumerate() {
        let x = random(shape, i as u64);
        let expected = reference_max_pool(&x, k, s, p);
        assert_eq!(
            values(&ops::max_pool2d(&x, k, s, p).unwrap()),
            expected,
            "cpu kernel {shape:?} k{k} s{s} p{p}"
        );
        assert_eq!(
            values(&ops::max_pool2d_composed(&x, k, s, p).unwrap()),
            expected,
            "composed {shape:?} k{k} s{s} p{p}"
        );
        let f32_out = ops::max_pool2d(&x.to_dtype(DType::F32).unwrap(), k, s, p).unwrap();
        let rounded: Vec<f64> = expected.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(values(&f32_out), rounded, "f32 kernel {shape:?}");
    }
}

#[test]
fn max_pool_gradient_matches_finite_differences() {
    for (i, &(shape, k, s, p)) in POOL_CASES.iter().enumerate() {
        let x = random(shape, 100 + i as u64);
        gradcheck(|x| ops::max_pool2d(x, k, s, p).unwrap(), &x, i as u64);
        gradcheck(
            |x| ops::max_pool2d_composed(x, k, s, p).unwrap(),
            &x,
            i as u64,
        );
    }
}

#[test]
fn max_pool_gives_a_tie_to_the_first_maximum_like_pytorch() {
    // A 3x3 plane of equal values (as after a ReLU of negatives) and a tie of two 5s.
    let x = Tensor::from_vec(
        vec![1f64, 1., 1., 1., 1., 1., 1., 1., 1.],
        (1, 1, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let x = Var::from_tensor(&x).unwrap();
    let y = ops::max_pool2d(x.as_tensor(), 2, 1, 0).unwrap(); // four overlapping 2x2 windows
    let g = y.sum_all().unwrap().backward().unwrap();
    // Each window's first element (row-major) takes the whole gradient of 1.
    assert_eq!(
        values(g.get(x.as_tensor()).unwrap()),
        vec![1., 1., 0., 1., 1., 0., 0., 0., 0.]
    );

    let x = Tensor::from_vec(vec![0f64, 5., 5., 0.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let x = Var::from_tensor(&x).unwrap();
    let g = ops::max_pool2d(x.as_tensor(), 2, 2, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(g.get(x.as_tensor()).unwrap()), vec![0., 1., 0., 0.]);
    // kernel == stride: the gradient at the maximum is 1, not candle's 1/k^2.
    let x = Tensor::from_vec(vec![1f64, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let x = Var::from_tensor(&x).unwrap();
    let g = ops::max_pool2d(x.as_tensor(), 2, 2, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(g.get(x.as_tensor()).unwrap()), vec![0., 0., 0., 1.]);
}

/// Max-pooling's input gradient by the definition PyTorch's CPU kernel follows: each
/// output's gradient goes to the first maximum of its window in row-major order, a NaN
/// beating any number (the first NaN when there are several).
fn reference_max_pool_grad(
    x: &[f64],
    dims: (usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
    gy: &[f64],
) -> Vec<f64> {
    let (planes, h, w) = dims;
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut gx = vec![0.0; x.len()];
    for plane in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for ky in 0..k {
                    for kx in 0..k {
                        let (y, xx) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
                            continue;
                        }
                        let i = plane * h * w + y as usize * w + xx as usize;
                        best = match best {
                            None => Some(i),
                            Some(b) if x[b].is_nan() => Some(b),
                            Some(b) if x[i].is_nan() || x[i] > x[b] => Some(i),
                            keep => keep,
                        };
                    }
                }
                gx[best.unwrap()] += gy[(plane * oh + oy) * ow + ox];
            }
        }
    }
    gx
}

#[test]
fn max_pool_matches_the_definition_on_wide_planes_with_ties_and_nans() {
    // Wide enough for the vectorised interior sweep; values from {0, 1, 2} so most windows
    // tie, and some planes hold NaNs (the exact path).
    let cases: &[(&[usize], usize, usize, usize)] = &[
        (&[2, 3, 23, 17], 3, 2, 1),
        (&[1, 2, 30, 31], 3, 2, 0),
        (&[1, 2, 19, 40], 5, 3, 2),
        (&[3, 2, 12, 29], 3, 1, 1),
        (&[1, 2, 16, 16], 2, 2, 0),
    ];
    for (case, &(shape, k, s, p)) in cases.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let n: usize = shape.iter().product();
        let mut v: Vec<f64> = (0..n).map(|_| rng.random_range(0..3) as f64).collect();
        let plane = shape[2] * shape[3];
        for i in 0..3 {
            v[plane + 7 * i + 5] = f64::NAN; // second plane only
        }
        let x =
            Var::from_tensor(&Tensor::from_vec(v.clone(), shape, &Device::Cpu).unwrap()).unwrap();
        let y = ops::max_pool2d(x.as_tensor(), k, s, p).unwrap();
        let gy = random(y.dims(), 50 + case as u64);
        let g = (&y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        let expected = reference_max_pool(x.as_tensor(), k, s, p);
        let got = values(&y);
        // f64::max skips NaN: the reference values hold outside the plane with NaNs (plane 1).
        let out_plane = got.len() / (shape[0] * shape[1]);
        for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
            if i / out_plane != 1 {
                assert_eq!(a, e, "case {case} output {i}");
            }
        }
        assert!(
            got.iter().any(|v| v.is_nan()),
            "case {case}: a NaN must reach the output"
        );
        let dims = (shape[0] * shape[1], shape[2], shape[3]);
        assert_eq!(
            values(g.get(x.as_tensor()).unwrap()),
            reference_max_pool_grad(&v, dims, k, s, p, &values(&gy)),
            "case {case} {shape:?} k{k} s{s} p{p}: gradient"
        );
        let f32_x = x.as_tensor().to_dtype(DType::F32).unwrap();
        let f32_y = values(&ops::max_pool2d(&f32_x, k, s, p).unwrap());
        let nan_as_marker = |v: &[f64]| {
            v.iter()
                .map(|v| if v.is_nan() { -1.0 } else { *v })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            nan_as_marker(&f32_y),
            nan_as_marker(&got),
            "case {case}: f32 agrees with f64"
        );
    }
}

#[test]
fn max_pool_refuses_windows_it_cannot_place() {
    let x = random(&[1, 1, 2, 2], 0);
    assert!(ops::max_pool2d(&x, 3, 2, 0)
        .unwrap_err()
        .to_string()
        .contains("smaller than"));
    assert!(ops::max_pool2d(&x, 2, 2, 2)
        .unwrap_err()
        .to_string()
        .contains("at most half"));
}

#[test]
fn adaptive_bounds_follow_pytorch() {
    // PyTorch: start = floor(i*in/out), end = ceil((i+1)*in/out).
    assert_eq!(ops::adaptive_bounds(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
    assert_eq!(
        ops::adaptive_bounds(13, 6),
        vec![(0, 3), (2, 5), (4, 7), (6, 9), (8, 11), (10, 13)]
    );
    assert_eq!(ops::adaptive_bounds(1, 6), vec![(0, 1); 6]);
    assert_eq!(
        ops::adaptive_bounds(6, 6),
        (0..6).map(|i| (i, i + 1)).collect::<Vec<_>>()
    );
}

#[test]
fn adaptive_avg_pool_matches_hand_worked_values() {
    // 1x1x3x4 -> 2x2: rows [0,2) and [1,3), columns [0,2) and [2,4).
    let x = Tensor::from_vec(
        (1..=12).map(f64::from).collect::<Vec<_>>(),
        (1, 1, 3, 4),
        &Device::Cpu,
    )
    .unwrap();
    let y = values(&ops::adaptive_avg_pool2d(&x, 2, 2).unwrap());
    let expected = [
        (1. + 2. + 5. + 6.) / 4.,
        (3. + 4. + 7. + 8.) / 4.,
        (5. + 6. + 9. + 10.) / 4.,
        (7. + 8. + 11. + 12.) / 4.,
    ];
    for (a, b) in y.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{y:?} vs {expected:?}");
    }
    let y = values(&ops::adaptive_avg_pool2d(&x, 1, 1).unwrap());
    assert!((y[0] - 6.5).abs() < 1e-12);
}

#[test]
fn adaptive_avg_pool_gradient_matches_finite_differences() {
    for (i, &(shape, oh, ow)) in [
        (&[2usize, 2, 7, 5][..], 3, 2),
        (&[1, 3, 4, 4], 1, 1),
        (&[1, 1, 2, 3], 6, 6),
        (&[2, 1, 13, 13], 6, 6),
    ]
    .iter()
    .enumerate()
    {
        gradcheck(
            |x| ops::adaptive_avg_pool2d(x, oh, ow).unwrap(),
            &random(shape, 200 + i as u64),
            i as u64,
        );
    }
}

#[test]
fn dropout_scales_kept_values_and_its_gradient_is_the_mask() {
    let x = random(&[4, 37], 3);
    let y = ops::dropout(&x, 0.5, 42).unwrap();
    let mask = ops::dropout_mask(4 * 37, 0.5, 42);
    for ((a, b), m) in values(&y).iter().zip(values(&x)).zip(&mask) {
        assert!(*m == 0.0 || *m == 2.0);
        assert_eq!(*a, b * *m as f64);
    }
    let kept = mask.iter().filter(|&&m| m > 0.0).count();
    assert!((40..=108).contains(&kept), "kept {kept} of 148 at p = 0.5");
    assert_eq!(
        values(&ops::dropout(&x, 0.5, 42).unwrap()),
        values(&y),
        "same seed, same mask"
    );
    assert_ne!(
        values(&ops::dropout(&x, 0.5, 43).unwrap()),
        values(&y),
        "another seed, another mask"
    );
    gradcheck(|x| ops::dropout(x, 0.3, 7).unwrap(), &x, 9);
}

#[test]
fn batch_norm_train_matches_hand_worked_values_and_finite_differences() {
    // One channel, values 1..4: mean 2.5, biased var 1.25, unbiased 5/3.
    let x = Tensor::from_vec(vec![1f64, 2., 3., 4.], (2, 1, 1, 2), &Device::Cpu).unwrap();
    let w = Tensor::new(&[2f64], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0.5f64], &Device::Cpu).unwrap();
    let (y, stats) = ops::batch_norm_train(&x, &w, &b, 0.0).unwrap();
    let sd = 1.25f64.sqrt();
    let expected: Vec<f64> = [1., 2., 3., 4.]
        .iter()
        .map(|v| (v - 2.5) / sd * 2.0 + 0.5)
        .collect();
    for (a, e) in values(&y).iter().zip(&expected) {
        assert!((a - e).abs() < 1e-12);
    }
    assert!((values(&stats.mean)[0] - 2.5).abs() < 1e-12);
    assert!((values(&stats.unbiased_var)[0] - 5.0 / 3.0).abs() < 1e-12);

    let w = random(&[3], 5);
    let b = random(&[3], 6);
    gradcheck(
        |x| ops::batch_norm_train(x, &w, &b, 1e-5).unwrap().0,
        &random(&[2, 3, 3, 2], 4),
        1,
    );
    let x = random(&[2, 3, 3, 2], 4);
    gradcheck(|w| ops::batch_norm_train(&x, w, &b, 1e-5).unwrap().0, &w, 2);
    let rm = random(&[3], 7);
    let rv = (random(&[3], 8).abs().unwrap() + 0.5).unwrap();
    gradcheck(
        |x| ops::batch_norm_eval(x, &w, &b, &rm, &rv, 1e-5).unwrap(),
        &x,
        3,
    );
}

#[test]
fn batch_norm_train_refuses_a_single_value_per_channel() {
    let x = random(&[1, 2, 1, 1], 0);
    let one = Tensor::ones(2, DType::F64, &Device::Cpu).unwrap();
    let err = ops::batch_norm_train(&x, &one, &one, 1e-5).err().unwrap();
    assert!(
        err.to_string().contains("more than 1 value per channel"),
        "{err}"
    );
}
