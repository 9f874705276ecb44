//! CreateContainer: record the intent, mount the rootfs, write the OCI spec, create the
//! cgroup, hand the container to the sandbox's monitor, record the result.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use tracing::Instrument;

use super::{ContainerPhase, ContainerRecord};
use crate::image::store::ImageRecord;
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::{CreateContainer, Handler, PidMode};
use crate::runtime::error::{crash_point, RuntimeError};
use crate::runtime::files::SandboxFiles;
use crate::runtime::sandbox::{SandboxPhase, SandboxRecord};
use crate::runtime::store::{new_id, now_nanos};
use crate::runtime::{cgroups, rootfs, Runtime};
use crate::spec::{self, PidNamespace, SandboxNamespaces, SpecInput};

impl Runtime {
    /// Create a container in a ready sandbox; returns its ID.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, RuntimeError> {
        let sandbox = self.sandbox(sandbox_id)?;
        if sandbox.phase != SandboxPhase::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {sandbox_id:?} is not ready"
            )));
        }
        let metadata = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("container config has no metadata".into())
        })?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self.images.find(&image_name).ok_or_else(|| {
            RuntimeError::NotFound(format!("image {image_name:?} not found: pull it first"))
        })?;
        let id = new_id();
        let cgroup_path = cgroups::child_path(&sandbox.cgroup_parent, &id)
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let log_path = log_path(&sandbox.config, &config)?;
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            phase: ContainerPhase::Creating,
            created_at: now_nanos(),
            config,
            image_id: image.id.to_string(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.to_string()),
            log_path,
            cgroup_path,
            handler: sandbox.runtime_handler.clone(),
            stop_signal: None,
            start_error: None,
        };
        let span = tracing::info_span!("container", name = %metadata.name, id = %&id[..12], sandbox = %&sandbox_id[..sandbox_id.len().min(12)]);
        let lock = self.containers.lock_of(&id);
        let _guard = lock.lock().await;
        self.containers
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording container", e))?;
        let sandbox_config = sandbox_config.unwrap_or_else(|| sandbox.config.clone());
        match self
            .prepare(record, &sandbox, &sandbox_config, &image)
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                span.in_scope(|| tracing::info!("container created"));
                self.events.emit_created(sandbox_id, &id);
                Ok(id)
            }
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "create failed; undoing"));
                if let Some(record) = self.containers.get(&id) {
                    self.discard_container(&record).await;
                }
                Err(e)
            }
        }
    }

    async fn prepare(
        &self,
        mut record: ContainerRecord,
        sandbox: &SandboxRecord,
        sandbox_config: &PodSandboxConfig,
        image: &ImageRecord,
    ) -> Result<(), RuntimeError> {
        let dir = self.containers.dir_of(&record.id);
        let image_config = self.image_config(image)?;
        record.stop_signal = image_config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone());
        let layout = rootfs::Layout::under(&dir);
        let lower: Vec<PathBuf> = image
            .layers
            .iter()
            .map(|l| self.images.store().snapshots.fs_path(&l.diff_id))
            .collect();
        rootfs::mount_overlay(&layout, &lower)
            .map_err(|e| RuntimeError::internal("container rootfs", e))?;
        crash_point("create_container.after_rootfs");
        let files = SandboxFiles::under(&sandbox.run_dir);
        let pid = match sandbox.pid_mode() {
            NamespaceMode::Node => PidNamespace::Node,
            NamespaceMode::Pod => launch_pid_ns(&sandbox.run_dir),
            _ => PidNamespace::Container,
        };
        let container_pid_mode = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|n| n.pid);
        let pid = match (pid, container_pid_mode) {
            (PidNamespace::Pod(_), Some(m)) if m == NamespaceMode::Container as i32 => {
                PidNamespace::Container
            }
            (pid, _) => pid,
        };
        let pid_mode = match &pid {
            PidNamespace::Node => PidMode::Node,
            PidNamespace::Pod(_) => PidMode::Pod,
            PidNamespace::Container => PidMode::Container,
        };
        let ns_dir = sandbox.run_dir.join("ns");
        let input = SpecInput {
            container_id: &record.id,
            container: &record.config,
            sandbox: sandbox_config,
            sandbox_id: &sandbox.id,
            image: &image_config,
            image_ref: &record.image_ref,
            rootfs: &layout.target,
            namespaces: SandboxNamespaces {
                network: (!sandbox.host_network()).then(|| ns_dir.join("net")),
                ipc: (!sandbox.host_ipc()).then(|| ns_dir.join("ipc")),
                uts: (!sandbox.host_network()).then(|| ns_dir.join("uts")),
                pid,
            },
            sandbox_files: spec::SandboxFiles {
                hosts: Some(files.hosts.clone()),
                hostname: Some(files.hostname.clone()),
                resolv_conf: Some(files.resolv_conf.clone()),
                shm: (!sandbox.host_ipc()).then(|| files.shm.clone()),
            },
            cgroups_path: record.cgroup_path.clone(),
        };
        let spec = spec::build(&input).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let bundle = dir.join("bundle");
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::internal("OCI spec", e))?;
        std::fs::write(bundle.join("config.json"), spec_json)
            .map_err(|e| RuntimeError::internal("writing OCI spec", e))?;
        let resources = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref());
        if resources.is_some_and(|r| r.oom_score_adj < 0) {
            tracing::warn!("a negative oom_score_adj may be refused by this kernel; the container then keeps its inherited value");
        }
        // The spec's limits, so the built-in executor's containers get exactly what runc
        // would apply (swap capped at the memory limit, for one).
        let spec_resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        cgroups::create(&record.cgroup_path, spec_resources)
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        if let Some(log) = &record.log_path {
            if let Some(parent) = log.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    RuntimeError::internal(format!("creating {}", parent.display()), e)
                })?;
            }
        }
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| RuntimeError::internal("creating container state dir", e))?;
        crash_point("create_container.before_monitor");
        let client = MonitorClient::connect(&sandbox.run_dir)
            .await
            .map_err(|e| RuntimeError::Internal(format!("pod monitor: {e}")))?;
        client
            .create(CreateContainer {
                id: record.id.clone(),
                bundle,
                log_path: record.log_path.clone(),
                tty: record.config.tty,
                state_dir,
                handler: self.handler(&record.handler),
                pid_mode,
            })
            .await
            .map_err(|e| RuntimeError::Internal(format!("creating container: {e}")))?;
        crash_point("create_container.after_monitor");
        record.phase = ContainerPhase::Created;
        self.containers
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording container", e))
    }

    fn image_config(
        &self,
        image: &ImageRecord,
    ) -> Result<oci_spec::image::ImageConfiguration, RuntimeError> {
        let bytes = self
            .images
            .config_json(image)
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Internal(format!("image config of {}: {e}", image.id)))
    }

    /// How the monitor runs containers of a handler.
    pub(crate) fn handler(&self, name: &str) -> Handler {
        match self.config.runtime_handlers.get(name) {
            None => Handler::Builtin,
            Some(h) => Handler::Oci {
                path: h.path.clone(),
                root: h
                    .root
                    .clone()
                    .unwrap_or_else(|| self.config.run_root.join("oci").join(name)),
            },
        }
    }
}

/// The pod's PID namespace: the monitor's own (it is PID 1 there).
fn launch_pid_ns(run_dir: &Path) -> PidNamespace {
    match crate::monitor::launch::monitor_pid(run_dir) {
        Some(pid) => PidNamespace::Pod(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
        None => PidNamespace::Container,
    }
}

/// `<log_directory>/<log_path>`, refusing a log path that climbs out of the directory.
fn log_path(
    sandbox: &PodSandboxConfig,
    container: &ContainerConfig,
) -> Result<Option<PathBuf>, RuntimeError> {
    if sandbox.log_directory.is_empty() || container.log_path.is_empty() {
        return Ok(None);
    }
    let relative = Path::new(&container.log_path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "log path {:?} must be relative to the sandbox log directory and stay inside it",
            container.log_path
        )));
    }
    Ok(Some(Path::new(&sandbox.log_directory).join(relative)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        let sandbox = PodSandboxConfig {
            log_directory: "/var/log/pods/ns_p_u".into(),
            ..Default::default()
        };
        let mut c = ContainerConfig {
            log_path: "web/0.log".into(),
            ..Default::default()
        };
        assert_eq!(
            log_path(&sandbox, &c).unwrap(),
            Some(PathBuf::from("/var/log/pods/ns_p_u/web/0.log"))
        );
        c.log_path = "../../etc/passwd".into();
        assert!(log_path(&sandbox, &c).is_err());
        c.log_path = "/etc/passwd".into();
        assert!(log_path(&sandbox, &c).is_err());
        c.log_path = String::new();
        assert_eq!(log_path(&sandbox, &c).unwrap(), None);
    }
}
