//! The Winograd transforms of inputs, outputs and output gradients for 16 tiles at once in
//! AVX-512 registers, where the CPU has them (checked at run time: the crate itself is built
//! for baseline x86-64).
//!
//! Written by hand because the compiler left the portable version scalar: a tile row of an
//! 8x8-16x16 map holds only 4-8 tiles, too few for its vector loops, and the tiles' columns
//! sit two apart. Here one permute splits 32 consecutive values into the even and odd
//! columns of 16 tiles (or interleaves them back), and masked loads and stores handle rows
//! of fewer than 16 tiles.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values past the end of a row of tiles that [`input_tiles`] may read (and ignore).
pub(crate) const OVERREAD: usize = 34;

/// Whether [`input_tiles`] can run here (and the CPU kernels allow it).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::ops::cpu_kernels().simd && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Writes `Bᵀ d B` of tiles `0..len` (at most 16) of one tile row into
/// `out[at + e * stride..][..len]` for the 16 positions `e`. Tile `j` reads columns
/// `2j..2j + 4` of the four rows of `padded` that start at `rows[r]`, each row `pw` long.
///
/// # Panics
/// If `padded` does not hold [`OVERREAD`] values past the last row's `2 * len + 2` used
/// ones, or `out` is too short for position 15.
pub(crate) fn input_tiles(
    padded: &[f32],
    rows: [usize; 4],
    len: usize,
    out: &mut [f32],
    (at, stride): (usize, usize),
) {
    assert!(len <= 16);
    assert!(rows.iter().all(|&r| r + OVERREAD <= padded.len()));
    assert!(at + 15 * stride + len <= out.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; the loads stay within `padded` (asserted: each
    // reads 32 values from `rows[r]` or `rows[r] + 2`, within OVERREAD) and the masked stores
    // write `len` values at each position's start, within `out` (asserted).
    unsafe {
        input_tiles_avx512(padded.as_ptr(), rows, len, out.as_mut_ptr(), (at, stride))
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("input_tiles needs x86_64 with AVX-512")
}

/// Columns `2j`, `2j + 1`, `2j + 2` and `2j + 3` of tiles `j = 0..16`, from the 34 values at `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_columns(p: *const f32) -> [__m512; 4] {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
    let (c, d) = (_mm512_loadu_ps(p.add(2)), _mm512_loadu_ps(p.add(18)));
    [
        _mm512_permutex2var_ps(a, even, b),
        _mm512_permutex2var_ps(a, odd, b),
        _mm512_permutex2var_ps(c, even, d),
        _mm512_permutex2var_ps(c, odd, d),
    ]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles_avx512(
    padded: *const f32,
    rows: [usize; 4],
    len: usize,
    out: *mut f32,
    (at, stride): (usize, usize),
) {
    let d = [
        tile_columns(padded.add(rows[0])),
        tile_columns(padded.add(rows[1])),
        tile_columns(padded.add(rows[2])),
        tile_columns(padded.add(rows[3])),
    ];
    // t = Bᵀ d, down the tiles' rows: t[r][c] is row r, column c.
    let mut t = [[_mm512_setzero_ps(); 4]; 4];
    for c in 0..4 {
        t[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
        t[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
        t[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
        t[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
    }
    // Then each row of t times B, across its columns: position e = r * 4 + k.
    let mask: __mmask16 = ((1u32 << len) - 1) as u16;
    for (r, row) in t.iter().enumerate() {
        let v = [
            _mm512_sub_ps(row[0], row[2]),
            _mm512_add_ps(row[1], row[2]),
            _mm512_sub_ps(row[2], row[1]),
            _mm512_sub_ps(row[1], row[3]),
        ];
        for (k, v) in v.into_iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(at + (r * 4 + k) * stride), mask, v);
        }
    }
}

/// Writes `Aᵀ m A` of tiles `0..len` (at most 16) of one tile row, whose 16 positions `e`
/// are at `m[at + e * stride..][..len]`, as output rows: row `r` of the tiles (if
/// `rows[r]` is `Some(start)`) into `out[start..][..count]`, two columns per tile.
///
/// # Panics
/// If `m` is too short for position 15, or a row's `count` values do not fit in `out`, or
/// `count > 2 * len`.
pub(crate) fn output_tiles(
    m: &[f32],
    (at, stride): (usize, usize),
    len: usize,
    out: &mut [f32],
    (rows, count): ([Option<usize>; 2], usize),
) {
    assert!(len <= 16 && count <= 2 * len);
    assert!(at + 15 * stride + len <= m.len());
    assert!(rows.iter().flatten().all(|&r| r + count <= out.len()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; loads and stores are masked to `len` values
    // per position and `count` per row, all within the slices (asserted).
    unsafe {
        output_tiles_avx512(
            m.as_ptr(),
            (at, stride),
            len,
            out.as_mut_ptr(),
            (rows, count),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("output_tiles needs x86_64 with AVX-512")
}

/// The first `n` of 16 lanes.
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as u16
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles_avx512(
    m: *const f32,
    (at, stride): (usize, usize),
    len: usize,
    out: *mut f32,
    (rows, count): ([Option<usize>; 2], usize),
) {
    let load = lanes(len);
    let mut p = [[_mm512_setzero_ps(); 4]; 4];
    for (e, v) in p.iter_mut().flatten().enumerate() {
        *v = _mm512_maskz_loadu_ps(load, m.add(at + e * stride));
    }
    // t = Aᵀ p down the tiles' rows (2 x 4), then each row of t times A (2 x 2).
    let mut t = [[_mm512_setzero_ps(); 4]; 2];
    for c in 0..4 {
        t[0][c] = _mm512_add_ps(_mm512_add_ps(p[0][c], p[1][c]), p[2][c]);
        t[1][c] = _mm512_sub_ps(_mm512_sub_ps(p[1][c], p[2][c]), p[3][c]);
    }
    // Columns 2j and 2j + 1 of tile j interleaved back into 32 consecutive values.
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (row, start) in t.iter().zip(rows) {
        let Some(start) = start else { continue };
        let left = _mm512_add_ps(_mm512_add_ps(row[0], row[1]), row[2]);
        let right = _mm512_sub_ps(_mm512_sub_ps(row[1], row[2]), row[3]);
        let dst = out.add(start);
        let lo = _mm512_permutex2var_ps(left, first, right);
        _mm512_mask_storeu_ps(dst, lanes(count), lo);
        if count > 16 {
            let hi = _mm512_permutex2var_ps(left, second, right);
            _mm512_mask_storeu_ps(dst.add(16), lanes(count - 16), hi);
        }
    }
}

/// Writes `A dy Aᵀ` of tiles `0..len` (at most 16) of one tile row of an output gradient
/// into `out[at + e * stride..][..len]` for the 16 positions `e`. Row `r` of the tiles
/// reads `dy[start..][..count]` (two columns per tile) if `rows[r]` is `Some(start)`;
/// values past the map's edge (beyond `count`, or a `None` row) count as zero.
///
/// # Panics
/// If a row's `count` values are not within `dy`, `count > 2 * len`, or `out` is too
/// short for position 15.
pub(crate) fn grad_output_tiles(
    dy: &[f32],
    (rows, count): ([Option<usize>; 2], usize),
    len: usize,
    out: &mut [f32],
    (at, stride): (usize, usize),
) {
    assert!(len <= 16 && count <= 2 * len);
    assert!(rows.iter().flatten().all(|&r| r + count <= dy.len()));
    assert!(at + 15 * stride + len <= out.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; loads are masked to `count` values per row and
    // stores to `len` per position, all within the slices (asserted).
    unsafe {
        grad_output_tiles_avx512(
            dy.as_ptr(),
            (rows, count),
            len,
            out.as_mut_ptr(),
            (at, stride),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("grad_output_tiles needs x86_64 with AVX-512")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_output_tiles_avx512(
    dy: *const f32,
    (rows, count): ([Option<usize>; 2], usize),
    len: usize,
    out: *mut f32,
    (at, stride): (usize, usize),
) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // d[r] = columns 0 and 1 of row r of the 16 tiles (zero past the edge).
    let mut d = [[_mm512_setzero_ps(); 2]; 2];
    for (r, start) in rows.iter().enumerate() {
        let Some(start) = *start else { continue };
        let p = dy.add(start);
        let lo = _mm512_maskz_loadu_ps(lanes(count), p);
        let hi = match count > 16 {
            true => _mm512_maskz_loadu_ps(lanes(count - 16), p.add(16)),
            false => _mm512_setzero_ps(),
        };
        d[r] = [
            _mm512_permutex2var_ps(lo, even, hi),
            _mm512_permutex2var_ps(lo, odd, hi),
        ];
    }
    // t = A d down the rows (4 x 2), then each row of t times Aᵀ (4 x 4).
    let zero = _mm512_setzero_ps();
    let mut t = [[zero; 2]; 4];
    for c in 0..2 {
        t[0][c] = d[0][c];
        t[1][c] = _mm512_add_ps(d[0][c], d[1][c]);
        t[2][c] = _mm512_sub_ps(d[0][c], d[1][c]);
        t[3][c] = _mm512_sub_ps(zero, d[1][c]);
    }
    let store = lanes(len);
    for (r, [a, b]) in t.into_iter().enumerate() {
        let v = [
            a,
            _mm512_add_ps(a, b),
            _mm512_sub_ps(a, b),
            _mm512_sub_ps(zero, b),
        ];
        for (k, v) in v.into_iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(at + (r * 4 + k) * stride), store, v);
        }
    }
}
