//! Service-account tokens for projected volumes: TokenRequest bound to the pod, and the
//! kubelet token manager's refresh rule (at 80 % of the lifetime, or 24 h after issue).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::{ObjectError, TokenKey};

/// A token is refreshed at the latest this long after it was issued (the kubelet's maxTTL).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// An issued token and when it must be replaced.
#[derive(Debug, Clone)]
pub(super) struct Token {
    /// The JWT.
    pub(super) token: String,
    /// When the token manager replaces it.
    pub(super) refresh_at: Timestamp,
    /// When it stops being valid: until then it is kept if a refresh fails.
    pub(super) expires: Timestamp,
}

impl Token {
    /// Whether the token is due for replacement at `now`.
    pub(super) fn needs_refresh(&self, now: Timestamp) -> bool {
        now >= self.refresh_at
    }

    /// Whether the token is still valid at `now`.
    pub(super) fn usable(&self, now: Timestamp) -> bool {
        now < self.expires
    }
}

/// When a token expiring at `expires` after a lifetime of `lifetime_seconds` is refreshed:
/// 20 % before expiry, or 24 h after issue, whichever comes first.
pub(super) fn refresh_time(expires: Timestamp, lifetime_seconds: i64) -> Timestamp {
    let lifetime = jiff::SignedDuration::from_secs(lifetime_seconds.max(0));
    let issued = expires.checked_sub(lifetime).unwrap_or(expires);
    let at_80 = expires
        .checked_sub(jiff::SignedDuration::from_secs(lifetime_seconds.max(0) / 5))
        .unwrap_or(expires);
    let max = jiff::SignedDuration::try_from(MAX_TTL)
        .ok()
        .and_then(|d| issued.checked_add(d).ok())
        .unwrap_or(at_80);
    at_80.min(max)
}

/// What one TokenRequest needs to know about the pod.
pub(super) struct Binding<'a> {
    pub(super) namespace: &'a str,
    pub(super) service_account: &'a str,
    pub(super) pod_name: &'a str,
    pub(super) pod_uid: &'a str,
}

/// Requests a token bound to the pod, as the kubelet's projected volume does.
pub(super) async fn request(
    client: kube::Client,
    binding: &Binding<'_>,
    key: &TokenKey,
) -> Result<Token, ObjectError> {
    let api: Api<ServiceAccount> = Api::namespaced(client, binding.namespace);
    let audiences = if key.audience.is_empty() {
        Vec::new()
    } else {
        vec![key.audience.clone()]
    };
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(binding.pod_name.to_string()),
                uid: Some(binding.pod_uid.to_string()),
            }),
        },
        ..Default::default()
    };
    let issued = api
        .create_token_request(binding.service_account, &PostParams::default(), &request)
        .await
        .map_err(|source| ObjectError::TokenRequest {
            namespace: binding.namespace.to_string(),
            service_account: binding.service_account.to_string(),
            audience: key.audience.clone(),
            source,
        })?;
    let status = issued.status.ok_or_else(|| ObjectError::TokenMissing {
        namespace: binding.namespace.to_string(),
        service_account: binding.service_account.to_string(),
    })?;
    // The server may grant another lifetime than asked: its spec is the truth.
    let lifetime = issued
        .spec
        .expiration_seconds
        .unwrap_or(key.expiration_seconds);
    Ok(Token {
        token: status.token,
        refresh_at: refresh_time(status.expiration_timestamp.0, lifetime),
        expires: status.expiration_timestamp.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Result<Timestamp, jiff::Error> {
        Timestamp::from_second(secs)
    }

    #[test]
    fn refresh_at_eighty_percent() -> Result<(), jiff::Error> {
        let expires = at(1_000_000 + 3600)?;
        assert_eq!(refresh_time(expires, 3600), at(1_000_000 + 2880)?);
        let token = Token {
            token: "t".into(),
            refresh_at: refresh_time(expires, 3600),
            expires,
        };
        assert!(!token.needs_refresh(at(1_000_000 + 2879)?));
        assert!(token.needs_refresh(at(1_000_000 + 2880)?));
        assert!(token.usable(at(1_000_000 + 3599)?));
        assert!(!token.usable(expires));
        Ok(())
    }

    #[test]
    fn long_tokens_refresh_after_a_day() -> Result<(), jiff::Error> {
        let week = 7 * 24 * 3600;
        let expires = at(1_000_000 + week)?;
        assert_eq!(refresh_time(expires, week), at(1_000_000 + 24 * 3600)?);
        Ok(())
    }
}
