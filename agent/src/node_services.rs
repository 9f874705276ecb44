//! The cluster services a node runs next to the kubelet: the service proxy and the cluster
//! DNS server, both fed from one set of shared watches, and the metrics listener their
//! families are scraped from. `capstan agent` runs them in cluster mode; `capstan proxy` and
//! `capstan dns` run one of them alone.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::kubelet::bootstrap::ApiClient;
use crate::service_stores::ServiceStores;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct NodeServicesConfig {
    /// This node's name (topology, local endpoints, Events).
    pub node_name: String,
    /// The service proxy; not run when `enabled` is false.
    pub proxy: netproxy::ProxyConfig,
    /// The DNS server; not run when `enabled` is false.
    pub dns: dns::DnsConfig,
}

/// Run the enabled services until `shutdown`, then stop them. Rules and addresses stay in
/// place (fail-static): the next start adopts them.
pub async fn run(
    client: ApiClient,
    config: NodeServicesConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let NodeServicesConfig {
        node_name,
        proxy,
        dns,
    } = config;
    let _ = node_name;
    if !dns.enabled {
        shutdown.await;
        return Ok(());
    }
    let with_pods = dns.enabled && dns.pods == dns::PodRecords::Verified;
    let stores = ServiceStores::start(&client, with_pods);
    let mut registry = Registry::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    if dns.enabled {
        tasks.spawn(run_dns(dns, stores.clone(), &mut registry, stopped()));
    }
    crate::metrics::serve(&proxy.metrics_bind_address, Arc::new(registry), stopped()).await?;

    let result = tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err(anyhow::anyhow!("a node service stopped unexpectedly")),
            Ok(Err(error)) => Err(error),
            Err(error) => Err(anyhow::Error::new(error).context("node service task")),
        },
    };
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    result
}

/// The DNS server on the node-local address (and the kube-dns ClusterIP when configured).
fn run_dns(
    config: dns::DnsConfig,
    stores: ServiceStores,
    registry: &mut Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
    let metrics = dns::DnsMetrics::register(registry);
    async move {
        let install = config.clone();
        tokio::task::spawn_blocking(move || dns::NodeLocal::install(&install))
            .await
            .context("node-local DNS address task")?
            .context("setting up the node-local DNS address")?;
        let sockets = dns::listen_addresses(&config);
        tracing::info!(?sockets, domain = %config.cluster_domain, "cluster DNS serving");
        let changes = stores.changes();
        let snapshot = move || {
            let services = stores.services_and_slices()?;
            Some(dns::ClusterState {
                services: services.services,
                slices: services.slices,
                pods: stores.pods()?,
            })
        };
        dns::serve(config, sockets, changes, snapshot, metrics, shutdown)
            .await
            .context("cluster DNS server")
    }
}
