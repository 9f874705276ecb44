//! kube-proxy's health HTTP servers: the proxy's own `/healthz` and `/livez` (is the ruleset
//! keeping up with API changes?) and one listener per `externalTrafficPolicy: Local` Service on
//! its `healthCheckNodePort`, which cloud load balancers probe to skip nodes without a local
//! endpoint.

mod healthz;
mod listener;
mod proxy_health;
mod service;
#[cfg(test)]
mod test_client;

use std::net::SocketAddr;

use axum::http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use healthz::serve;
pub use proxy_health::{Clock, HealthStatus, ProxyHealth, SystemClock};
pub use service::ServiceHealthServers;

/// Why a health server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The proxy's healthz address could not be bound.
    #[error("binding the proxy health server to {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A Service's health check node port could not be bound (the other Services still are).
    #[error("binding the health check port of service {namespace}/{name} on {addr}")]
    ServiceBind {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The address and port asked for.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// A JSON body with the headers kube-proxy sets on every health answer.
fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
