//! The convolution's three passes through cuDNN (`cudnn` feature): forward, input gradient
//! (backward data) and kernel gradient (backward filter) of contiguous float32 NCHW tensors
//! with OIHW kernels, through cudarc's safe API on candle's own stream, so they queue in
//! order with candle's kernels and allocate from the same pool.
//!
//! candle's own `cudnn` feature covers the forward only; its input gradient runs candle's
//! `conv_transpose2d` kernel. Each pass here asks cuDNN's heuristics for an algorithm once
//! per shape (kept per thread with the handle) and takes its workspace from the pool.
//! Math is full float32 (`CUDNN_FMA_MATH`) unless [`set_cudnn_tf32`] allows TF32, so
//! results stay within the CPU parity tolerances by default.

use super::geometry::ConvGeom;
use candle_core::cuda_backend::cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn,
    FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CudaStorage, Error, Layout, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static TF32: AtomicBool = AtomicBool::new(false);

/// Lets cuDNN's convolutions use TF32 tensor cores (PyTorch's `cudnn.allow_tf32`, on by
/// default there); off here by default: full float32, as the CPU path computes.
pub fn set_cudnn_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed)
}

/// Whether cuDNN's convolutions may use TF32 (see [`set_cudnn_tf32`]).
pub fn cudnn_tf32() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// The cuDNN library's version number (e.g. 92100 for 9.21.0).
pub fn cudnn_version() -> usize {
    candle_core::cuda_backend::cudarc::cudnn::result::get_version()
}

/// The algorithm chosen for one pass.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The pass (0 forward, 1 data, 2 filter), the shape and whether TF32 is allowed.
type AlgoKey = (u8, [usize; 9], bool);

/// Per thread (cuDNN handles are neither `Send` nor `Sync`, as candle keeps its own): the
/// handle of each device, and the algorithm and workspace bytes chosen for each pass and
/// shape.
struct State {
    handles: HashMap<DeviceId, Arc<Cudnn>>,
    algos: HashMap<AlgoKey, (Algo, usize)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { handles: HashMap::new(), algos: HashMap::new() });
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(h) = s.handles.get(&dev.id()) {
            return Ok(h.clone());
        }
        let h = Cudnn::new(dev.cuda_stream()).map_err(Error::wrap)?;
        s.handles.insert(dev.id(), h.clone());
        Ok(h)
    })
}

/// The algorithm and workspace size chosen for `key`, choosing with `pick` the first time.
fn chosen(key: AlgoKey, pick: impl FnOnce() -> Result<(Algo, usize)>) -> Result<(Algo, usize)> {
    if let Some(found) = STATE.with(|s| s.borrow().algos.get(&key).copied()) {
        return Ok(found);
    }
    let picked = pick()?;
    STATE.with(|s| s.borrow_mut().algos.insert(key, picked));
    Ok(picked)
}

/// The descriptors of one convolution: its parameters, input, kernel and output.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
    key: [usize; 9],
    tf32: bool,
}

fn descriptors(cudnn: &Arc<Cudnn>, g: &ConvGeom) -> Result<Descriptors> {
    let i = |v: usize| v as i32;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let tf32 = cudnn_tf32();
    let mut conv = cudnn
        .create_conv2d::<f32>(
            [i(g.pad), i(g.pad)],
            [i(g.stride), i(g.stride)],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(Error::wrap)?;
    let math = match tf32 {
        true => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        false => sys::cudnnMathType_t::CUDNN_FMA_MATH,
    };
    conv.set_math_type(math).map_err(Error::wrap)?;
    let x = cudnn
        .create_4d_tensor::<f32>(nchw, [i(g.n), i(g.cin), i(g.h), i(g.w)])
        .map_err(Error::wrap)?;
    let w = cudnn
        .create_4d_filter::<f32>(nchw, [i(g.cout), i(g.cin), i(g.kh), i(g.kw)])
        .map_err(Error::wrap)?;
    let y = cudnn
        .create_4d_tensor::<f32>(nchw, [i(g.n), i(g.cout), i(g.oh), i(g.ow)])
        .map_err(Error::wrap)?;
    let key = [g.n, g.cin, g.h, g.w, g.cout, g.kh, g.kw, g.stride, g.pad];
    Ok(Descriptors {
        conv,
        x,
        w,
        y,
        key,
        tf32,
    })
}

/// The float32 values of a contiguous CUDA tensor; `op` names the caller in errors.
fn view<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected contiguous tensors")
    };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

/// A workspace of `bytes` from the pool, `None` where the algorithm needs none.
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    match bytes {
        0 => Ok(None),
        // SAFETY: cuDNN only writes the workspace before reading it.
        n => Ok(Some(unsafe { dev.alloc::<u8>(n)? })),
    }
}

/// `y = conv(x, w)`: `x` NCHW, `w` OIHW, both float32 and contiguous.
pub(crate) fn forward(
    g: &ConvGeom,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, g)?;
    let op = ConvForward {
        conv: &d.conv,
        x: &d.x,
        w: &d.w,
        y: &d.y,
    };
    let picked = chosen((0, d.key, d.tf32), || {
        let a = op.pick_algorithm().map_err(Error::wrap)?;
        Ok((
            Algo::Forward(a),
            op.get_workspace_size(a).map_err(Error::wrap)?,
        ))
    })?;
    let (Algo::Forward(algo), bytes) = picked else {
        candle_core::bail!("conv2d: cached algorithm of another pass")
    };
    let (x, w) = (view(xs, xl, "conv2d")?, view(ws, wl, "conv2d")?);
    // SAFETY: written whole by the convolution (beta = 0).
    let mut y = unsafe { dev.alloc::<f32>(g.n * g.cout * g.oh * g.ow)? };
    let mut ws_buf = workspace(dev, bytes)?;
    // SAFETY: the views and the output match the descriptors' shapes and float32 type.
    unsafe { op.launch(algo, ws_buf.as_mut(), (1.0, 0.0), &x, &w, &mut y) }.map_err(Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// `dx` from the kernel `w` (OIHW) and the output's gradient `dy` (NCHW).
pub(crate) fn input_grad(
    g: &ConvGeom,
    (ws, wl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = &ws.device;
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, g)?;
    let op = ConvBackwardData {
        conv: &d.conv,
        dx: &d.x,
        w: &d.w,
        dy: &d.y,
    };
    let picked = chosen((1, d.key, d.tf32), || {
        let a = op.pick_algorithm().map_err(Error::wrap)?;
        Ok((
            Algo::Data(a),
            op.get_workspace_size(a).map_err(Error::wrap)?,
        ))
    })?;
    let (Algo::Data(algo), bytes) = picked else {
        candle_core::bail!("conv2d input-grad: cached algorithm of another pass")
    };
    let (w, dy) = (
        view(ws, wl, "conv2d input-grad")?,
        view(gs, gl, "conv2d input-grad")?,
    );
    // SAFETY: written whole by the pass (beta = 0).
    let mut dx = unsafe { dev.alloc::<f32>(g.n * g.cin * g.h * g.w)? };
    let mut ws_buf = workspace(dev, bytes)?;
    // SAFETY: the views and the output match the descriptors' shapes and float32 type.
    unsafe { op.launch(algo, ws_buf.as_mut(), (1.0, 0.0), &mut dx, &w, &dy) }
        .map_err(Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// `dw` (OIHW) from the input `x` (NCHW) and the output's gradient `dy` (NCHW).
pub(crate) fn weight_grad(
    g: &ConvGeom,
    (xs, xl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, g)?;
    let op = ConvBackwardFilter {
        conv: &d.conv,
        x: &d.x,
        dw: &d.w,
        dy: &d.y,
    };
    let picked = chosen((2, d.key, d.tf32), || {
        let a = op.pick_algorithm().map_err(Error::wrap)?;
        Ok((
            Algo::Filter(a),
            op.get_workspace_size(a).map_err(Error::wrap)?,
        ))
    })?;
    let (Algo::Filter(algo), bytes) = picked else {
        candle_core::bail!("conv2d weight-grad: cached algorithm of another pass")
    };
    let (x, dy) = (
        view(xs, xl, "conv2d weight-grad")?,
        view(gs, gl, "conv2d weight-grad")?,
    );
    // SAFETY: written whole by the pass (beta = 0).
    let mut dw = unsafe { dev.alloc::<f32>(g.cout * g.cin * g.kh * g.kw)? };
    let mut ws_buf = workspace(dev, bytes)?;
    // SAFETY: the views and the output match the descriptors' shapes and float32 type.
    unsafe { op.launch(algo, ws_buf.as_mut(), (1.0, 0.0), &x, &mut dw, &dy) }
        .map_err(Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
