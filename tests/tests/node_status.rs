//! The node status manager (`agent::kubelet::node_status::run`) against the API test server
//! and the built-in runtime: registration with labels, taints and capacity; Ready following
//! the runtime's network readiness; the Lease renewed; no status writes while nothing
//! changes; recovery after the API server stops and comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent::kubelet::bootstrap::{install_crypto_provider, ApiClient};
use agent::kubelet::config::KubeletConfig;
use agent::kubelet::node_status::{run, NodeStatusSettings};
use agent::kubelet::runtime::Cri;
use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::Value;
use tests::apiserver::ApiServer;
use tests::binaries::require_root;
use tests::capstan::{CapstanCri, CriConfig};
use tests::names::unique_name;
use tests::pods::PodNetwork;

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn status_patches(server: &ApiServer, mark: u64, node: &str) -> usize {
    let path = format!("/api/v1/nodes/{node}/status");
    server
        .requests_since(mark)
        .iter()
        .filter(|r| r.verb == "patch" && r.path == path)
        .count()
}

fn lease_renew_time(server: &ApiServer, node: &str) -> Option<String> {
    let lease = server.get("leases", "kube-node-lease", node)?;
    lease["spec"]["renewTime"].as_str().map(str::to_owned)
}

/// The status manager running on its own tokio runtime; stopped on drop.
struct Running {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    node: tokio::sync::watch::Receiver<Option<Node>>,
}

impl Running {
    fn start(server: &ApiServer, endpoint: &str, settings: NodeStatusSettings) -> Result<Running> {
        install_crypto_provider();
        let runtime = tokio::runtime::Runtime::new()?;
        let (client, cri) = runtime.block_on(async {
            let client = ApiClient::from_kubeconfig(&server.admin_kubeconfig()).await?;
            let cri = Cri::connect(endpoint).await?;
            anyhow::Ok((client, cri))
        })?;
        let (published, node) = tokio::sync::watch::channel(None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(run(client, cri, settings, published, async {
            let _ = stopped.await;
        }));
        Ok(Running {
            runtime: Some(runtime),
            stop: Some(stop),
            node,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A directory moved aside (an empty one in its place) until restored or dropped.
struct HiddenDir {
    path: std::path::PathBuf,
    aside: std::path::PathBuf,
    hidden: bool,
}

impl HiddenDir {
    fn hide(path: std::path::PathBuf) -> Result<HiddenDir> {
        let aside = path.with_extension("aside");
        std::fs::rename(&path, &aside).with_context(|| format!("moving {}", path.display()))?;
        std::fs::create_dir(&path)?;
        Ok(HiddenDir {
            path,
            aside,
            hidden: true,
        })
    }

    fn restore(&mut self) -> Result<()> {
        if self.hidden {
            self.hidden = false;
            std::fs::remove_dir(&self.path)?;
            std::fs::rename(&self.aside, &self.path)?;
        }
        Ok(())
    }
}

impl Drop for HiddenDir {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

fn settings(name: &str, root: &std::path::Path) -> Result<NodeStatusSettings> {
    let config = KubeletConfig {
        root_dir: root.to_owned(),
        node_labels: BTreeMap::from([("node.kubernetes.io/pool".to_owned(), "edge".to_owned())]),
        register_with_taints: vec![Taint {
            key: "dedicated".to_owned(),
            value: Some("edge".to_owned()),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        }],
        kube_reserved: BTreeMap::from([("cpu".to_owned(), "100m".to_owned())]),
        // Thresholds this (shared, often full) test machine is sure to meet.
        eviction_hard: Some(BTreeMap::from([
            ("memory.available".to_owned(), "1Mi".to_owned()),
            ("nodefs.available".to_owned(), "1%".to_owned()),
        ])),
        node_status_update_frequency: "1s".to_owned(),
        node_status_report_frequency: "5m".to_owned(),
        node_lease_duration_seconds: 4,
        ..KubeletConfig::default()
    };
    config.validate().map_err(anyhow::Error::msg)?;
    NodeStatusSettings::from_config(&config, name).map_err(anyhow::Error::msg)
}

#[test]
fn the_node_registers_turns_ready_keeps_its_lease_and_stays_quiet() -> Result<()> {
    require_root()?;
    let mut server = ApiServer::start()?;
    let net = PodNetwork::capstan()?;
    // The runtime starts without its network config: NetworkReady false, so NotReady.
    let mut hidden = HiddenDir::hide(net.conf_dir())?;
    let cri = CapstanCri::start(&CriConfig::default().line(&net.capstan_yaml()))?;
    let root = tempfile::tempdir()?;
    let name = unique_name("node");
    let running = Running::start(&server, &cri.endpoint(), settings(&name, root.path())?)?;

    let node = wait_for("the Node, NotReady", Duration::from_secs(15), || {
        let node = server.get("nodes", "", &name)?;
        (condition(&node, "Ready")?["status"] == "False").then_some(node)
    })?;
    let ready = condition(&node, "Ready").context("Ready")?;
    assert_eq!(ready["reason"], "KubeletNotReady");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("NetworkReady=false")),
        "{ready}"
    );
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels["kubernetes.io/arch"].is_string(), "{labels}");
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    assert_eq!(labels["node.kubernetes.io/pool"], "edge");
    let taints = &node["spec"]["taints"];
    assert_eq!(taints[0]["key"], "dedicated", "{taints}");
    assert_eq!(taints[0]["effect"], "NoSchedule");
    hidden.restore()?;

    // Ready once the network config is back (the runtime rereads it).
    let node = wait_for("Ready True", Duration::from_secs(20), || {
        let node = server.get("nodes", "", &name)?;
        (condition(&node, "Ready")?["status"] == "True").then_some(node)
    })?;
    let ready = condition(&node, "Ready").context("Ready")?;
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    for (kind, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = condition(&node, kind).with_context(|| format!("{kind} in {node}"))?;
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some(reason))
        );
    }
    let status = &node["status"];
    assert_eq!(status["capacity"]["pods"], "110");
    assert!(status["capacity"]["cpu"].is_string() && status["capacity"]["memory"].is_string());
    let capacity_cpu = status["capacity"]["cpu"].as_str().unwrap_or_default();
    let allocatable_cpu = status["allocatable"]["cpu"].as_str().unwrap_or_default();
    let cores: u64 = capacity_cpu.parse()?;
    assert_eq!(
        allocatable_cpu,
        format!("{}m", cores * 1000 - 100),
        "kubeReserved cpu 100m"
    );
    assert!(status["allocatable"]["ephemeral-storage"].is_string());
    let info = &status["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.contains("://")),
        "{info}"
    );
    assert!(
        info["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.33")),
        "{info}"
    );
    assert_eq!(info["operatingSystem"], "linux");
    assert!(info["bootID"].as_str().is_some_and(|v| !v.is_empty()));
    let addresses = status["addresses"].as_array().context("addresses")?;
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "Hostname" && a["address"] == name.as_str()));
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    wait_for("the published Node", Duration::from_secs(5), || {
        let published = running.node.borrow().clone()?;
        let ready = published
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })?;

    // kubectl sees it Ready.
    let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
    let ready = server.kubectl(&["get", "node", &name, "-o", jsonpath])?;
    assert_eq!(ready.trim(), "True");

    // The Lease: held by the node, owned by the Node, renewed every second (4 s / 4).
    let lease = wait_for("the Lease", Duration::from_secs(5), || {
        server.get("leases", "kube-node-lease", &name)
    })?;
    assert_eq!(lease["spec"]["holderIdentity"], name.as_str());
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
    let owner = &lease["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Node"), Some(name.as_str()))
    );
    assert_eq!(owner["uid"], node["metadata"]["uid"]);
    let first = lease_renew_time(&server, &name).context("renewTime")?;
    wait_for("a lease renewal", Duration::from_secs(5), || {
        (lease_renew_time(&server, &name)? != first).then_some(())
    })?;

    // Nothing changes for 5 update periods: no status patch, only lease renewals.
    let mark = server.request_count();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        status_patches(&server, mark, &name),
        0,
        "{:?}",
        server.requests_since(mark)
    );
    let renewals = server
        .requests_since(mark)
        .iter()
        .filter(|r| r.verb == "update" && r.path.ends_with(&format!("/leases/{name}")))
        .count();
    ensure!(
        (3..=7).contains(&renewals),
        "{renewals} lease renewals in 5 s"
    );

    // The API server goes away for 3 s and comes back: the lease and the status catch up.
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    let before = lease_renew_time(&server, &name).context("renewTime")?;
    let mark = server.request_count();
    server.restart()?;
    wait_for(
        "a renewal after the restart",
        Duration::from_secs(10),
        || (lease_renew_time(&server, &name)? > before).then_some(()),
    )?;
    wait_for(
        "a status patch after the restart",
        Duration::from_secs(10),
        || (status_patches(&server, mark, &name) > 0).then_some(()),
    )?;
    let node = server.get("nodes", "", &name).context("node")?;
    assert_eq!(
        condition(&node, "Ready").map(|c| c["status"].clone()),
        Some("True".into())
    );
    drop(running);
    Ok(())
}

#[test]
fn an_existing_node_is_adopted_with_its_labels_reconciled_and_taints_kept() -> Result<()> {
    require_root()?;
    let server = ApiServer::start()?;
    let no_network = tempfile::tempdir()?;
    let cni = format!("cni:\n  confDir: {}", no_network.path().display());
    let cri = CapstanCri::start(&CriConfig::default().line(&cni))?;
    let name = unique_name("node");
    server.create(
        "nodes",
        "",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "windows", "team": "a"}},
            "spec": {"taints": [{"key": "admin", "effect": "NoExecute"}]}
        }),
    )?;
    let root = tempfile::tempdir()?;
    let running = Running::start(&server, &cri.endpoint(), settings(&name, root.path())?)?;
    let node = wait_for("the adopted Node's status", Duration::from_secs(15), || {
        let node = server.get("nodes", "", &name)?;
        condition(&node, "Ready").is_some().then_some(node)
    })?;
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/os"], "linux", "{labels}");
    assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
    assert_eq!(labels["node.kubernetes.io/pool"], "edge");
    assert_eq!(labels["team"], "a");
    let taints = node["spec"]["taints"].as_array().context("taints")?;
    assert_eq!(taints.len(), 1, "{taints:?}");
    assert_eq!(taints[0]["key"], "admin");
    // No network config for this runtime: NotReady with the runtime's reason.
    let ready = condition(&node, "Ready").context("Ready")?;
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "KubeletNotReady");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("NetworkReady=false")),
        "{ready}"
    );

    // Deleted from the API, the Node is registered again (this time with the configured
    // taints, as a new Node).
    let old_uid = node["metadata"]["uid"].clone();
    server.kubectl(&["delete", "node", &name])?;
    let node = wait_for("the Node registered again", Duration::from_secs(15), || {
        let node = server.get("nodes", "", &name)?;
        (node["metadata"]["uid"] != old_uid && condition(&node, "Ready").is_some()).then_some(node)
    })?;
    assert_eq!(node["spec"]["taints"][0]["key"], "dedicated", "{node}");
    assert_eq!(
        node["metadata"]["labels"]["node.kubernetes.io/pool"],
        "edge"
    );
    drop(running);
    Ok(())
}
