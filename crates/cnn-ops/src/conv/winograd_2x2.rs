//! Winograd F(2x2, 3x3) convolution for stride-1 3x3 kernels (Lavin & Gray, 2015): each
//! 2x2 output tile costs 16 multiplies per channel pair instead of 36, done as 16 GEMMs.
//!
//! The input is cut into overlapping 4x4 tiles (`v = Bᵀ d B`), the kernel into 4x4
//! transforms (`u = G g Gᵀ`), the 16 element positions multiply as independent
//! `cout x cin` by `cin x tiles` GEMMs, and `y = Aᵀ m A` folds each tile back to 2x2. The
//! batch is split across threads as in [`super::im2col_gemm`]; each thread transforms a chunk of
//! images at a time so that small maps still give the GEMMs enough tiles. In f32 on CPUs
//! with AVX-512 the three tile transforms run in [`super::winograd_simd`] instead of the
//! portable loops here.

// The transforms are small matrix products written out by row and column index; iterator
// chains would hide the algebra they transcribe.
#![allow(clippy::needless_range_loop)]

use super::geometry::{ConvGeom, KernelLayout};
use super::winograd_simd as simd;
use super::winograd_transforms;
use crate::cpu::{gemm, padded_stride, scratch, zeros, Element, MatRef};
use rayon::prelude::*;
use std::any::TypeId;

/// Transformed positions per tile (4x4).
const POS: usize = 16;
/// Fewest tiles per GEMM worth one call; smaller maps batch images together. Smaller
/// chunks keep the transformed data in cache: 64 against 256 measured ResNet34@224
/// inference 48-51 -> 54-55 img/s and ResNet18@224 training 24.6-25.3 -> 25.3-26.5.
const MIN_TILES: usize = 64;
/// Largest transformed input a chunk may hold (elements), to bound scratch memory.
const MAX_V: usize = 1 << 22;
/// Smallest output map (rows and columns) worth the transforms.
const MIN_MAP: usize = 8;
/// Fewest input and output channels for which the 16 smaller GEMMs beat im2col's one.
const MIN_CHANNELS: usize = 16;
/// Maps smaller than this (rows or columns) take Winograd only with [`SMALL_MAP_CHANNELS`]
/// channels or more on both sides. With one tile row per AVX-512 call, 8x8 maps of 64
/// channels (ResNet18's layer 1 at 32 px, batch 32) ran faster through im2col (forward 345
/// GFLOP/s against 250-255); with 4 tile rows per call ([`row_groups`]) Winograd runs them
/// at 412 forward, 454 input gradient, 317 weight gradient (im2col's: 328, 316, 223), and
/// ResNet18@32 trains 6-7 % faster.
const SMALL_MAP: usize = 16;
const SMALL_MAP_CHANNELS: usize = 64;

/// Whether [`forward`] computes this convolution: a stride-1 3x3 kernel, padding at most 2,
/// output maps of at least [`MIN_MAP`] square and enough channels on both sides (more on
/// maps under [`SMALL_MAP`]).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let channels = g.cin.min(g.cout);
    let small = g.oh.min(g.ow) < SMALL_MAP;
    g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.pad <= 2
        && g.oh >= MIN_MAP
        && g.ow >= MIN_MAP
        && channels >= MIN_CHANNELS
        && (!small || channels >= SMALL_MAP_CHANNELS)
}

/// Tiles of one image: `(rows, columns)` of 2x2 output tiles.
fn tiles(g: &ConvGeom) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

// Blocks and filter rows are [`padded_stride`] apart: the transforms write (or read) each
// tile's 16 values one per position's block, and the GEMMs read the transformed kernel and
// write its gradient a filter (16 positions) per row; on ResNet's layer 1 at 64 px the
// blocks were 16 KiB apart (64 channels of 64 tiles) and the filters 4 KiB.

/// Elements between the filters of a transformed kernel `u` (and of its gradient), each
/// `16 cin` values: the GEMMs' row stride for position `e` of every filter.
fn filter_stride<T>(g: &ConvGeom) -> usize {
    winograd_transforms::filter_stride::<T, 4>(g)
}

/// Elements between the 16 position blocks of a chunk's transformed input (`cin` rows of
/// `cols` tiles) and of its products or output-gradient transforms (`cout` rows).
fn block_strides<T>(g: &ConvGeom, cols: usize) -> (usize, usize) {
    (
        padded_stride::<T>(g.cin * cols),
        padded_stride::<T>(g.cout * cols),
    )
}

/// Images transformed together out of a share of `count`: enough for [`MIN_TILES`] tiles,
/// within [`MAX_V`], in equal chunks.
fn chunk(g: &ConvGeom, count: usize) -> usize {
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let want = MIN_TILES
        .div_ceil(per_image)
        .min((MAX_V / (POS * g.cin.max(g.cout) * per_image)).max(1))
        .clamp(1, count.max(1));
    count.div_ceil(count.div_ceil(want).max(1)).max(1)
}

/// `y = conv(x, w)` for an NCHW batch and a 3x3 kernel in `layout` (see [`applies`]).
pub(crate) fn forward<T: Element>(g: &ConvGeom, x: &[T], w: &[T], layout: KernelLayout) -> Vec<T> {
    let u = winograd_transforms::kernel_transform(g, w, layout, &G);
    let shares = g.batch_shares();
    let mut y = zeros(g.n * g.out_image());
    let jobs: Vec<_> = shares
        .iter()
        .zip(y.chunks_mut(shares[0].1 * g.out_image()))
        .collect();
    jobs.into_par_iter().for_each(|(&(first, count), out)| {
        forward_share(g, &u, x, first, count, out);
    });
    scratch::give_back(u);
    y
}

/// Runs images `first..first + count` into `y` (their slice of the output), a chunk of
/// images at a time.
fn forward_share<T: Element>(
    g: &ConvGeom,
    u: &[T],
    x: &[T],
    first: usize,
    count: usize,
    y: &mut [T],
) {
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let chunk = chunk(g, count);
    for c0 in (0..count).step_by(chunk) {
        let imgs = chunk.min(count - c0);
        let cols = imgs * per_image;
        let (vs, ms) = block_strides::<T>(g, cols);
        let mut v = scratch::lend::<T>(POS * vs);
        let mut m = scratch::lend::<T>(POS * ms);
        for j in 0..imgs {
            let img = &x[(first + c0 + j) * g.in_image()..][..g.in_image()];
            input_transform(g, img, &mut v, (cols, vs), j * per_image);
        }
        for e in 0..POS {
            let a = MatRef::rows(&u[e * g.cin..], filter_stride::<T>(g));
            let b = MatRef::rows(&v[e * vs..], cols);
            // SAFETY: a is cout x cin (position e of every filter in u), b is cin x cols
            // (v's block e).
            unsafe { gemm(g.cout, cols, g.cin, &mut m[e * ms..], cols, false, a, b, 1) };
        }
        for j in 0..imgs {
            let out = &mut y[(c0 + j) * g.out_image()..][..g.out_image()];
            output_transform(g, &m, (cols, ms), j * per_image, out);
        }
        scratch::give_back(m);
        scratch::give_back(v);
    }
}

/// `∂L/∂w` of [`forward`] given the output gradient `gy`, in the transformed domain:
/// `∂L/∂u[e] = Σ_tiles (A gy Aᵀ)[e] · v[e]ᵀ`, 16 GEMMs whose reduction runs over every
/// tile of the batch, then `∂L/∂w = Gᵀ (∂L/∂u) G` per kernel, summing the threads' parts.
/// The gradient comes in `layout`.
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
        .map(|(first, count)| {
            let mut du = scratch::lend::<T>(len);
            weight_grad_share(g, x, gy, first, count, &mut du[..len]);
            du
        })
        .collect();
    let gw = winograd_transforms::kernel_transform_adjoint(g, &partials, layout, &G);
    partials.into_iter().for_each(scratch::give_back);
    gw
}

/// Accumulates `∂L/∂u` (cout x 16 x cin, as [`winograd_transforms::kernel_transform`] lays
/// out `u`) over images `first..first + count`.
fn weight_grad_share<T: Element>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    first: usize,
    count: usize,
    du: &mut [T],
) {
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let chunk = chunk(g, count);
    for (k, c0) in (0..count).step_by(chunk).enumerate() {
        let imgs = chunk.min(count - c0);
        let cols = imgs * per_image;
        let (vs, ms) = block_strides::<T>(g, cols);
        let mut v = scratch::lend::<T>(POS * vs);
        let mut dm = scratch::lend::<T>(POS * ms);
        for j in 0..imgs {
            let i = first + c0 + j;
            let img = &x[i * g.in_image()..][..g.in_image()];
            input_transform(g, img, &mut v, (cols, vs), j * per_image);
            let grad = &gy[i * g.out_image()..][..g.out_image()];
            grad_output_transform(g, grad, &mut dm, (cols, ms), j * per_image);
        }
        for e in 0..POS {
            let a = MatRef::rows(&dm[e * ms..], cols);
            let b = MatRef::transposed(&v[e * vs..], cols);
            // SAFETY: a is cout x cols (dm's block e), b is cols x cin (v's block e, transposed);
            // the result goes to position e of every filter in du.
            unsafe {
                gemm(
                    g.cout,
                    g.cin,
                    cols,
                    &mut du[e * g.cin..],
                    filter_stride::<T>(g),
                    k > 0,
                    a,
                    b,
                    1,
                )
            };
        }
        scratch::give_back(dm);
        scratch::give_back(v);
    }
}

/// Writes `A gy Aᵀ` of every 2x2 output-gradient tile of one image into
/// `dm[e][co][col0 + tile]` (rows `ld` apart, positions `pos`), with
/// `A = [[1, 0], [1, 1], [1, -1], [0, -1]]`; outputs past the map's edge count as zero. The
/// adjoint of [`output_transform`].
fn grad_output_transform<T: Element>(
    g: &ConvGeom,
    gy: &[T],
    dm: &mut [T],
    (ld, pos): (usize, usize),
    col0: usize,
) {
    let (th, tw) = tiles(g);
    let mut run = [[T::ZERO; TILE_RUN]; POS];
    let simd = simd::available();
    let groups = row_groups(g);
    for co in 0..g.cout {
        let plane = &gy[co * g.ohw()..][..g.ohw()];
        if let (true, Some(plane), Some(dm)) = (simd, as_f32(plane), as_f32_mut(dm)) {
            for (ty, tx0, len) in simd_runs(g, groups) {
                let at = co * ld + col0 + ty * tw + tx0;
                let (rows, count) = output_rows(g, groups, (ty, tx0), len);
                let rows = &rows[..groups];
                simd::grad_output_tiles(plane, (rows, count), len, dm, (at, pos));
            }
            continue;
        }
        let at = |y: usize, x: usize| {
            if y < g.oh && x < g.ow {
                plane[y * g.ow + x]
            } else {
                T::ZERO
            }
        };
        for ty in 0..th {
            for tx0 in (0..tw).step_by(TILE_RUN) {
                let len = TILE_RUN.min(tw - tx0);
                for i in 0..len {
                    let (y0, x0) = (2 * ty, 2 * (tx0 + i));
                    let d = [
                        [at(y0, x0), at(y0, x0 + 1)],
                        [at(y0 + 1, x0), at(y0 + 1, x0 + 1)],
                    ];
                    // t = A d (4x2), then t Aᵀ (4x4).
                    let t = [
                        d[0],
                        [d[0][0] + d[1][0], d[0][1] + d[1][1]],
                        [d[0][0] - d[1][0], d[0][1] - d[1][1]],
                        [T::ZERO - d[1][0], T::ZERO - d[1][1]],
                    ];
                    for (r, row) in t.iter().enumerate() {
                        run[r * 4][i] = row[0];
                        run[r * 4 + 1][i] = row[0] + row[1];
                        run[r * 4 + 2][i] = row[0] - row[1];
                        run[r * 4 + 3][i] = T::ZERO - row[1];
                    }
                }
                let col = col0 + ty * tw + tx0;
                for (e, vals) in run.iter().enumerate() {
                    dm[e * pos + co * ld + col..][..len].copy_from_slice(&vals[..len]);
                }
            }
        }
    }
}

/// `G`: the kernel transform `u = G g Gᵀ` of a 3x3 kernel `g`
/// ([`winograd_transforms::kernel_transform`]).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Tiles transformed together: each of the 16 positions' results for them is written (or
/// read) as one run of consecutive elements instead of 16 scattered single stores, which
/// made the naive transforms slower than im2col.
const TILE_RUN: usize = 16;

/// Writes the 4x4 transforms `Bᵀ d B` of every tile `d` of image `x` into
/// `v[e][ci][col0 + tile]` (rows `ld` apart, positions `pos`), with
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
fn input_transform<T: Element>(
    g: &ConvGeom,
    x: &[T],
    v: &mut [T],
    (ld, pos): (usize, usize),
    col0: usize,
) {
    let (th, tw) = tiles(g);
    // Each plane is first copied into a zero-bordered one that every tile lies inside, so
    // the tile loop has no edge cases (on 8x8 maps most tiles touch the border).
    let (ph, pw) = (2 * th + 2, 2 * tw + 2);
    let mut padded = vec![T::ZERO; ph * pw + simd::OVERREAD];
    let mut run = [[T::ZERO; TILE_RUN]; POS];
    let simd = simd::available();
    let groups = row_groups(g);
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for (y, row) in plane.chunks_exact(g.w).enumerate().take(ph - g.pad) {
            let len = g.w.min(pw - g.pad);
            padded[(y + g.pad) * pw + g.pad..][..len].copy_from_slice(&row[..len]);
        }
        if let (true, Some(padded), Some(v)) = (simd, as_f32(&padded), as_f32_mut(v)) {
            for (ty, tx0, len) in simd_runs(g, groups) {
                let rows: [[usize; 4]; 4] = std::array::from_fn(|k| {
                    std::array::from_fn(|r| (2 * (ty + k) + r) * pw + 2 * tx0)
                });
                let at = ci * ld + col0 + ty * tw + tx0;
                simd::input_tiles(padded, &rows[..groups], len, v, (at, pos));
            }
            continue;
        }
        for ty in 0..th {
            for tx0 in (0..tw).step_by(TILE_RUN) {
                let len = TILE_RUN.min(tw - tx0);
                for i in 0..len {
                    let start = 2 * ty * pw + 2 * (tx0 + i);
                    let mut d = [[T::ZERO; 4]; 4];
                    for (r, row) in d.iter_mut().enumerate() {
                        row.copy_from_slice(&padded[start + r * pw..][..4]);
                    }
                    // t = Bᵀ d (rows), then t B (columns).
                    for c in 0..4 {
                        let t = [
                            d[0][c] - d[2][c],
                            d[1][c] + d[2][c],
                            d[2][c] - d[1][c],
                            d[1][c] - d[3][c],
                        ];
                        for (r, &tv) in t.iter().enumerate() {
                            d[r][c] = tv;
                        }
                    }
                    for (r, row) in d.iter().enumerate() {
                        run[r * 4][i] = row[0] - row[2];
                        run[r * 4 + 1][i] = row[1] + row[2];
                        run[r * 4 + 2][i] = row[2] - row[1];
                        run[r * 4 + 3][i] = row[1] - row[3];
                    }
                }
                let col = col0 + ty * tw + tx0;
                for (e, vals) in run.iter().enumerate() {
                    v[e * pos + ci * ld + col..][..len].copy_from_slice(&vals[..len]);
                }
            }
        }
    }
}

/// Folds the products `m[e][co][col0 + tile]` (rows `ld` apart, positions `pos`) of one
/// image back into its output `y` (cout x oh x ow) as `Aᵀ m A`, with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`, dropping the outputs past the map's edge.
fn output_transform<T: Element>(
    g: &ConvGeom,
    m: &[T],
    (ld, pos): (usize, usize),
    col0: usize,
    y: &mut [T],
) {
    let (th, tw) = tiles(g);
    let mut run = [[T::ZERO; TILE_RUN]; POS];
    let simd = simd::available();
    let groups = row_groups(g);
    for co in 0..g.cout {
        let plane = &mut y[co * g.ohw()..][..g.ohw()];
        if let (true, Some(m), Some(plane)) = (simd, as_f32(m), as_f32_mut(plane)) {
            for (ty, tx0, len) in simd_runs(g, groups) {
                let at = co * ld + col0 + ty * tw + tx0;
                let (rows, count) = output_rows(g, groups, (ty, tx0), len);
                let rows = &rows[..groups];
                simd::output_tiles(m, (at, pos), len, plane, (rows, count));
            }
            continue;
        }
        for ty in 0..th {
            for tx0 in (0..tw).step_by(TILE_RUN) {
                let len = TILE_RUN.min(tw - tx0);
                let col = col0 + ty * tw + tx0;
                for (e, vals) in run.iter_mut().enumerate() {
                    vals[..len].copy_from_slice(&m[e * pos + co * ld + col..][..len]);
                }
                for i in 0..len {
                    let val = |e: usize| run[e][i];
                    // t = Aᵀ m (2x4), then t A (2x2).
                    let mut t = [[T::ZERO; 4]; 2];
                    for c in 0..4 {
                        let (m0, m1, m2, m3) = (val(c), val(4 + c), val(8 + c), val(12 + c));
                        t[0][c] = m0 + m1 + m2;
                        t[1][c] = m1 - m2 - m3;
                    }
                    let tx = tx0 + i;
                    for (r, row) in t.iter().enumerate() {
                        let oy = 2 * ty + r;
                        if oy >= g.oh {
                            continue;
                        }
                        let out = [row[0] + row[1] + row[2], row[1] - row[2] - row[3]];
                        for (c, &v) in out.iter().enumerate() {
                            let ox = 2 * tx + c;
                            if ox < g.ow {
                                plane[oy * g.ow + ox] = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Tile rows the AVX-512 transforms take side by side in their 16 lanes: 2 on maps 16
/// wide, 4 on maps 8 wide (8 or 4 tiles a row, ResNet's layers 1 and 2 at 64 px), where
/// the map is whole tiles and its tile rows come in such groups; else 1. One row at a time,
/// the transforms of those layers ran half or a quarter of their lanes.
fn row_groups(g: &ConvGeom) -> usize {
    let (th, tw) = tiles(g);
    let whole = g.oh == 2 * th && g.ow == 2 * tw;
    match tw {
        4 | 8 if whole && th % (16 / tw) == 0 => 16 / tw,
        _ => 1,
    }
}

/// The calls the AVX-512 transforms make for one plane: `(ty, tx0, len)`, the first tile
/// row and column and the tiles (lanes) used, `groups` tile rows ([`row_groups`]) at a time.
fn simd_runs(g: &ConvGeom, groups: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (th, tw) = tiles(g);
    (0..th).step_by(groups).flat_map(move |ty| {
        (0..tw)
            .step_by(16)
            .map(move |tx0| (ty, tx0, (groups * (tw - tx0)).min(16)))
    })
}

/// Where `len` tiles from tile `(ty, tx0)` lie in an output plane, for each of the tile
/// rows from `ty` (the first `groups` are the call's, see [`row_groups`]): the start of
/// each of their two rows (`None` past the map's bottom edge), and the values per row (two
/// per tile, fewer at the right edge), as the AVX-512 transforms take them.
fn output_rows(
    g: &ConvGeom,
    groups: usize,
    (ty, tx0): (usize, usize),
    len: usize,
) -> ([[Option<usize>; 2]; 4], usize) {
    let row = |y: usize| (y < g.oh).then(|| y * g.ow + 2 * tx0);
    let rows = std::array::from_fn(|k| [0, 1].map(|r| row(2 * (ty + k) + r)));
    (rows, (2 * len / groups).min(g.ow - 2 * tx0))
}

/// `s` as f32 values, if `T` is f32 (for the hand-written f32 transforms).
fn as_f32<T: Element>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32, so the slice's memory holds `len` f32 values.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// [`as_f32`] for a mutable slice.
fn as_f32_mut<T: Element>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`; the borrow of `s` moves into the result.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}
