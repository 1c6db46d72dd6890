//! Max-pooling with padding and any stride, with a backward that routes the gradient to the
//! first maximum of each window, as PyTorch's CPU kernel does.
//!
//! On the CPU it is a custom op (forward and backward loops over contiguous NCHW planes, in
//! parallel with rayon). Elsewhere (CUDA) it is composed from differentiable candle ops, whose
//! backward splits a tie between the tied inputs instead of picking the first.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
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

    /// Input rows (or columns) `[start, end)` the window at output position `o` covers,
    /// clipped to an input of `len`; never empty because padding <= kernel / 2.
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(len as isize);
        (start.max(0) as usize, end as usize)
    }

    /// Column spans of every output column, and the range of output columns whose window
    /// lies wholly inside the input (the interior).
    fn columns(&self, g: Geometry) -> Columns {
        let spans: Vec<_> = (0..g.ow).map(|ox| self.span(ox, g.w)).collect();
        let full = |&(a, b): &(usize, usize)| b - a == self.kernel;
        let lo = spans.iter().position(full).unwrap_or(g.ow);
        let hi = lo + spans[lo..].iter().take_while(|s| full(s)).count();
        Columns {
            spans,
            interior: (lo, hi),
        }
    }

    /// Index (within the plane) of the first maximum of the window covering rows `ys` and
    /// columns `xs`; NaN wins, as in PyTorch.
    fn argmax<T: Copy + PoolFloat>(
        plane: &[T],
        width: usize,
        ys: (usize, usize),
        xs: (usize, usize),
    ) -> usize {
        let mut best_at = ys.0 * width + xs.0;
        let mut best = plane[best_at];
        for y in ys.0..ys.1 {
            for x in xs.0..xs.1 {
                let v = plane[y * width + x];
                if takes_over(v, best) {
                    best = v;
                    best_at = y * width + x;
                }
            }
        }
        best_at
    }

    /// The maximum of every window of output row `oy`.
    ///
    /// The window's rows are first reduced to one row of column maxima across the whole
    /// width (contiguous, so LLVM vectorises it); each window's maximum is then the maximum
    /// of its columns there. Interior windows are swept offset by offset across that row,
    /// reading each offset's columns from a de-interleaved copy (one phase per residue
    /// modulo the stride), so that loop is a contiguous running maximum too. Reducing the
    /// rows first de-interleaves one row per output row instead of `kernel`; with
    /// [`has_nan`], ResNet's stem pool at 64 px (32x64x32x32) went from 2.2 to 0.9 ms.
    /// Planes holding a NaN take the exact scalar path (`nan`), where NaN wins as in PyTorch.
    #[allow(clippy::too_many_arguments)]
    fn row_max<T: Copy + Default + PoolFloat>(
        &self,
        plane: &[T],
        g: Geometry,
        oy: usize,
        cols: &Columns,
        nan: bool,
        out: &mut [T],
        (column_max, phases): (&mut Vec<T>, &mut Vec<T>),
    ) {
        let ys = self.span(oy, g.h);
        if nan {
            for (o, &xs) in out.iter_mut().zip(&cols.spans) {
                *o = plane[Self::argmax(plane, g.w, ys, xs)];
            }
            return;
        }
        column_max.clear();
        column_max.extend_from_slice(&plane[ys.0 * g.w..][..g.w]);
        for y in ys.0 + 1..ys.1 {
            for (m, &v) in column_max.iter_mut().zip(&plane[y * g.w..][..g.w]) {
                *m = if v > *m { v } else { *m };
            }
        }
        let (lo, hi) = cols.interior;
        for ox in (0..lo).chain(hi..g.ow) {
            let (x0, x1) = cols.spans[ox];
            let window = &column_max[x0..x1];
            out[ox] = window[1..]
                .iter()
                .fold(window[0], |m, &v| if v > m { v } else { m });
        }
        if lo >= hi {
            return;
        }
        let (s, n) = (self.stride, hi - lo);
        let phase_len = g.w.div_ceil(s);
        phases.resize(s * phase_len, T::default());
        for (r, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
            // Indexing, not `step_by`: its setup divides, per row.
            for (j, p) in phase.iter_mut().enumerate().take((g.w - r).div_ceil(s)) {
                *p = column_max[r + j * s];
            }
        }
        let out = &mut out[lo..hi];
        for kx in 0..self.kernel {
            // Input column of output ox at this offset: ox*s + d = (ox + q)*s + r.
            let d = kx as isize - self.padding as isize;
            let (q, r) = (d.div_euclid(s as isize), d.rem_euclid(s as isize) as usize);
            let src = &phases[r * phase_len + (lo as isize + q) as usize..][..n];
            if kx == 0 {
                out.copy_from_slice(src);
            } else {
                for (o, &v) in out.iter_mut().zip(src) {
                    *o = if v > *o { v } else { *o };
                }
            }
        }
    }

    fn forward_plane<T: Copy + Default + PoolFloat>(
        &self,
        plane: &[T],
        out: &mut [T],
        g: Geometry,
        cols: &Columns,
    ) {
        let nan = has_nan(plane);
        let (mut column_max, mut phases) = (Vec::new(), Vec::new());
        for (oy, out_row) in out.chunks_exact_mut(g.ow).enumerate() {
            let scratch = (&mut column_max, &mut phases);
            self.row_max(plane, g, oy, cols, nan, out_row, scratch);
        }
    }

    /// Routes each output's gradient to the first input of its window equal to that
    /// output's maximum (`out`, the forward's result): one compare-and-select per input of
    /// the window instead of a full argmax. Planes holding a NaN take the exact argmax.
    /// `grad_in` arrives zeroed.
    fn backward_plane<T: Copy + Default + PoolFloat + std::ops::AddAssign>(
        &self,
        (plane, out): (&[T], &[T]),
        grad_out: &[T],
        grad_in: &mut [T],
        g: Geometry,
        cols: &Columns,
    ) {
        let nan = has_nan(plane);
        for (oy, (go_row, out_row)) in grad_out
            .chunks_exact(g.ow)
            .zip(out.chunks_exact(g.ow))
            .enumerate()
        {
            let ys = self.span(oy, g.h);
            for ((&go, &m), &xs) in go_row.iter().zip(out_row).zip(&cols.spans) {
                let at = match nan {
                    true => Self::argmax(plane, g.w, ys, xs),
                    false => Self::first_equal(plane, g.w, ys, xs, m),
                };
                grad_in[at] += go;
            }
        }
    }

    /// Index (within the plane) of the first input of the window equal to `m`, the window's
    /// maximum (its first element if none is, which cannot happen without NaNs).
    fn first_equal<T: Copy + PoolFloat>(
        plane: &[T],
        width: usize,
        ys: (usize, usize),
        (x0, x1): (usize, usize),
        m: T,
    ) -> usize {
        // Every input is visited, last to first, with a select rather than an early exit:
        // where the maximum sits is random, so the exit's branch mispredicted once per
        // window, and that was most of this pass (ResNet's stem pool at 64 px: 3.5 -> 2.0 ms
        // backward, candle's own accumulation of the result included).
        let mut at = ys.0 * width + x0;
        for y in (ys.0..ys.1).rev() {
            let row = &plane[y * width..][x0..x1];
            for (x, &v) in row.iter().enumerate().rev() {
                at = if v == m { y * width + x0 + x } else { at };
            }
        }
        at
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

/// Whether `plane` holds a NaN. A fold without an early exit, so that it vectorises: `any`
/// tested one value per iteration and was ~30 % of the forward pass.
fn has_nan<T: PoolFloat>(plane: &[T]) -> bool {
    plane.iter().fold(false, |seen, v| seen | v.is_nan())
}

/// Output columns of one pooling call: each one's input column span, and which have whole
/// windows.
struct Columns {
    spans: Vec<(usize, usize)>,
    interior: (usize, usize),
}

/// Whether `v` replaces `best` as a window's maximum: strictly larger, or a NaN unless a
/// NaN already won (PyTorch's first-maximum rule).
#[inline(always)]
fn takes_over<T: PartialOrd + PoolFloat>(v: T, best: T) -> bool {
    (v > best || v.is_nan()) && !best.is_nan()
}

/// NaN test for the float types the CPU kernel pools.
trait PoolFloat: PartialOrd + Copy {
    fn is_nan(&self) -> bool;
}
impl PoolFloat for f32 {
    fn is_nan(&self) -> bool {
        f32::is_nan(*self)
    }
}
impl PoolFloat for f64 {
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
        fn run<T: Copy + PoolFloat + Default + Send + Sync>(
            op: &MaxPool,
            data: &[T],
            g: Geometry,
        ) -> Vec<T> {
            let mut out = crate::cpu::zeros(g.planes * g.oh * g.ow);
            let cols = op.columns(g);
            out.par_chunks_mut(g.oh * g.ow)
                .zip(data.par_chunks(g.h * g.w))
                .for_each(|(o, plane)| op.forward_plane(plane, o, g, &cols));
            out
        }
        let out = crate::storage::dispatch1(
            "max_pool2d",
            (storage, layout),
            |x| run(self, x, g),
            |x| run(self, x, g),
        )?;
        Ok((out, out_shape))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad_res.contiguous()?,
            &MaxPoolBackward(*self),
        )?;
        Ok(Some(grad))
    }
}

/// Gradient of [`MaxPool`] with respect to its input: (input, output, grad_output) ->
/// grad_input.
struct MaxPoolBackward(MaxPool);

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.0;
        let g = op.geometry(l1.shape())?;
        fn run<T: Copy + PoolFloat + Default + std::ops::AddAssign + Send + Sync>(
            op: &MaxPool,
            input: &[T],
            output: &[T],
            grad_out: &[T],
            g: Geometry,
        ) -> Vec<T> {
            let mut grad_in = crate::cpu::zeros(g.planes * g.h * g.w);
            let cols = op.columns(g);
            let out_plane = g.oh * g.ow;
            grad_in
                .par_chunks_mut(g.h * g.w)
                .zip(input.par_chunks(g.h * g.w))
                .zip(output.par_chunks(out_plane))
                .zip(grad_out.par_chunks(out_plane))
                .for_each(|(((gi, plane), out), go)| {
                    op.backward_plane((plane, out), go, gi, g, &cols)
                });
            grad_in
        }
        let out = crate::storage::dispatch3(
            "max_pool2d backward",
            (s1, l1),
            (s2, l2),
            (s3, l3),
            |x, y, go| run(&op, x, y, go, g),
            |x, y, go| run(&op, x, y, go, g),
        )?;
        Ok((out, l1.shape().clone()))
    }
}
