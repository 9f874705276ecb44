//! Tests of [`Security`] as the core uses it, over an in-memory store.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::KeyPair;
use serde_json::{json, Value};

use super::testing::MemObjects;
use super::*;

fn admin() -> User {
    User {
        name: "kubernetes-admin".to_owned(),
        uid: String::new(),
        groups: vec!["system:masters".to_owned(), AUTHENTICATED.to_owned()],
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn bootstrap_token_authenticates_and_bad_ones_are_401() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    let token = sec
        .create_bootstrap_token(&objects, Some(Duration::from_secs(600)))
        .unwrap();
    let user = sec
        .authenticate(None, Some(&bearer(&token)), &objects)
        .unwrap()
        .unwrap();
    assert_eq!(user.name, format!("system:bootstrap:{}", &token[..6]));
    assert!(user.groups.contains(&"system:bootstrappers".to_owned()));

    let wrong = format!("{}.0000000000000000", &token[..6]);
    assert_eq!(
        sec.authenticate(None, Some(&bearer(&wrong)), &objects)
            .unwrap_err()
            .code,
        401
    );
    assert_eq!(
        sec.authenticate(None, Some("Bearer nonsense"), &objects)
            .unwrap_err()
            .code,
        401
    );
    assert_eq!(sec.authenticate(None, None, &objects), Ok(None));
    assert_eq!(
        sec.authenticate(None, Some("Basic dXNlcjpwdw=="), &objects),
        Ok(None)
    );
    assert_eq!(sec.authenticate(None, Some("Bearer "), &objects), Ok(None));
}

#[test]
fn client_certificate_wins_over_a_token() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    let (pem, _) = sec
        .issue_client_cert("alice", &["devs"], Duration::from_secs(60))
        .unwrap();
    let der = super::testing::pem_der(&pem);
    let user = sec
        .authenticate(Some(&der), Some("Bearer garbage"), &objects)
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "alice");
    assert_eq!(user.groups, ["devs", AUTHENTICATED]);
    assert_eq!(
        sec.authenticate(Some(b"junk"), None, &objects)
            .unwrap_err()
            .code,
        401
    );
}

fn jws_keys(objects: &MemObjects) -> Vec<String> {
    let cm = objects
        .get("configmaps", "kube-public", "cluster-info")
        .unwrap();
    cm["data"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("jws-kubeconfig-"))
        .cloned()
        .collect()
}

#[test]
fn cluster_info_is_signed_per_token_and_follows_secret_changes() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    sec.publish_cluster_info("https://127.0.0.1:6443", &objects)
        .unwrap();
    assert!(jws_keys(&objects).is_empty());
    let token = sec.create_bootstrap_token(&objects, None).unwrap();
    let (id, secret) = token.split_once('.').unwrap();
    assert_eq!(jws_keys(&objects), [format!("jws-kubeconfig-{id}")]);

    let cm = objects
        .get("configmaps", "kube-public", "cluster-info")
        .unwrap();
    let kubeconfig = cm["data"]["kubeconfig"].as_str().unwrap();
    assert_eq!(
        cm["data"][format!("jws-kubeconfig-{id}")],
        super::jws::detached_signature(kubeconfig, id, secret)
    );
    let parsed: serde_yaml::Value = serde_yaml::from_str(kubeconfig).unwrap();
    let ca = parsed["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    assert_eq!(STANDARD.decode(ca).unwrap(), sec.ca_pem().as_bytes());

    // Publishing again without changes writes nothing.
    let version = cm["metadata"]["resourceVersion"].clone();
    sec.publish_cluster_info("https://127.0.0.1:6443", &objects)
        .unwrap();
    let again = objects
        .get("configmaps", "kube-public", "cluster-info")
        .unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], version);

    // The token is deleted: its signature goes.
    let name = format!("bootstrap-token-{id}");
    let deleted = objects.get("secrets", "kube-system", &name).unwrap();
    objects.remove("secrets", "kube-system", &name);
    sec.after_write("secrets", &deleted, &objects, true);
    assert!(jws_keys(&objects).is_empty());
}

#[test]
fn an_expired_tokens_signature_is_dropped_on_a_later_write() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    sec.publish_cluster_info("https://127.0.0.1:6443", &objects)
        .unwrap();
    sec.create_bootstrap_token(&objects, Some(Duration::from_secs(1)))
        .unwrap();
    sec.create_bootstrap_token(&objects, None).unwrap();
    assert_eq!(jws_keys(&objects).len(), 2);
    std::thread::sleep(Duration::from_millis(2100));
    sec.after_write(
        "leases",
        &json!({"metadata": {"name": "n1"}}),
        &objects,
        true,
    );
    assert_eq!(jws_keys(&objects).len(), 1);
}

#[test]
fn node_csr_is_approved_and_signed_on_write_and_its_cert_authenticates() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    let key = KeyPair::generate().unwrap();
    let csr = super::csr::tests::node_csr(
        &key,
        "system:node:n1",
        "system:nodes",
        "system:bootstrap:abcdef",
        &["system:bootstrappers", AUTHENTICATED],
    );
    objects.put("certificatesigningrequests", "", csr.clone());
    sec.after_write("certificatesigningrequests", &csr, &objects, true);
    let stored = objects
        .get("certificatesigningrequests", "", "csr-1")
        .unwrap();
    assert_eq!(stored["status"]["conditions"][0]["type"], "Approved");
    let pem = STANDARD
        .decode(stored["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let der = super::testing::pem_der(&String::from_utf8(pem).unwrap());
    let user = sec
        .authenticate(Some(&der), None, &objects)
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "system:node:n1");
    assert!(sec.authorize(Some(&user), "list", "pods", "", "", ""));
}

#[test]
fn csr_waits_for_approval_when_auto_approve_is_off() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    let key = KeyPair::generate().unwrap();
    let csr = super::csr::tests::node_csr(
        &key,
        "system:node:n1",
        "system:nodes",
        "u",
        &["system:bootstrappers"],
    );
    objects.put("certificatesigningrequests", "", csr.clone());
    sec.after_write("certificatesigningrequests", &csr, &objects, false);
    let stored = objects
        .get("certificatesigningrequests", "", "csr-1")
        .unwrap();
    assert!(stored.get("status").is_none());
    // An admin approves through /approval: the signer issues.
    let mut approved = stored.clone();
    approved["status"] =
        json!({"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}]});
    objects.put("certificatesigningrequests", "", approved.clone());
    sec.after_write("certificatesigningrequests", &approved, &objects, false);
    let stored = objects
        .get("certificatesigningrequests", "", "csr-1")
        .unwrap();
    assert!(stored["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
}

fn service_account_setup() -> (Security, MemObjects) {
    let objects = MemObjects::default();
    objects.put(
        "serviceaccounts",
        "ns1",
        json!({"metadata": {"name": "default", "namespace": "ns1", "uid": "sa-1"}}),
    );
    (Security::new().unwrap(), objects)
}

fn request_token(sec: &Security, objects: &MemObjects, audiences: Value) -> String {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences}});
    let resp = sec
        .create_subresource(
            Some(&admin()),
            "serviceaccounts",
            "ns1",
            "default",
            "token",
            body,
            objects,
        )
        .unwrap();
    resp["status"]["token"].as_str().unwrap().to_owned()
}

#[test]
fn service_account_token_authenticates_for_the_api_audience_only() {
    let (sec, objects) = service_account_setup();
    let api = request_token(&sec, &objects, json!(null));
    let user = sec
        .authenticate(None, Some(&bearer(&api)), &objects)
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "system:serviceaccount:ns1:default");
    assert_eq!(user.uid, "sa-1");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ns1",
            AUTHENTICATED
        ]
    );
    let vault = request_token(&sec, &objects, json!(["vault"]));
    assert_eq!(
        sec.authenticate(None, Some(&bearer(&vault)), &objects)
            .unwrap_err()
            .code,
        401
    );
    // Deleting the service account revokes its tokens.
    objects.remove("serviceaccounts", "ns1", "default");
    assert_eq!(
        sec.authenticate(None, Some(&bearer(&api)), &objects)
            .unwrap_err()
            .code,
        401
    );
}

#[test]
fn token_request_needs_the_service_account_and_permission() {
    let (sec, objects) = service_account_setup();
    let err = sec
        .create_subresource(
            Some(&admin()),
            "serviceaccounts",
            "ns1",
            "ghost",
            "token",
            json!({}),
            &objects,
        )
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "serviceaccounts \"ghost\" not found")
    );
    let err = sec
        .create_subresource(
            None,
            "serviceaccounts",
            "ns1",
            "default",
            "token",
            json!({}),
            &objects,
        )
        .unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "serviceaccounts \"default\" is forbidden: User \"system:anonymous\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"ns1\""
    );
    let err = sec
        .create_subresource(
            Some(&admin()),
            "pods",
            "ns1",
            "p",
            "eviction",
            json!({}),
            &objects,
        )
        .unwrap_err();
    assert_eq!(err.code, 405);
}

fn review(
    sec: &Security,
    objects: &MemObjects,
    user: Option<&User>,
    resource: &str,
    body: Value,
) -> Value {
    sec.create_review(user, resource, body, objects).unwrap()
}

#[test]
fn token_review_reports_user_and_audiences() {
    let (sec, objects) = service_account_setup();
    let vault = request_token(&sec, &objects, json!(["vault", "other"]));
    let ok = review(
        &sec,
        &objects,
        Some(&admin()),
        "tokenreviews",
        json!({"spec": {"token": vault, "audiences": ["vault"]}}),
    );
    assert_eq!(ok["kind"], "TokenReview");
    assert_eq!(ok["status"]["authenticated"], true);
    assert_eq!(
        ok["status"]["user"]["username"],
        "system:serviceaccount:ns1:default"
    );
    assert_eq!(ok["status"]["audiences"], json!(["vault"]));
    let wrong_aud = review(
        &sec,
        &objects,
        Some(&admin()),
        "tokenreviews",
        json!({"spec": {"token": vault}}),
    );
    assert_eq!(wrong_aud["status"]["authenticated"], false);
    assert!(wrong_aud["status"]["error"]
        .as_str()
        .unwrap()
        .contains("audiences"));
    let bootstrap = sec.create_bootstrap_token(&objects, None).unwrap();
    let b = review(
        &sec,
        &objects,
        Some(&admin()),
        "tokenreviews",
        json!({"spec": {"token": bootstrap}}),
    );
    assert_eq!(b["status"]["authenticated"], true);
    assert_eq!(b["status"]["audiences"], json!([API_AUDIENCE]));
    let missing = sec.create_review(
        Some(&admin()),
        "tokenreviews",
        json!({"spec": {}}),
        &objects,
    );
    assert_eq!(missing.unwrap_err().code, 422);
    assert_eq!(
        sec.create_review(
            None,
            "tokenreviews",
            json!({"spec": {"token": "x"}}),
            &objects
        )
        .unwrap_err()
        .code,
        403
    );
}

#[test]
fn access_reviews_answer_from_the_rule_table() {
    let sec = Security::new().unwrap();
    let objects = MemObjects::default();
    let sar = |user: &str, groups: Value, attrs: Value| {
        let mut spec = json!({"user": user, "groups": groups});
        let key = if attrs.get("path").is_some() {
            "nonResourceAttributes"
        } else {
            "resourceAttributes"
        };
        spec[key] = attrs;
        review(
            &sec,
            &objects,
            Some(&admin()),
            "subjectaccessreviews",
            json!({"spec": spec}),
        )["status"]["allowed"]
            .as_bool()
            .unwrap()
    };
    let bootstrappers = json!(["system:bootstrappers", AUTHENTICATED]);
    assert!(sar(
        "system:bootstrap:abcdef",
        bootstrappers.clone(),
        json!({"verb": "create", "group": "certificates.k8s.io", "resource": "certificatesigningrequests"})
    ));
    assert!(!sar(
        "system:bootstrap:abcdef",
        bootstrappers,
        json!({"verb": "list", "resource": "pods"})
    ));
    assert!(sar(
        ANONYMOUS,
        json!([]),
        json!({"verb": "get", "path": "/version"})
    ));
    assert!(!sar(
        ANONYMOUS,
        json!([]),
        json!({"verb": "get", "resource": "pods", "namespace": "default"})
    ));
    let empty = sec.create_review(
        Some(&admin()),
        "subjectaccessreviews",
        json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}),
        &objects,
    );
    assert_eq!(empty.unwrap_err().code, 422);

    let sa = super::serviceaccount::service_account_user("ns1", "default", "u");
    let ask = |resource: &str, ns: &str| {
        review(
            &sec,
            &objects,
            Some(&sa),
            "selfsubjectaccessreviews",
            json!({"spec": {"resourceAttributes": {"verb": "list", "resource": resource, "namespace": ns}}}),
        )
    };
    let mine = ask("pods", "ns1");
    assert_eq!(mine["kind"], "SelfSubjectAccessReview");
    assert_eq!(mine["status"]["allowed"], true);
    assert_eq!(ask("pods", "ns2")["status"]["allowed"], false);
    assert_eq!(ask("secrets", "ns1")["status"]["allowed"], false);

    let whoami = review(&sec, &objects, Some(&sa), "selfsubjectreviews", json!({}));
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        "system:serviceaccount:ns1:default"
    );
    assert_eq!(
        sec.create_review(None, "selfsubjectreviews", json!({}), &objects)
            .unwrap_err()
            .code,
        403
    );
}

/// Completes a TLS handshake against `tls_config` and returns the client certificate the
/// server saw (None = anonymous), or the handshake error.
fn handshake(
    sec: &Security,
    client_cert: Option<(String, String)>,
    ca_pem: &str,
) -> Result<Option<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = sec.tls_config();
    let server = std::thread::spawn(move || -> Result<Option<Vec<u8>>, String> {
        let (mut tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        Ok(conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec()))
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut client_config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut conn = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    let client_result = (|| {
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        // TLS 1.3 reports a refused client certificate after the handshake: flush and read.
        conn.complete_io(&mut tcp).map(|_| ())
    })();
    drop(tcp);
    let server_result = server.join().unwrap();
    client_result.map_err(|e| e.to_string())?;
    server_result
}

#[test]
fn tls_accepts_anonymous_and_ca_signed_clients_only() {
    let sec = Security::new().unwrap();
    assert_eq!(handshake(&sec, None, &sec.ca_pem()), Ok(None));
    let node = sec
        .issue_client_cert(
            "system:node:n1",
            &["system:nodes"],
            Duration::from_secs(600),
        )
        .unwrap();
    let seen = handshake(&sec, Some(node), &sec.ca_pem()).unwrap().unwrap();
    let user = sec
        .authenticate(Some(&seen), None, &MemObjects::default())
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "system:node:n1");
    let other = Security::new().unwrap();
    let foreign = other
        .issue_client_cert("mallory", &[], Duration::from_secs(600))
        .unwrap();
    assert!(handshake(&sec, Some(foreign), &sec.ca_pem()).is_err());
    // The serving certificate chains to the CA only.
    assert!(handshake(&sec, None, &other.ca_pem()).is_err());
}

/// A CSR object around `pem` (from openssl) for the kubelet client signer.
fn csr_object(pem: &[u8], usages: Value) -> Value {
    json!({
        "metadata": {"name": "csr-1"},
        "spec": {"request": STANDARD.encode(pem), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                 "usages": usages, "username": "system:bootstrap:abcdef", "groups": ["system:bootstrappers"]},
    })
}

#[test]
fn openssl_made_ecdsa_and_rsa_csrs_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    for (name, key_args) in [
        (
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("rsa", &["-newkey", "rsa:2048"][..]),
    ] {
        let key = dir.path().join(format!("{name}.key"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-nodes",
                "-subj",
                "/O=system:nodes/CN=system:node:n1",
                "-keyout",
            ])
            .arg(&key)
            .args(key_args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sec = Security::new().unwrap();
        let objects = MemObjects::default();
        let csr = csr_object(
            &out.stdout,
            json!(["digital signature", "key encipherment", "client auth"]),
        );
        objects.put("certificatesigningrequests", "", csr.clone());
        sec.after_write("certificatesigningrequests", &csr, &objects, true);
        let stored = objects
            .get("certificatesigningrequests", "", "csr-1")
            .unwrap();
        let cert = stored["status"]["certificate"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {stored}"));
        let pem = String::from_utf8(STANDARD.decode(cert).unwrap()).unwrap();
        let user = sec
            .authenticate(Some(&super::testing::pem_der(&pem)), None, &objects)
            .unwrap()
            .unwrap();
        assert_eq!(user.name, "system:node:n1", "{name}");
        // The issued certificate carries the requester's key: openssl agrees it matches.
        let cert_path = dir.path().join(format!("{name}.crt"));
        std::fs::write(&cert_path, &pem).unwrap();
        let pubkey = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap()
                .stdout
        };
        let from_cert = pubkey(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            cert_path.to_str().unwrap(),
        ]);
        let from_key = pubkey(&["pkey", "-pubout", "-in", key.to_str().unwrap()]);
        assert_eq!(from_cert, from_key, "{name}");
    }
}
