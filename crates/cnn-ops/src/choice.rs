//! Which of this crate's CPU implementations the ops run, switchable at run time so one
//! process can measure them against candle's own.

use std::sync::atomic::{AtomicU16, Ordering};

/// The CPU implementations the ops pick from; the default is the fastest measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuChoice {
    /// im2col + GEMM convolution (false: candle's `conv2d` and its backward).
    pub conv: bool,
    /// Fused batch-norm forward and backward (false: composed from candle ops).
    pub batch_norm: bool,
    /// Split a convolution's batch across threads (false: split each GEMM instead).
    pub conv_split_batch: bool,
    /// Winograd F(2x2, 3x3) for stride-1 3x3 convolutions (false: im2col + GEMM for all).
    pub winograd: bool,
    /// Winograd F(4x4, 3x3) where it applies and `winograd` is on (false: F(2x2, 3x3)).
    pub winograd_4x4: bool,
    /// Tap-by-tap GEMMs that skip padding on small maps (false: im2col + GEMM there too).
    pub taps: bool,
    /// One-pass ReLU forward and backward (false: candle's `relu` and its backward).
    pub relu: bool,
    /// Linear layers as one op with GEMMs into contiguous gradients (false: candle's matmul).
    pub linear: bool,
    /// Vector code where the CPU has it: hand-written AVX-512, and loops built for AVX-512
    /// or AVX2 beside baseline x86-64 (false: the portable loops, baseline build only).
    pub simd: bool,
}

impl Default for CpuChoice {
    fn default() -> Self {
        Self {
            conv: true,
            batch_norm: true,
            conv_split_batch: true,
            winograd: true,
            winograd_4x4: true,
            taps: true,
            relu: true,
            linear: true,
            simd: true,
        }
    }
}

impl CpuChoice {
    /// candle's own ops throughout: the baseline.
    pub fn candle() -> Self {
        Self {
            conv: false,
            batch_norm: false,
            conv_split_batch: true,
            winograd: false,
            winograd_4x4: false,
            taps: false,
            relu: false,
            linear: false,
            simd: false,
        }
    }

    /// The choice called `name` on command lines (`cnn train --cpu-kernels`, the bench, the
    /// examples; one of [`CpuChoice::NAMES`]): `ours` is the default, `candle` candle's ops
    /// throughout, `conv` and `conv-bn` candle's with our convolution (im2col + GEMM only)
    /// and then our batch norm switched on, `conv-bn-relu` ours but candle's matmul for
    /// linear layers, and `gemm-split`, `no-winograd`, `no-winograd4x4`, `no-taps`,
    /// `no-simd` the default with that one thing switched off.
    pub fn named(name: &str) -> Option<Self> {
        let (ours, candle) = (Self::default(), Self::candle());
        Some(match name {
            "ours" => ours,
            "candle" => candle,
            "conv" => Self {
                conv: true,
                ..candle
            },
            "conv-bn" => Self {
                conv: true,
                batch_norm: true,
                ..candle
            },
            "conv-bn-relu" => Self {
                linear: false,
                ..ours
            },
            "gemm-split" => Self {
                conv_split_batch: false,
                ..ours
            },
            "no-winograd" => Self {
                winograd: false,
                ..ours
            },
            "no-winograd4x4" => Self {
                winograd_4x4: false,
                ..ours
            },
            "no-taps" => Self {
                taps: false,
                ..ours
            },
            "no-simd" => Self {
                simd: false,
                ..ours
            },
            _ => return None,
        })
    }

    /// Every name [`CpuChoice::named`] knows.
    pub const NAMES: [&'static str; 10] = [
        "ours",
        "candle",
        "conv",
        "conv-bn",
        "conv-bn-relu",
        "gemm-split",
        "no-winograd",
        "no-winograd4x4",
        "no-taps",
        "no-simd",
    ];
}

const CONV: u16 = 1;
const BATCH_NORM: u16 = 2;
const SPLIT_CONV_BATCH: u16 = 4;
const RELU: u16 = 8;
const LINEAR: u16 = 16;
const WINOGRAD: u16 = 32;
const SIMD: u16 = 64;
const TAPS: u16 = 128;
const WINOGRAD_4X4: u16 = 256;
static CHOICE: AtomicU16 = AtomicU16::new(
    CONV | BATCH_NORM | SPLIT_CONV_BATCH | RELU | LINEAR | WINOGRAD | SIMD | TAPS | WINOGRAD_4X4,
);

/// Sets the implementations later calls use, process-wide.
pub fn set_cpu_choice(k: CpuChoice) {
    let bits = [
        (k.conv, CONV),
        (k.batch_norm, BATCH_NORM),
        (k.conv_split_batch, SPLIT_CONV_BATCH),
        (k.relu, RELU),
        (k.linear, LINEAR),
        (k.winograd, WINOGRAD),
        (k.simd, SIMD),
        (k.taps, TAPS),
        (k.winograd_4x4, WINOGRAD_4X4),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |bits, (_, bit)| bits | bit);
    CHOICE.store(bits, Ordering::Relaxed);
}

/// The implementations in use.
pub fn cpu_choice() -> CpuChoice {
    let bits = CHOICE.load(Ordering::Relaxed);
    CpuChoice {
        conv: bits & CONV != 0,
        batch_norm: bits & BATCH_NORM != 0,
        conv_split_batch: bits & SPLIT_CONV_BATCH != 0,
        relu: bits & RELU != 0,
        linear: bits & LINEAR != 0,
        winograd: bits & WINOGRAD != 0,
        simd: bits & SIMD != 0,
        taps: bits & TAPS != 0,
        winograd_4x4: bits & WINOGRAD_4X4 != 0,
    }
}

/// Spin iterations candle's elementwise worker waits for more work before parking.
const CANDLE_SPIN_LIMIT: &str = "200";

/// Makes candle's own worker thread yield its core quickly between elementwise ops.
///
/// candle 0.11 runs elementwise ops on a "barrier pool" whose workers spin 25,000 times
/// after each op before parking, while this crate's ops run on rayon's threads. On two
/// cores the spinning worker took a core from every GEMM: ResNet18@64 trained at 160-170
/// img/s with candle's default and 196-210 with a limit of 200 (ResNet18@32 424 -> 506;
/// 224 unchanged; docs/PERFORMANCE.md). candle reads the limit from the environment once,
/// when its pool starts, so this must run first thing in `main`, before any tensor op and
/// before other threads exist. A value the user already set is kept.
pub fn tune_candle_pool() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, CANDLE_SPIN_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_distinct_choice() {
        let choices: Vec<CpuChoice> = CpuChoice::NAMES
            .iter()
            .map(|name| CpuChoice::named(name).unwrap_or_else(|| panic!("{name} unknown")))
            .collect();
        for (i, a) in choices.iter().enumerate() {
            for b in &choices[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(CpuChoice::named("ours"), Some(CpuChoice::default()));
        assert_eq!(CpuChoice::named("candle"), Some(CpuChoice::candle()));
        assert_eq!(CpuChoice::named("winograd"), None);
    }
}
