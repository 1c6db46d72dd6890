//! Convolution tap by tap on small maps, where padding is a large share of im2col's
//! products: one GEMM per kernel tap and output row (one per tap where it reaches whole
//! rows), over only the pixels the tap reaches.
//!
//! On a 2x2 map a padded 3x3 kernel reads padding in 20 of the 36 products of each output
//! pixel (4x4 maps: 44 of 144), and im2col multiplies those zeros like any other value.
//! Here the batch is laid out channel-major, `[c][y][x][n]`, so that for a tap `(ky, kx)`
//! and an output row the output pixels it reaches, and the input pixels they read, are each
//! one run of contiguous columns (at stride 1; at larger strides each pixel's `n` images).
//! The kernel is read tap by tap (`[co][tap][ci]`, OHWI) so that each tap's weights are
//! contiguous rows: read in place from OIHW, a value per tap apart, every GEMM call would
//! stream all of the kernel's cache lines (whole ResNet18@64 training steps ran up to 3.3 %
//! slower that way). The models hold their kernels so (`KernelLayout::Ohwi`); an OIHW
//! kernel is copied into it first (`geometry::oihw_to_ohwi`), and the weight gradient,
//! written in the same layout, back (`geometry::ohwi_to_oihw`). The threads split output
//! channels (forward, weight gradient) or input channels (input gradient): no partial sums.

use super::geometry::ConvGeom;
use crate::cpu::{gemm, padded_stride, scratch, zeros, Element, MatRef};
use rayon::prelude::*;

/// Largest share of im2col's products that may read the input for this path to be taken:
/// 0.44 on 2x2 maps, 0.6 on 3x3, 0.69 on 4x4 (ResNet's layer 3 at 64 px), 0.82 on 7x7
/// (ResNet's layer 4 at 224 px); 8x8 maps, at 0.84, stay with Winograd or im2col.
const MAX_LIVE_SHARE: f64 = 0.83;
/// Fewest images for this path: its GEMMs are a few pixels of every image wide, and the
/// kernel is laid out tap by tap on every call (0.5 ms for 512 channels), so a lone image
/// ran ResNet18@224 inference 15 % slower than im2col.
const MIN_BATCH: usize = 8;

/// Whether the tap-by-tap path computes `g`: a batch of [`MIN_BATCH`] or more through a
/// kernel of several taps, where padding takes more than `1 - MAX_LIVE_SHARE` of im2col's
/// products (strided too: ResNet's 4x4-to-2x2 stride-2 3x3 at 64 px, layer 4's first, ran
/// its three passes at 481/376/393 GFLOP/s against im2col's 381/354/268).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let taps = g.kh * g.kw > 1 && g.ohw() > 0 && g.n >= MIN_BATCH;
    taps && live_share(g) <= MAX_LIVE_SHARE
}

/// The share of im2col's products that read the input rather than padding.
fn live_share(g: &ConvGeom) -> f64 {
    let live = |k: usize, len: usize, out: usize| -> usize {
        (0..k)
            .map(|t| {
                let (lo, hi) = g.valid(t, len, out);
                hi - lo
            })
            .sum()
    };
    let rows = live(g.kh, g.h, g.oh) as f64 / (g.kh * g.oh) as f64;
    let cols = live(g.kw, g.w, g.ow) as f64 / (g.kw * g.ow) as f64;
    rows * cols
}

/// One GEMM's worth of a tap: `cols` contiguous columns of one output row (`output`,
/// offset into an output channel's `[oy][ox][n]` plane) and of the input row they read
/// (`input`, into an input channel's `[iy][ix][n]` plane).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    tap: usize,
    output: usize,
    input: usize,
    cols: usize,
}

/// Every tap's runs, tap by tap: at stride 1 one per output row it reaches, or one for all
/// of them where it reaches whole rows of the output reading whole rows of the input (the
/// centre column of a same-size kernel), since consecutive rows are then contiguous; at
/// larger strides one per output pixel, whose input pixels are not consecutive.
fn runs(g: &ConvGeom) -> Vec<Run> {
    let (n, s) = (g.n, g.stride);
    let mut runs = Vec::new();
    for ky in 0..g.kh {
        let (oy0, oy1) = g.valid(ky, g.h, g.oh);
        for kx in 0..g.kw {
            let (ox0, ox1) = g.valid(kx, g.w, g.ow);
            if ox0 >= ox1 || oy0 >= oy1 {
                continue;
            }
            let tap = ky * g.kw + kx;
            // Output pixels per run along a row.
            let span = match s {
                1 => ox1 - ox0,
                _ => 1,
            };
            let whole_rows = s == 1 && ox1 - ox0 == g.ow && g.ow == g.w;
            let rows: Vec<(usize, usize)> = match whole_rows {
                true => vec![(oy0, oy1 - oy0)],
                false => (oy0..oy1).map(|oy| (oy, 1)).collect(),
            };
            for (oy, count) in rows {
                let iy = oy * s + ky - g.pad;
                for ox in (ox0..ox1).step_by(span) {
                    let ix = ox * s + kx - g.pad;
                    runs.push(Run {
                        tap,
                        output: (oy * g.ow + ox) * n,
                        input: (iy * g.w + ix) * n,
                        cols: count * span * n,
                    });
                }
            }
        }
    }
    runs
}

/// `[n][c][p]` -> `[c][p][n]` (`p` pixels a plane), planes `ld` apart, in a scratch
/// buffer (see `scratch::lend`).
pub(super) fn to_channel_major<T: Element>(
    src: &[T],
    n: usize,
    c: usize,
    p: usize,
    ld: usize,
) -> Vec<T> {
    let mut out = scratch::lend::<T>(c * ld);
    let planes = out[..c * ld].par_chunks_exact_mut(ld);
    planes.enumerate().for_each(|(ci, plane)| {
        // Each image's plane read in order, written n apart within this (cache-sized) block.
        for img in 0..n {
            let from = &src[(img * c + ci) * p..][..p];
            for (pi, &v) in from.iter().enumerate() {
                plane[pi * n + img] = v;
            }
        }
    });
    out
}

/// `[c][p][n]` -> `[n][c][p]`, into a new vector (written without zeroing first).
fn from_channel_major<T: Element>(src: &[T], n: usize, c: usize, p: usize) -> Vec<T> {
    let len = n * c * p;
    let mut out = Vec::with_capacity(len);
    let per = rows_per_thread(n);
    let shares = out.spare_capacity_mut()[..len].par_chunks_mut((per * c * p).max(1));
    shares.enumerate().for_each(|(t, images)| {
        // Channel by channel, so that the channel's block of src stays in cache while each
        // image's plane is written in order.
        for ci in 0..c {
            let block = &src[ci * p * n..][..p * n];
            for (j, image) in images.chunks_exact_mut(c * p).enumerate() {
                let img = t * per + j;
                for (pi, d) in image[ci * p..][..p].iter_mut().enumerate() {
                    d.write(block[pi * n + img]);
                }
            }
        }
    });
    // SAFETY: the shares cover all `n` images, and every pixel of every channel of each.
    unsafe { out.set_len(len) };
    out
}

/// Rows of `rows` each thread takes (at least one).
fn rows_per_thread(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// `y = conv(x, w)` for an NCHW batch (see [`applies`]), `wt` the kernel tap by tap (OHWI).
pub(crate) fn forward<T: Element>(g: &ConvGeom, x: &[T], wt: &[T]) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w * g.n, g.ohw() * g.n);
    let unit = g.kh * g.kw * g.cin;
    let xt = to_channel_major(x, g.n, g.cin, g.h * g.w, in_len);
    let runs = runs(g);
    let mut yt = zeros::<T>(g.cout * out_len);
    let per = rows_per_thread(g.cout);
    let parts = yt.par_chunks_mut(per * out_len.max(1)).enumerate();
    parts.for_each(|(t, rows)| {
        let (co0, m) = (t * per, rows.len() / out_len);
        for r in &runs {
            let a = MatRef::rows(&wt[co0 * unit + r.tap * g.cin..], unit);
            let b = MatRef::rows(&xt[r.input..], in_len);
            // SAFETY: a is m x cin, the tap's weights in filters co0..co0 + m; b is cin x
            // cols, one run of every input channel's plane (r.input + cols <= in_len).
            unsafe {
                gemm(
                    m,
                    r.cols,
                    g.cin,
                    &mut rows[r.output..],
                    out_len,
                    true,
                    a,
                    b,
                    1,
                )
            };
        }
    });
    scratch::give_back(xt);
    from_channel_major(&yt, g.n, g.cout, g.ohw())
}

/// The gradient with respect to the input: each tap's `w^T gy` added into the input pixels
/// it read; `wt` the kernel tap by tap (OHWI).
pub(crate) fn input_grad<T: Element>(g: &ConvGeom, wt: &[T], gy: &[T]) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w * g.n, g.ohw() * g.n);
    let unit = g.kh * g.kw * g.cin;
    let gyt = to_channel_major(gy, g.n, g.cout, g.ohw(), out_len);
    let runs = runs(g);
    let mut gxt = zeros::<T>(g.cin * in_len);
    let per = rows_per_thread(g.cin);
    let parts = gxt.par_chunks_mut(per * in_len.max(1)).enumerate();
    parts.for_each(|(t, rows)| {
        let (ci0, m) = (t * per, rows.len() / in_len);
        for r in &runs {
            let a = MatRef::transposed(&wt[r.tap * g.cin + ci0..], unit);
            let b = MatRef::rows(&gyt[r.output..], out_len);
            // SAFETY: a is m x cout, input channels ci0..ci0 + m of the tap in every filter;
            // b is cout x cols, one run of every output channel's plane.
            unsafe {
                gemm(
                    m,
                    r.cols,
                    g.cout,
                    &mut rows[r.input..],
                    in_len,
                    true,
                    a,
                    b,
                    1,
                )
            };
        }
    });
    scratch::give_back(gyt);
    from_channel_major(&gxt, g.n, g.cin, g.h * g.w)
}

/// The gradient with respect to the kernel, tap by tap (`[co][tap][ci]`): each tap's
/// `gy x^T` over the pixels it reached.
pub(crate) fn weight_grad<T: Element>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let (in_len, out_len) = (g.h * g.w * g.n, g.ohw() * g.n);
    let unit = g.kh * g.kw * g.cin;
    // Planes padded apart where a plane is a multiple of 2 KiB (a 4x4 map of 32 images):
    // gemm packs one operand from a row per channel, and ResNet's layer 3 at 64 px ran its
    // weight gradient at 307-312 GFLOP/s unpadded, 346-387 padded (conv bench, 3 runs each).
    // The forward and input gradient, which read the planes along their rows, measured the
    // same or slower padded, and so did 2x2 maps (512 bytes).
    let (in_ld, out_ld) = (padded_stride::<T>(in_len), padded_stride::<T>(out_len));
    let xt = to_channel_major(x, g.n, g.cin, g.h * g.w, in_ld);
    let gyt = to_channel_major(gy, g.n, g.cout, g.ohw(), out_ld);
    let runs = runs(g);
    // A tap's first run writes its rows of every filter, the others add to them; a tap
    // that reaches no output pixel keeps the zeros. (The result is a vector of its own:
    // a scratch buffer kept as the result drains the pool, and every later one of that size
    // then allocates and zeroes one anyway.)
    let first = |i: usize| i == 0 || runs[i - 1].tap != runs[i].tap;
    let mut gwt = zeros::<T>(g.cout * unit);
    let per = rows_per_thread(g.cout);
    let parts = gwt.par_chunks_mut(per * unit).enumerate();
    parts.for_each(|(t, filters)| {
        let (co0, m) = (t * per, filters.len() / unit);
        for (i, r) in runs.iter().enumerate() {
            let a = MatRef::rows(&gyt[co0 * out_ld + r.output..], out_ld);
            let b = MatRef::transposed(&xt[r.input..], in_ld);
            let dst = &mut filters[r.tap * g.cin..];
            // SAFETY: a is m x cols, one run of output channels co0..co0 + m; b is cols x cin,
            // the same run of every input channel's plane, read transposed.
            unsafe { gemm(m, g.cin, r.cols, dst, unit, !first(i), a, b, 1) };
        }
    });
    scratch::give_back(xt);
    scratch::give_back(gyt);
    gwt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(size: usize, k: usize, stride: usize, pad: usize) -> ConvGeom {
        ConvGeom::square([8, 1, 1], size, k, stride, pad)
    }

    #[test]
    fn live_share_counts_the_products_that_read_the_input() {
        // 2x2, 3x3, padding 1: each pixel reads 4 of its 9 taps.
        assert!((live_share(&geom(2, 3, 1, 1)) - 16.0 / 36.0).abs() < 1e-12);
        // 4x4: per axis 2 + 3 + 3 + 2 of 12.
        assert!((live_share(&geom(4, 3, 1, 1)) - 100.0 / 144.0).abs() < 1e-12);
        // 4x4 to 2x2 at stride 2: per axis 2 + 3 of 6.
        assert!((live_share(&geom(4, 3, 2, 1)) - 25.0 / 36.0).abs() < 1e-12);
        assert!(applies(&geom(4, 3, 1, 1)) && applies(&geom(7, 3, 1, 1)));
        assert!(
            !applies(&geom(8, 3, 1, 1)),
            "8x8 maps (0.84) stay off this path"
        );
        let one_image = ConvGeom {
            n: 1,
            ..geom(4, 3, 1, 1)
        };
        assert!(!applies(&one_image), "a lone image stays off this path");
        assert!(
            applies(&geom(4, 3, 2, 1)),
            "4x4 to 2x2 at stride 2 (0.69) takes this path"
        );
        assert!(
            !applies(&geom(8, 3, 2, 1)),
            "8x8 to 4x4 at stride 2 (0.84) does not"
        );
        assert!(
            !applies(&geom(2, 1, 1, 0)),
            "a 1x1 kernel has no padding to skip"
        );
    }

    #[test]
    fn runs_cover_each_output_pixel_once_per_tap_that_reaches_it() {
        // 3x3 on 2x2: 16 (pixel, tap) pairs of each image.
        let g = geom(2, 3, 1, 1);
        let runs = runs(&g);
        assert_eq!(runs.iter().map(|r| r.cols).sum::<usize>(), 16 * g.n);
        // The corner tap (0, 0) reaches output (1, 1) alone, reading input (0, 0).
        let corner: Vec<_> = runs.iter().filter(|r| r.tap == 0).collect();
        assert_eq!(corner.len(), 1);
        assert_eq!((corner[0].output, corner[0].input), (3 * g.n, 0));
        // The centre tap reaches both whole rows in one run; tap (1, 0) (left column) reaches
        // output column 1 of each row, reading column 0: one run per row.
        let centre: Vec<_> = runs.iter().filter(|r| r.tap == 4).collect();
        assert_eq!(centre.len(), 1);
        assert_eq!(
            (centre[0].output, centre[0].input, centre[0].cols),
            (0, 0, 4 * g.n)
        );
        let left: Vec<_> = runs
            .iter()
            .filter(|r| r.tap == 3)
            .map(|r| (r.output, r.input))
            .collect();
        assert_eq!(left, [(g.n, 0), (3 * g.n, 2 * g.n)]);
        // 4x4: 100 pairs.
        let runs = super::runs(&geom(4, 3, 1, 1));
        assert_eq!(runs.iter().map(|r| r.cols).sum::<usize>(), 100 * g.n);
        // 4x4 to 2x2 at stride 2: 25 pairs, one run each. Output (1, 1) reads input (1, 1)
        // through tap (0, 0), and (3, 3) through tap (2, 2); output (0, 0) reads (0, 0)
        // through the centre tap alone.
        let g = geom(4, 3, 2, 1);
        let runs = super::runs(&g);
        assert_eq!(runs.len(), 25);
        assert!(runs.iter().all(|r| r.cols == g.n));
        let at = |tap: usize| -> Vec<(usize, usize)> {
            let of_tap = runs.iter().filter(|r| r.tap == tap);
            of_tap.map(|r| (r.output / g.n, r.input / g.n)).collect()
        };
        assert_eq!(at(0), [(3, 5)]);
        assert_eq!(at(8), [(0, 5), (1, 7), (2, 13), (3, 15)]);
        assert_eq!(at(4), [(0, 0), (1, 2), (2, 8), (3, 10)]);
    }

    #[test]
    fn channel_major_round_trips() {
        let (n, c, p) = (3, 2, 5);
        let x: Vec<f64> = (0..n * c * p).map(|i| i as f64).collect();
        let t = to_channel_major(&x, n, c, p, p * n);
        // Element (img 2, channel 1, pixel 3) sits at [1][3][2].
        assert_eq!(t[(p + 3) * n + 2], ((2 * c + 1) * p + 3) as f64);
        assert_eq!(from_channel_major(&t[..n * c * p], n, c, p), x);
        // Planes laid further apart hold the same values at their new offsets.
        let ld = p * n + 4;
        let spaced = to_channel_major(&x, n, c, p, ld);
        assert_eq!(spaced[ld + 3 * n + 2], t[(p + 3) * n + 2]);
        assert_eq!(spaced[..p * n], t[..p * n]);
        scratch::give_back(spaced);
        scratch::give_back(t);
    }
}
