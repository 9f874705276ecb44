//! The probe workers of one pod's running container instances and their latest results:
//! started (startup probe), ready (readiness probe), and liveness/startup failures that
//! call for a restart.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Container;
use tokio::sync::{mpsc, watch};

use super::pod::PodWorker;
use crate::kubelet::probe::{
    self, instant_from_unix_nanos, ProbeKind, ProbeState, ProbeTarget, ProbeUpdate,
    ProbeUpdateKind, ProbeWorker, WorkerConfig,
};
use crate::kubelet::runtime::Cri;
use crate::kubelet::status::EventKind;

/// Probe state of one container instance.
struct Instance {
    name: String,
    started: watch::Sender<bool>,
    ready: bool,
    /// Liveness or startup failed: the container must be restarted.
    unhealthy: Option<ProbeKind>,
    /// Held, not read: dropping the workers with the instance stops its probing.
    _workers: Vec<ProbeWorker>,
}

/// Probe workers and results by CRI container ID.
pub(super) struct Probes {
    cri: Cri,
    updates: mpsc::UnboundedSender<ProbeUpdate>,
    instances: HashMap<String, Instance>,
}

impl Probes {
    pub(super) fn new(cri: Cri, updates: mpsc::UnboundedSender<ProbeUpdate>) -> Self {
        Self {
            cri,
            updates,
            instances: HashMap::new(),
        }
    }

    /// Start probing a running container instance, once.
    pub(super) fn watch(
        &mut self,
        container_id: &str,
        spec: &Container,
        pod_ip: Option<String>,
        pod_label: String,
        started_at_nanos: i64,
    ) {
        if self.instances.contains_key(container_id) {
            return;
        }
        let (started_tx, started_rx) = watch::channel(spec.startup_probe.is_none());
        let target = ProbeTarget {
            pod_ip,
            container_id: container_id.to_owned(),
            container: spec.clone(),
            pod: pod_label,
        };
        let started_at = instant_from_unix_nanos(started_at_nanos);
        let mut workers = Vec::new();
        let probes = [
            (ProbeKind::Startup, &spec.startup_probe, None),
            (
                ProbeKind::Liveness,
                &spec.liveness_probe,
                Some(started_rx.clone()),
            ),
            (
                ProbeKind::Readiness,
                &spec.readiness_probe,
                Some(started_rx),
            ),
        ];
        for (kind, probe, started) in probes {
            let Some(probe) = probe.clone() else { continue };
            let config = WorkerConfig {
                kind,
                probe,
                target: target.clone(),
                started_at,
                started,
            };
            workers.push(probe::spawn(config, self.cri.clone(), self.updates.clone()));
        }
        self.instances.insert(
            container_id.to_owned(),
            Instance {
                name: spec.name.clone(),
                started: started_tx,
                ready: spec.readiness_probe.is_none(),
                unhealthy: None,
                _workers: workers,
            },
        );
    }

    /// Stop probing instances that no longer run.
    pub(super) fn retain(&mut self, running: impl Fn(&str) -> bool) {
        self.instances.retain(|id, _| running(id));
    }

    /// Stop liveness and startup probing of every instance (the pod is terminating), so a
    /// container in its grace period is not restarted.
    pub(super) fn stop_all(&mut self) {
        self.instances.clear();
    }

    /// The startup probe passed (or there is none). Unknown instances count as started so
    /// containers adopted before their probes ran are not held back.
    pub(super) fn started(&self, container_id: &str) -> bool {
        self.instances
            .get(container_id)
            .is_none_or(|i| *i.started.borrow())
    }

    /// The readiness probe passes (or there is none).
    pub(super) fn ready(&self, container_id: &str) -> bool {
        self.instances.get(container_id).is_some_and(|i| i.ready)
    }

    /// Which probe failed, when the instance must be restarted.
    pub(super) fn unhealthy(&self, container_id: &str) -> Option<ProbeKind> {
        self.instances.get(container_id).and_then(|i| i.unhealthy)
    }

    fn apply(&mut self, update: &ProbeUpdate) {
        let Some(instance) = self.instances.get_mut(&update.container_id) else {
            return;
        };
        let ProbeUpdateKind::State(state) = &update.update else {
            return;
        };
        match (update.kind, state) {
            (ProbeKind::Startup, ProbeState::Success) => {
                let _ = instance.started.send(true);
            }
            (ProbeKind::Readiness, state) => instance.ready = *state == ProbeState::Success,
            (kind, ProbeState::Failure) => instance.unhealthy = Some(kind),
            _ => {}
        }
    }

    fn name(&self, container_id: &str) -> Option<&str> {
        self.instances.get(container_id).map(|i| i.name.as_str())
    }
}

impl PodWorker {
    /// Fold a probe report into the state the next sync reads, and record its event.
    pub(super) fn apply_probe_update(&mut self, update: ProbeUpdate) {
        if let ProbeUpdateKind::Event(event) = &update.update {
            let name = self.probes.name(&update.container_id).map(str::to_owned);
            self.shared.store.event(
                &self.uid,
                EventKind::Warning,
                event.reason,
                name.as_deref(),
                event.message.clone(),
            );
        }
        self.probes.apply(&update);
    }
}
