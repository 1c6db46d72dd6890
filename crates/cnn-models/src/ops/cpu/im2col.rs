//! Unfolding an image into the column matrix of a convolution (im2col) and folding
//! gradients back (col2im), for one image at a time.

use super::Element;

/// Output positions `[lo, hi)` along one axis.
type Span = (usize, usize);

/// Shape of one 2-D convolution over an NCHW batch with an OIHW kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    pub fn ckk(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output pixels of one image.
    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_image(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub fn out_image(&self) -> usize {
        self.cout * self.ohw()
    }
    /// A 1x1, stride-1, unpadded conv: the image already is its column matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// A stride-1 conv whose output is as large as its input (3x3 with padding 1): output
    /// pixel `j` of kernel tap `(ky, kx)` reads input pixel `j + (ky - pad) * w + kx - pad`,
    /// so each column-matrix row is one shifted copy of the plane.
    fn is_same_size(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w
    }

    /// [`Self::valid`] for every kernel row and every kernel column, computed once per call:
    /// on 2x2 maps its divisions, redone per input channel, were half of im2col's time.
    fn valid_spans(&self) -> (Vec<Span>, Vec<Span>) {
        let rows = (0..self.kh)
            .map(|ky| self.valid(ky, self.h, self.oh))
            .collect();
        let cols = (0..self.kw)
            .map(|kx| self.valid(kx, self.w, self.ow))
            .collect();
        (rows, cols)
    }

    /// The output columns `[lo, hi)` whose input column `ox * stride + k - pad` lies inside
    /// a row of `len` pixels (the rest read padding).
    fn valid(&self, k: usize, len: usize, out: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
        let hi = if len + p > k {
            ((len + p - k - 1) / s + 1).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Writes image `x` (cin x h x w) as rows `(ci, ky, kx)` of `ohw` columns into `col`, whose
/// rows are `ld` apart (a chunk of several images sits side by side in one matrix).
pub(crate) fn im2col<T: Element>(g: &ConvGeom, x: &[T], col: &mut [T], ld: usize) {
    let (hw, ow) = (g.h * g.w, g.ow);
    let (rows, cols) = g.valid_spans();
    if g.is_same_size() {
        return im2col_same_size(g, x, col, ld, (&rows, &cols));
    }
    for ci in 0..g.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for (ky, &(oy_lo, oy_hi)) in rows.iter().enumerate() {
            for (kx, &(ox_lo, ox_hi)) in cols.iter().enumerate() {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld..row * ld + g.ohw()];
                dst[..oy_lo * ow].fill(T::ZERO);
                dst[oy_hi * ow..].fill(T::ZERO);
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ky - g.pad;
                    let out = &mut dst[oy * ow..(oy + 1) * ow];
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
