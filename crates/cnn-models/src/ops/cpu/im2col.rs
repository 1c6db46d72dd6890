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

/// Adds the column-matrix gradient `col` (rows `ld` apart) into image gradient `gx`, the
/// adjoint of [`im2col`].
pub(crate) fn col2im<T: Element>(g: &ConvGeom, col: &[T], ld: usize, gx: &mut [T]) {
    let (hw, ow) = (g.h * g.w, g.ow);
    let (rows, cols) = g.valid_spans();
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
