//! One thread's GEMM rate (the gemm crate, as the CPU ops call it) at the shapes the
//! ResNets' convolutions multiply at 64 px, with every operand in cache: the ceiling their
//! GEMMs can reach, to set against a step's profile (docs/PERFORMANCE-CHANGELOG.md, session 13).
//!
//! `cargo run --release -p cnn-models --example gemm_shapes`

use std::time::Instant;

/// GFLOP/s of `dst (m x n) = a (m x k) * b (k x n)`, all row-major, on this thread: the
/// best of 7 timings of enough repetitions for ~0.2 GFLOP each.
fn rate(m: usize, k: usize, n: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut dst = vec![0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let reps = (2e8 / flops).max(1.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..reps {
            // SAFETY: dst is m x n with rows n apart, a m x k with rows k apart, b k x n
            // with rows n apart, all allocated above at those sizes.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        }
        best = best.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best / 1e9
}

fn main() {
    // (rows, reduction, columns) and where the ops call such a product: a thread's
    // share (half the filters of a tap GEMM, 32 images' pixels as columns).
    let shapes = [
        (2048, 2048, 2048, "SGEMM reference (out of cache)"),
        (64, 64, 64, "Winograd, layer 1: one image's tiles"),
        (128, 128, 64, "Winograd, layer 2: 4 images' tiles"),
        (64, 147, 1024, "stem forward, one image"),
        (128, 256, 32, "taps, layer 3: an edge run"),
        (128, 256, 96, "taps, layer 3: a 3-pixel run"),
        (128, 256, 384, "taps, layer 3: a centre-column run"),
        (256, 512, 32, "taps, layer 4: one pixel"),
        (256, 512, 128, "taps, layer 4: a centre-column run"),
    ];
    println!("one thread, operands in cache (gemm crate, row-major as the ops call it)");
    for (m, k, n, what) in shapes {
        println!(
            "{m:5} x {k:5} x {n:5}: {:6.1} GFLOP/s  {what}",
            rate(m, k, n)
        );
    }
}
