//! The shape of one convolution (its geometry), how its kernel is laid out, and what is done
//! to a kernel before a pass multiplies it: copied between layouts, cut to the taps that
//! read the input, or flipped and transposed for the input gradient.

use crate::cpu::{scratch, zeros, Element};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output positions `[lo, hi)` along one axis.
pub(crate) type Span = (usize, usize);

/// Shape of one 2-D convolution over an NCHW batch.
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
    pub fn is_same_size(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w
    }

    /// Where some kernel taps only ever read padding (a 3x3 kernel over a 1x1 map touches
    /// the input with its centre alone): the same conv with the kernel cut to the taps that
    /// do, `[k0, k0 + kh) x [k0, k0 + kw)` of the original, and the padding reduced by `k0`.
    /// The cut taps contribute exact zeros, so the result is unchanged while the GEMMs
    /// shrink (9x for ResNet18's last stage at 32 px). `None` if every tap is live, or if
    /// the live taps start at different offsets along the two axes (one padding serves both).
    pub fn trimmed(&self) -> Option<(ConvGeom, usize)> {
        let live = |k: usize, len: usize, out: usize| {
            let alive: Vec<usize> = (0..k)
                .filter(|&t| {
                    let (lo, hi) = self.valid(t, len, out);
                    lo < hi
                })
                .collect();
            Some((*alive.first()?, *alive.last()? + 1))
        };
        let (y0, y1) = live(self.kh, self.h, self.oh)?;
        let (x0, x1) = live(self.kw, self.w, self.ow)?;
        let whole = (y0, y1, x0, x1) == (0, self.kh, 0, self.kw);
        (!whole && y0 == x0).then(|| {
            let g = ConvGeom {
                kh: y1 - y0,
                kw: x1 - x0,
                pad: self.pad - y0,
                ..*self
            };
            (g, y0)
        })
    }

    /// A square map and kernel for tests: `[n, cin, cout]` images and channels.
    #[cfg(test)]
    pub fn square(
        [n, cin, cout]: [usize; 3],
        size: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        let out = (size + 2 * pad - k) / stride + 1;
        ConvGeom {
            n,
            cin,
            h: size,
            w: size,
            cout,
            kh: k,
            kw: k,
            stride,
            pad,
            oh: out,
            ow: out,
        }
    }

    /// [`Self::valid`] for every kernel row and every kernel column, computed once per call:
    /// on 2x2 maps its divisions, redone per input channel, were half of im2col's time.
    pub fn valid_spans(&self) -> (Vec<Span>, Vec<Span>) {
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
    pub fn valid(&self, k: usize, len: usize, out: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
        let hi = if len + p > k {
            ((len + p - k - 1) / s + 1).min(out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Splits the batch into one share of images per thread: `(first image, images)`.
    pub fn batch_shares(&self) -> Vec<(usize, usize)> {
        let threads = rayon::current_num_threads().max(1);
        let share = self.n.div_ceil(threads).max(1);
        (0..self.n)
            .step_by(share)
            .map(|i| (i, share.min(self.n - i)))
            .collect()
    }
}

/// How a kernel's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelLayout {
    /// PyTorch's `[co][ci][ky][kx]`: what im2col and Winograd multiply.
    Oihw,
    /// Tap by tap, `[co][ky][kx][ci]`: how the models hold their kernels, and what [`super::taps`]
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

/// The live taps `(k0.., k0..)` of a filter of `g` cut to `cut` (see [`ConvGeom::trimmed`]),
/// tap by tap: `(cut tap, tap of g)`.
fn live_taps(g: &ConvGeom, cut: &ConvGeom, k0: usize) -> impl Iterator<Item = (usize, usize)> {
    let (kw, cut_kw) = (g.kw, cut.kw);
    (0..cut.kh * cut.kw).map(move |t| (t, (k0 + t / cut_kw) * kw + k0 + t % cut_kw))
}

/// `w[.., .., k0.., k0..]` cut to the kernel size of `cut` (see [`ConvGeom::trimmed`]), in
/// the kernel's `layout`.
pub(crate) fn cut_kernel<T: Element>(
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
pub(crate) fn uncut_kernel<T: Element>(
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

/// For a stride-1 conv, the forward conv that computes its input gradient: `gy` (cout
/// channels, oh x ow) padded by `k - 1 - pad` and correlated with the flipped kernel gives
/// back cin channels of h x w. `None` where that does not hold.
pub(crate) fn transposed_geometry(g: &ConvGeom) -> Option<ConvGeom> {
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
pub(crate) fn flipped_transposed<T: Element>(
    g: &ConvGeom,
    w: &[T],
    layout: KernelLayout,
) -> Vec<T> {
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

/// `w[co][ci][tap]` -> `[co][tap][ci]`: the kernel [`super::taps`] reads, in
/// a new vector written without zeroing first, for a copy the forward pass keeps for the
/// input gradient (taken from the scratch pool and held until the backward pass, such
/// copies drained it: every later `scratch::lend` allocated and zeroed a buffer of its own).
pub(crate) fn oihw_to_ohwi<T: Element>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let len = g.cout * g.kh * g.kw * g.cin;
    let mut out = Vec::with_capacity(len);
    transpose_filters(
        g,
        w,
        &mut out.spare_capacity_mut()[..len],
        (g.cin, g.kh * g.kw),
        |d, v| {
            d.write(v);
        },
    );
    // SAFETY: `transpose_filters` wrote all `len` values.
    unsafe { out.set_len(len) };
    out
}

/// [`oihw_to_ohwi`] in a scratch buffer, for a copy used once: give it back.
/// (A new vector each call made ResNet34@32 inference 3-6 % slower.)
pub(crate) fn oihw_to_ohwi_scratch<T: Element>(g: &ConvGeom, w: &[T]) -> Vec<T> {
    let len = g.cout * g.kh * g.kw * g.cin;
    let mut out = scratch::lend::<T>(len);
    transpose_filters(g, w, &mut out[..len], (g.cin, g.kh * g.kw), |d, v| *d = v);
    out
}

/// Writes each filter of `src`, a `rows x cols` matrix, transposed into `dst` through
/// `write`, filter by filter (each stays in cache): `[ci][tap]` -> `[tap][ci]` with `cin`
/// rows, or back with `kh * kw`.
fn transpose_filters<T: Element, D: Send>(
    g: &ConvGeom,
    src: &[T],
    dst: &mut [D],
    (rows, cols): (usize, usize),
    write: impl Fn(&mut D, T) + Sync,
) {
    let unit = rows * cols;
    assert!(
        unit == g.kh * g.kw * g.cin && src.len() == g.cout * unit && dst.len() == src.len(),
        "taps: kernel of {} values into {} for {g:?}",
        src.len(),
        dst.len()
    );
    let filters = dst.par_chunks_exact_mut(unit);
    filters
        .zip(src.par_chunks_exact(unit))
        .for_each(|(dst, src)| {
            for (c, row) in dst.chunks_exact_mut(rows).enumerate() {
                for (r, d) in row.iter_mut().enumerate() {
                    write(d, src[r * cols + c]);
                }
            }
        });
}

/// `[co][tap][ci]` -> `w[co][ci][tap]` (OIHW), into a new vector (written without zeroing
/// first).
pub(crate) fn ohwi_to_oihw<T: Element>(g: &ConvGeom, wt: &[T]) -> Vec<T> {
    let len = g.cout * g.kh * g.kw * g.cin;
    let mut out = Vec::with_capacity(len);
    transpose_filters(
        g,
        wt,
        &mut out.spare_capacity_mut()[..len],
        (g.kh * g.kw, g.cin),
        |d, v| {
            d.write(v);
        },
    );
    // SAFETY: `transpose_filters` wrote all `len` values.
    unsafe { out.set_len(len) };
    out
}

/// [`ohwi_to_oihw`] in a scratch buffer, for a copy used once: give it back.
pub(crate) fn ohwi_to_oihw_scratch<T: Element>(g: &ConvGeom, wt: &[T]) -> Vec<T> {
    let len = g.cout * g.kh * g.kw * g.cin;
    let mut out = scratch::lend::<T>(len);
    transpose_filters(g, wt, &mut out[..len], (g.kh * g.kw, g.cin), |d, v| *d = v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(size: usize, k: usize, stride: usize, pad: usize) -> ConvGeom {
        ConvGeom::square([2, 3, 4], size, k, stride, pad)
    }

    /// (kernel, padding, first tap kept) of the trimmed conv, if any.
    fn trim(g: ConvGeom) -> Option<(usize, usize, usize)> {
        g.trimmed().map(|(t, k0)| {
            assert_eq!((t.kh, t.oh, t.ow), (t.kw, g.oh, g.ow));
            (t.kh, t.pad, k0)
        })
    }

    #[test]
    fn only_taps_that_read_padding_alone_are_cut() {
        // ResNet18@32's last stage: 3x3 over 1x1 maps keeps its centre.
        assert_eq!(trim(geom(1, 3, 1, 1)), Some((1, 0, 1)));
        // Its downsampling 3x3, stride 2, 2x2 -> 1x1: the lower-right 2x2 taps.
        assert_eq!(trim(geom(2, 3, 2, 1)), Some((2, 0, 1)));
        // 7x7, padding 3 over 2x2 maps: rows oy + ky - 3 with oy < 2 hit 0..2 for ky 2..=4.
        assert_eq!(trim(geom(2, 7, 1, 3)), Some((3, 1, 2)));
        // Every tap reads some input: nothing to cut.
        assert_eq!(trim(geom(2, 3, 1, 1)), None);
        assert_eq!(trim(geom(56, 3, 1, 1)), None);
        assert_eq!(trim(geom(5, 5, 2, 0)), None);
    }

    #[test]
    fn kernels_lay_out_tap_by_tap_and_back() {
        // Square and non-square kernels over 37 channels.
        for (kh, kw) in [(3, 3), (5, 5), (3, 5)] {
            let g = ConvGeom {
                kh,
                kw,
                ..ConvGeom::square([8, 37, 3], 4, 3, 1, 1)
            };
            let (k2, cin) = (kh * kw, g.cin);
            let unit = k2 * cin;
            let w: Vec<f32> = (0..g.cout * unit).map(|i| i as f32).collect();
            let t = oihw_to_ohwi(&g, &w);
            for co in 0..g.cout {
                for ci in 0..cin {
                    for tap in 0..k2 {
                        let (at, from) = (co * unit + tap * cin + ci, co * unit + ci * k2 + tap);
                        assert_eq!(
                            t[at], w[from],
                            "{kh}x{kw}: filter {co}, channel {ci}, tap {tap}"
                        );
                    }
                }
            }
            assert_eq!(ohwi_to_oihw(&g, &t), w, "{kh}x{kw}: back to OIHW");
            let scratch = oihw_to_ohwi_scratch(&g, &w);
            assert_eq!(scratch[..t.len()], t, "{kh}x{kw}: the scratch copy");
            scratch::give_back(scratch);
        }
    }
}
