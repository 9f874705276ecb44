//! The API objects a pod refers to, fetched and kept current the way the kubelet's
//! watch-based configMap/secret managers and its token manager do it:
//!
//! - [`ObjectFetcher::resolve`] reads every ConfigMap and Secret the pod names (volumes,
//!   projected sources, env `configMapKeyRef`/`secretKeyRef`, `envFrom`, `imagePullSecrets`),
//!   the Services for service environment variables (the pod's namespace when
//!   `enableServiceLinks`, and `default/kubernetes` always), and one TokenRequest per
//!   projected `serviceAccountToken` source, into a [`PodObjects`].
//! - A missing object is not an error here: it is simply absent from [`PodObjects`], and the
//!   volume or env code that needs it reports it (naming object and key) unless it is optional.
//! - Each referenced object is watched (a `metadata.name` field-selector watch; services per
//!   namespace) for as long as some pod refers to it; a change bumps the pods'
//!   [`ObjectFetcher::subscribe`] channel, as does a token reaching 80 % of its lifetime (or
//!   24 h), so the pod worker resolves again and refreshes its volumes.

mod fetcher;
mod pull_secrets;
mod references;
mod tokens;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

pub use fetcher::ObjectFetcher;
pub use pull_secrets::{image_auth, ImageAuth, PullSecretError};
pub use references::{service_account_name, References};

/// One projected `serviceAccountToken` request: tokens are per audience and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenKey {
    /// The token's audience; empty: the API server's default audiences.
    pub audience: String,
    /// Requested lifetime in seconds (API default 3600).
    pub expiration_seconds: i64,
}

/// The objects resolved for one pod, in the pod's namespace, keyed by name.
/// `Default` is "nothing resolved": static pods without an API server.
#[derive(Debug, Clone, Default)]
pub struct PodObjects {
    config_maps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
    tokens: BTreeMap<TokenKey, String>,
    services: Vec<Service>,
}

impl PodObjects {
    /// The ConfigMap `name`, if it exists.
    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name)
    }

    /// The Secret `name`, if it exists.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    /// The service-account token issued for a projected source, if one was issued.
    pub fn token(&self, key: &TokenKey) -> Option<&str> {
        self.tokens.get(key).map(String::as_str)
    }

    /// Services for environment variables: the pod namespace's (when service links are
    /// enabled) and `default/kubernetes`; the env code selects as the kubelet does.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Adds (or replaces) a ConfigMap, keyed by its name.
    pub fn insert_config_map(&mut self, config_map: ConfigMap) {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        self.config_maps.insert(name, config_map);
    }

    /// Adds (or replaces) a Secret, keyed by its name.
    pub fn insert_secret(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets.insert(name, secret);
    }

    /// Adds (or replaces) the token of a projected source.
    pub fn insert_token(&mut self, key: TokenKey, token: String) {
        self.tokens.insert(key, token);
    }

    /// Adds a Service.
    pub fn insert_service(&mut self, service: Service) {
        self.services.push(service);
    }
}

/// Why the objects of a pod could not be resolved (missing objects are not errors).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The pod has no metadata.uid to key its references by.
    #[error("pod {pod:?} has no metadata.uid")]
    MissingUid {
        /// namespace/name of the pod.
        pod: String,
    },
    /// Reading an object failed for another reason than its absence.
    #[error("get {kind} {namespace}/{name}: {source}")]
    Get {
        /// "configmap", "secret", "services".
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name (empty for a list).
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The TokenRequest for a projected serviceAccountToken failed.
    #[error("request token for serviceaccount {namespace}/{service_account} (audience {audience:?}): {source}")]
    TokenRequest {
        /// The pod's namespace.
        namespace: String,
        /// The pod's service account.
        service_account: String,
        /// The requested audience.
        audience: String,
        /// The API error.
        source: kube::Error,
    },
    /// The TokenRequest answer carried no status (no token).
    #[error("token request for serviceaccount {namespace}/{service_account} returned no token")]
    TokenMissing {
        /// The pod's namespace.
        namespace: String,
        /// The pod's service account.
        service_account: String,
    },
}
