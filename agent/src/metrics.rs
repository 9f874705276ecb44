//! The agent's one Prometheus registry, served over plain HTTP on `metricsBindAddress` for
//! node-local scrapers. Components register their own families at start-up; the registry
//! is frozen before serving.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What Prometheus is told the exposition is (prometheus-client writes OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bind `address` (empty: metrics off) and serve `/metrics` until `shutdown`.
pub async fn serve(
    address: &str,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<SocketAddr>> {
    if address.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))?;
    let bound = listener
        .local_addr()
        .context("reading the metrics address")?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { exposition(&registry) }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok(Some(bound))
}

fn exposition(registry: &Registry) -> axum::response::Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {error}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn registered_families_are_served_as_openmetrics_text() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("capstan_test_events", "Test events", counter.clone());
        counter.inc_by(3);
        let addr = serve("127.0.0.1:0", Arc::new(registry), std::future::pending())
            .await
            .unwrap()
            .unwrap();
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert!(response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let body = response.text().await.unwrap();
        assert!(body.contains("capstan_test_events_total 3"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn an_empty_address_turns_metrics_off() {
        let served = serve("", Arc::new(Registry::default()), std::future::pending())
            .await
            .unwrap();
        assert!(served.is_none());
    }
}
