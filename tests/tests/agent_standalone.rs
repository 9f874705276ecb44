//! End-to-end: `capstan agent` in standalone mode runs static pods from a manifest
//! directory, on the built-in runtime and on containerd: readiness probes, init containers
//! and sidecars sharing an emptyDir, restart policies and back-off, manifest changes and
//! removal, invalid manifests, logs and exec through the CLI, and kill -9 adoption.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tests::agent::{container_status, http_get, is_ready, manifest, Agent, Runtime};

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c]
    args:
    - mkdir -p /www && echo "hello from $(POD_NAME)" > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 1
"#;

const INIT_AND_SIDECAR: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {}
  initContainers:
  - name: prepare
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo prepared > /data/init.txt"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: feeder
    image: IMAGE
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: [sh, -c, "trap 'exit 0' TERM; echo fed > /data/sidecar.txt; while true; do sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: app
    image: IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap 'exit 0' TERM; cat /data/init.txt /data/sidecar.txt; while true; do sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
"#;

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn web_pod_lifecycle(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    agent.write_manifest("web.yaml", &manifest(WEB, agent.images.busybox()))?;
    let pod = agent.wait_pod("web", Duration::from_secs(60), "Ready", is_ready)?;
    ensure!(phase(&pod) == "Running", "phase {}", phase(&pod));
    let ip = pod["status"]["podIP"]
        .as_str()
        .context("no pod IP")?
        .to_owned();
    ensure!(
        agent.net.contains(&ip),
        "pod IP {ip} outside the pod network"
    );
    let page = http_get(&ip, 8080, "/index.html")?;
    let full_name = format!("web-{}", agent.node_name());
    ensure!(
        page.contains(&format!("hello from {full_name}")),
        "page: {page}"
    );
    let status = container_status(&pod, "web").context("no web status")?;
    ensure!(
        status["ready"] == true && status["started"] == true,
        "{status}"
    );

    // The CLI: the table, logs (by the manifest's name), exec, describe.
    let table = stdout(&agent.cli(&["pods"])?);
    ensure!(
        table.contains(&full_name) && table.contains("Running"),
        "pods:\n{table}"
    );
    ensure!(table.contains("1/1"), "pods:\n{table}");
    let logs = stdout(&agent.cli(&["logs", "web"])?);
    ensure!(logs.contains("serving"), "logs: {logs:?}");
    let exec = agent.cli(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "cat /www/index.html; exit 3",
    ])?;
    ensure!(exec.status.code() == Some(3), "exec exit {:?}", exec.status);
    ensure!(
        stdout(&exec).contains("hello from"),
        "exec: {}",
        stdout(&exec)
    );
    let describe = stdout(&agent.cli(&["pods", "describe", "web"])?);
    ensure!(
        describe.contains("Created") && describe.contains("Started"),
        "describe:\n{describe}"
    );

    // A changed manifest replaces the pod (a new UID), the old one goes away.
    let uid = pod["metadata"]["uid"].clone();
    let changed = manifest(WEB, agent.images.busybox()).replace("app: web", "app: web2");
    agent.write_manifest("web.yaml", &changed)?;
    let replaced = agent.wait_pod("web", Duration::from_secs(60), "replaced and Ready", |p| {
        p["metadata"]["uid"] != uid && is_ready(p)
    })?;
    ensure!(replaced["metadata"]["labels"]["app"] == "web2");

    // Removing the manifest stops the pod and removes its sandbox.
    agent.remove_manifest("web.yaml")?;
    agent.wait_gone("web", Duration::from_secs(30))?;
    ensure!(
        http_get(&ip, 8080, "/").is_err() || agent.pod("web")?.is_none(),
        "the pod still answers"
    );
    Ok(())
}

#[test]
fn web_pod_with_readiness_probe_on_builtin_runtime() -> Result<()> {
    web_pod_lifecycle(Runtime::Builtin)
}

#[test]
fn web_pod_with_readiness_probe_on_containerd() -> Result<()> {
    web_pod_lifecycle(Runtime::Containerd)
}

fn init_and_sidecar(runtime: Runtime) -> Result<()> {
    let agent = Agent::start(runtime)?;
    agent.write_manifest(
        "shared.yaml",
        &manifest(INIT_AND_SIDECAR, agent.images.busybox()),
    )?;
    let pod = agent.wait_pod("shared", Duration::from_secs(60), "Ready", is_ready)?;
    let prepare = container_status(&pod, "prepare").context("no init status")?;
    ensure!(prepare["state"]["terminated"]["exitCode"] == 0, "{prepare}");
    ensure!(
        prepare["state"]["terminated"]["reason"] == "Completed",
        "{prepare}"
    );
    let feeder = container_status(&pod, "feeder").context("no sidecar status")?;
    ensure!(feeder["state"]["running"].is_object(), "{feeder}");
    let mut logs = String::new();
    for _ in 0..50 {
        logs = stdout(&agent.cli(&["logs", "shared", "-c", "app"])?);
        if logs.contains("fed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        logs.contains("prepared") && logs.contains("fed"),
        "app saw: {logs:?}"
    );
    agent.remove_manifest("shared.yaml")?;
    agent.wait_gone("shared", Duration::from_secs(30))?;
    let volumes = agent.kubelet_root().join("pods");
    let left: Vec<_> = std::fs::read_dir(&volumes)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    ensure!(left.is_empty(), "pod directories left: {left:?}");
    Ok(())
}

#[test]
fn init_container_and_sidecar_share_an_empty_dir_on_builtin_runtime() -> Result<()> {
    init_and_sidecar(Runtime::Builtin)
}

#[test]
fn init_container_and_sidecar_share_an_empty_dir_on_containerd() -> Result<()> {
    init_and_sidecar(Runtime::Containerd)
}

#[test]
fn restart_policies_back_off_and_terminal_phases() -> Result<()> {
    let agent = Agent::start_with(
        Runtime::Builtin,
        &["crashLoopBackOff: {maxContainerRestartPeriod: 1s}"],
    )?;
    let pod = |name: &str, policy: &str, script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, \"{script}\"]\n    terminationMessagePolicy: FallbackToLogsOnError\n",
            agent.images.busybox()
        )
    };
    agent.write_manifest("crash.yaml", &pod("crash", "Always", "echo boom; exit 2"))?;
    agent.write_manifest("once.yaml", &pod("once", "Never", "exit 7"))?;
    agent.write_manifest("done.yaml", &pod("done", "OnFailure", "exit 0"))?;

    let crashing = agent.wait_pod("crash", Duration::from_secs(60), "restarted twice", |p| {
        container_status(p, "c").is_some_and(|s| s["restartCount"].as_i64() >= Some(2))
    })?;
    let status = container_status(&crashing, "c").context("status")?;
    let last = &status["lastState"]["terminated"];
    ensure!(
        last["exitCode"] == 2 && last["reason"] == "Error",
        "{status}"
    );
    ensure!(
        last["message"].as_str().unwrap_or("").contains("boom"),
        "fallback message: {status}"
    );
    agent.wait_pod(
        "crash",
        Duration::from_secs(30),
        "in CrashLoopBackOff",
        |p| {
            container_status(p, "c")
                .is_some_and(|s| s["state"]["waiting"]["reason"] == "CrashLoopBackOff")
        },
    )?;
    let failed = agent.wait_pod("once", Duration::from_secs(60), "Failed", |p| {
        phase(p) == "Failed"
    })?;
    let status = container_status(&failed, "c").context("status")?;
    ensure!(
        status["restartCount"] == 0 && status["state"]["terminated"]["exitCode"] == 7,
        "{status}"
    );
    agent.wait_pod("done", Duration::from_secs(60), "Succeeded", |p| {
        phase(p) == "Succeeded"
    })?;

    // Invalid manifests are reported and never stop the agent.
    agent.write_manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: []}\n",
    )?;
    let mut errors = String::new();
    for _ in 0..50 {
        errors = agent.pods()?.1;
        if errors.contains("bad.yaml") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        errors.contains("bad.yaml") && errors.contains("metadata.name"),
        "errors: {errors}"
    );
    ensure!(agent.pod("done")?.is_some(), "the agent must keep its pods");
    Ok(())
}

#[test]
fn kill_9_adopts_running_pods_and_stops_removed_ones() -> Result<()> {
    let mut agent = Agent::start(Runtime::Builtin)?;
    let image = agent.images.busybox().to_owned();
    agent.write_manifest("web.yaml", &manifest(WEB, &image))?;
    agent.write_manifest("shared.yaml", &manifest(INIT_AND_SIDECAR, &image))?;
    let web = agent.wait_pod("web", Duration::from_secs(60), "Ready", is_ready)?;
    let shared = agent.wait_pod("shared", Duration::from_secs(60), "Ready", is_ready)?;
    let shared_uid = shared["metadata"]["uid"]
        .as_str()
        .context("uid")?
        .to_owned();
    let shared_dir = agent.kubelet_root().join("pods").join(&shared_uid);
    ensure!(
        shared_dir.exists(),
        "no pod directory {}",
        shared_dir.display()
    );
    let web_id = container_status(&web, "web").context("web")?["containerID"].clone();

    agent.kill();
    agent.remove_manifest("shared.yaml")?;
    agent.restart()?;
    let adopted = agent.wait_pod("web", Duration::from_secs(30), "Ready again", is_ready)?;
    let status = container_status(&adopted, "web").context("web")?;
    ensure!(
        status["containerID"] == web_id,
        "container replaced: {status}"
    );
    ensure!(status["restartCount"] == 0, "{status}");
    ensure!(adopted["metadata"]["uid"] == web["metadata"]["uid"]);
    // The pod removed while the agent was down is stopped and cleaned up when it returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shared_dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        !shared_dir.exists(),
        "orphaned pod not cleaned up:\n{}",
        agent.log()
    );
    ensure!(agent.pod("shared")?.is_none(), "orphaned pod listed");
    let ip = adopted["status"]["podIP"].as_str().context("ip")?;
    ensure!(
        http_get(ip, 8080, "/index.html")?.contains("hello"),
        "web down after adoption"
    );
    Ok(())
}

#[test]
fn sigterm_stops_the_agent_promptly_and_leaves_pods_running() -> Result<()> {
    let mut agent = Agent::start(Runtime::Builtin)?;
    agent.write_manifest("web.yaml", &manifest(WEB, agent.images.busybox()))?;
    let web = agent.wait_pod("web", Duration::from_secs(60), "Ready", is_ready)?;
    let ip = web["status"]["podIP"].as_str().context("ip")?.to_owned();
    let took = agent.stop(Duration::from_secs(10))?;
    ensure!(
        http_get(&ip, 8080, "/index.html")?.contains("hello"),
        "pod stopped with the agent"
    );
    agent.start_again()?;
    let adopted = agent.wait_pod("web", Duration::from_secs(30), "Ready again", is_ready)?;
    let id = |p: &Value| container_status(p, "web").map(|s| s["containerID"].clone());
    ensure!(
        id(&adopted) == id(&web),
        "container replaced after a clean stop"
    );
    // Removing the manifest now stops the pod promptly (grace 2 s, httpd exits on TERM).
    let removed = std::time::Instant::now();
    agent.remove_manifest("web.yaml")?;
    agent.wait_gone("web", Duration::from_secs(15))?;
    println!(
        "stopped in {took:?}, pod removed in {:?}",
        removed.elapsed()
    );
    Ok(())
}
