//! Registry credentials: from the CRI request, else from a docker `config.json`.

use std::path::Path;

use base64::Engine as _;
use k8s_cri::v1::AuthConfig;
use serde::Deserialize;

use crate::image::error::ImageError;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic auth, also used to obtain bearer tokens from the registry's token service.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token presented to the registry as is.
    RegistryToken(String),
    /// An OAuth2 refresh token, exchanged at the registry's token service before a pull.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
            Self::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// A stable identifier that reveals no secret (a hash), to key caches by.
    pub fn fingerprint(&self) -> String {
        let text = match self {
            Self::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Self::RegistryToken(token) => format!("token\0{token}"),
            Self::IdentityToken(token) => format!("identity\0{token}"),
        };
        crate::image::digest::Digest::of(text.as_bytes())
            .hex()
            .to_owned()
    }

    /// Credentials from a CRI AuthConfig; `None` when it carries none.
    pub fn from_cri(auth: &AuthConfig) -> Result<Option<Self>, ImageError> {
        from_fields(
            &auth.username,
            &auth.password,
            &auth.auth,
            &auth.identity_token,
            &auth.registry_token,
        )
    }

    /// Credentials for `registry` from a docker `config.json` (`auths` section).
    pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Self>, ImageError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io(format!("reading {}", path.display()), e)),
        };
        let config: DockerConfig =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidContent {
                what: "docker config",
                digest: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let Some(entry) = config
            .auths
            .iter()
            .find(|(key, _)| auth_key_matches(key, registry))
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        from_fields(
            &entry.username,
            &entry.password,
            &entry.auth,
            &entry.identitytoken,
            &entry.registrytoken,
        )
    }
}

fn from_fields(
    username: &str,
    password: &str,
    auth: &str,
    identity_token: &str,
    registry_token: &str,
) -> Result<Option<Credentials>, ImageError> {
    if !registry_token.is_empty() {
        return Ok(Some(Credentials::RegistryToken(registry_token.to_owned())));
    }
    if !identity_token.is_empty() {
        return Ok(Some(Credentials::IdentityToken(identity_token.to_owned())));
    }
    if !auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad_auth("`auth` is not base64 of user:password"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad_auth("`auth` does not decode to user:password"))?;
        return Ok(Some(Credentials::Basic {
            username: user.to_owned(),
            password: pass.to_owned(),
        }));
    }
    if !username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    Ok(None)
}

fn bad_auth(reason: &str) -> ImageError {
    ImageError::InvalidReference {
        reference: "auth".into(),
        reason: reason.into(),
    }
}

/// Docker writes keys as bare hosts or URLs, and Docker Hub as its v1 index URL.
fn auth_key_matches(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    host == registry
        || (registry == "docker.io" && matches!(host, "index.docker.io" | "registry-1.docker.io"))
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerAuth {
    auth: String,
    username: String,
    password: String,
    identitytoken: String,
    registrytoken: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_auth_field_is_decoded() {
        let auth = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret"),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_cri(&auth).unwrap(),
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        let bad = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(Credentials::from_cri(&bad).is_err());
        assert_eq!(Credentials::from_cri(&AuthConfig::default()).unwrap(), None);
    }

    #[test]
    fn docker_config_keys_match_hosts_and_hub() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"},"127.0.0.1:5000":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let hub = Credentials::from_docker_config(&path, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(
            hub,
            Credentials::Basic {
                username: "hub".into(),
                password: "pw".into()
            }
        );
        assert!(Credentials::from_docker_config(&path, "127.0.0.1:5000")
            .unwrap()
            .is_some());
        assert!(Credentials::from_docker_config(&path, "quay.io")
            .unwrap()
            .is_none());
        std::fs::write(&path, "not json").unwrap();
        assert!(Credentials::from_docker_config(&path, "docker.io").is_err());
    }
}
