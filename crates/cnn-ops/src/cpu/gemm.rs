//! `dst (+)= a * b` through the `gemm` crate (candle's own matmul engine), on strided views.

use super::Element;

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
