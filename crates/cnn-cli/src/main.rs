//! `cnn`: a thin command line over the toolkit's crates; each command is one call into them.

mod summary;

use clap::{Parser, Subcommand};
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
    /// Print a network's layer table: output shapes, parameters, memory estimate.
    Summary(summary::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Summary(args) => summary::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, no backtrace: the chain of causes joined.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
