//! Joining a cluster and keeping the node's API credentials fresh: kubeadm-compatible
//! discovery (`cluster-info` signed per bootstrap token, CA pinned by hash), the TLS
//! bootstrap (a CSR authenticated with the bootstrap token), the kubeconfig and pki files,
//! and client-certificate rotation. [`ApiClient`] is the handle every API user holds.

mod certificate;
mod client;
mod csr;
mod discovery;
mod files;
mod join;
mod jws;
mod rotation;
#[cfg(test)]
mod rotation_tests;
mod token;

use std::path::PathBuf;
use std::time::Duration;

pub use client::ApiClient;
pub use discovery::{ca_cert_hash, DiscoveredCluster};
pub use join::{join, JoinOptions, Joined};
pub use jws::JwsError;
pub use rotation::RotationOptions;
pub use token::{BootstrapToken, CaHash};

/// What went wrong while discovering, joining or rotating; each names the fix where one exists.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The token is not `[a-z0-9]{6}.[a-z0-9]{16}` (the secret is not repeated here).
    #[error("invalid bootstrap token: expected the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    TokenFormat,
    /// A `--discovery-token-ca-cert-hash` is not `sha256:<64 hex digits>`.
    #[error("invalid CA cert hash {0:?}: expected sha256:<64 hex digits>")]
    CaHashFormat(String),
    /// Neither a CA hash to pin nor the explicit opt-out was given.
    #[error(
        "no --discovery-token-ca-cert-hash given: pin the cluster CA (or pass \
         --discovery-token-unsafe-skip-ca-verification to trust it unverified)"
    )]
    NoCaPin,
    /// The server URL does not parse.
    #[error("invalid server URL {url:?}: {reason}")]
    ServerUrl {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No connection to the API server (refused, TLS failure, timeout).
    #[error("cannot reach the API server at {server}: {source}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// The transport error.
        #[source]
        source: kube::Error,
    },
    /// The API server answered a request with an error.
    #[error("{what} at {server} failed: {source}")]
    Api {
        /// What was asked.
        what: String,
        /// The server URL.
        server: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// `kube-public/cluster-info` lacks what kubeadm publishes or does not parse.
    #[error("kube-public/cluster-info is unusable: {0}")]
    ClusterInfo(String),
    /// `cluster-info` carries no signature for this token id.
    #[error(
        "token id {token_id:?} is invalid for this cluster or it has expired: cluster-info \
         has no signature for it (create a new token on the control plane)"
    )]
    NoSignature {
        /// The token id.
        token_id: String,
    },
    /// The signature for this token id does not verify with the given secret.
    #[error("the cluster-info signature for token id {token_id:?} does not verify ({reason}): the token secret is wrong")]
    BadSignature {
        /// The token id.
        token_id: String,
        /// What did not match.
        reason: JwsError,
    },
    /// The CA in `cluster-info` is not the pinned one.
    #[error(
        "the cluster CA in cluster-info has public key hash {actual}, which is not pinned by \
         --discovery-token-ca-cert-hash {expected}"
    )]
    CaHashMismatch {
        /// The CA's hash.
        actual: String,
        /// The hashes given, comma-separated.
        expected: String,
    },
    /// The second, CA-verified read of `cluster-info` differs from the first one.
    #[error("cluster-info read over verified TLS differs from the unverified read")]
    ClusterInfoChanged,
    /// The bootstrap token could not be turned into client credentials.
    #[error("building the bootstrap credentials: {0}")]
    Credentials(String),
    /// The API server refused the bootstrap token.
    #[error(
        "the API server rejected the bootstrap token (401 Unauthorized): it has expired or \
         was deleted (create a new token on the control plane)"
    )]
    TokenRejected,
    /// The API server refused the current client certificate.
    #[error("the API server rejected the client certificate (401 Unauthorized)")]
    CertificateRejected,
    /// The CSR was denied.
    #[error("certificate signing request {name} was denied ({reason}): {message}")]
    CsrDenied {
        /// The CSR's name.
        name: String,
        /// The Denied condition's reason.
        reason: String,
        /// The Denied condition's message.
        message: String,
    },
    /// The signer could not issue the certificate.
    #[error("certificate signing request {name} failed ({reason}): {message}")]
    CsrFailed {
        /// The CSR's name.
        name: String,
        /// The Failed condition's reason.
        reason: String,
        /// The Failed condition's message.
        message: String,
    },
    /// Nobody approved and signed the CSR in time.
    #[error(
        "certificate signing request {name} was not approved and signed within {after:?} \
         (approve it with `kubectl certificate approve {name}`)"
    )]
    CsrTimeout {
        /// The CSR's name.
        name: String,
        /// How long we waited.
        after: Duration,
    },
    /// The certificate the signer returned cannot be used with our key.
    #[error("the issued certificate is unusable: {0}")]
    IssuedCertificate(String),
    /// Generating the key or CSR failed.
    #[error("generating the key and CSR: {0}")]
    KeyGeneration(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig could not be loaded.
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// Why it did not load.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from a valid kubeconfig (bad certificate or key).
    #[error("building the API client from {path}: {source}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A kubeconfig is already in place: joining twice would replace the node's identity.
    #[error("already joined: {0} exists (remove it to join again)")]
    AlreadyJoined(PathBuf),
    /// The kubeconfig does not name one file holding the client certificate and key.
    #[error(
        "{0} does not reference a client certificate file with its key (client-certificate \
         and client-key naming the same file), so it cannot be rotated"
    )]
    NotRotatable(PathBuf),
}

/// The API server's answer code when it is an API error.
fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Classify a failed request: no connection, a refused credential, or an API error.
fn request_error(server: &str, what: &str, error: kube::Error) -> BootstrapError {
    match error {
        kube::Error::Api(_) => BootstrapError::Api {
            what: what.to_owned(),
            server: server.to_owned(),
            source: error,
        },
        other => BootstrapError::Unreachable {
            server: server.to_owned(),
            source: other,
        },
    }
}

/// Install ring as rustls' process-wide crypto provider: with several compiled in (kube uses
/// ring, reqwest aws-lc-rs) building any TLS client panics without one. Idempotent; call it
/// before building a `kube::Client` by hand.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
