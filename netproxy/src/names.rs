//! Names that reach the ruleset text: only validated DNS labels, numbers, addresses and hashes,
//! so nothing an API object says can change the meaning of a script.

use std::fmt;

use sha2::{Digest, Sha256};

/// A valid RFC 1123 DNS label (what namespace, Service and port names must be).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// `Some` when `text` is a lowercase DNS label of 1..=63 characters.
    pub fn new(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let edge_ok =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok = (1..=63).contains(&bytes.len())
            && edge_ok(bytes.first())
            && edge_ok(bytes.last())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        ok.then(|| Self(text.to_owned()))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first 10 hex digits of SHA-256 over `parts` (NUL-separated, so parts cannot run together).
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An address as it may appear inside a chain name (nft names allow no ':').
pub fn addr_token(ip: std::net::IpAddr) -> String {
    ip.to_string().replace([':', '.'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dns_labels_are_labels() {
        assert!(Label::new("kube-dns").is_some());
        assert!(Label::new("a").is_some());
        assert!(Label::new(&"a".repeat(63)).is_some());
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a b",
            "a;b",
            "a\"b",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(Label::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_are_short_and_separate_parts() {
        assert_eq!(short_hash(&["a", "bc"]).len(), 10);
        assert_ne!(short_hash(&["a", "bc"]), short_hash(&["ab", "c"]));
        assert_eq!(addr_token("fd00::1".parse().unwrap()), "fd00--1");
    }
}
