//! The Winograd transforms of inputs, outputs and output gradients for 16 tiles at once in
//! AVX-512 registers, where the CPU has them (checked at run time: the crate itself is built
//! for baseline x86-64).
//!
//! Written by hand because the compiler left the portable version scalar: a tile row of an
//! 8x8-16x16 map holds only 4-8 tiles, too few for its vector loops, and the tiles' columns
//! sit two apart. Here one permute splits 32 consecutive values into the even and odd
//! columns of 16 tiles (or interleaves them back), and masked loads and stores handle rows
//! of fewer than 16 tiles. Maps 16 or 8 wide (8 or 4 tiles a row) fill the lanes with 2 or
//! 4 tile rows side by side instead (see [`load_groups`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values past the end of a row of tiles that [`input_tiles`] may read (and ignore).
pub(crate) const OVERREAD: usize = 34;

/// Whether [`input_tiles`] can run here (and the CPU choice allows it).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::cpu::wide_simd() == crate::cpu::WideSimd::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Writes `Bᵀ d B` of tiles `0..len` (at most 16) of one tile row, or of 2 or 4 tile rows
/// of 8 or 4 tiles side by side, into `out[at + e * stride..][..len]` for the 16 positions
/// `e`. The tiles of group `k` (`rows[k]`, one group per tile row) read the four rows of
/// `padded` that start at `rows[k][r]`: tile `j` of the group columns `2j..2j + 4`.
///
/// # Panics
/// If there are not 1, 2 or 4 groups, or several but `len` is not 16, or `padded` does not
/// hold [`OVERREAD`] values past each row's start, or `out` is too short for position 15.
pub(crate) fn input_tiles(
    padded: &[f32],
    rows: &[[usize; 4]],
    len: usize,
    out: &mut [f32],
    (at, stride): (usize, usize),
) {
    assert!(len <= 16 && matches!(rows.len(), 1 | 2 | 4));
    assert!(
        rows.len() == 1 || len == 16,
        "grouped tile rows fill all 16 lanes"
    );
    assert!(rows.iter().flatten().all(|&r| r + OVERREAD <= padded.len()));
    assert!(at + 15 * stride + len <= out.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; the loads stay within `padded` (asserted: each
    // reads at most 32 values from a row's start or 2 past it, within OVERREAD) and the
    // masked stores write `len` values at each position's start, within `out` (asserted).
    unsafe {
        input_tiles_avx512(padded.as_ptr(), rows, len, out.as_mut_ptr(), (at, stride))
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("input_tiles needs x86_64 with AVX-512")
}

/// 32 values as two registers, from 1, 2 or 4 groups' `starts`: one group's 32 consecutive
/// values, two groups' 16 each (one register each) or four groups' 8 each (a register's
/// halves), `off` values past each start. In each case the even (odd) lanes picked by one
/// permute are the even (odd) columns of 16 tiles, group by group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_groups(starts: &[*const f32], off: usize) -> (__m512, __m512) {
    match *starts {
        [p] => (
            _mm512_loadu_ps(p.add(off)),
            _mm512_loadu_ps(p.add(off + 16)),
        ),
        [p, q] => (_mm512_loadu_ps(p.add(off)), _mm512_loadu_ps(q.add(off))),
        [p, q, r, s] => (
            halves(p.add(off), q.add(off)),
            halves(r.add(off), s.add(off)),
        ),
        _ => unreachable!("1, 2 or 4 tile rows"),
    }
}

/// 8 values from `lo` in the lower half of a register and 8 from `hi` in the upper half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn halves(lo: *const f32, hi: *const f32) -> __m512 {
    let lo = _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(lo)));
    let hi = _mm256_castps_pd(_mm256_loadu_ps(hi));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, hi))
}

/// The even and odd lanes of the 32 values in `(a, b)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn deinterleave((a, b): (__m512, __m512)) -> [__m512; 2] {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    [
        _mm512_permutex2var_ps(a, even, b),
        _mm512_permutex2var_ps(a, odd, b),
    ]
}

/// Columns `2j`, `2j + 1`, `2j + 2` and `2j + 3` of the 16 tiles whose rows start at
/// `starts` (see [`load_groups`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_columns(starts: &[*const f32]) -> [__m512; 4] {
    let [c0, c1] = deinterleave(load_groups(starts, 0));
    let [c2, c3] = deinterleave(load_groups(starts, 2));
    [c0, c1, c2, c3]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles_avx512(
    padded: *const f32,
    rows: &[[usize; 4]],
    len: usize,
    out: *mut f32,
    (at, stride): (usize, usize),
) {
    let mut d = [[_mm512_setzero_ps(); 4]; 4];
    for (r, d) in d.iter_mut().enumerate() {
        let mut starts = [padded; 4];
        for (k, group) in rows.iter().enumerate() {
            starts[k] = padded.add(group[r]);
        }
        *d = tile_columns(&starts[..rows.len()]);
    }
    // t = Bᵀ d, down the tiles' rows: t[r][c] is row r, column c.
    let mut t = [[_mm512_setzero_ps(); 4]; 4];
    for c in 0..4 {
        t[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
        t[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
        t[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
        t[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
    }
    // Then each row of t times B, across its columns: position e = r * 4 + k.
    let mask = lanes(len);
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

/// Writes `Aᵀ m A` of tiles `0..len` (at most 16) of one tile row, or of 2 or 4 tile rows
/// side by side as [`input_tiles`] takes them, whose 16 positions `e` are at
/// `m[at + e * stride..][..len]`, as output rows: row `r` of group `k`'s tiles (if
/// `rows[k][r]` is `Some(start)`) into `out[start..][..count]`, two columns per tile.
///
/// # Panics
/// If `m` is too short for position 15, or a row's `count` values do not fit in `out`, or
/// `count > 2 * len`, or there are several groups but a row is missing or `count` is not
/// all of each group's 32 / groups values.
pub(crate) fn output_tiles(
    m: &[f32],
    (at, stride): (usize, usize),
    len: usize,
    out: &mut [f32],
    (rows, count): (&[[Option<usize>; 2]], usize),
) {
    assert!(len <= 16 && count <= 2 * len);
    check_groups(rows, len, count);
    assert!(at + 15 * stride + len <= m.len());
    assert!(rows
        .iter()
        .flatten()
        .flatten()
        .all(|&r| r + count <= out.len()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; loads and stores are masked to `len` values
    // per position and `count` per row (a group's whole rows where there are several), all
    // within the slices (asserted).
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

/// Several groups of tile rows fill all 16 lanes, every row present and whole.
fn check_groups(rows: &[[Option<usize>; 2]], len: usize, count: usize) {
    assert!(matches!(rows.len(), 1 | 2 | 4), "1, 2 or 4 tile rows");
    if rows.len() > 1 {
        assert!(
            len == 16 && count == 32 / rows.len(),
            "grouped tile rows are whole"
        );
        assert!(
            rows.iter().flatten().all(Option::is_some),
            "grouped rows all present"
        );
    }
}

/// The first `n` of 16 lanes.
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as u16
}

/// Stores the 32 values in `(lo, hi)` where [`load_groups`] would load them from: `count`
/// values (masked) at one group's start, or 16 at each of two, or 8 at each of four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_groups(starts: &[*mut f32], count: usize, (lo, hi): (__m512, __m512)) {
    match *starts {
        [p] => {
            _mm512_mask_storeu_ps(p, lanes(count), lo);
            if count > 16 {
                _mm512_mask_storeu_ps(p.add(16), lanes(count - 16), hi);
            }
        }
        [p, q] => {
            _mm512_storeu_ps(p, lo);
            _mm512_storeu_ps(q, hi);
        }
        [p, q, r, s] => {
            _mm256_storeu_ps(p, _mm512_castps512_ps256(lo));
            _mm256_storeu_ps(q, upper(lo));
            _mm256_storeu_ps(r, _mm512_castps512_ps256(hi));
            _mm256_storeu_ps(s, upper(hi));
        }
        _ => unreachable!("1, 2 or 4 tile rows"),
    }
}

/// The upper 8 values of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn upper(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles_avx512(
    m: *const f32,
    (at, stride): (usize, usize),
    len: usize,
    out: *mut f32,
    (rows, count): (&[[Option<usize>; 2]], usize),
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
    for (r, row) in t.iter().enumerate() {
        // A single group may lack its second row (past the map's bottom edge).
        let Some(first_start) = rows[0][r] else {
            continue;
        };
        let mut starts = [out.add(first_start); 4];
        for (k, group) in rows.iter().enumerate().skip(1) {
            starts[k] = out.add(group[r].unwrap_or(first_start));
        }
        let left = _mm512_add_ps(_mm512_add_ps(row[0], row[1]), row[2]);
        let right = _mm512_sub_ps(_mm512_sub_ps(row[1], row[2]), row[3]);
        let lo = _mm512_permutex2var_ps(left, first, right);
        let hi = _mm512_permutex2var_ps(left, second, right);
        store_groups(&starts[..rows.len()], count, (lo, hi));
    }
}

/// Writes `A dy Aᵀ` of tiles `0..len` (at most 16) of one tile row of an output gradient,
/// or of 2 or 4 tile rows side by side as [`input_tiles`] takes them, into
/// `out[at + e * stride..][..len]` for the 16 positions `e`. Row `r` of group `k`'s tiles
/// reads `dy[start..][..count]` (two columns per tile) if `rows[k][r]` is `Some(start)`;
/// values past the map's edge (beyond `count`, or a `None` row) count as zero.
///
/// # Panics
/// If a row's `count` values are not within `dy`, `count > 2 * len`, or `out` is too
/// short for position 15, or there are several groups but a row is missing or `count` is
/// not all of each group's 32 / groups values.
pub(crate) fn grad_output_tiles(
    dy: &[f32],
    (rows, count): (&[[Option<usize>; 2]], usize),
    len: usize,
    out: &mut [f32],
    (at, stride): (usize, usize),
) {
    assert!(len <= 16 && count <= 2 * len);
    check_groups(rows, len, count);
    assert!(rows
        .iter()
        .flatten()
        .flatten()
        .all(|&r| r + count <= dy.len()));
    assert!(at + 15 * stride + len <= out.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked avx512f; loads are masked to `count` values per row (a
    // group's whole rows where there are several) and stores to `len` per position, all
    // within the slices (asserted).
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
    (rows, count): (&[[Option<usize>; 2]], usize),
    len: usize,
    out: *mut f32,
    (at, stride): (usize, usize),
) {
    // d[r] = columns 0 and 1 of row r of the 16 tiles (zero past the edge).
    let mut d = [[_mm512_setzero_ps(); 2]; 2];
    for (r, d) in d.iter_mut().enumerate() {
        let pair = match *rows {
            [[row0, row1]] => {
                let Some(start) = [row0, row1][r] else {
                    continue;
                };
                let p = dy.add(start);
                let lo = _mm512_maskz_loadu_ps(lanes(count), p);
                let hi = match count > 16 {
                    true => _mm512_maskz_loadu_ps(lanes(count - 16), p.add(16)),
                    false => _mm512_setzero_ps(),
                };
                (lo, hi)
            }
            _ => {
                // Several groups: every row present (checked).
                let mut starts = [dy; 4];
                for (k, group) in rows.iter().enumerate() {
                    starts[k] = dy.add(group[r].unwrap_or(0));
                }
                load_groups(&starts[..rows.len()], 0)
            }
        };
        *d = deinterleave(pair);
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
