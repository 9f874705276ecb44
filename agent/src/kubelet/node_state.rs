//! The kubelet's state as the local API sees it: pods and events from the store, logs
//! from the pod log directory, exec through CRI.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::broadcast;

use super::local_api::{
    ApiError, EventType, ExecOutput, LogTarget, NodeState, PodEvent, SourceError, WatchEvent,
};
use super::probe::{ContainerExec, ExecError};
use super::runtime::Cri;
use super::status::{EventKind, PodStore};

/// The agent's [`NodeState`].
pub struct AgentState {
    store: Arc<PodStore>,
    cri: Cri,
    pod_logs_dir: std::path::PathBuf,
}

impl AgentState {
    /// State over the store, exec through `cri`, logs under `pod_logs_dir`.
    pub fn new(store: Arc<PodStore>, cri: Cri, pod_logs_dir: std::path::PathBuf) -> Self {
        Self {
            store,
            cri,
            pod_logs_dir,
        }
    }

    fn uid(&self, namespace: &str, name: &str) -> Result<String, ApiError> {
        self.store
            .find(namespace, name)
            .ok_or_else(|| ApiError::NotFound(format!("pod {namespace}/{name} not found")))
    }
}

impl NodeState for AgentState {
    fn pods(&self) -> Vec<Pod> {
        self.store.pods()
    }

    fn source_errors(&self) -> Vec<SourceError> {
        let errors = self.store.source_errors().into_iter();
        errors
            .map(|(path, message)| SourceError { path, message })
            .collect()
    }

    fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.store.subscribe()
    }

    fn events(&self, namespace: &str, name: &str) -> Vec<PodEvent> {
        let Ok(uid) = self.uid(namespace, name) else {
            return Vec::new();
        };
        let events = self.store.events(&uid).into_iter();
        events
            .map(|e| PodEvent {
                first_timestamp: Time(e.first),
                last_timestamp: Time(e.last),
                event_type: match e.kind {
                    EventKind::Normal => EventType::Normal,
                    EventKind::Warning => EventType::Warning,
                },
                reason: e.reason,
                message: match e.container {
                    Some(c) if !e.message.contains(&c) => format!("{} (container {c})", e.message),
                    _ => e.message,
                },
                count: e.count,
            })
            .collect()
    }

    fn log_dir(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<LogTarget, ApiError> {
        let uid = self.uid(namespace, name)?;
        let container =
            container.ok_or_else(|| ApiError::BadRequest("no container named".into()))?;
        let record = self.store.container(&uid, container).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "container {container:?} in pod {namespace}/{name} has not started yet"
            ))
        })?;
        let dir = self
            .pod_logs_dir
            .join(format!("{namespace}_{name}_{uid}"))
            .join(container);
        Ok(LogTarget {
            dir,
            restart_count: record.restart_count,
            running: record.running,
        })
    }

    async fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, ApiError> {
        let uid = self.uid(namespace, name)?;
        let container =
            container.ok_or_else(|| ApiError::BadRequest("no container named".into()))?;
        let record = self.store.container(&uid, container).ok_or_else(|| {
            ApiError::BadRequest(format!("container {container:?} is not running"))
        })?;
        if !*record.running.borrow() {
            return Err(ApiError::BadRequest(format!(
                "container {container:?} is not running"
            )));
        }
        match self.cri.exec_sync(&record.id, command, timeout).await {
            Ok(result) => Ok(ExecOutput {
                exit_code: result.exit_code,
                stdout: result.stdout,
                stderr: result.stderr,
            }),
            Err(ExecError::TimedOut) => Err(ApiError::BadRequest(format!(
                "command timed out after {}s",
                timeout.as_secs()
            ))),
            Err(ExecError::Failed(message)) => Err(ApiError::Internal(message)),
        }
    }
}
