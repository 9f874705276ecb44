//! The proxy's `/healthz` and `/livez` server (kube-proxy's `healthzBindAddress`, :10256).

use std::future::Future;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::any;
use serde_json::json;

use super::{json_response, HealthError, HealthStatus, ProxyHealth};

/// What kube-proxy (Go's zero `time.Time`) reports as `lastUpdated` before the first sync.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// Bind `addr` and serve `/healthz` and `/livez` from `health` until `shutdown` resolves;
/// returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: ProxyHealth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, HealthError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HealthError::Bind { addr, source })?;
    let app = axum::Router::new()
        .route("/healthz", any(healthz))
        .route("/livez", any(livez))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "proxy health server failed");
        }
    });
    Ok(bound)
}

/// Healthy and the Node eligible for load-balancer traffic.
async fn healthz(State(health): State<ProxyHealth>) -> Response {
    let status = health.status();
    let ok = status.healthy && status.node_eligible;
    let mut body = times(&status, ok);
    body["nodeEligible"] = json!(status.node_eligible);
    json_response(code(ok), body)
}

/// Healthy, whatever the Node's state: the process is alive and keeping up.
async fn livez(State(health): State<ProxyHealth>) -> Response {
    let status = health.status();
    json_response(code(status.healthy), times(&status, status.healthy))
}

fn code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `lastUpdated` and `currentTime`; like kube-proxy, a healthy answer reports the current time
/// as `lastUpdated` (older clients read it as "the sync loop ran recently").
fn times(status: &HealthStatus, ok: bool) -> serde_json::Value {
    let last_updated = if ok {
        Some(status.current_time)
    } else {
        status.last_updated
    };
    json!({
        "lastUpdated": last_updated.map_or_else(|| NEVER.to_owned(), rfc3339),
        "currentTime": rfc3339(status.current_time),
    })
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map_or_else(|_| NEVER.to_owned(), |time| time.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::proxy_health::tests::FakeClock;
    use super::super::test_client::get;
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    async fn start() -> (SocketAddr, ProxyHealth, Arc<FakeClock>) {
        let clock = FakeClock::new();
        let health = ProxyHealth::with_clock(TIMEOUT, clock.clone());
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            health.clone(),
            std::future::pending(),
        )
        .await
        .unwrap();
        (addr, health, clock)
    }

    #[tokio::test]
    async fn healthy_proxy_answers_200_with_current_times() {
        let (addr, _health, _clock) = start().await;
        let reply = get(addr, "/healthz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        let body = reply.json();
        assert_eq!(body["nodeEligible"], true);
        assert_eq!(body["currentTime"], "2023-11-14T22:13:20Z");
        assert_eq!(body["lastUpdated"], body["currentTime"]);

        let live = get(addr, "/livez").await;
        assert_eq!(live.status, 200);
        assert!(live.json().get("nodeEligible").is_none());
        assert_eq!(get(addr, "/other").await.status, 404);
    }

    #[tokio::test]
    async fn ineligible_node_fails_healthz_but_not_livez() {
        let (addr, health, _clock) = start().await;
        health.set_node_eligible(false);
        let reply = get(addr, "/healthz").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["nodeEligible"], false);
        assert_eq!(get(addr, "/livez").await.status, 200);
    }

    #[tokio::test]
    async fn a_late_sync_fails_both_and_reports_the_last_sync() {
        let (addr, health, clock) = start().await;
        health.queued_update();
        clock.advance(TIMEOUT);
        let never = get(addr, "/livez").await;
        assert_eq!(never.status, 503);
        assert_eq!(never.json()["lastUpdated"], NEVER);

        health.updated();
        clock.advance(Duration::from_secs(5));
        health.queued_update();
        clock.advance(TIMEOUT);
        for path in ["/healthz", "/livez"] {
            let reply = get(addr, path).await;
            assert_eq!(reply.status, 503, "{path}");
            let body = reply.json();
            assert_eq!(body["lastUpdated"], "2023-11-14T22:13:50Z", "{path}");
            assert_eq!(body["currentTime"], "2023-11-14T22:14:25Z", "{path}");
        }
        health.updated();
        assert_eq!(get(addr, "/healthz").await.status, 200);
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            ProxyHealth::new(TIMEOUT),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        assert_eq!(get(addr, "/healthz").await.status, 200);
        stop.send(()).unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{addr} still accepts connections after shutdown");
    }

    #[tokio::test]
    async fn a_busy_address_is_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = serve(addr, ProxyHealth::new(TIMEOUT), std::future::pending())
            .await
            .unwrap_err();
        assert!(matches!(error, HealthError::Bind { addr: a, .. } if a == addr));
    }
}
