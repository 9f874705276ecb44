//! The server against a fake [`NodeState`], over a real unix socket, through the client.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::*;

const T: &str = "2024-05-01T10:00:00.000000001Z";

struct Fake {
    pods: Mutex<Vec<Pod>>,
    changes: broadcast::Sender<WatchEvent>,
    logs_root: PathBuf,
    restart_counts: HashMap<String, u32>,
    running: watch::Sender<bool>,
    /// (pod, container) of each exec.
    execs: Mutex<Vec<(String, Option<String>)>>,
}

impl NodeState for Fake {
    fn pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }

    fn source_errors(&self) -> Vec<SourceError> {
        vec![SourceError {
            path: PathBuf::from("/etc/manifests/bad.yaml"),
            message: "missing field `spec`".to_owned(),
        }]
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.changes.subscribe()
    }

    fn events(&self, namespace: &str, name: &str) -> Vec<PodEvent> {
        let at = Time(T.parse().unwrap());
        vec![PodEvent {
            first_timestamp: at.clone(),
            last_timestamp: at,
            event_type: EventType::Normal,
            reason: "Seen".to_owned(),
            message: format!("{namespace}/{name}"),
            count: 2,
        }]
    }

    fn log_dir(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<LogTarget, ApiError> {
        let container = container.ok_or_else(|| ApiError::Internal("unresolved".into()))?;
        let key = format!("{namespace}_{name}_uid/{container}");
        Ok(LogTarget {
            dir: self.logs_root.join(&key),
            restart_count: self.restart_counts.get(&key).copied().unwrap_or(0),
            running: self.running.subscribe(),
        })
    }

    async fn exec(
        &self,
        _namespace: &str,
        name: &str,
        container: Option<&str>,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, ApiError> {
        self.execs
            .lock()
            .unwrap()
            .push((name.to_owned(), container.map(str::to_owned)));
        let mut stdout = command.join(" ").into_bytes();
        stdout.extend_from_slice(&[0, 0xff, b'\n']);
        Ok(ExecOutput {
            exit_code: 3,
            stdout,
            stderr: format!("timeout={}", timeout.as_secs()).into_bytes(),
        })
    }
}

fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn web() -> Pod {
    pod(json!({
        "metadata": {"name": "web-node1", "namespace": "default", "uid": "u-web"},
        "spec": {"nodeName": "node1", "containers": [{"name": "web", "image": "nginx"}]},
        "status": {"phase": "Running"}
    }))
}

fn multi() -> Pod {
    pod(json!({
        "metadata": {"name": "multi", "namespace": "other", "uid": "u-multi"},
        "spec": {
            "nodeName": "node1",
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]
        }
    }))
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: Arc<Fake>,
    client: Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(capacity: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let logs_root = dir.path().join("pods");
    let mut restart_counts = HashMap::new();
    restart_counts.insert("default_web-node1_uid/web".to_owned(), 2);
    let state = Arc::new(Fake {
        pods: Mutex::new(vec![multi(), web()]),
        changes: broadcast::channel(capacity).0,
        logs_root,
        restart_counts,
        running: watch::channel(true).0,
        execs: Mutex::new(Vec::new()),
    });
    let listener = bind(&socket).await.unwrap();
    let app = router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = Client::new(&socket);
    Harness {
        _dir: dir,
        socket,
        state,
        client,
        server,
    }
}

fn web_log_dir(h: &Harness) -> PathBuf {
    let dir = h.state.logs_root.join("default_web-node1_uid/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

async fn collect(stream: impl Stream<Item = Result<bytes::Bytes, ClientError>>) -> String {
    let chunks: Vec<_> = stream.collect().await;
    let bytes: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn status_of(error: ClientError) -> (u16, String) {
    match error {
        ClientError::Api { status, message } => (status, message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn socket_is_private_and_stale_sockets_are_replaced() {
    let h = start(16).await;
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A live socket is not stolen.
    assert!(matches!(
        bind(&h.socket).await,
        Err(ServeError::InUse { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let listener = bind(&stale).await.unwrap();
    drop(listener);
    let file = dir.path().join("file");
    std::fs::write(&file, "keep").unwrap();
    assert!(matches!(
        bind(&file).await,
        Err(ServeError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

#[tokio::test]
async fn serve_removes_its_socket_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let h = start(16).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        let state = h.state.clone();
        async move {
            serve(&socket, state, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let client = Client::new(&socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.pods(None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists());
}

#[tokio::test]
async fn lists_pods_with_manifest_errors() {
    let h = start(16).await;
    let all = h.client.pods(None).await.unwrap();
    let names: Vec<_> = all
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web-node1", "multi"], "sorted by namespace, name");
    assert_eq!(all.errors.len(), 1);
    assert_eq!(all.errors[0].path, Path::new("/etc/manifests/bad.yaml"));
    let other = h.client.pods(Some("other")).await.unwrap();
    assert_eq!(other.items.len(), 1);
    assert!(h.client.pods(Some("none")).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn watch_lists_then_streams_changes_of_its_namespace() {
    let h = start(16).await;
    let mut all = Box::pin(h.client.watch(None).await.unwrap());
    let mut other = Box::pin(h.client.watch(Some("other")).await.unwrap());
    for expected in ["web-node1", "multi"] {
        let event = all.next().await.unwrap().unwrap();
        assert_eq!(event.kind, WatchEventType::Added);
        assert_eq!(event.object.metadata.name.as_deref(), Some(expected));
    }
    let first = other.next().await.unwrap().unwrap();
    assert_eq!(first.object.metadata.name.as_deref(), Some("multi"));

    // Both watchers have subscribed (they sent their listing): push changes.
    let mut changed = web();
    changed.metadata.labels = Some([("v".to_owned(), "2".to_owned())].into());
    h.state
        .changes
        .send(WatchEvent {
            kind: WatchEventType::Modified,
            object: changed,
        })
        .unwrap();
    h.state
        .changes
        .send(WatchEvent {
            kind: WatchEventType::Deleted,
            object: multi(),
        })
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), all.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, WatchEventType::Modified);
    assert_eq!(event.object.metadata.labels.unwrap()["v"], "2");
    let event = tokio::time::timeout(Duration::from_secs(10), all.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, WatchEventType::Deleted);
    // The namespaced watch skipped the default-namespace change.
    let event = tokio::time::timeout(Duration::from_secs(10), other.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, WatchEventType::Deleted);
    assert_eq!(event.object.metadata.name.as_deref(), Some("multi"));
}

#[tokio::test]
async fn lagging_watch_resynchronises_to_the_current_state() {
    let h = start(2).await;
    let mut events = Box::pin(h.client.watch(None).await.unwrap());
    events.next().await.unwrap().unwrap();
    events.next().await.unwrap().unwrap();
    // Far more changes than the broadcast buffer while the client is not reading.
    for version in 0..500 {
        let mut pod = web();
        pod.metadata.labels = Some([("v".to_owned(), version.to_string())].into());
        if version == 499 {
            h.state.pods.lock().unwrap()[1] = pod.clone();
        }
        let _ = h.state.changes.send(WatchEvent {
            kind: WatchEventType::Modified,
            object: pod,
        });
    }
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            let labels = event.object.metadata.labels.clone().unwrap_or_default();
            if labels.get("v").map(String::as_str) == Some("499") {
                return event;
            }
        }
    })
    .await
    .expect("the final state never arrived");
    assert_eq!(last.kind, WatchEventType::Modified);
}

#[tokio::test]
async fn describes_by_name_or_static_manifest_name() {
    let h = start(16).await;
    for name in ["web", "web-node1"] {
        let detail = h.client.pod("default", name).await.unwrap();
        assert_eq!(detail.pod.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(detail.events.len(), 1);
        assert_eq!(detail.events[0].message, "default/web-node1");
    }
}

#[tokio::test]
async fn unknown_pods_are_404() {
    let h = start(16).await;
    for (ns, name) in [
        ("default", "nope"),
        ("other", "web"),
        ("default", "web-node"),
    ] {
        let (status, message) = status_of(h.client.pod(ns, name).await.unwrap_err());
        assert_eq!(status, 404);
        assert_eq!(message, format!("pods \"{name}\" not found"));
    }
    let query = LogQuery::default();
    let error = h
        .client
        .logs("default", "nope", &query)
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(error).0, 404);
}

#[tokio::test]
async fn ambiguous_or_unknown_containers_are_400() {
    let h = start(16).await;
    let error = h
        .client
        .logs("other", "multi", &LogQuery::default())
        .await
        .err()
        .unwrap();
    let (status, message) = status_of(error);
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "a container name must be specified for pod multi, choose one of: [a b] \
         or one of the init containers: [init]"
    );
    let request = ExecRequest {
        container: None,
        command: vec!["true".into()],
        timeout_seconds: 0,
    };
    let (status, _) = status_of(h.client.exec("other", "multi", &request).await.unwrap_err());
    assert_eq!(status, 400);
    let query = LogQuery {
        container: Some("zzz".into()),
        ..LogQuery::default()
    };
    let (status, message) = status_of(h.client.logs("other", "multi", &query).await.err().unwrap());
    assert_eq!(
        (status, message.as_str()),
        (400, "container zzz is not valid for pod multi")
    );
    assert!(h.state.execs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn logs_with_tail_previous_and_timestamps() {
    let h = start(16).await;
    let dir = web_log_dir(&h);
    append(&dir.join("1.log"), &format!("{T} stdout F previous run\n"));
    append(
        &dir.join("2.log"),
        &format!("{T} stdout F a\n{T} stderr F b\n{T} stdout P c\n{T} stdout F d\n"),
    );
    let logs = |query: LogQuery| {
        let client = h.client.clone();
        async move { collect(client.logs("default", "web", &query).await.unwrap()).await }
    };
    assert_eq!(logs(LogQuery::default()).await, "a\nb\ncd\n");
    let tail = LogQuery {
        tail_lines: Some(2),
        ..LogQuery::default()
    };
    assert_eq!(logs(tail).await, "b\ncd\n");
    let previous = LogQuery {
        previous: true,
        follow: true,
        timestamps: true,
        ..LogQuery::default()
    };
    assert_eq!(logs(previous).await, format!("{T} previous run\n"));
    let stderr = LogQuery {
        stream: Some(crate::kubelet::logs::StreamFilter::Stderr),
        ..LogQuery::default()
    };
    assert_eq!(logs(stderr).await, "b\n");

    // No earlier instance: the API server's 400.
    std::fs::remove_file(dir.join("1.log")).unwrap();
    let previous = LogQuery {
        previous: true,
        ..LogQuery::default()
    };
    let error = h
        .client
        .logs("default", "web", &previous)
        .await
        .err()
        .unwrap();
    let (status, message) = status_of(error);
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "previous terminated container \"web\" in pod \"web-node1\" not found"
    );
}

#[tokio::test]
async fn follow_streams_until_the_container_stops() {
    let h = start(16).await;
    let dir = web_log_dir(&h);
    let file = dir.join("2.log");
    append(&file, &format!("{T} stdout F first\n"));
    let query = LogQuery {
        follow: true,
        ..LogQuery::default()
    };
    let mut stream = Box::pin(h.client.logs("default", "web", &query).await.unwrap());
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut read_until = async |got: &mut String, want: &str| {
        while !got.ends_with(want) {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("timed out")
                .expect("ended early")
                .unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until(&mut got, "first\n").await;
    append(&file, &format!("{T} stdout F second\n"));
    read_until(&mut got, "second\n").await;
    append(&file, &format!("{T} stdout F last words\n"));
    h.state.running.send_replace(false);
    let rest = tokio::time::timeout(Duration::from_secs(10), collect(stream))
        .await
        .expect("follow did not end when the container stopped");
    assert_eq!(format!("{got}{rest}"), "first\nsecond\nlast words\n");
}

#[tokio::test]
async fn exec_returns_exit_code_and_binary_output() {
    let h = start(16).await;
    let request = ExecRequest {
        container: None,
        command: vec!["echo".into(), "hi there".into()],
        timeout_seconds: 7,
    };
    let output = h.client.exec("default", "web", &request).await.unwrap();
    assert_eq!(output.exit_code, 3);
    assert_eq!(output.stdout, b"echo hi there\x00\xff\n");
    assert_eq!(output.stderr, b"timeout=7");
    let request = ExecRequest {
        container: Some("b".into()),
        command: vec!["true".into()],
        timeout_seconds: 0,
    };
    h.client.exec("other", "multi", &request).await.unwrap();
    assert_eq!(
        *h.state.execs.lock().unwrap(),
        [
            ("web-node1".to_owned(), Some("web".to_owned())),
            ("multi".to_owned(), Some("b".to_owned()))
        ]
    );
    let empty = ExecRequest {
        container: None,
        command: Vec::new(),
        timeout_seconds: 0,
    };
    let (status, _) = status_of(h.client.exec("default", "web", &empty).await.unwrap_err());
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_queries_and_unknown_routes_answer_json_errors() {
    let h = start(16).await;
    let query = LogQuery {
        container: Some("web".into()),
        ..LogQuery::default()
    };
    // tailLines must be a number: send one that is not, bypassing the client's encoding.
    let error = h
        .client
        .logs("default", "web&tailLines=x", &query)
        .await
        .err()
        .unwrap();
    assert_eq!(
        status_of(error).0,
        404,
        "the name is percent-encoded, not a query"
    );
    let stream = tokio::net::UnixStream::connect(&h.socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for (uri, status) in [
        ("/v1/namespaces/default/pods/web/log?tailLines=x", 400),
        ("/v1/nothing", 404),
    ] {
        let request = hyper::Request::get(uri)
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{uri}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(!error.error.is_empty());
    }
}

#[test]
fn default_container_annotation_picks_the_container() {
    let mut annotated = multi();
    annotated.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/default-container".to_owned(),
            "b".to_owned(),
        )]
        .into(),
    );
    assert_eq!(resolve_container(&annotated, None).unwrap(), "b");
    assert_eq!(resolve_container(&annotated, Some("init")).unwrap(), "init");
    assert_eq!(resolve_container(&web(), None).unwrap(), "web");
    let empty = pod(json!({"metadata": {"name": "e"}}));
    assert!(matches!(
        resolve_container(&empty, None),
        Err(ApiError::BadRequest(_))
    ));
}
