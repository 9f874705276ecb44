//! kubeadm's token discovery: read `kube-public/cluster-info` without trusting the server,
//! check its signature for our token, pin the CA it names, then read it again over TLS
//! verified with that CA.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::Kubeconfig;
use sha2::{Digest, Sha256};

use super::certificate::pem_certificates;
use super::token::{BootstrapToken, CaHash};
use super::{install_crypto_provider, jws, request_error, BootstrapError};

/// How long one discovery request may take before the server counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster as `cluster-info` describes it, after its checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredCluster {
    /// The API server URL to use (the one discovery talked to).
    pub server: String,
    /// The cluster CA certificate(s), PEM.
    pub ca_pem: String,
    /// The CA's pin, `sha256:<hex>`.
    pub ca_hash: String,
}

/// Discover the cluster at `server` with `token`, pinning its CA by one of `pins` unless
/// `skip_ca_verification` (kubeadm's `--discovery-token-unsafe-skip-ca-verification`).
pub async fn discover(
    server: &str,
    token: &BootstrapToken,
    pins: &[CaHash],
    skip_ca_verification: bool,
) -> Result<DiscoveredCluster, BootstrapError> {
    if pins.is_empty() && !skip_ca_verification {
        return Err(BootstrapError::NoCaPin);
    }
    let insecure = fetch_cluster_info(server, None).await?;
    let kubeconfig = verified_kubeconfig(&insecure, token)?;
    let (ca_pem, ca_certs) = cluster_ca(kubeconfig)?;
    let hashes = ca_certs
        .iter()
        .map(|der| ca_cert_hash(der))
        .collect::<Result<Vec<_>, _>>()?;
    let pinned = hashes
        .iter()
        .find(|hash| pins.iter().any(|pin| pin.as_str() == hash.as_str()));
    let ca_hash = match (pinned, skip_ca_verification) {
        (Some(hash), _) => hash.clone(),
        (None, true) => hashes.first().cloned().unwrap_or_default(),
        (None, false) => {
            return Err(BootstrapError::CaHashMismatch {
                actual: hashes.join(", "),
                expected: pins
                    .iter()
                    .map(CaHash::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let secure = fetch_cluster_info(server, Some(ca_certs)).await?;
    if secure.get("kubeconfig").map(String::as_str) != Some(kubeconfig) {
        return Err(BootstrapError::ClusterInfoChanged);
    }
    Ok(DiscoveredCluster {
        server: server.to_owned(),
        ca_pem,
        ca_hash,
    })
}

/// kubeadm's CA pin: `sha256:` and the hex SHA-256 of the certificate's DER
/// SubjectPublicKeyInfo.
pub fn ca_cert_hash(cert_der: &[u8]) -> Result<String, BootstrapError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
        BootstrapError::ClusterInfo(format!("the CA certificate does not parse: {e}"))
    })?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// Read `cluster-info`'s data, trusting the server only if CA certificates (DER) are given.
async fn fetch_cluster_info(
    server: &str,
    ca_certs: Option<Vec<Vec<u8>>>,
) -> Result<BTreeMap<String, String>, BootstrapError> {
    let mut config = server_config(server)?;
    config.accept_invalid_certs = ca_certs.is_none();
    config.root_cert = ca_certs;
    config.read_timeout = Some(REQUEST_TIMEOUT);
    let client = build(server, config)?;
    let api: Api<ConfigMap> = Api::namespaced(client, "kube-public");
    match api.get_opt("cluster-info").await {
        Ok(Some(map)) => Ok(map.data.unwrap_or_default()),
        Ok(None) => Err(BootstrapError::ClusterInfo(
            "the ConfigMap does not exist (is this a kubeadm-style cluster?)".into(),
        )),
        Err(e) => Err(request_error(server, "reading kube-public/cluster-info", e)),
    }
}

/// A client config for `server` with no credentials and no trusted CA yet.
pub(super) fn server_config(server: &str) -> Result<kube::Config, BootstrapError> {
    let mut config = match server.parse() {
        Ok(uri) => kube::Config::new(uri),
        Err(e) => {
            return Err(BootstrapError::ServerUrl {
                url: server.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    Ok(config)
}

/// Build a client from a config made here (a failure is a TLS setup failure).
pub(super) fn build(server: &str, config: kube::Config) -> Result<kube::Client, BootstrapError> {
    install_crypto_provider();
    kube::Client::try_from(config).map_err(|source| BootstrapError::Unreachable {
        server: server.to_owned(),
        source,
    })
}

/// The kubeconfig in `cluster-info` once its signature for `token` verifies.
fn verified_kubeconfig<'a>(
    data: &'a BTreeMap<String, String>,
    token: &BootstrapToken,
) -> Result<&'a str, BootstrapError> {
    let kubeconfig = data
        .get("kubeconfig")
        .ok_or_else(|| BootstrapError::ClusterInfo("no `kubeconfig` key".into()))?;
    let signature = data
        .get(&format!("jws-kubeconfig-{}", token.id()))
        .ok_or_else(|| BootstrapError::NoSignature {
            token_id: token.id().to_owned(),
        })?;
    jws::verify_detached(signature, kubeconfig.as_bytes(), token.id(), token.secret()).map_err(
        |reason| BootstrapError::BadSignature {
            token_id: token.id().to_owned(),
            reason,
        },
    )?;
    Ok(kubeconfig)
}

/// The CA bundle (PEM, and each certificate's DER) of the kubeconfig's first cluster.
fn cluster_ca(kubeconfig: &str) -> Result<(String, Vec<Vec<u8>>), BootstrapError> {
    let bad = |what: String| BootstrapError::ClusterInfo(what);
    let config = Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| bad(format!("its kubeconfig does not parse: {e}")))?;
    let data = config
        .clusters
        .first()
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.certificate_authority_data.as_deref())
        .ok_or_else(|| {
            bad("its kubeconfig has no cluster with certificate-authority-data".into())
        })?;
    let pem = STANDARD
        .decode(data.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| bad("certificate-authority-data is not base64 PEM".into()))?;
    let certs = pem_certificates(&pem);
    if certs.is_empty() {
        return Err(bad("certificate-authority-data holds no certificate".into()));
    }
    Ok((pem, certs))
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;

    use super::*;

    fn ca() -> (rcgen::KeyPair, rcgen::Certificate) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (key, cert)
    }

    fn kubeconfig_with(ca_pem: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    \
             certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n\
             contexts: []\nusers: []\n",
            STANDARD.encode(ca_pem)
        )
    }

    #[test]
    fn ca_hash_is_sha256_of_the_subject_public_key_info() {
        let (key, cert) = ca();
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(key.subject_public_key_info()))
        );
        assert_eq!(ca_cert_hash(cert.der()).unwrap(), expected);
    }

    #[test]
    fn cluster_ca_comes_from_the_first_cluster() {
        let (_, cert) = ca();
        let (pem, certs) = cluster_ca(&kubeconfig_with(&cert.pem())).unwrap();
        assert_eq!(pem, cert.pem());
        assert_eq!(certs, [cert.der().to_vec()]);
        assert!(matches!(
            cluster_ca("apiVersion: v1\nkind: Config\nclusters: []\n"),
            Err(BootstrapError::ClusterInfo(_))
        ));
    }

    #[test]
    fn kubeconfig_needs_a_valid_signature_for_our_token() {
        // The vector of jws.rs: payload "hello" signed for abcdef.0123456789abcdef.
        let signature =
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..MxsnbCjBaYzcbNIFa06F-wuF9LX26rhMlrL4zA1511s";
        let data = BTreeMap::from([
            ("kubeconfig".to_owned(), "hello".to_owned()),
            ("jws-kubeconfig-abcdef".to_owned(), signature.to_owned()),
        ]);
        let good: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!(verified_kubeconfig(&data, &good).unwrap(), "hello");
        let wrong_secret: BootstrapToken = "abcdef.0123456789abcdee".parse().unwrap();
        assert!(matches!(
            verified_kubeconfig(&data, &wrong_secret),
            Err(BootstrapError::BadSignature { .. })
        ));
        let other_id: BootstrapToken = "zzzzzz.0123456789abcdef".parse().unwrap();
        let err = verified_kubeconfig(&data, &other_id).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"zzzzzz\" is invalid for this cluster or it has expired"),
            "{err}"
        );
    }
}
