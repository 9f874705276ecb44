//! Watch streams: JSON lines of `{type, object}` from the store's history, filtered by namespace and
//! selectors (objects leaving a selector are DELETED, entering ADDED), with BOOKMARKs, timeouts and 410s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::resources::Kind;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType, Store};
use super::table;

/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

/// What a watch asked for.
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// Namespace ("" = all).
    pub namespace: String,
    /// Start after this resourceVersion; None (or "0") starts with the current objects as ADDED.
    pub resource_version: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`: end the initial ADDED events with an `initial-events-end` bookmark.
    pub send_initial_events: bool,
    /// When the server ends the watch.
    pub timeout: Duration,
    /// Send objects as server-side printed Tables (kubectl's human output).
    pub table: bool,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl WatchParams {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.is_empty()
            || obj.pointer("/metadata/namespace").and_then(Value::as_str)
                == Some(self.namespace.as_str());
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event this watcher sees for a change, if any.
    fn translate(&self, event: &Event) -> Option<(&'static str, Arc<Value>)> {
        let now = self.matches(&event.object);
        let before = event.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match event.event_type {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if now || before => "DELETED",
            _ => return None,
        };
        Some((kind, event.object.clone()))
    }
}

fn line(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

fn bookmark(kind: &Kind, rv: u64, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

struct WatchState {
    store: Arc<Store>,
    kind: &'static Kind,
    params: WatchParams,
    pending: VecDeque<String>,
    last_rv: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    done: bool,
}

impl WatchState {
    fn line(&self, kind: &str, obj: &Value, rv: u64) -> String {
        let printed = if self.params.table {
            table::table(self.kind.key, std::slice::from_ref(obj), rv)
        } else {
            None
        };
        line(kind, printed.as_ref().unwrap_or(obj))
    }

    /// Queues what happened since `last_rv`; false once the watch must end.
    fn catch_up(&mut self) {
        match self.store.events_after(self.kind.key, self.last_rv) {
            Ok((events, rv)) => {
                for event in &events {
                    if let Some((t, obj)) = self.params.translate(event) {
                        self.pending.push_back(self.line(t, &obj, event.rv));
                    }
                }
                self.last_rv = rv;
            }
            Err(gone) => {
                self.pending.push_back(line("ERROR", &gone.to_status()));
                self.done = true;
            }
        }
    }
}

/// The body stream of a watch on `kind`.
pub fn stream(
    store: Arc<Store>,
    kind: &'static Kind,
    params: WatchParams,
) -> impl Stream<Item = Result<String, Infallible>> + Send {
    let rx = store.subscribe();
    let mut pending = VecDeque::new();
    let last_rv = match params.resource_version.filter(|rv| *rv > 0) {
        Some(rv) => rv,
        None => {
            let (items, rv) = store.list(kind.key, &params.namespace);
            for item in items.iter().filter(|o| params.matches(o)) {
                let printed = if params.table {
                    table::table(kind.key, std::slice::from_ref(item), rv)
                } else {
                    None
                };
                pending.push_back(line("ADDED", printed.as_ref().unwrap_or(item)));
            }
            if params.send_initial_events {
                pending.push_back(bookmark(kind, rv, true));
            }
            rv
        }
    };
    let now = Instant::now();
    let state = WatchState {
        store,
        kind,
        deadline: now + params.timeout,
        next_bookmark: now + BOOKMARK_INTERVAL,
        params,
        pending,
        last_rv,
        rx,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(next) = st.pending.pop_front() {
                return Some((Ok(next), st));
            }
            if st.done {
                return None;
            }
            st.catch_up();
            if !st.pending.is_empty() || st.done {
                continue;
            }
            let wake = if st.params.bookmarks {
                st.deadline.min(st.next_bookmark)
            } else {
                st.deadline
            };
            tokio::select! {
                changed = st.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= st.deadline {
                        return None;
                    }
                    st.catch_up();
                    if st.pending.is_empty() && !st.done {
                        st.pending.push_back(bookmark(st.kind, st.last_rv, false));
                    }
                    st.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;
    use crate::apiserver::store::Change;
    use futures::StreamExt;

    fn params(rv: Option<u64>, labels: &str) -> WatchParams {
        WatchParams {
            namespace: "ns".into(),
            resource_version: rv,
            bookmarks: false,
            send_initial_events: false,
            timeout: Duration::from_secs(5),
            table: false,
            labels: LabelSelector::parse(labels).unwrap_or_default(),
            fields: FieldSelector::default(),
        }
    }

    fn put(store: &Store, name: &str, app: &str) -> u64 {
        let obj = json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": app}}});
        store
            .mutate("pods", "ns", name, |_| Ok(Change::Put(obj)))
            .ok()
            .and_then(|o| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(0)
    }

    async fn next_type(s: &mut (impl Stream<Item = Result<String, Infallible>> + Unpin)) -> String {
        let item = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .ok()
            .flatten();
        let text = item.and_then(Result::ok).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        format!(
            "{} {}",
            v["type"].as_str().unwrap_or("?"),
            v["object"]["metadata"]["name"].as_str().unwrap_or("")
        )
    }

    #[tokio::test]
    async fn selector_watches_see_objects_enter_and_leave() {
        let store = Arc::new(Store::new(100));
        let kind = resources::by_name("pods").expect("pods");
        let start = put(&store, "a", "web");
        let mut s = Box::pin(stream(store.clone(), kind, params(Some(start), "app=web")));
        put(&store, "b", "db");
        put(&store, "b", "web");
        put(&store, "b", "db");
        assert_eq!(next_type(&mut s).await, "ADDED b");
        assert_eq!(next_type(&mut s).await, "DELETED b");
        let mut from_now = Box::pin(stream(store.clone(), kind, params(None, "")));
        assert_eq!(next_type(&mut from_now).await, "ADDED a");
        assert_eq!(next_type(&mut from_now).await, "ADDED b");
    }

    #[tokio::test]
    async fn an_old_resource_version_is_an_error_event_with_410() {
        let store = Arc::new(Store::new(1));
        let kind = resources::by_name("pods").expect("pods");
        let first = put(&store, "a", "x");
        put(&store, "b", "x");
        put(&store, "c", "x");
        let mut s = Box::pin(stream(store, kind, params(Some(first), "")));
        let text = s.next().await.and_then(Result::ok).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["object"]["code"], 410);
        assert!(s.next().await.is_none());
    }
}
