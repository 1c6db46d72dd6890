//! The pipeline benchmark without xtask (same code as `cargo xtask bench pipeline`):
//!
//! `cargo run -p cnn-data --release --example bench_pipeline -- --data ../shared/datasets/imagenette-224`

#[path = "../../../xtask/src/bench_pipeline.rs"]
mod bench_pipeline;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_pipeline::run(&args)
}
