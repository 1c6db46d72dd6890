//! 2-D convolution: on the CPU a custom op over the im2col + GEMM kernels in `cpu::conv`,
//! elsewhere (CUDA) candle's own `conv2d`. Kernels come OIHW (PyTorch's layout) or tap by
//! tap, OHWI, as the models hold theirs.

pub(crate) use super::cpu::conv::KernelLayout;
use super::cpu::conv::{self as kernel, ConvGeom, Prepared};
use super::cpu::Element;
use super::{contiguous_slice, dispatch2};
use crate::weight_grads::WeightGrads;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// `conv2d(x, weight)` without bias, stride and zero padding the same along both axes, the
/// kernel in `layout`; on the CPU path the weight's gradient goes to `weight_grads` where
/// given.
pub(crate) fn conv2d_no_bias(
    x: &Tensor,
    (weight, layout): (&Tensor, KernelLayout),
    stride: usize,
    padding: usize,
    weight_grads: Option<&WeightGrads>,
) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == weight.dtype()
        && super::cpu_kernels().conv;
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
        weight_grads: weight_grads.cloned(),
        kept: Mutex::new(None),
    };
    op.geometry(x.dims(), weight.dims())?;
    x.contiguous()?.apply_op2(&weight.contiguous()?, op)
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
        weight_grads: None,
        kept: Mutex::new(None),
    }
}

struct Conv {
    stride: usize,
    padding: usize,
    /// How the kernel (the op's second argument) is laid out.
    layout: KernelLayout,
    input_grad: bool,
    /// Where the weight's gradient goes instead of candle's store, if anywhere.
    weight_grads: Option<WeightGrads>,
    /// The kernel the forward pass prepared (`kernel::Prepared` of the input's element
    /// type), kept for the input gradient.
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

/// Each pass's op name by the kernel family it runs (`kernel::paths`), so that a timed
/// step (`ops::set_op_timing`) shows which ran where.
const NAMES: [[&str; 4]; 3] = [
    [
        "conv2d",
        "conv2d (winograd)",
        "conv2d (taps)",
        "conv2d (winograd 4x4)",
    ],
    [
        "conv2d input-grad",
        "conv2d input-grad (winograd)",
        "conv2d input-grad (taps)",
        "conv2d input-grad (winograd 4x4)",
    ],
    [
        "conv2d weight-grad",
        "conv2d weight-grad (winograd)",
        "conv2d weight-grad (taps)",
        "conv2d weight-grad (winograd 4x4)",
    ],
];

/// [`NAMES`] of pass `pass` (0 forward, 1 input gradient, 2 weight gradient) of `g`; the
/// kernel family is looked up only while ops are timed (untimed, the name serves errors).
fn pass_name(g: &ConvGeom, pass: usize) -> &'static str {
    let family = match super::timing::enabled() {
        true => kernel::paths(g)[pass],
        false => 0,
    };
    NAMES[pass][family]
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
                let (y, prepared) = kernel::forward(g, x, w, layout, keep.is_some());
                if let Some(keep) = keep {
                    *slot(keep) = prepared.map(|p| Box::new(p) as Box<dyn Any + Send>);
                }
                y
            }
        }
        let keep = self.input_grad.then_some(&self.kept);
        let layout = self.layout;
        let out = dispatch2(
            pass_name(&g, 0),
            (s1, l1),
            (s2, l2),
            run(&g, layout, keep),
            run(&g, layout, keep),
        )?;
        Ok((out, Shape::from((g.n, g.cout, g.oh, g.ow))))
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
        match &self.weight_grads {
            Some(collected) => {
                collected.push(w, gw);
                Ok((gx, None))
            }
            None => Ok((gx, Some(gw))),
        }
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
            pass_name(g, 1),
            (s1, l1),
            (s2, l2),
            |w, gy| kernel::input_grad(g, w, layout, gy),
            |w, gy| kernel::input_grad(g, w, layout, gy),
        )?;
        Ok((out, Shape::from((g.n, g.cin, g.h, g.w))))
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
            kernel::input_grad_prepared(*p, gy),
            Shape::from((g.n, g.cin, g.h, g.w)),
        ))
    }
}

impl CustomOp1 for PreparedInputGrad {
    fn name(&self) -> &'static str {
        "conv2d input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timer = super::timing::enabled()
            .then(|| {
                let kept = slot(&self.0);
                let geom = kept.as_ref().and_then(|k| prepared_geometry(k.as_ref()));
                geom.map_or(self.name(), |g| pass_name(&g, 1))
            })
            .and_then(|name| super::timing::start(name, &[l]));
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
            pass_name(g, 2),
            (s1, l1),
            (s2, l2),
            |x, gy| kernel::weight_grad(g, x, gy, layout),
            |x, gy| kernel::weight_grad(g, x, gy, layout),
        )?;
        let shape = match layout {
            KernelLayout::Oihw => Shape::from((g.cout, g.cin, g.kh, g.kw)),
            KernelLayout::Ohwi => Shape::from((g.cout, g.kh, g.kw, g.cin)),
        };
        Ok((out, shape))
    }
}
