//! Identity tokens: Docker's name for an OAuth2 refresh token. It is never shown to the
//! registry itself; the registry's token service exchanges it for a short-lived access token
//! scoped to the repository being pulled.

use std::time::Duration;

use serde::Deserialize;

use crate::config::RegistrySettings;
use crate::image::error::ImageError;

/// OAuth2 client ID presented to token services.
const CLIENT_ID: &str = "capstan";

/// Exchange `refresh_token` for an access token that can pull `repository` from `host`.
pub async fn access_token(
    settings: &RegistrySettings,
    host: &str,
    repository: &str,
    refresh_token: &str,
) -> Result<String, ImageError> {
    let fail = |reason: String| ImageError::Registry {
        reference: repository.to_owned(),
        registry: host.to_owned(),
        message: format!("identity token: {reason}"),
    };
    let http = client(settings, host)?;
    let scheme = if settings.insecure { "http" } else { "https" };
    let probe = http
        .get(format!("{scheme}://{host}/v2/"))
        .send()
        .await
        .map_err(|e| fail(format!("probing the registry: {e}")))?;
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(BearerChallenge::parse)
        .ok_or_else(|| {
            fail(format!(
                "the registry answered {} without a Bearer challenge, so it has no token service",
                probe.status()
            ))
        })?;
    let scope = format!("repository:{repository}:pull");
    let response = http
        .post(&challenge.realm)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("service", challenge.service.as_str()),
            ("scope", scope.as_str()),
            ("client_id", CLIENT_ID),
        ])
        .send()
        .await
        .map_err(|e| fail(format!("asking {}: {e}", challenge.realm)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!(
            "token service {} refused it ({status})",
            challenge.realm
        )));
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|e| fail(format!("token service answer is not valid: {e}")))?;
    body.access_token
        .or(body.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| fail("token service answered without an access token".into()))
}

fn client(settings: &RegistrySettings, host: &str) -> Result<reqwest::Client, ImageError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(settings.skip_verify);
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            ImageError::io(format!("reading CA file {} for {host}", ca.display()), e)
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            ImageError::io(
                format!("CA file {} for {host}", ca.display()),
                std::io::Error::other(e),
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| ImageError::io("building the token client", std::io::Error::other(e)))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token: Option<String>,
}

/// `WWW-Authenticate: Bearer realm="...",service="..."`.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: String,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let params = header.trim().strip_prefix("Bearer ")?;
        let mut realm = None;
        let mut service = String::new();
        for (key, value) in split_params(params) {
            match key.as_str() {
                "realm" => realm = Some(value),
                "service" => service = value,
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }
}

/// `key="value",key=value` pairs; commas inside quotes do not split.
fn split_params(params: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, remaining)) => (value.to_owned(), remaining),
                None => (quoted.to_owned(), ""),
            },
            None => match after.split_once(',') {
                Some((value, remaining)) => (value.trim().to_owned(), remaining),
                None => (after.trim().to_owned(), ""),
            },
        };
        pairs.push((key, value));
        rest = remaining.trim_start_matches(',').trim();
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let parsed = BearerChallenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            parsed,
            Some(BearerChallenge {
                realm: "https://auth.example/token".into(),
                service: "registry.example".into()
            })
        );
        assert_eq!(BearerChallenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(BearerChallenge::parse(r#"Bearer service="x""#), None);
    }
}
