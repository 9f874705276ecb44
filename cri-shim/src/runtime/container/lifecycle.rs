//! StartContainer, StopContainer, RemoveContainer, UpdateContainerResources,
//! ReopenContainerLog.

use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::LinuxContainerResources;
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::{ContainerPhase, ContainerRecord, ProcessState};
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::{self, Handler};
use crate::runtime::error::RuntimeError;
use crate::runtime::{cgroups, rootfs, Runtime};
use crate::spec;

/// How long a SIGKILLed container may take to be reaped before Stop reports failure.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Runtime {
    async fn monitor_of(&self, record: &ContainerRecord) -> Result<MonitorClient, RuntimeError> {
        let sandbox = self.sandbox(&record.sandbox_id)?;
        MonitorClient::connect(&sandbox.run_dir).await.map_err(|e| {
            RuntimeError::FailedPrecondition(format!(
                "pod monitor of sandbox {} is not running: {e}",
                record.sandbox_id
            ))
        })
    }

    /// What the monitor recorded about the container's process.
    pub(crate) fn process_state(&self, id: &str) -> ProcessState {
        let state_dir = self.containers.dir_of(id).join("state");
        ProcessState {
            started: protocol::read_started(&state_dir),
            exit: protocol::read_exit(&state_dir),
        }
    }

    /// Start a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut record = self.container(id)?;
        let lock = self.containers.lock_of(id);
        let _guard = lock.lock().await;
        let state = self.process_state(id);
        if record.phase != ContainerPhase::Created
            || state.started.is_some()
            || state.exit.is_some()
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not in the created state"
            )));
        }
        let client = self.monitor_of(&record).await?;
        self.events.starting(id);
        if let Err(e) = client.start(id).await {
            self.events.start_failed(id);
            record.start_error = Some(e.to_string());
            let _ = self.containers.save(&record);
            return Err(RuntimeError::Internal(format!("starting container: {e}")));
        }
        self.events.emit_started(&record.sandbox_id, id);
        Ok(())
    }

    /// Stop a container: its stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let Some(record) = self.containers.get(id) else {
            return Err(RuntimeError::NotFound(format!(
                "container {id:?} not found"
            )));
        };
        let lock = self.containers.lock_of(id);
        let _guard = lock.lock().await;
        if !self.process_state(id).running() {
            return Ok(());
        }
        let client = self.monitor_of(&record).await?;
        let exited = self.events.exit_waiter(id);
        if timeout > 0 {
            let signal = stop_signal(record.stop_signal.as_deref());
            client
                .signal(id, signal as i32)
                .await
                .map_err(|e| RuntimeError::Internal(format!("signalling container: {e}")))?;
            if self
                .wait_exit(id, exited, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        let exited = self.events.exit_waiter(id);
        client
            .signal(id, Signal::SIGKILL as i32)
            .await
            .map_err(|e| RuntimeError::Internal(format!("killing container: {e}")))?;
        if self.wait_exit(id, exited, KILL_WAIT).await {
            Ok(())
        } else {
            Err(RuntimeError::DeadlineExceeded(format!(
                "container {id} did not exit after SIGKILL"
            )))
        }
    }

    /// Wait for the exit event, rechecking the record (the exit may predate the waiter).
    async fn wait_exit(
        &self,
        id: &str,
        exited: tokio::sync::oneshot::Receiver<()>,
        timeout: Duration,
    ) -> bool {
        if self.process_state(id).exit.is_some() {
            return true;
        }
        let _ = tokio::time::timeout(timeout, exited).await;
        self.process_state(id).exit.is_some()
    }

    /// SIGKILL a container and wait briefly for it (sandbox stop, crash cleanup).
    pub(crate) async fn kill_container(&self, record: &ContainerRecord) {
        if let Err(e) = self.stop_container(&record.id, 0).await {
            tracing::warn!(container = %record.id, error = %e, "killing container");
        }
    }

    /// Remove a container; a running one is killed first.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.containers.get(id) else {
            return Ok(());
        };
        if self.process_state(id).running() {
            self.stop_container(id, 0).await?;
        }
        let lock = self.containers.lock_of(id);
        let _guard = lock.lock().await;
        self.discard_container(&record).await;
        self.events.emit_deleted(&record.sandbox_id, id);
        Ok(())
    }

    /// Release everything a container holds: monitor entry, rootfs mount, cgroup, files.
    /// Safe on half-made containers and to repeat.
    pub(crate) async fn discard_container(&self, record: &ContainerRecord) {
        if let Ok(client) = self.monitor_of(record).await {
            let _ = client.forget(&record.id).await;
        }
        let dir = self.containers.dir_of(&record.id);
        if let Err(e) = rootfs::unmount(&rootfs::Layout::under(&dir).target) {
            tracing::warn!(container = %record.id, error = %e, "unmounting rootfs");
        }
        cgroups::kill_all(&record.cgroup_path);
        if let Err(e) = cgroups::remove(&record.cgroup_path) {
            tracing::warn!(container = %record.id, error = %e, "removing cgroup");
        }
        if let Err(e) = self.containers.remove(&record.id) {
            tracing::warn!(container = %record.id, error = %e, "removing container files");
        }
    }

    /// Change a container's cgroup limits and remember them.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), RuntimeError> {
        let mut record = self.container(id)?;
        let Some(resources) = resources else {
            return Ok(());
        };
        let limits = spec::container_resources(&resources)
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let lock = self.containers.lock_of(id);
        let _guard = lock.lock().await;
        // An exited container has no cgroup left to change: the new limits are only
        // recorded, as containerd does.
        if self.process_state(id).exit.is_none() {
            match self.handler(&record.handler) {
                Handler::Builtin => cgroups::update(&record.cgroup_path, &limits)
                    .map_err(|e| RuntimeError::Internal(e.to_string()))?,
                // runc keeps the limits in its own state and owns the write order.
                Handler::Oci { path, root } => {
                    let dir = self.containers.dir_of(id);
                    oci_update(&path, &root, &dir, id, &limits).await?
                }
            }
        }
        let linux = record.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(resources);
        self.containers
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording container", e))
    }

    /// Reopen the log file (after the kubelet rotated it).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let record = self.container(id)?;
        if !self.process_state(id).running() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        self.monitor_of(&record)
            .await?
            .reopen_log(id)
            .await
            .map_err(|e| RuntimeError::Internal(format!("reopening log: {e}")))
    }
}

/// `<runtime> --root ROOT update --resources FILE ID`, the resources as an OCI
/// `LinuxResources` JSON file in the container's directory `dir`.
async fn oci_update(
    runtime: &Path,
    root: &Path,
    dir: &Path,
    id: &str,
    limits: &LinuxResources,
) -> Result<(), RuntimeError> {
    let file = tempfile::Builder::new()
        .prefix("resources-")
        .suffix(".json")
        .tempfile_in(dir)
        .map_err(|e| RuntimeError::internal("resources file", e))?;
    serde_json::to_writer(file.as_file(), limits)
        .map_err(|e| RuntimeError::internal("writing resources file", e))?;
    let output = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .arg("update")
        .arg("--resources")
        .arg(file.path())
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::internal(format!("running {}", runtime.display()), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(RuntimeError::Internal(format!(
        "{} update {id}: {}",
        runtime.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// The image's StopSignal (a name like SIGQUIT or QUIT, or a number), SIGTERM otherwise.
fn stop_signal(name: Option<&str>) -> Signal {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Signal::SIGTERM;
    };
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().unwrap_or(Signal::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_like_docker() {
        assert_eq!(stop_signal(None), Signal::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(stop_signal(Some("quit")), Signal::SIGQUIT);
        assert_eq!(stop_signal(Some("9")), Signal::SIGKILL);
        assert_eq!(stop_signal(Some("NOPE")), Signal::SIGTERM);
    }
}
