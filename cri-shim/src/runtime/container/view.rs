//! ContainerStatus and ListContainers: containers as CRI shows them.

use std::collections::HashMap;

use k8s_cri::v1::{
    Container, ContainerFilter, ContainerResources, ContainerState, ContainerStatus, ContainerUser,
    LinuxContainerUser,
};

use super::{ContainerPhase, ContainerRecord, ProcessState};
use crate::runtime::error::RuntimeError;
use crate::runtime::sandbox::labels_match;
use crate::runtime::Runtime;

impl Runtime {
    /// A container's status; `verbose` adds its record and OCI spec under `info`.
    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>), RuntimeError> {
        let record = self.container(id)?;
        let mut info = HashMap::new();
        if verbose {
            let spec = std::fs::read_to_string(
                self.containers
                    .dir_of(id)
                    .join("bundle")
                    .join("config.json"),
            )
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            let state = self.process_state(id);
            info.insert(
                "info".to_owned(),
                serde_json::json!({
                    "sandboxID": record.sandbox_id,
                    "pid": state.started.as_ref().map(|s| s.pid),
                    "cgroupPath": record.cgroup_path,
                    "runtimeHandler": record.handler,
                    "runtimeSpec": spec,
                })
                .to_string(),
            );
        }
        Ok((self.cri_status(&record), info))
    }

    pub(crate) fn cri_status(&self, record: &ContainerRecord) -> ContainerStatus {
        let state = self.process_state(&record.id);
        let (cri_state, reason, message, exit_code) = describe(record, &state);
        let image = record.config.image.clone();
        let spec_user = self.spec_user(&record.id);
        ContainerStatus {
            id: record.id.clone(),
            metadata: record.config.metadata.clone(),
            state: cri_state as i32,
            created_at: record.created_at,
            started_at: state.started.as_ref().map_or(0, |s| s.started_at),
            finished_at: state.exit.as_ref().map_or(0, |e| e.finished_at),
            exit_code,
            image,
            image_ref: record.image_ref.clone(),
            reason,
            message,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            mounts: record.config.mounts.clone(),
            log_path: record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            resources: record
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|linux| ContainerResources {
                    linux: Some(linux),
                    windows: None,
                }),
            image_id: record.image_id.clone(),
            user: spec_user,
        }
    }

    /// The user the container runs as, from its OCI spec.
    fn spec_user(&self, id: &str) -> Option<ContainerUser> {
        let path = self
            .containers
            .dir_of(id)
            .join("bundle")
            .join("config.json");
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let user = spec.process().as_ref()?.user().clone();
        Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: user.uid().into(),
                gid: user.gid().into(),
                supplemental_groups: user
                    .additional_gids()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(i64::from)
                    .collect(),
            }),
        })
    }

    /// Containers matching the filter.
    pub fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<Container> {
        let mut out = Vec::new();
        for record in self.containers.all() {
            if record.phase == ContainerPhase::Creating {
                continue;
            }
            let state = describe(&record, &self.process_state(&record.id)).0;
            if let Some(f) = filter {
                if !f.id.is_empty() && !record.id.starts_with(&f.id) {
                    continue;
                }
                if !f.pod_sandbox_id.is_empty() && !record.sandbox_id.starts_with(&f.pod_sandbox_id)
                {
                    continue;
                }
                if f.state.as_ref().is_some_and(|s| s.state != state as i32) {
                    continue;
                }
                if !labels_match(&record.config.labels, &f.label_selector) {
                    continue;
                }
            }
            out.push(Container {
                id: record.id.clone(),
                pod_sandbox_id: record.sandbox_id.clone(),
                metadata: record.config.metadata.clone(),
                image: record.config.image.clone(),
                image_ref: record.image_ref.clone(),
                state: state as i32,
                created_at: record.created_at,
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
                image_id: record.image_id.clone(),
            });
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        out
    }
}

/// CRI state, reason, message and exit code of a container.
fn describe(
    record: &ContainerRecord,
    state: &ProcessState,
) -> (ContainerState, String, String, i32) {
    match (&state.started, &state.exit) {
        (_, Some(exit)) => {
            // A failed start can leave an exit record too (the executor exits 127);
            // the start error is still what happened.
            let reason = if record.start_error.is_some() {
                "StartError"
            } else if exit.oom_killed {
                "OOMKilled"
            } else if exit.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let message = record.start_error.clone().unwrap_or_default();
            (
                ContainerState::ContainerExited,
                reason.to_owned(),
                message,
                exit.exit_code,
            )
        }
        (Some(_), None) => (
            ContainerState::ContainerRunning,
            String::new(),
            String::new(),
            0,
        ),
        (None, None) => match &record.start_error {
            Some(e) => (
                ContainerState::ContainerExited,
                "StartError".to_owned(),
                e.clone(),
                128,
            ),
            None => (
                ContainerState::ContainerCreated,
                String::new(),
                String::new(),
                0,
            ),
        },
    }
}
