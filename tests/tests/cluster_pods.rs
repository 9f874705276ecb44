//! End-to-end in cluster mode: `capstan join` with a bootstrap token against the API test
//! server, then `capstan agent` registers a Ready Node, runs pods created with the real
//! `kubectl` (readiness probe, IP reachable from the host, configMap and secret volumes),
//! keeps mounted configMaps current, runs preStop on deletion and removes the pod from the
//! API, rejects pods that do not fit, mirrors static pods, and rides out an API outage.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tests::agent::{condition, container_status, http_get, manifest, Agent, Runtime};
use tests::apiserver::ApiServer;
use tests::cluster::{apply, exec, node_ready, wait_object, wait_pod};
use tests::image::{catalog, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: default}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret, namespace: default}
type: Opaque
data: {password: czNjcmV0}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 5
  containers:
  - name: web
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c]
    args:
    - mkdir -p /www && cat /etc/config/greeting > /www/index.html && exec httpd -f -p 8080 -h /www
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "echo stopped-by-prestop > /stop/prestop"]}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret}
    - {name: stop, mountPath: /stop}
  volumes:
  - name: config
    configMap: {name: web-config}
  - name: secret
    secret: {secretName: web-secret}
  - name: stop
    hostPath: {path: STOPDIR, type: DirectoryOrCreate}
"#;

const TOO_BIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: too-big, namespace: default}
spec:
  nodeName: NODE
  containers:
  - name: c
    image: IMAGE
    command: [sleep, "3600"]
    resources:
      requests: {cpu: "500"}
"#;

const STATIC: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: static-web, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

const SLEEPER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: steady, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
      periodSeconds: 1
"#;

const PRIVATE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: private, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{name: regcred}]
  containers:
  - name: app
    image: PRIVATE_REF
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn restart_count(pod: &Value, container: &str) -> u64 {
    container_status(pod, container)
        .and_then(|s| s["restartCount"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn joined_node_runs_api_pods_with_volumes_and_deletes_them_gracefully() -> Result<()> {
    api_pod_lifecycle(Runtime::Builtin)
}

#[test]
fn joined_node_on_containerd_runs_api_pods_the_same_way() -> Result<()> {
    api_pod_lifecycle(Runtime::Containerd)
}

fn api_pod_lifecycle(runtime: Runtime) -> Result<()> {
    let server = ApiServer::start()?;
    let agent = Agent::join(runtime, &server, &[])?;
    let node = node_ready(&server, &agent)?;
    let labels = &node["metadata"]["labels"];
    ensure!(
        labels["kubernetes.io/hostname"] == agent.node_name(),
        "{labels}"
    );
    ensure!(
        server
            .kubectl(&["get", "nodes"])?
            .contains(agent.node_name()),
        "kubectl does not list the node"
    );
    let lease = server.get("leases", "kube-node-lease", agent.node_name());
    ensure!(lease.is_some(), "no node lease");

    let stop_dir = tempfile::tempdir()?;
    let stop_path = stop_dir.path().join("hooks");
    apply(
        &server,
        &agent,
        WEB,
        &[("STOPDIR", &stop_path.to_string_lossy())],
    )?;
    let pod = wait_pod(&server, &agent, "web", "Running and Ready", |p| {
        phase(p) == "Running" && condition(p, "Ready") == Some("True")
    })?;
    let ip = pod["status"]["podIP"].as_str().context("podIP")?.to_owned();
    let body = http_get(&ip, 8080, "/index.html")?;
    ensure!(body.contains("hello"), "pod answered {body}");

    // The kubelet's events reach the API, about the pod and its container.
    let events: Value = serde_json::from_str(&server.kubectl(&["get", "events", "-o", "json"])?)?;
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == "web")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for reason in ["Pulled", "Created", "Started"] {
        ensure!(reasons.contains(&reason), "no {reason} event: {reasons:?}");
    }

    // Secret volumes live on tmpfs, never on disk.
    let uid = pod["metadata"]["uid"].as_str().context("uid")?;
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let secret_mount = mounts.lines().find(|l| {
        l.contains(uid) && l.contains("web-secret") || l.contains(uid) && l.contains("/secret")
    });
    let secret_mount = secret_mount.context("no mount for the secret volume")?;
    ensure!(
        secret_mount.split_whitespace().nth(2) == Some("tmpfs"),
        "{secret_mount}"
    );
    ensure!(exec(&agent, "web", &["cat", "/etc/secret/password"])? == "s3cret");

    // A configMap change reaches the mounted file.
    server.kubectl(&[
        "patch",
        "configmap",
        "web-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"greeting":"changed"}}"#,
    ])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = exec(&agent, "web", &["cat", "/etc/config/greeting"])?;
        if seen == "changed" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "configMap update not seen; file says {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A pod that does not fit is Failed with the kubelet's reason.
    apply(&server, &agent, TOO_BIG, &[])?;
    let big = wait_pod(&server, &agent, "too-big", "Failed", |p| {
        phase(p) == "Failed"
    })?;
    ensure!(big["status"]["reason"] == "OutOfcpu", "{}", big["status"]);

    // Deletion: preStop runs, then the agent removes the pod from the API.
    server.kubectl(&["delete", "pod", "web", "--wait=false"])?;
    wait_object(
        &server,
        &agent,
        ("pods", "default", "web"),
        Duration::from_secs(30),
        "deleted",
        |pod| pod.is_none(),
    )?;
    let hook = std::fs::read_to_string(stop_path.join("prestop")).unwrap_or_default();
    ensure!(
        hook.trim() == "stopped-by-prestop",
        "preStop did not run: {hook:?}"
    );
    Ok(())
}

#[test]
fn static_pods_get_mirror_pods_in_the_api() -> Result<()> {
    let server = ApiServer::start()?;
    let agent = Agent::join(Runtime::Builtin, &server, &[])?;
    node_ready(&server, &agent)?;
    agent.write_manifest("static.yaml", &manifest(STATIC, agent.images.busybox()))?;
    let name = format!("static-web-{}", agent.node_name());
    let mirror = wait_pod(&server, &agent, &name, "Running", |p| phase(p) == "Running")?;
    let annotations = &mirror["metadata"]["annotations"];
    ensure!(
        annotations["kubernetes.io/config.mirror"].is_string(),
        "{annotations}"
    );
    ensure!(mirror["metadata"]["ownerReferences"][0]["kind"] == "Node");
    agent.remove_manifest("static.yaml")?;
    wait_object(
        &server,
        &agent,
        ("pods", "default", &name),
        Duration::from_secs(30),
        "deleted",
        |pod| pod.is_none(),
    )?;
    Ok(())
}

#[test]
fn api_outage_keeps_pods_running_and_statuses_converge() -> Result<()> {
    let mut server = ApiServer::start()?;
    let agent = Agent::join(Runtime::Builtin, &server, &[])?;
    node_ready(&server, &agent)?;
    apply(&server, &agent, SLEEPER, &[])?;
    wait_pod(&server, &agent, "steady", "Running", |p| {
        phase(p) == "Running"
    })?;

    server.stop();
    // While the API is away the pod becomes ready; the API hears of it on its return.
    exec(&agent, "steady", &["touch", "/tmp/ready"])?;
    std::thread::sleep(Duration::from_secs(30));
    server.restart()?;
    let back = Instant::now();
    let pod = wait_pod(&server, &agent, "steady", "Ready after the outage", |p| {
        condition(p, "Ready") == Some("True")
    })?;
    ensure!(
        back.elapsed() <= Duration::from_secs(10),
        "status converged only {:?} after the API returned",
        back.elapsed()
    );
    ensure!(
        restart_count(&pod, "app") == 0,
        "container restarted: {}",
        pod["status"]
    );
    let node = node_ready(&server, &agent)?;
    ensure!(condition(&node, "Ready") == Some("True"));
    Ok(())
}

#[test]
fn image_pull_secrets_authenticate_pulls_from_a_private_registry() -> Result<()> {
    let (user, pass) = ("puller", "pull-s3cret");
    let registry = Registry::start(RegistryOptions::plain().basic_auth(user, pass))?;
    push_image(
        &registry,
        "private/busybox",
        "1",
        &catalog::busybox()?,
        ManifestKind::Oci,
        false,
    )?;
    let image = image_ref(&registry, "private/busybox", "1");
    let server = ApiServer::start()?;
    let agent = Agent::join_trusting(Runtime::Builtin, &server, &[], &registry)?;
    node_ready(&server, &agent)?;

    // Without the pull secret the pull is refused and the pod says why.
    apply(&server, &agent, PRIVATE, &[("PRIVATE_REF", &image)])?;
    let refused = wait_pod(&server, &agent, "private", "refused its image", |p| {
        container_status(p, "app").is_some_and(|s| {
            matches!(
                s["state"]["waiting"]["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
    })?;
    ensure!(phase(&refused) == "Pending", "{}", refused["status"]);
    let failed = pull_failures(&server, "private")?;
    ensure!(
        failed.iter().any(|m| m.to_lowercase().contains("authoriz")),
        "pull refused for another reason: {failed:?}"
    );
    server.kubectl(&["delete", "pod", "private", "--wait=false"])?;
    wait_object(
        &server,
        &agent,
        ("pods", "default", "private"),
        Duration::from_secs(30),
        "deleted",
        |pod| pod.is_none(),
    )?;

    // With a kubernetes.io/dockerconfigjson secret naming the registry, it runs.
    let auth = base64_encode(&format!("{user}:{pass}"));
    let docker_config = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
    server.create(
        "secrets",
        "default",
        serde_json::json!({
            "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64_encode(&docker_config.to_string())}
        }),
    )?;
    apply(&server, &agent, PRIVATE, &[("PRIVATE_REF", &image)])?;
    wait_pod(&server, &agent, "private", "Running", |p| {
        phase(p) == "Running"
    })?;
    Ok(())
}

/// Messages of the `Failed` events (failed pulls) about pod `name`.
fn pull_failures(server: &ApiServer, name: &str) -> Result<Vec<String>> {
    let events: Value = serde_json::from_str(&server.kubectl(&["get", "events", "-o", "json"])?)?;
    let messages = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == "Failed")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    Ok(messages)
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
