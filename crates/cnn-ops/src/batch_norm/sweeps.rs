//! Per-channel passes of batch normalisation over contiguous NCHW data, each one sweep of
//! memory, parallel over channels (reductions) or planes (element-wise maps).
//!
//! Sums accumulate in f32 blocks joined in f64, and the one-pass variance is shifted by an
//! estimate of each channel's mean ([`channel_stats`]), so that it loses nothing measurable
//! against PyTorch's two-pass one.

use crate::cpu::Element;
use rayon::prelude::*;

/// Layout of one NCHW tensor: `planes` = n * c planes of `hw` values, channel = plane % c.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl Planes {
    fn count(&self) -> f64 {
        (self.n * self.hw) as f64
    }
}

/// `f(channel)` for every channel, in parallel.
fn per_channel<R: Send>(p: Planes, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    (0..p.c).into_par_iter().map(f).collect()
}

/// Values summed in `T` before their total joins a channel's f64 sum: short enough that f32
/// loses nothing measurable, long enough that the loop runs in SIMD lanes. A single f64
/// chain per channel was latency-bound (7 % of a ResNet18@64 training step).
const BLOCK: usize = 256;
/// Independent accumulators within a block, so the additions do not wait on each other.
const LANES: usize = 16;

/// `(Σ first, Σ second)` of `f(a[i], b[i], c[i])` over a channel's planes, each three
/// equally long slices. The lane sums carry from plane to plane and join the f64 totals
/// once per [`BLOCK`] values: flushed per plane, the 1-16-value planes of ResNet's last
/// stages at 32-64 px spent more time reducing 16 lanes than adding.
#[inline(always)]
fn paired_sums<'a, T: Element>(
    planes: impl Iterator<Item = [&'a [T]; 3]>,
    f: impl Fn(T, T, T) -> (T, T),
) -> (f64, f64) {
    let (mut s, mut t) = (0f64, 0f64);
    let (mut ls, mut lt) = ([T::ZERO; LANES], [T::ZERO; LANES]);
    let mut pending = 0;
    let mut flush = |ls: &mut [T; LANES], lt: &mut [T; LANES]| {
        s += ls.iter().map(|v| v.to_f64()).sum::<f64>();
        t += lt.iter().map(|v| v.to_f64()).sum::<f64>();
        *ls = [T::ZERO; LANES];
        *lt = [T::ZERO; LANES];
    };
    for [a, b, c] in planes {
        for ((a, b), c) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).zip(c.chunks(BLOCK)) {
            let (a, b, c) = (
                a.chunks_exact(LANES),
                b.chunks_exact(LANES),
                c.chunks_exact(LANES),
            );
            let rest = (a.remainder(), b.remainder(), c.remainder());
            for ((a, b), c) in a.zip(b).zip(c) {
                for i in 0..LANES {
                    let (u, v) = f(a[i], b[i], c[i]);
                    ls[i] += u;
                    lt[i] += v;
                }
                pending += LANES;
            }
            for i in 0..rest.0.len() {
                let (u, v) = f(rest.0[i], rest.1[i], rest.2[i]);
                ls[i] += u;
                lt[i] += v;
            }
            pending += rest.0.len();
            if pending >= BLOCK {
                flush(&mut ls, &mut lt);
                pending = 0;
            }
        }
    }
    flush(&mut ls, &mut lt);
    (s, t)
}

/// Channel `c`'s plane of each image in `x`.
fn channel_planes<T: Element>(p: Planes, x: &[T], c: usize) -> impl Iterator<Item = &[T]> {
    (0..p.n).map(move |n| &x[(n * p.c + c) * p.hw..][..p.hw])
}

/// Images whose mean is each channel's shift in [`channel_stats`].
const SHIFT_IMAGES: usize = 4;

/// Mean and biased variance of each channel, in one pass over the values shifted by an
/// estimate `k` of the channel's mean. `var = E[(x - k)²] - (E[x] - k)²` loses relative
/// precision by the factor `1 + ((k - mean) / std)²`, so `k` is the channel's mean over its
/// first [`SHIFT_IMAGES`] images (a short extra read): closer to the batch's mean than one
/// value, and than one image's mean where images differ more than values within one do.
/// (Shifted by each channel's first value instead, a spike of 50 opening each channel of
/// values in (-1, 1) left the float32 output 1.7e-5 from float64's; now 1.0e-7, as without
/// the spike.)
pub(crate) fn channel_stats<T: Element>(p: Planes, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let shifts: Vec<T> = per_channel(p, |c| {
        let (sum, count) = channel_planes(p, x, c).take(SHIFT_IMAGES).fold(
            (0f64, 0usize),
            |(sum, count), plane| {
                let plane_sum: f64 = plane.iter().map(|v| v.to_f64()).sum();
                (sum + plane_sum, count + plane.len())
            },
        );
        T::from_f64(sum / count.max(1) as f64)
    });
    let shift = |c: usize| shifts[c];
    let (s, s2) = match p.hw < SHORT_PLANE {
        true => short_plane_sums(p, [x, x, x], &spread(p, shift), |sh, v, _, _| {
            let d = v - sh;
            (d, d * d)
        }),
        false => per_channel(p, |c| {
            let sh = shift(c);
            let planes = channel_planes(p, x, c).map(|plane| [plane; 3]);
            paired_sums(planes, |v, _, _| {
                let d = v - sh;
                (d, d * d)
            })
        })
        .into_iter()
        .unzip(),
    };
    s.iter()
        .zip(&s2)
        .enumerate()
        .map(|(c, (&s, &s2))| {
            let m = s / p.count();
            (shift(c).to_f64() + m, (s2 / p.count() - m * m).max(0.0))
        })
        .unzip()
}

/// Planes shorter than this (ResNet's last stages at 32-64 px: 1-16 values) are swept image
/// by image across all channels, with each channel's coefficients spread over its values
/// ([`spread`]), rather than plane by plane: per plane, setting up the loops cost more than
/// the values did (batch norm + ReLU on 32x512x2x2: 0.20 -> 0.11 ms forward, 0.24 -> 0.18
/// ms backward).
const SHORT_PLANE: usize = 64;

/// `[f(c); hw]` for each channel `c` in turn: one image's worth of per-value coefficients.
fn spread<T: Element>(p: Planes, f: impl Fn(usize) -> T) -> Vec<T> {
    // A fill per channel: collected from a `flat_map`, one value at a time, it was a
    // quarter of the fused forward on 32x256x4x4 (0.163 -> 0.118 ms without it).
    let mut out = Vec::with_capacity(p.c * p.hw);
    for c in 0..p.c {
        out.resize(out.len() + p.hw, f(c));
    }
    out
}

/// Per-channel `(Σ first, Σ second)` of `f(coef[i], a[i], b[i], c[i])` over short planes:
/// each value's sums gather across the images, one accumulator per position in an image
/// (independent additions, which vectorise), in `T` for up to [`BLOCK`] images at a time
/// and then in f64, and join per channel. Parallel over ranges of positions. (Gathered in
/// f64 throughout, converting every value, these sums were most of batch norm's time on
/// 4x4 planes.)
fn short_plane_sums<T: Element>(
    p: Planes,
    [a, b, c]: [&[T]; 3],
    coef: &[T],
    f: impl Fn(T, T, T, T) -> (T, T) + Sync + Send,
) -> (Vec<f64>, Vec<f64>) {
    let image = p.c * p.hw;
    // Whole channels per range, so that each channel's values sit in one range.
    let per = (p.c.div_ceil(rayon::current_num_threads().max(1) * 2)).max(1) * p.hw;
    let ranges: Vec<usize> = (0..image).step_by(per).collect();
    let sums: Vec<(Vec<f64>, Vec<f64>)> = ranges
        .par_iter()
        .map(|&i0| {
            let len = per.min(image - i0);
            let (mut s, mut t) = (vec![0f64; len], vec![0f64; len]);
            let (mut ls, mut lt) = (vec![T::ZERO; len], vec![T::ZERO; len]);
            let flush = |totals: &mut [f64], parts: &mut [T]| {
                for (total, part) in totals.iter_mut().zip(parts) {
                    *total += part.to_f64();
                    *part = T::ZERO;
                }
            };
            for n in 0..p.n {
                let at = n * image + i0;
                let (a, b, c) = (&a[at..][..len], &b[at..][..len], &c[at..][..len]);
                let sums = ls.iter_mut().zip(lt.iter_mut());
                let values = coef[i0..][..len].iter().zip(a).zip(b).zip(c);
                for ((s, t), (((&k, &a), &b), &c)) in sums.zip(values) {
                    let (u, v) = f(k, a, b, c);
                    *s += u;
                    *t += v;
                }
                if (n + 1) % BLOCK == 0 || n + 1 == p.n {
                    flush(&mut s, &mut ls);
                    flush(&mut t, &mut lt);
                }
            }
            (s, t)
        })
        .collect();
    let (mut s, mut t) = (Vec::with_capacity(p.c), Vec::with_capacity(p.c));
    for (range_s, range_t) in &sums {
        s.extend(range_s.chunks_exact(p.hw).map(|v| v.iter().sum::<f64>()));
        t.extend(range_t.chunks_exact(p.hw).map(|v| v.iter().sum::<f64>()));
    }
    (s, t)
}

/// `g`, or 0 where a fused ReLU's output `y` is not positive (`relu`), as PyTorch's ReLU
/// backward (no gradient at 0 or NaN).
#[inline(always)]
fn through_relu<T: Element>(relu: bool, g: T, y: T) -> T {
    // Not `y <= 0`: NaN outputs pass no gradient either.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if relu && !(y > T::ZERO) {
        T::ZERO
    } else {
        g
    }
}

/// `Σ gy` and `Σ gy · (x - mean)` of each channel; with `relu`, `gy` counts only where the
/// fused ReLU's output `y` is positive.
pub(crate) fn grad_sums<T: Element>(
    p: Planes,
    x: &[T],
    gy: &[T],
    mean: &[f64],
    (relu, y): (bool, &[T]),
) -> (Vec<f64>, Vec<f64>) {
    let term = |m: T, x: T, g: T, y: T| {
        let g = through_relu(relu, g, y);
        (g, g * (x - m))
    };
    if p.hw < SHORT_PLANE {
        let means = spread(p, |c| T::from_f64(mean[c]));
        return short_plane_sums(p, [x, gy, y], &means, term);
    }
    per_channel(p, |c| {
        let m = T::from_f64(mean[c]);
        let planes = channel_planes(p, x, c)
            .zip(channel_planes(p, gy, c))
            .zip(channel_planes(p, y, c))
            .map(|((x, gy), y)| [x, gy, y]);
        paired_sums(planes, |x, g, y| term(m, x, g, y))
    })
    .into_iter()
    .unzip()
}

/// `out[i] = f(coefficients of i's channel, inputs[..][i])` for every value, in parallel:
/// plane by plane, or for short planes image by image with the coefficients spread over
/// the values (see [`SHORT_PLANE`]).
fn map_values<T: Element>(
    p: Planes,
    inputs: [&[T]; 3],
    coefs: [&[f64]; 4],
    f: impl Fn([T; 4], [T; 3]) -> T + Sync + Send,
) -> Vec<T> {
    let len = p.n * p.c * p.hw;
    assert!(
        inputs.iter().all(|input| input.len() == len),
        "batch norm: inputs of {:?} values for {p:?}",
        inputs.map(|input| input.len())
    );
    // Written once, not into zeros first (the zeroing was ~0.7 % of ResNet34@64's step).
    let mut out = Vec::with_capacity(len);
    let coef = |c: usize| coefs.map(|k| T::from_f64(k[c]));
    if p.hw < SHORT_PLANE {
        let image = p.c * p.hw;
        let spread: [Vec<T>; 4] = std::array::from_fn(|k| spread(p, |c| coef(c)[k]));
        let images = out.spare_capacity_mut()[..len].par_chunks_mut(image.max(1));
        images.enumerate().for_each(|(n, o)| {
            let [a, b, c] = inputs.map(|input| &input[n * image..][..image]);
            let [k0, k1, k2, k3] = spread.each_ref().map(|k| &k[..image]);
            let coefs = k0.iter().zip(k1).zip(k2).zip(k3);
            let values = a.iter().zip(b).zip(c);
            for ((o, (((&k0, &k1), &k2), &k3)), ((&a, &b), &c)) in
                o.iter_mut().zip(coefs).zip(values)
            {
                o.write(f([k0, k1, k2, k3], [a, b, c]));
            }
        });
    } else {
        let planes = out.spare_capacity_mut()[..len].par_chunks_mut(p.hw);
        planes.enumerate().for_each(|(plane, o)| {
            let at = plane * p.hw;
            let k = coef(plane % p.c);
            let [a, b, c] = inputs.map(|input| &input[at..][..p.hw]);
            for (o, ((&a, &b), &c)) in o.iter_mut().zip(a.iter().zip(b).zip(c)) {
                o.write(f(k, [a, b, c]));
            }
        });
    }
    // SAFETY: the chunks above cover all `len` values (whole images or whole planes of the
    // `len` asserted), each written from the inputs' value at the same index.
    unsafe { out.set_len(len) };
    out
}

/// `y = (x - mean[c]) * scale[c] + shift[c]`, plus the `residual` if given, then
/// `max(y, 0)` with `relu` (NaN kept): the forward pass in train and eval mode.
pub(crate) fn normalise<T: Element>(
    p: Planes,
    x: &[T],
    mean: &[f64],
    scale: &[f64],
    shift: &[f64],
    (residual, relu): (Option<&[T]>, bool),
) -> Vec<T> {
    let clamp = move |y: T| if relu && y < T::ZERO { T::ZERO } else { y };
    let coefs = [mean, scale, shift, shift];
    match residual {
        Some(r) => map_values(p, [x, r, x], coefs, move |[m, a, b, _], [x, r, _]| {
            clamp((x - m) * a + b + r)
        }),
        None => map_values(p, [x, x, x], coefs, move |[m, a, b, _], [x, _, _]| {
            clamp((x - m) * a + b)
        }),
    }
}

/// `gx = a[c] * gy + b[c] * (x - mean[c]) + d[c]`: the input gradient (train mode; eval
/// mode with `b = d = 0`). With `relu`, `gy` counts only where the output `y` is positive.
pub(crate) fn input_grad<T: Element>(
    p: Planes,
    gy: &[T],
    x: &[T],
    mean: &[f64],
    [a, b, d]: [&[f64]; 3],
    (relu, y): (bool, &[T]),
) -> Vec<T> {
    map_values(
        p,
        [gy, x, y],
        [mean, a, b, d],
        move |[m, a, b, d], [g, x, y]| a * through_relu(relu, g, y) + b * (x - m) + d,
    )
}
