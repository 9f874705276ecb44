//! The API test server against the real `kubectl` (v1.32): get, create, apply, patch, label, delete
//! (graceful pods), `get -w`, selectors, optimistic concurrency, 410 Gone, restart, and `expose` with
//! Services and EndpointSlices printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tests::apiserver::{ApiServer, ApiServerOptions};

/// The server and a scratch dir; kubectl is part of the machine image the tests need, so
/// its absence fails the test rather than skipping it.
fn server() -> Result<(ApiServer, tempfile::TempDir)> {
    let version = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    anyhow::ensure!(
        version.is_ok_and(|o| o.status.success()),
        "kubectl is not installed (the test command installs it)"
    );
    Ok((ApiServer::start()?, tempfile::tempdir()?))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> Result<String> {
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("parsing kubectl JSON output: {text}"))
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: ["sleep", "3600"]
"#;

fn bound_pod(name: &str, node: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "db"}},
           "spec": {"nodeName": node, "terminationGracePeriodSeconds": 15, "containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

#[test]
fn get_lists_reads_by_name_and_prints_json_and_yaml() -> Result<()> {
    let (s, _dir) = server()?;
    let table = s.kubectl(&["get", "namespaces"])?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure!(table.contains(ns), "{ns} missing from:\n{table}");
    }
    let one = parse(&s.kubectl(&["get", "namespace", "kube-system", "-o", "json"])?)?;
    ensure!(
        one["kind"] == "Namespace" && one["status"]["phase"] == "Active",
        "{one}"
    );
    let yaml = s.kubectl(&["get", "ns", "default", "-o", "yaml"])?;
    ensure!(
        yaml.contains("name: default") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let list = parse(&s.kubectl(&["get", "serviceaccounts", "-A", "-o", "json"])?)?;
    ensure!(
        list["items"].as_array().is_some_and(|i| i.len() >= 4),
        "a default ServiceAccount per namespace: {list}"
    );
    s.create("pods", "default", bound_pod("printed", "n1"))?;
    let pods = s.kubectl(&["get", "pods"])?;
    ensure!(
        pods.contains("READY") && pods.contains("0/1") && pods.contains("Pending"),
        "server-side printing:\n{pods}"
    );
    let wide = s.kubectl(&["get", "pods", "-A", "-o", "wide"])?;
    ensure!(wide.contains("NAMESPACE") && wide.contains("n1"), "{wide}");
    let err = s.kubectl(&["get", "pod", "nope"]).expect_err("missing pod");
    ensure!(
        format!("{err:#}").contains("pods \"nope\" not found"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn create_and_apply_twice_configure_the_object() -> Result<()> {
    let (s, dir) = server()?;
    let cm = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  a: \"1\"\n",
    )?;
    ensure!(s
        .kubectl(&["create", "-f", &cm])?
        .contains("configmap/conf created"));
    ensure!(
        s.kubectl(&["create", "-f", &cm]).is_err(),
        "a second create is AlreadyExists"
    );
    let pod = write(&dir, "pod.yaml", POD)?;
    ensure!(s
        .kubectl(&["apply", "-f", &pod])?
        .contains("pod/web created"));
    let changed = write(
        &dir,
        "pod2.yaml",
        &POD.replace("busybox:1.36", "busybox:1.37")
            .replace("{app: web}", "{app: web, tier: fe}"),
    )?;
    ensure!(s
        .kubectl(&["apply", "-f", &changed])?
        .contains("pod/web configured"));
    let stored = s.get("pods", "default", "web").context("pod stored")?;
    ensure!(
        stored["spec"]["containers"][0]["image"] == "busybox:1.37",
        "{stored}"
    );
    ensure!(stored["metadata"]["labels"]["tier"] == "fe", "{stored}");
    ensure!(
        stored["spec"]["containers"].as_array().map(Vec::len) == Some(1),
        "containers merged by name: {stored}"
    );
    ensure!(s.kubectl(&["apply", "-f", &changed])?.contains("unchanged"));
    Ok(())
}

#[test]
fn patch_merge_strategic_and_json() -> Result<()> {
    let (s, _dir) = server()?;
    s.create("pods", "default", bound_pod("p", "n1"))?;
    s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"a":"1"}}}"#,
    ])?;
    let conditions = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"},{"type":"PodScheduled","status":"True"}]}}"#;
    s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--subresource",
        "status",
        "--type",
        "strategic",
        "-p",
        conditions,
    ])?;
    let ready = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
    s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--subresource",
        "status",
        "--type",
        "strategic",
        "-p",
        ready,
    ])?;
    s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#,
    ])?;
    let pod = s.get("pods", "default", "p").context("pod")?;
    ensure!(
        pod["metadata"]["annotations"]["a"] == "1" && pod["metadata"]["labels"]["x"] == "y",
        "{pod}"
    );
    ensure!(pod["status"]["phase"] == "Running", "{pod}");
    ensure!(
        pod["status"]["conditions"]
            == json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]),
        "conditions merge by type: {}",
        pod["status"]["conditions"]
    );
    // The main resource ignores status changes.
    s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ])?;
    ensure!(s
        .get("pods", "default", "p")
        .is_some_and(|p| p["status"]["phase"] == "Running"));
    Ok(())
}

#[test]
fn label_and_selectors_filter_lists() -> Result<()> {
    let (s, _dir) = server()?;
    s.create("pods", "default", bound_pod("a", "n1"))?;
    s.create("pods", "default", bound_pod("b", "n2"))?;
    s.kubectl(&["label", "pod", "a", "tier=front"])?;
    ensure!(
        s.kubectl(&["get", "pods", "-l", "tier=front", "-o", "name"])?
            .trim()
            == "pod/a"
    );
    ensure!(
        s.kubectl(&["get", "pods", "-l", "tier notin (front)", "-o", "name"])?
            .trim()
            == "pod/b"
    );
    ensure!(
        s.kubectl(&["get", "pods", "-l", "app in (db),!tier", "-o", "name"])?
            .trim()
            == "pod/b"
    );
    ensure!(
        s.kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=n2",
            "-o",
            "name"
        ])?
        .trim()
            == "pod/b"
    );
    ensure!(
        s.kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "metadata.name!=b,status.phase=Pending",
            "-o",
            "name"
        ])?
        .trim()
            == "pod/a"
    );
    ensure!(s
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "metadata.namespace=kube-system",
            "-o",
            "name"
        ])?
        .trim()
        .is_empty());
    Ok(())
}

#[test]
fn delete_removes_unbound_pods_and_bound_ones_after_grace_zero() -> Result<()> {
    let (s, dir) = server()?;
    let pod = write(&dir, "pod.yaml", POD)?;
    s.kubectl(&["apply", "-f", &pod])?;
    ensure!(s
        .kubectl(&["delete", "pod", "web", "--timeout=10s"])?
        .contains("deleted"));
    ensure!(s.get("pods", "default", "web").is_none());
    s.create("pods", "default", bound_pod("bound", "n1"))?;
    s.kubectl(&["delete", "pod", "bound", "--wait=false"])?;
    let marked = s
        .get("pods", "default", "bound")
        .context("bound pod stays until its node confirms")?;
    ensure!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    ensure!(
        marked["metadata"]["deletionGracePeriodSeconds"] == 15,
        "{marked}"
    );
    // A waiting delete returns once the node's agent deletes with grace 0 (here: kubectl --force).
    let waiter = {
        let kubeconfig = s.admin_kubeconfig();
        std::thread::spawn(move || {
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["wait", "--for=delete", "pod/bound", "--timeout=20s"])
                .output()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    s.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"])?;
    let out = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("waiter panicked"))??;
    ensure!(
        out.status.success(),
        "kubectl wait --for=delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(s.get("pods", "default", "bound").is_none());
    Ok(())
}

#[test]
fn get_watch_sees_a_later_change() -> Result<()> {
    let (s, _dir) = server()?;
    s.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "w"}, "data": {"v": "1"}}),
    )?;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.admin_kubeconfig())
        .args([
            "get",
            "configmaps",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,V:.data.v",
            "--no-headers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("kubectl stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10));
    s.kubectl(&[
        "patch",
        "configmap",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ])?;
    let second = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let norm = |l: Result<String, mpsc::RecvTimeoutError>| {
        l.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    ensure!(norm(first) == Ok("w 1".into()), "initial list line");
    ensure!(
        norm(second) == Ok("w 2".into()),
        "watch line after the patch"
    );
    Ok(())
}

#[test]
fn stale_resource_version_put_conflicts() -> Result<()> {
    let (s, dir) = server()?;
    let old = s.create(
        "configmaps",
        "default",
        json!({"metadata": {"name": "c"}, "data": {"v": "1"}}),
    )?;
    s.kubectl(&[
        "patch",
        "configmap",
        "c",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ])?;
    let mut stale = old.clone();
    stale["data"]["v"] = json!("3");
    let file = write(&dir, "stale.json", &stale.to_string())?;
    let err = s
        .kubectl(&["replace", "-f", &file])
        .expect_err("stale replace");
    ensure!(
        format!("{err:#}").contains("the object has been modified"),
        "{err:#}"
    );
    let mut current = s.get("configmaps", "default", "c").context("cm")?;
    current["data"]["v"] = json!("4");
    let file = write(&dir, "fresh.json", &current.to_string())?;
    s.kubectl(&["replace", "-f", &file])?;
    ensure!(s
        .get("configmaps", "default", "c")
        .is_some_and(|c| c["data"]["v"] == "4"));
    Ok(())
}

#[test]
fn watch_from_an_expired_resource_version_is_gone() -> Result<()> {
    server()?;
    let s = ApiServer::start_with(ApiServerOptions {
        watch_history: 3,
        ..ApiServerOptions::default()
    })?;
    let first = s.create("configmaps", "default", json!({"metadata": {"name": "c0"}}))?;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .context("rv")?
        .to_string();
    for i in 1..6 {
        s.create(
            "configmaps",
            "default",
            json!({"metadata": {"name": format!("c{i}")}}),
        )?;
    }
    let out = s.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
    ])?;
    let event = parse(out.lines().next().unwrap_or_default())?;
    ensure!(
        event["type"] == "ERROR" && event["object"]["code"] == 410,
        "{out}"
    );
    let recent = s.get("configmaps", "default", "c4").context("c4")?;
    let rv = recent["metadata"]["resourceVersion"]
        .as_str()
        .context("rv")?;
    let out = s.kubectl(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        ),
    ])?;
    let event = parse(out.lines().next().unwrap_or_default())?;
    ensure!(
        event["type"] == "ADDED" && event["object"]["metadata"]["name"] == "c5",
        "{out}"
    );
    Ok(())
}

#[test]
fn watch_bookmarks_arrive_with_the_current_resource_version() -> Result<()> {
    let (s, _dir) = server()?;
    let cm = s.create("configmaps", "default", json!({"metadata": {"name": "b"}}))?;
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .context("rv")?
        .to_string();
    s.create("secrets", "default", json!({"metadata": {"name": "other"}}))?;
    let out = s.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=7")])?;
    let event = parse(out.lines().next().unwrap_or_default())?;
    ensure!(event["type"] == "BOOKMARK", "{out}");
    let bookmark_rv: u64 = event["object"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(
        bookmark_rv > rv.parse::<u64>()?,
        "the bookmark moves past unrelated changes: {out}"
    );
    Ok(())
}

#[test]
fn restart_keeps_the_data_and_the_port() -> Result<()> {
    let (mut s, _dir) = server()?;
    s.kubectl(&["create", "namespace", "keep"])?;
    let url = s.url();
    s.stop();
    ensure!(
        s.kubectl(&["get", "ns", "keep", "--request-timeout=2s"])
            .is_err(),
        "stopped server answers nothing"
    );
    s.restart()?;
    ensure!(s.url() == url);
    ensure!(s.kubectl(&["get", "ns", "keep", "-o", "name"])?.trim() == "namespace/keep");
    let mark = s.request_count();
    s.kubectl(&["get", "ns", "keep"])?;
    let seen = s.requests_since(mark);
    ensure!(
        seen.iter().any(|r| r.verb == "get"
            && r.path == "/api/v1/namespaces/keep"
            && r.user == "kubernetes-admin"),
        "{seen:?}"
    );
    Ok(())
}

#[test]
fn typed_commands_with_protobuf_bodies_work() -> Result<()> {
    let (s, dir) = server()?;
    s.kubectl(&["create", "configmap", "lit", "--from-literal=k=v"])?;
    ensure!(s
        .get("configmaps", "default", "lit")
        .is_some_and(|c| c["data"]["k"] == "v"));
    s.kubectl(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=p=hunter2",
    ])?;
    ensure!(s
        .get("secrets", "default", "pw")
        .is_some_and(|c| c["data"]["p"] == "aHVudGVyMg=="));
    s.kubectl(&["create", "serviceaccount", "robot"])?;
    // `certificate approve` PUTs the CSR's /approval as protobuf; the test signer then issues it.
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    let request = params.serialize_request(&key)?.pem()?;
    use base64::Engine;
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "alice"},
                     "spec": {"request": base64::engine::general_purpose::STANDARD.encode(request),
                              "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}});
    let file = write(&dir, "csr.json", &csr.to_string())?;
    s.kubectl(&["create", "-f", &file])?;
    ensure!(s.kubectl(&["get", "csr", "alice"])?.contains("Pending"));
    s.kubectl(&["certificate", "approve", "alice"])?;
    let approved = s
        .get("certificatesigningrequests", "", "alice")
        .context("csr")?;
    ensure!(
        approved["status"]["conditions"][0]["type"] == "Approved",
        "{approved}"
    );
    ensure!(
        approved["status"]["certificate"].is_string(),
        "signed after approval: {approved}"
    );
    ensure!(s
        .kubectl(&["get", "csr", "alice"])?
        .contains("Approved,Issued"));
    ensure!(s.get("serviceaccounts", "default", "robot").is_some());
    let token = s.kubectl(&["create", "token", "default", "--duration=10m"])?;
    ensure!(token.trim().split('.').count() == 3, "a JWT: {token}");
    ensure!(s.kubectl(&["auth", "can-i", "delete", "nodes"])?.trim() == "yes");
    Ok(())
}

#[test]
fn exposed_services_get_cluster_ips_and_endpoint_slices() -> Result<()> {
    let (s, dir) = server()?;
    let pod = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:1.36",
                 "ports": [{"name": "http", "containerPort": 8080}]}]}});
    s.create("pods", "default", pod)?;
    // What the agent reports once the pod runs and passes its readiness checks.
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}],
                                   "conditions": [{"type": "Ready", "status": "True"}]}});
    s.kubectl(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    ensure!(s
        .kubectl(&["expose", "pod", "web", "--port=80", "--target-port=http"])?
        .contains("service/web exposed"));
    // `kubectl create service` sends a protobuf Service, which the server does not decode: a manifest instead.
    let db = write(
        &dir,
        "db.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  selector: {app: db}\n  ports:\n  - port: 5432\n",
    )?;
    ensure!(s
        .kubectl(&["create", "-f", &db])?
        .contains("service/db created"));
    let services = s.kubectl(&["get", "svc"])?;
    ensure!(
        services.contains("CLUSTER-IP")
            && services.contains("80/TCP")
            && services.contains("5432/TCP"),
        "{services}"
    );
    for name in ["web", "db"] {
        let ip = s
            .get("services", "default", name)
            .and_then(|svc| svc["spec"]["clusterIP"].as_str().map(str::to_string))
            .context("a cluster IP")?;
        ensure!(ip.starts_with("10.96."), "{name}: {ip}");
        ensure!(services.contains(&ip), "{ip} in:\n{services}");
    }
    // The controller reconciles within milliseconds; allow for a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let listed = s.kubectl(&["get", "svc,endpointslices"])?;
        if listed.contains("10.244.0.7") || std::time::Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        listed.contains("service/web")
            && listed.contains("endpointslice.discovery.k8s.io/web-")
            && listed.contains("ADDRESSTYPE")
            && listed.contains("8080")
            && listed.contains("10.244.0.7"),
        "{listed}"
    );
    let slices = parse(&s.kubectl(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=db",
        "-o",
        "json",
    ])?)?;
    ensure!(
        slices["items"].as_array().map(Vec::len) == Some(1)
            && slices["items"][0]["endpoints"] == json!([]),
        "db selects no pods: one empty slice: {slices}"
    );
    Ok(())
}
