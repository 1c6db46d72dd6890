//! Convolution forward, input gradient and weight gradient as im2col/col2im + GEMM.
//!
//! The batch is split into one contiguous share of images per thread, each running
//! single-threaded GEMMs (no synchronisation inside a layer); a batch smaller than the pool
//! runs image by image with the GEMM itself split across threads. Within a share, images
//! go through in chunks side by side in one column matrix so that small feature maps
//! (7x7 at ResNet's last stage) still give the GEMM a wide enough N, and an image whose
//! column matrix is too wide for the cache goes through in bands of output rows. Stride-1
//! 3x3 convs on larger maps go to [`winograd`] instead, and small maps where padding is a
//! large share of the products to [`taps`].

pub(crate) use super::im2col::ConvGeom;
use super::im2col::{col2im_images, im2col_band, im2col_images};
use super::{gemm, give, sum_parts, take, taps, winograd, winograd4, zeros, Element, MatRef};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Fewest GEMM columns (output pixels) worth one call; smaller maps batch images together.
/// 256 against 512 measured AlexNet@224 training 69.1-69.9 -> 70.0-71.6 img/s, the ResNet
/// rows equal or slightly faster; 128 and 1024 were slower.
const MIN_COLS: usize = 256;
/// Largest column matrix a chunk may unfold into (elements), to bound scratch memory.
const MAX_COL: usize = 1 << 22;
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
    let split_batch = crate::ops::cpu_kernels().conv_split_batch && g.n >= threads;
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
fn shares<I: Send, R: Send>(
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
fn gather_rows<T: Element>(
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
fn gradient_ld<T>(cols: usize) -> usize {
    super::padded_stride::<T>(cols)
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

/// Whether [`taps`] computes `g` (small maps where padding is a large share of the products).
fn use_taps(g: &ConvGeom) -> bool {
    crate::ops::cpu_kernels().taps && taps::applies(g)
}

/// Whether `g` runs through Winograd F(2x2, 3x3): it applies, it is switched on, the batch
/// splits across the threads (its GEMMs run single-threaded, one share each), and
/// [`use_winograd4`] does not take it.
fn use_winograd(g: &ConvGeom) -> bool {
    let k = crate::ops::cpu_kernels();
    k.winograd
        && k.conv_split_batch
        && g.n >= rayon::current_num_threads()
        && winograd::applies(g)
        && !use_winograd4(g)
}

/// Whether `g` runs through Winograd F(4x4, 3x3) (see [`winograd4::applies`]).
fn use_winograd4(g: &ConvGeom) -> bool {
    let k = crate::ops::cpu_kernels();
    k.winograd && k.winograd_4x4 && k.conv_split_batch && winograd4::applies(g)
}

/// Whether either Winograd path runs `g` (their kernel transforms read either layout).
fn any_winograd(g: &ConvGeom) -> bool {
    use_winograd(g) || use_winograd4(g)
}

/// The live taps `(k0.., k0..)` of a filter of `g` cut to `cut` (see [`ConvGeom::trimmed`]),
/// tap by tap: `(cut tap, tap of g)`.
fn live_taps(g: &ConvGeom, cut: &ConvGeom, k0: usize) -> impl Iterator<Item = (usize, usize)> {
    let (kw, cut_kw) = (g.kw, cut.kw);
    (0..cut.kh * cut.kw).map(move |t| (t, (k0 + t / cut_kw) * kw + k0 + t % cut_kw))
}

/// `w[.., .., k0.., k0..]` cut to the kernel size of `cut` (see [`ConvGeom::trimmed`]), in
/// the kernel's `layout`.
fn cut_kernel<T: Element>(
    g: &ConvGeom,
    cut: &ConvGeom,
    k0: usize,
    w: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    // Filled by index, in parallel: reading the whole kernel is what this costs (9.4 MB
    // for a 512-channel 3x3), as much as the GEMM it saves when done on one thread.
    let (k2, c2) = (g.kh * g.kw, cut.kh * cut.kw);
    let mut out = zeros(g.cout * g.cin * c2);
    let filters = w.par_chunks_exact(g.cin * k2);
    let cuts = out.par_chunks_exact_mut(g.cin * c2);
    filters.zip(cuts).for_each(|(filter, dst)| {
        if layout == KernelLayout::Ohwi {
            // Tap by tap: a row of `cin` values per live tap.
            for (t, tap) in live_taps(g, cut, k0) {
                dst[t * g.cin..][..g.cin].copy_from_slice(&filter[tap * g.cin..][..g.cin]);
            }
            return;
        }
        if c2 == 1 {
            // One tap (3x3 kernels on 1x1 maps): a plain strided gather, which the general
            // loops below, bounds unknown, ran several times slower.
            let tap = k0 * g.kw + k0;
            for (plane, d) in filter.chunks_exact(k2).zip(dst) {
                *d = plane[tap];
            }
            return;
        }
        for (plane, dst) in filter.chunks_exact(k2).zip(dst.chunks_exact_mut(c2)) {
            for ky in 0..cut.kh {
                for kx in 0..cut.kw {
                    dst[ky * cut.kw + kx] = plane[(k0 + ky) * g.kw + k0 + kx];
                }
            }
        }
    });
    out
}

/// The kernel gradient of `g` from that of its cut kernel: zero at the cut taps (both in
/// `layout`).
fn uncut_kernel<T: Element>(
    g: &ConvGeom,
    cut: &ConvGeom,
    k0: usize,
    gw: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    let (k2, c2) = (g.kh * g.kw, cut.kh * cut.kw);
    let len = g.cout * g.ckk();
    // One cut filter per filter, so that every filter below is written.
    assert_eq!(gw.len(), g.cout * g.cin * c2, "uncut_kernel: gradient size");
    let mut out = Vec::with_capacity(len);
    // Zeroed and filled a filter at a time, while it is in the cache: zeroing the whole
    // 9.4 MB gradient of a 512-channel 3x3 first, then copying the live taps in, was ~1.6 %
    // of a ResNet18@32 training step on its own.
    let filters = out.spare_capacity_mut()[..len].par_chunks_exact_mut(g.cin * k2);
    filters
        .zip(gw.par_chunks_exact(g.cin * c2))
        .for_each(|(filter, part)| {
            filter.fill(MaybeUninit::new(T::ZERO));
            if layout == KernelLayout::Ohwi {
                for (t, tap) in live_taps(g, cut, k0) {
                    let dst = &mut filter[tap * g.cin..][..g.cin];
                    for (d, &v) in dst.iter_mut().zip(&part[t * g.cin..][..g.cin]) {
                        d.write(v);
                    }
                }
                return;
            }
            if c2 == 1 {
                // One tap: a plain strided scatter (as in `cut_kernel`).
                let tap = k0 * g.kw + k0;
                for (plane, &v) in filter.chunks_exact_mut(k2).zip(part) {
                    plane[tap].write(v);
                }
                return;
            }
            for (plane, part) in filter.chunks_exact_mut(k2).zip(part.chunks_exact(c2)) {
                for (ky, row) in part.chunks_exact(cut.kw).enumerate() {
                    let dst = &mut plane[(k0 + ky) * g.kw + k0..][..cut.kw];
                    for (d, &v) in dst.iter_mut().zip(row) {
                        d.write(v);
                    }
                }
            }
        });
    // SAFETY: the filters above cover all `len` values (`len` is a multiple of a filter),
    // each was paired with a cut filter (asserted) and zeroed whole before its taps.
    unsafe { out.set_len(len) };
    out
}

/// How a kernel's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelLayout {
    /// PyTorch's `[co][ci][ky][kx]`: what im2col and Winograd multiply.
    Oihw,
    /// Tap by tap, `[co][ky][kx][ci]`: how the models hold their kernels, and what [`taps`]
    /// multiplies in place. Held this way, the tap-by-tap layers' kernels and gradients need
    /// no copies between layouts (two passes over each kernel a step: 7 % of ResNet18's and
    /// 9 % of ResNet34's training step at 64 px by `perf`); the im2col and Winograd layers,
    /// whose kernels are 4-6x smaller there, are copied to and from OIHW instead.
    Ohwi,
}

impl KernelLayout {
    /// Where `w[co][ci][tap]` of a kernel of `cin` input channels and `k2` taps sits.
    pub(crate) fn index(
        self,
        (co, ci, tap): (usize, usize, usize),
        cin: usize,
        k2: usize,
    ) -> usize {
        match self {
            KernelLayout::Oihw => (co * cin + ci) * k2 + tap,
            KernelLayout::Ohwi => (co * k2 + tap) * cin + ci,
        }
    }
}

/// A kernel the forward pass prepared, kept for the input gradient so that it is not
/// prepared twice a step: cut to its live taps (see [`ConvGeom::trimmed`]; a pass over all
/// 9.4 MB of a 512-channel 3x3, ~3 % of ResNet18@32's training step when done twice),
/// laid out as the chosen path multiplies it, or both.
pub(crate) struct Prepared<T> {
    /// The geometry the input gradient runs with: the cut one where the conv is trimmed.
    pub(crate) geom: ConvGeom,
    pub(crate) kernel: Vec<T>,
    /// How `kernel` is laid out: as the forward pass's path multiplied it.
    pub(crate) layout: KernelLayout,
}

/// The layout a pass of `g` multiplies a kernel that comes in `layout` in: tap by tap for
/// [`taps`], either for Winograd (`winograd`: its kernel transforms read and write both),
/// OIHW for im2col.
fn pass_layout(g: &ConvGeom, winograd: bool, layout: KernelLayout) -> KernelLayout {
    match (use_taps(g), winograd) {
        (true, _) => KernelLayout::Ohwi,
        (false, true) => layout,
        (false, false) => KernelLayout::Oihw,
    }
}

/// Whether the input gradient of `g` runs through Winograd (as the forward conv of
/// [`transposed_geometry`]).
fn input_grad_by_winograd(g: &ConvGeom) -> bool {
    transposed_geometry(g).is_some_and(|t| any_winograd(&t))
}

/// The kernel family each pass of `g` runs, `[forward, input gradient, weight gradient]`:
/// 0 im2col + GEMM, 1 Winograd F(2x2, 3x3), 2 tap by tap, 3 Winograd F(4x4, 3x3) (for
/// the names of timed ops).
pub(crate) fn paths(g: &ConvGeom) -> [usize; 3] {
    let geom = g.trimmed().map_or(*g, |(cut, _)| cut);
    if use_taps(&geom) {
        return [2; 3];
    }
    let family = |g: &ConvGeom| match (use_winograd4(g), use_winograd(g)) {
        (true, _) => 3,
        (false, true) => 1,
        (false, false) => 0,
    };
    let (own, input) = (
        family(&geom),
        transposed_geometry(&geom).map_or(0, |t| family(&t)),
    );
    [own, input, own]
}

/// Whether a kernel of `g` in `layout` must be copied into `wanted`: not where they are
/// the same, nor for a 1x1 kernel (both layouts are then `[co][ci]`).
fn relayout(g: &ConvGeom, layout: KernelLayout, wanted: KernelLayout) -> bool {
    layout != wanted && g.kh * g.kw > 1
}

/// `w` (of `g`, in layout `from`) in the other layout: a new vector where it is `kept`, a
/// scratch buffer from [`take`] (to be given back) where it is used once.
fn laid_out<T: Element>(g: &ConvGeom, w: &[T], from: KernelLayout, kept: bool) -> Vec<T> {
    match (from, kept) {
        (KernelLayout::Oihw, true) => taps::taps_major(g, w),
        (KernelLayout::Oihw, false) => taps::taps_major_scratch(g, w),
        (KernelLayout::Ohwi, true) => taps::taps_minor(g, w),
        (KernelLayout::Ohwi, false) => taps::taps_minor_scratch(g, w),
    }
}

/// `y = conv(x, w)` for an NCHW batch and a kernel in `layout`, both contiguous; with
/// `keep`, also the kernel it prepared where it prepared one (cut, or laid out for the
/// path), for [`input_grad_prepared`].
pub(crate) fn forward<T: Element>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    layout: KernelLayout,
    keep: bool,
) -> (Vec<T>, Option<Prepared<T>>) {
    let (geom, cut) = match g.trimmed() {
        Some((cut, k0)) => (cut, Some(cut_kernel(g, &cut, k0, w, layout))),
        None => (*g, None),
    };
    let wanted = pass_layout(&geom, any_winograd(&geom), layout);
    let copied = relayout(&geom, layout, wanted);
    let relaid = copied.then(|| laid_out(&geom, cut.as_deref().unwrap_or(w), layout, keep));
    let prepared = relaid.or(cut);
    let kernel = prepared.as_deref().unwrap_or(w);
    let y = match use_taps(&geom) {
        true => taps::forward(&geom, x, kernel),
        false => forward_untrimmed(&geom, x, kernel, wanted),
    };
    if !keep {
        // A scratch copy goes back to the pool (a cut kernel is a vector of its own).
        if let (true, Some(kernel)) = (copied, prepared) {
            give(kernel);
        }
        return (y, None);
    }
    let prepared = prepared.map(|kernel| Prepared {
        geom,
        kernel,
        layout: wanted,
    });
    (y, prepared)
}

/// [`input_grad`] from a kernel [`forward`] prepared.
pub(crate) fn input_grad_prepared<T: Element>(p: Prepared<T>, gy: &[T]) -> Vec<T> {
    input_grad(&p.geom, &p.kernel, p.layout, gy)
}

/// Gradient with respect to the input, for a kernel in `layout`.
pub(crate) fn input_grad<T: Element>(
    g: &ConvGeom,
    w: &[T],
    layout: KernelLayout,
    gy: &[T],
) -> Vec<T> {
    let (geom, cut) = match g.trimmed() {
        Some((cut, k0)) => (cut, Some(cut_kernel(g, &cut, k0, w, layout))),
        None => (*g, None),
    };
    let wanted = pass_layout(&geom, input_grad_by_winograd(&geom), layout);
    let kernel = cut.as_deref().unwrap_or(w);
    let relaid = relayout(&geom, layout, wanted).then(|| laid_out(&geom, kernel, layout, false));
    let kernel = relaid.as_deref().unwrap_or(kernel);
    let gx = match use_taps(&geom) {
        true => taps::input_grad(&geom, kernel, gy),
        false => input_grad_untrimmed(&geom, kernel, wanted, gy),
    };
    if let Some(k) = relaid {
        give(k);
    }
    gx
}

/// Gradient with respect to the kernel, in `layout`.
pub(crate) fn weight_grad<T: Element>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    if let Some((cut, k0)) = g.trimmed() {
        let gw = weight_grad(&cut, x, gy, layout);
        return uncut_kernel(g, &cut, k0, &gw, layout);
    }
    let wanted = pass_layout(g, any_winograd(g), layout);
    let gw = match use_taps(g) {
        true => taps::weight_grad(g, x, gy),
        false => weight_grad_untrimmed(g, x, gy, wanted),
    };
    match relayout(g, layout, wanted) {
        true => laid_out(g, &gw, wanted, true),
        false => gw,
    }
}

/// `y = conv(x, w)` through Winograd (a kernel in `layout`) or im2col (OIHW), for a conv
/// that is not trimmed.
fn forward_untrimmed<T: Element>(g: &ConvGeom, x: &[T], w: &[T], layout: KernelLayout) -> Vec<T> {
    if use_winograd4(g) {
        return winograd4::forward(g, x, w, layout);
    }
    if use_winograd(g) {
        return winograd::forward(g, x, w, layout);
    }
    assert_eq!(layout, KernelLayout::Oihw, "im2col: OIHW kernels only");
    let p = plan(g);
    let mut y = zeros(g.n * g.out_image());
    let pieces = y.chunks_mut(p.share * g.out_image());
    shares(g, p, pieces, |i0, count, out| {
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
        let mut col = take::<T>(if direct { 0 } else { ckk * cols });
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
            let mut tmp = take::<T>(g.cout * cols);
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
            give(tmp);
        }
        give(col);
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
    let mut col = take::<T>(g.ckk() * rows * g.ow);
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
    give(col);
}

/// Gradient with respect to the input for a conv that is not trimmed: where Winograd
/// applies to it, the forward conv of `gy` with the flipped, transposed kernel (in
/// `layout`), else `col2im(w^T gy)` (OIHW).
fn input_grad_untrimmed<T: Element>(
    g: &ConvGeom,
    w: &[T],
    layout: KernelLayout,
    gy: &[T],
) -> Vec<T> {
    if let Some(t) = transposed_geometry(g) {
        // The forward's rule holds here too: on maps under 16x16 Winograd needs 64+
        // channels (at 8x8 with 64, batch 32, it runs 454 GFLOP/s against col2im's 316
        // since its transforms fill their lanes with 4 tile rows; with 128, ResNet's layer
        // 2 at 64 px, it ran 405-407 against 358-364 before that), and at 224 px ResNet's
        // layer 3 (256 channels, 14x14) runs 2x faster.
        if any_winograd(&t) {
            let flipped = flipped_transposed(g, w, layout);
            return forward_untrimmed(&t, gy, &flipped, KernelLayout::Oihw);
        }
    }
    assert_eq!(layout, KernelLayout::Oihw, "col2im: OIHW kernels only");
    if split_input_channels(g) {
        return input_grad_by_input_channels(g, w, gy);
    }
    let p = plan(g);
    let mut gx = zeros(g.n * g.in_image());
    let pieces = gx.chunks_mut(p.share * g.in_image());
    shares(g, p, pieces, |i0, count, out| {
        input_grad_share(g, p, w, gy, i0, count, out)
    });
    gx
}

/// [`input_grad`] with each thread taking a range of input channels over the whole batch:
/// `col2im(w[.., c0..c1]^T gy)`, so that each thread packs only its share of a large kernel
/// (see [`split_input_channels`]); the ranges' planes are copied into place afterwards.
fn input_grad_by_input_channels<T: Element>(g: &ConvGeom, w: &[T], gy: &[T]) -> Vec<T> {
    let (k2, cols, hw) = (g.kh * g.kw, g.n * g.ohw(), g.h * g.w);
    let (ranges, parts) = by_input_channels(g, gy, |sub, c0, b| {
        let mut dcol = take::<T>(sub.ckk() * cols);
        let a = MatRef::transposed(&w[c0 * k2..], g.ckk());
        // SAFETY: a is sub.ckk x cout (columns c0 * k2.. of w, transposed), b is cout x cols.
        unsafe { gemm(sub.ckk(), cols, g.cout, &mut dcol, cols, false, a, b, 1) };
        let mut part = zeros(g.n * sub.in_image());
        col2im_images(sub, &mut dcol, cols, g.n, &mut part, sub.in_image());
        give(dcol);
        part
    });
    join_ranges(g.n, hw, &ranges, &parts)
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

/// For a stride-1 conv, the forward conv that computes its input gradient: `gy` (cout
/// channels, oh x ow) padded by `k - 1 - pad` and correlated with the flipped kernel gives
/// back cin channels of h x w. `None` where that does not hold.
fn transposed_geometry(g: &ConvGeom) -> Option<ConvGeom> {
    let fits = g.stride == 1 && g.kh == g.kw && g.pad < g.kh;
    fits.then(|| ConvGeom {
        n: g.n,
        cin: g.cout,
        h: g.oh,
        w: g.ow,
        cout: g.cin,
        kh: g.kh,
        kw: g.kw,
        stride: 1,
        pad: g.kh - 1 - g.pad,
        oh: g.h,
        ow: g.w,
    })
}

/// `w'[ci][co][ky][kx] = w[co][ci][kh-1-ky][kw-1-kx]` (OIHW) from `w` in `layout`: the
/// kernel of [`transposed_geometry`].
fn flipped_transposed<T: Element>(g: &ConvGeom, w: &[T], layout: KernelLayout) -> Vec<T> {
    let k2 = g.kh * g.kw;
    let mut out = zeros(w.len());
    // In parallel: on one thread it left the other core idle.
    let filters = out.par_chunks_exact_mut(g.cout * k2);
    filters.enumerate().for_each(|(ci, filter)| {
        for (co, dst) in filter.chunks_exact_mut(k2).enumerate() {
            for (tap, d) in dst.iter_mut().enumerate() {
                *d = w[layout.index((co, ci, k2 - 1 - tap), g.cin, k2)];
            }
        }
    });
    out
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
        let mut dy = take::<T>(if gi == 1 { 0 } else { g.cout * cols });
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
            let mut dcol = take::<T>(ckk * cols);
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
            give(dcol);
        }
        give(dy);
    }
}

/// Gradient with respect to the kernel of a conv that is not trimmed, through Winograd (in
/// `layout`), or `gy im2col(x)^T` summed over the batch (OIHW).
fn weight_grad_untrimmed<T: Element>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    if use_winograd4(g) {
        return winograd4::weight_grad(g, x, gy, layout);
    }
    if use_winograd(g) {
        return winograd::weight_grad(g, x, gy, layout);
    }
    assert_eq!(layout, KernelLayout::Oihw, "im2col: OIHW kernels only");
    if split_input_channels(g) {
        return weight_grad_by_input_channels(g, x, gy);
    }
    let p = plan(g);
    let len = g.cout * g.ckk();
    let accumulators = (0..g.n.div_ceil(p.share)).map(|_| take::<T>(len));
    let partials = shares(g, p, accumulators, |i0, count, mut acc| {
        weight_grad_share(g, p, x, gy, i0, count, &mut acc[..len]);
        acc
    });
    let gw = sum_parts(&partials, len);
    partials.into_iter().for_each(give);
    gw
}

/// Whether the weight and input gradients split the input channels across the threads
/// rather than the batch: where the kernel is larger than the output gradient (`ckk > n*ohw`:
/// ResNet's last stages, 512 x 4608 kernels over 2x2-7x7 maps), each thread packing the whole
/// kernel, or writing a whole partial kernel gradient to be summed, moved more memory than
/// the GEMMs did work. One thread's column matrix must fit in [`MAX_COL`].
fn split_input_channels(g: &ConvGeom) -> bool {
    let threads = rayon::current_num_threads().max(1);
    crate::ops::cpu_kernels().conv_split_batch
        && threads > 1
        && g.cin >= threads
        && g.ckk() > g.n * g.ohw()
        && g.kh * g.kw * g.cin.div_ceil(threads) * g.n * g.ohw() <= MAX_COL
}

/// [`weight_grad`] with each thread taking a range of input channels over the whole batch:
/// `gw[.., c0..c1] = gy im2col(x[.., c0..c1])^T`, one GEMM each, no partial sums.
fn weight_grad_by_input_channels<T: Element>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let (k2, cols, hw) = (g.kh * g.kw, g.n * g.ohw(), g.h * g.w);
    let ld = gradient_ld::<T>(cols);
    let (ranges, parts) = by_input_channels(g, gy, |sub, c0, a| {
        let mut col = take::<T>(sub.ckk() * ld);
        im2col_images(sub, &x[c0 * hw..], g.in_image(), g.n, &mut col, ld);
        let mut part = take::<T>(g.cout * sub.ckk());
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
        give(col);
        part
    });
    let gw = join_ranges(g.cout, k2, &ranges, &parts);
    parts.into_iter().for_each(give);
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
    let mut dy = take::<T>(g.cout * ld);
    gather_rows(g, gy, 0, g.n, &mut dy, ld);
    let ranges: Vec<(usize, usize)> = (0..g.cin)
        .step_by(per)
        .map(|c0| (c0, per.min(g.cin - c0)))
        .collect();
    let results = ranges
        .par_iter()
        .map(|&(c0, cin)| f(&ConvGeom { cin, ..*g }, c0, MatRef::rows(&dy, ld)))
        .collect();
    give(dy);
    (ranges, results)
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
        let mut col = take::<T>(if direct { 0 } else { ckk * ld });
        let mut dy = take::<T>(if in_place { 0 } else { g.cout * ld });
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
        give(dy);
        give(col);
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
    let mut col = take::<T>(ckk * ld);
    let mut dy = take::<T>(g.cout * ld);
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
    give(dy);
    give(col);
}
