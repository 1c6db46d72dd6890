//! Optional wall-clock timing of the CPU ops, per op and input shapes, to see where a
//! training step goes without a sampling profiler (`cargo xtask bench --op-times`).
//!
//! Off by default: then each op pays one relaxed atomic load. On, each op adds one clock
//! read at either end and a short locked update of a table of a few dozen entries.

use candle_core::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Time spent in one op on inputs of one set of shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// The op's name, e.g. `conv2d weight-grad (winograd)` or `batch_norm backward`.
    pub op: String,
    /// Its inputs' shapes, in argument order.
    pub shapes: Vec<Vec<usize>>,
    pub calls: u64,
    pub seconds: f64,
}

static ON: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

/// Starts (or stops) timing every op this crate runs on the CPU, in every thread.
pub fn set_op_timing(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether ops are being timed now.
pub(crate) fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The times gathered since the last call, largest first; the table starts empty again.
pub fn take_op_times() -> Vec<OpTime> {
    let mut times = std::mem::take(&mut *table());
    times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    times
}

fn table() -> MutexGuard<'static, Vec<OpTime>> {
    // A panic elsewhere while holding the lock leaves a plain list: still usable.
    TIMES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Times one op call until dropped, if timing is on.
pub(crate) struct OpTimer {
    op: &'static str,
    shapes: Vec<Vec<usize>>,
    start: Instant,
}

/// An [`OpTimer`] for op `op` on inputs laid out as `layouts`; `None` (nothing to do) while
/// timing is off. Ops nest only through candle's backward, which calls each op's kernel on
/// its own, so no time is counted twice.
pub(crate) fn start(op: &'static str, layouts: &[&Layout]) -> Option<OpTimer> {
    enabled().then(|| OpTimer {
        op,
        shapes: layouts.iter().map(|l| l.shape().dims().to_vec()).collect(),
        start: Instant::now(),
    })
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        let mut times = table();
        let shapes = std::mem::take(&mut self.shapes);
        match times
            .iter_mut()
            .find(|t| t.op == self.op && t.shapes == shapes)
        {
            Some(t) => {
                t.calls += 1;
                t.seconds += seconds;
            }
            None => times.push(OpTime {
                op: self.op.to_string(),
                shapes,
                calls: 1,
                seconds,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Timing is on or off for the whole process: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    /// The entries for ReLU on `dims` among the times taken now.
    fn relu_times(dims: &[usize]) -> Vec<OpTime> {
        take_op_times()
            .into_iter()
            .filter(|t| t.op == "relu" && t.shapes == [dims.to_vec()])
            .collect()
    }

    #[test]
    fn ops_are_timed_by_name_and_shape_only_while_timing_is_on() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        // A shape no other test uses: tests run in parallel and share the table.
        let dims = [3, 5, 7, 11];
        let x = Tensor::ones(&dims, candle_core::DType::F32, &Device::Cpu).unwrap();
        crate::relu(&x).unwrap();
        assert!(relu_times(&dims).is_empty(), "timed while off");
        set_op_timing(true);
        for _ in 0..3 {
            crate::relu(&x).unwrap();
        }
        set_op_timing(false);
        let times = relu_times(&dims);
        assert_eq!(times.len(), 1, "{times:?}");
        assert_eq!(times[0].calls, 3);
        assert!(times[0].seconds > 0.0);
        crate::relu(&x).unwrap();
        assert!(relu_times(&dims).is_empty(), "timed after switching off");
    }

    #[test]
    fn a_timed_conv_is_named_by_the_kernels_each_pass_ran() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Device::Cpu;
        let ones = |dims: &[usize]| Tensor::ones(dims, candle_core::DType::F32, &dev).unwrap();
        // (input, OHWI kernel, stride, padding, the family all three passes run): a 3x3
        // over 16x16 maps (Winograd), over 4x4 maps of 8 images (tap by tap), a 7x7 at
        // stride 2 (im2col + GEMM). Channel counts no other test uses.
        // (input dims, OHWI kernel dims, stride, padding, name suffix)
        type Case<'a> = (&'a [usize], &'a [usize], usize, usize, &'a str);
        let cases: [Case; 3] = [
            (&[8, 17, 16, 16], &[19, 3, 3, 17], 1, 1, " (winograd)"),
            (&[8, 17, 4, 4], &[19, 3, 3, 17], 1, 1, " (taps)"),
            (&[2, 3, 16, 16], &[19, 7, 7, 3], 2, 3, ""),
        ];
        set_op_timing(true);
        let mut want = Vec::new();
        for (xd, wd, stride, pad, family) in cases {
            let (x, w) = (ones(xd), ones(wd));
            let y = crate::conv2d_ohwi(&x, &w, None, stride, pad).unwrap();
            let gy = ones(y.dims());
            crate::conv2d_ohwi_input_grad(&w, &gy, xd, stride, pad).unwrap();
            crate::conv2d_ohwi_weight_grad(&x, &gy, wd, stride, pad).unwrap();
            let (x, w, gy) = (xd.to_vec(), wd.to_vec(), y.dims().to_vec());
            want.push((format!("conv2d{family}"), vec![x.clone(), w.clone()]));
            want.push((format!("conv2d input-grad{family}"), vec![w, gy.clone()]));
            want.push((format!("conv2d weight-grad{family}"), vec![x, gy]));
        }
        set_op_timing(false);
        let times = take_op_times();
        for (op, shapes) in want {
            let seen = times.iter().find(|t| t.op == op && t.shapes == shapes);
            assert!(
                seen.is_some_and(|t| t.calls == 1),
                "{op} {shapes:?} in {times:?}"
            );
        }
    }
}
