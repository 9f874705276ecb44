//! The API test server's security seen by the real `kubectl`: bootstrap tokens, anonymous
//! discovery of cluster-info, node certificates from approved CSRs, service-account tokens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use tests::apiserver::{ApiServer, ApiServerOptions};

/// Credentials for a non-admin kubectl.
enum Creds<'a> {
    Token(&'a str),
    Cert { cert: &'a Path, key: &'a Path },
}

/// Runs kubectl against `server` as `creds` (no kubeconfig file); Err carries stderr.
fn kubectl_as(server: &ApiServer, dir: &Path, creds: &Creds<'_>, args: &[&str]) -> Result<String> {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, server.ca_pem())?;
    let empty = dir.join("empty-kubeconfig");
    std::fs::write(&empty, "")?;
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&empty)
        .args(["--server", &server.url(), "--request-timeout", "20s"])
        .arg("--certificate-authority")
        .arg(&ca);
    match creds {
        Creds::Token(token) => {
            cmd.args(["--token", token]);
        }
        Creds::Cert { cert, key } => {
            cmd.arg("--client-certificate")
                .arg(cert)
                .arg("--client-key")
                .arg(key);
        }
    }
    // CAPSTAN_KUBECTL_V=8 shows the HTTP exchanges when a test fails.
    if let Ok(level) = std::env::var("CAPSTAN_KUBECTL_V") {
        cmd.arg(format!("-v={level}"));
    }
    let out = cmd.args(args).output().context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kubelet-style CSR manifest for `node` and the PEM private key it was made with.
fn node_csr(name: &str, node: &str) -> Result<(Value, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let pem = params.serialize_request(&key)?.pem()?;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "expirationSeconds": 3600,
        },
    });
    Ok((csr, key.serialize_pem()))
}

fn write_json(dir: &Path, name: &str, value: &Value) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value)?)?;
    Ok(path.display().to_string())
}

/// Polls the store until the CSR has a certificate; returns it (PEM).
fn wait_for_certificate(server: &ApiServer, name: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let csr = server.get("certificatesigningrequests", "", name);
        if let Some(cert) = csr
            .as_ref()
            .and_then(|c| c.pointer("/status/certificate"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            return Ok(String::from_utf8(STANDARD.decode(cert)?)?);
        }
        if Instant::now() > deadline {
            bail!("CSR {name} got no certificate: {csr:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bootstrap_token_can_create_a_csr_but_not_list_pods() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ApiServer::start_with(ApiServerOptions {
        auto_approve_node_csrs: false,
        ..ApiServerOptions::default()
    })?;
    let token = server.create_bootstrap_token(Some(Duration::from_secs(3600)))?;
    let creds = Creds::Token(&token);
    let (csr, _) = node_csr("node-csr-bootstrap", "n1")?;
    let file = write_json(dir.path(), "csr.json", &csr)?;
    kubectl_as(&server, dir.path(), &creds, &["create", "-f", &file])?;
    let got = kubectl_as(
        &server,
        dir.path(),
        &creds,
        &["get", "csr", "node-csr-bootstrap", "-o", "json"],
    )?;
    let got: Value = serde_json::from_str(&got)?;
    // The server records who asked, which the approver relies on.
    assert_eq!(
        got["spec"]["username"],
        format!("system:bootstrap:{}", &token[..6])
    );
    assert!(
        got.pointer("/status/certificate").is_none(),
        "approval is off: {got}"
    );

    let err = kubectl_as(&server, dir.path(), &creds, &["get", "pods", "-A"]).unwrap_err();
    assert!(
        format!("{err}").contains("Forbidden") || format!("{err}").contains("forbidden"),
        "{err}"
    );
    let err = kubectl_as(
        &server,
        dir.path(),
        &creds,
        &["certificate", "approve", "node-csr-bootstrap"],
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").to_lowercase().contains("forbidden"),
        "{err}"
    );

    // A wrong secret for the same id is 401.
    let wrong = format!("{}.0000000000000000", &token[..6]);
    let err = kubectl_as(&server, dir.path(), &Creds::Token(&wrong), &["get", "csr"]).unwrap_err();
    assert!(format!("{err}").contains("Unauthorized"), "{err}");

    // The admin approves; the signer issues.
    server.kubectl(&["certificate", "approve", "node-csr-bootstrap"])?;
    wait_for_certificate(&server, "node-csr-bootstrap")?;
    Ok(())
}

/// GET `path` without credentials, as `kubeadm join` discovery does: (status, body).
fn anonymous_get(server: &ApiServer, path: &str) -> Result<(u16, Value)> {
    let client = tests::http::client(Some(server.ca_pem().as_bytes()))?;
    let resp = client.get(format!("{}{path}", server.url())).send()?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().unwrap_or(Value::Null)))
}

#[test]
fn anonymous_reads_cluster_info_only() -> Result<()> {
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(None)?;
    let (id, _) = token.split_once('.').context("token has no dot")?;
    let (status, cm) = anonymous_get(
        &server,
        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
    )?;
    assert_eq!(status, 200, "{cm}");
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["kubeconfig"].as_str().context("no kubeconfig")?)?;
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"].as_str(),
        Some(server.url().as_str())
    );
    let jws = cm["data"][format!("jws-kubeconfig-{id}")]
        .as_str()
        .context("no JWS for the token")?;
    let (header, signature) = jws.split_once("..").context("JWS is not detached")?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    assert_eq!(header, json!({"alg": "HS256", "kid": id}));
    assert_eq!(URL_SAFE_NO_PAD.decode(signature)?.len(), 32);

    assert_eq!(anonymous_get(&server, "/version")?.0, 200);
    for path in [
        "/api/v1/pods",
        "/api/v1/namespaces/kube-public/configmaps",
        "/api/v1/namespaces/kube-public/configmaps/other",
        "/api/v1/namespaces/kube-system/secrets",
    ] {
        let (status, body) = anonymous_get(&server, path)?;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["reason"], "Forbidden", "{path}");
    }
    Ok(())
}

#[test]
fn certificate_from_an_approved_csr_authenticates_as_the_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(Some(Duration::from_secs(600)))?;
    let (csr, key) = node_csr("node-csr-auto", "worker-7")?;
    let file = write_json(dir.path(), "csr.json", &csr)?;
    kubectl_as(
        &server,
        dir.path(),
        &Creds::Token(&token),
        &["create", "-f", &file],
    )?;
    let cert = wait_for_certificate(&server, "node-csr-auto")?;
    let stored = server
        .get("certificatesigningrequests", "", "node-csr-auto")
        .context("CSR vanished")?;
    assert_eq!(stored["status"]["conditions"][0]["reason"], "AutoApproved");

    let (cert_path, key_path) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let node = Creds::Cert {
        cert: &cert_path,
        key: &key_path,
    };
    let mark = server.request_count();
    kubectl_as(&server, dir.path(), &node, &["get", "pods", "-A"])?;
    let requests = server.requests_since(mark);
    let list = requests
        .iter()
        .find(|r| r.verb == "list" && r.path == "/api/v1/pods")
        .with_context(|| format!("no pod list among {} requests", requests.len()))?;
    assert_eq!(list.user, "system:node:worker-7");
    Ok(())
}

#[test]
fn service_account_tokens_from_kubectl_create_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ApiServer::start()?;
    server.kubectl(&["create", "namespace", "team"])?;
    server.kubectl(&["create", "serviceaccount", "builder", "-n", "team"])?;
    let token = server.kubectl(&[
        "create",
        "token",
        "builder",
        "-n",
        "team",
        "--duration",
        "10m",
    ])?;
    let sa = Creds::Token(token.trim());
    kubectl_as(&server, dir.path(), &sa, &["get", "pods", "-n", "team"])?;
    let err = kubectl_as(&server, dir.path(), &sa, &["get", "secrets", "-n", "team"]).unwrap_err();
    assert!(
        format!("{err}").to_lowercase().contains("forbidden"),
        "{err}"
    );
    let err = kubectl_as(&server, dir.path(), &sa, &["get", "pods", "-n", "default"]).unwrap_err();
    assert!(
        format!("{err}").to_lowercase().contains("forbidden"),
        "{err}"
    );
    let can = kubectl_as(
        &server,
        dir.path(),
        &sa,
        &["auth", "can-i", "list", "pods", "-n", "team"],
    )?;
    assert_eq!(can.trim(), "yes");

    // A token for another audience is not good for the API server.
    let vault = server.kubectl(&[
        "create",
        "token",
        "builder",
        "-n",
        "team",
        "--audience",
        "vault",
    ])?;
    let err = kubectl_as(
        &server,
        dir.path(),
        &Creds::Token(vault.trim()),
        &["get", "pods", "-n", "team"],
    )
    .unwrap_err();
    assert!(format!("{err}").contains("Unauthorized"), "{err}");

    let err = server
        .kubectl(&["create", "token", "nobody", "-n", "team"])
        .unwrap_err();
    assert!(format!("{err}").contains("not found"), "{err}");
    Ok(())
}
