//! Service-account tokens: the TokenRequest subresource (bound, audience-scoped ES256 JWTs
//! with Kubernetes' claims) and their verification by the authenticator and TokenReview.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result};
use jiff::Timestamp;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::jws::{b64url, b64url_decode};
use super::{ApiError, Objects, User, AUTHENTICATED};

/// The API server's issuer and default audience (kube-apiserver `--service-account-issuer`,
/// `--api-audiences` defaulting to it).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;
/// go-jose's default leeway, which Kubernetes' validator uses for exp/nbf/iat.
const LEEWAY: i64 = 60;

/// The service-account signing key.
pub(super) struct TokenSigner {
    key: SigningKey,
    verifying: VerifyingKey,
    kid: String,
    /// Claims of tokens whose signature checked out, by SHA-256 of the token: ECDSA
    /// verification costs milliseconds in debug builds and clients resend the same token.
    verified: Mutex<HashMap<[u8; 32], Value>>,
}

/// Verified tokens remembered before the cache starts over.
const VERIFIED_CACHE: usize = 4096;

/// What a valid token says.
pub(super) struct Verified {
    /// The service account's user.
    pub(super) user: User,
    /// The token's audiences.
    pub(super) audiences: Vec<String>,
}

impl TokenSigner {
    /// A fresh P-256 key; `kid` is base64url(SHA-256(SubjectPublicKeyInfo)) like Kubernetes'.
    pub(super) fn generate() -> Result<TokenSigner> {
        let pair = rcgen::KeyPair::generate().context("generating the service-account key")?;
        let key = SigningKey::from_pkcs8_der(&pair.serialize_der())
            .context("loading the service-account key")?;
        Ok(TokenSigner {
            verifying: *key.verifying_key(),
            kid: b64url(&Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&pair),
            )),
            key,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// A compact ES256 JWS of `claims`.
    pub(super) fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "ES256", "kid": self.kid }).to_string();
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64url(&signature.to_bytes()))
    }

    /// Checks signature, issuer and times, then that the service account (and the object the
    /// token is bound to) still exist with the same uid.
    pub(super) fn verify(
        &self,
        token: &str,
        objects: &dyn Objects,
        now: Timestamp,
    ) -> Result<Verified, String> {
        let claims = self.verified_claims(token)?;
        if claims.get("iss").and_then(Value::as_str) != Some(API_AUDIENCE) {
            return Err("token has a foreign issuer".to_owned());
        }
        let now = now.as_second();
        let time = |name: &str| claims.get(name).and_then(Value::as_i64);
        match time("exp") {
            Some(exp) if now <= exp + LEEWAY => {}
            _ => return Err("service account token has expired".to_owned()),
        }
        if time("nbf").is_some_and(|nbf| now + LEEWAY < nbf) {
            return Err("service account token is not valid yet".to_owned());
        }
        let audiences = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let private = claims
            .get("kubernetes.io")
            .ok_or("token has no kubernetes.io claims")?;
        let text = |pointer: &str| private.pointer(pointer).and_then(Value::as_str);
        let namespace = text("/namespace").ok_or("token names no namespace")?;
        let name = text("/serviceaccount/name").ok_or("token names no service account")?;
        let uid = text("/serviceaccount/uid").unwrap_or_default();
        still_exists(objects, "serviceaccounts", namespace, name, uid)?;
        if let Some(pod) = text("/pod/name") {
            still_exists(
                objects,
                "pods",
                namespace,
                pod,
                text("/pod/uid").unwrap_or_default(),
            )?;
        }
        if let Some(secret) = text("/secret/name") {
            let uid = text("/secret/uid").unwrap_or_default();
            still_exists(objects, "secrets", namespace, secret, uid)?;
        }
        Ok(Verified {
            user: service_account_user(namespace, name, uid),
            audiences,
        })
    }

    /// The claims of a token with a valid signature, from the cache when seen before.
    fn verified_claims(&self, token: &str) -> Result<Value, String> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cache = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(claims) = cache().get(&digest) {
            return Ok(claims.clone());
        }
        let claims = self.verify_signature(token)?;
        let mut cache = cache();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not a compact JWS".to_owned());
        };
        let header: Value = b64url_decode(header_b64)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or("token header is not base64url JSON")?;
        // Only our algorithm: never let the token choose how it is checked.
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err("token is not ES256".to_owned());
        }
        let signature = b64url_decode(signature)
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or("token signature is malformed")?;
        let input = format!("{header_b64}.{payload}");
        self.verifying
            .verify(input.as_bytes(), &signature)
            .map_err(|_| "token signature does not verify".to_owned())?;
        b64url_decode(payload)
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| "token claims are not base64url JSON".to_owned())
    }

    /// The `serviceaccounts/<name>/token` subresource: a TokenRequest answered like
    /// kube-apiserver's token REST storage.
    pub(super) fn token_request(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
        objects: &dyn Objects,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let account = objects
            .get("serviceaccounts", namespace, name)
            .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let audiences: Vec<String> = match spec.get("audiences") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::bad_request("spec.audiences: every audience must be a string")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::bad_request("spec.audiences must be a list")),
        };
        let audiences = if audiences.is_empty() {
            vec![API_AUDIENCE.to_owned()]
        } else {
            audiences
        };
        let expiration = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION,
            Some(v) => v.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds must be an integer")
            })?,
        };
        if expiration < MIN_EXPIRATION {
            return Err(ApiError::invalid(format!(
                "spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less than 10 minutes"
            )));
        }
        if expiration > MAX_EXPIRATION {
            return Err(ApiError::invalid(format!(
                "spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            )));
        }
        let sa_uid = text(&account, "/metadata/uid");
        let mut private = json!({
            "namespace": namespace,
            "serviceaccount": { "name": name, "uid": sa_uid },
        });
        let bound = match spec.get("boundObjectRef") {
            None | Some(Value::Null) => None,
            Some(reference) => Some(bind(reference, namespace, objects, &mut private)?),
        };
        let iat = now.as_second();
        let exp = iat + expiration;
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": iat,
            "iss": API_AUDIENCE,
            "jti": uuid(),
            "kubernetes.io": private,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        let expiration_timestamp = Timestamp::from_second(exp)
            .map_err(|e| ApiError::invalid(format!("spec.expirationSeconds: {e}")))?;
        let mut spec_out = json!({ "audiences": audiences, "expirationSeconds": expiration });
        if let Some(reference) = bound {
            spec_out["boundObjectRef"] = reference;
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": Timestamp::from_second(iat).map(|t| t.to_string()).unwrap_or_default(),
            },
            "spec": spec_out,
            "status": {
                "token": self.sign(&claims),
                "expirationTimestamp": expiration_timestamp.to_string(),
            },
        }))
    }
}

/// Resolves `boundObjectRef` (Pod, Secret or Node), checks its uid and adds the binding claims.
fn bind(
    reference: &Value,
    namespace: &str,
    objects: &dyn Objects,
    private: &mut Value,
) -> Result<Value, ApiError> {
    let kind = reference
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = reference
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (resource, claim, scope) = match kind {
        "Pod" => ("pods", "pod", namespace),
        "Secret" => ("secrets", "secret", namespace),
        "Node" => ("nodes", "node", ""),
        other => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of kind {other:?}: only Pod, Secret and Node"
            )))
        }
    };
    if name.is_empty() {
        return Err(ApiError::invalid(
            "spec.boundObjectRef.name: Required value",
        ));
    }
    let object = objects
        .get(resource, scope, name)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    let uid = text(&object, "/metadata/uid");
    if let Some(wanted) = reference.get("uid").and_then(Value::as_str) {
        if !wanted.is_empty() && wanted != uid {
            return Err(ApiError::conflict(format!(
                "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
            )));
        }
    }
    private[claim] = json!({ "name": name, "uid": uid });
    // A pod-bound token also names the pod's node, as kube-apiserver does since 1.30.
    if kind == "Pod" {
        if let Some(node) = object.pointer("/spec/nodeName").and_then(Value::as_str) {
            if let Some(node_obj) = objects.get("nodes", "", node) {
                private["node"] = json!({ "name": node, "uid": text(&node_obj, "/metadata/uid") });
            }
        }
    }
    Ok(json!({
        "kind": kind,
        "apiVersion": reference.get("apiVersion").cloned().unwrap_or_else(|| json!("v1")),
        "name": name,
        "uid": uid,
    }))
}

fn text(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The object a token names must still exist, and be the same incarnation when a uid is known.
fn still_exists(
    objects: &dyn Objects,
    resource: &str,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), String> {
    let obj = objects.get(resource, namespace, name).ok_or_else(|| {
        format!("{resource} {namespace}/{name} the token is bound to no longer exists")
    })?;
    let current = text(&obj, "/metadata/uid");
    if !uid.is_empty() && !current.is_empty() && current != uid {
        return Err(format!(
            "{resource} {namespace}/{name} has been recreated (uid {current}, token names {uid})"
        ));
    }
    Ok(())
}

/// The user a service account authenticates as.
pub(super) fn service_account_user(namespace: &str, name: &str, uid: &str) -> User {
    User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        uid: uid.to_owned(),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED.to_owned(),
        ],
    }
}

/// A random RFC 4122 version-4 UUID.
fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::MemObjects;
    use super::*;

    fn setup() -> (TokenSigner, MemObjects) {
        let objects = MemObjects::default();
        objects.put(
            "serviceaccounts",
            "ns1",
            json!({"metadata": {"name": "builder", "namespace": "ns1", "uid": "sa-uid"}}),
        );
        objects.put("pods", "ns1", json!({"metadata": {"name": "web", "namespace": "ns1", "uid": "pod-uid"}, "spec": {"nodeName": "n1"}}));
        objects.put(
            "nodes",
            "",
            json!({"metadata": {"name": "n1", "uid": "node-uid"}}),
        );
        (TokenSigner::generate().unwrap(), objects)
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn claims_of(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn token_request_round_trips_through_verify() {
        let (signer, objects) = setup();
        let body = json!({"spec": {"audiences": ["vault"], "expirationSeconds": 1200,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "pod-uid"}}});
        let resp = signer
            .token_request("ns1", "builder", &body, &objects, at(1_800_000_000))
            .unwrap();
        assert_eq!(resp["kind"], "TokenRequest");
        assert_eq!(
            resp["status"]["expirationTimestamp"],
            "2027-01-15T08:20:00Z"
        );
        let token = resp["status"]["token"].as_str().unwrap();
        let claims = claims_of(token);
        assert_eq!(claims["sub"], "system:serviceaccount:ns1:builder");
        assert_eq!(claims["aud"], json!(["vault"]));
        assert_eq!(claims["exp"], 1_800_001_200);
        assert_eq!(
            claims["kubernetes.io"]["pod"],
            json!({"name": "web", "uid": "pod-uid"})
        );
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert_eq!(claims["kubernetes.io"]["node"]["name"], "n1");
        let verified = signer.verify(token, &objects, at(1_800_000_100)).unwrap();
        assert_eq!(
            verified.user,
            service_account_user("ns1", "builder", "sa-uid")
        );
        assert_eq!(verified.audiences, ["vault"]);
    }

    #[test]
    fn defaults_and_expiry() {
        let (signer, objects) = setup();
        let resp = signer
            .token_request("ns1", "builder", &json!({}), &objects, at(1_000))
            .unwrap();
        assert_eq!(resp["spec"]["expirationSeconds"], 3600);
        let token = resp["status"]["token"].as_str().unwrap();
        assert_eq!(claims_of(token)["aud"], json!([API_AUDIENCE]));
        assert!(signer
            .verify(token, &objects, at(1_000 + 3600 + LEEWAY))
            .is_ok());
        let err = signer
            .verify(token, &objects, at(1_000 + 3600 + LEEWAY + 1))
            .err()
            .unwrap();
        assert!(err.contains("expired"), "{err}");
        assert!(signer
            .verify(token, &objects, at(1_000 - LEEWAY - 1))
            .is_err());
    }

    #[test]
    fn request_errors_are_kubernetes_errors() {
        let (signer, objects) = setup();
        let now = at(1_000);
        assert_eq!(
            signer
                .token_request("ns1", "nobody", &json!({}), &objects, now)
                .unwrap_err()
                .code,
            404
        );
        let short = json!({"spec": {"expirationSeconds": 599}});
        assert_eq!(
            signer
                .token_request("ns1", "builder", &short, &objects, now)
                .unwrap_err()
                .code,
            422
        );
        let wrong_uid =
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "web", "uid": "other"}}});
        assert_eq!(
            signer
                .token_request("ns1", "builder", &wrong_uid, &objects, now)
                .unwrap_err()
                .code,
            409
        );
        let missing = json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "gone"}}});
        assert_eq!(
            signer
                .token_request("ns1", "builder", &missing, &objects, now)
                .unwrap_err()
                .code,
            404
        );
        let kind = json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "name": "x"}}});
        assert_eq!(
            signer
                .token_request("ns1", "builder", &kind, &objects, now)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn tampered_foreign_and_unbound_tokens_fail() {
        let (signer, objects) = setup();
        let body = json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "web"}}});
        let resp = signer
            .token_request("ns1", "builder", &body, &objects, at(1_000))
            .unwrap();
        let token = resp["status"]["token"].as_str().unwrap().to_owned();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = claims_of(&token);
        claims["sub"] = json!("system:serviceaccount:kube-system:admin");
        parts[1] = b64url(claims.to_string().as_bytes());
        assert!(signer
            .verify(&parts.join("."), &objects, at(1_000))
            .is_err());
        let other = TokenSigner::generate().unwrap();
        assert!(other.verify(&token, &objects, at(1_000)).is_err());
        let none_alg = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), parts[1]);
        assert!(signer.verify(&none_alg, &objects, at(1_000)).is_err());
        // The pod it was bound to is deleted and recreated: the token dies with it.
        objects.put(
            "pods",
            "ns1",
            json!({"metadata": {"name": "web", "namespace": "ns1", "uid": "new"}}),
        );
        assert!(signer.verify(&token, &objects, at(1_000)).is_err());
        objects.remove("pods", "ns1", "web");
        assert!(signer.verify(&token, &objects, at(1_000)).is_err());
    }
}
