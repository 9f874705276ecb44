//! End-to-end: `capstan join` against the API test server: kubeadm-style discovery with a
//! bootstrap token and CA pin, the TLS bootstrap CSR, and the kubeconfig it writes
//! authenticating as the node; a wrong token, wrong hash, expired token, denied CSR or
//! unreachable server each fail with a clear message and write nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tests::apiserver::{ApiServer, ApiServerOptions};
use tests::binaries::capstan_bin;

/// `capstan join` with `--kubeconfig` and `--pki-dir` under `dir`.
fn join_command(dir: &Path, server: &str, token: &str, hash: &str, node: &str) -> Result<Command> {
    let mut cmd = Command::new(capstan_bin()?);
    cmd.args(["join", "--server", server, "--token", token])
        .args(["--discovery-token-ca-cert-hash", hash, "--node-name", node])
        .arg("--kubeconfig")
        .arg(dir.join("etc/kubeconfig"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .args(["--approval-timeout-seconds", "30"])
        .stdin(Stdio::null());
    Ok(cmd)
}

fn run(mut cmd: Command) -> Result<Output> {
    cmd.output().context("running capstan join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The run failed, its error says `expected`, and `dir` is still empty.
fn assert_failed_cleanly(out: &Output, dir: &Path, expected: &str) -> Result<()> {
    let stderr = text(&out.stderr);
    ensure!(
        !out.status.success(),
        "join succeeded: {}",
        text(&out.stdout)
    );
    ensure!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    ensure!(left.is_empty(), "a failed join left {left:?}");
    Ok(())
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
    Ok(text(&out.stdout))
}

/// Kills the child if the test fails before it exits.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn join_writes_a_kubeconfig_that_authenticates_as_the_node() -> Result<()> {
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(None)?;
    let dir = tempfile::tempdir()?;
    let out = run(join_command(
        dir.path(),
        &server.url(),
        &token,
        &server.ca_cert_hash(),
        "worker-a",
    )?)?;
    let stdout = text(&out.stdout);
    ensure!(
        out.status.success(),
        "join failed: {}{}",
        stdout,
        text(&out.stderr)
    );
    let kubeconfig = dir.path().join("etc/kubeconfig");
    let current = dir.path().join("pki/kubelet-client-current.pem");
    ensure!(stdout.contains("system:node:worker-a"), "{stdout}");
    ensure!(
        stdout.contains(&kubeconfig.display().to_string()),
        "{stdout}"
    );
    ensure!(stdout.contains(&current.display().to_string()), "{stdout}");
    ensure!(mode(&kubeconfig)? == 0o600, "kubeconfig mode");
    ensure!(mode(&current)? == 0o600, "certificate file mode");
    ensure!(
        !text(&std::fs::read(&kubeconfig)?).contains(&token),
        "the token leaked into the kubeconfig"
    );

    // The node registers itself with the kubeconfig; the server saw the node's user.
    let node = dir.path().join("node.json");
    std::fs::write(
        &node,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"worker-a"}}"#,
    )?;
    let mark = server.request_count();
    kubectl_with(&kubeconfig, &["create", "-f", &node.display().to_string()])?;
    ensure!(
        server.get("nodes", "", "worker-a").is_some(),
        "the node was not created"
    );
    let users: Vec<String> = server
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v1/nodes"))
        .map(|r| r.user)
        .collect();
    ensure!(
        !users.is_empty() && users.iter().all(|u| u == "system:node:worker-a"),
        "node requests were made as {users:?}"
    );

    // The CSR is the kubelet's: the kubelet client signer, approved, for this node.
    let csrs: Value = serde_json::from_str(&server.kubectl(&["get", "csr", "-o", "json"])?)?;
    let csr = csrs["items"]
        .as_array()
        .and_then(|items| items.first())
        .context("no CSR")?;
    ensure!(
        csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet",
        "{csr}"
    );
    ensure!(
        csr["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("node-csr-")),
        "{csr}"
    );

    // Joining again would replace the node's identity: refused.
    let again = run(join_command(
        dir.path(),
        &server.url(),
        &token,
        &server.ca_cert_hash(),
        "worker-a",
    )?)?;
    ensure!(
        !again.status.success() && text(&again.stderr).contains("already joined"),
        "{}",
        text(&again.stderr)
    );
    Ok(())
}

#[test]
fn wrong_token_secret_or_id_fails_and_writes_nothing() -> Result<()> {
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(None)?;
    let (id, secret) = token.split_once('.').context("token form")?;
    let flipped: String = secret
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    let dir = tempfile::tempdir()?;
    let wrong_secret = format!("{id}.{flipped}");
    let out = run(join_command(
        dir.path(),
        &server.url(),
        &wrong_secret,
        &server.ca_cert_hash(),
        "n",
    )?)?;
    assert_failed_cleanly(&out, dir.path(), "the token secret is wrong")?;
    ensure!(
        !text(&out.stderr).contains(&flipped),
        "the secret was printed"
    );

    let out = run(join_command(
        dir.path(),
        &server.url(),
        "zzzzzz.0123456789abcdef",
        &server.ca_cert_hash(),
        "n",
    )?)?;
    assert_failed_cleanly(
        &out,
        dir.path(),
        "\"zzzzzz\" is invalid for this cluster or it has expired",
    )
}

#[test]
fn wrong_ca_hash_fails_naming_the_actual_hash() -> Result<()> {
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(None)?;
    let dir = tempfile::tempdir()?;
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = run(join_command(
        dir.path(),
        &server.url(),
        &token,
        &wrong,
        "n",
    )?)?;
    assert_failed_cleanly(&out, dir.path(), &server.ca_cert_hash())?;
    ensure!(
        text(&out.stderr).contains("not pinned"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn expired_token_fails_and_writes_nothing() -> Result<()> {
    let server = ApiServer::start()?;
    let token = server.create_bootstrap_token(Some(Duration::from_secs(1)))?;
    std::thread::sleep(Duration::from_millis(2500));
    let dir = tempfile::tempdir()?;
    let out = run(join_command(
        dir.path(),
        &server.url(),
        &token,
        &server.ca_cert_hash(),
        "n",
    )?)?;
    // The signature of an expired token is gone from cluster-info, or the API refuses it.
    assert_failed_cleanly(&out, dir.path(), "expired")
}

/// Deny a CSR through its approval subresource, as `kubectl certificate deny` does.
fn deny(server: &ApiServer, scratch: &Path, name: &str) -> Result<()> {
    let mut csr: Value =
        serde_json::from_str(&server.kubectl(&["get", "csr", name, "-o", "json"])?)?;
    csr["status"]["conditions"] = serde_json::json!([{
        "type": "Denied",
        "status": "True",
        "reason": "KubectlDeny",
        "message": "This CSR was denied by the test",
    }]);
    // Outside `dir`, which must stay empty.
    let file = scratch.with_extension("deny.json");
    std::fs::write(&file, csr.to_string())?;
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval");
    let result = server.kubectl(&["replace", "--raw", &path, "-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    result.map(|_| ())
}

#[test]
fn denied_csr_fails_and_writes_nothing() -> Result<()> {
    let server = ApiServer::start_with(ApiServerOptions {
        auto_approve_node_csrs: false,
        ..ApiServerOptions::default()
    })?;
    let token = server.create_bootstrap_token(None)?;
    let dir = tempfile::tempdir()?;
    let mut cmd = join_command(
        dir.path(),
        &server.url(),
        &token,
        &server.ca_cert_hash(),
        "n",
    )?;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning capstan join")?;
    let mut child = Running(Some(child));
    let start = Instant::now();
    let name = loop {
        let names = server.kubectl(&["get", "csr", "-o", "jsonpath={.items[*].metadata.name}"])?;
        if let Some(name) = names.split_whitespace().next() {
            break name.to_owned();
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "no CSR was submitted"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    deny(&server, dir.path(), &name)?;
    let out = child.0.take().context("child")?.wait_with_output()?;
    assert_failed_cleanly(
        &out,
        dir.path(),
        &format!("certificate signing request {name} was denied"),
    )
}

#[test]
fn unreachable_server_fails_clearly() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let hash = format!("sha256:{}", "0".repeat(64));
    let out = run(join_command(
        dir.path(),
        &format!("https://127.0.0.1:{port}"),
        "abcdef.0123456789abcdef",
        &hash,
        "n",
    )?)?;
    assert_failed_cleanly(&out, dir.path(), "cannot reach the API server")
}
