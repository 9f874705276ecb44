//! One pod's worker task: waits for its spec, a runtime event, a probe result or a timer,
//! then syncs; on termination tears the pod down and retires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use super::backoff::Backoff;
use super::probes::Probes;
use super::{Desired, Shared, WorkerHandle};
use crate::kubelet::api_objects::{ObjectFetcher, PodObjects};
use crate::kubelet::probe::ProbeUpdate;
use crate::kubelet::status::Waiting;

/// Longest a synced pod waits without any push before checking the runtime again.
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delay after a sync that failed for a runtime error.
const RETRY: Duration = Duration::from_secs(1);

/// A worker's state between syncs.
pub(super) struct PodWorker {
    pub(super) shared: Arc<Shared>,
    pub(super) uid: String,
    pub(super) probes: Probes,
    pub(super) probe_rx: mpsc::UnboundedReceiver<ProbeUpdate>,
    pub(super) restart_backoff: Backoff,
    pub(super) pull_backoff: Backoff,
    /// Why containers without a running instance wait, by name.
    pub(super) waiting: BTreeMap<String, Waiting>,
    /// When the worker first saw the pod (status.startTime).
    pub(super) start_time: Timestamp,
    /// Earliest wake-up a back-off or probe delay asked for.
    pub(super) wake_at: Option<Instant>,
    /// Back-off was seeded from the runtime's restart counts (adoption after a restart).
    pub(super) seeded: bool,
    /// The API objects the pod refers to, as last resolved.
    pub(super) objects: Arc<PodObjects>,
}

impl PodWorker {
    /// Ask to be woken at `at` at the latest.
    pub(super) fn wake_by(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |t| t.min(at)));
    }

    /// Ask to be woken when `at` (a wall-clock time) comes.
    pub(super) fn wake_at_time(&mut self, at: Timestamp) {
        let wait = at.duration_since(Timestamp::now());
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        self.wake_by(Instant::now() + wait);
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    uid: String,
    pod: Arc<Pod>,
    predecessors: Vec<watch::Receiver<bool>>,
    full_name: (String, String),
) -> WorkerHandle {
    let (desired_tx, desired) = watch::channel(Desired::Run(pod.clone()));
    let (done_tx, done) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    shared.store.add(pod.as_ref().clone());
    let worker = PodWorker {
        probes: Probes::new(shared.cri.clone(), probe_tx),
        shared,
        uid: uid.clone(),
        probe_rx,
        restart_backoff: Backoff::new(Default::default()),
        pull_backoff: Backoff::new(Default::default()),
        waiting: BTreeMap::new(),
        start_time: Timestamp::now(),
        wake_at: None,
        seeded: false,
        objects: Arc::default(),
    };
    let span =
        tracing::info_span!("pod", pod = %format!("{}/{}", full_name.0, full_name.1), uid = %uid);
    tokio::spawn(run(worker, desired, wake.clone(), predecessors, done_tx).instrument(span));
    WorkerHandle {
        desired: desired_tx,
        wake,
        done,
        full_name,
    }
}

async fn run(
    mut worker: PodWorker,
    mut desired: watch::Receiver<Desired>,
    wake: Arc<Notify>,
    predecessors: Vec<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
) {
    let settings = &worker.shared.settings;
    worker.restart_backoff = Backoff::new(settings.restart_backoff);
    worker.pull_backoff = Backoff::new(settings.pull_backoff);
    for mut predecessor in predecessors {
        // An error means the predecessor's worker is gone, which is as good as done.
        let _ = predecessor.wait_for(|done| *done).await;
    }
    // A referenced configMap, secret or service changed, or a token is due: sync again.
    let mut object_changes = settings_objects(&worker).map(|f| f.subscribe(&worker.uid));
    loop {
        let current = desired.borrow_and_update().clone();
        let pod = match current {
            Desired::Run(pod) => pod,
            Desired::Terminate(grace) => {
                worker.terminate(grace).await;
                break;
            }
        };
        worker.wake_at = None;
        if let Err(error) = worker.sync(&pod).await {
            tracing::warn!(%error, "pod sync failed; retrying");
            worker.wake_by(Instant::now() + RETRY);
        }
        let deadline = worker.wake_at.unwrap_or(Instant::now() + RESYNC);
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { break },
            _ = wake.notified() => {}
            _ = object_changed(&mut object_changes) => {}
            update = worker.probe_rx.recv() => {
                if let Some(update) = update {
                    worker.apply_probe_update(update);
                }
                // Several results often arrive together: take them in one sync.
                while let Ok(update) = worker.probe_rx.try_recv() {
                    worker.apply_probe_update(update);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let uid = worker.uid.clone();
    if let Some(fetcher) = settings_objects(&worker) {
        fetcher.forget(&uid);
    }
    worker.shared.workers().remove(&uid);
    worker
        .shared
        .container_index()
        .retain(|_, owner| *owner != uid);
    let _ = done.send(true);
}

fn settings_objects(worker: &PodWorker) -> Option<&ObjectFetcher> {
    worker.shared.objects.as_ref()
}

/// Resolves when the pod's referenced objects changed; never without a fetcher.
async fn object_changed(changes: &mut Option<watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The fetcher forgot the pod: stop listening rather than spin.
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
