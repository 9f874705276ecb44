//! The join inputs as kubeadm spells them: the bootstrap token and the CA public-key pins.

use std::fmt;
use std::str::FromStr;

use super::BootstrapError;

/// A bootstrap token `<id>.<secret>`; Debug and Display show only the id.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl BootstrapToken {
    /// The public part, the suffix of the `bootstrap-token-<id>` Secret.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part, the HMAC key of the cluster-info signature.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The bearer token the API server authenticates (`<id>.<secret>`).
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl FromStr for BootstrapToken {
    type Err = BootstrapError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let valid = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match token.split_once('.') {
            Some((id, secret)) if valid(id, 6) && valid(secret, 16) => Ok(BootstrapToken {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(BootstrapError::TokenFormat),
        }
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<secret>)", self.id)
    }
}

/// A CA pin `sha256:<hex>` over the CA certificate's DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaHash(String);

impl CaHash {
    /// The pin in kubeadm's form, hex lower-cased.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CaHash {
    type Err = BootstrapError;

    fn from_str(pin: &str) -> Result<Self, Self::Err> {
        match pin.split_once(':') {
            Some((algo, hex))
                if algo.eq_ignore_ascii_case("sha256")
                    && hex.len() == 64
                    && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(CaHash(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            _ => Err(BootstrapError::CaHashFormat(pin.to_owned())),
        }
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_parses_and_hides_its_secret() {
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!(token.id(), "abcdef");
        assert_eq!(token.secret(), "0123456789abcdef");
        assert_eq!(token.bearer(), "abcdef.0123456789abcdef");
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdef.x",
            "abcdef:0123456789abcdef",
        ] {
            assert!(
                matches!(
                    bad.parse::<BootstrapToken>(),
                    Err(BootstrapError::TokenFormat)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn ca_hash_needs_sha256_and_64_hex_digits() {
        let upper = format!("SHA256:{}", "AB".repeat(32));
        assert_eq!(
            upper.parse::<CaHash>().unwrap().as_str(),
            format!("sha256:{}", "ab".repeat(32))
        );
        for bad in [
            "ab".repeat(32),
            format!("sha1:{}", "ab".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha256:{}", "zz".repeat(32)),
        ] {
            assert!(bad.parse::<CaHash>().is_err(), "{bad}");
        }
    }
}
