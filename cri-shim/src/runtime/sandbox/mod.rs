//! Pod sandboxes: the record kept per sandbox and the operations on it.

mod run;
mod stop;
mod view;

use std::path::PathBuf;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use super::store::{proto_base64, Record};

pub(crate) use run::shim_binary;
pub use view::labels_match;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SandboxPhase {
    /// RunPodSandbox began and has not finished (a crash here is cleaned up on start).
    Creating,
    /// Namespaces held, network attached.
    Ready,
    /// Stopped: containers killed, network detached, monitor gone.
    NotReady,
}

/// A sandbox as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// Sandbox ID.
    pub id: String,
    /// Life-cycle phase.
    pub phase: SandboxPhase,
    /// Creation time (Unix nanoseconds).
    pub created_at: i64,
    /// The config RunPodSandbox received.
    #[serde(with = "proto_base64")]
    pub config: PodSandboxConfig,
    /// CRI runtime handler.
    pub runtime_handler: String,
    /// The sandbox's own cgroup (its monitor runs there); containers go beside it.
    pub cgroup_parent: String,
    /// Pod IPs, IPv4 first.
    pub ips: Vec<String>,
    /// The run directory (monitor socket, pinned namespaces, etc files).
    pub run_dir: PathBuf,
}

impl Record for SandboxRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl SandboxRecord {
    fn namespace_mode(&self, pick: fn(&k8s_cri::v1::NamespaceOption) -> i32) -> NamespaceMode {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(pick)
            .and_then(|m| NamespaceMode::try_from(m).ok())
            .unwrap_or(NamespaceMode::Pod)
    }

    /// Whether the pod uses the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.namespace_mode(|n| n.network) == NamespaceMode::Node
    }

    /// Whether the pod uses the host's IPC namespace.
    pub fn host_ipc(&self) -> bool {
        self.namespace_mode(|n| n.ipc) == NamespaceMode::Node
    }

    /// The pod's PID namespace mode (POD: shared by its containers, CONTAINER: one each,
    /// NODE: the host's).
    pub fn pid_mode(&self) -> NamespaceMode {
        self.namespace_mode(|n| n.pid)
    }

    /// Pinned network namespace path, when the pod has its own.
    pub fn netns_path(&self) -> Option<PathBuf> {
        (!self.host_network()).then(|| self.run_dir.join("ns").join("net"))
    }

    /// Pod namespace, name and UID, for logs and CNI arguments.
    pub fn pod_identity(&self) -> (String, String, String) {
        let m = self.config.metadata.clone().unwrap_or_default();
        (m.namespace, m.name, m.uid)
    }
}
