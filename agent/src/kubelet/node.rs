//! The kubelet assembled: the CRI runtime connection, pod workers, the static pod source
//! and the local API, until shutdown. Shutting down leaves every pod running (fail-static);
//! the next start adopts them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::bootstrap::ApiClient;
use super::cluster::Connection;
use super::config::KubeletConfig;
use super::convert::{Allocatable, Amount, DnsSettings, NodeInfo, ResolvConf};
use super::local_api;
use super::node_state::AgentState;
use super::node_status;
use super::runtime::Cri;
use super::source::{watch_directory, StaticPodDefaults};
use super::status::PodStore;
use super::volumes::NodeAllocatable;
use super::worker::{BackoffPolicy, PodWorkers, WorkerSettings};

/// How long to wait for the runtime's socket to answer at start-up.
const RUNTIME_WAIT: Duration = Duration::from_secs(60);

/// Run the kubelet against the CRI runtime at `endpoint` until `shutdown` completes; with
/// a `client`, as a member of that cluster, else standalone.
pub async fn run(
    config: KubeletConfig,
    endpoint: &str,
    client: Option<ApiClient>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node_name = node_name(&config)?;
    let cri = connect_when_ready(endpoint).await?;
    let runtime_name = cri
        .version()
        .await
        .map(|v| v.runtime_name)
        .unwrap_or_else(|_| "cri".to_owned());
    std::fs::create_dir_all(&config.root_dir)
        .with_context(|| format!("creating {}", config.root_dir.display()))?;
    let allocatable =
        NodeAllocatable::from_host(&config.root_dir).context("reading the node's capacity")?;
    let host_resolv = match ResolvConf::load(&config.resolv_conf) {
        Ok(conf) => Some(conf),
        Err(error) => {
            tracing::warn!(%error, "pods with dnsPolicy Default get no resolver config");
            None
        }
    };
    let node = NodeInfo {
        name: node_name.clone(),
        host_ips: vec![
            node_status::host_ip().map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())
        ],
        allocatable: Allocatable {
            cpu: Some(Amount::from_nanos(
                i128::from(allocatable.cpu_millis) * 1_000_000,
            )),
            memory: Some(Amount::from_units(clamp(allocatable.memory_bytes))),
            ephemeral_storage: Some(Amount::from_units(clamp(
                allocatable.ephemeral_storage_bytes,
            ))),
        },
        memory_capacity_bytes: clamp(allocatable.memory_bytes),
        hugepage_sizes: Vec::new(),
        seccomp_profile_root: config.root_dir.join("seccomp"),
        seccomp_default: false,
        memory_oom_group: false,
        dns: DnsSettings {
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            host: host_resolv,
        },
    };
    let settings = WorkerSettings {
        node: Arc::new(node),
        pod_logs_dir: config.pod_logs_dir.clone(),
        root_dir: config.root_dir.clone(),
        cgroup_root: config.cgroup_root.clone(),
        allocatable,
        runtime_name,
        restart_backoff: BackoffPolicy {
            initial: Duration::from_secs(10).min(config.crash_loop_back_off.max()),
            max: config.crash_loop_back_off.max(),
        },
        pull_backoff: BackoffPolicy::default(),
    };
    let store = Arc::new(PodStore::default());
    let mut cluster = match client {
        Some(client) => Some(Connection::start(client, &config, &node_name, &cri, &store).await?),
        None => None,
    };
    let fetcher = cluster.as_ref().map(|c| c.fetcher.clone());
    let workers = PodWorkers::new(cri.clone(), store.clone(), settings, fetcher);
    let state = Arc::new(AgentState::new(
        store.clone(),
        cri.clone(),
        config.pod_logs_dir.clone(),
    ));
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = local_api::bind(&config.local_api_socket)
        .await
        .with_context(|| {
            format!(
                "serving the local API on {}",
                config.local_api_socket.display()
            )
        })?;
    let api = tokio::spawn(async move {
        let server = axum::serve(listener, local_api::router(state));
        let stopped = async {
            let _ = api_stopped.await;
        };
        if let Err(error) = server.with_graceful_shutdown(stopped).await {
            tracing::error!(%error, "local API server failed");
        }
    });
    tracing::info!(node = %node_name, runtime = endpoint, socket = %config.local_api_socket.display(), "agent running");
    let source = async {
        let defaults = StaticPodDefaults {
            node_name: node_name.clone(),
        };
        let mut statics = config
            .static_pod_path
            .clone()
            .map(|dir| watch_directory(dir, defaults));
        let mut cleaned_up = false;
        loop {
            let static_pods = match statics.as_mut() {
                Some(snapshots) => {
                    let snapshot = snapshots.borrow_and_update().clone();
                    store.set_source_errors(snapshot.errors.clone());
                    snapshot.pods.clone()
                }
                None => Vec::new(),
            };
            let mut desired = static_pods.clone();
            // Until the API's first list completes, API pods are unknown, not gone.
            let complete = match cluster.as_mut() {
                None => true,
                Some(cluster) => {
                    let assigned = cluster.assigned.borrow_and_update().clone();
                    let node = cluster.node.borrow_and_update().clone();
                    match assigned {
                        Some(api_pods) => {
                            desired.extend(cluster.pods.desired(
                                &api_pods,
                                &static_pods,
                                node.as_ref(),
                            ));
                            true
                        }
                        None => false,
                    }
                }
            };
            workers.sync_pods(&desired);
            if complete && !cleaned_up {
                cleaned_up = true;
                workers.clean_up_orphans().await;
            }
            let (assigned, node) = match cluster.as_mut() {
                Some(c) => (Some(&mut c.assigned), Some(&mut c.node)),
                None => (None, None),
            };
            tokio::select! {
                () = changed(statics.as_mut()) => {}
                () = changed(assigned) => {}
                () = changed(node) => {}
            }
        }
    };
    tokio::select! {
        _ = source => {}
        _ = shutdown => {}
    }
    let _ = api_stop.send(());
    let _ = api.await;
    let _ = std::fs::remove_file(&config.local_api_socket);
    workers.stop_events();
    tracing::info!(pods = workers.active(), "agent stopping; pods keep running");
    Ok(())
}

/// Resolves when the channel has a new value; never for an absent or closed one.
async fn changed<T>(receiver: Option<&mut tokio::sync::watch::Receiver<T>>) {
    if let Some(receiver) = receiver {
        if receiver.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

async fn connect_when_ready(endpoint: &str) -> anyhow::Result<Cri> {
    let deadline = tokio::time::Instant::now() + RUNTIME_WAIT;
    loop {
        match Cri::connect(endpoint).await {
            Ok(cri) if cri.version().await.is_ok() => return Ok(cri),
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(cri) => {
                cri.version().await?;
                return Ok(cri);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The node's name: `nodeName` from the config, else the host name in lower case.
pub fn node_name(config: &KubeletConfig) -> anyhow::Result<String> {
    match &config.node_name {
        Some(name) => Ok(name.clone()),
        None => hostname(),
    }
}

fn hostname() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("reading the host name")?;
    Ok(name.to_string_lossy().to_lowercase())
}
