//! Content digests (`sha256:<hex>`) parsed from untrusted text and computed while streaming.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {text:?}: {reason}")]
pub struct DigestParseError {
    text: String,
    reason: &'static str,
}

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`; other algorithms are refused.
    pub fn parse(text: &str) -> Result<Self, DigestParseError> {
        let fail = |reason| DigestParseError {
            text: text.chars().take(100).collect(),
            reason,
        };
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| fail("only sha256 digests are supported"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(fail("expected 64 lowercase hex characters"));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }

    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The hex part, used as a file name in the store.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Hashes bytes as they stream past.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Feed more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.0.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_sha256() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            "sha512:abc",
            "sha256:ABC",
            "sha256:../../etc",
            "",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn streaming_hash_matches_one_shot() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
