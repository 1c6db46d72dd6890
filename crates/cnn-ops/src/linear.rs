//! `x @ weight.T` on the CPU as one custom op whose backward runs two GEMMs straight into
//! contiguous gradients (candle's matmul backward goes through transposed views, and adding
//! a transposed 37M-value weight gradient into the store takes its slow strided path).

use crate::cpu::{gemm, padded_stride, scratch, zeros, Element, MatRef};
use crate::storage::dispatch2;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x (n, in) @ weight (out, in).T`.
pub(crate) fn matmul_t(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype()
        && x.rank() == 2
        && crate::choice::cpu_choice().linear;
    if !fast {
        return x.matmul(&weight.t()?);
    }
    let (n, inputs) = x.dims2()?;
    let (outputs, w_in) = weight.dims2()?;
    if inputs != w_in {
        bail!("linear: input has {inputs} features, weight expects {w_in}")
    }
    let op = MatmulT {
        dims: Dims { n, inputs, outputs },
        input_grad: x.track_op(),
    };
    x.contiguous()?.apply_op2(&weight.contiguous()?, op)
}

/// The product's sizes: `x` is n x inputs, the weight outputs x inputs.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    inputs: usize,
    outputs: usize,
}

/// The op candle records: the product, and what its backward computes and where to.
struct MatmulT {
    dims: Dims,
    input_grad: bool,
}

/// Which product of the three an op computes.
#[derive(Clone, Copy)]
enum LinearPass {
    /// (x, w) -> x w^T
    Forward,
    /// (gy, w) -> gy w
    InputGrad,
    /// (gy, x) -> gy^T x
    WeightGrad,
}

impl Dims {
    fn run<T: Element>(&self, pass: LinearPass, a: &[T], b: &[T]) -> Vec<T> {
        let (n, i, o) = (self.n, self.inputs, self.outputs);
        match pass {
            LinearPass::Forward => self.forward(a, b),
            LinearPass::InputGrad => self.input_grad(a, b),
            LinearPass::WeightGrad => {
                let mut gw = zeros(o * i);
                // SAFETY: gy is n x o and x n x i, both contiguous; gw is o x i.
                unsafe {
                    gemm(
                        o,
                        i,
                        n,
                        &mut gw,
                        i,
                        false,
                        MatRef::transposed(a, o),
                        MatRef::rows(b, i),
                        rayon::current_num_threads(),
                    )
                };
                gw
            }
        }
    }

    /// `x w^T`, computed as `(w x^T)^T`. The gemm crate packs its left operand by columns:
    /// given `x w^T` directly it ends up packing the weight (AlexNet's 37M values) with a
    /// row's length between reads, which took 60 % of AlexNet@64 inference. As `w x^T` the
    /// weight is read along its rows, and only the small `n x out` result is transposed.
    fn forward<T: Element>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let (n, i, o) = (self.n, self.inputs, self.outputs);
        let mut yt = vec![T::ZERO; o * n];
        // SAFETY: w is o x i and x is n x i, both contiguous; yt is o x n.
        unsafe {
            gemm(
                o,
                n,
                i,
                &mut yt,
                n,
                false,
                MatRef::rows(w, i),
                MatRef::transposed(x, i),
                rayon::current_num_threads(),
            )
        };
        transpose(&yt, o, n)
    }

    /// `gy w`, computed as `(w^T gy^T)^T` for the reason [`Self::forward`] gives: as
    /// `gy w` the gemm crate read the weight down its columns (FC1 of AlexNet@64, 9216 ->
    /// 4096: 47-56 ms against 28-38 ms this way; docs/PERFORMANCE-CHANGELOG.md, session 15). The
    /// crate reads `w^T` in place, a weight row per step along the product's depth, and rows
    /// a multiple of 2 KiB apart crowd into few cache sets: there the weight goes through a
    /// small buffer with padded rows, [`WEIGHT_ROWS_A_COPY`] rows at a time (4096 -> 4096:
    /// 18-26 ms in place, 11 ms through the buffer).
    fn input_grad<T: Element>(&self, gy: &[T], w: &[T]) -> Vec<T> {
        let (n, i, o) = (self.n, self.inputs, self.outputs);
        if n == 0 || i == 0 {
            return Vec::new();
        }
        let threads = rayon::current_num_threads();
        let mut gxt = vec![T::ZERO; i * n];
        let ld = padded_stride::<T>(i);
        // In place, the whole weight in one GEMM; else batches of rows through the buffer.
        let mut rows_copy = (ld != i).then(|| scratch::lend::<T>(WEIGHT_ROWS_A_COPY * ld));
        let batch = match rows_copy {
            Some(_) => WEIGHT_ROWS_A_COPY,
            None => o.max(1),
        };
        for first in (0..o).step_by(batch) {
            let rows = batch.min(o - first);
            let (lhs, lhs_ld) = match rows_copy.as_mut() {
                Some(copy) => {
                    copy[..rows * ld]
                        .par_chunks_mut(ld)
                        .zip(w[first * i..(first + rows) * i].par_chunks(i))
                        .for_each(|(to, from)| to[..i].copy_from_slice(from));
                    (&copy[..], ld)
                }
                None => (&w[first * i..], i),
            };
            // SAFETY: lhs holds `rows` weight rows `lhs_ld` apart; gy[first..] reads gy's
            // columns first..first + rows of its n rows, o apart; gxt is i x n.
            unsafe {
                gemm(
                    i,
                    n,
                    rows,
                    &mut gxt,
                    n,
                    first > 0,
                    MatRef::transposed(lhs, lhs_ld),
                    MatRef::transposed(&gy[first..], o),
                    threads,
                )
            };
        }
        if let Some(copy) = rows_copy {
            scratch::give_back(copy);
        }
        transpose(&gxt, i, n)
    }

    fn apply(&self, pass: LinearPass, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.apply_op2_no_bwd(b, &Product(*self, pass))
    }
}

/// Weight rows [`Dims::input_grad`] copies into its padded buffer at a time: 2 MiB of a
/// 4096-wide f32 weight, which stays in cache while the GEMM reads it (64 and 256 rows
/// measured 3-60 % slower at 4096 -> 4096 and 9216 -> 4096).
const WEIGHT_ROWS_A_COPY: usize = 128;

/// `src` (`rows x cols`, row-major) transposed.
fn transpose<T: Element>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; rows * cols];
    for (c, out_row) in out.chunks_exact_mut(rows).enumerate() {
        for (r, v) in out_row.iter_mut().enumerate() {
            *v = src[r * cols + c];
        }
    }
    out
}

/// One of the three products as a no-backward op.
struct Product(Dims, LinearPass);

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "linear-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Product(op, pass) = self;
        let out = dispatch2(
            "linear",
            (s1, l1),
            (s2, l2),
            |a, b| op.run(*pass, a, b),
            |a, b| op.run(*pass, a, b),
        )?;
        let shape = match pass {
            LinearPass::Forward => (op.n, op.outputs),
            LinearPass::InputGrad => (op.n, op.inputs),
            LinearPass::WeightGrad => (op.outputs, op.inputs),
        };
        Ok((out, Shape::from(shape)))
    }
}

impl CustomOp2 for MatmulT {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Product(self.dims, LinearPass::Forward).cpu_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let gx = match self.input_grad {
            true => Some(self.dims.apply(LinearPass::InputGrad, &gy, w)?),
            false => None,
        };
        if !w.track_op() {
            return Ok((gx, None));
        }
        let gw = self.dims.apply(LinearPass::WeightGrad, &gy, x)?;
        Ok((gx, Some(gw)))
    }
}
