//! Per-channel passes of batch normalisation over contiguous NCHW data, each one sweep of
//! memory, parallel over channels (reductions) or planes (element-wise maps).
//!
//! Sums accumulate in f64 so that a one-pass variance (shifted by each channel's first
//! value) loses nothing measurable against PyTorch's two-pass one.

use super::Element;
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

/// Mean and biased variance of each channel.
pub(crate) fn channel_stats<T: Element>(p: Planes, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    per_channel(p, |c| {
        let shift = x[c * p.hw].to_f64();
        let (mut s, mut s2) = (0f64, 0f64);
        for n in 0..p.n {
            let plane = &x[(n * p.c + c) * p.hw..][..p.hw];
            let (ps, ps2) = plane.iter().fold((0f64, 0f64), |(a, b), &v| {
                let d = v.to_f64() - shift;
                (a + d, b + d * d)
            });
            s += ps;
            s2 += ps2;
        }
        let m = s / p.count();
        (shift + m, (s2 / p.count() - m * m).max(0.0))
    })
    .into_iter()
    .unzip()
}

/// `g`, or 0 where a fused ReLU's output `y` is not positive (`relu`), as PyTorch's ReLU
/// backward (no gradient at 0 or NaN).
#[inline(always)]
fn through_relu<T: Element>(relu: bool, g: T, y: T) -> T {
    match (relu, y.partial_cmp(&T::ZERO)) {
        (true, Some(std::cmp::Ordering::Greater)) | (false, _) => g,
        (true, _) => T::ZERO,
    }
}

/// `Σ gy` and `Σ gy · x` of each channel; with `relu`, `gy` counts only where the fused
/// ReLU's output `y` is positive.
pub(crate) fn grad_sums<T: Element>(
    p: Planes,
    x: &[T],
    gy: &[T],
    (relu, y): (bool, &[T]),
) -> (Vec<f64>, Vec<f64>) {
    per_channel(p, |c| {
        let (mut s, mut sx) = (0f64, 0f64);
        for n in 0..p.n {
            let at = (n * p.c + c) * p.hw;
            let (x, gy, y) = (&x[at..][..p.hw], &gy[at..][..p.hw], &y[at..][..p.hw]);
            let terms = x.iter().zip(gy).zip(y);
            let (ps, psx) = terms.fold((0f64, 0f64), |(a, b), ((&x, &g), &y)| {
                let g = through_relu(relu, g, y).to_f64();
                (a + g, b + g * x.to_f64())
            });
            s += ps;
            sx += psx;
        }
        (s, sx)
    })
    .into_iter()
    .unzip()
}

/// `out = f(plane's channel, input planes...)` for every plane, in parallel.
fn map_planes<T: Element>(
    p: Planes,
    inputs: [&[T]; 3],
    f: impl Fn(usize, &mut [T], [&[T]; 3]) + Sync + Send,
) -> Vec<T> {
    let mut out = vec![T::ZERO; inputs[0].len()];
    out.par_chunks_mut(p.hw).enumerate().for_each(|(plane, o)| {
        let at = plane * p.hw;
        f(plane % p.c, o, inputs.map(|input| &input[at..][..p.hw]));
    });
    out
}

/// `y = (x - mean[c]) * scale[c] + shift[c]`, then `max(y, 0)` with `relu` (NaN kept): the
/// forward pass in train and eval mode.
pub(crate) fn normalise<T: Element>(
    p: Planes,
    x: &[T],
    mean: &[f64],
    scale: &[f64],
    shift: &[f64],
    relu: bool,
) -> Vec<T> {
    map_planes(p, [x, x, x], |c, out, [x, _, _]| {
        let (m, a, b) = (
            T::from_f64(mean[c]),
            T::from_f64(scale[c]),
            T::from_f64(shift[c]),
        );
        for (o, &x) in out.iter_mut().zip(x) {
            let y = (x - m) * a + b;
            *o = if relu && y < T::ZERO { T::ZERO } else { y };
        }
    })
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
    map_planes(p, [gy, x, y], |c, out, [gy, x, y]| {
        let m = T::from_f64(mean[c]);
        let (a, b, d) = (T::from_f64(a[c]), T::from_f64(b[c]), T::from_f64(d[c]));
        for (((o, &g), &x), &y) in out.iter_mut().zip(gy).zip(x).zip(y) {
            *o = a * through_relu(relu, g, y) + b * (x - m) + d;
        }
    })
}
