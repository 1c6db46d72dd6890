//! What the report says about where it ran: CPU, threads, OS, toolchain, crate versions.

use std::path::Path;

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

/// Versions of `names` as locked in `root/Cargo.lock`.
fn locked_versions(root: &Path, names: &[&str]) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
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

pub fn describe(root: &Path) -> Machine {
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
        crates: locked_versions(
            root,
            &[
                "candle-core",
                "candle-nn",
                "gemm",
                "image",
                "safetensors",
                "rayon",
            ],
        ),
    }
}
