//! `cnn`: a thin command line over the toolkit's crates; each command is one call into them.

mod convert;
mod data_arg;
mod eval;
mod init_arg;
mod predict;
mod shared_args;
mod shell;
mod summary;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// Train, evaluate and inspect classic CNNs (AlexNet, ResNet18/34) on candle.
#[derive(Parser)]
#[command(name = "cnn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network on a folder of images; writes a self-describing run folder.
    Train(Box<train::Args>),
    /// Evaluate a run's model: accuracy, per-class accuracy, confusion matrix.
    Eval(eval::Args),
    /// Classify image files with one or more runs' models, side by side.
    Predict(predict::Args),
    /// Print a network's layer table: output shapes, parameters, memory estimate.
    Summary(summary::Args),
    /// Convert a PyTorch .pth checkpoint to safetensors, checked against an architecture.
    Convert(convert::Args),
}

fn main() -> ExitCode {
    cnn_train::tune_for_training();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report): {info}");
    }));
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match &cli.command {
        Command::Train(args) => {
            let sub = matches
                .subcommand_matches("train")
                .expect("train subcommand");
            train::run(args, sub)
        }
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Convert(args) => convert::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, no backtrace: the chain of causes joined.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output closed early (`cnn summary | head`): not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
