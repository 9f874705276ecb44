//! The kubelet assembled: the CRI runtime connection, pod workers, the static pod source
//! and the local API, until shutdown. Shutting down leaves every pod running (fail-static);
//! the next start adopts them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::config::KubeletConfig;
use super::convert::{Allocatable, Amount, DnsSettings, NodeInfo, ResolvConf};
use super::local_api;
use super::node_state::AgentState;
use super::runtime::Cri;
use super::source::{watch_directory, StaticPodDefaults};
use super::status::PodStore;
use super::volumes::NodeAllocatable;
use super::worker::{BackoffPolicy, PodWorkers, WorkerSettings};

/// How long to wait for the runtime's socket to answer at start-up.
const RUNTIME_WAIT: Duration = Duration::from_secs(60);

/// Run the kubelet against the CRI runtime at `endpoint` until `shutdown` completes.
pub async fn run(
    config: KubeletConfig,
    endpoint: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node_name = match &config.node_name {
        Some(name) => name.clone(),
        None => hostname()?,
    };
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
        host_ips: vec![host_ip().map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())],
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
    let workers = PodWorkers::new(cri.clone(), store.clone(), settings);
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
        let Some(dir) = config.static_pod_path.clone() else {
            // No source yet: still clean up what an earlier run left.
            workers.clean_up_orphans().await;
            return std::future::pending::<()>().await;
        };
        let defaults = StaticPodDefaults {
            node_name: node_name.clone(),
        };
        let mut snapshots = watch_directory(dir, defaults);
        let mut first = true;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            store.set_source_errors(snapshot.errors.clone());
            workers.sync_pods(&snapshot.pods);
            if first {
                first = false;
                workers.clean_up_orphans().await;
            }
            if snapshots.changed().await.is_err() {
                return;
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

fn hostname() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("reading the host name")?;
    Ok(name.to_string_lossy().to_lowercase())
}

/// The node's IP: the first global address of the interface holding the default route.
fn host_ip() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_owned())
    });
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let v4 = addrs.filter_map(|a| {
        let ip = a.address?.as_sockaddr_in()?.ip();
        Some((a.interface_name, ip))
    });
    let candidates: Vec<_> = v4.filter(|(_, ip)| !ip.is_loopback()).collect();
    let chosen = match &interface {
        Some(name) => candidates.iter().find(|(n, _)| n == name),
        None => None,
    };
    chosen.or(candidates.first()).map(|(_, ip)| IpAddr::V4(*ip))
}
