//! Container lifecycle events: created/started/deleted come from the server's own
//! operations, exits are pushed by each sandbox's monitor over a subscription, so neither
//! Stop nor a CRI client ever polls. An exit reported while the server is still starting
//! the container is held back until its Started event is out, so a client always sees
//! Created, Started, Stopped, Deleted in that order. Each event is described (statuses of
//! the sandbox and its containers) when it happens, not when a subscriber reads it: a
//! Stopped event still lists a container removed right after.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType};
use tokio::sync::{broadcast, oneshot};

use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::EventKind;
use crate::runtime::store::now_nanos;

/// One lifecycle change.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    /// The container.
    pub container_id: String,
    /// Its sandbox (the container record may already be gone, e.g. for Deleted).
    pub sandbox_id: String,
    /// What happened.
    pub kind: ContainerEventType,
    /// When (Unix nanoseconds).
    pub at: i64,
}

/// Turns an event into what CRI streams (the runtime's statuses at that moment).
type Describe = Box<dyn Fn(&LifecycleEvent) -> ContainerEventResponse + Send + Sync>;

#[derive(Default)]
struct Inner {
    describe: OnceLock<Describe>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    followers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Containers being started, with the events held back until Started is sent.
    starting: Mutex<HashMap<String, Vec<ContainerEventResponse>>>,
}

impl Inner {
    /// What subscribers get for `event`: described only when someone listens.
    fn describe(
        &self,
        sender: &broadcast::Sender<ContainerEventResponse>,
        event: &LifecycleEvent,
    ) -> ContainerEventResponse {
        match self.describe.get() {
            Some(describe) if sender.receiver_count() > 0 => describe(event),
            _ => ContainerEventResponse {
                container_id: event.container_id.clone(),
                container_event_type: event.kind as i32,
                created_at: event.at,
                ..Default::default()
            },
        }
    }

    /// Send `event` now, or hold it when its container's start is still in flight.
    fn send_or_hold(
        &self,
        sender: &broadcast::Sender<ContainerEventResponse>,
        event: LifecycleEvent,
    ) {
        let response = self.describe(sender, &event);
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        match starting.get_mut(&event.container_id) {
            Some(held) => held.push(response),
            None => {
                let _ = sender.send(response);
            }
        }
    }

    /// End a start: send `first` (if any), then what was held back, in order.
    fn finish_start(
        &self,
        sender: &broadcast::Sender<ContainerEventResponse>,
        id: &str,
        first: Option<LifecycleEvent>,
    ) {
        let first = first.map(|e| self.describe(sender, &e));
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        let held = starting.remove(id).unwrap_or_default();
        for response in first.into_iter().chain(held) {
            let _ = sender.send(response);
        }
    }
}

fn event(sandbox_id: &str, id: &str, kind: ContainerEventType) -> LifecycleEvent {
    LifecycleEvent {
        container_id: id.to_owned(),
        sandbox_id: sandbox_id.to_owned(),
        kind,
        at: now_nanos(),
    }
}

/// Fans lifecycle events out to CRI subscribers and to operations waiting for exits.
pub struct EventHub {
    sender: broadcast::Sender<ContainerEventResponse>,
    inner: Arc<Inner>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
            inner: Arc::new(Inner::default()),
        }
    }

    /// A stream of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.sender.subscribe()
    }

    /// How events are described from now on (set once; later calls are ignored). Without
    /// it, events carry only the container ID, type and time.
    pub fn describe_with(
        &self,
        describe: impl Fn(&LifecycleEvent) -> ContainerEventResponse + Send + Sync + 'static,
    ) {
        let _ = self.inner.describe.set(Box::new(describe));
    }

    /// A container of `sandbox_id` was created.
    pub fn emit_created(&self, sandbox_id: &str, id: &str) {
        let created = event(sandbox_id, id, ContainerEventType::ContainerCreatedEvent);
        self.inner.send_or_hold(&self.sender, created);
    }

    /// The server is about to start a container: its exit, if reported before
    /// [`emit_started`](Self::emit_started) or [`start_failed`](Self::start_failed), waits.
    pub fn starting(&self, id: &str) {
        self.inner
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Vec::new());
    }

    /// A container of `sandbox_id` was started; anything held back follows.
    pub fn emit_started(&self, sandbox_id: &str, id: &str) {
        let started = event(sandbox_id, id, ContainerEventType::ContainerStartedEvent);
        self.inner.finish_start(&self.sender, id, Some(started));
    }

    /// Starting the container failed; anything held back is sent.
    pub fn start_failed(&self, id: &str) {
        self.inner.finish_start(&self.sender, id, None);
    }

    /// A container of `sandbox_id` was removed.
    pub fn emit_deleted(&self, sandbox_id: &str, id: &str) {
        let deleted = event(sandbox_id, id, ContainerEventType::ContainerDeletedEvent);
        self.inner.send_or_hold(&self.sender, deleted);
    }

    /// Resolves when the container's exit is reported from now on.
    pub fn exit_waiter(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    /// Follow a sandbox monitor's exit events until [`unfollow_sandbox`](Self::unfollow_sandbox).
    pub fn follow_sandbox(&self, sandbox_id: &str, run_dir: &Path) {
        let sender = self.sender.clone();
        let inner = self.inner.clone();
        let run_dir: PathBuf = run_dir.to_owned();
        let sandbox = sandbox_id.to_owned();
        let task = tokio::spawn(async move {
            // Reconnects while the monitor lives (e.g. a burst of events overflowed).
            loop {
                let subscription = match MonitorClient::connect(&run_dir).await {
                    Ok(client) => client.subscribe().await,
                    Err(e) => Err(e),
                };
                let Ok(mut events) = subscription else {
                    if crate::monitor::launch::monitor_pid(&run_dir).is_none() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { break };
                    if event.kind == EventKind::Exited {
                        let stopped = self::event(
                            &sandbox,
                            &event.id,
                            ContainerEventType::ContainerStoppedEvent,
                        );
                        inner.send_or_hold(&sender, stopped);
                        let waiters = inner
                            .waiters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&event.id);
                        for waiter in waiters.into_iter().flatten() {
                            let _ = waiter.send(());
                        }
                    }
                }
            }
        });
        if let Some(old) = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sandbox_id.to_owned(), task)
        {
            old.abort();
        }
    }

    /// Stop following a sandbox.
    pub fn unfollow_sandbox(&self, sandbox_id: &str) {
        if let Some(task) = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sandbox_id)
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(rx: &mut broadcast::Receiver<ContainerEventResponse>) -> Vec<ContainerEventType> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| ContainerEventType::try_from(e.container_event_type).ok())
            .collect()
    }

    #[test]
    fn an_exit_during_start_follows_started() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();
        hub.emit_created("s", "c");
        hub.starting("c");
        let stopped = event("s", "c", ContainerEventType::ContainerStoppedEvent);
        hub.inner.send_or_hold(&hub.sender, stopped);
        assert_eq!(kinds(&mut rx), [ContainerEventType::ContainerCreatedEvent]);
        hub.emit_started("s", "c");
        hub.emit_deleted("s", "c");
        assert_eq!(
            kinds(&mut rx),
            [
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
                ContainerEventType::ContainerDeletedEvent
            ]
        );
    }

    #[test]
    fn a_failed_start_releases_held_events() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();
        hub.starting("c");
        let stopped = event("s", "c", ContainerEventType::ContainerStoppedEvent);
        hub.inner.send_or_hold(&hub.sender, stopped);
        hub.start_failed("c");
        assert_eq!(kinds(&mut rx), [ContainerEventType::ContainerStoppedEvent]);
    }

    #[test]
    fn events_are_described_when_they_happen() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();
        let state = Arc::new(Mutex::new("before"));
        let seen = state.clone();
        hub.describe_with(move |e| ContainerEventResponse {
            container_id: format!("{}@{}", e.container_id, seen.lock().unwrap()),
            ..Default::default()
        });
        hub.emit_created("s", "c");
        *state.lock().unwrap() = "after";
        let first = rx.try_recv().unwrap();
        assert_eq!(first.container_id, "c@before");
    }
}
