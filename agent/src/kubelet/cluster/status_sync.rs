//! The status manager: pushes the status the workers compute to `pods/<name>/status` in the
//! API (only what changed, coalesced, retried with back-off while the API is away), and
//! deletes a pod with grace 0 and a UID precondition once its worker has torn it down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use super::retry::Retry;
use super::status_patch::status_patch;
use crate::kubelet::bootstrap::ApiClient;
use crate::kubelet::local_api::WatchEventType;
use crate::kubelet::status::PodStore;

/// Patches in flight at once.
const CONCURRENCY: usize = 16;

/// The API object a pod's status goes to (the pod itself, or a static pod's mirror pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// Namespace in the API.
    pub namespace: String,
    /// Name in the API.
    pub name: String,
    /// UID of the API object (differs from the worker's UID for mirror pods).
    pub uid: String,
}

struct Target {
    api: StatusTarget,
    /// The status the API holds, as far as we know.
    sent: Value,
    /// The resourceVersion `sent` was read at (newest of watch events and our patches).
    sent_version: Option<u64>,
    /// The newest status the workers computed, when it differs from `sent`.
    pending: Option<Value>,
    /// The worker tore the pod down: delete the API object.
    gone: bool,
}

/// What one flush does for one pod.
enum Work {
    Patch(StatusTarget, Value, Value),
    Delete(StatusTarget),
}

/// Outcome of one piece of work.
enum Done {
    Sent(String, Value, Option<u64>),
    Deleted(String),
    Failed,
}

struct Inner {
    client: ApiClient,
    targets: Mutex<HashMap<String, Target>>,
    wake: Notify,
}

/// Handle to the status manager; clone freely.
#[derive(Clone)]
pub struct StatusSync {
    inner: Arc<Inner>,
}

impl StatusSync {
    /// A status manager writing through `client`, fed from `store`'s changes; its task runs
    /// for the life of the agent.
    pub fn start(client: ApiClient, store: Arc<PodStore>) -> StatusSync {
        let sync = StatusSync {
            inner: Arc::new(Inner {
                client,
                targets: Mutex::default(),
                wake: Notify::new(),
            }),
        };
        let changes = store.subscribe();
        let feeder = sync.clone();
        tokio::spawn(async move {
            tokio::join!(feeder.feed(store, changes), feeder.flush_loop());
        });
        sync
    }

    fn targets(&self) -> MutexGuard<'_, HashMap<String, Target>> {
        self.inner.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send the status of worker `uid` to `api`; `api_pod` is the API object as last seen.
    /// Calling again with a newer object (someone else wrote it) re-bases the diff; older
    /// ones (a watch event from before our own patch) are ignored.
    pub fn track(&self, uid: &str, api: StatusTarget, api_pod: &Pod) {
        let known = api_pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        let version = resource_version(api_pod);
        let mut targets = self.targets();
        match targets.get_mut(uid) {
            Some(target) => {
                let newer = match (version, target.sent_version) {
                    (Some(seen), Some(ours)) => seen > ours,
                    _ => true,
                };
                if target.api != api || newer {
                    target.api = api;
                    target.sent = known;
                    target.sent_version = version;
                }
            }
            None => {
                targets.insert(
                    uid.to_owned(),
                    Target {
                        api,
                        sent: known,
                        sent_version: version,
                        pending: None,
                        gone: false,
                    },
                );
            }
        }
        drop(targets);
        self.inner.wake.notify_one();
    }

    /// Send `status` for a pod no worker runs (one refused at admission).
    pub fn report(&self, uid: &str, api: StatusTarget, api_pod: &Pod, status: PodStatus) {
        self.track(uid, api, api_pod);
        if let Some(target) = self.targets().get_mut(uid) {
            target.pending = serde_json::to_value(status).ok();
        }
        self.inner.wake.notify_one();
    }

    /// Follow the store: every status change becomes the pod's pending status.
    async fn feed(
        &self,
        store: Arc<PodStore>,
        mut changes: broadcast::Receiver<crate::kubelet::local_api::WatchEvent>,
    ) {
        loop {
            match changes.recv().await {
                Ok(event) => {
                    let gone = event.kind == WatchEventType::Deleted;
                    self.note(&event.object, gone);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for pod in store.pods() {
                        self.note(&pod, false);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
            self.inner.wake.notify_one();
        }
    }

    fn note(&self, pod: &Pod, gone: bool) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let mut targets = self.targets();
        let Some(target) = targets.get_mut(uid) else {
            return;
        };
        if gone {
            target.gone = true;
        }
        if let Some(status) = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
        {
            target.pending = Some(status);
        }
    }

    async fn flush_loop(&self) {
        let mut retry = Retry::api();
        loop {
            self.inner.wake.notified().await;
            loop {
                let work = self.take_work();
                if work.is_empty() {
                    break;
                }
                let results: Vec<Done> = stream::iter(work)
                    .map(|work| self.run(work))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                let failed = results.iter().any(|r| matches!(r, Done::Failed));
                self.settle(results);
                if !failed {
                    retry.reset();
                    continue;
                }
                // The API is away or refusing: wait, then take whatever is newest by then.
                tokio::time::sleep(retry.next_delay()).await;
            }
        }
    }

    fn take_work(&self) -> Vec<Work> {
        let mut targets = self.targets();
        let mut work = Vec::new();
        for target in targets.values_mut() {
            if let Some(pending) = &target.pending {
                match status_patch(&target.api.uid, &target.sent, pending) {
                    Some(patch) => {
                        work.push(Work::Patch(target.api.clone(), patch, pending.clone()));
                        continue;
                    }
                    None => target.pending = None,
                }
            }
            if target.gone {
                work.push(Work::Delete(target.api.clone()));
            }
        }
        work
    }

    async fn run(&self, work: Work) -> Done {
        let client = self.inner.client.current();
        match work {
            Work::Patch(api, patch, status) => {
                let pods: Api<Pod> = Api::namespaced(client, &api.namespace);
                let params = PatchParams::default();
                match pods
                    .patch_status(&api.name, &params, &Patch::Strategic(patch))
                    .await
                {
                    Ok(pod) => Done::Sent(api.uid, status, resource_version(&pod)),
                    Err(error) if is_gone(&error) => Done::Deleted(api.uid),
                    Err(error) => {
                        tracing::warn!(pod = %format!("{}/{}", api.namespace, api.name), %error, "patching pod status");
                        Done::Failed
                    }
                }
            }
            Work::Delete(api) => match delete_now(client, &api).await {
                Ok(()) => Done::Deleted(api.uid),
                Err(error) => {
                    tracing::warn!(pod = %format!("{}/{}", api.namespace, api.name), %error, "deleting pod");
                    Done::Failed
                }
            },
        }
    }

    /// Apply results; they name API UIDs, which map back to targets.
    fn settle(&self, results: Vec<Done>) {
        let mut targets = self.targets();
        for result in results {
            match result {
                Done::Sent(api_uid, status, version) => {
                    for target in targets.values_mut().filter(|t| t.api.uid == api_uid) {
                        if target.pending.as_ref() == Some(&status) {
                            target.pending = None;
                        }
                        target.sent = status.clone();
                        target.sent_version = version.max(target.sent_version);
                    }
                }
                Done::Deleted(api_uid) => {
                    // Gone from the API (deleted by us, or by someone else): nothing more to send.
                    targets.retain(|_, t| t.api.uid != api_uid);
                }
                Done::Failed => {}
            }
        }
    }
}

/// Delete the API pod `target` for good (grace 0), only if it is still the same object
/// (UID precondition); already gone, or replaced by a namesake, counts as done.
pub(super) async fn delete_now(
    client: kube::Client,
    target: &StatusTarget,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(target.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&target.name, &params).await {
        Ok(_) => Ok(()),
        Err(error) if is_gone(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// resourceVersions are opaque, but every server in practice (etcd revisions, the test
/// server) uses increasing integers; anything else simply disables the ordering check.
fn resource_version(pod: &Pod) -> Option<u64> {
    pod.metadata.resource_version.as_deref()?.parse().ok()
}

/// 404 (object gone) and 409 (a different object now holds the name) both mean there is
/// nothing left for this pod to write.
fn is_gone(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 || status.code == 409)
}
