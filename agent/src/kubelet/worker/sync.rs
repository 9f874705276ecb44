//! One sync of a running pod (the kubelet's SyncPod + computePodActions): volumes, the
//! sandbox, init containers in order, sidecars, app containers, restarts under the
//! restart policy and back-off, then the status.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::observe::{observe, RuntimeView};
use super::pod::PodWorker;
use crate::kubelet::runtime::RuntimeError;
use crate::kubelet::status::{
    is_sidecar, pod_status, restart_policy, will_restart, EventKind, ObservedContainer, RunState,
    StatusInput, Waiting,
};

/// The sandbox a sync runs containers in.
pub(super) struct SandboxInfo {
    pub(super) id: String,
    pub(super) config: k8s_cri::v1::PodSandboxConfig,
    pub(super) ips: Vec<String>,
}

/// What to do with one container this sync.
enum Step {
    /// Nothing: it runs (or is done) as it should.
    Keep,
    /// Start a new instance.
    Start,
    /// Wait (back-off, or for it to finish); the next sync looks again.
    Wait,
}

impl PodWorker {
    /// Drive the runtime one step toward `pod`, then publish its status.
    pub(super) async fn sync(&mut self, pod: &Arc<Pod>) -> Result<(), RuntimeError> {
        if let Some(fetcher) = &self.shared.objects {
            match fetcher.resolve(pod).await {
                Ok(objects) => self.objects = Arc::new(objects),
                Err(error) => {
                    // Like the kubelet: the pod waits, with an event naming what is missing.
                    let message = error.to_string();
                    self.all_waiting(pod, "ContainerCreating", &message);
                    self.event(EventKind::Warning, "FailedMount", None, message);
                    self.wake_by(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
                    let view = observe(&self.shared.cri, &self.uid).await?;
                    self.publish(pod, &view, None);
                    return Ok(());
                }
            }
        }
        if let Err(error) = self.shared.volumes.setup(pod, &self.objects) {
            self.all_waiting(pod, "ContainerCreating", &error.to_string());
            self.event(EventKind::Warning, "FailedMount", None, error.to_string());
            self.wake_by(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
            let view = observe(&self.shared.cri, &self.uid).await?;
            self.publish(pod, &view, None);
            return Ok(());
        }
        let mut view = observe(&self.shared.cri, &self.uid).await?;
        self.seed_backoff(&view);
        let sandbox = match self.ensure_sandbox(pod, &view).await? {
            Some(sandbox) => sandbox,
            None => {
                self.publish(pod, &view, None);
                return Ok(());
            }
        };
        self.index_containers(&view);
        let mut acted = self.sync_init_containers(pod, &view, &sandbox).await;
        if acted.is_none() {
            acted = Some(self.sync_app_containers(pod, &view, &sandbox).await);
        }
        if acted != Some(false) {
            view = observe(&self.shared.cri, &self.uid).await?;
            self.index_containers(&view);
        }
        self.watch_probes(pod, &view, &sandbox);
        self.remove_old_instances(&view).await;
        self.publish(pod, &view, Some(&sandbox));
        Ok(())
    }

    /// Record an event about this pod.
    pub(super) fn event(
        &self,
        kind: EventKind,
        reason: &str,
        container: Option<&str>,
        message: String,
    ) {
        match kind {
            EventKind::Warning => tracing::warn!(reason, container, %message),
            EventKind::Normal => tracing::debug!(reason, container, %message),
        }
        self.shared
            .store
            .event(&self.uid, kind, reason, container, message);
    }

    fn all_waiting(&mut self, pod: &Pod, reason: &str, message: &str) {
        let spec = pod.spec.as_ref();
        let init = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten();
        let app = spec.map(|s| s.containers.iter()).into_iter().flatten();
        for container in init.chain(app) {
            self.waiting
                .insert(container.name.clone(), Waiting::new(reason, message));
        }
    }

    /// Continue a crash loop the runtime shows (restarted agent) instead of resetting it.
    fn seed_backoff(&mut self, view: &RuntimeView) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        for (name, history) in &view.containers {
            if let Some(current) = &history.current {
                let last = current
                    .finished_at
                    .or(current.started_at)
                    .unwrap_or_else(Timestamp::now);
                self.restart_backoff.seed(name, current.restart_count, last);
            }
        }
    }

    fn index_containers(&self, view: &RuntimeView) {
        let mut index = self.shared.container_index();
        for instance in &view.instances {
            index.insert(instance.id.clone(), self.uid.clone());
        }
        for (name, history) in &view.containers {
            if let Some(c) = &history.current {
                let running = c.state == RunState::Running;
                let store = &self.shared.store;
                store.set_container(&self.uid, name, &c.id, c.restart_count, running);
            }
        }
    }

    /// Start, keep or wait for init containers in order. `None` once every regular init
    /// container succeeded and every sidecar started: app containers may run. `Some(acted)`
    /// otherwise.
    async fn sync_init_containers(
        &mut self,
        pod: &Pod,
        view: &RuntimeView,
        sandbox: &SandboxInfo,
    ) -> Option<bool> {
        let init = pod
            .spec
            .as_ref()?
            .init_containers
            .clone()
            .unwrap_or_default();
        let policy = restart_policy(pod).to_owned();
        for spec in &init {
            let current = current(view, &spec.name);
            let sidecar = is_sidecar(spec);
            let step = match current {
                None => Step::Start,
                Some(c) if c.state == RunState::Running => {
                    if let Some(kind) = self.probes.unhealthy(&c.id) {
                        self.restart_unhealthy(pod, spec, c, kind).await;
                        return Some(true);
                    }
                    if sidecar && self.probes.started(&c.id) {
                        Step::Keep
                    } else {
                        // A running init container (or a sidecar not yet started) holds
                        // everything after it.
                        return Some(false);
                    }
                }
                Some(c) if c.succeeded() && !sidecar => Step::Keep,
                Some(c) if c.state == RunState::Exited => {
                    // A failed init container restarts unless the pod never restarts;
                    // a sidecar always restarts.
                    if !sidecar && policy == "Never" {
                        return Some(false);
                    }
                    self.backoff_step(pod, spec, c)
                }
                Some(_) => return Some(false),
            };
            match step {
                Step::Keep => continue,
                Step::Wait => return Some(false),
                Step::Start => {
                    let restart_count = view.next_restart_count(&spec.name);
                    let started = self
                        .start_container(pod, spec, restart_count, sandbox)
                        .await;
                    // A sidecar without a startup probe counts as started at once: go on.
                    if !(started && sidecar && spec.startup_probe.is_none()) {
                        return Some(true);
                    }
                }
            }
        }
        None
    }

    /// Start, restart or replace app containers; true when anything was done.
    async fn sync_app_containers(
        &mut self,
        pod: &Pod,
        view: &RuntimeView,
        sandbox: &SandboxInfo,
    ) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return false;
        };
        let policy = restart_policy(pod).to_owned();
        let mut acted = false;
        for container in &spec.containers {
            let step = match current(view, &container.name) {
                None => Step::Start,
                Some(c) if c.state == RunState::Running => {
                    if let Some(kind) = self.probes.unhealthy(&c.id) {
                        self.restart_unhealthy(pod, container, c, kind).await;
                        acted = true;
                        Step::Keep
                    } else if spec_changed(container, c) {
                        let message = format!(
                            "Container {} definition changed, will be restarted",
                            container.name
                        );
                        self.kill_container(pod, container, &c.id, message).await;
                        acted = true;
                        Step::Keep
                    } else {
                        Step::Keep
                    }
                }
                Some(c) if c.state == RunState::Exited => {
                    if will_restart(&policy, c) {
                        self.backoff_step(pod, container, c)
                    } else {
                        self.waiting.remove(&container.name);
                        Step::Keep
                    }
                }
                Some(_) => Step::Wait,
            };
            if let Step::Start = step {
                let restart_count = view.next_restart_count(&container.name);
                self.start_container(pod, container, restart_count, sandbox)
                    .await;
                acted = true;
            }
        }
        acted
    }

    /// Restart now, or show CrashLoopBackOff until the back-off window ends.
    fn backoff_step(&mut self, pod: &Pod, spec: &Container, exited: &ObservedContainer) -> Step {
        let now = Timestamp::now();
        let finished = exited.finished_at.unwrap_or(now);
        let key = spec.name.as_str();
        if let Some(until) = self.restart_backoff.blocked_until(key, finished, now) {
            let delay = humantime(self.restart_backoff.delay(key));
            let uid = &self.uid;
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
            let message = format!(
                "back-off {delay} restarting failed container={key} pod={name}_{namespace}({uid})"
            );
            self.waiting
                .insert(spec.name.clone(), Waiting::new("CrashLoopBackOff", message));
            self.event(
                EventKind::Warning,
                "BackOff",
                Some(key),
                "Back-off restarting failed container".to_owned(),
            );
            self.wake_at_time(until);
            return Step::Wait;
        }
        self.restart_backoff.next(key, finished, now);
        Step::Start
    }

    fn watch_probes(&mut self, pod: &Pod, view: &RuntimeView, sandbox: &SandboxInfo) {
        let spec = pod.spec.clone().unwrap_or_default();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        let label = pod_label(pod);
        let mut running = Vec::new();
        for container in all {
            let Some(c) = current(view, &container.name) else {
                continue;
            };
            if c.state != RunState::Running {
                continue;
            }
            running.push(c.id.clone());
            let started_at = c
                .started_at
                .map_or(0, |t| i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX));
            self.probes.watch(
                &c.id,
                container,
                sandbox.ips.first().cloned(),
                label.clone(),
                started_at,
            );
        }
        self.probes.retain(|id| running.iter().any(|r| r == id));
    }

    /// Keep the newest two instances of each container (current and lastState), like the
    /// kubelet's container GC, and nothing of older sandboxes.
    async fn remove_old_instances(&self, view: &RuntimeView) {
        let keep: Vec<&str> = view
            .containers
            .values()
            .flat_map(|h| [h.current.as_ref(), h.previous.as_ref()])
            .flatten()
            .map(|c| c.id.as_str())
            .collect();
        for instance in &view.instances {
            if instance.live || keep.contains(&instance.id.as_str()) {
                continue;
            }
            if let Err(error) = self.shared.cri.remove_container(&instance.id).await {
                tracing::debug!(%error, container = %instance.id, "removing an old container");
            }
        }
    }

    /// Compute and store the status.
    pub(super) fn publish(&self, pod: &Pod, view: &RuntimeView, sandbox: Option<&SandboxInfo>) {
        let mut with_status = pod.clone();
        with_status.status = self.shared.store.pod(&self.uid).and_then(|p| p.status);
        let ready = |id: &str| self.probes.ready(id);
        let started = |id: &str| self.probes.started(id);
        let no_ips = Vec::new();
        let node = &self.shared.settings.node;
        let host_ip = node.host_ips.first().map_or("", String::as_str);
        let containers = self.with_termination_messages(pod, view);
        let input = StatusInput {
            pod: &with_status,
            sandbox_ready: sandbox.is_some(),
            pod_ips: sandbox.map_or(&no_ips, |s| &s.ips),
            host_ip,
            containers: &containers,
            waiting: &self.waiting,
            ready: &ready,
            started: &started,
            runtime_name: &self.shared.settings.runtime_name,
            start_time: self.start_time,
            now: Timestamp::now(),
        };
        self.shared.store.set_status(&self.uid, pod_status(&input));
    }
}

impl PodWorker {
    /// The runtime's container history with each exited instance's termination message.
    fn with_termination_messages(
        &self,
        pod: &Pod,
        view: &RuntimeView,
    ) -> std::collections::BTreeMap<String, crate::kubelet::status::ContainerHistory> {
        let spec = pod.spec.clone().unwrap_or_default();
        let all: Vec<Container> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .chain(spec.containers)
            .collect();
        let mut containers = view.containers.clone();
        for (name, history) in containers.iter_mut() {
            let Some(container) = all.iter().find(|c| &c.name == name) else {
                continue;
            };
            for instance in [history.current.as_mut(), history.previous.as_mut()]
                .into_iter()
                .flatten()
                .filter(|i| i.state == RunState::Exited)
            {
                if let Some(message) = self.termination_message(pod, container, instance) {
                    instance.message = message;
                }
            }
        }
        containers
    }
}

fn current<'a>(view: &'a RuntimeView, name: &str) -> Option<&'a ObservedContainer> {
    view.containers.get(name)?.current.as_ref()
}

fn spec_changed(spec: &Container, running: &ObservedContainer) -> bool {
    !running.spec_hash.is_empty()
        && running.spec_hash != crate::kubelet::convert::container_hash(spec)
}

/// The pod as the kubelet names it in messages: `name_namespace(uid)`.
pub(super) fn pod_label(pod: &Pod) -> String {
    crate::kubelet::probe::format_pod(
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
    )
}

/// Durations as Go prints them in kubelet messages (`10s`, `2m40s`, `5m0s`).
fn humantime(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}
