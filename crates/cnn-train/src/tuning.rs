//! Process settings for training throughput: glibc's allocator, told to keep freed memory
//! for reuse, candle's elementwise thread pool, told not to spin on our cores, and the
//! rayon pool the model's kernels run on, joined by the calling thread.
//!
//! Each training step frees and re-allocates the same large activation and gradient
//! buffers. With glibc's defaults those come from fresh `mmap`s that the kernel must zero on
//! first touch (~1.1 GB/s on the reference VM against ~17 GB/s for reused memory), which cost
//! AlexNet@64 1.4-1.6x of its step time (docs/PERFORMANCE.md). No crate sets these knobs, so
//! this is `mallopt` by hand: never serve allocations by `mmap`, never give the heap back,
//! one arena for all threads.

/// Sets the allocator and candle's thread pool for training throughput. Call once, first
/// thing in `main`, before any thread starts; the allocator part is a no-op off glibc.
pub fn tune_for_training() {
    cnn_ops::tune_candle_pool();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        // One arena: the model runs on a rayon pool's threads (`on_compute_pool`), and a
        // thread's own arena grows by 64 MB heaps that glibc unmaps when they empty, which
        // brought back the fresh-page cost (AlexNet@64 training 250 -> 140 img/s).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Runs `f` on a thread of a rayon pool of `threads` threads (rayon's default, which honours
/// `RAYON_NUM_THREADS`, if `None`), so that the thread driving the model computes too.
/// From outside a pool every parallel op of the model hands its work to the pool and puts
/// the caller to sleep until it is done, one wake-up per op: measured 7 % slower on a
/// ResNet18@64 training step and 10-20 % on ResNet18@32 inference (2 cores). Already on a
/// pool's thread, with no thread count asked for, `f` just runs.
pub fn on_compute_pool<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, rayon::ThreadPoolBuildError> {
    if threads.is_none() && rayon::current_thread_index().is_some() {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()?;
    Ok(pool.install(f))
}

#[cfg(test)]
mod tests {
    use super::on_compute_pool;

    #[test]
    fn the_work_runs_on_a_pool_thread_of_the_asked_size() {
        let seen = on_compute_pool(Some(3), || {
            (rayon::current_thread_index(), rayon::current_num_threads())
        })
        .unwrap();
        assert!(seen.0.is_some(), "ran off the pool");
        assert_eq!(seen.1, 3);
        // Nested without a size: stays on the pool it is on.
        let nested = on_compute_pool(Some(2), || {
            on_compute_pool(None, rayon::current_num_threads).unwrap()
        });
        assert_eq!(nested.unwrap(), 2);
    }
}
