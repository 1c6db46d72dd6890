//! Memory figures: the process's peak resident set (CPU), device memory in use through
//! cudarc's `mem_get_info` (CUDA, behind the `cuda` feature), and the bytes held by
//! parameters, gradients and optimiser state (the analogue of `torch.cuda.memory_allocated`).

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
}

impl Memory {
    /// Parameters + gradients + optimiser state: what `torch.cuda.memory_allocated()` reports
    /// between steps of a PyTorch loop (its gradients stay allocated between steps).
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
