//! Memory figures: the process's peak resident set (CPU), device memory in use through
//! cudarc's `mem_get_info` (CUDA, behind the `cuda` feature), the bytes the process's
//! tensors hold on the device and their peak (the stream-ordered pool's counters, as
//! `torch.cuda.memory_allocated` and `max_memory_allocated` report them), and the bytes of
//! parameters, gradients and optimiser state by arithmetic.

use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Memory at the end of an epoch. Device fields are `None` on CPU.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident set size of the process so far (`VmHWM`), bytes; `None` off Linux.
    pub peak_rss_bytes: Option<u64>,
    /// Parameters + buffers, bytes.
    pub params_bytes: u64,
    /// Gradients of the trainable parameters (alive from backward to the optimiser step), bytes.
    pub grads_bytes: u64,
    /// Optimiser slot tensors (momentum buffers, Adam moments), bytes.
    pub optimizer_bytes: u64,
    /// Device memory in use (`total - free`) at the last batch end, bytes.
    pub device_used_bytes: Option<u64>,
    /// Largest device memory in use seen at any batch end of the run so far, bytes.
    pub device_peak_bytes: Option<u64>,
    /// Device memory size, bytes.
    pub device_total_bytes: Option<u64>,
    /// Bytes the process's tensors held on the device at the epoch's end (the pool's
    /// current use: `torch.cuda.memory_allocated()` at that point). Absent in records
    /// written before it existed.
    #[serde(default)]
    pub device_tensor_bytes: Option<u64>,
    /// Most bytes the process's tensors held on the device at once during the epoch (the
    /// pool's high-water mark, reset as the epoch starts: `torch.cuda.max_memory_allocated()`
    /// after `reset_peak_memory_stats()`).
    #[serde(default)]
    pub device_tensor_peak_bytes: Option<u64>,
}

impl Memory {
    /// Parameters + gradients + optimiser state, by arithmetic: the floor of what
    /// `torch.cuda.memory_allocated()` reports between steps of a PyTorch loop (its gradients
    /// stay allocated between steps); on CUDA `device_tensor_bytes` is the measured figure.
    pub fn tensors_bytes(&self) -> u64 {
        self.params_bytes + self.grads_bytes + self.optimizer_bytes
    }
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Starts a new peak-memory window: freed heap memory goes back to the system
/// (`malloc_trim`; `tune_for_training` tells glibc to keep it otherwise) and the peak
/// resident set is reset to the current one (`/proc/self/clear_refs`), so that
/// [`peak_rss_bytes`] then measures what comes next, not what ran before in this process.
/// Returns whether the reset happened (Linux with glibc only).
pub fn start_peak_rss_window() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Current resident set size of this process (`VmRSS`), bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `(used, total)` bytes of the device's memory; `None` on CPU or when the query fails.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    cuda_memory(device)
}

#[cfg(feature = "cuda")]
fn cuda_memory(device: &Device) -> Option<(u64, u64)> {
    let cuda = device.as_cuda_device().ok()?;
    let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
    Some(((total - free) as u64, total as u64))
}

#[cfg(not(feature = "cuda"))]
fn cuda_memory(_device: &Device) -> Option<(u64, u64)> {
    None
}

/// Bytes the process's tensors hold in the device's stream-ordered memory pool: now, and
/// the most held at once since the last [`reset_tensor_peak`] (or since the pool began).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorBytes {
    /// `CU_MEMPOOL_ATTR_USED_MEM_CURRENT`: bytes allocated and not yet freed.
    pub held: u64,
    /// `CU_MEMPOOL_ATTR_USED_MEM_HIGH`: the high-water mark of `held`.
    pub peak: u64,
}

/// The device's tensor bytes, read after the device has finished its queued work; `None` on
/// CPU, or where the device does not allocate from a pool (cudarc then uses `cuMemAlloc`,
/// which keeps no counters).
///
/// candle allocates every tensor through cudarc's `CudaStream::alloc`, which calls
/// `cuMemAllocAsync` on the device's current pool whenever the context supports memory
/// pools (cudarc 0.19 `CudaContext::has_async_alloc`). cuBLAS and cuDNN handles' own
/// workspaces are allocated outside it, as PyTorch's own count leaves out cuBLAS's.
pub fn tensor_bytes(device: &Device) -> Option<TensorBytes> {
    device.synchronize().ok()?;
    pool::tensor_bytes(device)
}

/// Starts a new peak window: the pool's high-water mark is set back to what is held now.
/// Returns whether that happened (`false` on CPU or without a pool).
pub fn reset_tensor_peak(device: &Device) -> bool {
    device.synchronize().is_ok() && pool::reset_peak(device)
}

/// The driver's memory-pool counters, through cudarc's raw driver API (its safe API has none).
#[cfg(feature = "cuda")]
mod pool {
    use super::TensorBytes;
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::Device;
    use std::ffi::c_void;

    /// The pool `cuMemAllocAsync` draws from for `device`, if its context allocates that way.
    fn current_pool(device: &Device) -> Option<sys::CUmemoryPool> {
        let stream = device.as_cuda_device().ok()?.cuda_stream();
        let ctx = stream.context();
        if !ctx.has_async_alloc() {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        // SAFETY: the device handle comes from a live context.
        unsafe { result::device::get_mem_pool(ctx.cu_device()) }.ok()
    }

    fn read(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Option<u64> {
        let mut value: u64 = 0;
        // SAFETY: both attributes read here are `cuuint64_t`, as the driver API documents.
        unsafe {
            result::mem_pool::get_attribute(pool, attr, &mut value as *mut u64 as *mut c_void)
        }
        .ok()?;
        Some(value)
    }

    pub(super) fn tensor_bytes(device: &Device) -> Option<TensorBytes> {
        use sys::CUmemPool_attribute::{
            CU_MEMPOOL_ATTR_USED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        };
        let pool = current_pool(device)?;
        Some(TensorBytes {
            held: read(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            peak: read(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        })
    }

    pub(super) fn reset_peak(device: &Device) -> bool {
        let Some(pool) = current_pool(device) else {
            return false;
        };
        // The driver accepts only 0 here, which resets the mark to the current use.
        let mut zero: u64 = 0;
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        // SAFETY: `USED_MEM_HIGH` is a `cuuint64_t` attribute.
        unsafe { result::mem_pool::set_attribute(pool, attr, &mut zero as *mut u64 as *mut c_void) }
            .is_ok()
    }
}

#[cfg(not(feature = "cuda"))]
mod pool {
    use super::TensorBytes;
    use candle_core::Device;

    pub(super) fn tensor_bytes(_device: &Device) -> Option<TensorBytes> {
        None
    }

    pub(super) fn reset_peak(_device: &Device) -> bool {
        false
    }
}

/// Tracks the device's peak use across batch ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceSampler {
    pub last: Option<(u64, u64)>,
    pub peak: Option<u64>,
}

impl DeviceSampler {
    /// Samples the device now (a no-op on CPU).
    pub fn sample(&mut self, device: &Device) {
        if let Some((used, total)) = device_memory(device) {
            self.last = Some((used, total));
            self.peak = Some(self.peak.map_or(used, |p| p.max(used)));
        }
    }
}

/// Megabytes (10^6 bytes), as the assignment's memory figures are.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::{peak_rss_bytes, start_peak_rss_window};

    #[test]
    fn a_new_window_forgets_the_peak_of_memory_already_freed() {
        const MB: u64 = 1 << 20;
        let big = vec![1u8; 400 * MB as usize];
        std::hint::black_box(&big);
        drop(big);
        let before = peak_rss_bytes().unwrap();
        assert!(before >= 400 * MB, "peak {before} after touching 400 MB");
        assert!(start_peak_rss_window());
        let after = peak_rss_bytes().unwrap();
        assert!(after + 300 * MB < before, "peak {before} -> {after}");
    }
}
