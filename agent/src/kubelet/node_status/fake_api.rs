//! An in-process stand-in for the API server's lease endpoints, so lease timing can be
//! tested under tokio's paused clock: it records when each request arrives and can be told
//! to fail for a while.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::kubelet::bootstrap::ApiClient;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// When it arrived (tokio clock).
    pub at: Instant,
    /// Whether it was failed on purpose.
    pub failed: bool,
}

#[derive(Default)]
struct State {
    lease: Option<serde_json::Value>,
    version: u64,
    failing_until: Option<Instant>,
    seen: Vec<Seen>,
}

/// The fake server's handle.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client whose every request this fake answers.
    pub fn client(&self) -> ApiClient {
        let state = self.state.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let state = state.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let (code, reply) = answer(&state, &parts.method, &body);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(reply.to_string())));
                response.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            }
        });
        ApiClient::from_client(kube::Client::new(service, "default"))
    }

    /// Answer 503 to every request until `until`.
    pub fn fail_until(&self, until: Instant) {
        self.lock().failing_until = Some(until);
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn answer(state: &Mutex<State>, method: &Method, body: &[u8]) -> (StatusCode, serde_json::Value) {
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    let failed = state.failing_until.is_some_and(|until| now < until);
    state.seen.push(Seen {
        method: method.clone(),
        at: now,
        failed,
    });
    if failed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            status(503, "ServiceUnavailable"),
        );
    }
    let mut store = |body: &[u8], code: StatusCode| {
        let Ok(mut object) = serde_json::from_slice::<serde_json::Value>(body) else {
            return (StatusCode::BAD_REQUEST, status(400, "BadRequest"));
        };
        state.version += 1;
        object["metadata"]["resourceVersion"] = state.version.to_string().into();
        state.lease = Some(object.clone());
        (code, object)
    };
    match *method {
        Method::GET => match state.lease.clone() {
            Some(lease) => (StatusCode::OK, lease),
            None => (StatusCode::NOT_FOUND, status(404, "NotFound")),
        },
        Method::POST => store(body, StatusCode::CREATED),
        Method::PUT => store(body, StatusCode::OK),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            status(405, "MethodNotAllowed"),
        ),
    }
}
