//! Peak memory against prefetch depth, with a consumer slower than the loader (so the queue
//! stays full): `cargo run -p cnn-data --release --example prefetch_memory -- DIR PREFETCH`.
//! Prints `RESULT prefetch_memory prefetch=P batches=40 peak_rss_mib=M`.

use std::time::Duration;

use cnn_data::{open, DataSpec, Loader, LoaderConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: prefetch_memory DIR PREFETCH")?;
    let prefetch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let ds = open(&DataSpec::folder(dir))?;
    let cfg = LoaderConfig {
        prefetch,
        threads: Some(2),
        ..LoaderConfig::train(224, 32)
    };
    let loader = Loader::new(&ds.train, cfg)?;
    let mut n = 0;
    for batch in loader.epoch(0).take(40) {
        batch?;
        n += 1;
        std::thread::sleep(Duration::from_millis(40)); // a "training step"
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("?")
        .trim();
    let kb: f64 = hwm
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    println!(
        "RESULT prefetch_memory prefetch={prefetch} batches={n} peak_rss_mib={:.0} batch_mib={:.1}",
        kb / 1024.0,
        (32 * 3 * 224 * 224 * 4) as f64 / (1 << 20) as f64
    );
    Ok(())
}
