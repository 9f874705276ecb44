//! Reading one pod's sandboxes and containers back from the runtime (the kubelet's
//! GetPodStatus): the runtime is the truth, so an agent restart loses nothing.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1::{ContainerState, PodSandbox, PodSandboxState};

use crate::kubelet::convert::{ContainerRecord, CONTAINER_NAME_LABEL, POD_UID_LABEL};
use crate::kubelet::runtime::{Cri, RuntimeError};
use crate::kubelet::status::{cri_time, ContainerHistory, ObservedContainer, RunState};

/// A pod as the runtime shows it.
#[derive(Debug, Default)]
pub struct RuntimeView {
    /// The pod's sandboxes, newest first.
    pub sandboxes: Vec<PodSandbox>,
    /// Container history by container name.
    pub containers: BTreeMap<String, ContainerHistory>,
    /// Every container instance, for clean-up.
    pub instances: Vec<Instance>,
}

/// One container instance in the runtime.
#[derive(Debug, Clone)]
pub struct Instance {
    /// CRI ID.
    pub id: String,
    /// Container name in the pod spec.
    pub name: String,
    /// Still running (or created, not yet exited).
    pub live: bool,
}

impl RuntimeView {
    /// The newest sandbox if it is ready.
    pub fn ready_sandbox(&self) -> Option<&PodSandbox> {
        self.sandboxes
            .first()
            .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
    }

    /// The next sandbox attempt number.
    pub fn next_attempt(&self) -> u32 {
        let attempts = self.sandboxes.iter().filter_map(|s| s.metadata.as_ref());
        attempts.map(|m| m.attempt + 1).max().unwrap_or(0)
    }

    /// The restart count a new instance of `name` gets.
    pub fn next_restart_count(&self, name: &str) -> u32 {
        let current = self.containers.get(name).and_then(|h| h.current.as_ref());
        current.map_or(0, |c| c.restart_count.saturating_add(1))
    }
}

/// Observe the pod `uid`.
pub async fn observe(cri: &Cri, uid: &str) -> Result<RuntimeView, RuntimeError> {
    let selector = HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]);
    let mut sandboxes = cri.list_sandboxes(selector.clone()).await?;
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let containers = cri.list_containers(selector).await?;
    let mut by_name: BTreeMap<String, Vec<ObservedContainer>> = BTreeMap::new();
    let mut instances = Vec::new();
    for container in containers {
        let Some(name) = container.labels.get(CONTAINER_NAME_LABEL).cloned() else {
            continue;
        };
        let status = match cri.container_status(&container.id).await {
            Ok(status) => status,
            // Removed between the list and the status call.
            Err(e) if e.code() == tonic::Code::NotFound => continue,
            Err(e) => return Err(e),
        };
        let state = match ContainerState::try_from(status.state) {
            Ok(ContainerState::ContainerCreated) => RunState::Created,
            Ok(ContainerState::ContainerRunning) => RunState::Running,
            Ok(ContainerState::ContainerExited) => RunState::Exited,
            _ => RunState::Unknown,
        };
        // Unreadable annotations (another client's container) read as a first run.
        let record = ContainerRecord::from_annotations(&status.annotations).ok();
        let restart_count = record.as_ref().map_or(0, |r| r.restart_count);
        instances.push(Instance {
            id: container.id.clone(),
            name: name.clone(),
            live: matches!(state, RunState::Running | RunState::Created),
        });
        by_name.entry(name).or_default().push(ObservedContainer {
            id: container.id,
            state,
            exit_code: status.exit_code,
            reason: status.reason,
            message: status.message,
            created_at: cri_time(status.created_at),
            started_at: cri_time(status.started_at),
            finished_at: cri_time(status.finished_at),
            restart_count,
            image: status.image.map(|i| i.image).unwrap_or_default(),
            image_ref: status.image_ref,
            spec_hash: record.map(|r| r.hash).unwrap_or_default(),
        });
    }
    let containers = by_name
        .into_iter()
        .map(|(name, mut all)| {
            all.sort_by(|a, b| {
                (b.restart_count, b.created_at).cmp(&(a.restart_count, a.created_at))
            });
            let mut all = all.into_iter();
            let history = ContainerHistory {
                current: all.next(),
                previous: all.next(),
            };
            (name, history)
        })
        .collect();
    Ok(RuntimeView {
        sandboxes,
        containers,
        instances,
    })
}
