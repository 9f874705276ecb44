//! Bootstrap tokens (kube-apiserver's bootstrap-token authenticator, `kubeadm token create`)
//! and the signed `kube-public/cluster-info` ConfigMap (kubeadm + the bootstrapsigner
//! controller).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jiff::Timestamp;
use rand::Rng as _;
use serde_json::{json, Value};

use super::jws::detached_signature;
use super::{User, AUTHENTICATED};
use subtle::ConstantTimeEq;

/// Secret type of bootstrap tokens.
pub(super) const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Namespace holding the token Secrets.
pub(super) const NAMESPACE: &str = "kube-system";
/// Prefix of a token Secret's name; the token id follows.
pub(super) const SECRET_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap-token user is in.
pub(super) const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group `kubeadm token create` gives its tokens.
pub(super) const KUBEADM_NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Where cluster-info lives.
pub(super) const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
/// cluster-info's name.
pub(super) const CLUSTER_INFO: &str = "cluster-info";
const JWS_PREFIX: &str = "jws-kubeconfig-";
const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Splits `<6 [a-z0-9]>.<16 [a-z0-9]>` into (id, secret).
pub(super) fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| TOKEN_CHARS.contains(&b));
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// A new random token `id.secret`.
pub(super) fn generate_token() -> String {
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(TOKEN_CHARS[rng.random_range(0..TOKEN_CHARS.len())]))
            .collect()
    };
    let id = pick(6);
    format!("{id}.{}", pick(16))
}

/// The Secret `kubeadm token create` writes for `token`.
pub(super) fn token_secret(token: &str, ttl: Option<Duration>, now: Timestamp) -> Option<Value> {
    let (id, secret) = parse_token(token)?;
    let mut data = BTreeMap::from([
        ("token-id", id.to_owned()),
        ("token-secret", secret.to_owned()),
        ("usage-bootstrap-authentication", "true".to_owned()),
        ("usage-bootstrap-signing", "true".to_owned()),
        ("auth-extra-groups", KUBEADM_NODE_GROUP.to_owned()),
    ]);
    if let Some(ttl) = ttl {
        let seconds = i64::try_from(ttl.as_secs()).ok()?;
        let expiration = Timestamp::from_second(now.as_second().checked_add(seconds)?).ok()?;
        data.insert("expiration", expiration.to_string());
    }
    let data: BTreeMap<&str, String> = data
        .into_iter()
        .map(|(k, v)| (k, STANDARD.encode(v)))
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": format!("{SECRET_PREFIX}{id}"), "namespace": NAMESPACE },
        "type": SECRET_TYPE,
        "data": data,
    }))
}

/// A value of a Secret: `data` (base64) first, then `stringData` for stores that keep it.
fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(encoded) = secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
    {
        return STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
    }
    secret
        .pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Expired, or an `expiration` that does not parse (which the authenticator treats as expired).
fn expired(secret: &Value, now: Timestamp) -> bool {
    match secret_value(secret, "expiration") {
        None => false,
        Some(text) => text.parse::<Timestamp>().map_or(true, |at| at <= now),
    }
}

/// The (id, secret) of a Secret that is a live bootstrap token with `usage` enabled.
fn live_token(secret: &Value, usage: &str, now: Timestamp) -> Option<(String, String)> {
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || secret.pointer("/metadata/deletionTimestamp").is_some()
        || expired(secret, now)
        || secret_value(secret, usage).as_deref() != Some("true")
    {
        return None;
    }
    let id = secret_value(secret, "token-id")?;
    let name = secret.pointer("/metadata/name").and_then(Value::as_str)?;
    if name != format!("{SECRET_PREFIX}{id}") {
        return None;
    }
    Some((id, secret_value(secret, "token-secret")?))
}

/// The kube-apiserver bootstrap-token authenticator: `secret` is the Secret named for the
/// token's id (None when there is none).
pub(super) fn authenticate(
    token_id: &str,
    token_secret: &str,
    secret: Option<&Value>,
    now: Timestamp,
) -> Result<User, String> {
    let secret = secret.ok_or_else(|| format!("no bootstrap token secret for id {token_id}"))?;
    let (id, stored) =
        live_token(secret, "usage-bootstrap-authentication", now).ok_or_else(|| {
            format!(
                "bootstrap token {token_id} is expired, disabled for authentication or malformed"
            )
        })?;
    if id != token_id || !bool::from(stored.as_bytes().ct_eq(token_secret.as_bytes())) {
        return Err(format!("bootstrap token {token_id}: wrong token secret"));
    }
    let mut groups = vec![BOOTSTRAPPERS.to_owned()];
    for group in secret_value(secret, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !valid_extra_group(group) {
            return Err(format!(
                "bootstrap token {token_id}: extra group {group:?} is not system:bootstrappers:*"
            ));
        }
        groups.push(group.to_owned());
    }
    groups.push(AUTHENTICATED.to_owned());
    Ok(User {
        name: format!("system:bootstrap:{token_id}"),
        uid: String::new(),
        groups,
    })
}

/// `^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`, the only extra groups a token may grant.
fn valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let bytes = rest.as_bytes();
    matches!(bytes.last(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.len() <= 256
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b':' || *b == b'-')
}

/// The kubeconfig kubeadm puts in cluster-info: one unnamed cluster, no users or contexts
/// (clientcmd.Write's output, so it reads like the real thing).
pub(super) fn cluster_kubeconfig(server_url: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(ca_pem),
        server_url
    )
}

/// cluster-info's data: the kubeconfig plus one detached JWS per live signing token, as the
/// bootstrapsigner keeps it.
pub(super) fn cluster_info_data(
    kubeconfig: &str,
    secrets: &[Value],
    now: Timestamp,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([("kubeconfig".to_owned(), kubeconfig.to_owned())]);
    for secret in secrets {
        if let Some((id, token_secret)) = live_token(secret, "usage-bootstrap-signing", now) {
            if parse_token(&format!("{id}.{token_secret}")).is_some() {
                data.insert(
                    format!("{JWS_PREFIX}{id}"),
                    detached_signature(kubeconfig, &id, &token_secret),
                );
            }
        }
    }
    data
}

/// When the first live signing token expires (its signature must then go), if any does.
pub(super) fn next_expiry(secrets: &[Value], now: Timestamp) -> Option<Timestamp> {
    secrets
        .iter()
        .filter(|s| live_token(s, "usage-bootstrap-signing", now).is_some())
        .filter_map(|s| secret_value(s, "expiration")?.parse::<Timestamp>().ok())
        .min()
}

/// True for a Secret the bootstrapsigner watches (so cluster-info must be re-signed).
pub(super) fn is_token_secret(obj: &Value) -> bool {
    obj.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
        && obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(NAMESPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn secret_with(token: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let mut s = token_secret(token, Some(Duration::from_secs(3600)), now()).unwrap();
        edit(&mut s);
        s
    }

    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[test]
    fn parses_only_the_bootstrap_token_format() {
        assert_eq!(parse_token(TOKEN), Some(("abcdef", "0123456789abcdef")));
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef.x",
            "",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
        assert!(parse_token(&generate_token()).is_some());
    }

    #[test]
    fn token_secret_is_what_kubeadm_writes() {
        let s = token_secret(TOKEN, Some(Duration::from_secs(60)), now()).unwrap();
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["type"], SECRET_TYPE);
        assert_eq!(
            secret_value(&s, "token-secret").unwrap(),
            "0123456789abcdef"
        );
        assert_eq!(
            secret_value(&s, "expiration").unwrap(),
            "2027-01-15T08:01:00Z"
        );
        assert_eq!(
            secret_value(&s, "auth-extra-groups").unwrap(),
            KUBEADM_NODE_GROUP
        );
        let forever = token_secret(TOKEN, None, now()).unwrap();
        assert_eq!(secret_value(&forever, "expiration"), None);
    }

    #[test]
    fn valid_token_authenticates_with_groups() {
        let s = secret_with(TOKEN, |_| {});
        let user = authenticate("abcdef", "0123456789abcdef", Some(&s), now()).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [BOOTSTRAPPERS, KUBEADM_NODE_GROUP, AUTHENTICATED]
        );
    }

    #[test]
    fn string_data_is_read_too() {
        let s = json!({
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": SECRET_TYPE,
            "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
                           "usage-bootstrap-authentication": "true"},
        });
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&s), now()).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let good = secret_with(TOKEN, |_| {});
        assert!(authenticate("abcdef", "0123456789abcdee", Some(&good), now()).is_err());
        assert!(authenticate("abcdef", "0123456789abcdef", None, now()).is_err());
        let later = Timestamp::from_second(now().as_second() + 3600).unwrap();
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&good), later).is_err());
        let usage_off = secret_with(TOKEN, |s| {
            s["data"]["usage-bootstrap-authentication"] = json!(STANDARD.encode("false"))
        });
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&usage_off), now()).is_err());
        let wrong_type = secret_with(TOKEN, |s| s["type"] = json!("Opaque"));
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&wrong_type), now()).is_err());
        let bad_expiry = secret_with(TOKEN, |s| {
            s["data"]["expiration"] = json!(STANDARD.encode("tomorrow"))
        });
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&bad_expiry), now()).is_err());
        let masters = secret_with(TOKEN, |s| {
            s["data"]["auth-extra-groups"] = json!(STANDARD.encode("system:masters"))
        });
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&masters), now()).is_err());
        let deleting = secret_with(TOKEN, |s| {
            s["metadata"]["deletionTimestamp"] = json!("2027-01-01T00:00:00Z")
        });
        assert!(authenticate("abcdef", "0123456789abcdef", Some(&deleting), now()).is_err());
    }

    #[test]
    fn extra_groups_follow_the_apiserver_pattern() {
        assert!(valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(!valid_extra_group("system:bootstrappers:"));
        assert!(!valid_extra_group("system:bootstrappers:x-"));
        assert!(!valid_extra_group("system:nodes"));
    }

    #[test]
    fn cluster_info_signs_live_signing_tokens_only() {
        let kubeconfig = cluster_kubeconfig("https://127.0.0.1:6443", "CA");
        let live = secret_with(TOKEN, |_| {});
        let no_signing = secret_with("ghijkl.0123456789abcdef", |s| {
            s["data"]["usage-bootstrap-signing"] = json!(STANDARD.encode("false"))
        });
        let expired = token_secret(
            "mnopqr.0123456789abcdef",
            Some(Duration::from_secs(1)),
            now(),
        )
        .unwrap();
        let later = Timestamp::from_second(now().as_second() + 10).unwrap();
        let secrets = [live, no_signing, expired];
        assert_eq!(
            next_expiry(&secrets, now()),
            Some(Timestamp::from_second(now().as_second() + 1).unwrap())
        );
        assert_eq!(
            next_expiry(&secrets, later),
            Some(Timestamp::from_second(now().as_second() + 3600).unwrap())
        );
        let data = cluster_info_data(&kubeconfig, &secrets, later);
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-abcdef", "kubeconfig"]
        );
        assert_eq!(
            data["jws-kubeconfig-abcdef"],
            detached_signature(&kubeconfig, "abcdef", "0123456789abcdef")
        );
        let parsed: serde_yaml::Value = serde_yaml::from_str(&data["kubeconfig"]).unwrap();
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            serde_yaml::Value::from("https://127.0.0.1:6443")
        );
        assert_eq!(parsed["users"], serde_yaml::Value::Null);
    }
}
