use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde_json::Value;

use super::*;
use crate::kubelet::bootstrap::install_crypto_provider;

fn pod(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some("prod".into()),
        uid: Some("u-1".into()),
        ..Default::default()
    }
}

#[test]
fn events_carry_the_kubelet_source_and_the_object() {
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let event = build(&pod("web"), "node-1", "Warning", "BackOff", "back-off", now);
    assert_eq!(event.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(event.metadata.name, Some(event_name("web", now)));
    assert_eq!(event.involved_object, pod("web"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reason.as_deref(), Some("BackOff"));
    assert_eq!(event.message.as_deref(), Some("back-off"));
    let source = event.source.unwrap();
    assert_eq!(source.component.as_deref(), Some("kubelet"));
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert_eq!(event.reporting_component.as_deref(), Some("kubelet"));
    assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));
    assert_eq!(event.count, Some(1));
    assert_eq!(event.first_timestamp, Some(Time(now)));
    assert_eq!(event.last_timestamp, Some(Time(now)));
    // Cluster-scoped objects' events go to the default namespace, as client-go does.
    let node = ObjectReference {
        kind: Some("Node".into()),
        name: Some("node-1".into()),
        ..Default::default()
    };
    let event = build(&node, "node-1", "Normal", "Starting", "", now);
    assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
}

/// What the fake API server saw: (verb, namespace, name, body).
type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

async fn fake_api() -> (ApiClient, Seen) {
    let seen: Seen = Arc::default();
    let app =
        Router::new()
            .route(
                "/api/v1/namespaces/{ns}/events",
                post(
                    |State(seen): State<Seen>,
                     Path(ns): Path<String>,
                     Json(mut body): Json<Value>| async move {
                        body["metadata"]["resourceVersion"] = "1".into();
                        let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
                        seen.lock()
                            .unwrap()
                            .push(("create".into(), ns, name, body.clone()));
                        (axum::http::StatusCode::CREATED, Json(body))
                    },
                ),
            )
            .route(
                "/api/v1/namespaces/{ns}/events/{name}",
                patch(
                    |State(seen): State<Seen>,
                     Path((ns, name)): Path<(String, String)>,
                     body: String| async move {
                        let patch: Value = serde_json::from_str(&body).unwrap();
                        let mut seen = seen.lock().unwrap();
                        let mut stored = seen
                            .iter()
                            .rev()
                            .find(|(_, _, n, _)| *n == name)
                            .map(|(_, _, _, b)| b.clone())
                            .unwrap();
                        for (k, v) in patch.as_object().unwrap() {
                            stored[k] = v.clone();
                        }
                        seen.push(("patch".into(), ns, name, patch));
                        Json(stored)
                    },
                ),
            )
            .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    install_crypto_provider();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (
        ApiClient::from_client(kube::Client::try_from(config).unwrap()),
        seen,
    )
}

async fn wait_for(seen: &Seen, n: usize) -> Vec<(String, String, String, Value)> {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn repeats_patch_the_first_event() {
    let (client, seen) = fake_api().await;
    let sink = EventSink::new(client, "node-1");
    for _ in 0..3 {
        sink.record(&pod("web"), "Normal", "Pulled", "pulled nginx");
    }
    sink.record(&pod("web"), "Normal", "Started", "started web");
    let seen = wait_for(&seen, 4).await;
    let verbs: Vec<_> = seen.iter().map(|(v, ..)| v.as_str()).collect();
    assert_eq!(verbs, ["create", "patch", "patch", "create"]);
    let first = &seen[0];
    assert_eq!(first.1, "prod");
    assert_eq!(first.3["reason"], "Pulled");
    assert_eq!(first.3["source"]["component"], "kubelet");
    assert_eq!(first.3["count"], 1);
    assert_eq!(
        (seen[1].2.as_str(), &seen[1].3["count"]),
        (first.2.as_str(), &2.into())
    );
    assert_eq!(
        (seen[2].2.as_str(), &seen[2].3["count"]),
        (first.2.as_str(), &3.into())
    );
    assert!(seen[2].3.get("lastTimestamp").is_some());
    assert_eq!(seen[3].3["reason"], "Started");
}

#[tokio::test]
async fn record_never_blocks_when_the_server_is_down() {
    // A port nobody listens on: the writer retries its first event while the queue fills.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    install_crypto_provider();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let sink = EventSink::new(
        ApiClient::from_client(kube::Client::try_from(config).unwrap()),
        "n",
    );
    let start = Instant::now();
    for i in 0..(QUEUE * 2) {
        sink.record(&pod(&format!("p{i}")), "Normal", "Created", "created");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
