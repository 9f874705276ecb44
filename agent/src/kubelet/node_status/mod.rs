//! The node's presence in the cluster, as the kubelet's node status manager and node lease
//! controller keep it:
//!
//! - registration: create the Node with the default labels (`kubernetes.io/hostname`, `os`,
//!   `arch` and their `beta.` forms), the configured `nodeLabels` and `registerWithTaints`,
//!   or adopt an existing one (owned labels reconciled, taints untouched); retried with
//!   jittered back-off until the API answers.
//! - status every `nodeStatusUpdateFrequency`: capacity/allocatable, conditions, addresses,
//!   nodeInfo, images, daemonEndpoints; patched on `nodes/<n>/status` (strategic merge)
//!   only when something besides heartbeats changed, or when `nodeStatusReportFrequency`
//!   passed. The Node is watched (like the kubelet's informer), so the baseline of the diff
//!   is what the API has without polling, and a deleted Node is registered again; after any
//!   failed request the Node is also read again before the next diff.
//! - the Lease `kube-node-lease/<node>` renewed every quarter of `nodeLeaseDurationSeconds`.
//!
//! [`run`] never returns an error: API failures are logged and retried; the latest Node is
//! published on a watch channel for admission.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::kubelet::bootstrap::ApiClient;
use crate::kubelet::cluster::Retry;
use crate::kubelet::config::{parse_go_duration, KubeletConfig};
use crate::kubelet::runtime::Cri;

mod conditions;
#[cfg(test)]
mod fake_api;
mod info;
mod lease;
mod pressure;
mod register;
mod resources;
mod status;
#[cfg(test)]
mod tests;

pub use info::{host_ip, KUBELET_VERSION};
pub use lease::LEASE_NAMESPACE;
pub use resources::{MachineCapacity, Reservations, Threshold, Thresholds};

use pressure::Observations;
use resources::{default_thresholds, node_resources, parse_reserved, parse_thresholds};
use status::Observed;

/// The port reported as the kubelet's endpoint when none is configured.
pub const DEFAULT_KUBELET_PORT: i32 = 10250;

/// What the node status manager needs, from the `kubelet:` config section.
#[derive(Debug, Clone)]
pub struct NodeStatusSettings {
    /// The Node's name.
    pub node_name: String,
    /// The kubelet root: ephemeral-storage and nodefs signals come from its filesystem.
    pub root_dir: PathBuf,
    /// Create the Node (false: wait for it to exist).
    pub register_node: bool,
    /// Taints a newly created Node gets.
    pub register_with_taints: Vec<Taint>,
    /// Labels set besides the defaults.
    pub node_labels: BTreeMap<String, String>,
    /// Capacity `pods`.
    pub max_pods: i64,
    /// kubeReserved, systemReserved and evictionHard.
    pub reservations: Reservations,
    /// How often status is computed.
    pub update_frequency: Duration,
    /// Longest time between patches when nothing changed.
    pub report_frequency: Duration,
    /// `leaseDurationSeconds` of the node Lease.
    pub lease_duration_seconds: i32,
    /// `daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: i32,
    /// The InternalIP; `None`: detected from the default route at each update.
    pub host_ip: Option<IpAddr>,
}

impl NodeStatusSettings {
    /// Settings from the config (validated) for the node `node_name`.
    pub fn from_config(
        config: &KubeletConfig,
        node_name: &str,
    ) -> Result<NodeStatusSettings, String> {
        let duration = |field: &str, text: &str| {
            let value = parse_go_duration(text).map_err(|e| format!("{field}: {e}"))?;
            if value.is_zero() {
                return Err(format!("{field}: must be greater than 0"));
            }
            Ok(value)
        };
        if config.max_pods < 1 {
            return Err("maxPods: must be at least 1".to_owned());
        }
        if config.node_lease_duration_seconds < 1 {
            return Err("nodeLeaseDurationSeconds: must be at least 1".to_owned());
        }
        for taint in &config.register_with_taints {
            if taint.key.is_empty() {
                return Err("registerWithTaints: a taint needs a key".to_owned());
            }
            if !matches!(
                taint.effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                return Err(format!("registerWithTaints: {}: effect {:?} is not NoSchedule, PreferNoSchedule or NoExecute", taint.key, taint.effect));
            }
        }
        for (key, value) in &config.node_labels {
            validate_node_label(key, value)?;
        }
        let eviction_hard = match &config.eviction_hard {
            Some(map) => parse_thresholds(map)?,
            None => default_thresholds(),
        };
        Ok(NodeStatusSettings {
            node_name: node_name.to_owned(),
            root_dir: config.root_dir.clone(),
            register_node: config.register_node,
            register_with_taints: config.register_with_taints.clone(),
            node_labels: config.node_labels.clone(),
            max_pods: config.max_pods,
            reservations: Reservations {
                kube: parse_reserved("kubeReserved", &config.kube_reserved)?,
                system: parse_reserved("systemReserved", &config.system_reserved)?,
                eviction_hard,
            },
            update_frequency: duration(
                "nodeStatusUpdateFrequency",
                &config.node_status_update_frequency,
            )?,
            report_frequency: duration(
                "nodeStatusReportFrequency",
                &config.node_status_report_frequency,
            )?,
            lease_duration_seconds: config.node_lease_duration_seconds,
            kubelet_port: DEFAULT_KUBELET_PORT,
            host_ip: None,
        })
    }
}

/// Checks the node-status fields of the config (called by `KubeletConfig::validate`).
pub fn validate_config(config: &KubeletConfig) -> Result<(), String> {
    NodeStatusSettings::from_config(config, "validation").map(drop)
}

/// The kubelet's `--node-labels` rule: in the kubernetes.io and k8s.io namespaces only the
/// labels a node may set about itself.
fn validate_node_label(key: &str, value: &str) -> Result<(), String> {
    const ALLOWED: [&str; 9] = [
        "kubernetes.io/hostname",
        "kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    const ALLOWED_PREFIXES: [&str; 2] = ["kubelet.kubernetes.io/", "node.kubernetes.io/"];
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let value_ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok || !value_ok || prefix.len() > 253 {
        return Err(format!(
            "nodeLabels: {key:?}={value:?} is not a valid label"
        ));
    }
    let restricted = prefix == "kubernetes.io"
        || prefix == "k8s.io"
        || prefix.ends_with(".kubernetes.io")
        || prefix.ends_with(".k8s.io");
    let allowed = ALLOWED.contains(&key) || ALLOWED_PREFIXES.iter().any(|p| key.starts_with(p));
    if restricted && !allowed {
        return Err(format!(
            "nodeLabels: {key:?}: only node.kubernetes.io/*, kubelet.kubernetes.io/*, topology and instance-type labels may be set in the kubernetes.io and k8s.io namespaces"
        ));
    }
    Ok(())
}

/// Registers the node, then keeps its status and Lease current until `shutdown`; the latest
/// Node the API returned is sent on `published`.
pub async fn run(
    client: ApiClient,
    cri: Cri,
    settings: NodeStatusSettings,
    published: watch::Sender<Option<Node>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let trouble = AtomicBool::new(false);
    let work = async {
        let node = register(&client, &cri, &settings).await;
        published.send_replace(Some(node.clone()));
        let owner = lease::LeaseOwner {
            node: settings.node_name.clone(),
            node_uid: node.metadata.uid.clone().unwrap_or_default(),
            duration_seconds: settings.lease_duration_seconds,
        };
        tokio::join!(
            lease::run(client.clone(), owner, &trouble),
            keep_status(&client, &cri, &settings, node, &published, &trouble),
        );
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

/// Registration attempts with back-off (100 ms doubling to 7 s, jittered) until one works.
async fn register(client: &ApiClient, cri: &Cri, settings: &NodeStatusSettings) -> Node {
    let mut retry = Retry::new(Duration::from_millis(100), Duration::from_secs(7));
    let mut machine = None;
    loop {
        let observed = observe(cri, settings, &mut machine).await;
        let status = status::desired(None, &observed, &now());
        let api: Api<Node> = Api::all(client.current());
        match register::try_register(&api, settings, status).await {
            Ok(node) => return node,
            Err(error) => {
                tracing::warn!(%error, node = %settings.node_name, "registering the node failed; retrying");
                tokio::time::sleep(retry.next_delay()).await;
            }
        }
    }
}

/// The status loop: compute every update period, patch on change or when a report is due.
async fn keep_status(
    client: &ApiClient,
    cri: &Cri,
    settings: &NodeStatusSettings,
    mut last: Node,
    published: &watch::Sender<Option<Node>>,
    trouble: &AtomicBool,
) {
    let name = settings.node_name.as_str();
    let mut machine = None;
    let mut last_report = Instant::now();
    // Registration may have created the Node without the status (or adopted a stale one).
    let mut force = true;
    let mut ticks = tokio::time::interval(settings.update_frequency);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Our own Node, watched: external changes (and a deletion) are seen without polling.
    let selector = format!("metadata.name={name}");
    let watch_node = || {
        let config = watcher::Config::default().fields(&selector);
        watcher::watcher(Api::<Node>::all(client.current()), config)
            .default_backoff()
            .boxed()
    };
    let mut events = watch_node();
    let mut listed = false;
    // Set when the watch failed: at the next tick it is rebuilt on the current client (a
    // rotated certificate), at most once per update period.
    let mut rewatch = false;
    loop {
        let gone = tokio::select! {
            _ = ticks.tick() => false,
            event = events.next() => match event {
                Some(Ok(Event::Apply(node) | Event::InitApply(node))) => {
                    listed = true;
                    published.send_replace(Some(node.clone()));
                    last = node;
                    continue;
                }
                Some(Ok(Event::Init)) => {
                    listed = false;
                    continue;
                }
                // A relist without the Node: it was deleted while the watch was down.
                Some(Ok(Event::InitDone)) => !listed,
                Some(Ok(Event::Delete(_))) => true,
                Some(Err(error)) => {
                    tracing::debug!(%error, node = name, "watching the node failed");
                    rewatch = true;
                    continue;
                }
                // The backed-off watcher never ends; should it, carry on without it.
                None => {
                    events = futures::stream::pending().boxed();
                    continue;
                }
            },
        };
        if gone {
            tracing::warn!(node = name, "the node was deleted; registering it again");
            last = register(client, cri, settings).await;
            published.send_replace(Some(last.clone()));
            force = true;
            continue;
        }
        if std::mem::take(&mut rewatch) {
            events = watch_node();
        }
        let api: Api<Node> = Api::all(client.current());
        if trouble.swap(false, Ordering::Relaxed) {
            // After a failure the server may have changed (restarted, node controller):
            // diff against what it has now.
            match api.get(name).await {
                Ok(node) => last = node,
                Err(error) => {
                    trouble.store(true, Ordering::Relaxed);
                    tracing::warn!(%error, node = name, "reading the node failed");
                    continue;
                }
            }
            force = true;
        }
        let observed = observe(cri, settings, &mut machine).await;
        let old = last.status.clone().unwrap_or_default();
        let new = status::desired(Some(&old), &observed, &now());
        let due = force || last_report.elapsed() >= settings.report_frequency;
        if !due && !status::changed(&old, &new) {
            continue;
        }
        let patch = status::patch(&old, &new);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(node) => {
                last_report = Instant::now();
                force = false;
                published.send_replace(Some(node.clone()));
                last = node;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::warn!(node = name, "the node was deleted; registering it again");
                last = register(client, cri, settings).await;
                published.send_replace(Some(last.clone()));
                force = true;
            }
            Err(error) => {
                trouble.store(true, Ordering::Relaxed);
                tracing::warn!(%error, node = name, "updating node status failed; retrying");
            }
        }
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// One observation of the host and the runtime; `machine` keeps the last readable capacity.
async fn observe(
    cri: &Cri,
    settings: &NodeStatusSettings,
    machine: &mut Option<MachineCapacity>,
) -> Observed {
    match MachineCapacity::from_host(&settings.root_dir) {
        Ok(read) => *machine = Some(read),
        Err(error) => tracing::warn!(%error, "reading the node's capacity failed"),
    }
    let capacity = machine.clone().unwrap_or(MachineCapacity {
        cpu_millis: 0,
        memory_bytes: 0,
        ephemeral_storage_bytes: 0,
        hugepages: BTreeMap::new(),
    });
    let resources = node_resources(&capacity, settings.max_pods, &settings.reservations);
    let observations = Observations::from_host(&settings.root_dir);
    let pressure = pressure::pressure(&observations, &settings.reservations.eviction_hard);
    let runtime_status = cri.status().await.map_err(|e| e.to_string());
    let mut ready = conditions::runtime_readiness(runtime_status.as_ref().map_err(Clone::clone));
    if machine.is_none() && ready.is_ok() {
        ready =
            Err("missing node capacity for resources: cpu, memory, ephemeral-storage".to_owned());
    }
    let version = match cri.version().await {
        Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
        Err(_) => String::new(),
    };
    let images = match cri.list_images().await {
        Ok(list) => Some(info::images(list)),
        Err(error) => {
            tracing::debug!(%error, "listing images failed");
            None
        }
    };
    let ip = settings.host_ip.or_else(host_ip);
    Observed {
        resources,
        pressure,
        ready,
        addresses: info::addresses(ip, &settings.node_name),
        info: info::system_info(&version),
        images,
        kubelet_port: settings.kubelet_port,
    }
}
