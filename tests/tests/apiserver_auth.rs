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

/// A JSON client trusting the cluster CA, with the admin's client certificate from the admin
/// kubeconfig when `admin`. (kubectl's typed commands — `create token`, `certificate approve`,
/// `auth can-i` — send protobuf, which the test server does not read; the kubelet's client
/// speaks JSON like this one.)
fn json_client(server: &ApiServer, admin: bool) -> Result<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server.ca_pem().as_bytes())?])
        .timeout(Duration::from_secs(20));
    if admin {
        let kubeconfig: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(server.admin_kubeconfig())?)?;
        let user = &kubeconfig["users"][0]["user"];
        let decode = |key: &str| -> Result<Vec<u8>> {
            let text = user[key]
                .as_str()
                .with_context(|| format!("admin kubeconfig has no {key}"))?;
            Ok(STANDARD.decode(text)?)
        };
        let mut identity = decode("client-certificate-data")?;
        identity.extend(decode("client-key-data")?);
        builder = builder.identity(reqwest::Identity::from_pem(&identity)?);
    }
    Ok(builder.build()?)
}

/// `method` `path` with a JSON body, as the admin or with `token`: (status, body).
fn send(
    server: &ApiServer,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let mut request = json_client(server, token.is_none())?
        .request(method, format!("{}{path}", server.url()))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send()?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().unwrap_or(Value::Null)))
}

/// A TokenRequest for service account `team/<name>` as the admin: (status, body).
fn request_token(server: &ApiServer, name: &str, spec: Value) -> Result<(u16, Value)> {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let path = format!("/api/v1/namespaces/team/serviceaccounts/{name}/token");
    send(server, None, reqwest::Method::POST, &path, &body)
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
    kubectl_as(
        &server,
        dir.path(),
        &creds,
        &["create", "--validate=false", "-f", &file],
    )?;
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

    // The admin approves through the approval subresource; the signer issues.
    let mut approved = server
        .get("certificatesigningrequests", "", "node-csr-bootstrap")
        .context("CSR vanished")?;
    approved["status"]["conditions"] = json!([{"type": "Approved", "status": "True",
        "reason": "KubectlApprove", "message": "approved by the test"}]);
    let path =
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/node-csr-bootstrap/approval";
    let (status, body) = send(&server, None, reqwest::Method::PUT, path, &approved)?;
    assert_eq!(status, 200, "{body}");
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
        &["create", "--validate=false", "-f", &file],
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
fn service_account_tokens_from_token_requests() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ApiServer::start()?;
    server.create("namespaces", "", json!({"metadata": {"name": "team"}}))?;
    server.create(
        "serviceaccounts",
        "team",
        json!({"metadata": {"name": "builder"}}),
    )?;
    let (status, resp) = request_token(&server, "builder", json!({"expirationSeconds": 600}))?;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["kind"], "TokenRequest");
    let token = resp["status"]["token"]
        .as_str()
        .context("no status.token")?;

    let sa = Creds::Token(token);
    kubectl_as(&server, dir.path(), &sa, &["get", "pods", "-n", "team"])?;
    for args in [
        &["get", "secrets", "-n", "team"][..],
        &["get", "pods", "-n", "default"][..],
    ] {
        let err = kubectl_as(&server, dir.path(), &sa, args).unwrap_err();
        assert!(
            format!("{err}").to_lowercase().contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "team"}}});
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (status, review) = send(&server, Some(token), reqwest::Method::POST, path, &ssar)?;
    assert_eq!(
        (status, &review["status"]["allowed"]),
        (201, &json!(true)),
        "{review}"
    );

    // TokenReview by the admin: who the token is, and for which audiences.
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (status, review) = send(&server, None, reqwest::Method::POST, path, &tr)?;
    assert_eq!(status, 201, "{review}");
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:team:builder"
    );

    // A token for another audience is not good for the API server.
    let (_, vault) = request_token(&server, "builder", json!({"audiences": ["vault"]}))?;
    let vault = vault["status"]["token"]
        .as_str()
        .context("no vault token")?;
    let err = kubectl_as(
        &server,
        dir.path(),
        &Creds::Token(vault),
        &["get", "pods", "-n", "team"],
    )
    .unwrap_err();
    assert!(format!("{err}").contains("Unauthorized"), "{err}");

    let (status, body) = request_token(&server, "nobody", json!({}))?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = request_token(&server, "builder", json!({"expirationSeconds": 60}))?;
    assert_eq!(status, 422, "{body}");
    Ok(())
}
