//! Max-pooling with padding and any stride, with a backward that routes the gradient to the
//! first maximum of each window, as PyTorch's CPU kernel does.
//!
//! On the CPU it is a custom op (forward and backward loops over contiguous NCHW planes, in
//! parallel with rayon). Elsewhere (CUDA) it is composed from differentiable candle ops, whose
//! backward splits a tie between the tied inputs instead of picking the first.

use super::contiguous_slice;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output length of a pooling or convolution window sweep (PyTorch's floor mode).
pub fn pool_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<usize> {
    let padded = input + 2 * padding;
    (padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

/// `nn.MaxPool2d(kernel, stride, padding)` on an NCHW tensor.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 || 2 * padding > kernel {
        bail!("max_pool2d: kernel {kernel}, stride {stride}, padding {padding} is not a valid window (padding must be at most half the kernel)")
    }
    if pool_output_size(h, kernel, stride, padding).is_none()
        || pool_output_size(w, kernel, stride, padding).is_none()
    {
        bail!("max_pool2d: input {h}x{w} is smaller than the {kernel}x{kernel} window (padding {padding})")
    }
    let op = MaxPool {
        kernel,
        stride,
        padding,
    };
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(op)
    } else {
        op.composed(x)
    }
}

/// The device-generic path of [`max_pool2d`] (used off the CPU), public so tests can
/// compare it with the CPU kernel. Its backward splits ties instead of picking the first.
pub fn max_pool2d_composed(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    MaxPool {
        kernel,
        stride,
        padding,
    }
    .composed(x)
}

#[derive(Clone, Copy)]
struct MaxPool {
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// Geometry of one pooling call on NCHW planes.
#[derive(Clone, Copy)]
struct Geometry {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl MaxPool {
    fn geometry(&self, shape: &Shape) -> Result<Geometry> {
        let (n, c, h, w) = shape.dims4()?;
        let size = |len| pool_output_size(len, self.kernel, self.stride, self.padding);
        match (size(h), size(w)) {
            (Some(oh), Some(ow)) => Ok(Geometry {
                planes: n * c,
                h,
                w,
                oh,
                ow,
            }),
            _ => bail!("max_pool2d: input {h}x{w} smaller than the window"),
        }
    }

    /// Index (within the plane) of the first maximum of the window at output (oy, ox);
    /// NaN wins, as in PyTorch.
    fn argmax<T: PartialOrd + Copy + IsNan>(
        &self,
        plane: &[T],
        g: Geometry,
        oy: usize,
        ox: usize,
    ) -> usize {
        let y0 = (oy * self.stride) as isize - self.padding as isize;
        let x0 = (ox * self.stride) as isize - self.padding as isize;
        let mut best: Option<(usize, T)> = None;
        for ky in 0..self.kernel as isize {
            let y = y0 + ky;
            if y < 0 || y >= g.h as isize {
                continue;
            }
            for kx in 0..self.kernel as isize {
                let x = x0 + kx;
                if x < 0 || x >= g.w as isize {
                    continue;
                }
                let idx = y as usize * g.w + x as usize;
                let v = plane[idx];
                match best {
                    Some((_, b)) if !(v > b || (v.is_nan() && !b.is_nan())) => {}
                    _ => best = Some((idx, v)),
                }
            }
        }
        // The window always overlaps the input because padding <= kernel / 2.
        best.map(|(i, _)| i).unwrap_or(0)
    }

    fn forward_plane<T: PartialOrd + Copy + IsNan>(&self, plane: &[T], out: &mut [T], g: Geometry) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                out[oy * g.ow + ox] = plane[self.argmax(plane, g, oy, ox)];
            }
        }
    }

    fn backward_plane<T: PartialOrd + Copy + IsNan + std::ops::AddAssign + Default>(
        &self,
        plane: &[T],
        grad_out: &[T],
        grad_in: &mut [T],
        g: Geometry,
    ) {
        grad_in.fill(T::default());
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                grad_in[self.argmax(plane, g, oy, ox)] += grad_out[oy * g.ow + ox];
            }
        }
    }

    /// The same pooling from candle ops: pad with -inf, take the strided view of each window
    /// offset, and reduce with `maximum`.
    fn composed(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let g = self.geometry(x.shape())?;
        let (p, s) = (self.padding, self.stride);
        let x = if p > 0 {
            let neg = |rows, cols| {
                Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), x.device())?.to_dtype(x.dtype())
            };
            let x = Tensor::cat(&[&neg(h, p)?, x, &neg(h, p)?], 3)?;
            Tensor::cat(&[&neg(p, w + 2 * p)?, &x, &neg(p, w + 2 * p)?], 2)?
        } else {
            x.clone()
        };
        // Pad at the bottom/right so that every strided view has whole strides.
        let need_h = (self.kernel - 1) + s * g.oh;
        let need_w = (self.kernel - 1) + s * g.ow;
        let x = pad_to(&x, 2, need_h)?;
        let x = pad_to(&x, 3, need_w)?;
        let mut result: Option<Tensor> = None;
        for ky in 0..self.kernel {
            for kx in 0..self.kernel {
                let view = x
                    .narrow(2, ky, s * g.oh)?
                    .reshape((n, c, g.oh, s, need_w))?
                    .narrow(3, 0, 1)?
                    .squeeze(3)?
                    .narrow(3, kx, s * g.ow)?
                    .reshape((n, c, g.oh, g.ow, s))?
                    .narrow(4, 0, 1)?
                    .squeeze(4)?;
                result = Some(match result {
                    None => view,
                    Some(r) => r.maximum(&view)?,
                });
            }
        }
        result.ok_or_else(|| candle_core::Error::Msg("empty pooling window".into()))
    }
}

/// Pad `dim` at the end with -inf up to `len` (no-op when already long enough; narrows if longer).
fn pad_to(x: &Tensor, dim: usize, len: usize) -> Result<Tensor> {
    let have = x.dim(dim)?;
    if have >= len {
        return x.narrow(dim, 0, len);
    }
    let mut shape = x.dims().to_vec();
    shape[dim] = len - have;
    let fill = Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[x, &fill], dim)
}

/// NaN test for the float types the CPU kernels support.
trait IsNan {
    fn is_nan(&self) -> bool;
}
impl IsNan for f32 {
    fn is_nan(&self) -> bool {
        f32::is_nan(*self)
    }
}
impl IsNan for f64 {
    fn is_nan(&self) -> bool {
        f64::is_nan(*self)
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(layout.shape())?;
        let (n, c, _, _) = layout.shape().dims4()?;
        let out_shape = Shape::from((n, c, g.oh, g.ow));
        fn run<T: PartialOrd + Copy + IsNan + Default + Send + Sync>(
            op: &MaxPool,
            data: &[T],
            g: Geometry,
        ) -> Vec<T> {
            let mut out = vec![T::default(); g.planes * g.oh * g.ow];
            out.par_chunks_mut(g.oh * g.ow)
                .zip(data.par_chunks(g.h * g.w))
                .for_each(|(o, plane)| op.forward_plane(plane, o, g));
            out
        }
        let out = match storage {
            CpuStorage::F32(d) => {
                CpuStorage::F32(run(self, contiguous_slice(d, layout, "max_pool2d")?, g))
            }
            CpuStorage::F64(d) => {
                CpuStorage::F64(run(self, contiguous_slice(d, layout, "max_pool2d")?, g))
            }
            _ => bail!("max_pool2d: only f32 and f64 are supported"),
        };
        Ok((out, out_shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &MaxPoolBackward(*self))?;
        Ok(Some(grad))
    }
}

/// Gradient of [`MaxPool`] with respect to its input: (input, grad_output) -> grad_input.
struct MaxPoolBackward(MaxPool);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.0;
        let g = op.geometry(l1.shape())?;
        fn run<T: PartialOrd + Copy + IsNan + Default + std::ops::AddAssign + Send + Sync>(
            op: &MaxPool,
            input: &[T],
            grad_out: &[T],
            g: Geometry,
        ) -> Vec<T> {
            let mut grad_in = vec![T::default(); g.planes * g.h * g.w];
            grad_in
                .par_chunks_mut(g.h * g.w)
                .zip(input.par_chunks(g.h * g.w))
                .zip(grad_out.par_chunks(g.oh * g.ow))
                .for_each(|((gi, plane), go)| op.backward_plane(plane, go, gi, g));
            grad_in
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(go)) => CpuStorage::F32(run(
                &op,
                contiguous_slice(x, l1, "max_pool2d")?,
                contiguous_slice(go, l2, "max_pool2d")?,
                g,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(go)) => CpuStorage::F64(run(
                &op,
                contiguous_slice(x, l1, "max_pool2d")?,
                contiguous_slice(go, l2, "max_pool2d")?,
                g,
            )),
            _ => bail!("max_pool2d backward: only f32 and f64 are supported"),
        };
        Ok((out, l1.shape().clone()))
    }
}
