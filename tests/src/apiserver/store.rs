//! The object store: objects by (resource, namespace, name), one global resourceVersion, and a bounded
//! history of change events that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::services::ServiceRanges;
use super::status::ApiError;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub event_type: EventType,
    /// Storage key of the resource (see [`super::resources::Kind::key`]).
    pub resource: &'static str,
    /// The object after the change (before removal for deletions, with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before the change (None for creations), so selector watches see objects leave.
    pub old: Option<Arc<Value>>,
}

/// What a mutation decided to do with the object.
#[derive(Debug)]
pub enum Change {
    /// Store this object (create or replace).
    Put(Value),
    /// Remove the object; the value is the object as the DELETED event shows it.
    Delete(Value),
    /// Leave the existing object untouched (a no-op update keeps its resourceVersion).
    Keep,
}

type Key = (&'static str, String, String);

struct Inner {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    /// The newest resourceVersion whose event fell out of the history.
    compacted: u64,
}

/// The in-memory object store shared by the HTTP handlers and the sync API.
pub struct Store {
    inner: Mutex<Inner>,
    capacity: usize,
    notify: tokio::sync::watch::Sender<u64>,
    services: ServiceRanges,
}

/// Read access, during a mutation, to the other stored objects of the same resource (so values unique
/// across a resource, like Service cluster IPs, are decided atomically).
pub struct Siblings<'a> {
    objects: &'a BTreeMap<Key, Value>,
    key: &'a Key,
}

impl Siblings<'_> {
    /// Every other object of the resource, in all namespaces.
    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        let resource = self.key.0;
        self.objects
            .range((resource, String::new(), String::new())..)
            .take_while(move |((r, _, _), _)| *r == resource)
            .filter(|(k, _)| *k != self.key)
            .map(|(_, v)| v)
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An empty store keeping at most `history` events for watches, with the default service ranges.
    pub fn new(history: usize) -> Store {
        Self::with_service_ranges(history, ServiceRanges::default())
    }

    /// An empty store whose Services get cluster IPs and node ports from `services`.
    pub fn with_service_ranges(history: usize, services: ServiceRanges) -> Store {
        let (notify, _) = tokio::sync::watch::channel(1);
        Store {
            inner: Mutex::new(Inner {
                objects: BTreeMap::new(),
                rv: 1,
                history: VecDeque::new(),
                compacted: 0,
            }),
            capacity: history.max(1),
            notify,
            services,
        }
    }

    /// The service IP and node-port ranges.
    pub fn service_ranges(&self) -> &ServiceRanges {
        &self.services
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The object, if stored.
    pub fn get(&self, resource: &'static str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(resource, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource in a namespace ("" = all namespaces) and the list's resourceVersion.
    pub fn list(&self, resource: &'static str, namespace: &str) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .range((resource, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == resource)
            .filter(|((_, ns, _), _)| namespace.is_empty() || ns == namespace)
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Names of every namespaced object in `namespace`, by resource.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<(&'static str, String)> {
        self.lock()
            .objects
            .keys()
            .filter(|(_, ns, _)| ns == namespace)
            .map(|(r, _, name)| (*r, name.clone()))
            .collect()
    }

    /// The current (newest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Atomically decides on the stored object (or its absence) and applies the decision, bumping the
    /// resourceVersion and recording the event; returns the object as stored (or as deleted).
    pub fn mutate(
        &self,
        resource: &'static str,
        namespace: &str,
        name: &str,
        decide: impl FnOnce(Option<&Value>) -> Result<Change, ApiError>,
    ) -> Result<Value, ApiError> {
        self.mutate_with(resource, namespace, name, |existing, _| decide(existing))
    }

    /// Like [`Store::mutate`], with the other objects of the resource visible to the decision.
    pub fn mutate_with(
        &self,
        resource: &'static str,
        namespace: &str,
        name: &str,
        decide: impl FnOnce(Option<&Value>, Siblings<'_>) -> Result<Change, ApiError>,
    ) -> Result<Value, ApiError> {
        let key = (resource, namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let existing = inner.objects.get(&key);
        let old = existing.map(|v| Arc::new(v.clone()));
        let existed = old.is_some();
        let siblings = Siblings {
            objects: &inner.objects,
            key: &key,
        };
        let (event_type, mut object) = match decide(existing, siblings)? {
            Change::Keep => {
                return existing
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(resource, name))
            }
            Change::Put(obj) if existed => (EventType::Modified, obj),
            Change::Put(obj) => (EventType::Added, obj),
            Change::Delete(obj) => (EventType::Deleted, obj),
        };
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut object, rv);
        if event_type == EventType::Deleted {
            inner.objects.remove(&key);
        } else {
            inner.objects.insert(key, object.clone());
        }
        inner.history.push_back(Event {
            rv,
            event_type,
            resource,
            object: Arc::new(object.clone()),
            old,
        });
        while inner.history.len() > self.capacity {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        drop(inner);
        self.notify.send_replace(rv);
        Ok(object)
    }

    /// Events of `resource` newer than `rv` and the resourceVersion they bring a watcher to; 410 Gone when part
    /// of that history was already dropped.
    pub fn events_after(
        &self,
        resource: &'static str,
        rv: u64,
    ) -> Result<(Vec<Event>, u64), ApiError> {
        let inner = self.lock();
        if rv < inner.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                inner.compacted + 1
            )));
        }
        let start = inner.history.partition_point(|e| e.rv <= rv);
        let events = inner
            .history
            .range(start..)
            .filter(|e| e.resource == resource)
            .cloned()
            .collect();
        Ok((events, inner.rv.max(rv)))
    }

    /// A receiver woken with the newest resourceVersion after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn every_change_bumps_the_global_resource_version_and_is_replayed() {
        let store = Store::new(100);
        let a = store
            .mutate("pods", "ns", "a", |_| Ok(Change::Put(obj("a"))))
            .expect("create a");
        let b = store
            .mutate("configmaps", "ns", "b", |_| Ok(Change::Put(obj("b"))))
            .expect("create b");
        let rv_a: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rv_b: u64 = b["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(rv_b > rv_a);
        let kept = store
            .mutate("pods", "ns", "a", |_| Ok(Change::Keep))
            .expect("keep");
        assert_eq!(kept, a);
        assert_eq!(store.current_rv(), rv_b);
        store
            .mutate("pods", "ns", "a", |cur| {
                Ok(Change::Delete(cur.cloned().unwrap_or_default()))
            })
            .expect("delete");
        assert!(store.get("pods", "ns", "a").is_none());
        let (events, _) = store.events_after("pods", 0).expect("history");
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, vec![EventType::Added, EventType::Deleted]);
        assert_eq!(store.events_after("pods", rv_a).map(|e| e.0.len()), Ok(1));
        assert_eq!(store.list("configmaps", "").0.len(), 1);
        assert_eq!(store.list("configmaps", "other").0.len(), 0);
    }

    #[test]
    fn history_older_than_the_window_is_gone() {
        let store = Store::new(2);
        for i in 0..5 {
            let name = format!("o{i}");
            store
                .mutate("pods", "ns", &name, |_| Ok(Change::Put(obj(&name))))
                .expect("create");
        }
        let now = store.current_rv();
        assert_eq!(
            store
                .events_after("pods", 1)
                .map(|e| e.0.len())
                .map_err(|e| e.code),
            Err(410)
        );
        assert_eq!(
            store.events_after("pods", now - 2).map(|e| e.0.len()),
            Ok(2)
        );
        assert_eq!(store.events_after("pods", now).map(|e| e.0.len()), Ok(0));
    }

    #[test]
    fn a_failed_decision_changes_nothing() {
        let store = Store::new(10);
        let before = store.current_rv();
        let err = store
            .mutate("pods", "ns", "a", |_| Err(ApiError::conflict("no")))
            .expect_err("refused");
        assert_eq!(err.code, 409);
        assert_eq!(store.current_rv(), before);
        assert!(store
            .mutate("pods", "ns", "a", |_| Ok(Change::Keep))
            .is_err());
    }
}
