//! `capstan join`'s work: discovery, the TLS bootstrap with the token, and the files.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::certificate::{check_issued, pem_certificates};
use super::csr::{self, Credential};
use super::discovery::{build, discover, server_config};
use super::files::{write_join, JoinFiles};
use super::token::{BootstrapToken, CaHash};
use rcgen::PublicKeyData;

use super::BootstrapError;

/// What to join and where to put the result.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The API server URL (`https://host:port`).
    pub server: String,
    /// The bootstrap token.
    pub token: BootstrapToken,
    /// The CA pins; at least one must match unless `skip_ca_verification`.
    pub ca_hashes: Vec<CaHash>,
    /// Trust the CA in cluster-info without a pin (kubeadm's unsafe opt-out).
    pub skip_ca_verification: bool,
    /// The node's name (the certificate is for `system:node:<name>`).
    pub node_name: String,
    /// Where the kubeconfig goes; it must not exist yet.
    pub kubeconfig: PathBuf,
    /// Where the certificate files go.
    pub pki_dir: PathBuf,
    /// The certificate lifetime to ask for (`expirationSeconds`); the signer's default if unset.
    pub certificate_duration: Option<Duration>,
    /// How long to wait for the CSR to be approved and signed.
    pub approval_timeout: Duration,
}

/// What a successful join produced.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The files written.
    pub files: JoinFiles,
    /// The CA pin of the cluster joined.
    pub ca_hash: String,
    /// The user the kubeconfig authenticates as.
    pub user: String,
    /// When the client certificate expires.
    pub expires: SystemTime,
}

/// Join the cluster: nothing is written unless every step succeeded.
pub async fn join(options: &JoinOptions) -> Result<Joined, BootstrapError> {
    if options.kubeconfig.symlink_metadata().is_ok() {
        return Err(BootstrapError::AlreadyJoined(options.kubeconfig.clone()));
    }
    let cluster = discover(
        &options.server,
        &options.token,
        &options.ca_hashes,
        options.skip_ca_verification,
    )
    .await?;
    let mut config = server_config(&cluster.server)?;
    config.root_cert = Some(pem_certificates(&cluster.ca_pem));
    config.auth_info = bearer(&options.token)?;
    let client = build(&cluster.server, config)?;
    let request = csr::new_request(&options.node_name)?;
    let user = format!("system:node:{}", options.node_name);
    let cert_pem = csr::submit_and_wait(
        client,
        &cluster.server,
        &request,
        Credential::BootstrapToken,
        options.certificate_duration,
        options.approval_timeout,
    )
    .await?;
    let validity = check_issued(&cert_pem, &request.key.subject_public_key_info(), &user)?;
    let files = write_join(
        &options.kubeconfig,
        &options.pki_dir,
        &cluster.server,
        &cluster.ca_pem,
        &cert_pem,
        &request.key.serialize_pem(),
    )?;
    Ok(Joined {
        files,
        ca_hash: cluster.ca_hash,
        user,
        expires: validity.not_after,
    })
}

/// Credentials of the bootstrap token as a bearer token (built through serde because the
/// token field's secret type is kube's own).
fn bearer(token: &BootstrapToken) -> Result<kube::config::AuthInfo, BootstrapError> {
    serde_json::from_value(serde_json::json!({ "token": token.bearer() }))
        .map_err(|e| BootstrapError::Credentials(e.to_string()))
}
