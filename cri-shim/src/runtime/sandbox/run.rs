//! RunPodSandbox: record the intent, start the monitor (namespaces), attach the network,
//! record the result. A failure at any step undoes the steps before it.

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use tracing::Instrument;

use super::{SandboxPhase, SandboxRecord};
use crate::monitor::config::{NamespaceChoice, PidChoice, SandboxMonitorConfig};
use crate::monitor::launch;
use crate::network::{self, Attachment, PodIdentity, PortMapping};
use crate::runtime::error::{crash_point, RuntimeError};
use crate::runtime::files::SandboxFiles;
use crate::runtime::store::{new_id, now_nanos};
use crate::runtime::{cgroups, Runtime};

impl Runtime {
    /// Create and start a pod sandbox; returns its ID.
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, RuntimeError> {
        self.check_handler(&runtime_handler)?;
        let metadata = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("pod sandbox config has no metadata".into())
        })?;
        let id = new_id();
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let parent = if cgroup_parent.is_empty() {
            self.config.default_cgroup_parent.clone()
        } else {
            cgroup_parent
        };
        let record = SandboxRecord {
            id: id.clone(),
            phase: SandboxPhase::Creating,
            created_at: now_nanos(),
            config,
            runtime_handler,
            cgroup_parent: parent,
            ips: Vec::new(),
            run_dir: self.config.sandbox_run_dir(&id),
        };
        if !record.runtime_handler.is_empty() && record.pid_mode() == NamespaceMode::Pod {
            // The monitor is PID 1 of a shared PID namespace, and an external runtime started
            // from inside it would read the host's /proc with the pod's PIDs.
            return Err(RuntimeError::InvalidArgument(format!(
                "a shared PID namespace (shareProcessNamespace) needs the built-in executor, not runtime handler {:?}",
                record.runtime_handler
            )));
        }
        let monitor_config = monitor_config(&record)?;
        monitor_config
            .validate()
            .map_err(RuntimeError::InvalidArgument)?;
        let span = tracing::info_span!("sandbox", pod = %format!("{}/{}", metadata.namespace, metadata.name), uid = %metadata.uid, id = %&id[..12]);
        let lock = self.sandboxes.lock_of(&id);
        let _guard = lock.lock().await;
        self.sandboxes
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording sandbox", e))?;
        match self
            .bring_up(record, monitor_config)
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                span.in_scope(|| tracing::info!("sandbox ready"));
                Ok(id)
            }
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "sandbox failed; undoing"));
                if let Some(record) = self.sandboxes.get(&id) {
                    self.tear_down(&record).await;
                }
                let _ = self.sandboxes.remove(&id);
                Err(e)
            }
        }
    }

    fn check_handler(&self, handler: &str) -> Result<(), RuntimeError> {
        if handler.is_empty() || self.config.runtime_handlers.contains_key(handler) {
            Ok(())
        } else {
            Err(RuntimeError::InvalidArgument(format!(
                "unknown runtime handler {handler:?} (configured: {:?})",
                self.config.runtime_handlers.keys().collect::<Vec<_>>()
            )))
        }
    }

    async fn bring_up(
        &self,
        mut record: SandboxRecord,
        monitor_config: SandboxMonitorConfig,
    ) -> Result<(), RuntimeError> {
        let files = SandboxFiles::under(&record.run_dir);
        let hostname = if record.host_network() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            record.config.hostname.clone()
        };
        files
            .write(
                &hostname,
                record.config.dns_config.as_ref(),
                record.host_network(),
            )
            .map_err(|e| RuntimeError::internal("writing sandbox files", e))?;
        if !record.host_ipc() {
            files
                .mount_shm()
                .map_err(|e| RuntimeError::internal("sandbox /dev/shm", e))?;
        }
        if let Some(cgroup) = &monitor_config.cgroup_path {
            cgroups::create(cgroup, None).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        crash_point("run_pod_sandbox.before_monitor");
        launch::launch(monitor_config)
            .await
            .map_err(|e| RuntimeError::Internal(format!("starting pod monitor: {e}")))?;
        crash_point("run_pod_sandbox.before_cni");
        if let Some(netns) = record.netns_path() {
            let result = self
                .cni
                .add(&self.attachment(&record, netns))
                .await
                .map_err(|e| RuntimeError::Internal(format!("pod network: {e}")))?;
            record.ips = network::pod_ips(&result);
        }
        crash_point("run_pod_sandbox.after_cni");
        record.phase = SandboxPhase::Ready;
        self.sandboxes
            .save(&record)
            .map_err(|e| RuntimeError::internal("recording sandbox", e))?;
        self.events.follow_sandbox(&record.id, &record.run_dir);
        Ok(())
    }

    /// The CNI attachment of a sandbox.
    pub(crate) fn attachment(
        &self,
        record: &SandboxRecord,
        netns: std::path::PathBuf,
    ) -> Attachment {
        let (namespace, name, uid) = record.pod_identity();
        Attachment {
            container_id: record.id.clone(),
            netns,
            ifname: "eth0".to_owned(),
            pod: PodIdentity {
                namespace,
                name,
                uid,
            },
            port_mappings: record
                .config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| PortMapping {
                    host_port: p.host_port as u16,
                    container_port: p.container_port as u16,
                    protocol: match p.protocol {
                        1 => "udp",
                        2 => "sctp",
                        _ => "tcp",
                    }
                    .to_owned(),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
        }
    }
}

/// What the sandbox's monitor must set up.
fn monitor_config(record: &SandboxRecord) -> Result<SandboxMonitorConfig, RuntimeError> {
    let linux = record.config.linux.clone().unwrap_or_default();
    let cgroup = cgroups::child_path(&record.cgroup_parent, &record.id)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    Ok(SandboxMonitorConfig {
        sandbox_id: record.id.clone(),
        run_dir: record.run_dir.clone(),
        shim_binary: shim_binary()?,
        // A host-network pod shares the host's UTS namespace, hence its hostname.
        hostname: if record.host_network() {
            String::new()
        } else {
            record.config.hostname.clone()
        },
        network: choice(record.host_network()),
        ipc: choice(record.host_ipc()),
        uts: choice(record.host_network()),
        pid: match record.pid_mode() {
            NamespaceMode::Pod => PidChoice::Pod,
            NamespaceMode::Node => PidChoice::Node,
            _ => PidChoice::Container,
        },
        sysctls: linux.sysctls.into_iter().collect(),
        cgroup_path: Some(cgroup),
    })
}

fn choice(host: bool) -> NamespaceChoice {
    if host {
        NamespaceChoice::Host
    } else {
        NamespaceChoice::New
    }
}

/// The binary that runs monitors and exec helpers: this one.
pub(crate) fn shim_binary() -> Result<std::path::PathBuf, RuntimeError> {
    std::env::current_exe().map_err(|e| RuntimeError::internal("locating own executable", e))
}
