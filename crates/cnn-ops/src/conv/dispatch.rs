//! Which algorithm runs each pass of a convolution on the CPU, and the three passes' entry
//! points: each cuts the kernel to its live taps where some only read padding, lays it out
//! as the chosen algorithm multiplies it, and runs that algorithm.

use super::channel_split;
use super::geometry::{
    cut_kernel, flipped_transposed, ohwi_to_oihw, ohwi_to_oihw_scratch, oihw_to_ohwi,
    oihw_to_ohwi_scratch, transposed_geometry, uncut_kernel, ConvGeom, KernelLayout,
};
use super::{im2col_gemm, taps, winograd_2x2, winograd_4x4};
use crate::cpu::{scratch, Element};

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvPass {
    /// `y = conv(x, w)`.
    Forward,
    /// The gradient with respect to the input.
    InputGrad,
    /// The gradient with respect to the kernel.
    WeightGrad,
}

/// How a pass multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// Unfold the input into a column matrix, one GEMM (`im2col_gemm`; for the gradients of
    /// large kernels over small maps, split by input channel: `channel_split`).
    Im2colGemm,
    /// Winograd F(2x2, 3x3) (`winograd_2x2`).
    Winograd2x2,
    /// Winograd F(4x4, 3x3) (`winograd_4x4`).
    Winograd4x4,
    /// One GEMM per kernel tap over the pixels it reaches, on small padded maps (`taps`).
    Taps,
}

impl Algorithm {
    /// The layout this algorithm multiplies a kernel that comes in `given` in: tap by tap
    /// for [`Algorithm::Taps`], either for Winograd (its kernel transforms read and write
    /// both), OIHW for im2col.
    fn kernel_layout(self, given: KernelLayout) -> KernelLayout {
        match self {
            Algorithm::Taps => KernelLayout::Ohwi,
            Algorithm::Winograd2x2 | Algorithm::Winograd4x4 => given,
            Algorithm::Im2colGemm => KernelLayout::Oihw,
        }
    }
}

/// The algorithm that runs `pass` of `g`, a conv already cut to its live taps.
pub(crate) fn choose(g: &ConvGeom, pass: ConvPass) -> Algorithm {
    if use_taps(g) {
        return Algorithm::Taps;
    }
    match pass {
        ConvPass::Forward | ConvPass::WeightGrad => winograd_for(g),
        // A stride-1 conv's input gradient is the forward conv of the output gradient with
        // the flipped kernel: it runs through Winograd where that conv would. On maps under
        // 16x16 Winograd needs 64+ channels (at 8x8 with 64, batch 32, it runs 454 GFLOP/s
        // against col2im's 316 since its transforms fill their lanes with 4 tile rows; with
        // 128, ResNet's layer 2 at 64 px, it ran 405-407 against 358-364 before that), and
        // at 224 px ResNet's layer 3 (256 channels, 14x14) runs 2x faster.
        ConvPass::InputGrad => {
            transposed_geometry(g).map_or(Algorithm::Im2colGemm, |t| winograd_for(&t))
        }
    }
}

/// The Winograd variant that runs `g`'s forward pass, or im2col + GEMM.
fn winograd_for(g: &ConvGeom) -> Algorithm {
    match (use_winograd4(g), use_winograd(g)) {
        (true, _) => Algorithm::Winograd4x4,
        (false, true) => Algorithm::Winograd2x2,
        (false, false) => Algorithm::Im2colGemm,
    }
}

/// Whether [`taps`] computes `g` (small maps where padding is a large share of the products).
fn use_taps(g: &ConvGeom) -> bool {
    crate::choice::cpu_choice().taps && taps::applies(g)
}

/// Whether `g` runs through Winograd F(2x2, 3x3): it applies, it is switched on, the batch
/// splits across the threads (its GEMMs run single-threaded, one share each), and
/// [`use_winograd4`] does not take it.
fn use_winograd(g: &ConvGeom) -> bool {
    let choice = crate::choice::cpu_choice();
    choice.winograd
        && choice.conv_split_batch
        && g.n >= rayon::current_num_threads()
        && winograd_2x2::applies(g)
        && !use_winograd4(g)
}

/// Whether `g` runs through Winograd F(4x4, 3x3) (see [`winograd_4x4::applies`]).
fn use_winograd4(g: &ConvGeom) -> bool {
    let choice = crate::choice::cpu_choice();
    choice.winograd && choice.winograd_4x4 && choice.conv_split_batch && winograd_4x4::applies(g)
}

/// The algorithm `pass` of `g` runs after cutting (what a timed op is named by).
pub(crate) fn algorithm_of(g: &ConvGeom, pass: ConvPass) -> Algorithm {
    choose(&g.trimmed().map_or(*g, |(cut, _)| cut), pass)
}

/// A kernel the forward pass prepared, kept for the input gradient so that it is not
/// prepared twice a step: cut to its live taps (see [`ConvGeom::trimmed`]; a pass over all
/// 9.4 MB of a 512-channel 3x3, ~3 % of ResNet18@32's training step when done twice),
/// laid out as the chosen algorithm multiplies it, or both.
pub(crate) struct Prepared<T> {
    /// The geometry the input gradient runs with: the cut one where the conv is trimmed.
    pub(crate) geom: ConvGeom,
    pub(crate) kernel: Vec<T>,
    /// How `kernel` is laid out: as the forward pass's algorithm multiplied it.
    pub(crate) layout: KernelLayout,
}

/// Whether a kernel of `g` in `layout` must be copied into `wanted`: not where they are
/// the same, nor for a 1x1 kernel (both layouts are then `[co][ci]`).
fn relayout(g: &ConvGeom, layout: KernelLayout, wanted: KernelLayout) -> bool {
    layout != wanted && g.kh * g.kw > 1
}

/// `w` (of `g`, in layout `from`) in the other layout: a new vector where it is `kept`, a
/// scratch buffer (to be given back) where it is used once.
fn laid_out<T: Element>(g: &ConvGeom, w: &[T], from: KernelLayout, kept: bool) -> Vec<T> {
    match (from, kept) {
        (KernelLayout::Oihw, true) => oihw_to_ohwi(g, w),
        (KernelLayout::Oihw, false) => oihw_to_ohwi_scratch(g, w),
        (KernelLayout::Ohwi, true) => ohwi_to_oihw(g, w),
        (KernelLayout::Ohwi, false) => ohwi_to_oihw_scratch(g, w),
    }
}

/// `g` cut to its live taps, with the cut kernel, where some taps only read padding.
fn cut<T: Element>(g: &ConvGeom, w: &[T], layout: KernelLayout) -> (ConvGeom, Option<Vec<T>>) {
    match g.trimmed() {
        Some((cut, k0)) => (cut, Some(cut_kernel(g, &cut, k0, w, layout))),
        None => (*g, None),
    }
}

/// `y = conv(x, w)` for an NCHW batch and a kernel in `layout`, both contiguous; with
/// `keep`, also the kernel it prepared where it prepared one (cut, or laid out for the
/// algorithm), for [`input_grad_prepared`].
pub(crate) fn forward<T: Element>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    layout: KernelLayout,
    keep: bool,
) -> (Vec<T>, Option<Prepared<T>>) {
    let (geom, cut) = cut(g, w, layout);
    let algorithm = choose(&geom, ConvPass::Forward);
    let wanted = algorithm.kernel_layout(layout);
    let copied = relayout(&geom, layout, wanted);
    let relaid = copied.then(|| laid_out(&geom, cut.as_deref().unwrap_or(w), layout, keep));
    let prepared = relaid.or(cut);
    let kernel = prepared.as_deref().unwrap_or(w);
    let y = run_forward(algorithm, &geom, x, kernel, wanted);
    if !keep {
        // A scratch copy goes back to the pool (a cut kernel is a vector of its own).
        if let (true, Some(kernel)) = (copied, prepared) {
            scratch::give_back(kernel);
        }
        return (y, None);
    }
    let prepared = prepared.map(|kernel| Prepared {
        geom,
        kernel,
        layout: wanted,
    });
    (y, prepared)
}

/// The forward conv of an uncut `g` by `algorithm`, the kernel in the layout it multiplies.
fn run_forward<T: Element>(
    algorithm: Algorithm,
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    match algorithm {
        Algorithm::Taps => taps::forward(g, x, w),
        Algorithm::Winograd4x4 => winograd_4x4::forward(g, x, w, layout),
        Algorithm::Winograd2x2 => winograd_2x2::forward(g, x, w, layout),
        Algorithm::Im2colGemm => im2col_gemm::forward(g, x, w),
    }
}

/// [`input_grad`] from a kernel [`forward`] prepared.
pub(crate) fn input_grad_prepared<T: Element>(p: Prepared<T>, gy: &[T]) -> Vec<T> {
    input_grad(&p.geom, &p.kernel, p.layout, gy)
}

/// Gradient with respect to the input, for a kernel in `layout`.
pub(crate) fn input_grad<T: Element>(
    g: &ConvGeom,
    w: &[T],
    layout: KernelLayout,
    gy: &[T],
) -> Vec<T> {
    let (geom, cut) = cut(g, w, layout);
    let algorithm = choose(&geom, ConvPass::InputGrad);
    let wanted = algorithm.kernel_layout(layout);
    let kernel = cut.as_deref().unwrap_or(w);
    let relaid = relayout(&geom, layout, wanted).then(|| laid_out(&geom, kernel, layout, false));
    let kernel = relaid.as_deref().unwrap_or(kernel);
    let gx = match algorithm {
        Algorithm::Taps => taps::input_grad(&geom, kernel, gy),
        Algorithm::Winograd2x2 | Algorithm::Winograd4x4 => {
            // `choose` took Winograd for the transposed conv, which therefore exists.
            let t = transposed_geometry(&geom).expect("a stride-1 conv");
            let flipped = flipped_transposed(&geom, kernel, wanted);
            run_forward(algorithm, &t, gy, &flipped, KernelLayout::Oihw)
        }
        Algorithm::Im2colGemm if channel_split::applies(&geom) => {
            channel_split::input_grad(&geom, kernel, gy)
        }
        Algorithm::Im2colGemm => im2col_gemm::input_grad(&geom, kernel, gy),
    };
    if let Some(k) = relaid {
        scratch::give_back(k);
    }
    gx
}

/// Gradient with respect to the kernel, in `layout`.
pub(crate) fn weight_grad<T: Element>(
    g: &ConvGeom,
    x: &[T],
    gy: &[T],
    layout: KernelLayout,
) -> Vec<T> {
    if let Some((cut, k0)) = g.trimmed() {
        let gw = weight_grad(&cut, x, gy, layout);
        return uncut_kernel(g, &cut, k0, &gw, layout);
    }
    let algorithm = choose(g, ConvPass::WeightGrad);
    let wanted = algorithm.kernel_layout(layout);
    let gw = match algorithm {
        Algorithm::Taps => taps::weight_grad(g, x, gy),
        Algorithm::Winograd4x4 => winograd_4x4::weight_grad(g, x, gy, wanted),
        Algorithm::Winograd2x2 => winograd_2x2::weight_grad(g, x, gy, wanted),
        Algorithm::Im2colGemm if channel_split::applies(g) => channel_split::weight_grad(g, x, gy),
        Algorithm::Im2colGemm => im2col_gemm::weight_grad(g, x, gy),
    };
    match relayout(g, layout, wanted) {
        true => laid_out(g, &gw, wanted, true),
        false => gw,
    }
}

/// The name a timed op of `pass` gets when it runs by `algorithm` (`crate::set_op_timing`).
pub(crate) fn op_name(pass: ConvPass, algorithm: Algorithm) -> &'static str {
    use Algorithm::*;
    match (pass, algorithm) {
        (ConvPass::Forward, Im2colGemm) => "conv2d",
        (ConvPass::Forward, Winograd2x2) => "conv2d (winograd)",
        (ConvPass::Forward, Taps) => "conv2d (taps)",
        (ConvPass::Forward, Winograd4x4) => "conv2d (winograd 4x4)",
        (ConvPass::InputGrad, Im2colGemm) => "conv2d input-grad",
        (ConvPass::InputGrad, Winograd2x2) => "conv2d input-grad (winograd)",
        (ConvPass::InputGrad, Taps) => "conv2d input-grad (taps)",
        (ConvPass::InputGrad, Winograd4x4) => "conv2d input-grad (winograd 4x4)",
        (ConvPass::WeightGrad, Im2colGemm) => "conv2d weight-grad",
        (ConvPass::WeightGrad, Winograd2x2) => "conv2d weight-grad (winograd)",
        (ConvPass::WeightGrad, Taps) => "conv2d weight-grad (taps)",
        (ConvPass::WeightGrad, Winograd4x4) => "conv2d weight-grad (winograd 4x4)",
    }
}
