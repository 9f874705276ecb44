//! The cluster PKI: a CA, the API server's serving certificate, client certificates, the
//! rustls server config and kubeadm's CA public-key pin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::User;

/// How far back certificates are dated, as the kube-controller-manager signer does, so a
/// client whose clock runs a little behind still accepts them.
pub(super) const BACKDATE: Duration = Duration::from_secs(5 * 60);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Names the serving certificate covers: loopback plus the in-cluster service names.
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// The CA and the serving TLS config built from it.
pub(super) struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ca_pem: String,
    ca_hash: String,
    tls: Arc<ServerConfig>,
    /// Client certificates already verified, by SHA-256 of the DER: (user, validity).
    verified: Mutex<HashMap<[u8; 32], (User, i64, i64)>>,
}

/// Verified client certificates remembered before the cache starts over.
const VERIFIED_CACHE: usize = 1024;

impl Pki {
    /// A fresh CA (ECDSA P-256) and a serving certificate signed by it.
    pub(super) fn new() -> Result<Pki> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca_params, CA_LIFETIME)?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let ca_der = ca_cert.der().to_vec();
        let ca_hash = ca_cert_hash(&ca_der)?;
        let tls = serving_config(&ca_key, &ca_params, &ca_der)
            .context("building the serving TLS config")?;
        Ok(Pki {
            ca_key,
            ca_params,
            ca_pem: ca_cert.pem(),
            ca_der,
            ca_hash,
            tls,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub(super) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo.
    pub(super) fn ca_hash(&self) -> &str {
        &self.ca_hash
    }

    /// The serving config (shared; built once).
    pub(super) fn tls(&self) -> Arc<ServerConfig> {
        self.tls.clone()
    }

    /// Signs `params` for `public_key` with the CA; returns the DER.
    pub(super) fn sign(
        &self,
        params: CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<Vec<u8>> {
        sign_with(&self.ca_key, &self.ca_params, params, public_key)
    }

    /// A client certificate (CN = user, O = group) and its key, both PEM.
    pub(super) fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        ttl: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        match orgs {
            [] => {}
            [org] => params
                .distinguished_name
                .push(DnType::OrganizationName, *org),
            // rcgen keeps one value per attribute type.
            _ => {
                return Err(anyhow!(
                "client certificate for {cn}: at most one organization is supported, got {orgs:?}"
            ))
            }
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params, ttl)?;
        let der = self.sign(params, &key)?;
        Ok((pem_certificate(&der), key.serialize_pem()))
    }

    /// The user a client certificate names (kube-apiserver's x509 authenticator: CN is the user,
    /// each O a group). rustls has verified it already; the signature and validity are checked
    /// again so the function is safe on its own (the signature once per certificate).
    pub(super) fn client_user(&self, der: &[u8]) -> Result<User, String> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        let cache = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let cached = cache().get(&digest).cloned();
        let (user, not_before, not_after) = match cached {
            Some(entry) => entry,
            None => {
                let entry = self.check_client_cert(der)?;
                let mut cache = cache();
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(digest, entry.clone());
                entry
            }
        };
        if now < not_before || now > not_after {
            return Err("client certificate has expired or is not yet valid".to_owned());
        }
        Ok(user)
    }

    /// Parses and verifies a client certificate: its user and validity (Unix seconds).
    fn check_client_cert(&self, der: &[u8]) -> Result<(User, i64, i64), String> {
        let (_, ca) = x509_parser::parse_x509_certificate(&self.ca_der)
            .map_err(|e| format!("parsing the CA certificate: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("client certificate does not parse: {e}"))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|e| format!("client certificate is not signed by the cluster CA: {e}"))?;
        let validity = cert.validity();
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or("client certificate has no common name")?
            .to_owned();
        let mut groups: Vec<String> = cert
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect();
        groups.push(super::AUTHENTICATED.to_owned());
        let user = User {
            name,
            uid: String::new(),
            groups,
        };
        Ok((
            user,
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        ))
    }
}

/// The serving certificate for [`SERVING_NAMES`] and the TLS config presenting it.
fn serving_config(
    ca_key: &KeyPair,
    ca_params: &CertificateParams,
    ca_der: &[u8],
) -> Result<Arc<ServerConfig>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        SERVING_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    set_validity(&mut params, SERVING_LIFETIME)?;
    let leaf = sign_with(ca_key, ca_params, params, &key)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    // Like kube-apiserver: a client certificate is asked for and verified when offered, and
    // anonymous clients (bootstrap-token and discovery requests) still get through.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(leaf)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Signs `params` for `public_key` with the CA key; a random serial like every real signer.
fn sign_with(
    ca_key: &KeyPair,
    ca_params: &CertificateParams,
    mut params: CertificateParams,
    public_key: &impl PublicKeyData,
) -> Result<Vec<u8>> {
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(ca_params.clone(), ca_key);
    Ok(params
        .signed_by(public_key, &issuer)
        .context("signing a certificate with the cluster CA")?
        .der()
        .to_vec())
}

/// kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` + hex SHA-256 of the certificate's
/// DER SubjectPublicKeyInfo.
pub(super) fn ca_cert_hash(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow!("parsing the CA certificate: {e}"))?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    ))
}

/// PEM for a DER certificate.
pub(super) fn pem_certificate(der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Valid from [`BACKDATE`] ago until `lifetime` from now. (rcgen's dates are `time` values;
/// building them from the epoch avoids a direct dependency on that crate.)
pub(super) fn set_validity(params: &mut CertificateParams, lifetime: Duration) -> Result<()> {
    let now = Duration::from_secs(unix_now());
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch
        + now
            .checked_add(lifetime)
            .ok_or_else(|| anyhow!("certificate lifetime {lifetime:?} is out of range"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write to openssl");
        let out = child.wait_with_output().expect("openssl output");
        assert!(out.status.success(), "openssl {args:?} failed");
        out.stdout
    }

    #[test]
    fn ca_hash_matches_openssl_spki_digest() {
        let pki = Pki::new().unwrap();
        let pubkey = openssl(&["x509", "-pubkey", "-noout"], pki.ca_pem().as_bytes());
        let der = openssl(&["pkey", "-pubin", "-outform", "der"], &pubkey);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&der)));
        assert_eq!(pki.ca_hash(), expected);
    }

    #[test]
    fn client_cert_names_user_and_groups() {
        let pki = Pki::new().unwrap();
        let (cert_pem, key_pem) = pki
            .issue_client_cert("alice", &["system:masters"], Duration::from_secs(3600))
            .unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = super::super::testing::pem_der(&cert_pem);
        let user = pki.client_user(&der).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
    }

    #[test]
    fn client_cert_from_another_ca_is_refused() {
        let ours = Pki::new().unwrap();
        let theirs = Pki::new().unwrap();
        let (cert_pem, _) = theirs
            .issue_client_cert("mallory", &[], Duration::from_secs(3600))
            .unwrap();
        let err = ours
            .client_user(&super::super::testing::pem_der(&cert_pem))
            .unwrap_err();
        assert!(err.contains("not signed by the cluster CA"), "{err}");
    }

    #[test]
    fn more_than_one_organization_is_an_error() {
        let pki = Pki::new().unwrap();
        assert!(pki
            .issue_client_cert("bob", &["a", "b"], Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn serving_config_offers_http11() {
        let pki = Pki::new().unwrap();
        assert_eq!(pki.tls().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
