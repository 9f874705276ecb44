//! Cluster mode: pods from the API server next to static pods. Decides which API pods the
//! workers run (admission, terminal pods, deletion), where statuses go (the pod, or a static
//! pod's mirror), and keeps mirror pods in step.

mod connection;
mod mirror;
mod pod_source;
mod retry;
mod status_patch;
mod status_sync;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::api::{Api, PostParams};

pub use connection::{connect, Connection};
pub use mirror::{is_mirror, CONFIG_MIRROR_ANNOTATION};
pub use pod_source::{watch_assigned, AssignedPods};
pub use retry::Retry;
pub use status_sync::{StatusSync, StatusTarget};

use crate::kubelet::admission::{admit, Rejection};
use crate::kubelet::bootstrap::ApiClient;
use crate::kubelet::source::CONFIG_SOURCE_ANNOTATION;
use mirror::{plan, MirrorAction};
use status_sync::delete_now;

/// The API side of the pod set: which API pods run, and the status and mirror bookkeeping.
pub struct ClusterPods {
    client: ApiClient,
    node: String,
    status: StatusSync,
    /// API pods given to workers (admission passed), by UID.
    admitted: BTreeSet<String>,
    /// API pods refused at admission, by UID; never retried.
    rejected: HashSet<String>,
    /// Mirror pods being created or deleted, by namespace/name, so a change is made once.
    mirror_busy: Arc<Mutex<HashSet<(String, String)>>>,
}

impl ClusterPods {
    /// Bookkeeping for `node`, writing through `client` and `status`.
    pub fn new(client: ApiClient, node: String, status: StatusSync) -> Self {
        ClusterPods {
            client,
            node,
            status,
            admitted: BTreeSet::new(),
            rejected: HashSet::new(),
            mirror_busy: Arc::default(),
        }
    }

    /// The API pods the workers should have, given the API's view and the Node (needed to
    /// admit new pods; without it new pods wait). Static pods' mirrors are reconciled too.
    pub fn desired(
        &mut self,
        api_pods: &BTreeMap<String, Pod>,
        static_pods: &[Pod],
        node: Option<&Node>,
    ) -> Vec<Pod> {
        self.admitted.retain(|uid| api_pods.contains_key(uid));
        self.rejected.retain(|uid| api_pods.contains_key(uid));
        let mut ordered: Vec<&Pod> = api_pods.values().filter(|p| !is_mirror(p)).collect();
        // The kubelet admits in creation order, so earlier pods win contested resources.
        ordered.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let mut running: Vec<Pod> = ordered
            .iter()
            .filter(|p| self.admitted.contains(&uid(p)))
            .map(|p| (*p).clone())
            .collect();
        running.extend(static_pods.iter().cloned());
        let mut wanted = Vec::new();
        for pod in ordered {
            let id = uid(pod);
            if self.rejected.contains(&id) {
                continue;
            }
            if !self.admitted.contains(&id) {
                if pod.metadata.deletion_timestamp.is_none() && is_terminal(pod.status.as_ref()) {
                    continue;
                }
                // A pod deleted before it ran still gets a worker: it ends with the delete.
                if pod.metadata.deletion_timestamp.is_none() {
                    let Some(node) = node else {
                        continue;
                    };
                    if let Err(rejection) = admit(pod, node, &running) {
                        self.reject(pod, rejection);
                        continue;
                    }
                }
                self.admitted.insert(id.clone());
                running.push(pod.clone());
            }
            if let Some(target) = target_of(pod) {
                self.status.track(&id, target, pod);
            }
            wanted.push(as_worker_pod(pod));
        }
        self.reconcile_mirrors(static_pods, api_pods, node);
        wanted
    }

    fn reject(&mut self, pod: &Pod, rejection: Rejection) {
        let id = uid(pod);
        tracing::warn!(pod = %full_name(pod), reason = %rejection.reason, message = %rejection.message, "pod rejected at admission");
        self.rejected.insert(id.clone());
        let Some(target) = target_of(pod) else {
            return;
        };
        let status = PodStatus {
            phase: Some("Failed".to_owned()),
            reason: Some(rejection.reason),
            message: Some(rejection.message),
            ..PodStatus::default()
        };
        self.status.report(&id, target, pod, status);
    }

    fn reconcile_mirrors(
        &self,
        static_pods: &[Pod],
        api_pods: &BTreeMap<String, Pod>,
        node: Option<&Node>,
    ) {
        let node_uid = node.and_then(|n| n.metadata.uid.as_deref());
        let (actions, statuses) = plan(&self.node, node_uid, static_pods, api_pods);
        for mirror in statuses {
            self.status
                .track(&mirror.static_uid, mirror.target, &mirror.api_pod);
        }
        for action in actions {
            let key = match &action {
                MirrorAction::Create(pod) => (
                    pod.metadata.namespace.clone().unwrap_or_default(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
                MirrorAction::Delete(target) => (target.namespace.clone(), target.name.clone()),
            };
            if !self.lock_busy().insert(key.clone()) {
                continue;
            }
            let client = self.client.current();
            let busy = self.mirror_busy.clone();
            tokio::spawn(async move {
                apply_mirror_action(client, action).await;
                busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            });
        }
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.mirror_busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn apply_mirror_action(client: kube::Client, action: MirrorAction) {
    match action {
        MirrorAction::Create(pod) => {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client, &namespace);
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => tracing::info!(pod = %full_name(&pod), "mirror pod created"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(error) => tracing::warn!(pod = %full_name(&pod), %error, "creating mirror pod"),
            }
        }
        MirrorAction::Delete(target) => {
            if let Err(error) = delete_now(client, &target).await {
                tracing::warn!(pod = %target.name, %error, "deleting mirror pod");
            }
        }
    }
}

/// The worker's copy of an API pod: marked as coming from the API, like the kubelet's
/// `kubernetes.io/config.source: api`.
fn as_worker_pod(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_SOURCE_ANNOTATION.to_owned(), "api".to_owned());
    pod
}

fn target_of(pod: &Pod) -> Option<StatusTarget> {
    Some(StatusTarget {
        namespace: pod.metadata.namespace.clone()?,
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
    })
}

fn is_terminal(status: Option<&PodStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
