//! `x @ weight.T` on the CPU as one custom op whose backward runs two GEMMs straight into
//! contiguous gradients (candle's matmul backward goes through transposed views, and adding
//! a transposed 37M-value weight gradient into the store takes its slow strided path).

use super::cpu::{gemm, Element, MatRef};
use super::dispatch2;
use crate::weight_grads::WeightGrads;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// `x (n, in) @ weight (out, in).T`; on the CPU path the weight's gradient goes to
/// `weight_grads` where given.
pub(crate) fn matmul_t(
    x: &Tensor,
    weight: &Tensor,
    weight_grads: Option<&WeightGrads>,
) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype()
        && x.rank() == 2
        && super::cpu_kernels().linear;
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
        weight_grads: weight_grads.cloned(),
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
    /// Where the weight's gradient goes instead of candle's store, if anywhere.
    weight_grads: Option<WeightGrads>,
}

/// Which product of the three an op computes.
#[derive(Clone, Copy)]
enum Pass {
    /// (x, w) -> x w^T
    Forward,
    /// (gy, w) -> gy w
    InputGrad,
    /// (gy, x) -> gy^T x
    WeightGrad,
}

impl Dims {
    fn run<T: Element>(&self, pass: Pass, a: &[T], b: &[T]) -> Vec<T> {
        let (n, i, o) = (self.n, self.inputs, self.outputs);
        let threads = rayon::current_num_threads();
        let (m, cols, k, lhs, rhs) = match pass {
            Pass::Forward => return self.forward(a, b),
            Pass::InputGrad => (n, i, o, MatRef::rows(a, o), MatRef::rows(b, i)),
            Pass::WeightGrad => (o, i, n, MatRef::transposed(a, o), MatRef::rows(b, i)),
        };
        let mut out = vec![T::ZERO; m * cols];
        // SAFETY: each operand is a contiguous slice of exactly the extent its MatRef reads:
        // x (n x i), w (o x i), gy (n x o).
        unsafe { gemm(m, cols, k, &mut out, cols, false, lhs, rhs, threads) };
        out
    }

    /// `x w^T`, computed as `(w x^T)^T`. The gemm crate packs its left operand by columns:
    /// given `x w^T` directly it ends up packing the weight (AlexNet's 37M values) with a
    /// row's length between reads, which took 60 % of AlexNet@64 inference. As `w x^T` the
    /// weight is read along its rows, and only the small `n x out` result is transposed.
    fn forward<T: Element>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let (n, i, o) = (self.n, self.inputs, self.outputs);
        let threads = rayon::current_num_threads();
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
                threads,
            )
        };
        let mut y = vec![T::ZERO; n * o];
        for (r, row) in y.chunks_exact_mut(o).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = yt[j * n + r];
            }
        }
        y
    }

    fn apply(&self, pass: Pass, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.apply_op2_no_bwd(b, &Product(*self, pass))
    }
}

/// One of the three products as a no-backward op.
struct Product(Dims, Pass);

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
            Pass::Forward => (op.n, op.outputs),
            Pass::InputGrad => (op.n, op.inputs),
            Pass::WeightGrad => (op.outputs, op.inputs),
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
        Product(self.dims, Pass::Forward).cpu_fwd(s1, l1, s2, l2)
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
            true => Some(self.dims.apply(Pass::InputGrad, &gy, w)?),
            false => None,
        };
        if !w.track_op() {
            return Ok((gx, None));
        }
        let gw = self.dims.apply(Pass::WeightGrad, &gy, x)?;
        match &self.weight_grads {
            Some(collected) => {
                collected.push(w, gw);
                Ok((gx, None))
            }
            None => Ok((gx, Some(gw))),
        }
    }
}
