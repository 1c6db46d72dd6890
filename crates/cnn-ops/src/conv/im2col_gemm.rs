//! Convolution forward, input gradient and weight gradient as im2col/col2im + GEMM.
//!
//! The batch is split into one contiguous share of images per thread, each running
//! single-threaded GEMMs (no synchronisation inside a layer); a batch smaller than the pool
//! runs image by image with the GEMM itself split across threads. Within a share, images
//! go through in chunks side by side in one column matrix so that small feature maps
//! (7x7 at ResNet's last stage) still give the GEMM a wide enough N, and an image whose
//! column matrix is too wide for the cache goes through in bands of output rows.

use super::geometry::ConvGeom;
use super::im2col::{col2im_images, im2col_band, im2col_images};
use crate::cpu::{gemm, scratch, sum_parts, zeros, Element, MatRef};
use rayon::prelude::*;

/// Fewest GEMM columns (output pixels) worth one call; smaller maps batch images together.
/// 256 against 512 measured AlexNet@224 training 69.1-69.9 -> 70.0-71.6 img/s, the ResNet
/// rows equal or slightly faster; 128 and 1024 were slower.
const MIN_COLS: usize = 256;
/// Largest column matrix a chunk may unfold into (elements), to bound scratch memory.
pub(super) const MAX_COL: usize = 1 << 22;
/// Most elements (1 MiB of f32) a wide column matrix holds at once before it is built and
/// multiplied a band of output rows at a time (see [`band_rows`]).
const BAND: usize = 1 << 18;

/// How one call splits its work.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Images per thread share (the whole batch when the GEMM is split instead).
    share: usize,
    /// Images unfolded together into one column matrix.
    chunk: usize,
    /// Threads inside each GEMM.
    gemm_threads: usize,
}

fn plan(g: &ConvGeom) -> Plan {
    let threads = rayon::current_num_threads().max(1);
    let split_batch = crate::choice::cpu_choice().conv_split_batch && g.n >= threads;
    let (share, gemm_threads) = match split_batch {
        true => (g.n.div_ceil(threads), 1),
        false => (g.n, threads),
    };
    let want = MIN_COLS
        .div_ceil(g.ohw())
        .min((MAX_COL / (g.ckk() * g.ohw())).max(1))
        .clamp(1, share.max(1));
    // Equal chunks: 16 images wanting 11 a chunk run as two chunks of 8.
    let chunk = share.div_ceil(share.div_ceil(want).max(1)).max(1);
    Plan {
        share: share.max(1),
        chunk,
        gemm_threads,
    }
}

/// Runs `f(first image, images, item)` over each thread's share of the batch, handing
/// each share its own `item` (its slice of the output, or its accumulator); in parallel
/// when the batch is split.
fn for_each_share<I: Send, R: Send>(
    g: &ConvGeom,
    p: Plan,
    items: impl IntoIterator<Item = I>,
    f: impl Fn(usize, usize, I) -> R + Sync + Send,
) -> Vec<R> {
    let jobs: Vec<(usize, I)> = (0..g.n).step_by(p.share).zip(items).collect();
    let run = |(i0, item): (usize, I)| f(i0, p.share.min(g.n - i0), item);
    if p.gemm_threads == 1 && jobs.len() > 1 {
        jobs.into_par_iter().map(run).collect()
    } else {
        jobs.into_iter().map(run).collect()
    }
}

/// Unfolds images `i0..i0 + count` of `x` side by side into `col` (rows `ld` apart).
fn unfold<T: Element>(g: &ConvGeom, x: &[T], i0: usize, count: usize, col: &mut [T], ld: usize) {
    let images = &x[i0 * g.in_image()..];
    im2col_images(g, images, g.in_image(), count, col, ld);
}

/// Copies the output gradient of images `i0..i0 + count` into one `cout x count*ohw` matrix
/// (rows `ld` apart).
pub(super) fn gather_rows<T: Element>(
    g: &ConvGeom,
    gy: &[T],
    i0: usize,
    count: usize,
    dst: &mut [T],
    ld: usize,
) {
    let ohw = g.ohw();
    for j in 0..count {
        let img = &gy[(i0 + j) * g.out_image()..];
        for co in 0..g.cout {
            dst[co * ld + j * ohw..][..ohw].copy_from_slice(&img[co * ohw..][..ohw]);
        }
    }
}

/// Row stride for the output gradient and column matrices of `cols` columns that the weight
/// gradient's GEMMs read down their columns: a stride of a multiple of 4 KiB puts every row in
/// the same L1 cache set, which made gemm's packing gather 1.7x slower (ResNet18's stem at
/// 64 px: 1024 columns); on an 8-way L1 a multiple of 2 KiB (two sets) cost too (ResNet's
/// layer3.0.conv1 at 64 px, 512 columns: weight gradient 105 -> 123-134 GFLOP/s).
pub(super) fn gradient_ld<T>(cols: usize) -> usize {
    crate::cpu::padded_stride::<T>(cols)
}

/// Output rows per band where one image's column matrix is wide (8+ times more output pixels
/// than rows) and larger than [`BAND`] elements: the stems on three input channels (ResNet's
/// 7x7 at 224 px unfolds 147 x 12544 an image). Built whole, it spilled out of the cache
/// between im2col writing it and the GEMM reading it; in bands ResNet's stem ran 15 % faster
/// forward and 25 % on the weight gradient. Taller matrices (576 x 784 for ResNet's first
/// stride-2 3x3 at 224 px) measured 10 % slower in bands: each band's GEMM re-reads the
/// kernel or re-adds its gradient. `None` otherwise, and for same-size or pointwise convs.
fn band_rows(g: &ConvGeom) -> Option<usize> {
    let (rows, pixels) = (g.ckk(), g.ohw());
    let wide = rows * pixels > BAND && pixels >= 8 * rows;
    let most = (BAND / (rows * g.ow)).max(1);
    // Equal bands: 112 rows at most 15 a band run as eight of 14.
    let even = g.oh.div_ceil(g.oh.div_ceil(most));
    (wide && !g.is_same_size() && !g.is_pointwise()).then_some(even)
}

/// `y = conv(x, w)` for a conv that is not cut, the kernel OIHW.
pub(crate) fn forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T]) -> Vec<T> {
    let p = plan(g);
    let mut y = zeros(g.n * g.out_image());
    let pieces = y.chunks_mut(p.share * g.out_image());
    for_each_share(g, p, pieces, |i0, count, out| {
        forward_share(g, p, x, w, i0, count, out)
    });
    y
}

#[allow(clippy::too_many_arguments)]
fn forward_share<T: Element>(
    g: &ConvGeom,
    p: Plan,
    x: &[T],
    w: &[T],
    first: usize,
    count: usize,
    y: &mut [T],
) {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    let a = MatRef::rows(w, ckk);
    if let (1, Some(rows)) = (p.chunk, band_rows(g)) {
        for j in 0..count {
            let img = &x[(first + j) * g.in_image()..][..g.in_image()];
            let out = &mut y[j * g.out_image()..][..g.out_image()];
            forward_banded(g, p, a, img, out, rows);
        }
        return;
    }
    for c0 in (0..count).step_by(p.chunk) {
        let gi = p.chunk.min(count - c0);
        let cols = gi * ohw;
        let direct = gi == 1 && g.is_pointwise();
        let mut col = scratch::lend::<T>(if direct { 0 } else { ckk * cols });
        let b = if direct {
            MatRef::rows(&x[(first + c0) * g.in_image()..][..g.in_image()], ohw)
        } else {
            unfold(g, x, first + c0, gi, &mut col, cols);
            MatRef::rows(&col, cols)
        };
        let y0 = c0 * g.out_image();
        if gi == 1 {
            // SAFETY: a is cout x ckk (w), b is ckk x ohw (col or the image).
            unsafe {
                gemm(
                    g.cout,
                    ohw,
                    ckk,
                    &mut y[y0..],
                    ohw,
                    false,
                    a,
                    b,
                    p.gemm_threads,
                )
            };
        } else {
            let mut tmp = scratch::lend::<T>(g.cout * cols);
            // SAFETY: as above with b ckk x cols.
            unsafe {
                gemm(
                    g.cout,
                    cols,
                    ckk,
                    &mut tmp,
                    cols,
                    false,
                    a,
                    b,
                    p.gemm_threads,
                )
            };
            for j in 0..gi {
                let img = &mut y[y0 + j * g.out_image()..][..g.out_image()];
                for co in 0..g.cout {
                    img[co * ohw..][..ohw].copy_from_slice(&tmp[co * cols + j * ohw..][..ohw]);
                }
            }
            scratch::give_back(tmp);
        }
        scratch::give_back(col);
    }
}

/// One image's forward conv a band of `rows` output rows at a time (see [`band_rows`]).
fn forward_banded<T: Element>(
    g: &ConvGeom,
    p: Plan,
    a: MatRef<T>,
    x: &[T],
    y: &mut [T],
    rows: usize,
) {
    let ohw = g.ohw();
    let mut col = scratch::lend::<T>(g.ckk() * rows * g.ow);
    for y0 in (0..g.oh).step_by(rows) {
        let y1 = (y0 + rows).min(g.oh);
        let width = (y1 - y0) * g.ow;
        im2col_band(g, x, &mut col, width, (y0, y1));
        let b = MatRef::rows(&col, width);
        let out = &mut y[y0 * g.ow..];
        // SAFETY: a is cout x ckk (w), b is ckk x width (the band's columns); the output
        // rows start at the band's first pixel of each channel plane, ohw apart.
        unsafe {
            gemm(
                g.cout,
                width,
                g.ckk(),
                out,
                ohw,
                false,
                a,
                b,
                p.gemm_threads,
            )
        };
    }
    scratch::give_back(col);
}

/// Gradient with respect to the input of a conv that is not cut, `col2im(w^T gy)`, the
/// kernel OIHW.
pub(crate) fn input_grad<T: Element>(g: &ConvGeom, w: &[T], gy: &[T]) -> Vec<T> {
    let p = plan(g);
    let mut gx = zeros(g.n * g.in_image());
    let pieces = gx.chunks_mut(p.share * g.in_image());
    for_each_share(g, p, pieces, |i0, count, out| {
        input_grad_share(g, p, w, gy, i0, count, out)
    });
    gx
}

#[allow(clippy::too_many_arguments)]
fn input_grad_share<T: Element>(
    g: &ConvGeom,
    p: Plan,
    w: &[T],
    gy: &[T],
    first: usize,
    count: usize,
    gx: &mut [T],
) {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    let a = MatRef::transposed(w, ckk);
    for c0 in (0..count).step_by(p.chunk) {
        let gi = p.chunk.min(count - c0);
        let cols = gi * ohw;
        let mut dy = scratch::lend::<T>(if gi == 1 { 0 } else { g.cout * cols });
        let b = if gi == 1 {
            MatRef::rows(&gy[(first + c0) * g.out_image()..][..g.out_image()], ohw)
        } else {
            gather_rows(g, gy, first + c0, gi, &mut dy, cols);
            MatRef::rows(&dy, cols)
        };
        let x0 = c0 * g.in_image();
        if gi == 1 && g.is_pointwise() {
            // SAFETY: a is ckk x cout (w transposed), b is cout x ohw.
            unsafe {
                gemm(
                    ckk,
                    ohw,
                    g.cout,
                    &mut gx[x0..],
                    ohw,
                    false,
                    a,
                    b,
                    p.gemm_threads,
                )
            };
        } else {
            let mut dcol = scratch::lend::<T>(ckk * cols);
            // SAFETY: a is ckk x cout, b is cout x cols.
            unsafe {
                gemm(
                    ckk,
                    cols,
                    g.cout,
                    &mut dcol,
                    cols,
                    false,
                    a,
                    b,
                    p.gemm_threads,
                )
            };
            col2im_images(g, &mut dcol, cols, gi, &mut gx[x0..], g.in_image());
            scratch::give_back(dcol);
        }
        scratch::give_back(dy);
    }
}

/// Gradient with respect to the kernel of a conv that is not cut, `gy im2col(x)^T` summed
/// over the batch, OIHW.
pub(crate) fn weight_grad<T: Element>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let p = plan(g);
    let len = g.cout * g.ckk();
    let accumulators = (0..g.n.div_ceil(p.share)).map(|_| scratch::lend::<T>(len));
    let partials = for_each_share(g, p, accumulators, |i0, count, mut acc| {
        weight_grad_share(g, p, x, gy, i0, count, &mut acc[..len]);
        acc
    });
    let gw = sum_parts(&partials, len);
    partials.into_iter().for_each(scratch::give_back);
    gw
}

#[allow(clippy::too_many_arguments)]
fn weight_grad_share<T: Element>(
    g: &ConvGeom,
    p: Plan,
    x: &[T],
    gy: &[T],
    first: usize,
    count: usize,
    gw: &mut [T],
) {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    if let (1, Some(rows)) = (p.chunk, band_rows(g)) {
        for j in 0..count {
            let img = &x[(first + j) * g.in_image()..][..g.in_image()];
            let grad = &gy[(first + j) * g.out_image()..][..g.out_image()];
            weight_grad_banded(g, p, (img, grad), gw, rows, j > 0);
        }
        return;
    }
    for (k, c0) in (0..count).step_by(p.chunk).enumerate() {
        let gi = p.chunk.min(count - c0);
        let cols = gi * ohw;
        let ld = gradient_ld::<T>(cols);
        // One image with unpadded rows is used in place, else copied.
        let in_place = gi == 1 && ld == cols;
        let direct = in_place && g.is_pointwise();
        let mut col = scratch::lend::<T>(if direct { 0 } else { ckk * ld });
        let mut dy = scratch::lend::<T>(if in_place { 0 } else { g.cout * ld });
        let b = if direct {
            MatRef::transposed(&x[(first + c0) * g.in_image()..][..g.in_image()], ohw)
        } else {
            unfold(g, x, first + c0, gi, &mut col, ld);
            MatRef::transposed(&col, ld)
        };
        let a = if in_place {
            MatRef::rows(&gy[(first + c0) * g.out_image()..][..g.out_image()], ohw)
        } else {
            gather_rows(g, gy, first + c0, gi, &mut dy, ld);
            MatRef::rows(&dy, ld)
        };
        // SAFETY: a is cout x cols (gy), b is cols x ckk (col transposed).
        unsafe { gemm(g.cout, ckk, cols, gw, ckk, k > 0, a, b, p.gemm_threads) };
        scratch::give_back(dy);
        scratch::give_back(col);
    }
}

/// One image's kernel gradient a band of `rows` output rows at a time (see [`band_rows`]),
/// added into `gw` if `accumulate`, else written.
fn weight_grad_banded<T: Element>(
    g: &ConvGeom,
    p: Plan,
    (x, gy): (&[T], &[T]),
    gw: &mut [T],
    rows: usize,
    accumulate: bool,
) {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    let ld = gradient_ld::<T>(rows * g.ow);
    let mut col = scratch::lend::<T>(ckk * ld);
    let mut dy = scratch::lend::<T>(g.cout * ld);
    for (k, y0) in (0..g.oh).step_by(rows).enumerate() {
        let y1 = (y0 + rows).min(g.oh);
        let width = (y1 - y0) * g.ow;
        im2col_band(g, x, &mut col, ld, (y0, y1));
        for (co, row) in dy.chunks_exact_mut(ld).take(g.cout).enumerate() {
            row[..width].copy_from_slice(&gy[co * ohw + y0 * g.ow..][..width]);
        }
        let (a, b) = (MatRef::rows(&dy, ld), MatRef::transposed(&col, ld));
        let add = accumulate || k > 0;
        // SAFETY: a is cout x width (the band of gy), b is width x ckk (col transposed).
        unsafe { gemm(g.cout, ckk, width, gw, ckk, add, a, b, p.gemm_threads) };
    }
    scratch::give_back(dy);
    scratch::give_back(col);
}
