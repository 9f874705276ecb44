//! Process lookup and memory figures from /proc, for footprint measurements.

use std::fs;

use anyhow::{Context, Result};

/// A process's command line with arguments joined by spaces (empty for kernel threads
/// and processes that are gone).
pub fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

/// Every live process id.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes whose command line passes `matches`.
pub fn find(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| matches(&cmdline(pid)))
        .collect()
}

/// The parent of `pid`, from the field after the command name in `/proc/PID/stat`.
pub fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

/// Proportional set size of `pid` in KiB (`Pss:` of `/proc/PID/smaps_rollup`).
pub fn pss_kb(pid: i32) -> Result<u64> {
    field_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Resident set size of `pid` in KiB (`VmRSS:` of `/proc/PID/status`).
pub fn rss_kb(pid: i32) -> Result<u64> {
    field_kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn field_kb(path: &str, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}
