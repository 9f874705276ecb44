//! Deterministic file content: a tiny seeded PRNG, random bytes and compressible text.

/// SplitMix64: a small, fast, seeded PRNG whose output never changes across crate versions.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `len` incompressible bytes.
pub fn random_bytes(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

const WORDS: &[&str] = &[
    "container",
    "node",
    "kubelet",
    "pod",
    "image",
    "layer",
    "registry",
    "manifest",
    "digest",
    "snapshot",
    "overlay",
    "mount",
    "network",
    "namespace",
    "cgroup",
    "memory",
    "cpu",
    "volume",
    "secret",
    "config",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "error",
    "warning",
    "info",
    "debug",
    "started",
    "stopped",
    "pulled",
    "created",
    "deleted",
    "ready",
    "failed",
    "retry",
    "timeout",
    "ok",
    "0",
    "1",
    "42",
    "200",
    "404",
    "500",
    "127.0.0.1",
    "sha256",
    "tar",
    "gzip",
    "zstd",
    "capstan",
];

/// About `len` bytes of log-like text (compresses roughly 3-4x with gzip), exactly `len` long.
pub fn text(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        line += 1;
        out.extend_from_slice(
            format!("{line:08} level={} ", WORDS[30 + rng.below(4) as usize]).as_bytes(),
        );
        let words = 4 + rng.below(12);
        for _ in 0..words {
            let r = rng.next_u64();
            out.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
            out.push(if (r >> 32) & 7 == 0 { b'=' } else { b' ' });
        }
        out.extend_from_slice(format!("id={:x}\n", rng.next_u64() >> 40).as_bytes());
    }
    out.truncate(len);
    out
}
