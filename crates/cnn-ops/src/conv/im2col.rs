//! Unfolding images into the column matrix of a convolution (im2col) and folding
//! gradients back (col2im).

use super::geometry::{ConvGeom, Span};
use crate::cpu::{scratch, Element};
/// [`im2col`] of `count` images side by side in `col` (rows `ld` apart, image `j`'s columns
/// from `j * ohw`), image `j` being `x[j * stride..]`.
pub(crate) fn im2col_images<T: Element>(
    g: &ConvGeom,
    x: &[T],
    stride: usize,
    count: usize,
    col: &mut [T],
    ld: usize,
) {
    if g.is_same_size() && count > 1 {
        return im2col_same_size_images(g, x, stride, count, col, ld);
    }
    if let Some(sources) = tap_sources(g) {
        let (hw, ohw) = (g.h * g.w, g.ohw());
        for j in 0..count {
            let img = &x[j * stride..][..g.in_image()];
            for (ci, plane) in img.chunks_exact(hw).enumerate() {
                let taps = sources.chunks_exact(ohw).enumerate();
                for (tap, from) in taps {
                    let row = ci * g.kh * g.kw + tap;
                    let dst = &mut col[row * ld + j * ohw..][..ohw];
                    for (d, &s) in dst.iter_mut().zip(from) {
                        *d = plane.get(s as usize).copied().unwrap_or(T::ZERO);
                    }
                }
            }
        }
        return;
    }
    for j in 0..count {
        let img = &x[j * stride..][..g.in_image()];
        im2col(g, img, &mut col[j * g.ohw()..], ld);
    }
}

/// Largest output map (pixels) that [`tap_sources`] tabulates.
const TABLED_OUTPUT: usize = 256;

/// For a conv that is not same-size and has a small output (strided convs on ResNet's maps
/// at 32-64 px: 8x8 down to 1x1), the input pixel each output pixel reads for each kernel
/// tap, `kh * kw` rows of `ohw`, `u32::MAX` where it reads padding. With it, im2col and
/// col2im gather and scatter whole rows of taps; row by row, their per-row setup cost as
/// much as the GEMM on 4x4 outputs (ResNet18 at 64 px, batch 32, forward: layer 3's first
/// conv 188-336 -> 366-386 GFLOP/s, layer 4's 227-239 -> 367-374). `None` otherwise.
fn tap_sources(g: &ConvGeom) -> Option<Vec<u32>> {
    if g.is_same_size() || g.ohw() > TABLED_OUTPUT || g.h * g.w >= u32::MAX as usize {
        return None;
    }
    let mut sources = Vec::with_capacity(g.kh * g.kw * g.ohw());
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let iy = (oy * g.stride + ky).checked_sub(g.pad).filter(|&y| y < g.h);
                    let ix = (ox * g.stride + kx).checked_sub(g.pad).filter(|&x| x < g.w);
                    sources.push(match (iy, ix) {
                        (Some(iy), Some(ix)) => (iy * g.w + ix) as u32,
                        _ => u32::MAX,
                    });
                }
            }
        }
    }
    Some(sources)
}

/// [`col2im`] of `count` images side by side in `col`, added into image `j` at
/// `gx[j * stride..]`.
pub(crate) fn col2im_images<T: Element>(
    g: &ConvGeom,
    col: &mut [T],
    ld: usize,
    count: usize,
    gx: &mut [T],
    stride: usize,
) {
    if g.is_same_size() && count > 1 {
        return col2im_same_size_images(g, col, ld, count, gx, stride);
    }
    if let Some(sources) = tap_sources(g) {
        let (hw, ohw) = (g.h * g.w, g.ohw());
        for j in 0..count {
            let img = &mut gx[j * stride..][..g.in_image()];
            for (ci, plane) in img.chunks_exact_mut(hw).enumerate() {
                let taps = sources.chunks_exact(ohw).enumerate();
                for (tap, to) in taps {
                    let row = ci * g.kh * g.kw + tap;
                    let src = &col[row * ld + j * ohw..][..ohw];
                    for (&v, &t) in src.iter().zip(to) {
                        if let Some(d) = plane.get_mut(t as usize) {
                            *d += v;
                        }
                    }
                }
            }
        }
        return;
    }
    for j in 0..count {
        let img = &mut gx[j * stride..][..g.in_image()];
        col2im(g, &mut col[j * g.ohw()..], ld, img);
    }
}

/// Channel `ci` of `count` images as one run of `count * hw` values, `margin` more on either
/// side of the whole (the largest shift): a same-size conv's tap then reads (or adds) its
/// shifted row for every image at once ([`im2col_same_size_images`]). The buffer comes with
/// stale values: the margins are only ever touched at masked pixels, and the runs are filled
/// by the caller.
struct ChannelMajor<T> {
    buf: Vec<T>,
    margin: usize,
    run: usize,
}

impl<T: Element> ChannelMajor<T> {
    fn new(g: &ConvGeom, count: usize) -> Self {
        let (margin, run) = (g.pad * (g.w + 1), count * g.h * g.w);
        let buf = scratch::lend::<T>(g.cin * run + 2 * margin);
        Self { buf, margin, run }
    }

    /// Where channel `ci`'s run starts, shifted by `shift`.
    fn at(&self, ci: usize, shift: isize) -> usize {
        ((self.margin + ci * self.run) as isize + shift) as usize
    }
}

/// For each kernel tap `(ky, kx)` of a same-size conv, its shift from output to input pixel
/// and whether each of `count * ohw` output pixels reads the input (not padding) through it.
fn tap_masks(g: &ConvGeom, count: usize) -> Vec<(isize, Vec<bool>)> {
    let pad = g.pad as isize;
    let inside = |v: isize, len: usize| (0..len as isize).contains(&v);
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for ky in 0..g.kh as isize {
        for kx in 0..g.kw as isize {
            let plane: Vec<bool> = (0..g.oh as isize)
                .flat_map(|oy| (0..g.ow as isize).map(move |ox| (oy, ox)))
                .map(|(oy, ox)| inside(oy + ky - pad, g.h) && inside(ox + kx - pad, g.w))
                .collect();
            let shift = (ky - pad) * g.w as isize + kx - pad;
            taps.push((shift, plane.repeat(count)));
        }
    }
    taps
}

/// [`im2col_images`] for a same-size conv of several images: the images are first copied
/// channel-major ([`ChannelMajor`]), then each column-matrix row is one masked, shifted copy
/// for all images at once. On 2x2-4x4 maps the per-image rows it replaces (16 values or
/// fewer each, between fringe fills) were mostly call overhead. A shift that crosses into
/// the next image or channel lands only on masked pixels.
fn im2col_same_size_images<T: Element>(
    g: &ConvGeom,
    x: &[T],
    stride: usize,
    count: usize,
    col: &mut [T],
    ld: usize,
) {
    let hw = g.h * g.w;
    let mut planes = ChannelMajor::new(g, count);
    for ci in 0..g.cin {
        for j in 0..count {
            let at = planes.at(ci, 0) + j * hw;
            planes.buf[at..at + hw].copy_from_slice(&x[j * stride + ci * hw..][..hw]);
        }
    }
    let taps = tap_masks(g, count);
    for ci in 0..g.cin {
        for (t, (shift, mask)) in taps.iter().enumerate() {
            let row = ci * taps.len() + t;
            let dst = &mut col[row * ld..][..planes.run];
            let src = &planes.buf[planes.at(ci, *shift)..][..planes.run];
            for ((d, &s), &m) in dst.iter_mut().zip(src).zip(mask) {
                *d = if m { s } else { T::ZERO };
            }
        }
    }
    scratch::give_back(planes.buf);
}

/// [`col2im_images`] for a same-size conv of several images: each row is added, masked and
/// shifted, into a channel-major buffer for all images at once ([`ChannelMajor`]), which is
/// then added into the images. Every pixel gets its taps' values in the same order as
/// [`col2im`] would add them.
fn col2im_same_size_images<T: Element>(
    g: &ConvGeom,
    col: &[T],
    ld: usize,
    count: usize,
    gx: &mut [T],
    stride: usize,
) {
    let hw = g.h * g.w;
    let mut planes = ChannelMajor::new(g, count);
    let runs = planes.at(0, 0)..planes.at(g.cin, 0);
    planes.buf[runs].fill(T::ZERO);
    let taps = tap_masks(g, count);
    for ci in 0..g.cin {
        for (t, (shift, mask)) in taps.iter().enumerate() {
            let row = ci * taps.len() + t;
            let src = &col[row * ld..][..planes.run];
            let at = planes.at(ci, *shift);
            let dst = &mut planes.buf[at..at + planes.run];
            for ((d, &s), &m) in dst.iter_mut().zip(src).zip(mask) {
                *d += if m { s } else { T::ZERO };
            }
        }
    }
    for ci in 0..g.cin {
        for j in 0..count {
            let src = &planes.buf[planes.at(ci, 0) + j * hw..][..hw];
            for (d, &s) in gx[j * stride + ci * hw..][..hw].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    scratch::give_back(planes.buf);
}

/// Writes image `x` (cin x h x w) as rows `(ci, ky, kx)` of `ohw` columns into `col`, whose
/// rows are `ld` apart (a chunk of several images sits side by side in one matrix).
pub(crate) fn im2col<T: Element>(g: &ConvGeom, x: &[T], col: &mut [T], ld: usize) {
    if g.is_same_size() {
        let (rows, cols) = g.valid_spans();
        return im2col_same_size(g, x, col, ld, (&rows, &cols));
    }
    im2col_band(g, x, col, ld, (0, g.oh));
}

with_wide_simd! {
    /// [`im2col`] of output rows `[y0, y1)` only, their `(y1 - y0) * ow` columns from the band's
    /// first row, for a conv that is not same-size (see `conv::band_rows`). Built for AVX2
    /// too: its strided gathers (stride-2 stems) took 3.4 % of a one-thread ResNet18@64 step
    /// on an AVX2 machine built for baseline x86-64 and 1.9 % built for x86-64-v3.
    pub(crate) fn im2col_band<T>(
        g: &ConvGeom,
        x: &[T],
        col: &mut [T],
        ld: usize,
        band: Span,
    ) {
        let (y0, y1) = band;
        let (hw, ow) = (g.h * g.w, g.ow);
        let (rows, cols) = g.valid_spans();
        let width = (y1 - y0) * ow;
        for ci in 0..g.cin {
            let plane = &x[ci * hw..(ci + 1) * hw];
            for (ky, &(oy_lo, oy_hi)) in rows.iter().enumerate() {
                let (lo, hi) = (oy_lo.clamp(y0, y1), oy_hi.clamp(y0, y1));
                for (kx, &(ox_lo, ox_hi)) in cols.iter().enumerate() {
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    let dst = &mut col[row * ld..row * ld + width];
                    dst[..(lo - y0) * ow].fill(T::ZERO);
                    dst[(hi - y0) * ow..].fill(T::ZERO);
                    for oy in lo..hi {
                        let iy = oy * g.stride + ky - g.pad;
                        let out = &mut dst[(oy - y0) * ow..(oy - y0 + 1) * ow];
                        out[..ox_lo].fill(T::ZERO);
                        out[ox_hi..].fill(T::ZERO);
                        if ox_lo < ox_hi {
                            let x0 = iy * g.w + ox_lo * g.stride + kx - g.pad;
                            let out = &mut out[ox_lo..ox_hi];
                            if g.stride == 1 {
                                out.copy_from_slice(&plane[x0..x0 + out.len()]);
                            } else {
                                // Indexing, not `step_by`: its setup divides, per row.
                                for (i, o) in out.iter_mut().enumerate() {
                                    *o = plane[x0 + i * g.stride];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One kernel tap `(ky, kx)` of a same-size conv ([`ConvGeom::is_same_size`]): the shift
/// `j -> j + shift` from output to input pixel, and the linear range `[lo, hi)` of output
/// pixels from its first valid one to its last (fringe columns between them included;
/// empty if none is valid).
fn same_size_tap(g: &ConvGeom, (ky, kx): (usize, usize), ys: Span, xs: Span) -> (isize, Span) {
    let pad = g.pad as isize;
    let shift = (ky as isize - pad) * g.w as isize + kx as isize - pad;
    let linear = match ys.0 < ys.1 && xs.0 < xs.1 {
        true => (ys.0 * g.ow + xs.0, (ys.1 - 1) * g.ow + xs.1),
        false => (0, 0),
    };
    (shift, linear)
}

/// Zeroes columns `[0, lo)` and `[hi, ow)` of output rows `ys` in a column-matrix row.
#[inline(always)]
fn zero_fringe<T: Element>(dst: &mut [T], ow: usize, ys: Span, (lo, hi): Span) {
    for oy in ys.0..ys.1 {
        let line = &mut dst[oy * ow..(oy + 1) * ow];
        for v in &mut line[..lo] {
            *v = T::ZERO;
        }
        for v in &mut line[hi..] {
            *v = T::ZERO;
        }
    }
}

/// [`im2col`] for a same-size conv: one shifted copy per row, then zeros written over the
/// padding's rows and fringe columns. On 8x8-16x16 maps the per-output-row copies and
/// fills it replaces were mostly call overhead.
fn im2col_same_size<T: Element>(
    g: &ConvGeom,
    x: &[T],
    col: &mut [T],
    ld: usize,
    spans: (&[Span], &[Span]),
) {
    let (hw, ow) = (g.h * g.w, g.ow);
    let (rows, cols) = spans;
    for ci in 0..g.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for (ky, &ys) in rows.iter().enumerate() {
            for (kx, &xs) in cols.iter().enumerate() {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld..row * ld + g.ohw()];
                let (shift, (lo, hi)) = same_size_tap(g, (ky, kx), ys, xs);
                if lo == hi {
                    dst.fill(T::ZERO);
                    continue;
                }
                let src = (lo as isize + shift) as usize;
                dst[lo..hi].copy_from_slice(&plane[src..src + (hi - lo)]);
                dst[..ys.0 * ow].fill(T::ZERO);
                dst[ys.1 * ow..].fill(T::ZERO);
                zero_fringe(dst, ow, ys, xs);
            }
        }
    }
}

/// Adds the column-matrix gradient `col` (rows `ld` apart) into image gradient `gx`, the
/// adjoint of [`im2col`]. `col` is scratch: a same-size conv zeroes its fringe columns.
pub(crate) fn col2im<T: Element>(g: &ConvGeom, col: &mut [T], ld: usize, gx: &mut [T]) {
    let (hw, ow) = (g.h * g.w, g.ow);
    let (rows, cols) = g.valid_spans();
    if g.is_same_size() {
        return col2im_same_size(g, col, ld, gx, (&rows, &cols));
    }
    for ci in 0..g.cin {
        let plane = &mut gx[ci * hw..(ci + 1) * hw];
        for (ky, &(oy_lo, oy_hi)) in rows.iter().enumerate() {
            for (kx, &(ox_lo, ox_hi)) in cols.iter().enumerate() {
                if ox_lo >= ox_hi {
                    continue;
                }
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &col[row * ld..row * ld + g.ohw()];
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ky - g.pad;
                    let x0 = iy * g.w + ox_lo * g.stride + kx - g.pad;
                    let src = &src[oy * ow + ox_lo..oy * ow + ox_hi];
                    if g.stride == 1 {
                        for (d, v) in plane[x0..x0 + src.len()].iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (i, v) in src.iter().enumerate() {
                            plane[x0 + i * g.stride] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// [`col2im`] for a same-size conv: the fringe columns of each row are zeroed, so that the
/// whole linear range adds in one pass (a zero added leaves the gradient exact).
fn col2im_same_size<T: Element>(
    g: &ConvGeom,
    col: &mut [T],
    ld: usize,
    gx: &mut [T],
    spans: (&[Span], &[Span]),
) {
    let (hw, ow) = (g.h * g.w, g.ow);
    let (rows, cols) = spans;
    for ci in 0..g.cin {
        let plane = &mut gx[ci * hw..(ci + 1) * hw];
        for (ky, &ys) in rows.iter().enumerate() {
            for (kx, &xs) in cols.iter().enumerate() {
                let (shift, (lo, hi)) = same_size_tap(g, (ky, kx), ys, xs);
                if lo == hi {
                    continue;
                }
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &mut col[row * ld..row * ld + g.ohw()];
                zero_fringe(src, ow, ys, xs);
                let at = (lo as isize + shift) as usize;
                for (d, v) in plane[at..at + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                    *d += *v;
                }
            }
        }
    }
}
