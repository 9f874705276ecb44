//! Authentication, authorization, the cluster CA, bootstrap tokens, cluster-info, CSR
//! signing and service-account tokens of the API test server, as kube-apiserver,
//! kube-controller-manager and kubeadm do them.
//!
//! - Authentication ([`Security::authenticate`]): a client certificate (CN = user, each O a
//!   group) wins; otherwise `Authorization: Bearer <token>` is a bootstrap token
//!   (`<id>.<secret>` checked against Secret `kube-system/bootstrap-token-<id>`) or a
//!   service-account JWT this server issued. No credentials (or a non-Bearer scheme, or an
//!   empty token) is anonymous, `Ok(None)`; a token that is present but does not authenticate
//!   is `Err` (401). Every authenticated user is in `system:authenticated`.
//! - Authorization ([`Security::authorize`]): a fixed rule table in `rbac.rs`. Verbs are the
//!   Kubernetes ones (`get list watch create update patch delete deletecollection`).
//!   **Non-resource requests** (`/version`, `/api`, `/apis/...`, `/healthz`, `/openapi/...`)
//!   are passed with `resource = ""`, `subresource = ""`, `namespace = ""`, `name` = the URL
//!   path, and the verb = the lower-case HTTP method (`get`, `post`, ...). A denied
//!   anonymous request is 403 naming `system:anonymous`, as kube-apiserver answers it.
//! - Controllers run in [`Security::after_write`]: the CSR approver and signer (each step is
//!   written back with [`Objects::upsert`], so watchers see Approved and then the
//!   certificate) and the bootstrap signer (a bootstrap-token Secret changed: cluster-info is
//!   re-signed, using the URL of the last [`Security::publish_cluster_info`] call — call it
//!   once at start-up). For the approver, the core must fill the CSR's `spec.username` and
//!   `spec.groups` from the creating user, as kube-apiserver does. Any write also re-signs
//!   cluster-info once a signing token has expired (the bootstrapsigner's resync).
//! - Reviews ([`Security::create_review`]): tokenreviews, subjectaccessreviews,
//!   selfsubjectaccessreviews and selfsubjectreviews (`kubectl auth whoami`).

mod bootstrap;
mod csr;
mod jws;
mod pki;
mod rbac;
mod review;
mod serviceaccount;
#[cfg(test)]
mod testing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

pub use crate::apiserver::status::ApiError;
pub use serviceaccount::API_AUDIENCE;

/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The name kube-apiserver gives unauthenticated requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// An authenticated user.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// User name, e.g. `system:node:n1`, `system:bootstrap:abcdef`.
    pub name: String,
    /// UID (the service account's; empty for certificates and bootstrap tokens).
    pub uid: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

/// What security needs from the store; the core implements it for its store.
pub trait Objects: Send + Sync {
    /// One object, or None.
    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value>;
    /// All objects of a resource in a namespace ("" = all namespaces).
    fn list(&self, resource: &str, namespace: &str) -> Vec<Value>;
    /// Create or replace as the system (spec and status), bumping resourceVersion and notifying watchers.
    fn upsert(&self, resource: &str, namespace: &str, obj: Value) -> Result<Value, ApiError>;
}

/// The server's keys and the security logic around them.
pub struct Security {
    pki: pki::Pki,
    tokens: serviceaccount::TokenSigner,
    server_url: Mutex<Option<String>>,
    /// When cluster-info must be re-signed because a signing token expires.
    resign_at: Mutex<Option<Timestamp>>,
}

impl Security {
    /// A new cluster CA, serving certificate and service-account signing key.
    pub fn new() -> anyhow::Result<Security> {
        Ok(Security {
            pki: pki::Pki::new()?,
            tokens: serviceaccount::TokenSigner::generate()?,
            server_url: Mutex::new(None),
            resign_at: Mutex::new(None),
        })
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem().to_owned()
    }

    /// kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` + hex of the CA's SubjectPublicKeyInfo digest.
    pub fn ca_cert_hash(&self) -> String {
        self.pki.ca_hash().to_owned()
    }

    /// TLS for the listener: serving certificate for 127.0.0.1, ::1 and localhost; client
    /// certificates optional and verified against the CA; ALPN http/1.1.
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.pki.tls()
    }

    /// A client certificate for `cn` in groups `orgs` (at most one), valid for `ttl`: (cert PEM, key PEM).
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        ttl: Duration,
    ) -> anyhow::Result<(String, String)> {
        self.pki.issue_client_cert(cn, orgs, ttl)
    }

    /// Who made a request: Ok(None) is anonymous, Err is 401 Unauthorized.
    pub fn authenticate(
        &self,
        client_cert_der: Option<&[u8]>,
        authorization: Option<&str>,
        objects: &dyn Objects,
    ) -> Result<Option<User>, ApiError> {
        if let Some(der) = client_cert_der {
            return self
                .pki
                .client_user(der)
                .map(Some)
                .map_err(ApiError::unauthorized);
        }
        let Some(token) = bearer_token(authorization) else {
            return Ok(None);
        };
        self.authenticate_token(token, &[API_AUDIENCE.to_owned()], objects)
            .map(|(user, _)| Some(user))
            .map_err(|_| ApiError::unauthorized("Unauthorized"))
    }

    /// A bearer token's user and the audiences it is good for among `audiences`.
    fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
        objects: &dyn Objects,
    ) -> Result<(User, Vec<String>), String> {
        let now = Timestamp::now();
        if let Some((id, secret)) = bootstrap::parse_token(token) {
            let name = format!("{}{id}", bootstrap::SECRET_PREFIX);
            let stored = objects.get("secrets", bootstrap::NAMESPACE, &name);
            // Bootstrap tokens are not audience-scoped: good for whatever was asked.
            return bootstrap::authenticate(id, secret, stored.as_ref(), now)
                .map(|user| (user, audiences.to_vec()));
        }
        let verified = self.tokens.verify(token, objects, now)?;
        let good: Vec<String> = verified
            .audiences
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect();
        if good.is_empty() {
            return Err(format!(
                "token audiences {:?} is invalid for the target audiences {audiences:?}",
                verified.audiences
            ));
        }
        Ok((verified.user, good))
    }

    /// Whether `user` (None = anonymous) may do `verb` on the resource; see the module doc
    /// for non-resource requests.
    pub fn authorize(
        &self,
        user: Option<&User>,
        verb: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> bool {
        let attrs = rbac::Attributes {
            verb,
            resource,
            subresource,
            namespace,
            name,
        };
        rbac::allowed(user, &attrs)
    }

    /// Like `kubeadm token create`: writes the token Secret (no expiration when `ttl` is None),
    /// re-signs cluster-info, returns `id.secret`.
    pub fn create_bootstrap_token(
        &self,
        objects: &dyn Objects,
        ttl: Option<Duration>,
    ) -> anyhow::Result<String> {
        let (token, name) = loop {
            let token = bootstrap::generate_token();
            let id = token.split('.').next().unwrap_or_default();
            let name = format!("{}{id}", bootstrap::SECRET_PREFIX);
            if objects
                .get("secrets", bootstrap::NAMESPACE, &name)
                .is_none()
            {
                break (token, name);
            }
        };
        let secret = bootstrap::token_secret(&token, ttl, Timestamp::now())
            .ok_or_else(|| anyhow::anyhow!("bootstrap token ttl {ttl:?} is out of range"))?;
        objects
            .upsert("secrets", bootstrap::NAMESPACE, secret)
            .map_err(|e| anyhow::anyhow!("writing Secret kube-system/{name}: {e}"))?;
        if let Some(url) = self.last_server_url() {
            self.publish_cluster_info(&url, objects)?;
        }
        Ok(token)
    }

    /// Writes ConfigMap kube-public/cluster-info: data.kubeconfig (the server URL and CA, no
    /// users) and `jws-kubeconfig-<id>` for every live signing token. Remembers `server_url`
    /// for later re-signing.
    pub fn publish_cluster_info(
        &self,
        server_url: &str,
        objects: &dyn Objects,
    ) -> anyhow::Result<()> {
        *self
            .server_url
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(server_url.to_owned());
        let kubeconfig = bootstrap::cluster_kubeconfig(server_url, self.pki.ca_pem());
        let secrets = objects.list("secrets", bootstrap::NAMESPACE);
        let now = Timestamp::now();
        let data = bootstrap::cluster_info_data(&kubeconfig, &secrets, now);
        *self
            .resign_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            bootstrap::next_expiry(&secrets, now);
        let (ns, name) = (bootstrap::CLUSTER_INFO_NAMESPACE, bootstrap::CLUSTER_INFO);
        let existing = objects.get("configmaps", ns, name);
        let data = json!(data);
        if existing.as_ref().and_then(|cm| cm.get("data")) == Some(&data) {
            return Ok(());
        }
        let mut cm = existing.unwrap_or_else(|| {
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": ns },
            })
        });
        cm["data"] = data;
        objects
            .upsert("configmaps", ns, cm)
            .map_err(|e| anyhow::anyhow!("writing ConfigMap {ns}/{name}: {e}"))?;
        Ok(())
    }

    fn last_server_url(&self) -> Option<String> {
        self.server_url
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The controllers: called by the core after every successful write of `obj`.
    pub fn after_write(
        &self,
        resource: &str,
        obj: &Value,
        objects: &dyn Objects,
        auto_approve_node_csrs: bool,
    ) {
        match resource {
            "certificatesigningrequests" => {
                self.reconcile_csr(obj, objects, auto_approve_node_csrs)
            }
            "secrets" if bootstrap::is_token_secret(obj) => self.resign(objects),
            _ => {}
        }
        // The bootstrapsigner's resync: writes are frequent (leases every 10 s), so checking
        // here drops an expired token's signature soon after it expires.
        let due = self
            .resign_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at <= Timestamp::now());
        if due {
            self.resign(objects);
        }
    }

    /// Re-signs cluster-info with the last published server URL (nothing before the first publish).
    fn resign(&self, objects: &dyn Objects) {
        if let Some(url) = self.last_server_url() {
            if let Err(e) = self.publish_cluster_info(&url, objects) {
                eprintln!("apiserver: re-signing cluster-info: {e:#}");
            }
        }
    }

    fn reconcile_csr(&self, obj: &Value, objects: &dyn Objects, auto_approve: bool) {
        let mut current = obj.clone();
        // At most approve, then sign (or fail); bounded so a store that echoes stale
        // objects cannot loop.
        for _ in 0..3 {
            let next = match csr::reconcile(&self.pki, &current, auto_approve, Timestamp::now()) {
                csr::Outcome::Nothing => return,
                csr::Outcome::Conditioned(next) | csr::Outcome::Signed(next) => next,
            };
            match objects.upsert("certificatesigningrequests", "", next) {
                Ok(stored) => current = stored,
                Err(e) => {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    eprintln!("apiserver: updating CertificateSigningRequest {name}: {e}");
                    return;
                }
            }
        }
    }

    /// POST on a subresource: `serviceaccounts/<name>/token` (TokenRequest).
    #[allow(clippy::too_many_arguments)]
    pub fn create_subresource(
        &self,
        user: Option<&User>,
        resource: &str,
        namespace: &str,
        name: &str,
        subresource: &str,
        body: Value,
        objects: &dyn Objects,
    ) -> Result<Value, ApiError> {
        if (resource, subresource) != ("serviceaccounts", "token") {
            return Err(ApiError::method_not_allowed(format!(
                "create is not supported on {resource}/{subresource}"
            )));
        }
        self.require(user, "create", resource, subresource, namespace, name)?;
        self.tokens
            .token_request(namespace, name, &body, objects, Timestamp::now())
    }

    /// POST of a review: `tokenreviews`, `subjectaccessreviews`, `selfsubjectaccessreviews`,
    /// `selfsubjectreviews` (`kubectl auth whoami`).
    pub fn create_review(
        &self,
        user: Option<&User>,
        resource: &str,
        body: Value,
        objects: &dyn Objects,
    ) -> Result<Value, ApiError> {
        self.require(user, "create", resource, "", "", "")?;
        match resource {
            "tokenreviews" => {
                let spec = review::token_review_spec(&body)?;
                let audiences = if spec.audiences.is_empty() {
                    vec![API_AUDIENCE.to_owned()]
                } else {
                    spec.audiences.clone()
                };
                let result = self.authenticate_token(&spec.token, &audiences, objects);
                Ok(review::token_review(&body, result))
            }
            "subjectaccessreviews" => {
                let subject = review::review_subject(&body)?;
                let attrs = review::review_attributes(&body)?;
                let allowed = rbac::allowed(subject.as_ref(), &attrs.view());
                Ok(review::access_review(
                    "SubjectAccessReview",
                    &body,
                    subject.as_ref(),
                    allowed,
                ))
            }
            "selfsubjectaccessreviews" => {
                let attrs = review::review_attributes(&body)?;
                let allowed = rbac::allowed(user, &attrs.view());
                Ok(review::access_review(
                    "SelfSubjectAccessReview",
                    &body,
                    user,
                    allowed,
                ))
            }
            "selfsubjectreviews" => Ok(review::self_subject_review(user)),
            other => Err(ApiError::not_found(other, "")),
        }
    }

    /// 403 worded like kube-apiserver's when `user` may not do this.
    fn require(
        &self,
        user: Option<&User>,
        verb: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.authorize(user, verb, resource, subresource, namespace, name) {
            return Ok(());
        }
        let who = user.map_or(ANONYMOUS, |u| u.name.as_str());
        // Only the resources this module serves reach here.
        let group = match resource {
            "tokenreviews" | "selfsubjectreviews" => "authentication.k8s.io",
            "subjectaccessreviews" | "selfsubjectaccessreviews" => "authorization.k8s.io",
            _ => "",
        };
        let what = if subresource.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{subresource}")
        };
        let object = match (group, name) {
            ("", "") => resource.to_owned(),
            ("", name) => format!("{resource} \"{name}\""),
            (group, "") => format!("{resource}.{group}"),
            (group, name) => format!("{resource}.{group} \"{name}\""),
        };
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        Err(ApiError::forbidden(format!(
            "{object} is forbidden: User \"{who}\" cannot {verb} resource \"{what}\" in API group \"{group}\" {scope}"
        )))
    }
}

/// The token of `Authorization: Bearer <token>`; None for other schemes or an empty token.
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
