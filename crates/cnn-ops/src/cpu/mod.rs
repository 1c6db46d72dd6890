//! What every CPU op builds on: the element types they run on, loops built for the widest
//! vector instructions the CPU has, parallel fills and sums, cache-friendly strides, a pool
//! of scratch buffers ([`scratch`]) and a thin wrapper over the `gemm` crate ([`gemm`]).

/// `fn $name` whose body (a loop across lanes, written once, `#[inline(always)]` into
/// each caller) is built three times: for AVX-512F, for AVX2 and FMA, and for baseline
/// x86-64, the crate's own target, where loops across 16 lanes compile to 4-wide SSE. Each
/// call runs the widest build [`wide_simd`] allows.
macro_rules! with_wide_simd {
    ($(#[$doc:meta])* $vis:vis fn $name:ident<T>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name<T: $crate::cpu::Element>($($arg: $ty),*) {
            #[inline(always)]
            fn lanes<T: $crate::cpu::Element>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<T: $crate::cpu::Element>($($arg: $ty),*) {
                    lanes($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: $crate::cpu::Element>($($arg: $ty),*) {
                    lanes($($arg),*)
                }
                match $crate::cpu::wide_simd() {
                    // SAFETY: wide_simd() found the CPU has AVX-512F.
                    $crate::cpu::WideSimd::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: wide_simd() found the CPU has AVX2 and FMA.
                    $crate::cpu::WideSimd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::WideSimd::Baseline => {}
                }
            }
            lanes($($arg),*)
        }
    };
}

mod gemm;
pub(crate) mod scratch;

pub(crate) use gemm::{gemm, MatRef};

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::{Add, AddAssign, Mul, Sub};
use std::sync::Mutex;

/// The widest vector instructions [`with_wide_simd!`] builds use on this CPU.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum WideSimd {
    Avx512,
    Avx2,
    Baseline,
}

/// What the CPU has (detected once by std, then a cached load), or `Baseline` where the
/// CPU choice turns SIMD off (`CpuChoice::simd`).
pub(crate) fn wide_simd() -> WideSimd {
    #[cfg(target_arch = "x86_64")]
    if crate::choice::cpu_choice().simd {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return WideSimd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return WideSimd::Avx2;
        }
    }
    WideSimd::Baseline
}

/// Float types the CPU ops support (f32 for training, f64 for gradient checks).
pub(crate) trait Element:
    Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Idle scratch buffers of this type, shared by all threads.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

macro_rules! element {
    ($t:ty, $pool:ident) => {
        static $pool: Mutex<Vec<Vec<$t>>> = Mutex::new(Vec::new());
        impl Element for $t {
            const ZERO: Self = 0.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
                &$pool
            }
        }
    };
}

element!(f32, POOL_F32);
element!(f64, POOL_F64);

/// Values per parallel task when [`zeros`] and [`sum_parts`] fill a new vector (128 KiB of
/// f32); shorter vectors are filled in one task.
const FILL_CHUNK: usize = 1 << 15;

/// A new vector of `len` zeros, zeroed by the pool's threads. `vec![0.0; len]` zeroes on the
/// calling thread (glibc's calloc on a reused heap is a memset) while the other core waits
/// for the parallel work that follows. With the other one-thread pieces made parallel in the
/// same change, ResNet18@64 trained 1-3 % faster and inferred 3-6 %
/// (docs/PERFORMANCE-CHANGELOG.md, session 7).
pub(crate) fn zeros<T: Copy + Default + Send + Sync>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(FILL_CHUNK)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(T::default())));
    // SAFETY: all `len` values were written above.
    unsafe { v.set_len(len) };
    v
}

/// The element-wise sum of the first `len` values of every one of `parts` (at least one),
/// added by the pool's threads (see [`zeros`]), in the parts' order.
pub(crate) fn sum_parts<T: Element>(parts: &[Vec<T>], len: usize) -> Vec<T> {
    assert!(
        parts.iter().all(|p| p.len() >= len) && !parts.is_empty(),
        "sum_parts: a part is shorter than {len}"
    );
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(FILL_CHUNK)
        .enumerate()
        .for_each(|(k, chunk)| {
            let at = k * FILL_CHUNK;
            for (d, &a) in chunk.iter_mut().zip(&parts[0][at..]) {
                d.write(a);
            }
            // SAFETY: every value of `chunk` was written just above.
            let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) };
            for part in &parts[1..] {
                for (d, &a) in chunk.iter_mut().zip(&part[at..]) {
                    *d += a;
                }
            }
        });
    // SAFETY: the chunks above cover all `len` values.
    unsafe { v.set_len(len) };
    v
}

/// Elements between rows (or blocks) of `len` values that a kernel reads or writes side by
/// side: `len`, and one cache line more where that is a multiple of 2 KiB. On the 8-way
/// 32 KiB L1 of the machines measured, rows 4 KiB apart all fall in one cache set and rows
/// 2 KiB apart in two, so streaming down many of them at once evicts itself (the callers
/// say what the padding measured at each place).
pub(crate) fn padded_stride<T>(len: usize) -> usize {
    match (len * std::mem::size_of::<T>()) % 2048 {
        0 => len + 64 / std::mem::size_of::<T>(),
        _ => len,
    }
}

#[cfg(test)]
mod tests {
    use super::{padded_stride, sum_parts, zeros, FILL_CHUNK};

    #[test]
    fn strides_of_whole_2_kib_blocks_move_a_cache_line_on() {
        // 64 channels of 64 tiles (16 KiB of f32) and 16 positions of 64 channels (4 KiB).
        assert_eq!(padded_stride::<f32>(64 * 64), 64 * 64 + 16);
        assert_eq!(padded_stride::<f32>(16 * 64), 16 * 64 + 16);
        assert_eq!(padded_stride::<f64>(16 * 16), 16 * 16 + 8);
        // Other lengths stay as they are: 130 channels, 48 tiles of 128 channels (24 KiB is
        // padded, 49 tiles are not).
        assert_eq!(padded_stride::<f32>(16 * 130), 16 * 130);
        assert_eq!(padded_stride::<f32>(128 * 48), 128 * 48 + 16);
        assert_eq!(padded_stride::<f32>(128 * 49), 128 * 49);
    }

    #[test]
    fn sum_parts_adds_every_value_across_chunks_and_ignores_the_tails() {
        let len = 2 * FILL_CHUNK + 7;
        // Part p holds 3i + p at i (longer than len, as pool buffers are): the sum is 9i + 3.
        let parts: Vec<Vec<f32>> = (0..3)
            .map(|p| (0..len + 5).map(|i| (3 * i + p) as f32).collect())
            .collect();
        let sum = sum_parts(&parts, len);
        assert_eq!(sum.len(), len);
        for (i, &v) in sum.iter().enumerate() {
            assert_eq!(v, (9 * i + 3) as f32, "at {i}");
        }
        assert_eq!(sum_parts(&parts[..1], 4), vec![0.0, 3.0, 6.0, 9.0]);
    }

    #[test]
    fn zeros_fills_every_chunk() {
        for len in [0, 5, FILL_CHUNK, 3 * FILL_CHUNK + 1] {
            let v = zeros::<f64>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }
}
