//! StopPodSandbox and RemovePodSandbox. Both are idempotent and succeed when the monitor,
//! the network namespace or the network attachment is already gone.

use super::{SandboxPhase, SandboxRecord};
use crate::monitor::{client::MonitorClient, launch};
use crate::network::AttachmentRef;
use crate::runtime::error::RuntimeError;
use crate::runtime::files::SandboxFiles;
use crate::runtime::{cgroups, Runtime};

impl Runtime {
    /// Stop every container, detach the network and release the namespaces.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandboxes.get(id) else {
            // Stopping something already removed succeeds, as kubelet expects.
            return Ok(());
        };
        let lock = self.sandboxes.lock_of(id);
        let _guard = lock.lock().await;
        for container in self.containers.all() {
            if container.sandbox_id == id {
                self.kill_container(&container).await;
            }
        }
        self.tear_down(&record).await;
        let mut record = record;
        record.phase = SandboxPhase::NotReady;
        self.sandboxes
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording sandbox", e))?;
        tracing::info!(sandbox = %&id[..id.len().min(12)], "sandbox stopped");
        Ok(())
    }

    /// Remove a sandbox and everything it made, its containers included.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandboxes.get(id) else {
            return Ok(());
        };
        if record.phase != SandboxPhase::NotReady {
            self.stop_pod_sandbox(id).await?;
        }
        let lock = self.sandboxes.lock_of(id);
        let _guard = lock.lock().await;
        for container in self.containers.all() {
            if container.sandbox_id == id {
                self.remove_container(&container.id).await?;
            }
        }
        self.sandboxes
            .remove(id)
            .map_err(|e| RuntimeError::internal("removing sandbox record", e))
    }

    /// Release what a sandbox holds on the node: network attachment, monitor, namespace
    /// pins, /dev/shm, run directory, the monitor's cgroup. Safe to repeat and on half-made sandboxes.
    pub(crate) async fn tear_down(&self, record: &SandboxRecord) {
        if let Some(netns) = record.netns_path() {
            let attachment = AttachmentRef::from(&self.attachment(record, netns));
            if let Err(e) = self.cni.del(&attachment).await {
                tracing::warn!(error = %e, "CNI DEL failed; cleanup continues");
            }
        }
        self.events.unfollow_sandbox(&record.id);
        let stopped = match MonitorClient::connect(&record.run_dir).await {
            Ok(client) => client.shutdown().await.is_ok(),
            Err(_) => false,
        };
        if !stopped {
            launch::kill(&record.run_dir);
        }
        let files = SandboxFiles::under(&record.run_dir);
        if let Err(e) = files.unmount_shm() {
            tracing::warn!(error = %e, "unmounting /dev/shm");
        }
        if let Err(e) = launch::cleanup(&record.run_dir) {
            tracing::warn!(error = %e, "cleaning sandbox run dir");
        }
        if let Ok(path) = cgroups::child_path(&record.cgroup_parent, &record.id) {
            cgroups::kill_all(&path);
            if let Err(e) = cgroups::remove(&path) {
                tracing::warn!(error = %e, "removing the monitor's cgroup");
            }
        }
    }
}
