//! `cnn summary`: the layer table of an architecture.

use candle_core::Device;
use cnn_models::Model;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture: alexnet, alexnet-d2l, resnet18 or resnet34.
    #[arg(long, default_value = "resnet18")]
    arch: String,
    /// Number of output classes.
    #[arg(long, default_value_t = 10)]
    num_classes: usize,
    /// Side of the square input image, in pixels.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Batch size the activation-memory estimate is for.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let model = Model::new(&args.arch, args.num_classes, 0, &Device::Cpu)?;
    writeln!(
        std::io::stdout().lock(),
        "{}",
        model.summary(args.image_size, args.batch_size)?
    )?;
    Ok(())
}
