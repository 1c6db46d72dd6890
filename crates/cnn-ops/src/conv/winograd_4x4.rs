//! Winograd F(4x4, 3x3) convolution for stride-1 3x3 kernels (Lavin & Gray, 2015): each
//! 4x4 output tile costs 36 multiplies per channel pair instead of 144 (F(2x2, 3x3) in
//! [`super::winograd_2x2`] spends 64 on the same 16 outputs), done as 36 GEMMs.
//!
//! The batch is split into one share of images per thread, as in [`super::winograd_2x2`], and
//! each share goes through in groups of up to [`LANES`] images: a group is laid out
//! batch-innermost (`[c][y][x][image]`, as [`super::taps`] does), so every transform works
//! on the images of one tile side by side, 16 values a step, whatever the map's size. The
//! tiles of a group then go through a few at a time ([`chunk_tiles`]), so that the
//! transformed input and the products of one chunk stay in the cache between the
//! transforms and the GEMMs (a first version that transformed the whole batch before any
//! GEMM ran the forward pass of ResNet's layer 1 at 64 px 60 % slower than F(2x2, 3x3), its
//! GEMMs a fifth of its time).
//!
//! The transforms use the interpolation points 0, ±1, ±2 and ∞ and cost precision: on
//! ResNet's layer shapes (64-256 channels, random data) f32 outputs differ from an f64
//! convolution by 1.8-3.0e-6 (relative, 2-norm) against F(2x2, 3x3)'s 2.7-5.0e-7, well
//! under what training notices and within the kernel tests' f32 tolerance (2e-6) on their
//! smaller shapes.

// The transforms are small matrix products written out by row and column index; iterator
// chains would hide the algebra they transcribe.
#![allow(clippy::needless_range_loop)]

use super::geometry::{ConvGeom, KernelLayout};
use super::taps::to_channel_major;
use super::winograd_transforms::{self as transforms, copy_lanes, Lanes, LANES};
use crate::cpu::{gemm, padded_stride, scratch, zeros, Element, MatRef};
use rayon::prelude::*;

/// Transformed positions per tile (6x6).
const POS: usize = 36;
/// Fewest images in each thread's share: the transforms run across them.
const MIN_SHARE: usize = 8;
/// Fewest GEMM columns (tiles times images) a chunk of tiles gives, where the map has them.
const MIN_COLS: usize = 64;

/// `G`: the kernel transform `u = G g Gᵀ` of a 3x3 kernel `g`.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Most values (channels times pixels) an image's input or output may hold for this path:
/// a group of 16 images laid out batch-innermost holds its whole input and output, 4 MB
/// each at this bound; 12.8 MB for ResNet's 64-channel 56x56 layer 1 at 224 px, where
/// F(4x4, 3x3) trained ResNet18 only 3 % faster and raised its peak memory by a fifth
/// (inference 331 -> 517 MB).
const MAX_IMAGE_VALUES: usize = 1 << 16;

/// Whether [`forward`] computes this convolution: a stride-1 3x3 kernel, padding at most 2,
/// output maps of 8x8 or more but at most [`MAX_IMAGE_VALUES`] an image (ResNet's layers 1-2
/// at 64 px, layer 3 at 224 px), 16+ channels on both sides, and [`MIN_SHARE`] images or
/// more for each thread.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let threads = rayon::current_num_threads().max(1);
    g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.pad <= 2
        && g.oh.min(g.ow) >= 8
        && (g.cin * g.h * g.w).max(g.cout * g.ohw()) <= MAX_IMAGE_VALUES
        && g.cin.min(g.cout) >= 16
        && g.n >= MIN_SHARE * threads
}

/// Tiles of one image: `(rows, columns)` of 4x4 output tiles.
fn tiles(g: &ConvGeom) -> (usize, usize) {
    (g.oh.div_ceil(4), g.ow.div_ceil(4))
}

/// Tiles per chunk for a group of `lanes` images: enough for [`MIN_COLS`] GEMM columns.
fn chunk_tiles(g: &ConvGeom, lanes: usize) -> usize {
    let (th, tw) = tiles(g);
    MIN_COLS.div_ceil(lanes).clamp(1, th * tw)
}

/// Elements between the filters of the transformed kernel (`36 cin` values each).
fn filter_stride<T>(g: &ConvGeom) -> usize {
    transforms::filter_stride::<T, 6>(g)
}

/// The tiles of a chunk: `first..first + count`, numbered row by row.
#[derive(Clone, Copy)]
struct Chunk {
    first: usize,
    count: usize,
}

/// One group of images laid out batch-innermost: `lanes` images, planes `[y][x][image]`.
struct Group<'a, T> {
    data: &'a [T],
    lanes: usize,
}

/// `Bᵀ x` for a column of six lane vectors.
#[inline(always)]
fn bt<T: Element>(x: &[Lanes<T>; 6]) -> [Lanes<T>; 6] {
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    let mut r = [[T::ZERO; LANES]; 6];
    for i in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = [x[0][i], x[1][i], x[2][i], x[3][i], x[4][i], x[5][i]];
        r[0][i] = four * x0 - five * x2 + x4;
        r[1][i] = x3 + x4 - four * (x1 + x2);
        r[2][i] = four * (x1 - x2) + x4 - x3;
        r[3][i] = two * (x3 - x1) + x4 - x2;
        r[4][i] = two * (x1 - x3) + x4 - x2;
        r[5][i] = four * x1 - five * x3 + x5;
    }
    r
}

/// `Aᵀ x` for a column of six lane vectors.
#[inline(always)]
fn at<T: Element>(x: &[Lanes<T>; 6]) -> [Lanes<T>; 4] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut r = [[T::ZERO; LANES]; 4];
    for i in 0..LANES {
        let [x0, x1, x2, x3, x4, x5] = [x[0][i], x[1][i], x[2][i], x[3][i], x[4][i], x[5][i]];
        let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
        r[0][i] = x0 + s12 + s34;
        r[1][i] = d12 + two * d34;
        r[2][i] = s12 + four * s34;
        r[3][i] = d12 + eight * d34 + x5;
    }
    r
}

/// `A x` for a column of four lane vectors (the adjoint of [`at`]).
#[inline(always)]
fn a<T: Element>(x: &[Lanes<T>; 4]) -> [Lanes<T>; 6] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut r = [[T::ZERO; LANES]; 6];
    for i in 0..LANES {
        let [x0, x1, x2, x3] = [x[0][i], x[1][i], x[2][i], x[3][i]];
        let (even, odd) = (x0 + x2, x1 + x3);
        let (even4, odd2) = (x0 + four * x2, two * x1 + eight * x3);
        r[0][i] = x0;
        r[1][i] = even + odd;
        r[2][i] = even - odd;
        r[3][i] = even4 + odd2;
        r[4][i] = even4 - odd2;
        r[5][i] = x3;
    }
    r
}

/// `f` applied to every column of the `C x C` grid `d` (into `t`), then to every row of
/// the result (into `out`): `M d Mᵀ` for the 1-D transform `f(x) = M x`. The grids are the
/// caller's, made once per call: zeroing them per tile was 9 % of a forward pass.
#[inline(always)]
fn both_ways<T: Element, const C: usize, const R: usize>(
    d: &[[Lanes<T>; C]; C],
    f: impl Fn(&[Lanes<T>; C]) -> [Lanes<T>; R],
    t: &mut [[Lanes<T>; C]; R],
    out: &mut [[Lanes<T>; R]; R],
) {
    for c in 0..C {
        let fc = f(&std::array::from_fn(|r| d[r][c]));
        for r in 0..R {
            t[r][c] = fc[r];
        }
    }
    for r in 0..R {
        out[r] = f(&t[r]);
    }
}

with_wide_simd! {
    /// Writes `Bᵀ d B` of each tile of `chunk` of input channel `ci` into
    /// `v[e][ci][tile][image]` (positions `vs` apart, channels `cols` apart); pixels
    /// outside the map read zero.
    fn input_transform<T>(
        g: &ConvGeom,
        x: &Group<T>,
        chunk: Chunk,
        ci: usize,
        v: &mut [T],
        layout: (usize, usize),
    ) {
        let (cols, vs) = layout;
        let (_, tw) = tiles(g);
        let n = x.lanes;
        let plane = &x.data[ci * g.h * g.w * n..][..g.h * g.w * n];
        let mut d = [[[T::ZERO; LANES]; 6]; 6];
        let (mut t, mut out) = (d, d);
        for (j, tile) in (chunk.first..chunk.first + chunk.count).enumerate() {
            let (ty, tx) = (tile / tw, tile % tw);
            for r in 0..6 {
                let iy = (4 * ty + r).checked_sub(g.pad).filter(|&y| y < g.h);
                for c in 0..6 {
                    let ix = (4 * tx + c).checked_sub(g.pad).filter(|&x| x < g.w);
                    match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            copy_lanes(&mut d[r][c], &plane[(iy * g.w + ix) * n..], n)
                        }
                        _ => d[r][c] = [T::ZERO; LANES],
                    }
                }
            }
            both_ways(&d, bt, &mut t, &mut out);
            for e in 0..POS {
                copy_lanes(&mut v[e * vs + ci * cols + j * n..], &out[e / 6][e % 6], n);
            }
        }
    }
}

with_wide_simd! {
    /// Folds the products `m[e][co][tile][image]` of output channel `co` back into its
    /// plane of `y` (`[y][x][image]`, `n` images) as `Aᵀ m A`, dropping the outputs past
    /// the map's edge.
    fn output_transform<T>(
        g: &ConvGeom,
        m: &[T],
        layout: (usize, usize),
        chunk: Chunk,
        co: usize,
        y: &mut [T],
        n: usize,
    ) {
        let (cols, ms) = layout;
        let (_, tw) = tiles(g);
        let plane = &mut y[co * g.ohw() * n..][..g.ohw() * n];
        let mut d = [[[T::ZERO; LANES]; 6]; 6];
        let mut t = [[[T::ZERO; LANES]; 6]; 4];
        let mut out = [[[T::ZERO; LANES]; 4]; 4];
        for (j, tile) in (chunk.first..chunk.first + chunk.count).enumerate() {
            let (ty, tx) = (tile / tw, tile % tw);
            for e in 0..POS {
                copy_lanes(&mut d[e / 6][e % 6], &m[e * ms + co * cols + j * n..], n);
            }
            both_ways(&d, at, &mut t, &mut out);
            for r in 0..4 {
                for c in 0..4 {
                    let (oy, ox) = (4 * ty + r, 4 * tx + c);
                    if oy < g.oh && ox < g.ow {
                        copy_lanes(&mut plane[(oy * g.ow + ox) * n..], &out[r][c], n);
                    }
                }
            }
        }
    }
}

with_wide_simd! {
    /// Writes `A d Aᵀ` of each 4x4 tile `d` of output channel `co`'s gradient (`gy`,
    /// `[y][x][image]`) into `dm[e][co][tile][image]`; outputs past the map's edge count as
    /// zero. The adjoint of [`output_transform`].
    fn grad_output_transform<T>(
        g: &ConvGeom,
        gy: &Group<T>,
        chunk: Chunk,
        co: usize,
        dm: &mut [T],
        layout: (usize, usize),
    ) {
        let (cols, ms) = layout;
        let (_, tw) = tiles(g);
        let n = gy.lanes;
        let plane = &gy.data[co * g.ohw() * n..][..g.ohw() * n];
        let mut d = [[[T::ZERO; LANES]; 4]; 4];
        let mut t = [[[T::ZERO; LANES]; 4]; 6];
        let mut out = [[[T::ZERO; LANES]; 6]; 6];
        for (j, tile) in (chunk.first..chunk.first + chunk.count).enumerate() {
            let (ty, tx) = (tile / tw, tile % tw);
            for r in 0..4 {
                for c in 0..4 {
                    let (oy, ox) = (4 * ty + r, 4 * tx + c);
                    match oy < g.oh && ox < g.ow {
                        true => copy_lanes(&mut d[r][c], &plane[(oy * g.ow + ox) * n..], n),
                        false => d[r][c] = [T::ZERO; LANES],
                    }
                }
            }
            both_ways(&d, a, &mut t, &mut out);
            for e in 0..POS {
                copy_lanes(&mut dm[e * ms + co * cols + j * n..], &out[e / 6][e % 6], n);
            }
        }
    }
}

/// The images `first..first + count` of an NCHW batch `x` of `c` channels of `p` pixels,
/// as groups of up to [`LANES`] laid out batch-innermost: `(first image, layout)`.
/// The images `first..first + count` of an NCHW batch `x` of `c` channels of `p` pixels,
/// as groups of up to [`LANES`] laid out batch-innermost: `(first image, images, values)`.
fn groups<T: Element>(
    x: &[T],
    (first, count): (usize, usize),
    c: usize,
    p: usize,
) -> impl Iterator<Item = (usize, usize, Vec<T>)> + '_ {
    (first..first + count).step_by(LANES).map(move |i0| {
        let lanes = LANES.min(first + count - i0);
        let data = to_channel_major(&x[i0 * c * p..], lanes, c, p, p * lanes);
        (i0, lanes, data)
    })
}

/// Scratch buffers for one thread's share, lent by the pool once for all its groups and
/// chunks: the transformed input `v` and the products `m` of a chunk. (Taken per chunk,
/// buffers of four sizes cycled through the pool, which grew one by reallocation on most
/// calls: a quarter of the forward pass of ResNet's layer 1 at 64 px went to `memmove`
/// and `memset`.)
struct Buffers<T: Element> {
    v: Vec<T>,
    m: Vec<T>,
}

impl<T: Element> Buffers<T> {
    fn lend(g: &ConvGeom) -> Self {
        // The widest chunk of any group (a group of fewer images takes more tiles), and one
        // cache line of padding per position block.
        let cols = (1..=LANES)
            .map(|n| chunk_tiles(g, n) * n)
            .max()
            .unwrap_or(0);
        let block = |channels: usize| POS * (channels * cols + 64);
        Buffers {
            v: scratch::lend(block(g.cin)),
            m: scratch::lend(block(g.cout)),
        }
    }

    fn give_back(self) {
        scratch::give_back(self.v);
        scratch::give_back(self.m);
    }
}

/// `y = conv(x, w)` for an NCHW batch and a 3x3 kernel in `layout` (see [`applies`]).
pub(crate) fn forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], layout: KernelLayout) -> Vec<T> {
    let u = transforms::kernel_transform(g, w, layout, &G);
    let shares = g.batch_shares();
    let mut y = zeros(g.n * g.out_image());
    let jobs: Vec<_> = shares
        .iter()
        .zip(y.chunks_mut(shares[0].1 * g.out_image()))
        .collect();
    jobs.into_par_iter().for_each(|(&share, out)| {
        let mut buffers = Buffers::lend(g);
        let mut yt = scratch::lend::<T>(g.cout * g.ohw() * LANES);
        for (i0, lanes, xt) in groups(x, share, g.cin, g.h * g.w) {
            let group = Group { data: &xt, lanes };
            forward_group(g, &u, &group, &mut buffers, &mut yt);
            let out = &mut out[(i0 - share.0) * g.out_image()..][..lanes * g.out_image()];
            from_lanes(&yt, lanes, (g.cout, g.ohw()), out);
            scratch::give_back(xt);
        }
        scratch::give_back(yt);
        buffers.give_back();
    });
    scratch::give_back(u);
    y
}

/// One group of images through the transforms and GEMMs, chunk by chunk, into `yt`
/// (`[co][y][x][image]`).
fn forward_group<T: Element>(
    g: &ConvGeom,
    u: &[T],
    x: &Group<T>,
    buffers: &mut Buffers<T>,
    yt: &mut [T],
) {
    let (th, tw) = tiles(g);
    let n = x.lanes;
    let per = chunk_tiles(g, n);
    let fs = filter_stride::<T>(g);
    let (v, m) = (&mut buffers.v, &mut buffers.m);
    for first in (0..th * tw).step_by(per) {
        let chunk = Chunk {
            first,
            count: per.min(th * tw - first),
        };
        let cols = chunk.count * n;
        let (vs, ms) = (
            padded_stride::<T>(g.cin * cols),
            padded_stride::<T>(g.cout * cols),
        );
        for ci in 0..g.cin {
            input_transform(g, x, chunk, ci, v, (cols, vs));
        }
        for e in 0..POS {
            let a = MatRef::rows(&u[e * g.cin..], fs);
            let b = MatRef::rows(&v[e * vs..], cols);
            // SAFETY: a is cout x cin (position e of every filter), b is cin x cols.
            unsafe { gemm(g.cout, cols, g.cin, &mut m[e * ms..], cols, false, a, b, 1) };
        }
        for co in 0..g.cout {
            output_transform(g, m, (cols, ms), chunk, co, yt, n);
        }
    }
}

/// `[c][p][image]` (a group's batch-innermost values, `lanes` images of `c` planes of `p`
/// pixels) -> `[image][c][p]`, channel by channel: each channel's block stays in cache
/// while every image's plane is written in order (row by row across the images, the
/// writes were `c p` values apart, a multiple of 4 KiB, and thrashed one cache set: 28 %
/// of the forward pass of ResNet's layer 1 at 64 px).
fn from_lanes<T: Element>(src: &[T], lanes: usize, (c, p): (usize, usize), dst: &mut [T]) {
    for ch in 0..c {
        let block = &src[ch * p * lanes..][..p * lanes];
        for img in 0..lanes {
            let plane = &mut dst[(img * c + ch) * p..][..p];
            for (d, vals) in plane.iter_mut().zip(block.chunks_exact(lanes)) {
                *d = vals[img];
            }
        }
    }
}

/// `∂L/∂w` of [`forward`] given the output gradient `gy`, in `layout`: `∂L/∂u[e] = Σ
/// (A gy Aᵀ)[e] · v[e]ᵀ` over every tile of each thread's share, then `Gᵀ (∂L/∂u) G`,
/// summing the shares' parts.
pub(crate) fn weight_grad<T: Element>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    let len = g.cout * filter_stride::<T>(g);
    let partials: Vec<Vec<T>> = g
        .batch_shares()
        .into_par_iter()
        .map(|share| {
            let mut du = scratch::lend::<T>(len);
            let mut buffers = Buffers::lend(g);
            let xs = groups(x, share, g.cin, g.h * g.w);
            let gys = groups(gy, share, g.cout, g.ohw());
            for (k, ((_, lanes, xt), (_, _, gyt))) in xs.zip(gys).enumerate() {
                let x = Group { data: &xt, lanes };
                let gy = Group { data: &gyt, lanes };
                weight_grad_group(g, (&x, &gy), &mut buffers, &mut du[..len], k > 0);
                scratch::give_back(xt);
                scratch::give_back(gyt);
            }
            buffers.give_back();
            du
        })
        .collect();
    let gw = transforms::kernel_transform_adjoint(g, &partials, layout, &G);
    partials.into_iter().for_each(scratch::give_back);
    gw
}

/// Adds one group's `∂L/∂u` into `du` (written, not added, for the first chunk unless
/// `accumulate`).
fn weight_grad_group<T: Element>(
    g: &ConvGeom,
    (x, gy): (&Group<T>, &Group<T>),
    buffers: &mut Buffers<T>,
    du: &mut [T],
    accumulate: bool,
) {
    let (th, tw) = tiles(g);
    let n = x.lanes;
    let per = chunk_tiles(g, n);
    let fs = filter_stride::<T>(g);
    let (v, dm) = (&mut buffers.v, &mut buffers.m);
    for (k, first) in (0..th * tw).step_by(per).enumerate() {
        let chunk = Chunk {
            first,
            count: per.min(th * tw - first),
        };
        let cols = chunk.count * n;
        let (vs, ms) = (
            padded_stride::<T>(g.cin * cols),
            padded_stride::<T>(g.cout * cols),
        );
        for ci in 0..g.cin {
            input_transform(g, x, chunk, ci, v, (cols, vs));
        }
        for co in 0..g.cout {
            grad_output_transform(g, gy, chunk, co, dm, (cols, ms));
        }
        for e in 0..POS {
            let a = MatRef::rows(&dm[e * ms..], cols);
            let b = MatRef::transposed(&v[e * vs..], cols);
            let add = accumulate || k > 0;
            // SAFETY: a is cout x cols (dm's position e), b is cols x cin (v's position e,
            // transposed); the result goes to position e of every filter in du.
            unsafe { gemm(g.cout, g.cin, cols, &mut du[e * g.cin..], fs, add, a, b, 1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transforms::{left, right_t, transpose};
    use super::*;

    /// `Bᵀ`: the input transform `v = Bᵀ d B` of a 6x6 input tile `d`.
    const BT: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    /// `Aᵀ`: the output transform `y = Aᵀ m A` of a 6x6 product tile `m`.
    const AT: [[f64; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    /// The matrix a 1-D lane transform applies, read off its action on unit vectors.
    fn matrix_of<const K: usize, const R: usize>(
        f: impl Fn(&[Lanes<f64>; K]) -> [Lanes<f64>; R],
    ) -> [[f64; K]; R] {
        let mut m = [[0.0; K]; R];
        for k in 0..K {
            let mut unit = [[0.0; LANES]; K];
            unit[k] = [1.0; LANES];
            let col = f(&unit);
            for r in 0..R {
                assert!(col[r].iter().all(|&v| v == col[r][0]), "lanes differ");
                m[r][k] = col[r][0];
            }
        }
        m
    }

    #[test]
    fn the_lane_transforms_apply_lavins_matrices() {
        assert_eq!(matrix_of(bt::<f64>), BT);
        assert_eq!(matrix_of(at::<f64>), AT);
        assert_eq!(matrix_of(a::<f64>), transpose(AT));
    }

    /// On one tile, in f64: `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` is the 3x3 correlation of the 6x6
    /// tile `d` with `g`, computed directly.
    #[test]
    fn one_tile_of_transforms_is_the_correlation() {
        let d: [[f64; 6]; 6] =
            std::array::from_fn(|r| std::array::from_fn(|c| ((r * 7 + c * 3) % 5) as f64 - 2.0));
        let k: [[f64; 3]; 3] = [[1.0, -2.0, 0.5], [0.0, 3.0, 1.0], [-1.0, 0.25, 2.0]];
        let lanes = |v: f64| [v; LANES];
        let (mut t6, mut v) = ([[[0.0; LANES]; 6]; 6], [[[0.0; LANES]; 6]; 6]);
        both_ways(&d.map(|row| row.map(lanes)), bt, &mut t6, &mut v);
        let (mut tk, mut u) = ([[[0.0; LANES]; 3]; 6], [[[0.0; LANES]; 6]; 6]);
        left(&G, &k.map(|row| row.map(lanes)), &mut tk);
        right_t(&tk, &G, &mut u);
        let m: [[Lanes<f64>; 6]; 6] = std::array::from_fn(|r| {
            std::array::from_fn(|c| std::array::from_fn(|i| u[r][c][i] * v[r][c][i]))
        });
        let (mut t4, mut y) = ([[[0.0; LANES]; 6]; 4], [[[0.0; LANES]; 4]; 4]);
        both_ways(&m, at, &mut t4, &mut y);
        for oy in 0..4 {
            for ox in 0..4 {
                let want: f64 = (0..9)
                    .map(|t| d[oy + t / 3][ox + t % 3] * k[t / 3][t % 3])
                    .sum();
                let got = y[oy][ox][5];
                assert!(
                    (got - want).abs() < 1e-12,
                    "({oy}, {ox}): {got} against {want}"
                );
            }
        }
    }
}
