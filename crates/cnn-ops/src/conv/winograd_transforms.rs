//! What both Winograd paths ([`super::winograd_2x2`], [`super::winograd_4x4`]) do to the kernel:
//! `u = G g Gᵀ` for every 3x3 kernel `g`, and the adjoint for its gradient, laid out filter
//! by filter (`u[co][e][ci]`, position `e` of every filter being one GEMM's `cout x cin`
//! matrix), and the small lane-wise matrix products they are written with.

// The transforms are small matrix products written out by row and column index; iterator
// chains would hide the algebra they transcribe.
#![allow(clippy::needless_range_loop)]

use super::geometry::{ConvGeom, KernelLayout};
use crate::cpu::{padded_stride, scratch, zeros, Element};
use rayon::prelude::*;

/// Values a transform takes side by side (one AVX-512 vector of f32): input channels here,
/// images in [`super::winograd_4x4`]'s tile transforms. One channel at a time, F(2x2, 3x3)'s
/// kernel transform was 7-10 % of the forward pass of ResNet's layer 2 at 64 px (128
/// channels, 8x8, batch 32, one thread, `perf`); 16 at a time, hand-written, 2.7 %.
pub(super) const LANES: usize = 16;

/// One value per lane.
pub(super) type Lanes<T> = [T; LANES];

/// `out = m d`: `m` is `R x K` numbers, `d` a `K x C` grid of lane vectors.
#[inline(always)]
pub(super) fn left<T: Element, const R: usize, const K: usize, const C: usize>(
    m: &[[f64; K]; R],
    d: &[[Lanes<T>; C]; K],
    out: &mut [[Lanes<T>; C]; R],
) {
    for r in 0..R {
        out[r] = [[T::ZERO; LANES]; C];
        for k in 0..K {
            if m[r][k] == 0.0 {
                continue;
            }
            let f = T::from_f64(m[r][k]);
            for c in 0..C {
                for i in 0..LANES {
                    out[r][c][i] += f * d[k][c][i];
                }
            }
        }
    }
}

/// `out = d mᵀ`: `d` an `R x K` grid of lane vectors, `m` is `C x K` numbers.
#[inline(always)]
pub(super) fn right_t<T: Element, const R: usize, const K: usize, const C: usize>(
    d: &[[Lanes<T>; K]; R],
    m: &[[f64; K]; C],
    out: &mut [[Lanes<T>; C]; R],
) {
    for r in 0..R {
        for c in 0..C {
            out[r][c] = [T::ZERO; LANES];
            for k in 0..K {
                if m[c][k] == 0.0 {
                    continue;
                }
                let f = T::from_f64(m[c][k]);
                for i in 0..LANES {
                    out[r][c][i] += f * d[r][k][i];
                }
            }
        }
    }
}

/// The transpose of a `R x C` matrix of numbers.
pub(super) const fn transpose<const R: usize, const C: usize>(m: [[f64; C]; R]) -> [[f64; R]; C] {
    let mut t = [[0.0; R]; C];
    let mut r = 0;
    while r < R {
        let mut c = 0;
        while c < C {
            t[c][r] = m[r][c];
            c += 1;
        }
        r += 1;
    }
    t
}

/// Copies `len` values (at most [`LANES`]) from `src` to `dst`: a whole run as one value of
/// type [`Lanes`], which compiles to vector moves. Written as `copy_from_slice` in both
/// cases, LLVM merged the two into one `memmove` call of variable length (a fifth of the
/// F(4x4, 3x3) forward pass on ResNet's layer 1 at 64 px).
#[inline(always)]
pub(super) fn copy_lanes<T: Copy>(dst: &mut [T], src: &[T], len: usize) {
    if len == LANES {
        let to: &mut [T; LANES] = (&mut dst[..LANES]).try_into().expect("LANES values");
        *to = *<&[T; LANES]>::try_from(&src[..LANES]).expect("LANES values");
    } else {
        for (d, &s) in dst[..len].iter_mut().zip(&src[..len]) {
            *d = s;
        }
    }
}

/// Elements between the filters of a kernel transformed to `A x A` positions (`A² cin`
/// values each, padded by [`padded_stride`]).
pub(super) fn filter_stride<T, const A: usize>(g: &ConvGeom) -> usize {
    padded_stride::<T>(A * A * g.cin)
}

/// `u[co][e][ci] = (G g Gᵀ)[e]` for every kernel `g = w[co][ci]` (in `layout`; `G` is
/// `gm`, `A x 3`), filters [`filter_stride`] apart, in a scratch buffer (hand it back with
/// `scratch::give_back`). Filter by filter in parallel (on one thread it left the other
/// core idle).
pub(super) fn kernel_transform<T: Element, const A: usize>(
    g: &ConvGeom,
    w: &[T],
    layout: KernelLayout,
    gm: &[[f64; 3]; A],
) -> Vec<T> {
    let fs = filter_stride::<T, A>(g);
    let mut u = scratch::lend::<T>(g.cout * fs);
    let filters = u[..g.cout * fs].par_chunks_exact_mut(fs);
    filters
        .zip(w.par_chunks_exact(9 * g.cin))
        .for_each(|(u, w)| {
            for ci0 in (0..g.cin).step_by(LANES) {
                let len = LANES.min(g.cin - ci0);
                let mut k = [[[T::ZERO; LANES]; 3]; 3];
                for tap in 0..9 {
                    let run = &mut k[tap / 3][tap % 3];
                    match layout {
                        KernelLayout::Ohwi => copy_lanes(run, &w[tap * g.cin + ci0..], len),
                        KernelLayout::Oihw => {
                            for i in 0..len {
                                run[i] = w[(ci0 + i) * 9 + tap];
                            }
                        }
                    }
                }
                let mut t = [[[T::ZERO; LANES]; 3]; A];
                let mut v = [[[T::ZERO; LANES]; A]; A];
                left(gm, &k, &mut t);
                right_t(&t, gm, &mut v);
                for e in 0..A * A {
                    copy_lanes(&mut u[e * g.cin + ci0..], &v[e / A][e % A], len);
                }
            }
        });
    u
}

/// `∂L/∂w[co][ci] = Gᵀ (∂L/∂u)[co][ci] G`, the adjoint of [`kernel_transform`], where
/// `∂L/∂u` is the sum of `parts` (one per thread's share of the batch), in `layout`.
/// Filter by filter in parallel, summing as it goes: on one thread, after a separate sum,
/// it left the other core idle.
pub(super) fn kernel_transform_adjoint<T: Element, const A: usize>(
    g: &ConvGeom,
    parts: &[Vec<T>],
    layout: KernelLayout,
    gm: &[[f64; 3]; A],
) -> Vec<T> {
    let gt = transpose(*gm);
    let fs = filter_stride::<T, A>(g);
    let mut w = zeros(g.cout * g.cin * 9);
    let filters = w.par_chunks_exact_mut(g.cin * 9).enumerate();
    filters.for_each(|(co, w)| {
        for ci0 in (0..g.cin).step_by(LANES) {
            let len = LANES.min(g.cin - ci0);
            let mut d = [[[T::ZERO; LANES]; A]; A];
            for (e, run) in d.iter_mut().flatten().enumerate() {
                for part in parts {
                    let src = &part[co * fs + e * g.cin + ci0..][..len];
                    for (r, &v) in run.iter_mut().zip(src) {
                        *r += v;
                    }
                }
            }
            let mut t = [[[T::ZERO; LANES]; A]; 3];
            let mut k = [[[T::ZERO; LANES]; 3]; 3];
            left(&gt, &d, &mut t);
            right_t(&t, &gt, &mut k);
            for tap in 0..9 {
                let run = &k[tap / 3][tap % 3];
                match layout {
                    KernelLayout::Ohwi => copy_lanes(&mut w[tap * g.cin + ci0..], run, len),
                    KernelLayout::Oihw => {
                        for i in 0..len {
                            w[(ci0 + i) * 9 + tap] = run[i];
                        }
                    }
                }
            }
        }
    });
    w
}
