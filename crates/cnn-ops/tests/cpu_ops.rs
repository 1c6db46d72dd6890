//! The crate's CPU ops against simple references written here: convolution against a
//! direct f64 loop (forward, input and weight gradients) at random shapes, and against
//! central finite differences on tiny cases.

use candle_core::{DType, Device, Tensor, Var};
use cnn_ops::{self as ops, CpuChoice};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{Mutex, MutexGuard};

fn random_vec(len: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// One convolution problem: NCHW input, OIHW kernel, square stride and padding.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Case {
    fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad - self.kh) / self.stride + 1,
            (self.w + 2 * self.pad - self.kw) / self.stride + 1,
        )
    }

    /// Calls `f(x index, w index, y index)` for every multiply-add of the convolution.
    fn each_mac(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = self.out();
        for n in 0..self.n {
            for co in 0..self.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((n * self.cout + co) * oh + oy) * ow + ox;
                        for ci in 0..self.cin {
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                                    let ix = (ox * self.stride + kx) as isize - self.pad as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= self.h as isize
                                        || ix >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * self.cin + ci) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((co * self.cin + ci) * self.kh + ky) * self.kw + kx;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Direct f64 convolution and the gradients of `sum(y * r)`.
    fn reference(&self, x: &[f64], w: &[f64], r: &[f64]) -> [Vec<f64>; 3] {
        let (oh, ow) = self.out();
        let mut y = vec![0.0; self.n * self.cout * oh * ow];
        let mut gx = vec![0.0; x.len()];
        let mut gw = vec![0.0; w.len()];
        self.each_mac(|xi, wi, yi| {
            y[yi] += x[xi] * w[wi];
            gx[xi] += r[yi] * w[wi];
            gw[wi] += r[yi] * x[xi];
        });
        [y, gx, gw]
    }

    fn shapes(&self) -> [Vec<usize>; 3] {
        let (oh, ow) = self.out();
        [
            vec![self.n, self.cin, self.h, self.w],
            vec![self.cout, self.cin, self.kh, self.kw],
            vec![self.n, self.cout, oh, ow],
        ]
    }
}

/// ‖a − b‖ / ‖b‖.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Checks `ops::conv2d`'s output and both gradients against the reference in `dtype`, and
/// `ops::conv2d_ohwi`'s with the same kernel held tap by tap.
fn check(case: Case, seed: u64, dtype: DType) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [xs, ws, ys] = case.shapes();
    let x = random_vec(xs.iter().product(), &mut rng);
    let w = random_vec(ws.iter().product(), &mut rng);
    let r = random_vec(ys.iter().product(), &mut rng);
    let [y_ref, gx_ref, gw_ref] = case.reference(&x, &w, &r);

    for ohwi in [false, true] {
        let xv = Var::from_tensor(&tensor(&x, &xs, dtype)).unwrap();
        let oihw = tensor(&w, &ws, dtype);
        let (y, wv) = match ohwi {
            false => {
                let wv = Var::from_tensor(&oihw).unwrap();
                (ops::conv2d(&xv, &wv, None, case.stride, case.pad), wv)
            }
            true => {
                let held = oihw.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
                let wv = Var::from_tensor(&held).unwrap();
                (ops::conv2d_ohwi(&xv, &wv, None, case.stride, case.pad), wv)
            }
        };
        let y = y.unwrap();
        assert_eq!(y.dims(), &ys[..], "{case:?}");
        let grads = (&y * &tensor(&r, &ys, dtype))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gw = grads.get(&wv).unwrap();
        assert_eq!(
            gw.dims(),
            wv.dims(),
            "{case:?}: gradient in the kernel's layout"
        );
        let gw = match ohwi {
            false => gw.clone(),
            true => gw.permute((0, 3, 1, 2)).unwrap(),
        };
        let tol = if dtype == DType::F64 { 1e-12 } else { 2e-6 };
        let results = [
            ("forward", values(&y), &y_ref),
            ("input grad", values(grads.get(&xv).unwrap()), &gx_ref),
            ("weight grad", values(&gw), &gw_ref),
        ];
        for (what, got, want) in results {
            let err = relative_error(&got, want);
            assert!(
                err < tol,
                "{what} {case:?} {dtype:?} (OHWI kernel: {ohwi}): relative error {err:.2e}"
            );
        }
    }
}

const fn case(
    n: usize,
    cin: usize,
    (h, w): (usize, usize),
    cout: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
) -> Case {
    Case {
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride,
        pad,
    }
}

/// Hand-picked shapes: every kernel size, stride and padding the networks use and more.
const CASES: &[Case] = &[
    case(1, 1, (5, 5), 1, (3, 3), 1, 1),     // smallest padded 3x3
    case(2, 3, (23, 19), 4, (11, 11), 4, 2), // AlexNet's stem, odd and non-square
    case(3, 3, (17, 13), 5, (7, 7), 2, 3),   // ResNet's stem
    case(4, 6, (9, 9), 7, (3, 3), 1, 1),     // basic block, batch split across threads
    case(5, 6, (9, 7), 8, (3, 3), 2, 1),     // strided 3x3
    case(3, 6, (9, 9), 5, (1, 1), 2, 0),     // downsample 1x1 stride 2
    case(3, 5, (6, 7), 4, (1, 1), 1, 0),     // pointwise: no unfolding
    case(1, 4, (8, 6), 3, (5, 5), 1, 2),     // AlexNet's 5x5, batch 1
    case(7, 8, (3, 3), 9, (3, 3), 1, 1),     // tiny maps: several images per GEMM
    case(9, 4, (2, 2), 6, (1, 1), 1, 0),     // pointwise, chunked
    case(2, 3, (5, 8), 2, (3, 5), 1, 3),     // non-square kernel, padding 3
    case(2, 2, (12, 11), 3, (5, 3), 4, 1),   // stride 4, kernel larger than stride
    case(2, 2, (4, 4), 3, (3, 3), 2, 0),     // output 1x1
    case(1, 2, (1, 1), 3, (3, 3), 1, 1),     // 1x1 input, all but the centre padding
    case(4, 5, (1, 1), 6, (3, 3), 1, 1),     // the same, a batch (ResNet18@32's last stage)
    case(3, 2, (2, 2), 3, (5, 5), 1, 2),     // 5x5 on 2x2 maps: cut to its centre 3x3
    case(3, 3, (2, 2), 4, (3, 3), 1, 1),     // 2x2 maps (ResNet18@32's last stage)
    case(2, 2, (3, 4), 3, (5, 5), 1, 2),     // same-size 5x5 wider than the map
    case(1, 2, (64, 64), 3, (3, 3), 2, 1),   // 1024 output pixels: padded gradient rows
    case(2, 2, (32, 32), 3, (1, 1), 1, 0),   // the same, pointwise (no longer in place)
    case(1, 120, (32, 32), 2, (3, 3), 1, 1), // the same, gradients split by input channel
    case(1, 1, (401, 399), 2, (3, 3), 2, 1), // a wide column matrix: two bands of rows, 101 + 100
    // Winograd F(2x2, 3x3): stride 1, outputs of 8x8 and more, 16+ channels (64+ on maps
    // under 16x16); odd maps, padding 0-2, batch 1 and a batch split across threads.
    case(3, 128, (9, 11), 130, (3, 3), 1, 1),
    case(1, 130, (10, 12), 128, (3, 3), 1, 0),
    case(2, 128, (7, 9), 132, (3, 3), 1, 2),
    case(5, 128, (8, 8), 128, (3, 3), 1, 1),
    case(2, 16, (17, 16), 18, (3, 3), 1, 1), // 14x14 and up: the input gradient too
    case(2, 128, (14, 15), 128, (3, 3), 1, 1), // the smallest such map
    case(1, 16, (18, 19), 16, (3, 3), 1, 0),
    // More than 16 output columns with an odd edge: the AVX-512 transforms' second half.
    case(2, 128, (9, 19), 128, (3, 3), 1, 1),
    // Outputs 16 or 8 wide: 2 or 4 tile rows side by side in the AVX-512 lanes (padding
    // 0-2; 12 rows of 8 are 6 tile rows, no whole group of 4: one at a time).
    case(2, 16, (16, 16), 17, (3, 3), 1, 1),
    case(2, 17, (18, 20), 16, (3, 3), 1, 0),
    case(3, 16, (10, 14), 16, (3, 3), 1, 2),
    case(2, 128, (8, 8), 129, (3, 3), 1, 1),
    case(2, 128, (12, 8), 128, (3, 3), 1, 1),
    case(4, 64, (8, 8), 65, (3, 3), 1, 1), // the fewest channels on maps under 16x16
    // Tap by tap, where padding is a large share of the products and the batch has 8+
    // images: 2x2, 3x3, 4x4 and 7x7 maps, a 5x5 kernel on 7x7, a wide 2x5 map, non-square
    // kernels, output rows narrower than the input's, and a one-row map whose top and
    // bottom kernel rows read padding only.
    case(8, 3, (2, 2), 4, (3, 3), 1, 1),
    case(9, 8, (3, 3), 7, (3, 3), 1, 1),
    case(8, 7, (4, 4), 6, (3, 3), 1, 1),
    case(8, 5, (7, 7), 6, (3, 3), 1, 1),
    case(8, 6, (7, 7), 5, (5, 5), 1, 2),
    case(9, 4, (2, 5), 5, (3, 3), 1, 1),
    case(8, 3, (3, 4), 4, (3, 5), 1, 2),
    case(8, 3, (2, 4), 4, (3, 5), 1, 1),
    case(8, 4, (1, 3), 5, (3, 3), 1, 1),
    // Strided, one run per output pixel: 4x4 to 2x2 (ResNet's layer 4 at 64 px), an odd
    // map, a 5x5 kernel at stride 3, a non-square kernel at stride 2.
    case(8, 5, (4, 4), 6, (3, 3), 2, 1),
    case(9, 3, (5, 4), 4, (3, 3), 2, 1),
    case(8, 4, (7, 7), 5, (5, 5), 3, 2),
    case(8, 3, (3, 6), 4, (3, 5), 2, 2),
    // 4x4 maps of 32 images: planes of 2 KiB (f32) and 4 KiB (f64), which the weight
    // gradient lays a cache line apart.
    case(32, 3, (4, 4), 4, (3, 3), 1, 1),
    // Winograd F(4x4, 3x3): stride 1, outputs of 8x8 and more, 16+ channels, 8+ images for
    // each of the (two) threads. The smallest map; odd maps with part tiles and an odd
    // share (9 and 8 images); padding 0 and 2; shares of 20 (a group of 16 images and one
    // of 4); 4x4 tiles whose chunk ends mid-row.
    case(16, 16, (8, 8), 17, (3, 3), 1, 1),
    case(17, 18, (11, 13), 16, (3, 3), 1, 1),
    case(16, 16, (10, 12), 20, (3, 3), 1, 0),
    case(18, 17, (8, 9), 16, (3, 3), 1, 2),
    case(40, 16, (16, 16), 16, (3, 3), 1, 1),
    case(16, 20, (9, 23), 16, (3, 3), 1, 1),
];

/// Held by the tests that run the default choice or switch to another: the switch is
/// process-wide, so without it a test meant for the default set (Winograd, AVX-512) could
/// run while another has them off, and pass without exercising them.
static KERNEL_SET: Mutex<()> = Mutex::new(());

fn choice_lock() -> MutexGuard<'static, ()> {
    KERNEL_SET.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a pool of two threads, whatever this machine has: the kernels split the
/// batch by the pool's size, and the cases above are sized for two.
fn on_two_threads(f: impl FnOnce() + Send) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build();
    pool.expect("a pool of two threads").install(f)
}

#[test]
fn conv_matches_the_direct_loop_on_chosen_shapes() {
    let _default_choice = choice_lock();
    on_two_threads(|| {
        for (i, &c) in CASES.iter().enumerate() {
            check(c, i as u64, DType::F64);
            check(c, i as u64, DType::F32);
        }
    });
}

/// A random problem: kernel 1/3/5/7/11, stride 1/2/4, padding 0-3, sizes from the kernel up.
fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let pick = |rng: &mut ChaCha8Rng, of: &[usize]| of[rng.random_range(0..of.len())];
    let kh = pick(rng, &[1, 3, 5, 7, 11]);
    let kw = if rng.random_range(0..4) == 0 {
        pick(rng, &[1, 3, 5])
    } else {
        kh
    };
    let pad = rng.random_range(0..4);
    let size = |rng: &mut ChaCha8Rng, k: usize| {
        (k.saturating_sub(2 * pad)).max(1) + rng.random_range(0..9)
    };
    Case {
        n: pick(rng, &[1, 1, 2, 3, 5]),
        cin: rng.random_range(1..6),
        h: size(rng, kh),
        w: size(rng, kw),
        cout: rng.random_range(1..7),
        kh,
        kw,
        stride: pick(rng, &[1, 2, 4]),
        pad,
    }
}

#[test]
fn conv_matches_the_direct_loop_on_random_shapes() {
    let _default_choice = choice_lock();
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for i in 0..60 {
        let c = random_case(&mut rng);
        check(c, 1000 + i, DType::F64);
        check(c, 1000 + i, DType::F32);
    }
}

/// Runs the chosen cases in `dtype` with another CPU choice switched on (holding
/// [`KERNEL_SET`], so the tests of the default set run before or after).
fn check_cases_with(choice: CpuChoice, seed: u64, dtype: DType) {
    let _switched = choice_lock();
    ops::set_cpu_choice(choice);
    on_two_threads(|| {
        for (i, &c) in CASES.iter().enumerate() {
            check(c, seed + i as u64, dtype);
        }
    });
    ops::set_cpu_choice(CpuChoice::default());
}

#[test]
fn conv_with_the_gemm_split_across_threads_matches_too() {
    // The other threading plan: images in order, each GEMM split.
    let choice = CpuChoice {
        conv_split_batch: false,
        ..CpuChoice::default()
    };
    check_cases_with(choice, 50, DType::F64);
}

#[test]
fn conv_with_winograd_2x2_where_4x4_would_run_matches_too() {
    let choice = CpuChoice {
        winograd_4x4: false,
        ..CpuChoice::default()
    };
    check_cases_with(choice, 110, DType::F32);
}

#[test]
fn conv_without_the_tap_by_tap_path_matches_too() {
    // Small maps back through im2col + GEMM, as they ran before the tap-by-tap path.
    let choice = CpuChoice {
        taps: false,
        ..CpuChoice::default()
    };
    check_cases_with(choice, 90, DType::F64);
}

#[test]
fn conv_with_the_portable_loops_instead_of_simd_matches_too() {
    // The portable f32 Winograd transforms: the tests above run the AVX-512 ones where the
    // CPU has them.
    let choice = CpuChoice {
        simd: false,
        ..CpuChoice::default()
    };
    check_cases_with(choice, 70, DType::F32);
}

#[test]
fn conv_bias_is_added_per_output_channel() {
    let c = case(2, 3, (6, 5), 4, (3, 3), 2, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let [xs, ws, ys] = c.shapes();
    let x = random_vec(xs.iter().product(), &mut rng);
    let w = random_vec(ws.iter().product(), &mut rng);
    let b = random_vec(c.cout, &mut rng);
    let r = random_vec(ys.iter().product(), &mut rng);
    let [y_ref, gx_ref, _] = c.reference(&x, &w, &r);
    let xv = Var::from_tensor(&tensor(&x, &xs, DType::F64)).unwrap();
    let bv = Var::from_tensor(&tensor(&b, &[c.cout], DType::F64)).unwrap();
    let y = ops::conv2d(
        &xv,
        &tensor(&w, &ws, DType::F64),
        Some(&bv),
        c.stride,
        c.pad,
    )
    .unwrap();
    let plane = ys[2] * ys[3];
    let channel = |i: usize| (i / plane) % c.cout;
    let want: Vec<f64> = y_ref
        .iter()
        .enumerate()
        .map(|(i, v)| v + b[channel(i)])
        .collect();
    assert!(relative_error(&values(&y), &want) < 1e-12);
    // The bias gradient sums the output gradient over images and pixels of its channel; the
    // input gradient is the convolution's alone.
    let grads = (&y * &tensor(&r, &ys, DType::F64))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut gb_ref = vec![0.0; c.cout];
    for (i, v) in r.iter().enumerate() {
        gb_ref[channel(i)] += v;
    }
    assert!(relative_error(&values(grads.get(&bv).unwrap()), &gb_ref) < 1e-12);
    assert!(relative_error(&values(grads.get(&xv).unwrap()), &gx_ref) < 1e-12);
}

#[test]
fn conv_gradients_match_finite_differences() {
    let c = case(2, 2, (5, 4), 3, (3, 3), 2, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let [xs, ws, ys] = c.shapes();
    let x = random_vec(xs.iter().product(), &mut rng);
    let w = random_vec(ws.iter().product(), &mut rng);
    let r = tensor(&random_vec(ys.iter().product(), &mut rng), &ys, DType::F64);
    let objective = |x: &[f64], w: &[f64]| {
        let y = ops::conv2d(
            &tensor(x, &xs, DType::F64),
            &tensor(w, &ws, DType::F64),
            None,
            c.stride,
            c.pad,
        )
        .unwrap();
        (y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let xv = Var::from_tensor(&tensor(&x, &xs, DType::F64)).unwrap();
    let wv = Var::from_tensor(&tensor(&w, &ws, DType::F64)).unwrap();
    let y = ops::conv2d(&xv, &wv, None, c.stride, c.pad).unwrap();
    let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let h = 1e-6;
    for (which, analytic) in [
        (0, values(grads.get(&xv).unwrap())),
        (1, values(grads.get(&wv).unwrap())),
    ] {
        for (i, a) in analytic.iter().enumerate() {
            let (mut xp, mut wp) = (x.clone(), w.clone());
            let (mut xm, mut wm) = (x.clone(), w.clone());
            if which == 0 {
                xp[i] += h;
                xm[i] -= h;
            } else {
                wp[i] += h;
                wm[i] -= h;
            }
            let numeric = (objective(&xp, &wp) - objective(&xm, &wm)) / (2.0 * h);
            assert!(
                (numeric - a).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{} element {i}: backward {a} vs finite difference {numeric}",
                ["input", "weight"][which]
            );
        }
    }
}

#[test]
fn an_input_read_by_two_convolutions_gets_the_sum_of_both_gradients() {
    // candle-core is patched (vendor/candle-core/PATCHED.md) to keep a custom op's first
    // gradient for a tensor as it is and add the later ones into it: here the input feeds
    // two convolutions, whose gradients the reference gives one by one.
    let (c1, c2) = (
        case(2, 3, (6, 5), 4, (3, 3), 1, 1),
        case(2, 3, (6, 5), 2, (1, 1), 2, 0),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let [xs, ws1, ys1] = c1.shapes();
    let [_, ws2, ys2] = c2.shapes();
    let x = random_vec(xs.iter().product(), &mut rng);
    let (w1, w2) = (
        random_vec(ws1.iter().product(), &mut rng),
        random_vec(ws2.iter().product(), &mut rng),
    );
    let (r1, r2) = (
        random_vec(ys1.iter().product(), &mut rng),
        random_vec(ys2.iter().product(), &mut rng),
    );
    let [_, gx1, _] = c1.reference(&x, &w1, &r1);
    let [_, gx2, _] = c2.reference(&x, &w2, &r2);
    let expected: Vec<f64> = gx1.iter().zip(&gx2).map(|(a, b)| a + b).collect();
    let xv = Var::from_tensor(&tensor(&x, &xs, DType::F64)).unwrap();
    let weighted = |c: Case, w: &[f64], ws: &[usize], r: &[f64], ys: &[usize]| {
        let y = ops::conv2d(&xv, &tensor(w, ws, DType::F64), None, c.stride, c.pad).unwrap();
        (y * tensor(r, ys, DType::F64)).unwrap().sum_all().unwrap()
    };
    let loss = (weighted(c1, &w1, &ws1, &r1, &ys1) + weighted(c2, &w2, &ws2, &r2, &ys2)).unwrap();
    let grads = loss.backward().unwrap();
    let got = values(grads.get(&xv).unwrap());
    assert!(relative_error(&got, &expected) < 1e-12);
}

#[test]
fn a_kernel_used_by_two_convolutions_gets_the_sum_of_both_gradients() {
    // The weight's side of the same patch: `loss.backward()` alone gives a kernel shared by
    // two layers (in either layout) the sum of what each use contributes.
    let c = case(2, 3, (6, 5), 4, (3, 3), 1, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let [xs, ws, ys] = c.shapes();
    let (x1, x2) = (
        random_vec(xs.iter().product(), &mut rng),
        random_vec(xs.iter().product(), &mut rng),
    );
    let w = random_vec(ws.iter().product(), &mut rng);
    let (r1, r2) = (
        random_vec(ys.iter().product(), &mut rng),
        random_vec(ys.iter().product(), &mut rng),
    );
    let [_, _, gw1] = c.reference(&x1, &w, &r1);
    let [_, _, gw2] = c.reference(&x2, &w, &r2);
    let expected: Vec<f64> = gw1.iter().zip(&gw2).map(|(a, b)| a + b).collect();
    let wv = Var::from_tensor(&tensor(&w, &ws, DType::F64)).unwrap();
    let weighted = |x: &[f64], r: &[f64]| {
        let y = ops::conv2d(&tensor(x, &xs, DType::F64), &wv, None, c.stride, c.pad).unwrap();
        (y * tensor(r, &ys, DType::F64)).unwrap().sum_all().unwrap()
    };
    let loss = (weighted(&x1, &r1) + weighted(&x2, &r2)).unwrap();
    let grads = loss.backward().unwrap();
    let got = values(grads.get(&wv).unwrap());
    assert!(relative_error(&got, &expected) < 1e-12);
    // The same kernel tap by tap (OHWI): its gradient comes back in that layout.
    let ohwi = Var::from_tensor(&wv.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()).unwrap();
    let weighted = |x: &[f64], r: &[f64]| {
        let y = ops::conv2d_ohwi(&tensor(x, &xs, DType::F64), &ohwi, None, 1, 1).unwrap();
        (y * tensor(r, &ys, DType::F64)).unwrap().sum_all().unwrap()
    };
    let loss = (weighted(&x1, &r1) + weighted(&x2, &r2)).unwrap();
    let grads = loss.backward().unwrap();
    let got = grads.get(&ohwi).unwrap().permute((0, 3, 1, 2)).unwrap();
    assert!(relative_error(&values(&got), &expected) < 1e-12);
}

#[test]
fn conv_skips_the_input_gradient_when_nothing_upstream_learns() {
    // The first layer: plain images in, a learned kernel. The weight gradient must still
    // be right without the input's.
    let c = case(3, 3, (9, 9), 4, (3, 3), 2, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let [xs, ws, ys] = c.shapes();
    let x = random_vec(xs.iter().product(), &mut rng);
    let w = random_vec(ws.iter().product(), &mut rng);
    let r = random_vec(ys.iter().product(), &mut rng);
    let [_, _, gw_ref] = c.reference(&x, &w, &r);
    let xt = tensor(&x, &xs, DType::F32);
    let wv = Var::from_tensor(&tensor(&w, &ws, DType::F32)).unwrap();
    let y = ops::conv2d(&xt, &wv, None, c.stride, c.pad).unwrap();
    let grads = (y * tensor(&r, &ys, DType::F32))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&xt).is_none());
    assert!(relative_error(&values(grads.get(&wv).unwrap()), &gw_ref) < 2e-6);
}

#[test]
fn conv_refuses_mismatched_shapes() {
    let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(ops::conv2d(&x, &w, None, 1, 1).is_err());
    let w = Tensor::zeros((2, 3, 7, 7), DType::F32, &Device::Cpu).unwrap();
    assert!(ops::conv2d(&x, &w, None, 1, 1).is_err());
}

/// Train-mode batch norm by the definition in f64: output, mean, biased variance, and the
/// gradients of `sum(y * r)` by the textbook formula.
struct BnReference {
    y: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    gx: Vec<f64>,
    gw: Vec<f64>,
    gb: Vec<f64>,
}

fn bn_reference(dims: [usize; 4], x: &[f64], w: &[f64], b: &[f64], r: &[f64]) -> BnReference {
    let [n, c, h, wd] = dims;
    let hw = h * wd;
    let m = (n * hw) as f64;
    let at = |i: usize, ch: usize, p: usize| (i * c + ch) * hw + p;
    let mut out = BnReference {
        y: vec![0.0; x.len()],
        mean: vec![0.0; c],
        var: vec![0.0; c],
        gx: vec![0.0; x.len()],
        gw: vec![0.0; c],
        gb: vec![0.0; c],
    };
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|i| (0..hw).map(move |p| at(i, ch, p)))
            .collect();
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let xhat = |i: usize| (x[i] - mean) * inv;
        let gb: f64 = idx.iter().map(|&i| r[i]).sum();
        let gw: f64 = idx.iter().map(|&i| r[i] * xhat(i)).sum();
        for &i in &idx {
            out.y[i] = xhat(i) * w[ch] + b[ch];
            out.gx[i] = w[ch] * inv / m * (m * r[i] - gb - xhat(i) * gw);
        }
        (out.mean[ch], out.var[ch], out.gw[ch], out.gb[ch]) = (mean, var, gw, gb);
    }
    out
}

#[test]
fn batch_norm_train_matches_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let shapes = [
        [2, 3, 5, 7],
        [1, 4, 3, 3],
        [6, 2, 1, 1],
        [3, 5, 8, 1],
        [32, 3, 2, 2],
        // Planes longer than the kernel's 16 lanes and 256-value blocks, with remainders.
        [2, 3, 17, 19],
        [3, 2, 16, 32],
        // Many planes shorter than the lanes, whose sums carry across planes and blocks.
        [300, 2, 1, 1],
        [90, 3, 3, 1],
    ];
    for (k, dims) in shapes.into_iter().enumerate() {
        let len: usize = dims.iter().product();
        let c = dims[1];
        // An offset mean, as real activations have, tests the variance's cancellation.
        let x: Vec<f64> = random_vec(len, &mut rng).iter().map(|v| 3.0 + v).collect();
        let (w, b, r) = (
            random_vec(c, &mut rng),
            random_vec(c, &mut rng),
            random_vec(len, &mut rng),
        );
        let want = bn_reference(dims, &x, &w, &b, &r);
        for dtype in [DType::F64, DType::F32] {
            let xv = Var::from_tensor(&tensor(&x, &dims, dtype)).unwrap();
            let wv = Var::from_tensor(&tensor(&w, &[c], dtype)).unwrap();
            let bv = Var::from_tensor(&tensor(&b, &[c], dtype)).unwrap();
            let (y, stats) = ops::batch_norm_train(&xv, &wv, &bv, 1e-5).unwrap();
            let grads = (&y * tensor(&r, &dims, dtype))
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let m = (len / c) as f64;
            let unbiased: Vec<f64> = want.var.iter().map(|v| v * m / (m - 1.0)).collect();
            let tol = if dtype == DType::F64 { 1e-10 } else { 2e-5 };
            let results = [
                ("output", values(&y), &want.y),
                ("mean", values(&stats.mean), &want.mean),
                ("unbiased var", values(&stats.unbiased_var), &unbiased),
                ("input grad", values(grads.get(&xv).unwrap()), &want.gx),
                ("weight grad", values(grads.get(&wv).unwrap()), &want.gw),
                ("bias grad", values(grads.get(&bv).unwrap()), &want.gb),
            ];
            for (what, got, want) in results {
                let err = relative_error(&got, want);
                assert!(err < tol, "case {k} {dims:?} {dtype:?} {what}: {err:.2e}");
            }
        }
    }
}

/// A one-pass variance loses relative precision by `1 + ((shift - mean) / std)²`: with each
/// channel's first value far out (a spike of 50 among values in (-1, 1)), shifting by that
/// value left the float32 output 1.7e-5 from float64's; the shift by the first images' mean
/// keeps float32 within its usual error (1.0e-7).
#[test]
fn batch_norm_train_stays_exact_when_a_channel_starts_with_an_outlier() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    // Short planes (swept image by image) and long ones (channel by channel).
    for dims in [[64, 8, 2, 2], [8, 4, 9, 9]] {
        let [n, c, h, w] = dims;
        let len = n * c * h * w;
        let mut x = random_vec(len, &mut rng);
        for ch in 0..c {
            x[ch * h * w] = 50.0;
        }
        let ones = vec![1.0; c];
        let zeros = vec![0.0; c];
        let want = bn_reference(dims, &x, &ones, &zeros, &vec![0.0; len]);
        let (y, stats) = ops::batch_norm_train(
            &tensor(&x, &dims, DType::F32),
            &tensor(&ones, &[c], DType::F32),
            &tensor(&zeros, &[c], DType::F32),
            1e-5,
        )
        .unwrap();
        let m = (n * h * w) as f64;
        let unbiased: Vec<f64> = want.var.iter().map(|v| v * m / (m - 1.0)).collect();
        for (what, got, want) in [
            ("output", values(&y), &want.y),
            ("unbiased var", values(&stats.unbiased_var), &unbiased),
        ] {
            let err = relative_error(&got, want);
            assert!(err < 1e-6, "{dims:?} {what}: {err:.2e}");
        }
    }
}

#[test]
fn batch_norm_fused_with_relu_matches_the_chain_rule() {
    // d/dx Σ relu(bn(x))·r = the plain batch norm's gradient for r masked by bn(x) > 0.
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    for (k, dims) in [[2, 3, 5, 7], [4, 2, 3, 3], [32, 3, 2, 2], [2, 3, 17, 19]]
        .into_iter()
        .enumerate()
    {
        let len: usize = dims.iter().product();
        let c = dims[1];
        let x = random_vec(len, &mut rng);
        let (w, b, r) = (
            random_vec(c, &mut rng),
            random_vec(c, &mut rng),
            random_vec(len, &mut rng),
        );
        let plain = bn_reference(dims, &x, &w, &b, &r);
        let masked: Vec<f64> = r
            .iter()
            .zip(&plain.y)
            .map(|(r, y)| if *y > 0.0 { *r } else { 0.0 })
            .collect();
        let want = bn_reference(dims, &x, &w, &b, &masked);
        let y_want: Vec<f64> = want.y.iter().map(|y| y.max(0.0)).collect();
        let xv = Var::from_tensor(&tensor(&x, &dims, DType::F64)).unwrap();
        let wv = Var::from_tensor(&tensor(&w, &[c], DType::F64)).unwrap();
        let bv = Var::from_tensor(&tensor(&b, &[c], DType::F64)).unwrap();
        let (y, _) = ops::batch_norm_relu_train(&xv, &wv, &bv, 1e-5).unwrap();
        let grads = (&y * tensor(&r, &dims, DType::F64))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let results = [
            ("output", values(&y), &y_want),
            ("input grad", values(grads.get(&xv).unwrap()), &want.gx),
            ("weight grad", values(grads.get(&wv).unwrap()), &want.gw),
            ("bias grad", values(grads.get(&bv).unwrap()), &want.gb),
        ];
        for (what, got, want) in results {
            let err = relative_error(&got, want);
            assert!(err < 1e-10, "train case {k} {dims:?} {what}: {err:.2e}");
        }

        // Eval mode: the fused op against the plain one followed by a ReLU.
        let (rm, rv) = (
            random_vec(c, &mut rng),
            random_vec(c, &mut rng)
                .iter()
                .map(|v| 0.5 + v.abs())
                .collect::<Vec<_>>(),
        );
        let (rm, rv) = (tensor(&rm, &[c], DType::F64), tensor(&rv, &[c], DType::F64));
        let run = |fused: bool| {
            let y = match fused {
                true => ops::batch_norm_relu_eval(&xv, &wv, &bv, &rm, &rv, 1e-5).unwrap(),
                false => ops::relu(&ops::batch_norm_eval(&xv, &wv, &bv, &rm, &rv, 1e-5).unwrap())
                    .unwrap(),
            };
            let g = (&y * tensor(&r, &dims, DType::F64))
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            [
                values(&y),
                values(g.get(&xv).unwrap()),
                values(g.get(&wv).unwrap()),
                values(g.get(&bv).unwrap()),
            ]
        };
        for (what, (got, want)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(run(true).iter().zip(&run(false)))
        {
            let err = relative_error(got, want);
            assert!(err < 1e-12, "eval case {k} {dims:?} {what}: {err:.2e}");
        }
    }
}

#[test]
fn batch_norm_fused_with_a_residual_and_relu_matches_the_ops_it_replaces() {
    // relu(bn(x) + residual) as one op against batch norm, candle's add and a ReLU, in
    // train and eval mode: outputs, running statistics and all four gradients.
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    for (k, dims) in [[2, 3, 5, 7], [2, 3, 17, 19]].into_iter().enumerate() {
        let len: usize = dims.iter().product();
        let c = dims[1];
        let var = |v: Vec<f64>, shape: &[usize]| {
            Var::from_tensor(&tensor(&v, shape, DType::F64)).unwrap()
        };
        let xv = var(random_vec(len, &mut rng), &dims);
        let rv = var(random_vec(len, &mut rng), &dims);
        let wv = var(random_vec(c, &mut rng), &[c]);
        let bv = var(random_vec(c, &mut rng), &[c]);
        let upstream = tensor(&random_vec(len, &mut rng), &dims, DType::F64);
        let running_mean = tensor(&random_vec(c, &mut rng), &[c], DType::F64);
        let running_var: Vec<f64> = random_vec(c, &mut rng)
            .iter()
            .map(|v| 0.5 + v.abs())
            .collect();
        let running_var = tensor(&running_var, &[c], DType::F64);
        let (x, r, w, b) = (
            xv.as_tensor(),
            rv.as_tensor(),
            wv.as_tensor(),
            bv.as_tensor(),
        );
        let (rm, rvar) = (&running_mean, &running_var);
        let run = |train: bool, fused: bool| {
            let (y, stats) = match (train, fused) {
                (true, true) => {
                    let (y, s) = ops::batch_norm_add_relu_train(x, w, b, r, 1e-5).unwrap();
                    (y, Some(s))
                }
                (true, false) => {
                    let (y, s) = ops::batch_norm_train(x, w, b, 1e-5).unwrap();
                    (ops::relu(&(y + r).unwrap()).unwrap(), Some(s))
                }
                (false, true) => {
                    let y = ops::batch_norm_add_relu_eval(x, w, b, rm, rvar, r, 1e-5).unwrap();
                    (y, None)
                }
                (false, false) => {
                    let y = ops::batch_norm_eval(x, w, b, rm, rvar, 1e-5).unwrap();
                    (ops::relu(&(y + r).unwrap()).unwrap(), None)
                }
            };
            let g = (&y * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut out = vec![values(&y)];
            out.extend([x, w, b, r].map(|v| values(g.get(v).unwrap())));
            if let Some(s) = stats {
                out.extend([values(&s.mean), values(&s.unbiased_var)]);
            }
            out
        };
        // A residual of another shape is refused, naming both shapes.
        let wrong = tensor(
            &random_vec(len, &mut rng),
            &[dims[0], c, dims[3], dims[2]],
            DType::F64,
        );
        let err = ops::batch_norm_add_relu_train(x, w, b, &wrong, 1e-5)
            .err()
            .unwrap();
        assert!(err.to_string().contains("residual of shape"), "{err}");
        let err = ops::batch_norm_add_relu_eval(x, w, b, rm, rvar, &wrong, 1e-5)
            .err()
            .unwrap();
        assert!(err.to_string().contains("residual of shape"), "{err}");
        let names = [
            "output",
            "input grad",
            "weight grad",
            "bias grad",
            "residual grad",
            "mean",
            "var",
        ];
        for train in [true, false] {
            let (got, want) = (run(train, true), run(train, false));
            assert_eq!(got.len(), want.len());
            for ((got, want), what) in got.iter().zip(&want).zip(names) {
                let err = relative_error(got, want);
                assert!(
                    err < 1e-12,
                    "case {k} {dims:?} train={train} {what}: {err:.2e}"
                );
            }
        }
    }
}

#[test]
fn batch_norm_eval_matches_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let dims = [3, 4, 5, 3];
    let len: usize = dims.iter().product();
    let x = random_vec(len, &mut rng);
    let (w, b, rm) = (
        random_vec(4, &mut rng),
        random_vec(4, &mut rng),
        random_vec(4, &mut rng),
    );
    let rv: Vec<f64> = random_vec(4, &mut rng)
        .iter()
        .map(|v| v.abs() + 0.5)
        .collect();
    let r = random_vec(len, &mut rng);
    let plane = dims[2] * dims[3];
    let ch = |i: usize| (i / plane) % dims[1];
    let scale = |c: usize| w[c] / (rv[c] + 1e-5).sqrt();
    let y_ref: Vec<f64> = (0..len)
        .map(|i| (x[i] - rm[ch(i)]) * scale(ch(i)) + b[ch(i)])
        .collect();
    let gx_ref: Vec<f64> = (0..len).map(|i| r[i] * scale(ch(i))).collect();
    let mut gw_ref = vec![0.0; 4];
    let mut gb_ref = vec![0.0; 4];
    for i in 0..len {
        let c = ch(i);
        gw_ref[c] += r[i] * (x[i] - rm[c]) / (rv[c] + 1e-5).sqrt();
        gb_ref[c] += r[i];
    }
    let t = |v: &[f64], s: &[usize]| tensor(v, s, DType::F64);
    let xv = Var::from_tensor(&t(&x, &dims)).unwrap();
    let wv = Var::from_tensor(&t(&w, &[4])).unwrap();
    let bv = Var::from_tensor(&t(&b, &[4])).unwrap();
    let y = ops::batch_norm_eval(&xv, &wv, &bv, &t(&rm, &[4]), &t(&rv, &[4]), 1e-5).unwrap();
    let grads = (&y * t(&r, &dims))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let results = [
        ("output", values(&y), y_ref),
        ("input grad", values(grads.get(&xv).unwrap()), gx_ref),
        ("weight grad", values(grads.get(&wv).unwrap()), gw_ref),
        ("bias grad", values(grads.get(&bv).unwrap()), gb_ref),
    ];
    for (what, got, want) in results {
        let err = relative_error(&got, &want);
        assert!(err < 1e-12, "{what}: {err:.2e}");
    }
}

#[test]
fn relu_and_its_gradient_follow_pytorch() {
    let x = [-2.0, -0.0, 0.0, 1.5, f64::NAN, 3.0, -1e-30];
    let xv = Var::from_tensor(&tensor(&x, &[7], DType::F64)).unwrap();
    let y = ops::relu(&xv).unwrap();
    let got = values(&y);
    assert_eq!(got[..4], [0.0, 0.0, 0.0, 1.5]);
    assert!(got[4].is_nan(), "NaN propagates");
    assert_eq!(got[5..], [3.0, 0.0]);
    let g = (&y * tensor(&[1., 2., 3., 4., 5., 6., 7.], &[7], DType::F64))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    // Gradient only where the output is positive: none at 0, as PyTorch's threshold_backward.
    assert_eq!(
        values(g.get(&xv).unwrap()),
        vec![0., 0., 0., 4., 0., 6., 0.]
    );
    let big = random_vec(300_000, &mut ChaCha8Rng::seed_from_u64(3));
    let y = ops::relu(&tensor(&big, &[300, 1000], DType::F32)).unwrap();
    let want: Vec<f64> = big.iter().map(|&v| (v as f32).max(0.0) as f64).collect();
    assert_eq!(values(&y), want);
}

#[test]
fn linear_and_its_gradients_match_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    // 512 and 256 inputs: rows a multiple of 2 KiB (f32 and f64, and f64 only), whose input
    // gradient copies the weight into a padded buffer 128 rows at a time (300 and 130
    // outputs: whole and part batches of rows).
    let shapes = [(1, 1, 1), (3, 7, 5), (32, 37, 10), (2, 300, 129)];
    for (n, i, o) in shapes.into_iter().chain([(3, 512, 300), (2, 256, 130)]) {
        let (x, w, b, r) = (
            random_vec(n * i, &mut rng),
            random_vec(o * i, &mut rng),
            random_vec(o, &mut rng),
            random_vec(n * o, &mut rng),
        );
        let (mut y_ref, mut gx_ref, mut gw_ref) =
            (vec![0.0; n * o], vec![0.0; n * i], vec![0.0; o * i]);
        for s in 0..n {
            for q in 0..o {
                y_ref[s * o + q] = b[q];
                for p in 0..i {
                    y_ref[s * o + q] += x[s * i + p] * w[q * i + p];
                    gx_ref[s * i + p] += r[s * o + q] * w[q * i + p];
                    gw_ref[q * i + p] += r[s * o + q] * x[s * i + p];
                }
            }
        }
        let gb_ref: Vec<f64> = (0..o).map(|q| (0..n).map(|s| r[s * o + q]).sum()).collect();
        for dtype in [DType::F64, DType::F32] {
            let xv = Var::from_tensor(&tensor(&x, &[n, i], dtype)).unwrap();
            let wv = Var::from_tensor(&tensor(&w, &[o, i], dtype)).unwrap();
            let bv = Var::from_tensor(&tensor(&b, &[o], dtype)).unwrap();
            let y = ops::linear(&xv, &wv, Some(&bv)).unwrap();
            let grads = (&y * tensor(&r, &[n, o], dtype))
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-6 };
            let results = [
                ("output", values(&y), &y_ref),
                ("input grad", values(grads.get(&xv).unwrap()), &gx_ref),
                ("weight grad", values(grads.get(&wv).unwrap()), &gw_ref),
                ("bias grad", values(grads.get(&bv).unwrap()), &gb_ref),
            ];
            for (what, got, want) in results {
                let err = relative_error(&got, want);
                assert!(err < tol, "{n}x{i}->{o} {dtype:?} {what}: {err:.2e}");
            }
        }
    }
}

#[test]
fn linear_of_an_empty_batch_gives_empty_and_zero_gradients() {
    // 512 inputs: rows 2 KiB apart, the input gradient's padded-copy path.
    let w = random_vec(300 * 512, &mut ChaCha8Rng::seed_from_u64(52));
    let xv = Var::from_tensor(&tensor(&[], &[0, 512], DType::F32)).unwrap();
    let wv = Var::from_tensor(&tensor(&w, &[300, 512], DType::F32)).unwrap();
    let y = ops::linear(&xv, &wv, None).unwrap();
    assert_eq!(y.dims(), [0, 300]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&xv).unwrap().dims(), [0, 512]);
    assert!(values(grads.get(&wv).unwrap()).iter().all(|&v| v == 0.0));
}
