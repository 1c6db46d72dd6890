//! 2-D convolution: on the CPU candle custom ops whose passes each run the algorithm
//! `dispatch` chooses for the layer; on CUDA in float32 with the `cudnn` feature the same
//! ops, their three passes through cuDNN; elsewhere candle's own `conv2d`. Kernels come
//! OIHW (PyTorch's layout) or tap by tap, OHWI, as cnn-models holds its kernels.
//!
//! Files: `geometry` (a conv's shape, kernel layouts and cuts), `dispatch` (the choice of
//! algorithm per pass), and one file per algorithm: `im2col_gemm` (with `im2col` and
//! `channel_split`), `winograd_2x2` and `winograd_4x4` (with `winograd_transforms` and
//! `winograd_simd`), and `taps`; `cudnn` the passes on CUDA.

mod channel_split;
#[cfg(feature = "cudnn")]
mod cudnn;
mod dispatch;
mod geometry;
mod im2col;
mod im2col_gemm;
mod taps;
mod winograd_2x2;
mod winograd_4x4;
mod winograd_simd;
mod winograd_transforms;

use crate::cpu::Element;
use crate::storage::{contiguous_slice, dispatch2};
use crate::timing;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use dispatch::{algorithm_of, op_name, ConvPass, Prepared};
use geometry::ConvGeom;
pub(crate) use geometry::KernelLayout;
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "cudnn")]
pub use cudnn::{cudnn_tf32, cudnn_version, set_cudnn_tf32};

/// `conv2d(x, weight)` without bias, stride and zero padding the same along both axes, the
/// kernel in `layout`.
pub(crate) fn conv2d_no_bias(
    x: &Tensor,
    (weight, layout): (&Tensor, KernelLayout),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        return conv2d_cudnn(x, (weight, layout), stride, padding);
    }
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype()
        && crate::choice::cpu_choice().conv;
    if !fast {
        let oihw = match layout {
            KernelLayout::Oihw => weight.clone(),
            KernelLayout::Ohwi => weight.permute((0, 3, 1, 2))?.contiguous()?,
        };
        return x.conv2d(&oihw, padding, stride, 1, 1);
    }
    let op = Conv {
        stride,
        padding,
        layout,
        // Nothing upstream of the input learns (the first layer's images): skip its gradient.
        input_grad: x.track_op(),
        kept: Mutex::new(None),
    };
    op.geometry(x.dims(), weight.dims())?;
    x.contiguous()?.apply_op2(&weight.contiguous()?, op)
}

/// [`conv2d_no_bias`] on CUDA through cuDNN: the custom op with an OIHW kernel, an OHWI one
/// re-laid by candle first (one copy kernel each way a step; its gradient flows back through
/// the permutation), so that every pass sees cuDNN's own filter layout.
#[cfg(feature = "cudnn")]
fn conv2d_cudnn(
    x: &Tensor,
    (weight, layout): (&Tensor, KernelLayout),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let oihw = match layout {
        KernelLayout::Oihw => weight.contiguous()?,
        KernelLayout::Ohwi => weight.permute((0, 3, 1, 2))?.contiguous()?,
    };
    let op = Conv {
        stride,
        padding,
        layout: KernelLayout::Oihw,
        input_grad: x.track_op(),
        kept: Mutex::new(None),
    };
    op.geometry(x.dims(), oihw.dims())?;
    x.contiguous()?.apply_op2(&oihw, op)
}

/// The gradient of `conv2d_ohwi(x, weight)` with respect to `x` (of dims `x_dims`), given
/// the output's gradient `gy`: what the models' backward pass runs, exposed for benchmarks.
pub fn conv2d_ohwi_input_grad(
    weight: &Tensor,
    gy: &Tensor,
    x_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = bench_op(stride, padding).geometry(x_dims, weight.dims())?;
    let grad = InputGrad(g, KernelLayout::Ohwi);
    weight
        .contiguous()?
        .apply_op2_no_bwd(&gy.contiguous()?, &grad)
}

/// The gradient of `conv2d_ohwi(x, weight)` with respect to `weight` (of OHWI dims
/// `w_dims`), given the output's gradient `gy`: what the models' backward pass runs,
/// exposed for benchmarks.
pub fn conv2d_ohwi_weight_grad(
    x: &Tensor,
    gy: &Tensor,
    w_dims: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = bench_op(stride, padding).geometry(x.dims(), w_dims)?;
    let grad = WeightGrad(g, KernelLayout::Ohwi);
    x.contiguous()?.apply_op2_no_bwd(&gy.contiguous()?, &grad)
}

/// A conv op with an OHWI kernel, for the geometry the gradient helpers above check.
fn bench_op(stride: usize, padding: usize) -> Conv {
    Conv {
        stride,
        padding,
        layout: KernelLayout::Ohwi,
        input_grad: true,
        kept: Mutex::new(None),
    }
}

struct Conv {
    stride: usize,
    padding: usize,
    /// How the kernel (the op's second argument) is laid out.
    layout: KernelLayout,
    input_grad: bool,
    /// The kernel the forward pass prepared (`Prepared` of the input's element type), kept
    /// for the input gradient.
    kept: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Locks a kept kernel's slot; a panic elsewhere while holding it leaves a plain option.
fn slot(kept: &Mutex<Option<Box<dyn Any + Send>>>) -> MutexGuard<'_, Option<Box<dyn Any + Send>>> {
    kept.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conv {
    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<ConvGeom> {
        let (&[n, cin, h, wd], &[cout, a, b, c]) = (x, w) else {
            bail!("conv2d: expected 4-d input and kernel, got {x:?} and {w:?}")
        };
        let (wcin, kh, kw) = match self.layout {
            KernelLayout::Oihw => (a, b, c),
            KernelLayout::Ohwi => (c, a, b),
        };
        if cin != wcin {
            bail!("conv2d: input has {cin} channels, kernel expects {wcin}")
        }
        if self.stride == 0 {
            bail!("conv2d: stride must be positive")
        }
        let size = |len: usize, k: usize| {
            (len + 2 * self.padding)
                .checked_sub(k)
                .map(|d| d / self.stride + 1)
        };
        let (Some(oh), Some(ow)) = (size(h, kh), size(wd, kw)) else {
            bail!(
                "conv2d: input {h}x{wd} (padding {}) is smaller than the {kh}x{kw} kernel",
                self.padding
            )
        };
        Ok(ConvGeom {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            stride: self.stride,
            pad: self.padding,
            oh,
            ow,
        })
    }
}

/// The name of `pass` of `g` in errors and timed steps (`crate::set_op_timing`): by the
/// algorithm it runs, looked up only while ops are timed.
fn pass_name(g: &ConvGeom, pass: ConvPass) -> &'static str {
    match timing::enabled() {
        true => op_name(pass, algorithm_of(g, pass)),
        false => op_name(pass, dispatch::Algorithm::Im2colGemm),
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1.dims(), l2.dims())?;
        fn run<'a, T: Element>(
            g: &'a ConvGeom,
            layout: KernelLayout,
            keep: Option<&'a Mutex<Option<Box<dyn Any + Send>>>>,
        ) -> impl FnOnce(&[T], &[T]) -> Vec<T> + 'a {
            move |x, w| {
                let (y, prepared) = dispatch::forward(g, x, w, layout, keep.is_some());
                if let Some(keep) = keep {
                    *slot(keep) = prepared.map(|p| Box::new(p) as Box<dyn Any + Send>);
                }
                y
            }
        }
        let keep = self.input_grad.then_some(&self.kept);
        let layout = self.layout;
        let out = dispatch2(
            pass_name(&g, ConvPass::Forward),
            (s1, l1),
            (s2, l2),
            run(&g, layout, keep),
            run(&g, layout, keep),
        )?;
        Ok((out, Shape::from((g.n, g.cout, g.oh, g.ow))))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geometry(l1.dims(), l2.dims())?;
        oihw_only(self.layout, self.name())?;
        let y = cudnn::forward(&g, (s1, l1), (s2, l2))?;
        Ok((y, Shape::from((g.n, g.cout, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.dims(), w.dims())?;
        let gy = gy.contiguous()?;
        let kept = slot(&self.kept).take();
        let gx = match (self.input_grad, kept) {
            (true, Some(kept)) => {
                Some(gy.apply_op1_no_bwd(&PreparedInputGrad(Mutex::new(Some(kept))))?)
            }
            (true, None) => Some(w.apply_op2_no_bwd(&gy, &InputGrad(g, self.layout))?),
            (false, _) => None,
        };
        if !w.track_op() {
            return Ok((gx, None));
        }
        let gw = x.apply_op2_no_bwd(&gy, &WeightGrad(g, self.layout))?;
        Ok((gx, Some(gw)))
    }
}

/// (kernel in the given layout, output gradient) -> input gradient.
struct InputGrad(ConvGeom, KernelLayout);

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, layout) = (&self.0, self.1);
        let out = dispatch2(
            pass_name(g, ConvPass::InputGrad),
            (s1, l1),
            (s2, l2),
            |w, gy| dispatch::input_grad(g, w, layout, gy),
            |w, gy| dispatch::input_grad(g, w, layout, gy),
        )?;
        Ok((out, Shape::from((g.n, g.cin, g.h, g.w))))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.0;
        oihw_only(self.1, self.name())?;
        let gx = cudnn::input_grad(g, (s1, l1), (s2, l2))?;
        Ok((gx, Shape::from((g.n, g.cin, g.h, g.w))))
    }
}

/// The CUDA passes take OIHW kernels only ([`conv2d_cudnn`] re-lays the others first).
#[cfg(feature = "cudnn")]
fn oihw_only(layout: KernelLayout, op: &str) -> Result<()> {
    match layout {
        KernelLayout::Oihw => Ok(()),
        KernelLayout::Ohwi => bail!("{op}: the CUDA path takes OIHW kernels"),
    }
}

/// The geometry of a kept [`Prepared`] kernel of either element type.
fn prepared_geometry(kept: &(dyn Any + Send)) -> Option<ConvGeom> {
    let f32_geom = kept.downcast_ref::<Prepared<f32>>().map(|p| p.geom);
    f32_geom.or_else(|| kept.downcast_ref::<Prepared<f64>>().map(|p| p.geom))
}

/// Output gradient -> input gradient, from the kernel the forward pass prepared (taken
/// out of the op on its one run).
struct PreparedInputGrad(Mutex<Option<Box<dyn Any + Send>>>);

impl PreparedInputGrad {
    fn run<T: Element>(&self, gy: &[T]) -> Result<(Vec<T>, Shape)> {
        let kept = slot(&self.0).take();
        let Some(Ok(p)) = kept.map(|k| k.downcast::<Prepared<T>>()) else {
            bail!("{}: no prepared kernel of the gradient's type", self.name())
        };
        let g = p.geom;
        Ok((
            dispatch::input_grad_prepared(*p, gy),
            Shape::from((g.n, g.cin, g.h, g.w)),
        ))
    }
}

impl CustomOp1 for PreparedInputGrad {
    fn name(&self) -> &'static str {
        "conv2d input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = timing::enabled()
            .then(|| {
                let kept = slot(&self.0);
                let geom = kept.as_ref().and_then(|k| prepared_geometry(k.as_ref()));
                geom.map_or(self.name(), |g| pass_name(&g, ConvPass::InputGrad))
            })
            .and_then(|name| timing::start(name, &[l]));
        Ok(match s {
            CpuStorage::F32(gy) => {
                let (gx, shape) = self.run(contiguous_slice(gy, l, self.name())?)?;
                (CpuStorage::F32(gx), shape)
            }
            CpuStorage::F64(gy) => {
                let (gx, shape) = self.run(contiguous_slice(gy, l, self.name())?)?;
                (CpuStorage::F64(gx), shape)
            }
            _ => bail!("{}: only f32 or f64 tensors are supported", self.name()),
        })
    }
}

/// (input, output gradient) -> kernel gradient in the given layout.
struct WeightGrad(ConvGeom, KernelLayout);

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "conv2d weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, layout) = (&self.0, self.1);
        let out = dispatch2(
            pass_name(g, ConvPass::WeightGrad),
            (s1, l1),
            (s2, l2),
            |x, gy| dispatch::weight_grad(g, x, gy, layout),
            |x, gy| dispatch::weight_grad(g, x, gy, layout),
        )?;
        let shape = match layout {
            KernelLayout::Oihw => Shape::from((g.cout, g.cin, g.kh, g.kw)),
            KernelLayout::Ohwi => Shape::from((g.cout, g.kh, g.kw, g.cin)),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = &self.0;
        oihw_only(self.1, self.name())?;
        let gw = cudnn::weight_grad(g, (s1, l1), (s2, l2))?;
        Ok((gw, Shape::from((g.cout, g.cin, g.kh, g.kw))))
    }
}
