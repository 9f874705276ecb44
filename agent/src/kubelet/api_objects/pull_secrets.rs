//! `imagePullSecrets` → CRI `AuthConfig`s, as the kubelet's credential keyring does it:
//! `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets, registry keys
//! matched against the normalized image repository (host globs part by part, same port,
//! path prefix), Docker Hub's `index.docker.io` credentials as the default registry's.

use base64::Engine as _;
use k8s_cri::v1::AuthConfig;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::PodObjects;

const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";
const DOCKERCFG_KEY: &str = ".dockercfg";
/// The key Docker Hub credentials are stored under.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Why a pull secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// The secret's docker config is not valid JSON of the expected shape.
    #[error("image pull secret {secret:?}: invalid {key}: {reason}")]
    Malformed {
        /// Secret name.
        secret: String,
        /// The data key (`.dockerconfigjson` or `.dockercfg`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Credentials to try for one image, in the kubelet's order, and the pull secrets that do
/// not exist (the kubelet's `FailedToRetrieveImagePullSecret` warning).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageAuth {
    /// Each is tried in turn; empty: pull anonymously.
    pub configs: Vec<AuthConfig>,
    /// Names from imagePullSecrets that were not found.
    pub missing_secrets: Vec<String>,
}

#[derive(Deserialize, Default)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// The credentials for pulling `image` with the pod's imagePullSecrets.
pub fn image_auth(
    pod: &Pod,
    objects: &PodObjects,
    image: &str,
) -> Result<ImageAuth, PullSecretError> {
    let repo = normalize_repository(image);
    let mut out = ImageAuth::default();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_deref())
        .unwrap_or_default();
    for name in names.iter().map(|r| r.name.as_str()) {
        let Some(secret) = objects.secret(name) else {
            out.missing_secrets.push(name.to_string());
            continue;
        };
        let data = |key| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| &b.0);
        let entries = match secret.type_.as_deref() {
            Some(DOCKER_CONFIG_JSON_TYPE) => match data(DOCKER_CONFIG_JSON_KEY) {
                Some(b) if !b.is_empty() => {
                    parse::<DockerConfigJson>(name, DOCKER_CONFIG_JSON_KEY, b)?.auths
                }
                _ => continue,
            },
            Some(DOCKERCFG_TYPE) => match data(DOCKERCFG_KEY) {
                Some(b) if !b.is_empty() => parse(name, DOCKERCFG_KEY, b)?,
                _ => continue,
            },
            _ => continue,
        };
        out.configs.extend(lookup(name, &entries, &repo)?);
    }
    Ok(out)
}

fn parse<T: serde::de::DeserializeOwned>(
    secret: &str,
    key: &'static str,
    bytes: &[u8],
) -> Result<T, PullSecretError> {
    serde_json::from_slice(bytes).map_err(|e| PullSecretError::Malformed {
        secret: secret.to_string(),
        key,
        reason: e.to_string(),
    })
}

/// One secret's keyring lookup: matching keys in reverse lexical order (longer, more
/// specific keys first), falling back to Docker Hub's credentials for Hub images.
fn lookup(
    secret: &str,
    entries: &BTreeMap<String, DockerConfigEntry>,
    repo: &str,
) -> Result<Vec<AuthConfig>, PullSecretError> {
    let mut keyed: BTreeMap<String, Vec<AuthConfig>> = BTreeMap::new();
    for (location, entry) in entries {
        keyed
            .entry(keyring_key(location))
            .or_default()
            .push(auth_config(secret, entry)?);
    }
    let mut found = Vec::new();
    for (key, configs) in keyed.iter().rev() {
        if urls_match(key, repo) {
            found.extend(configs.iter().cloned());
        }
    }
    if found.is_empty() && is_default_registry_match(repo) {
        if let Some(configs) = keyed.get(DEFAULT_REGISTRY_HOST) {
            found.extend(configs.iter().cloned());
        }
    }
    Ok(found)
}

fn auth_config(secret: &str, entry: &DockerConfigEntry) -> Result<AuthConfig, PullSecretError> {
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if !entry.auth.is_empty() {
        let malformed = |reason: &str| PullSecretError::Malformed {
            secret: secret.to_string(),
            key: "auth",
            reason: reason.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.as_bytes())
            .map_err(|e| malformed(&e.to_string()))?;
        let text = String::from_utf8(decoded).map_err(|_| malformed("not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| malformed("must be base64 of user:password"))?;
        username = user.to_string();
        password = pass.to_string();
    }
    Ok(AuthConfig {
        username,
        password,
        ..Default::default()
    })
}

/// A config location as a schemeless key: scheme dropped, `/v1/` and `/v2/` prefixes
/// (Docker's API paths) treated as the bare host.
fn keyring_key(location: &str) -> String {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v1/"))
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| path.to_string());
    if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    }
}

/// `URLsMatch`: same port, same number of host labels each glob-matching, path prefix.
fn urls_match(glob: &str, target: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let ((glob_host, glob_path), (target_host, target_path)) = (split(glob), split(target));
    let host_port = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host.to_string(), port.to_string()),
            _ => (h.to_string(), String::new()),
        }
    };
    let ((gh, gp), (th, tp)) = (host_port(&glob_host), host_port(&target_host));
    if gp != tp || !target_path.starts_with(&glob_path) {
        return false;
    }
    let (gparts, tparts): (Vec<&str>, Vec<&str>) =
        (gh.split('.').collect(), th.split('.').collect());
    gparts.len() == tparts.len() && gparts.iter().zip(&tparts).all(|(g, t)| glob_match(g, t))
}

/// `filepath.Match` for one host label: `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether a (normalized) repository is pulled from Docker Hub.
fn is_default_registry_match(repo: &str) -> bool {
    let (first, rest) = match repo.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (repo, None),
    };
    if first.is_empty() {
        return false;
    }
    if rest.is_none() || first == "docker.io" || first == "index.docker.io" {
        return true;
    }
    !first.contains(['.', ':']) && first != "localhost"
}

/// An image reference's repository, normalized as the kubelet's ParseImageName does:
/// tag and digest dropped, Docker Hub made explicit (`nginx` → `docker.io/library/nginx`).
fn normalize_repository(image: &str) -> String {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let (domain, rest) = match name.split_once('/') {
        Some((d, r))
            if d.contains(['.', ':'])
                || d == "localhost"
                || d.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (d, r.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if domain == "docker.io" && !rest.contains('/') {
        format!("docker.io/library/{rest}")
    } else {
        format!("{domain}/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(name: &str, type_: &str, key: &str, config: serde_json::Value) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some(
                [(key.to_string(), ByteString(config.to_string().into_bytes()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn pod(secrets: &[&str]) -> Result<Pod, serde_json::Error> {
        let refs: Vec<_> = secrets.iter().map(|s| json!({"name": s})).collect();
        serde_json::from_value(json!({"spec": {"containers": [], "imagePullSecrets": refs}}))
    }

    fn users(auth: &ImageAuth) -> Vec<&str> {
        auth.configs.iter().map(|c| c.username.as_str()).collect()
    }

    fn objects() -> PodObjects {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut objects = PodObjects::default();
        objects.insert_secret(secret(
            "json",
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            json!({"auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
                "registry.example.com:5000": {"username": "port", "password": "p"},
                "*.corp.example": {"username": "glob", "password": "g"},
                "quay.io/team": {"username": "team", "password": "t"},
                "quay.io": {"username": "quay", "password": "q"}
            }}),
        ));
        objects.insert_secret(secret(
            "cfg",
            DOCKERCFG_TYPE,
            DOCKERCFG_KEY,
            json!({"quay.io": {"auth": b64("legacy:pw")}}),
        ));
        objects.insert_secret(secret(
            "opaque",
            "Opaque",
            DOCKER_CONFIG_JSON_KEY,
            json!({}),
        ));
        objects
    }

    #[test]
    fn matches_registries_like_the_keyring() -> Result<(), Box<dyn std::error::Error>> {
        let pod = pod(&["json", "cfg", "opaque", "ghost"])?;
        let objects = objects();
        let auth = |image| image_auth(&pod, &objects, image);
        assert_eq!(users(&auth("nginx:1.27")?), ["hub"]);
        assert_eq!(
            users(&auth("docker.io/library/busybox@sha256:abc")?),
            ["hub"]
        );
        assert_eq!(users(&auth("registry.example.com:5000/app:v1")?), ["port"]);
        assert!(users(&auth("registry.example.com/app")?).is_empty());
        assert_eq!(users(&auth("img.corp.example/x")?), ["glob"]);
        assert!(users(&auth("a.img.corp.example/x")?).is_empty());
        assert_eq!(
            users(&auth("quay.io/team/app:1")?),
            ["team", "quay", "legacy"]
        );
        assert_eq!(users(&auth("quay.io/other/app")?), ["quay", "legacy"]);
        assert!(users(&auth("localhost:5000/x")?).is_empty());
        let hub = auth("nginx")?;
        assert_eq!(hub.configs[0].password, "hubpw");
        assert_eq!(hub.missing_secrets, ["ghost"]);
        Ok(())
    }

    #[test]
    fn malformed_configs_name_the_secret() -> Result<(), serde_json::Error> {
        let mut objects = PodObjects::default();
        let mut bad = secret(
            "bad",
            DOCKER_CONFIG_JSON_TYPE,
            DOCKER_CONFIG_JSON_KEY,
            json!({}),
        );
        bad.data = Some(
            [(
                DOCKER_CONFIG_JSON_KEY.to_string(),
                ByteString(b"{not json".to_vec()),
            )]
            .into_iter()
            .collect(),
        );
        objects.insert_secret(bad);
        let err = image_auth(&pod(&["bad"])?, &objects, "nginx").map(|_| ());
        assert!(
            matches!(err, Err(PullSecretError::Malformed { ref secret, .. }) if secret == "bad")
        );
        Ok(())
    }

    #[test]
    fn normalizes_references() {
        for (image, repo) in [
            ("nginx", "docker.io/library/nginx"),
            ("user/app:tag", "docker.io/user/app"),
            ("index.docker.io/user/app", "docker.io/user/app"),
            ("reg:5000/a/b@sha256:00", "reg:5000/a/b"),
            ("localhost/x:1", "localhost/x"),
        ] {
            assert_eq!(normalize_repository(image), repo);
        }
        assert!(glob_match("*", "anything"));
        assert!(glob_match("r?g", "reg"));
        assert!(!glob_match("a*c", "abd"));
    }
}
