//! The node's client certificate request: an ECDSA P-256 key, a CSR for
//! `system:node:<node>` in `system:nodes`, submitted to the kubelet client signer and
//! waited for until it is approved and signed (or denied).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use rcgen::PublicKeyData;
use sha2::{Digest, Sha512_256};

use super::{api_code, request_error, BootstrapError};

/// The signer that issues kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The key usages the kubelet asks for with an ECDSA key.
pub const USAGES: [&str; 2] = ["digital signature", "client auth"];
/// The group every node certificate carries.
pub const NODES_GROUP: &str = "system:nodes";

/// A fresh key and the CSR for it.
pub struct NewRequest {
    /// The private key, kept until the certificate arrives.
    pub key: rcgen::KeyPair,
    /// The CSR (PEM).
    pub csr_pem: String,
    /// The CSR object's name, derived from the key and subject like the kubelet's.
    pub name: String,
}

/// Who authenticates the CSR, to say what a 401 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The join: the bootstrap token.
    BootstrapToken,
    /// Rotation: the current client certificate.
    ClientCertificate,
}

impl Credential {
    fn rejected(self) -> BootstrapError {
        match self {
            Credential::BootstrapToken => BootstrapError::TokenRejected,
            Credential::ClientCertificate => BootstrapError::CertificateRejected,
        }
    }
}

/// Generate a key and the CSR for node `node`.
pub fn new_request(node: &str) -> Result<NewRequest, BootstrapError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let common_name = format!("system:node:{node}");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::OrganizationName, NODES_GROUP);
    subject.push(rcgen::DnType::CommonName, common_name.as_str());
    params.distinguished_name = subject;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let name = digested_name(&key.subject_public_key_info(), &common_name);
    Ok(NewRequest { key, csr_pem, name })
}

/// The kubelet's CSR name: `node-csr-` and the base64url SHA-512/256 of the public key,
/// subject and usages, each base64url-encoded and `|`-terminated so fields cannot run together.
fn digested_name(public_key_der: &[u8], common_name: &str) -> String {
    let mut hash = Sha512_256::new();
    let mut write = |data: &[u8]| {
        hash.update(URL_SAFE_NO_PAD.encode(data));
        hash.update(b"|");
    };
    write(public_key_der);
    write(common_name.as_bytes());
    write(NODES_GROUP.as_bytes());
    for usage in USAGES {
        write(usage.as_bytes());
    }
    format!("node-csr-{}", URL_SAFE_NO_PAD.encode(hash.finalize()))
}

/// The CertificateSigningRequest object for `request`.
fn object(request: &NewRequest, expiration: Option<Duration>) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(request.name.clone()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.csr_pem.clone().into_bytes()),
            signer_name: SIGNER.to_owned(),
            usages: Some(USAGES.iter().map(|u| (*u).to_owned()).collect()),
            expiration_seconds: expiration.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

/// Submit the CSR and wait up to `timeout` for its certificate (PEM).
pub async fn submit_and_wait(
    client: kube::Client,
    server: &str,
    request: &NewRequest,
    credential: Credential,
    expiration: Option<Duration>,
    timeout: Duration,
) -> Result<String, BootstrapError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    if let Err(e) = api
        .create(&PostParams::default(), &object(request, expiration))
        .await
    {
        return Err(match api_code(&e) {
            Some(401) => credential.rejected(),
            _ => request_error(server, "creating the certificate signing request", e),
        });
    }
    let decided =
        |csr: Option<&CertificateSigningRequest>| csr.is_some_and(|c| outcome(c).is_some());
    let waited = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, &request.name, decided),
    )
    .await
    .map_err(|_| BootstrapError::CsrTimeout {
        name: request.name.clone(),
        after: timeout,
    })?;
    let csr = match waited {
        Ok(Some(csr)) => csr,
        Ok(None) => {
            return Err(BootstrapError::CsrFailed {
                name: request.name.clone(),
                reason: "Deleted".into(),
                message: "the request was deleted before it was signed".into(),
            })
        }
        Err(kube::runtime::wait::Error::ProbeFailed(e)) => {
            return Err(watch_error(server, credential, e))
        }
    };
    match outcome(&csr) {
        Some(Outcome::Issued(pem)) => Ok(pem),
        Some(Outcome::Denied { reason, message }) => Err(BootstrapError::CsrDenied {
            name: request.name.clone(),
            reason,
            message,
        }),
        Some(Outcome::Failed { reason, message }) => Err(BootstrapError::CsrFailed {
            name: request.name.clone(),
            reason,
            message,
        }),
        None => Err(BootstrapError::IssuedCertificate(
            "the request is neither signed nor denied".into(),
        )),
    }
}

fn watch_error(
    server: &str,
    credential: Credential,
    error: kube::runtime::watcher::Error,
) -> BootstrapError {
    use kube::runtime::watcher::Error as W;
    let status_code = match &error {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => api_code(e),
        W::WatchError(status) => Some(status.code),
        W::NoResourceVersion => None,
    };
    if status_code == Some(401) {
        return credential.rejected();
    }
    match error {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
            request_error(server, "watching the certificate signing request", e)
        }
        other => BootstrapError::IssuedCertificate(format!("watching the request: {other}")),
    }
}

/// Where a CSR ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Issued(String),
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
}

/// Denied or Failed wins over a certificate, as client-go's WaitForCertificate checks them first.
fn outcome(csr: &CertificateSigningRequest) -> Option<Outcome> {
    let status = csr.status.as_ref()?;
    for condition in status.conditions.iter().flatten() {
        let reason = condition.reason.clone().unwrap_or_default();
        let message = condition.message.clone().unwrap_or_default();
        if condition.status == "False" {
            continue;
        }
        match condition.type_.as_str() {
            "Denied" => return Some(Outcome::Denied { reason, message }),
            "Failed" => return Some(Outcome::Failed { reason, message }),
            _ => {}
        }
    }
    let approved = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Approved" && c.status != "False");
    match &status.certificate {
        Some(cert) if approved && !cert.0.is_empty() => Some(Outcome::Issued(
            String::from_utf8_lossy(&cert.0).into_owned(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn csr_names_the_node_and_carries_our_key() {
        let request = new_request("worker-1").unwrap();
        let der = x509_parser::pem::Pem::iter_from_buffer(request.csr_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(der.label, "CERTIFICATE REQUEST");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .unwrap();
        let info = &csr.certification_request_info;
        let cn: Vec<_> = info
            .subject
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let orgs: Vec<_> = info
            .subject
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:worker-1"]);
        assert_eq!(orgs, ["system:nodes"]);
        assert_eq!(
            info.subject_pki.raw,
            request.key.subject_public_key_info().as_slice()
        );
        assert_eq!(
            info.subject_pki.algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
    }

    #[test]
    fn object_asks_the_kubelet_client_signer() {
        let request = new_request("worker-1").unwrap();
        let csr = object(&request, Some(Duration::from_secs(600)));
        assert_eq!(csr.spec.signer_name, SIGNER);
        assert_eq!(
            csr.spec.usages.as_deref(),
            Some(&["digital signature".to_owned(), "client auth".to_owned()][..])
        );
        assert_eq!(csr.spec.expiration_seconds, Some(600));
        assert_eq!(csr.spec.request.0, request.csr_pem.as_bytes());
        assert!(request.name.starts_with("node-csr-"));
        assert_eq!(object(&request, None).spec.expiration_seconds, None);
    }

    #[test]
    fn names_differ_per_key() {
        assert_ne!(
            new_request("a").unwrap().name,
            new_request("a").unwrap().name
        );
    }

    fn with(conditions: &[(&str, &str)], certificate: Option<&str>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: certificate.map(|c| ByteString(c.as_bytes().to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status)| CertificateSigningRequestCondition {
                            type_: (*type_).to_owned(),
                            status: (*status).to_owned(),
                            reason: Some("R".into()),
                            message: Some("M".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcome_waits_for_approval_and_the_certificate() {
        assert_eq!(outcome(&CertificateSigningRequest::default()), None);
        assert_eq!(outcome(&with(&[("Approved", "True")], None)), None);
        assert_eq!(outcome(&with(&[], Some("PEM"))), None);
        assert_eq!(
            outcome(&with(&[("Approved", "True")], Some("PEM"))),
            Some(Outcome::Issued("PEM".into()))
        );
        assert_eq!(
            outcome(&with(&[("Denied", "True")], None)),
            Some(Outcome::Denied {
                reason: "R".into(),
                message: "M".into()
            })
        );
        assert_eq!(
            outcome(&with(
                &[("Approved", "True"), ("Failed", "True")],
                Some("PEM")
            )),
            Some(Outcome::Failed {
                reason: "R".into(),
                message: "M".into()
            })
        );
        assert_eq!(outcome(&with(&[("Denied", "False")], None)), None);
    }
}
