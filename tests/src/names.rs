//! Unique, DNS-label-safe names for test resources (repos, pods, interfaces), and free
//! loopback ports.

use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Longest name `unique_name` returns (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Longest name `unique_short` returns (Linux `IFNAMSIZ - 1`).
pub const MAX_SHORT_LEN: usize = 15;

/// Returns `prefix-<pid>-<counter>-<random>`: unique across processes and runs, at most 63 chars, `[a-z0-9-]`.
pub fn unique_name(prefix: &str) -> String {
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{}-{}-{}",
        base36(u64::from(std::process::id()), 0),
        base36(counter, 0),
        base36(u64::from(rand::random::<u32>() & 0xff_ffff), 5)
    );
    let room = MAX_NAME_LEN - suffix.len() - 1;
    let prefix = sanitize(prefix, room);
    format!("{prefix}-{suffix}")
}

/// Returns a unique name of at most 15 chars (fits a network interface name): up to 5 prefix chars + 10 base36 chars.
pub fn unique_short(prefix: &str) -> String {
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 22 bits of pid, 10 bits of counter, 16 random bits = 48 bits, which fits in 10 base36 digits.
    let pid = u64::from(std::process::id()) & 0x3f_ffff;
    let bits = (pid << 26) | ((counter & 0x3ff) << 16) | u64::from(rand::random::<u16>());
    let prefix = sanitize(prefix, MAX_SHORT_LEN - 10);
    let name = format!("{prefix}{}", base36(bits, 10));
    debug_assert!(name.len() <= MAX_SHORT_LEN);
    name
}

/// Lowercases, maps anything outside `[a-z0-9-]` to `-`, trims to `max` chars and makes it start with a letter.
fn sanitize(prefix: &str, max: usize) -> String {
    let mut out: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert(0, 't');
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

/// Encodes `n` in lowercase base36, left-padded with zeros to `width`.
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = Vec::new();
    while n > 0 {
        buf.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while buf.len() < width.max(1) {
        buf.push(b'0');
    }
    buf.reverse();
    String::from_utf8(buf).expect("base36 digits are ASCII")
}

/// Binds 127.0.0.1:0 and returns the port the kernel picked (released again).
pub fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_are_dns_safe_and_unique() {
        let a = unique_name("My_Pod");
        let b = unique_name("My_Pod");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME_LEN);
        assert!(a.starts_with("my-pod-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= MAX_NAME_LEN, "{long}");
    }

    #[test]
    fn short_names_fit_ifnamsiz() {
        let a = unique_short("capveth");
        let b = unique_short("capveth");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_SHORT_LEN, "{a}");
        assert!(unique_short("").len() <= MAX_SHORT_LEN);
    }
}
