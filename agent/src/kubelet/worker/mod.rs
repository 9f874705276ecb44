//! Pod workers: one task per pod UID that drives the runtime toward the pod's spec (the
//! kubelet's SyncPod), reports status, and terminates the pod gracefully when it goes away.
//! Updates for one pod are serialised through its task; workers wake on spec changes,
//! runtime events, probe results and back-off timers — nothing is polled that is pushed.

mod backoff;
mod containers;
mod observe;
mod pleg;
mod pod;
mod probes;
mod sync;
mod terminate;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{watch, Notify};

pub use backoff::{Backoff, BackoffPolicy};

use crate::kubelet::api_objects::ObjectFetcher;
use crate::kubelet::convert::NodeInfo;
use crate::kubelet::runtime::Cri;
use crate::kubelet::status::PodStore;
use crate::kubelet::volumes::{NodeAllocatable, VolumeManager};

/// Node facts and settings every worker needs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Node facts for the converters (name, IPs, allocatable, DNS, seccomp root).
    pub node: Arc<NodeInfo>,
    /// Root of container logs (`<dir>/<ns>_<name>_<uid>/<container>/<n>.log`).
    pub pod_logs_dir: PathBuf,
    /// The kubelet's state root (`pods/<uid>/...`).
    pub root_dir: PathBuf,
    /// Cgroup parent of all pods.
    pub cgroup_root: String,
    /// What the node offers pods (downwardAPI volumes, memory-backed emptyDir size).
    pub allocatable: NodeAllocatable,
    /// CRI runtime name, for `containerID: <runtime>://<id>`.
    pub runtime_name: String,
    /// Crash-loop back-off bounds.
    pub restart_backoff: BackoffPolicy,
    /// Image-pull back-off bounds.
    pub pull_backoff: BackoffPolicy,
}

/// What a worker is asked to do with its pod.
#[derive(Debug, Clone)]
pub(crate) enum Desired {
    /// Run this spec.
    Run(Arc<Pod>),
    /// Stop everything, giving containers this long to exit.
    Terminate(Duration),
}

struct WorkerHandle {
    desired: watch::Sender<Desired>,
    wake: Arc<Notify>,
    /// Becomes true once the worker has torn its pod down.
    done: watch::Receiver<bool>,
    full_name: (String, String),
}

pub(crate) struct Shared {
    cri: Cri,
    /// Resolves the API objects pods refer to (cluster mode only).
    objects: Option<ObjectFetcher>,
    store: Arc<PodStore>,
    volumes: VolumeManager,
    settings: WorkerSettings,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    /// CRI container ID → pod UID, so runtime events reach the right worker.
    containers: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn workers(&self) -> MutexGuard<'_, HashMap<String, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn container_index(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the worker of `uid`, if it has one.
    fn wake_pod(&self, uid: &str) {
        if let Some(worker) = self.workers().get(uid) {
            worker.wake.notify_one();
        }
    }

    /// Wake the worker owning a container; false when no worker is known for it.
    fn wake_container(&self, container_id: &str) -> bool {
        let uid = self.container_index().get(container_id).cloned();
        match uid {
            Some(uid) => {
                self.wake_pod(&uid);
                true
            }
            None => false,
        }
    }

    fn wake_all(&self) {
        for worker in self.workers().values() {
            worker.wake.notify_one();
        }
    }
}

/// All pod workers of the node.
#[derive(Clone)]
pub struct PodWorkers {
    shared: Arc<Shared>,
    pleg: Arc<tokio::task::AbortHandle>,
}

impl PodWorkers {
    /// Workers over `cri`, reporting into `store`; `objects` resolves the configMaps,
    /// secrets, tokens and services pods refer to (None: no API server).
    pub fn new(
        cri: Cri,
        store: Arc<PodStore>,
        settings: WorkerSettings,
        objects: Option<ObjectFetcher>,
    ) -> Self {
        let volumes = VolumeManager::new(settings.root_dir.join("pods"), settings.allocatable);
        let shared = Arc::new(Shared {
            cri,
            objects,
            store,
            volumes,
            settings,
            workers: Mutex::default(),
            containers: Mutex::default(),
        });
        let pleg = Arc::new(pleg::spawn(shared.clone()));
        Self { shared, pleg }
    }

    /// Make the running set match `pods` (the source's full set): start workers for new
    /// UIDs, hand changed specs to existing ones, terminate pods no longer listed.
    pub fn sync_pods(&self, pods: &[Pod]) {
        let wanted: BTreeSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let mut workers = self.shared.workers();
        for (uid, worker) in workers.iter() {
            if !wanted.contains(uid) && matches!(*worker.desired.borrow(), Desired::Run(_)) {
                let grace = match &*worker.desired.borrow() {
                    Desired::Run(pod) => grace_period(pod),
                    Desired::Terminate(grace) => *grace,
                };
                let _ = worker.desired.send(Desired::Terminate(grace));
            }
        }
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            // Deleted in the API: terminate with the deletion's grace period.
            let deleting = pod
                .metadata
                .deletion_timestamp
                .is_some()
                .then(|| deletion_grace_period(pod));
            if let Some(worker) = workers.get(&uid) {
                if let Some(grace) = deleting {
                    worker.desired.send_if_modified(|current| match current {
                        Desired::Run(_) => {
                            *current = Desired::Terminate(grace);
                            true
                        }
                        Desired::Terminate(_) => false,
                    });
                    continue;
                }
                worker.desired.send_if_modified(|current| match current {
                    Desired::Run(old) if old.as_ref() != pod => {
                        *current = Desired::Run(Arc::new(pod.clone()));
                        true
                    }
                    _ => false,
                });
                continue;
            }
            let full_name = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            // A replaced static pod keeps its name: the new one waits for the old to go.
            let predecessors: Vec<watch::Receiver<bool>> = workers
                .values()
                .filter(|w| w.full_name == full_name)
                .map(|w| w.done.clone())
                .collect();
            let handle = pod::spawn(
                self.shared.clone(),
                uid.clone(),
                Arc::new(pod.clone()),
                predecessors,
                full_name,
            );
            if let Some(grace) = deleting {
                let _ = handle.desired.send(Desired::Terminate(grace));
            }
            workers.insert(uid, handle);
        }
    }

    /// Terminate what the runtime runs for pods nobody asked for (a manifest removed while
    /// the agent was down), and volumes of pods that are gone. Call after the first
    /// [`Self::sync_pods`], so adopted pods are known.
    pub async fn clean_up_orphans(&self) {
        terminate::clean_up_orphans(&self.shared).await;
    }

    /// Stop listening to the runtime (the agent is exiting; pods keep running).
    pub fn stop_events(&self) {
        self.pleg.abort();
    }

    /// Pods with a worker (running or terminating).
    pub fn active(&self) -> usize {
        self.shared.workers().len()
    }

    /// The runtime client the workers use.
    pub fn cri(&self) -> &Cri {
        &self.shared.cri
    }
}

/// The grace period a deletion granted (deletionGracePeriodSeconds), else the pod's own.
fn deletion_grace_period(pod: &Pod) -> Duration {
    match pod.metadata.deletion_grace_period_seconds {
        Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        None => grace_period(pod),
    }
}

/// The pod's terminationGracePeriodSeconds (default 30).
pub(crate) fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}
