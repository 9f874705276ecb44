//! Rotation end to end against a fake API server whose signer honours short
//! `expirationSeconds` (the API test server, like kube-apiserver, clamps them to 10 minutes).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

use super::files::{kubeconfig_yaml, store_pair, write_atomic, CURRENT};
use super::{ApiClient, RotationOptions};

struct Signer {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Every CSR object created, as stored.
    created: Mutex<Vec<Value>>,
}

/// A requester's P-256 public key (the EC point), for rcgen to certify.
struct P256Key(Vec<u8>);

impl rcgen::PublicKeyData for P256Key {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A certificate for `cn` over `public_key` valid from now for `lifetime`.
fn issue(
    signer: &Signer,
    cn: &str,
    public_key: &impl rcgen::PublicKeyData,
    lifetime: Duration,
) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.not_before = epoch + Duration::from_secs(now.as_secs());
    params.not_after = epoch + Duration::from_secs(now.as_secs()) + lifetime;
    params.signed_by(public_key, &signer.issuer).unwrap().pem()
}

/// Sign a submitted CSR at once, approved, for `spec.expirationSeconds`.
fn sign(signer: &Signer, mut csr: Value) -> Value {
    let pem = STANDARD
        .decode(csr["spec"]["request"].as_str().unwrap())
        .unwrap();
    let block = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .next()
        .unwrap()
        .unwrap();
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .unwrap();
    let info = &request.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let spki = P256Key(info.subject_pki.subject_public_key.data.to_vec());
    let lifetime = Duration::from_secs(csr["spec"]["expirationSeconds"].as_u64().unwrap_or(3600));
    let cert = issue(signer, &cn, &spki, lifetime);
    csr["metadata"]["resourceVersion"] = "1".into();
    csr["status"] = json!({
        "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved", "message": "test"}],
        "certificate": STANDARD.encode(cert),
    });
    csr
}

async fn fake_signer(signer: Arc<Signer>) -> String {
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let app =
        Router::new()
            .route(
                path,
                get(
                    |State(signer): State<Arc<Signer>>,
                     Query(query): Query<Vec<(String, String)>>| async move {
                        let selector = query
                            .iter()
                            .find(|(k, _)| k == "fieldSelector")
                            .map(|(_, v)| v.trim_start_matches("metadata.name=").to_owned())
                            .unwrap_or_default();
                        let items: Vec<Value> = signer
                            .created
                            .lock()
                            .unwrap()
                            .iter()
                            .filter(|csr| csr["metadata"]["name"] == selector.as_str())
                            .cloned()
                            .collect();
                        Json(json!({
                            "apiVersion": "certificates.k8s.io/v1",
                            "kind": "CertificateSigningRequestList",
                            "metadata": {"resourceVersion": "1"},
                            "items": items,
                        }))
                    },
                )
                .post(
                    |State(signer): State<Arc<Signer>>, Json(csr): Json<Value>| async move {
                        let stored = sign(&signer, csr);
                        signer.created.lock().unwrap().push(stored.clone());
                        (axum::http::StatusCode::CREATED, Json(stored))
                    },
                ),
            )
            .with_state(signer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn link_target(pki: &Path) -> std::path::PathBuf {
    std::fs::read_link(pki.join(CURRENT)).unwrap()
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_and_swapped() {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let signer = Arc::new(Signer {
        issuer: rcgen::Issuer::new(ca, ca_key),
        created: Mutex::new(Vec::new()),
    });
    let server = fake_signer(signer.clone()).await;

    // A joined node whose certificate lives 3 s.
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = issue(&signer, "system:node:n1", &key, Duration::from_secs(3));
    let (first, _) = store_pair(&pki, &cert, &key.serialize_pem()).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let yaml = kubeconfig_yaml(&server, "", &pki.join(CURRENT)).unwrap();
    write_atomic(&kubeconfig, yaml.as_bytes(), 0o600).unwrap();

    let client = ApiClient::from_kubeconfig(&kubeconfig).await.unwrap();
    let options = RotationOptions {
        requested_duration: Some(Duration::from_secs(3)),
        approval_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    let rotation = tokio::spawn({
        let client = client.clone();
        async move { client.run_rotation(options).await }
    });

    // Two renewals, each at 70-90 % of a 3 s lifetime.
    let (_, validity) = super::certificate::describe(&cert).unwrap();
    let mut first_swap = None;
    let mut targets = vec![link_target(&pki)];
    let start = std::time::Instant::now();
    while targets.len() < 3 && start.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let target = link_target(&pki);
        if Some(&target) != targets.last() {
            first_swap.get_or_insert_with(SystemTime::now);
            targets.push(target);
        }
    }
    assert!(
        !rotation.is_finished(),
        "rotation stopped: {:?}",
        rotation.await
    );
    rotation.abort();
    assert_eq!(targets.len(), 3, "renewals seen: {targets:?}");
    let swapped = first_swap.unwrap();
    let lifetime = validity
        .not_after
        .duration_since(validity.not_before)
        .unwrap();
    assert!(
        swapped >= validity.not_before + lifetime.mul_f64(0.7),
        "renewed before 70 %"
    );
    assert!(swapped <= validity.not_after, "renewed only after expiry");

    let created = signer.created.lock().unwrap().clone();
    assert!(created.len() >= 2, "{created:?}");
    for csr in &created {
        assert_eq!(
            csr["spec"]["signerName"],
            "kubernetes.io/kube-apiserver-client-kubelet"
        );
        assert_eq!(csr["spec"]["expirationSeconds"], 3);
    }
    // The live pair is the only one left; it holds the newest certificate and its key.
    assert!(!first.exists(), "the replaced pair was kept");
    let files: Vec<_> = std::fs::read_dir(&pki)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let live = std::fs::read_to_string(pki.join(CURRENT)).unwrap();
    let (cn, _) = super::certificate::describe(&live).unwrap();
    assert_eq!(cn, "system:node:n1");
    assert!(live.contains("PRIVATE KEY"));
}
