//! The detached JWS (HS256) that signs `cluster-info` for each bootstrap token, as
//! kube-controller-manager's bootstrap signer writes it and `kubeadm join` checks it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a detached signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not `<header>..<signature>`.
    #[error("not a detached JWS (<header>..<signature>)")]
    Shape,
    /// The protected header is not base64url JSON.
    #[error("the JWS header is not base64url-encoded JSON")]
    Header,
    /// The header names another algorithm than HS256.
    #[error("the JWS algorithm is {0:?}, not HS256")]
    Algorithm(String),
    /// The header's key id is another token's.
    #[error("the JWS is for key id {0:?}")]
    KeyId(String),
    /// The MAC does not match: the token secret is wrong or the content was altered.
    #[error("the signature does not match")]
    Mismatch,
}

/// Check `detached` (`<b64url header>..<b64url MAC>`) over `payload` with HMAC-SHA256 keyed
/// by the token secret; `verify_slice` compares in constant time.
pub fn verify_detached(
    detached: &str,
    payload: &[u8],
    token_id: &str,
    token_secret: &str,
) -> Result<(), JwsError> {
    let mut parts = detached.trim().split('.');
    let (Some(header), Some(""), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Shape);
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwsError::Header)?;
    let fields: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|_| JwsError::Header)?;
    let alg = fields.get("alg").and_then(|v| v.as_str()).unwrap_or("");
    if alg != "HS256" {
        return Err(JwsError::Algorithm(alg.to_owned()));
    }
    if let Some(kid) = fields.get("kid").and_then(|v| v.as_str()) {
        if kid != token_id {
            return Err(JwsError::KeyId(kid.to_owned()));
        }
    }
    let given = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwsError::Mismatch)?;
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(token_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&given).map_err(|_| JwsError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently of this module (python: base64url(hmac.new(b"0123456789abcdef",
    // b"eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9.aGVsbG8", sha256))): the header
    // {"alg":"HS256","kid":"abcdef"}, the payload "hello", the token secret 0123456789abcdef.
    const VECTOR: &str =
        "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..MxsnbCjBaYzcbNIFa06F-wuF9LX26rhMlrL4zA1511s";

    #[test]
    fn verifies_the_token_signature() {
        assert_eq!(
            verify_detached(VECTOR, b"hello", "abcdef", "0123456789abcdef"),
            Ok(())
        );
    }

    #[test]
    fn wrong_secret_or_payload_is_a_mismatch() {
        assert_eq!(
            verify_detached(VECTOR, b"hello", "abcdef", "0123456789abcdee"),
            Err(JwsError::Mismatch)
        );
        assert_eq!(
            verify_detached(VECTOR, b"hellp", "abcdef", "0123456789abcdef"),
            Err(JwsError::Mismatch)
        );
    }

    #[test]
    fn other_key_id_algorithm_or_shape_is_refused() {
        assert_eq!(
            verify_detached(VECTOR, b"hello", "zzzzzz", "0123456789abcdef"),
            Err(JwsError::KeyId("abcdef".into()))
        );
        let none = format!("{}..", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert_eq!(
            verify_detached(&none, b"hello", "abcdef", "0123456789abcdef"),
            Err(JwsError::Algorithm("none".into()))
        );
        assert_eq!(
            verify_detached("a.b.c", b"hello", "abcdef", "0123456789abcdef"),
            Err(JwsError::Shape)
        );
    }
}
