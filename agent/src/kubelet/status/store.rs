//! The agent's record of every pod it runs: spec, latest status, recent events, manifest
//! errors; readers (the local API) get snapshots and a change stream, never a lock held
//! across an await.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{broadcast, watch};

use crate::kubelet::local_api::{WatchEvent, WatchEventType};

/// Events kept per pod (older ones are dropped, like the API server's TTL would).
const EVENTS_PER_POD: usize = 64;
/// Changes buffered for slow watchers before they must relist.
const WATCH_BUFFER: usize = 4096;

/// One kubelet event about a pod (aggregated: a repeat bumps `count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub kind: EventKind,
    /// Pulling, Pulled, Created, Started, Killing, Unhealthy, BackOff, ...
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// The container it is about, if any.
    pub container: Option<String>,
    /// How many times it happened.
    pub count: u32,
    /// First time.
    pub first: Timestamp,
    /// Latest time.
    pub last: Timestamp,
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Expected progress.
    Normal,
    /// Something the user should look at.
    Warning,
}

struct Entry {
    pod: Pod,
    events: VecDeque<Event>,
    /// The newest instance of each container, by name.
    containers: BTreeMap<String, ContainerSlot>,
}

/// The newest instance of a container: what logs and exec need.
#[derive(Debug, Clone)]
pub struct ContainerRecord {
    /// CRI container ID.
    pub id: String,
    /// Its restart count (its log is `<restart_count>.log`).
    pub restart_count: u32,
    /// True while it runs.
    pub running: watch::Receiver<bool>,
}

struct ContainerSlot {
    id: String,
    restart_count: u32,
    running: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<String, Entry>,
    source_errors: Vec<(PathBuf, String)>,
}

/// Hears every event occurrence as it is recorded (cluster mode sends them to the API).
pub type EventListener = Arc<dyn Fn(&Pod, &Event) + Send + Sync>;

/// The store; share it behind an `Arc`.
pub struct PodStore {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<WatchEvent>,
    listener: Mutex<Option<EventListener>>,
}

impl Default for PodStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changes: broadcast::channel(WATCH_BUFFER).0,
            listener: Mutex::default(),
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl PodStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, kind: WatchEventType, object: Pod) {
        // No watchers is fine.
        let _ = self.changes.send(WatchEvent { kind, object });
    }

    /// Record a pod the agent starts working on (its status starts empty).
    pub fn add(&self, pod: Pod) {
        let key = uid(&pod);
        let mut inner = self.lock();
        let entry = inner.pods.entry(key).or_insert_with(|| Entry {
            pod: pod.clone(),
            events: VecDeque::new(),
            containers: BTreeMap::new(),
        });
        entry.pod.metadata = pod.metadata.clone();
        entry.pod.spec = pod.spec.clone();
        let pod = entry.pod.clone();
        drop(inner);
        self.publish(WatchEventType::Added, pod);
    }

    /// Replace a pod's status; watchers hear of it only when it changed.
    pub fn set_status(&self, pod_uid: &str, status: PodStatus) {
        let mut inner = self.lock();
        let Some(entry) = inner.pods.get_mut(pod_uid) else {
            return;
        };
        if entry.pod.status.as_ref() == Some(&status) {
            return;
        }
        entry.pod.status = Some(status);
        let pod = entry.pod.clone();
        drop(inner);
        self.publish(WatchEventType::Modified, pod);
    }

    /// Mark a pod as terminating (`deletionTimestamp`), as a deleted pod shows.
    pub fn mark_terminating(&self, pod_uid: &str, grace_seconds: i64) {
        let mut inner = self.lock();
        let Some(entry) = inner.pods.get_mut(pod_uid) else {
            return;
        };
        if entry.pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        entry.pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        entry.pod.metadata.deletion_grace_period_seconds = Some(grace_seconds);
        let pod = entry.pod.clone();
        drop(inner);
        self.publish(WatchEventType::Modified, pod);
    }

    /// Forget a pod once it is fully gone.
    pub fn remove(&self, pod_uid: &str) {
        let removed = self.lock().pods.remove(pod_uid);
        if let Some(entry) = removed {
            for slot in entry.containers.values() {
                let _ = slot.running.send(false);
            }
            self.publish(WatchEventType::Deleted, entry.pod);
        }
    }

    /// Remember the newest instance of container `name` and whether it runs (for logs
    /// and exec).
    pub fn set_container(
        &self,
        pod_uid: &str,
        name: &str,
        container_id: &str,
        restart_count: u32,
        running: bool,
    ) {
        let mut inner = self.lock();
        let Some(entry) = inner.pods.get_mut(pod_uid) else {
            return;
        };
        match entry.containers.get_mut(name) {
            Some(slot) if slot.id == container_id => {
                slot.running
                    .send_if_modified(|r| std::mem::replace(r, running) != running);
            }
            _ => {
                if let Some(old) = entry.containers.get(name) {
                    // Followers of the old instance's log stop here.
                    let _ = old.running.send(false);
                }
                let slot = ContainerSlot {
                    id: container_id.to_owned(),
                    restart_count,
                    running: watch::channel(running).0,
                };
                entry.containers.insert(name.to_owned(), slot);
            }
        }
    }

    /// The newest instance of container `name` in the pod.
    pub fn container(&self, pod_uid: &str, name: &str) -> Option<ContainerRecord> {
        let inner = self.lock();
        let slot = inner.pods.get(pod_uid)?.containers.get(name)?;
        Some(ContainerRecord {
            id: slot.id.clone(),
            restart_count: slot.restart_count,
            running: slot.running.subscribe(),
        })
    }

    /// Send every event occurrence from now on to `listener` too.
    pub fn set_event_listener(&self, listener: EventListener) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// Record an event, folding a repeat of the newest matching one into its count.
    pub fn event(
        &self,
        pod_uid: &str,
        kind: EventKind,
        reason: &str,
        container: Option<&str>,
        message: String,
    ) {
        let now = Timestamp::now();
        let mut inner = self.lock();
        let Some(entry) = inner.pods.get_mut(pod_uid) else {
            return;
        };
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            let occurrence = Event {
                kind,
                reason: reason.to_owned(),
                message: message.clone(),
                container: container.map(str::to_owned),
                count: 1,
                first: now,
                last: now,
            };
            // The listener only queues (it never blocks), so calling it under the lock is fine.
            listener(&entry.pod, &occurrence);
        }
        let same = entry.events.iter_mut().find(|e| {
            e.reason == reason && e.message == message && e.container.as_deref() == container
        });
        if let Some(event) = same {
            event.count = event.count.saturating_add(1);
            event.last = now;
            return;
        }
        if entry.events.len() == EVENTS_PER_POD {
            entry.events.pop_front();
        }
        entry.events.push_back(Event {
            kind,
            reason: reason.to_owned(),
            message,
            container: container.map(str::to_owned),
            count: 1,
            first: now,
            last: now,
        });
    }

    /// Every pod with its latest status.
    pub fn pods(&self) -> Vec<Pod> {
        self.lock().pods.values().map(|e| e.pod.clone()).collect()
    }

    /// One pod by UID.
    pub fn pod(&self, pod_uid: &str) -> Option<Pod> {
        self.lock().pods.get(pod_uid).map(|e| e.pod.clone())
    }

    /// The UID of the pod named `name` in `namespace` (the newest, while a replaced
    /// static pod is still terminating next to its successor).
    pub fn find(&self, namespace: &str, name: &str) -> Option<String> {
        let inner = self.lock();
        let matching = inner.pods.iter().filter(|(_, e)| {
            e.pod.metadata.namespace.as_deref() == Some(namespace)
                && e.pod.metadata.name.as_deref() == Some(name)
        });
        matching
            .min_by_key(|(_, e)| e.pod.metadata.deletion_timestamp.is_some())
            .map(|(uid, _)| uid.clone())
    }

    /// A pod's recent events, oldest first.
    pub fn events(&self, pod_uid: &str) -> Vec<Event> {
        let inner = self.lock();
        let events = inner
            .pods
            .get(pod_uid)
            .map(|e| e.events.iter().cloned().collect());
        events.unwrap_or_default()
    }

    /// Replace the list of manifest files that failed to load.
    pub fn set_source_errors(&self, errors: Vec<(PathBuf, String)>) {
        self.lock().source_errors = errors;
    }

    /// Manifest files that failed to load, with the reason.
    pub fn source_errors(&self) -> Vec<(PathBuf, String)> {
        self.lock().source_errors.clone()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.to_owned());
        pod.metadata.name = Some(name.to_owned());
        pod.metadata.namespace = Some("default".to_owned());
        pod
    }

    #[test]
    fn watchers_see_additions_real_changes_and_deletions() {
        let store = PodStore::default();
        let mut changes = store.subscribe();
        store.add(pod("u1", "a"));
        let status = PodStatus {
            phase: Some("Running".to_owned()),
            ..Default::default()
        };
        store.set_status("u1", status.clone());
        store.set_status("u1", status);
        store.remove("u1");
        let kinds: Vec<WatchEventType> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                WatchEventType::Added,
                WatchEventType::Modified,
                WatchEventType::Deleted
            ]
        );
        assert!(store.pods().is_empty());
    }

    #[test]
    fn repeated_events_aggregate_and_old_ones_roll_off() {
        let store = PodStore::default();
        store.add(pod("u1", "a"));
        for _ in 0..3 {
            store.event(
                "u1",
                EventKind::Warning,
                "BackOff",
                Some("c"),
                "back-off".into(),
            );
        }
        for i in 0..EVENTS_PER_POD {
            store.event("u1", EventKind::Normal, "Pulled", None, format!("n{i}"));
        }
        let events = store.events("u1");
        assert_eq!(events.len(), EVENTS_PER_POD);
        assert!(events.iter().all(|e| e.reason == "Pulled"));
        store.event(
            "u1",
            EventKind::Normal,
            "Pulled",
            None,
            format!("n{}", EVENTS_PER_POD - 1),
        );
        assert_eq!(store.events("u1").last().unwrap().count, 2);
    }

    #[test]
    fn a_replaced_container_ends_the_old_ones_running_flag() {
        let store = PodStore::default();
        store.add(pod("u1", "a"));
        store.set_container("u1", "c", "id1", 0, true);
        let first = store.container("u1", "c").unwrap();
        assert!(*first.running.borrow());
        store.set_container("u1", "c", "id2", 1, true);
        assert!(!*first.running.borrow());
        let second = store.container("u1", "c").unwrap();
        assert_eq!((second.id.as_str(), second.restart_count), ("id2", 1));
        store.set_container("u1", "c", "id2", 1, false);
        assert!(!*second.running.borrow());
    }

    #[test]
    fn find_prefers_the_pod_that_is_not_terminating() {
        let store = PodStore::default();
        store.add(pod("old", "web"));
        store.add(pod("new", "web"));
        store.mark_terminating("old", 30);
        assert_eq!(store.find("default", "web").as_deref(), Some("new"));
        assert_eq!(store.find("other", "web"), None);
    }
}
