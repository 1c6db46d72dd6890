//! `cargo xtask bench --conv`: each convolution shape of ResNet18 and AlexNet, its forward
//! pass and both gradients through our ops against candle's `conv2d`, in GFLOP/s.

use super::{interleaved, sgemm_line, Args};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use cnn_models::Model;
use cnn_ops::{self as ops, CpuChoice};

/// One convolution shape of the networks for the micro-bench.
struct Layer {
    /// The first layer of this shape, e.g. `resnet18 layer2.0.downsample.0`.
    name: String,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    size: usize,
    /// How many layers of the network have this shape.
    count: usize,
}

/// The distinct conv shapes of ResNet18 and AlexNet at input size `res`, in the order their
/// forward passes run them, as each network's traced pass reports them.
fn layers(res: usize) -> Result<Vec<Layer>> {
    let mut layers: Vec<Layer> = Vec::new();
    for arch in ["resnet18", "alexnet"] {
        let model = Model::new(arch, 10, 0, &Device::Cpu)?;
        for conv in model.summary(res, 1)?.convs {
            let ([cin, size, width], [k, kw]) = (conv.input, conv.kernel);
            if size != width || k != kw {
                bail!(
                    "{arch} {}: the bench takes square maps and kernels",
                    conv.name
                );
            }
            let shape = (cin, conv.out_channels, k, conv.stride, conv.padding, size);
            let same = layers.iter_mut().find(|l| {
                l.name.starts_with(arch) && (l.cin, l.cout, l.k, l.stride, l.pad, l.size) == shape
            });
            match same {
                Some(layer) => layer.count += 1,
                None => layers.push(Layer {
                    name: format!("{arch} {}", conv.name),
                    cin,
                    cout: conv.out_channels,
                    k,
                    stride: conv.stride,
                    pad: conv.padding,
                    size,
                    count: 1,
                }),
            }
        }
    }
    Ok(layers)
}

/// `--conv`: each conv layer shape's three passes, candle's against ours, in GFLOP/s.
pub(super) fn conv_layers(args: &Args) -> Result<()> {
    let dev = Device::Cpu;
    let n = args.conv_batch;
    println!(
        "conv layers at input {} batch {n}, {} threads: GFLOP/s candle -> ours (speedup), median of {} after a warm-up",
        args.conv_res,
        rayon::current_num_threads(),
        args.steps
    );
    println!("{}", sgemm_line(args.steps)?);
    println!(
        "| layer | shape | fwd candle | fwd ours | igrad candle | igrad ours | wgrad candle | wgrad ours | step speedup |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut total_candle, mut total_ours) = ([0f64; 3], [0f64; 3]);
    for layer in layers(args.conv_res)? {
        let Layer {
            cin,
            cout,
            k,
            stride: s,
            pad: p,
            size,
            ..
        } = layer;
        let x = Tensor::randn(0f32, 1., (n, cin, size, size), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev)?;
        // Ours as the models run it, the kernel held tap by tap.
        let w_ohwi = w.permute((0, 2, 3, 1))?.contiguous()?;
        let o = (size + 2 * p - k) / s + 1;
        let gy = Tensor::randn(0f32, 1., (n, cout, o, o), &dev)?;
        let flops = 2.0 * (n * cout * o * o * cin * k * k) as f64;
        ops::set_cpu_choice(CpuChoice::default());
        let fwd = interleaved(
            args.steps,
            || Ok(x.conv2d(&w, p, s, 1, 1)?),
            || Ok(ops::conv2d_ohwi(&x, &w_ohwi, None, s, p)?),
        )?;
        let igrad = interleaved(
            args.steps,
            || {
                // candle's backward: a transposed convolution of the output gradient.
                let out_size = (o - 1) * s + k - 2 * p;
                Ok(gy.conv_transpose2d(&w, p, size - out_size, s, 1)?)
            },
            || Ok(ops::conv2d_ohwi_input_grad(&w_ohwi, &gy, x.dims(), s, p)?),
        )?;
        let wgrad = interleaved(
            args.steps,
            || {
                // candle's backward: the input convolved with the output gradient as kernel.
                let g = x
                    .transpose(0, 1)?
                    .conv2d(&gy.transpose(0, 1)?, p, 1, s, 1)?
                    .transpose(0, 1)?;
                Ok(g.narrow(2, 0, k)?.narrow(3, 0, k)?.contiguous()?)
            },
            || Ok(ops::conv2d_ohwi_weight_grad(&x, &gy, w_ohwi.dims(), s, p)?),
        )?;
        let gf = |t: f64| flops / t / 1e9;
        let passes = [fwd, igrad, wgrad];
        for (i, (c, m)) in passes.iter().enumerate() {
            total_candle[i] += c * layer.count as f64;
            total_ours[i] += m * layer.count as f64;
        }
        let step_c: f64 = passes.iter().map(|p| p.0).sum();
        let step_m: f64 = passes.iter().map(|p| p.1).sum();
        println!(
            "| {} | {cin}->{cout} k{k} s{s} @{size} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            layer.name,
            gf(fwd.0),
            gf(fwd.1),
            gf(igrad.0),
            gf(igrad.1),
            gf(wgrad.0),
            gf(wgrad.1),
            step_c / step_m
        );
    }
    let names = ["forward", "input grad", "weight grad"];
    for i in 0..3 {
        println!(
            "all layers x count, {}: candle {:.3} s, ours {:.3} s ({:.2}x)",
            names[i],
            total_candle[i],
            total_ours[i],
            total_candle[i] / total_ours[i]
        );
    }
    Ok(())
}
