//! The local API's wire types and the trait the kubelet implements to serve it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::kubelet::logs::StreamFilter;

/// What the local API serves: the kubelet's view of its pods, implemented on its state.
pub trait NodeState: Send + Sync + 'static {
    /// Every pod the agent knows, with its current status (k8s_openapi Pod JSON incl. status).
    fn pods(&self) -> Vec<Pod>;
    /// Manifest files that failed to load: (file path, error message).
    fn source_errors(&self) -> Vec<SourceError>;
    /// Pod changes from now on.
    fn watch(&self) -> broadcast::Receiver<WatchEvent>;
    /// Recent events of one pod, oldest first.
    fn events(&self, namespace: &str, name: &str) -> Vec<PodEvent>;
    /// Where a container's logs live and whether the container is still running (for follow).
    ///
    /// The server has resolved the pod (`name` is its exact name) and the container against
    /// the pod's spec, so `container` is always `Some` of one of its (init) containers.
    fn log_dir(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<LogTarget, ApiError>;
    /// ExecSync in a container; a zero `timeout` means none (as in CRI). Resolved like `log_dir`.
    fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        command: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, ApiError>> + Send;
}

/// The kind of change a [`WatchEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    /// The pod appeared (or is part of the initial listing).
    Added,
    /// The pod's spec or status changed.
    Modified,
    /// The pod is gone; `object` is its last state.
    Deleted,
}

/// One pod change, shaped like a Kubernetes watch event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    /// The pod after the change (before it, for `DELETED`).
    pub object: Pod,
}

/// Severity of a [`PodEvent`], as in core/v1 Event `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Business as usual.
    Normal,
    /// Something the user should look at.
    Warning,
}

/// One (deduplicated) kubelet event about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEvent {
    /// When it first happened.
    pub first_timestamp: Time,
    /// When it last happened.
    pub last_timestamp: Time,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Machine-readable reason, e.g. `Pulled`, `BackOff`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// How many times it happened between the two timestamps.
    pub count: u32,
}

/// A manifest file that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub message: String,
}

/// Where one container's logs are, and whether more may come.
#[derive(Debug, Clone)]
pub struct LogTarget {
    /// `<podLogsDir>/<ns>_<name>_<uid>/<container>/`.
    pub dir: PathBuf,
    /// The current container's restart count: its log is `<restart_count>.log`.
    pub restart_count: u32,
    /// True while the current container runs; following ends once it turns false.
    pub running: watch::Receiver<bool>,
}

/// The result of an ExecSync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A request the local API cannot satisfy; maps onto an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: no such pod (or container log).
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is wrong or ambiguous.
    #[error("{0}")]
    BadRequest(String),
    /// 500: the agent failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error is served with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::BadRequest(_) => 400,
            ApiError::Internal(_) => 500,
        }
    }
}

/// JSON body of every error response: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error message.
    pub error: String,
}

/// `GET /v1/pods`: the pods and the manifests that failed to load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodList {
    /// The pods, sorted by namespace and name.
    pub items: Vec<Pod>,
    /// Manifest files that failed to load.
    pub errors: Vec<SourceError>,
}

/// `GET /v1/namespaces/{ns}/pods/{name}`: one pod and its recent events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodDetail {
    /// The pod with its status.
    pub pod: Pod,
    /// Its recent events, oldest first.
    pub events: Vec<PodEvent>,
}

/// Query of `GET .../log`, named like core/v1 PodLogOptions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Container name; optional when the pod has one container.
    pub container: Option<String>,
    /// Keep streaming while the container runs.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// The previous instance of the container.
    #[serde(default)]
    pub previous: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    #[serde(default)]
    pub timestamps: bool,
    /// `Stdout`, `Stderr` or `All` (the default).
    pub stream: Option<StreamFilter>,
}

/// Body of `POST .../exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    /// Container name; optional when the pod has one container.
    pub container: Option<String>,
    /// The command and its arguments (no shell).
    pub command: Vec<String>,
    /// Give up after this many seconds; 0 (the default) waits forever.
    #[serde(default)]
    pub timeout_seconds: u64,
}

/// Response of `POST .../exec`; output is base64 so binary output survives JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResponse {
    /// The command's exit code.
    pub exit_code: i32,
    /// Standard output, base64 (standard alphabet, padded).
    pub stdout: String,
    /// Standard error, base64 (standard alphabet, padded).
    pub stderr: String,
}
