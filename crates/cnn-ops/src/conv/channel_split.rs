//! The input and kernel gradients of im2col + GEMM split by input channel across the
//! threads rather than by image, for large kernels over small maps (see [`applies`]).

use super::geometry::ConvGeom;
use super::im2col::{col2im_images, im2col_images};
use super::im2col_gemm::{gather_rows, gradient_ld, MAX_COL};
use crate::cpu::{gemm, scratch, zeros, Element, MatRef};
use rayon::prelude::*;

/// Whether the weight and input gradients split the input channels across the threads
/// rather than the batch: where the kernel is larger than the output gradient (`ckk > n*ohw`:
/// ResNet's last stages, 512 x 4608 kernels over 2x2-7x7 maps), each thread packing the whole
/// kernel, or writing a whole partial kernel gradient to be summed, moved more memory than
/// the GEMMs did work. One thread's column matrix must fit in [`MAX_COL`].
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let threads = rayon::current_num_threads().max(1);
    crate::choice::cpu_choice().conv_split_batch
        && threads > 1
        && g.cin >= threads
        && g.ckk() > g.n * g.ohw()
        && g.kh * g.kw * g.cin.div_ceil(threads) * g.n * g.ohw() <= MAX_COL
}

/// The input gradient with each thread taking a range of input channels over the whole batch:
/// `col2im(w[.., c0..c1]^T gy)`, so that each thread packs only its share of a large kernel
/// (see [`applies`]); the ranges' planes are copied into place afterwards.
pub(crate) fn input_grad<T: Element>(g: &ConvGeom, w: &[T], gy: &[T]) -> Vec<T> {
    let (k2, cols, hw) = (g.kh * g.kw, g.n * g.ohw(), g.h * g.w);
    let (ranges, parts) = by_input_channels(g, gy, |sub, c0, b| {
        let mut dcol = scratch::lend::<T>(sub.ckk() * cols);
        let a = MatRef::transposed(&w[c0 * k2..], g.ckk());
        // SAFETY: a is sub.ckk x cout (columns c0 * k2.. of w, transposed), b is cout x cols.
        unsafe { gemm(sub.ckk(), cols, g.cout, &mut dcol, cols, false, a, b, 1) };
        let mut part = zeros(g.n * sub.in_image());
        col2im_images(sub, &mut dcol, cols, g.n, &mut part, sub.in_image());
        scratch::give_back(dcol);
        part
    });
    join_ranges(g.n, hw, &ranges, &parts)
}

/// The kernel gradient with each thread taking a range of input channels over the whole batch:
/// `gw[.., c0..c1] = gy im2col(x[.., c0..c1])^T`, one GEMM each, no partial sums.
pub(crate) fn weight_grad<T: Element>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let (k2, cols, hw) = (g.kh * g.kw, g.n * g.ohw(), g.h * g.w);
    let ld = gradient_ld::<T>(cols);
    let (ranges, parts) = by_input_channels(g, gy, |sub, c0, a| {
        let mut col = scratch::lend::<T>(sub.ckk() * ld);
        im2col_images(sub, &x[c0 * hw..], g.in_image(), g.n, &mut col, ld);
        let mut part = scratch::lend::<T>(g.cout * sub.ckk());
        let b = MatRef::transposed(&col, ld);
        // SAFETY: a is cout x cols (gy), b is cols x sub.ckk (col transposed).
        unsafe {
            gemm(
                g.cout,
                sub.ckk(),
                cols,
                &mut part,
                sub.ckk(),
                false,
                a,
                b,
                1,
            )
        };
        scratch::give_back(col);
        part
    });
    let gw = join_ranges(g.cout, k2, &ranges, &parts);
    parts.into_iter().for_each(scratch::give_back);
    gw
}

/// Runs `f(sub-geometry, first channel, output gradient)` for one range of input channels per
/// thread, in parallel, the output gradient gathered once as a `cout x n*ohw` matrix (rows
/// [`gradient_ld`] apart); returns the ranges `(first channel, channels)` and what `f` made
/// of each.
fn by_input_channels<T: Element, R: Send>(
    g: &ConvGeom,
    gy: &[T],
    f: impl Fn(&ConvGeom, usize, MatRef<T>) -> R + Sync + Send,
) -> (Vec<(usize, usize)>, Vec<R>) {
    let per = g.cin.div_ceil(rayon::current_num_threads().max(1));
    let ld = gradient_ld::<T>(g.n * g.ohw());
    let mut dy = scratch::lend::<T>(g.cout * ld);
    gather_rows(g, gy, 0, g.n, &mut dy, ld);
    let ranges: Vec<(usize, usize)> = (0..g.cin)
        .step_by(per)
        .map(|c0| (c0, per.min(g.cin - c0)))
        .collect();
    let results = ranges
        .par_iter()
        .map(|&(c0, cin)| f(&ConvGeom { cin, ..*g }, c0, MatRef::rows(&dy, ld)))
        .collect();
    scratch::give_back(dy);
    (ranges, results)
}

/// Joins what each input-channel range made, in order: row `i` of the result is chunk `i`
/// of every range's part (`cin * unit` values: its planes of image `i`, or its taps of
/// output channel `i`), the ranges in channel order. Written once, not into a zeroed buffer
/// (the zeroing was ~1 % of ResNet18@32's step), and rows in parallel: on one thread, the
/// 9.4 MB kernel gradient of a 512-channel 3x3 left the other core idle.
fn join_ranges<T: Element>(
    rows: usize,
    unit: usize,
    ranges: &[(usize, usize)],
    parts: &[Vec<T>],
) -> Vec<T> {
    assert!(ranges.windows(2).all(|r| r[0].0 + r[0].1 == r[1].0));
    assert!(parts.len() == ranges.len());
    let len: usize = ranges.iter().map(|&(_, cin)| cin * unit).sum();
    let mut out = Vec::with_capacity(rows * len);
    let out_rows = out.spare_capacity_mut()[..rows * len].par_chunks_exact_mut(len.max(1));
    out_rows.enumerate().for_each(|(row, dst)| {
        let mut at = 0;
        for (&(_, cin), part) in ranges.iter().zip(parts) {
            let src = &part[row * cin * unit..][..cin * unit];
            for (d, &v) in dst[at..][..src.len()].iter_mut().zip(src) {
                d.write(v);
            }
            at += src.len();
        }
    });
    // SAFETY: each of the `rows` rows of `len` values was written by the ranges, whose
    // `cin * unit` values add up to `len`.
    unsafe { out.set_len(rows * len) };
    out
}
