//! PodSandboxStatus and ListPodSandbox: sandboxes as CRI shows them.

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandbox, PodSandboxFilter, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatus,
};

use super::{SandboxPhase, SandboxRecord};
use crate::monitor::launch;
use crate::runtime::error::RuntimeError;
use crate::runtime::Runtime;

/// Whether every `selector` label is on the object.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Runtime {
    /// A sandbox's status; `verbose` adds the record as JSON under `info`.
    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, HashMap<String, String>), RuntimeError> {
        let record = self.sandbox(id)?;
        let mut info = HashMap::new();
        if verbose {
            let (namespace, name, uid) = record.pod_identity();
            info.insert(
                "info".to_owned(),
                serde_json::json!({
                    "pod": format!("{namespace}/{name}"),
                    "uid": uid,
                    "phase": record.phase,
                    "runDir": record.run_dir,
                    "cgroupParent": record.cgroup_parent,
                    "monitorPid": launch::monitor_pid(&record.run_dir),
                    "netns": record.netns_path(),
                })
                .to_string(),
            );
        }
        Ok((self.status_of(&record), info))
    }

    pub(crate) fn status_of(&self, record: &SandboxRecord) -> PodSandboxStatus {
        let mut ips = record.ips.iter();
        let network = ips.next().map(|first| PodSandboxNetworkStatus {
            ip: first.clone(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        });
        PodSandboxStatus {
            id: record.id.clone(),
            metadata: record.config.metadata.clone(),
            state: self.sandbox_state(record) as i32,
            created_at: record.created_at,
            network,
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: record
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                }),
            }),
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            runtime_handler: record.runtime_handler.clone(),
        }
    }

    /// Ready only while recorded ready and its monitor (holding the namespaces) lives.
    fn sandbox_state(&self, record: &SandboxRecord) -> PodSandboxState {
        if record.phase == SandboxPhase::Ready && launch::monitor_pid(&record.run_dir).is_some() {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        }
    }

    /// Sandboxes matching the filter.
    pub fn list_pod_sandboxes(&self, filter: Option<&PodSandboxFilter>) -> Vec<PodSandbox> {
        let mut out = Vec::new();
        for record in self.sandboxes.all() {
            if record.phase == SandboxPhase::Creating {
                continue;
            }
            let state = self.sandbox_state(&record);
            if let Some(f) = filter {
                if !f.id.is_empty() && !record.id.starts_with(&f.id) {
                    continue;
                }
                if f.state.as_ref().is_some_and(|s| s.state != state as i32) {
                    continue;
                }
                if !labels_match(&record.config.labels, &f.label_selector) {
                    continue;
                }
            }
            out.push(PodSandbox {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                state: state as i32,
                created_at: record.created_at,
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
                runtime_handler: record.runtime_handler.clone(),
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        out
    }
}
