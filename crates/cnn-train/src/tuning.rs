//! Process settings for training throughput: glibc's allocator, told to keep freed memory
//! for reuse, and candle's elementwise thread pool, told not to spin on our cores.
//!
//! Each training step frees and re-allocates the same large activation and gradient
//! buffers. With glibc's defaults those come from fresh `mmap`s that the kernel must zero on
//! first touch (~1.1 GB/s on the reference VM against ~17 GB/s for reused memory), which cost
//! AlexNet@64 1.4-1.6x of its step time (docs/PERFORMANCE.md). No crate sets these knobs, so
//! this is `mallopt` by hand: never serve allocations by `mmap`, never give the heap back.

/// Sets the allocator and candle's thread pool for training throughput. Call once, first
/// thing in `main`, before any thread starts; the allocator part is a no-op off glibc.
pub fn tune_for_training() {
    cnn_models::ops::tune_candle_pool();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
