//! Small pieces the pod benchmarks share: counts from the environment, percentiles, and
//! building the `capstan` binary of the bench profile.

use std::time::Duration;

use anyhow::{ensure, Result};

/// A count from environment variable `name` (to shorten runs while developing), else `default`.
pub fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The `p` quantile (0..=1, nearest rank) of `values` in milliseconds; NaN when empty.
pub fn percentile_ms(values: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return f64::NAN;
    }
    ms.sort_by(f64::total_cmp);
    let index = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms[index.min(ms.len() - 1)]
}

/// Build `capstan` into target/release, where a bench's binaries live: cargo builds no
/// other package's binaries for a bench (a no-op when up to date).
pub fn build_capstan_release() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "agent", "--bin", "capstan"])
        .status()?;
    ensure!(status.success(), "building capstan failed");
    Ok(())
}

/// Print one line of a timing series: count, median, p99, min and max.
pub fn report_times(label: &str, times: &[Duration]) {
    println!(
        "{label}: {} pods, median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        times.len(),
        percentile_ms(times, 0.5),
        percentile_ms(times, 0.99),
        percentile_ms(times, 0.0),
        percentile_ms(times, 1.0)
    );
}

/// The last `lines` lines of `text` (a runtime's log, for error context).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
