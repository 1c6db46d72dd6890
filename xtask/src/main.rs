//! `cargo xtask`: the project's tasks. Changes to the project root first, so it works from
//! any folder, and needs nothing but cargo. A binary copied to a machine without the source
//! tree stays in its working folder instead: `reproduce` then takes `--data`, `--photos`
//! and `--out` (its defaults are paths of the tree).

mod bench;
mod ci;
mod reproduce;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Project tasks: reproduce the assignment, check accuracy baselines, benchmark.
#[derive(Parser)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    task: Option<Task>,
}

#[derive(Subcommand)]
enum Task {
    /// Re-run every task of the assignment and write docs/results/<profile>/REPORT.md.
    Reproduce(reproduce::Args),
    /// Train small real-data configurations and fail below the committed accuracy floors.
    Ci(ci::Args),
    /// Speed tables: `bench` (models, train and inference; `--help` lists options) or
    /// `bench pipeline --data DIR` (the image pipeline).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workplace's shared folder (datasets, the PyTorch baseline script): `$CNN_SHARED_DIR`,
/// else `../shared`, relative to the project root, which `main` enters before any task runs
/// (kept relative so that configs recording it match in any clone).
pub(crate) fn shared_dir() -> PathBuf {
    std::env::var_os("CNN_SHARED_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("../shared"), PathBuf::from)
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> ExitCode {
    // Before any thread or tensor exists (bench rows run in child processes of this binary).
    cnn_ops::tune_candle_pool();
    let cli = Cli::parse();
    // Training tasks reuse freed memory; `bench` sets its rows' allocator itself (--malloc).
    if matches!(cli.task, Some(Task::Reproduce(_) | Task::Ci(_))) {
        cnn_train::tune_for_training();
    }
    let mut root = project_root();
    if !root.join("Cargo.toml").is_file() {
        // Built elsewhere: no tree to enter (crate versions come compiled in, see machine.rs).
        root = PathBuf::from(".");
        eprintln!(
            "xtask: no source tree at {} (built elsewhere): running in this folder",
            project_root().display()
        );
    } else if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!(
            "error: cannot enter the project root {}: {e}",
            root.display()
        );
        return ExitCode::FAILURE;
    }
    let result = match cli.task {
        None => {
            println!("cargo xtask <TASK>\n");
            println!("  reproduce   re-run the assignment's five tasks into docs/results/<profile>/REPORT.md");
            println!("              (--profile quick|cpu|assignment, --data PATH, --device cpu|cuda, --out DIR, --force)");
            println!(
                "  bench       train/inference images/s per model against PyTorch (--torch PYTHON)"
            );
            println!(
                "  bench pipeline --data DIR   the image pipeline's images/s, cache off and on"
            );
            println!("  ci          small real-data trainings held to the floors in xtask/baselines.json");
            println!("\n`cargo xtask <TASK> --help` lists a task's options.");
            Ok(())
        }
        Some(Task::Reproduce(args)) => reproduce::run(args, &root),
        Some(Task::Ci(args)) => ci::run(args),
        Some(Task::Bench { args }) => match args.first().map(String::as_str) {
            Some("pipeline") => bench::pipeline::run(&args[1..]),
            _ => bench::run(&args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
