//! Per-Service health check servers: one listener per `externalTrafficPolicy: Local` Service on
//! its `healthCheckNodePort`, answering 200 while the node has a local endpoint for it (and the
//! proxy is healthy), so load balancers send traffic only to nodes that can serve it locally.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tokio::sync::oneshot;

use super::listener::TrackedListener;
use super::{json_response, HealthError, ProxyHealth};

/// The listeners for every Service that wants one, kept in step by [`Self::sync`]; dropping
/// this closes them all.
pub struct ServiceHealthServers {
    addresses: Vec<IpAddr>,
    health: ProxyHealth,
    services: BTreeMap<(String, String), Instance>,
}

/// One Service's listeners (one per node address) and its local endpoint count.
struct Instance {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    servers: Vec<Server>,
}

/// A running listener: dropping `stop` shuts it down, `released` completes once the port is free.
struct Server {
    stop: oneshot::Sender<()>,
    released: oneshot::Receiver<()>,
}

impl Server {
    async fn close(self) {
        drop(self.stop);
        // Completes with an error when the listener is dropped: that is the signal.
        let _ = self.released.await;
    }
}

/// What one Service's handler reads on each request.
struct Answer {
    namespace: String,
    name: String,
    local_endpoints: Arc<AtomicUsize>,
    health: ProxyHealth,
}

impl ServiceHealthServers {
    /// Servers listening on `addresses` (kube-proxy: the node IPs matching nodePortAddresses);
    /// an empty list means every IPv4 address (0.0.0.0). Pass `::` to listen dual-stack.
    pub fn new(addresses: Vec<IpAddr>, health: ProxyHealth) -> Self {
        let addresses = if addresses.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            addresses
        };
        Self {
            addresses,
            health,
            services: BTreeMap::new(),
        }
    }

    /// Serve exactly `wanted` ((namespace, name) → (healthCheckNodePort, local endpoints)):
    /// close listeners no longer wanted or on another port, open new ones, and update the
    /// counts of the others without touching their listeners. Ports that cannot be bound are
    /// returned (and retried on the next sync); the other Services are served regardless.
    /// Port 0 (no healthCheckNodePort allocated) gets no listener.
    pub async fn sync(
        &mut self,
        wanted: BTreeMap<(String, String), (u16, usize)>,
    ) -> Vec<HealthError> {
        // Close first, so a port released by one Service can be taken by another right away.
        let stale: Vec<_> = self
            .services
            .iter()
            .filter(|(key, instance)| {
                wanted.get(*key).map(|(port, _)| *port) != Some(instance.port)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(instance) = self.services.remove(&key) {
                tracing::debug!(namespace = %key.0, name = %key.1, port = instance.port, "closing service health check");
                for server in instance.servers {
                    server.close().await;
                }
            }
        }

        let mut errors = Vec::new();
        for (key, (port, local_endpoints)) in wanted {
            if port == 0 {
                continue;
            }
            if let Some(instance) = self.services.get(&key) {
                instance
                    .local_endpoints
                    .store(local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(&key, port, local_endpoints).await {
                Ok(instance) => {
                    tracing::debug!(namespace = %key.0, name = %key.1, port, "opened service health check");
                    self.services.insert(key, instance);
                }
                Err(error) => errors.push(error),
            }
        }
        errors
    }

    /// Listen on `port` on every address, or on none (a partial set would answer for the
    /// Service on some addresses only).
    async fn open(
        &self,
        (namespace, name): &(String, String),
        port: u16,
        local_endpoints: usize,
    ) -> Result<Instance, HealthError> {
        let answer = Arc::new(Answer {
            namespace: namespace.clone(),
            name: name.clone(),
            local_endpoints: Arc::new(AtomicUsize::new(local_endpoints)),
            health: self.health.clone(),
        });
        let mut servers = Vec::with_capacity(self.addresses.len());
        for ip in &self.addresses {
            let addr = SocketAddr::new(*ip, port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => servers.push(spawn(listener, answer.clone())),
                Err(source) => {
                    for server in servers {
                        server.close().await;
                    }
                    return Err(HealthError::ServiceBind {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        addr,
                        source,
                    });
                }
            }
        }
        Ok(Instance {
            port,
            local_endpoints: answer.local_endpoints.clone(),
            servers,
        })
    }
}

/// Serve `answer` on every path of `listener` until the returned server is closed.
fn spawn(listener: tokio::net::TcpListener, answer: Arc<Answer>) -> Server {
    let (listener, released) = TrackedListener::new(listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let app = axum::Router::new().fallback(respond).with_state(answer);
    tokio::spawn(async move {
        let shutdown = async move {
            // A send or the sender's drop: either means stop.
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "service health check server failed");
        }
    });
    Server { stop, released }
}

async fn respond(State(answer): State<Arc<Answer>>) -> Response {
    let local_endpoints = answer.local_endpoints.load(Ordering::Relaxed);
    let proxy_healthy = answer.health.is_healthy();
    let status = if local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "service": {"namespace": answer.namespace, "name": answer.name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    json_response(status, body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::proxy_health::tests::FakeClock;
    use super::super::test_client::{get, Connection};
    use super::*;

    fn loopback(health: ProxyHealth) -> ServiceHealthServers {
        ServiceHealthServers::new(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], health)
    }

    /// A port nobody listens on right now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn key(namespace: &str, name: &str) -> (String, String) {
        (namespace.to_owned(), name.to_owned())
    }

    async fn refused(port: u16) -> bool {
        tokio::net::TcpStream::connect(at(port)).await.is_err()
    }

    #[tokio::test]
    async fn each_service_answers_its_local_endpoint_count_on_any_path() {
        let mut servers = loopback(ProxyHealth::new(Duration::from_secs(60)));
        let (web, db) = (free_port(), free_port());
        let wanted = BTreeMap::from([(key("shop", "web"), (web, 2)), (key("shop", "db"), (db, 0))]);
        assert!(servers.sync(wanted).await.is_empty());

        let reply = get(at(web), "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            reply.json(),
            json!({"service": {"namespace": "shop", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        let reply = get(at(db), "/any/path").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["service"]["name"], "db");
        assert_eq!(reply.json()["localEndpoints"], 0);
    }

    #[tokio::test]
    async fn counts_change_without_restarting_the_listener() {
        let clock = FakeClock::new();
        let health = ProxyHealth::with_clock(Duration::from_secs(60), clock.clone());
        let mut servers = loopback(health.clone());
        let port = free_port();
        let wanted = |count| BTreeMap::from([(key("ns", "svc"), (port, count))]);
        assert!(servers.sync(wanted(1)).await.is_empty());

        // One kept-alive connection: a restarted listener would have closed it.
        let mut connection = Connection::open(at(port)).await;
        assert_eq!(connection.get("/").await.status, 200);
        assert!(servers.sync(wanted(0)).await.is_empty());
        let reply = connection.get("/").await;
        assert_eq!(
            (reply.status, reply.json()["localEndpoints"].clone()),
            (503, json!(0))
        );
        assert!(servers.sync(wanted(3)).await.is_empty());
        assert_eq!(connection.get("/").await.status, 200);

        // A proxy that stopped keeping up fails every Service, whatever its endpoints.
        health.queued_update();
        clock.advance(Duration::from_secs(60));
        let reply = connection.get("/").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["serviceProxyHealthy"], false);
        assert_eq!(reply.json()["localEndpoints"], 3);
    }

    #[tokio::test]
    async fn removed_and_moved_services_release_their_ports_at_once() {
        let mut servers = loopback(ProxyHealth::new(Duration::from_secs(60)));
        let (first, second, moved_to) = (free_port(), free_port(), free_port());
        let wanted = BTreeMap::from([
            (key("a", "one"), (first, 1)),
            (key("a", "two"), (second, 1)),
        ]);
        assert!(servers.sync(wanted).await.is_empty());

        // "one" goes away and "three" takes its port in the same sync; "two" moves.
        let wanted = BTreeMap::from([
            (key("a", "two"), (moved_to, 1)),
            (key("a", "three"), (first, 1)),
        ]);
        assert!(servers.sync(wanted).await.is_empty());
        assert_eq!(get(at(first), "/").await.json()["service"]["name"], "three");
        assert_eq!(
            get(at(moved_to), "/").await.json()["service"]["name"],
            "two"
        );
        assert!(
            refused(second).await,
            "the old port of a moved service is closed"
        );

        // Port 0 is "no port allocated": it closes the Service's listener and opens none.
        let wanted = BTreeMap::from([(key("a", "two"), (0, 1)), (key("a", "three"), (first, 1))]);
        assert!(servers.sync(wanted).await.is_empty());
        assert!(refused(moved_to).await);
        assert_eq!(servers.services.len(), 1);

        assert!(servers.sync(BTreeMap::new()).await.is_empty());
        assert!(refused(first).await);
    }

    #[tokio::test]
    async fn a_busy_port_is_reported_and_retried_without_failing_the_others() {
        let mut servers = loopback(ProxyHealth::new(Duration::from_secs(60)));
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = blocker.local_addr().unwrap().port();
        let fine = free_port();
        let wanted = BTreeMap::from([(key("x", "busy"), (busy, 1)), (key("x", "fine"), (fine, 1))]);

        let errors = servers.sync(wanted.clone()).await;
        assert_eq!(errors.len(), 1);
        assert!(matches!(
            &errors[0],
            HealthError::ServiceBind { name, addr, .. } if name == "busy" && addr.port() == busy
        ));
        assert_eq!(get(at(fine), "/").await.status, 200);

        drop(blocker);
        assert!(servers.sync(wanted).await.is_empty());
        assert_eq!(get(at(busy), "/").await.json()["service"]["name"], "busy");
    }

    #[tokio::test]
    async fn dropping_the_servers_closes_every_port() {
        let mut servers = loopback(ProxyHealth::new(Duration::from_secs(60)));
        let port = free_port();
        assert!(servers
            .sync(BTreeMap::from([(key("n", "s"), (port, 1))]))
            .await
            .is_empty());
        drop(servers);
        for _ in 0..100 {
            if refused(port).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("port {port} still open after the servers were dropped");
    }
}
