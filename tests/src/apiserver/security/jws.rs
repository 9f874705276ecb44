//! The JOSE pieces the server needs: base64url and kubeadm's detached JWS over the
//! cluster-info kubeconfig.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Unpadded base64url (RFC 7515 §2).
pub(super) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes unpadded base64url; `None` when it is not.
pub(super) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The detached compact JWS (`<header>..<signature>`) that bootstrapsigner puts in cluster-info
/// as `jws-kubeconfig-<token-id>`: HS256 keyed by the token secret, `kid` = token id. The header
/// bytes are go-jose's (keys sorted), so the output matches kubeadm's byte for byte.
pub(super) fn detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    let header = serde_json::json!({ "alg": "HS256", "kid": token_id }).to_string();
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(content.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(token_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(signing_input.as_bytes());
    let mac = mac.finalize().into_bytes();
    format!("{}..{}", b64url(header.as_bytes()), b64url(&mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_signature_matches_kubernetes_vectors() {
        // The vectors of k8s.io/cluster-bootstrap/token/jws TestComputeDetachedSignature.
        let content = "Hello from the other side. I must have called a thousand times.";
        assert_eq!(
            detached_signature(content, "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            detached_signature("", "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
    }
}
