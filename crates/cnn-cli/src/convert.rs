//! `cnn convert`: a PyTorch `.pth` checkpoint (or safetensors) checked against an
//! architecture and written as the safetensors file `load_weights` and `--init-from` read.

use candle_core::Device;
use cnn_models::Model;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint: a PyTorch zip `.pth` holding a state dict (bare, or under a
    /// `state_dict` or `model` key; `module.` prefixes dropped), or safetensors.
    input: PathBuf,
    /// The safetensors file to write (refused if it exists, unless --force).
    output: PathBuf,
    /// Architecture the tensors must match by name and shape: alexnet, alexnet-d2l,
    /// resnet18 or resnet34 (the class count comes from the classifier's shape).
    #[arg(long)]
    arch: String,
    /// Replace OUTPUT if it exists [default: off].
    #[arg(long)]
    force: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "{}: already exists (pass --force to replace it)",
            args.output.display()
        );
    }
    let model = Model::from_checkpoint(&args.arch, &args.input, &Device::Cpu)?;
    model.save_weights(&args.output)?;
    writeln!(
        std::io::stdout().lock(),
        "{}: {} for {} classes, {} tensors -> {}",
        args.input.display(),
        model.arch(),
        model.num_classes(),
        model.params().all().len(),
        args.output.display()
    )?;
    Ok(())
}
