//! What the report says about where it ran: CPU, threads, OS, toolchain, crate versions.

pub struct Machine {
    pub cpu: String,
    pub threads: usize,
    pub memory_gib: Option<f64>,
    pub os: String,
    pub rustc: String,
    /// (crate, version) of the crates the numbers depend on, from Cargo.lock.
    pub crates: Vec<(String, String)>,
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(
        line.split_once(':')
            .map_or(line, |(_, v)| v)
            .trim()
            .to_string(),
    )
}

/// The workspace's Cargo.lock as this binary was built with it: the versions it runs,
/// wherever it runs (a copied binary has no source tree beside it).
const BUILT_LOCK: &str = include_str!("../../../Cargo.lock");

/// Versions of `names` as locked when this binary was built.
fn locked_versions(names: &[&str]) -> Vec<(String, String)> {
    let lock = BUILT_LOCK;
    let mut found = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name) {
            if names.contains(&n.as_str()) && !found.iter().any(|(f, _)| f == n) {
                found.push((n.clone(), v.trim_matches('"').to_string()));
            }
        }
    }
    found.sort();
    found
}

pub fn describe() -> Machine {
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let os = first_line_with("/etc/os-release", "PRETTY_NAME=")
        .map(|s| {
            s.trim_start_matches("PRETTY_NAME=")
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let memory_gib = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    Machine {
        cpu: first_line_with("/proc/cpuinfo", "model name")
            .unwrap_or_else(|| std::env::consts::ARCH.into()),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        os,
        rustc,
        crates: locked_versions(&[
            "candle-core",
            "candle-nn",
            "gemm",
            "image",
            "safetensors",
            "rayon",
        ]),
    }
}
