//! Graceful pod termination (preStop, SIGTERM, grace period, SIGKILL, sandbox stop and
//! removal, volume teardown), and clean-up of what no source asks for any more.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;

use super::pod::PodWorker;
use super::Shared;
use crate::kubelet::convert::{ContainerRecord, POD_UID_LABEL};
use crate::kubelet::status::is_sidecar;

/// Retry delay while a teardown step fails.
const RETRY: Duration = Duration::from_secs(1);
/// Teardown attempts before giving up and leaving it to the next start's orphan clean-up.
const ATTEMPTS: usize = 30;

impl PodWorker {
    /// Tear the pod down within `grace`; only returns once everything is gone (or after
    /// repeated failures, which the next start's orphan clean-up picks up).
    pub(super) async fn terminate(&mut self, grace: Duration) {
        let pod = self.shared.store.pod(&self.uid).unwrap_or_default();
        let seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        self.shared.store.mark_terminating(&self.uid, seconds);
        self.probes.stop_all();
        for attempt in 1..=ATTEMPTS {
            match self.try_terminate(&pod, grace).await {
                Ok(()) => break,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::error!(%error, "pod teardown keeps failing; leaving it to clean-up");
                }
                Err(error) => {
                    tracing::warn!(%error, "pod teardown failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        self.shared.store.remove(&self.uid);
    }

    async fn try_terminate(&self, pod: &Pod, grace: Duration) -> Result<(), String> {
        let view = self.observe().await.map_err(|e| e.to_string())?;
        let spec = pod.spec.clone().unwrap_or_default();
        let sidecars: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
            .cloned()
            .collect();
        let started = std::time::Instant::now();
        // App containers first, together; then sidecars, newest first, like the kubelet.
        let live = |name: &str| {
            view.instances
                .iter()
                .filter(|i| i.live && i.name == name)
                .map(|i| i.id.clone())
                .collect::<Vec<_>>()
        };
        let app = spec
            .containers
            .iter()
            .flat_map(|c| live(&c.name).into_iter().map(move |id| (c.clone(), id)));
        let stops = app.map(|(c, id)| {
            let message = format!("Stopping container {}", c.name);
            async move {
                self.kill_with_grace(pod, Some(&c), &id, grace, message)
                    .await;
            }
        });
        join_all(stops).await;
        for sidecar in sidecars.iter().rev() {
            for id in live(&sidecar.name) {
                let left = grace.saturating_sub(started.elapsed());
                let message = format!("Stopping container {}", sidecar.name);
                self.kill_with_grace(pod, Some(sidecar), &id, left, message)
                    .await;
            }
        }
        // Anything else (plain init containers, instances of removed specs) goes now.
        let known: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        for instance in view
            .instances
            .iter()
            .filter(|i| i.live && !known.contains(i.name.as_str()))
        {
            let message = format!("Stopping container {}", instance.name);
            self.kill_with_grace(pod, None, &instance.id, Duration::ZERO, message)
                .await;
        }
        // The last status shows how each container ended (exit code, reason), as the
        // kubelet reports before the pod goes.
        let stopped = self.observe().await.map_err(|e| e.to_string())?;
        self.publish(pod, &stopped, None);
        remove_pod(&self.shared, &self.uid, &view.sandboxes).await
    }
}

/// Stop and remove every sandbox and container of pod `uid`, then its volumes.
async fn remove_pod(
    shared: &Shared,
    uid: &str,
    sandboxes: &[k8s_cri::v1::PodSandbox],
) -> Result<(), String> {
    let cri = &shared.cri;
    for sandbox in sandboxes {
        cri.stop_sandbox(&sandbox.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    let selector = HashMap::from([(POD_UID_LABEL.to_owned(), uid.to_owned())]);
    let containers = cri
        .list_containers(selector)
        .await
        .map_err(|e| e.to_string())?;
    for container in containers {
        cri.remove_container(&container.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    for sandbox in sandboxes {
        cri.remove_sandbox(&sandbox.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    shared.volumes.teardown(uid).map_err(|e| e.to_string())
}

/// Terminate pods the runtime runs but no worker owns, and remove volumes of pods that
/// are gone: what a crash or a manifest removed while the agent was down leaves behind.
pub(super) async fn clean_up_orphans(shared: &Shared) {
    let owned: BTreeSet<String> = shared.workers().keys().cloned().collect();
    let sandboxes = match shared.cri.list_sandboxes(HashMap::new()).await {
        Ok(sandboxes) => sandboxes,
        Err(error) => {
            tracing::warn!(%error, "listing sandboxes for orphan clean-up");
            return;
        }
    };
    let mut orphans: HashMap<String, Vec<k8s_cri::v1::PodSandbox>> = HashMap::new();
    for sandbox in sandboxes {
        let Some(uid) = sandbox.labels.get(POD_UID_LABEL).cloned() else {
            continue;
        };
        if !owned.contains(&uid) {
            orphans.entry(uid).or_default().push(sandbox);
        }
    }
    for (uid, sandboxes) in &orphans {
        tracing::info!(uid, "stopping a pod no source asks for");
        let selector = HashMap::from([(POD_UID_LABEL.to_owned(), uid.clone())]);
        let containers = shared
            .cri
            .list_containers(selector)
            .await
            .unwrap_or_default();
        let stops = containers.iter().map(|c| {
            let grace = ContainerRecord::from_annotations(&c.annotations)
                .ok()
                .and_then(|r| r.pod_termination_grace_period)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(Duration::from_secs(30), Duration::from_secs);
            shared.cri.stop_container(&c.id, grace)
        });
        for result in join_all(stops).await {
            if let Err(error) = result {
                tracing::warn!(%error, uid, "stopping an orphaned container");
            }
        }
        if let Err(error) = remove_pod(shared, uid, sandboxes).await {
            tracing::warn!(%error, uid, "removing an orphaned pod");
        }
    }
    match shared.volumes.known_pods() {
        Ok(uids) => {
            for uid in uids
                .iter()
                .filter(|u| !owned.contains(*u) && !orphans.contains_key(*u))
            {
                if let Err(error) = shared.volumes.teardown(uid) {
                    tracing::warn!(%error, uid, "removing an orphaned pod's volumes");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "listing pod volume directories"),
    }
}
