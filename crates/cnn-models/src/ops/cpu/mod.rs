//! CPU kernels behind [`crate::ops`]: the element types they run on, per-thread scratch
//! buffers, and a thin wrapper over the `gemm` crate's SGEMM/DGEMM.

pub(crate) mod batch_norm;
pub(crate) mod conv;
mod im2col;
mod winograd;
mod winograd_simd;

use candle_core::{Device, Shape, Tensor};
use std::ops::{Add, AddAssign, Mul, Sub};
use std::sync::Mutex;

/// Float types the CPU kernels support (f32 for training, f64 for gradient checks).
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
    /// `values` as a CPU tensor of `shape`.
    fn tensor(values: Vec<Self>, shape: Shape) -> candle_core::Result<Tensor>;
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
            fn tensor(values: Vec<Self>, shape: Shape) -> candle_core::Result<Tensor> {
                Tensor::from_vec(values, shape, &Device::Cpu)
            }
        }
    };
}

element!(f32, POOL_F32);
element!(f64, POOL_F64);

/// Most idle buffers kept per type; the rest are freed.
const POOL_SLOTS: usize = 8;

/// A scratch buffer of `len` elements with stale contents, reused from earlier calls when
/// one is idle. Reuse matters on this kind of VM: a freshly mapped page costs ~15x more to
/// first touch than a reused one. Hand it back with [`give`].
pub(crate) fn take<T: Element>(len: usize) -> Vec<T> {
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    // The smallest idle buffer that fits, else the largest (grown below).
    let fit = (0..pool.len())
        .filter(|&i| pool[i].len() >= len)
        .min_by_key(|&i| pool[i].len());
    let pick = fit.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
    let mut buf = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
    drop(pool);
    if buf.len() < len {
        buf.resize(len, T::ZERO);
    }
    buf
}

/// Returns a buffer from [`take`] to the pool.
pub(crate) fn give<T: Element>(buf: Vec<T>) {
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_SLOTS {
        pool.push(buf);
    }
}

/// A row-major or transposed view of a matrix for [`gemm`]: element (i, j) is at
/// `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> MatRef<T> {
    /// Row-major with `ld` elements between rows.
    pub fn rows(data: &[T], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: ld as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `ld` elements between rows.
    pub fn transposed(data: &[T], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: 1,
            cs: ld as isize,
        }
    }
}

/// `dst[m x n] (+)= a[m x k] * b[k x n]`; `dst` is row-major with `ld_dst` between rows.
/// `threads > 1` lets the gemm crate split the product over rayon's pool.
///
/// # Safety
/// `a` must be valid for reads at every `(i, j)`, `i < m`, `j < k` its strides describe, and
/// `b` at every `(i, j)`, `i < k`, `j < n`. `dst`'s extent is checked.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    ld_dst: usize,
    accumulate: bool,
    a: MatRef<T>,
    b: MatRef<T>,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= (m - 1) * ld_dst + n,
        "gemm: destination too small"
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let one = T::from_f64(1.0);
    // SAFETY: dst's extent is checked above; `a` and `b` are the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld_dst as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            one,
            one,
            false,
            false,
            false,
            parallelism,
        )
    }
}
