//! Running the server: sockets, the zone rebuilder fed by store changes, and `/health`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::forward::{ForwardSettings, Forwarder};
use crate::handler::Handler;
use crate::zone::{ZoneIndex, ZoneSettings};
use crate::{ClusterState, DnsConfig, DnsError, DnsMetrics};

/// Idle time after which a TCP client is disconnected (slowloris protection).
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection buffer of outgoing TCP responses.
const TCP_RESPONSE_BUFFER: usize = 16;
/// Time a `/health` client gets to send its request line.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses the server listens on: `local_address` and `serve_cluster_ip` on `port`.
pub fn listen_addresses(config: &DnsConfig) -> Vec<SocketAddr> {
    config.listen_addresses()
}

/// Runs the server on the given sockets until shutdown; rebuilds the zone index whenever
/// `changes` moves, from `snapshot()` (None until the initial lists are done: the cluster
/// zone answers SERVFAIL meanwhile, the rest is forwarded), swapping it atomically.
pub async fn serve(
    config: DnsConfig,
    sockets: Vec<SocketAddr>,
    changes: watch::Receiver<u64>,
    snapshot: impl Fn() -> Option<ClusterState> + Send + Sync + 'static,
    metrics: DnsMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    let upstreams = config.resolve_upstreams()?;
    if upstreams.is_empty() {
        tracing::warn!("no DNS upstreams configured: names outside the cluster get SERVFAIL");
    }
    let server_metrics = metrics.server(&format!("dns://:{}", config.port), &config.cluster_domain);
    let settings = ForwardSettings {
        upstreams,
        protocol: config.upstream_protocol,
        cache_size: config.cache_size,
        serve_stale: config.serve_stale,
    };
    let forwarder = Forwarder::new(&settings, &metrics, server_metrics.clone());
    let zone = Arc::new(ArcSwapOption::empty());
    let handler = Handler::new(
        zone.clone(),
        &config.cluster_domain,
        forwarder,
        server_metrics,
    );
    let mut server = Server::new(handler);
    for addr in &sockets {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "udp",
                addr: *addr,
                source,
            })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "tcp",
                addr: *addr,
                source,
            })?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    let health = match config.health_bind_address.as_str() {
        "" => None,
        text => Some(health_listener(text).await?),
    };
    let settings = ZoneSettings {
        domain: config.cluster_domain.clone(),
        ttl: config.ttl,
        pods: config.pods,
    };
    let background = async {
        tokio::join!(
            rebuild_zone(zone, changes, Arc::new(snapshot), settings),
            async {
                if let Some(listener) = health {
                    serve_health(listener).await;
                }
            }
        );
    };
    tracing::info!(?sockets, "cluster DNS serving");
    tokio::select! {
        () = shutdown => {}
        () = background => {}
        result = server.block_until_done() => {
            return result.map_err(|e| DnsError::Server(e.to_string()));
        }
    }
    server
        .shutdown_gracefully()
        .await
        .map_err(|e| DnsError::Server(e.to_string()))
}

/// Rebuilds the index on every change (changes arriving during a build coalesce into one
/// more build) and publishes it atomically; answering never waits for a build.
async fn rebuild_zone(
    zone: Arc<ArcSwapOption<ZoneIndex>>,
    mut changes: watch::Receiver<u64>,
    snapshot: Arc<dyn Fn() -> Option<ClusterState> + Send + Sync>,
    settings: ZoneSettings,
) {
    loop {
        changes.borrow_and_update();
        let snapshot = snapshot.clone();
        let settings = settings.clone();
        // Building takes milliseconds of CPU for big clusters: keep it off the answering tasks.
        let built = tokio::task::spawn_blocking(move || {
            snapshot().map(|state| ZoneIndex::build(&state, &settings, serial()))
        })
        .await;
        match built {
            Ok(Some(index)) => {
                tracing::debug!(names = index.len(), "cluster zone rebuilt");
                zone.store(Some(Arc::new(index)));
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "building the cluster zone failed"),
        }
        if changes.changed().await.is_err() {
            // The stores are gone: keep serving the last index until shutdown.
            return std::future::pending().await;
        }
    }
}

/// SOA serial: seconds since the epoch (like CoreDNS), wrapping in 2106.
fn serial() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs & u64::from(u32::MAX)).unwrap_or(0)
}

async fn health_listener(text: &str) -> Result<TcpListener, DnsError> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| DnsError::BadHealthAddress(text.to_owned()))?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            proto: "http",
            addr,
            source,
        })
}

/// `GET /health` → 200 OK, like CoreDNS's health plugin; anything else → 404.
async fn serve_health(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let Ok(Ok(len)) = tokio::time::timeout(HEALTH_TIMEOUT, stream.read(&mut buffer)).await
            else {
                return;
            };
            let ok = buffer[..len].starts_with(b"GET /health ")
                || buffer[..len].starts_with(b"HEAD /health ");
            let reply: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(reply).await;
        });
    }
}
