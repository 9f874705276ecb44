//! Container lifecycle events: created/started/deleted come from the server's own
//! operations, exits are pushed by each sandbox's monitor over a subscription, so neither
//! Stop nor a CRI client ever polls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_cri::v1::ContainerEventType;
use tokio::sync::{broadcast, oneshot};

use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::EventKind;
use crate::runtime::store::now_nanos;

/// One lifecycle change.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    /// The container.
    pub container_id: String,
    /// What happened.
    pub kind: ContainerEventType,
    /// When (Unix nanoseconds).
    pub at: i64,
}

#[derive(Default)]
struct Inner {
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    followers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

/// Fans lifecycle events out to CRI subscribers and to operations waiting for exits.
pub struct EventHub {
    sender: broadcast::Sender<LifecycleEvent>,
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
    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.sender.subscribe()
    }

    fn emit(&self, id: &str, kind: ContainerEventType) {
        let _ = self.sender.send(LifecycleEvent {
            container_id: id.to_owned(),
            kind,
            at: now_nanos(),
        });
    }

    /// A container was created.
    pub fn emit_created(&self, id: &str) {
        self.emit(id, ContainerEventType::ContainerCreatedEvent);
    }

    /// A container was started.
    pub fn emit_started(&self, id: &str) {
        self.emit(id, ContainerEventType::ContainerStartedEvent);
    }

    /// A container was removed.
    pub fn emit_deleted(&self, id: &str) {
        self.emit(id, ContainerEventType::ContainerDeletedEvent);
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
                        let _ = sender.send(LifecycleEvent {
                            container_id: event.id.clone(),
                            kind: ContainerEventType::ContainerStoppedEvent,
                            at: now_nanos(),
                        });
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
