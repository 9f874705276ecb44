//! The local API server: axum routes over a [`NodeState`], served on a unix socket.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::types::{
    ApiError, ErrorBody, ExecRequest, ExecResponse, LogQuery, NodeState, PodDetail, PodList,
    WatchEvent, WatchEventType,
};
use crate::kubelet::logs::{self, LogOptions, LogsError};

/// The annotation kubectl reads to pick a pod's default container.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Why the local API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Something other than a socket sits at the socket path; it is left alone.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process answers on the socket (another agent is running).
    #[error("another process is serving on {}", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Creating, binding or publishing the socket failed.
    #[error("binding {}", path.display())]
    Bind {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The server failed while running.
    #[error("serving the local API")]
    Serve(#[source] io::Error),
}

/// Bind the socket: mode 0600, replacing a stale socket but never a live one or a non-socket.
///
/// The socket is bound under a temporary name, restricted, then renamed into place, so it
/// is never reachable with looser permissions.
pub async fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let bind_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Bind { path, source }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ServeError::InUse {
                    path: path.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(path)(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind_error(parent))?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(&temp)(e)),
    }
    let listener = UnixListener::bind(&temp).map_err(bind_error(&temp))?;
    let published = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = published {
        let _ = std::fs::remove_file(&temp);
        return Err(bind_error(path)(e));
    }
    Ok(listener)
}

/// Serve the local API on `socket` until `shutdown` resolves; the socket is removed after.
pub async fn serve<S: NodeState>(
    socket: &Path,
    state: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = bind(socket).await?;
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve);
    let _ = std::fs::remove_file(socket);
    result
}

/// The routes (see the module documentation) over `state`.
pub fn router<S: NodeState>(state: Arc<S>) -> Router {
    Router::new()
        .route("/v1/pods", get(list_all::<S>))
        .route("/v1/namespaces/{namespace}/pods", get(list_namespace::<S>))
        .route("/v1/namespaces/{namespace}/pods/{name}", get(describe::<S>))
        .route("/v1/namespaces/{namespace}/pods/{name}/log", get(log::<S>))
        .route(
            "/v1/namespaces/{namespace}/pods/{name}/exec",
            post(exec::<S>),
        )
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// Query of the list routes.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    watch: bool,
}

async fn list_all<S: NodeState>(
    State(state): State<Arc<S>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(state, None, query)
}

async fn list_namespace<S: NodeState>(
    State(state): State<Arc<S>>,
    UrlPath(namespace): UrlPath<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(state, Some(namespace), query)
}

fn list<S: NodeState>(
    state: Arc<S>,
    namespace: Option<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if query.watch {
        return Ok(watch(state, namespace));
    }
    let mut items: Vec<Pod> = state
        .pods()
        .into_iter()
        .filter(|pod| in_namespace(pod, namespace.as_deref()))
        .collect();
    items.sort_by_key(pod_key);
    let list = PodList {
        items,
        errors: state.source_errors(),
    };
    Ok(Json(list).into_response())
}

/// Newline-delimited watch events: the current pods as ADDED, then each change.
fn watch<S: NodeState>(state: Arc<S>, namespace: Option<String>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(64);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            namespace,
            known: HashMap::new(),
            tx,
        };
        watcher.run(&*state).await;
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|e| ApiError::Internal(e.to_string()).into_response())
}

/// One watch connection: what it has told the client, so a lagging receiver can catch up.
struct Watcher {
    namespace: Option<String>,
    /// Last state sent per pod UID (or namespace/name).
    known: HashMap<String, Pod>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl Watcher {
    async fn run<S: NodeState>(&mut self, state: &S) {
        // Subscribe before listing, so no change falls between the two.
        let mut rx = state.watch();
        if !self.resync(state).await {
            return;
        }
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = self.tx.closed() => return,
            };
            let delivered = match event {
                Ok(event) => self.send(event).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "local API watch lagged, resynchronising");
                    // A fresh receiver: the old backlog is older than the new listing.
                    rx = state.watch();
                    self.resync(state).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !delivered {
                return;
            }
        }
    }

    /// Bring the client up to the current listing; false when it has gone away.
    async fn resync<S: NodeState>(&mut self, state: &S) -> bool {
        let mut pods = state.pods();
        pods.sort_by_key(pod_key);
        let mut gone: HashMap<String, Pod> = std::mem::take(&mut self.known);
        for pod in pods {
            let kind = match gone.remove(&identity(&pod)) {
                None => WatchEventType::Added,
                Some(old) if old == pod => {
                    self.known.insert(identity(&pod), pod);
                    continue;
                }
                Some(_) => WatchEventType::Modified,
            };
            if !self.send(WatchEvent { kind, object: pod }).await {
                return false;
            }
        }
        for (_, pod) in gone {
            let event = WatchEvent {
                kind: WatchEventType::Deleted,
                object: pod,
            };
            if !self.send(event).await {
                return false;
            }
        }
        true
    }

    /// Send one event if it is in the watched namespace; false when the client has gone.
    async fn send(&mut self, event: WatchEvent) -> bool {
        if !in_namespace(&event.object, self.namespace.as_deref()) {
            return true;
        }
        let mut line = match serde_json::to_vec(&event) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot encode a pod watch event");
                return true;
            }
        };
        line.push(b'\n');
        let key = identity(&event.object);
        match event.kind {
            WatchEventType::Deleted => self.known.remove(&key),
            _ => self.known.insert(key, event.object),
        };
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
}

async fn describe<S: NodeState>(
    State(state): State<Arc<S>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Result<Json<PodDetail>, ApiError> {
    let pod = find_pod(&*state, &namespace, &name)?;
    let events = state.events(&namespace, &pod_name(&pod));
    Ok(Json(PodDetail { pod, events }))
}

async fn log<S: NodeState>(
    State(state): State<Arc<S>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let pod = find_pod(&*state, &namespace, &name)?;
    let name = pod_name(&pod);
    let container = resolve_container(&pod, query.container.as_deref())?;
    let target = state.log_dir(&namespace, &name, Some(&container))?;
    let path =
        logs::log_file(&target.dir, target.restart_count, query.previous).map_err(|e| match e {
            LogsError::NoPrevious { .. } => ApiError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )),
            other => log_error(&container, &name, other),
        })?;
    let opts = LogOptions {
        tail: query.tail_lines,
        // An earlier instance writes no more.
        follow: query.follow && !query.previous,
        timestamps: query.timestamps,
        stream: query.stream.unwrap_or_default(),
    };
    let mut running = target.running;
    let stop = async move {
        // A dropped sender also means the container is gone.
        let _ = running.wait_for(|running| !*running).await;
    };
    let stream = logs::read_log(&path, &opts, stop)
        .await
        .map_err(|e| log_error(&container, &name, e))?;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn log_error(container: &str, pod: &str, error: LogsError) -> ApiError {
    let mut message = format!("logs of container \"{container}\" in pod \"{pod}\": {error}");
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    if error.is_not_found() {
        ApiError::NotFound(message)
    } else {
        ApiError::Internal(message)
    }
}

async fn exec<S: NodeState>(
    State(state): State<Arc<S>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    request: Result<Json<ExecRequest>, JsonRejection>,
) -> Result<Json<ExecResponse>, ApiError> {
    let Json(request) = request.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if request.command.is_empty() {
        return Err(ApiError::BadRequest("command is required".to_owned()));
    }
    let pod = find_pod(&*state, &namespace, &name)?;
    let name = pod_name(&pod);
    let container = resolve_container(&pod, request.container.as_deref())?;
    let timeout = Duration::from_secs(request.timeout_seconds);
    let output = state
        .exec(
            &namespace,
            &name,
            Some(&container),
            request.command,
            timeout,
        )
        .await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(ExecResponse {
        exit_code: output.exit_code,
        stdout: b64.encode(&output.stdout),
        stderr: b64.encode(&output.stderr),
    }))
}

/// The pod `name` names in `namespace`: exactly `name`, or the static pod `name-<node>`.
pub fn find_pod<S: NodeState>(state: &S, namespace: &str, name: &str) -> Result<Pod, ApiError> {
    let pods: Vec<Pod> = state
        .pods()
        .into_iter()
        .filter(|pod| in_namespace(pod, Some(namespace)))
        .collect();
    let exact = pods.iter().position(|pod| pod_name(pod) == name);
    let static_name = || {
        pods.iter().position(|pod| {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            node.is_some_and(|node| pod_name(pod) == format!("{name}-{node}"))
        })
    };
    exact
        .or_else(static_name)
        .and_then(|i| pods.into_iter().nth(i))
        .ok_or_else(|| ApiError::NotFound(format!("pods \"{name}\" not found")))
}

/// The container a request means: the one named (app, init or ephemeral), else the default
/// container annotation, else the only app container (ambiguity is a 400, as in the API).
pub fn resolve_container(pod: &Pod, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod_name(pod);
    let spec = pod.spec.as_ref();
    let apps: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let inits: Vec<&str> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let ephemeral: Vec<&str> = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let exists = |c: &str| apps.contains(&c) || inits.contains(&c) || ephemeral.contains(&c);
    if let Some(container) = requested {
        if exists(container) {
            return Ok(container.to_owned());
        }
        return Err(ApiError::BadRequest(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .filter(|c| exists(c));
    if let Some(container) = annotated {
        return Ok(container.clone());
    }
    match apps.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            );
            if !inits.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn in_namespace(pod: &Pod, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| pod_namespace(pod) == ns)
}

fn pod_key(pod: &Pod) -> (String, String) {
    (pod_namespace(pod).to_owned(), pod_name(pod))
}

/// What identifies a pod across watch events: its UID, else namespace/name.
fn identity(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) => uid.clone(),
        None => format!("{}/{}", pod_namespace(pod), pod_name(pod)),
    }
}
