//! Containers: the record kept per container and the operations on it.

mod create;
mod exec;
mod lifecycle;
mod view;

use std::path::PathBuf;

use k8s_cri::v1::ContainerConfig;
use serde::{Deserialize, Serialize};

use super::store::{proto_base64, Record};
use crate::monitor::protocol::{ExitRecord, StartedRecord};

/// Where a container is in its life (running and exited come from the monitor's records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerPhase {
    /// CreateContainer began and has not finished (a crash here is undone on start).
    Creating,
    /// Handed to the monitor, which holds its process ready to start.
    Created,
}

/// A container as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// Container ID.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Life-cycle phase.
    pub phase: ContainerPhase,
    /// Creation time (Unix nanoseconds).
    pub created_at: i64,
    /// The config CreateContainer received (resources updated by UpdateContainerResources).
    #[serde(with = "proto_base64")]
    pub config: ContainerConfig,
    /// Image ID (config digest).
    pub image_id: String,
    /// The image reference the container runs (a repo digest when known).
    pub image_ref: String,
    /// Absolute log path, when the sandbox and container configs give one.
    pub log_path: Option<PathBuf>,
    /// Its cgroup (absolute within each hierarchy).
    pub cgroup_path: String,
    /// CRI runtime handler of its sandbox.
    pub handler: String,
    /// Signal that asks it to stop (the image's StopSignal), SIGTERM when unset.
    pub stop_signal: Option<String>,
    /// Why starting it failed, when it did.
    #[serde(default)]
    pub start_error: Option<String>,
}

impl Record for ContainerRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// What the monitor recorded about a container's process.
#[derive(Debug, Clone, Default)]
pub struct ProcessState {
    /// Set once started.
    pub started: Option<StartedRecord>,
    /// Set once exited.
    pub exit: Option<ExitRecord>,
}

impl ProcessState {
    /// Running: started and not exited.
    pub fn running(&self) -> bool {
        self.started.is_some() && self.exit.is_none()
    }
}
