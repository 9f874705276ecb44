//! The controller loop: a thread woken by every store change that, for the namespaces whose Services, Pods or
//! EndpointSlices changed (all of them after a Node change or when the history was compacted), plans each
//! Service's slices and writes the difference through the ordinary write operations.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::desired::{desired, ZONE_LABEL};
use super::plan::{self, Action};
use crate::apiserver::ops::{self, DeleteOptions, Part};
use crate::apiserver::resources::{self, Kind};
use crate::apiserver::status::ApiError;
use crate::apiserver::store::Store;

/// How soon a pass whose writes failed (a conflicting write, a namespace going away) is retried.
const RETRY: Duration = Duration::from_millis(100);

/// A running controller; [`Controller::stop`] (or drop) ends it.
pub struct Controller {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The namespaces a pass reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Controller {
    /// Starts reconciling the EndpointSlices of every Service in `store`.
    pub fn spawn(store: Arc<Store>) -> anyhow::Result<Controller> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .context("building the endpoint slice controller runtime")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("endpointslices".into())
            .spawn(move || runtime.block_on(run(store, rx)))
            .context("spawning the endpoint slice controller thread")?;
        Ok(Controller {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for it.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(store: Arc<Store>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut changes = store.subscribe();
    let mut seen: Option<u64> = None;
    loop {
        // Read the version first: anything newer than it is picked up by the next pass.
        let now = store.current_rv();
        let scope = seen.map_or(Scope::All, |rv| changed_scope(&store, rv));
        let ok = reconcile(&store, &scope);
        if ok {
            seen = Some(now);
        }
        tokio::select! {
            _ = &mut stop => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY), if !ok => {}
        }
    }
}

/// The namespaces touched by Service, Pod and EndpointSlice changes after `rv`; everything after a Node
/// change (zones) or when those events are no longer kept.
fn changed_scope(store: &Store, rv: u64) -> Scope {
    if store
        .events_after("nodes", rv)
        .map_or(true, |(e, _)| !e.is_empty())
    {
        return Scope::All;
    }
    let mut namespaces = BTreeSet::new();
    for resource in ["services", "pods", "endpointslices"] {
        let Ok((events, _)) = store.events_after(resource, rv) else {
            return Scope::All;
        };
        namespaces.extend(events.iter().filter_map(|e| {
            e.object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
        }));
    }
    Scope::Namespaces(namespaces)
}

fn list(store: &Store, resource: &'static str, scope: &Scope) -> Vec<Value> {
    match scope {
        Scope::All => store.list(resource, "").0,
        Scope::Namespaces(namespaces) => namespaces
            .iter()
            .flat_map(|ns| store.list(resource, ns).0)
            .collect(),
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// One pass over `scope`; false when a write failed.
fn reconcile(store: &Store, scope: &Scope) -> bool {
    if scope == &Scope::Namespaces(BTreeSet::new()) {
        return true;
    }
    let Some(kind) = resources::by_name("endpointslices") else {
        return true;
    };
    let zones: HashMap<String, String> = store
        .list("nodes", "")
        .0
        .iter()
        .filter_map(|n| {
            let zone = n.pointer("/metadata/labels")?.get(ZONE_LABEL)?.as_str()?;
            Some((text(n, "/metadata/name").to_string(), zone.to_string()))
        })
        .collect();
    let pods = list(store, "pods", scope);
    // Managed slices by (namespace, Service name).
    let mut slices: HashMap<(String, String), Vec<Value>> = HashMap::new();
    for slice in list(store, "endpointslices", scope) {
        if let Some(service) = plan::managed_service(&slice) {
            let key = (
                text(&slice, "/metadata/namespace").to_string(),
                service.to_string(),
            );
            slices.entry(key).or_default().push(slice);
        }
    }
    let mut ok = true;
    for service in list(store, "services", scope) {
        let namespace = text(&service, "/metadata/namespace").to_string();
        let key = (
            namespace.clone(),
            text(&service, "/metadata/name").to_string(),
        );
        let stored = slices.remove(&key).unwrap_or_default();
        let actions = match desired(&service, &pods, &zones) {
            Some(want) => plan::plan(&service, &want, &stored),
            None => plan::delete_all(&stored),
        };
        ok &= apply(store, kind, &namespace, actions);
    }
    // Slices whose Service is gone (the garbage collector's job, done here).
    for ((namespace, _), stored) in slices {
        ok &= apply(store, kind, &namespace, plan::delete_all(&stored));
    }
    ok
}

fn apply(store: &Store, kind: &'static Kind, namespace: &str, actions: Vec<Action>) -> bool {
    let mut ok = true;
    for action in actions {
        let result = match action {
            Action::Create(slice) => ops::create(store, kind, namespace, slice, None).map(drop),
            Action::Update(slice) => {
                let name = text(&slice, "/metadata/name").to_string();
                ops::update(store, kind, namespace, &name, slice, Part::Main).map(drop)
            }
            Action::Delete { name, uid } => {
                let options = DeleteOptions {
                    uid: Some(uid),
                    ..DeleteOptions::default()
                };
                match ops::delete(store, kind, namespace, &name, &options) {
                    Err(e) if e.code == 404 => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        if let Err(ApiError { message, .. }) = result {
            eprintln!("endpointslice controller: {namespace}: {message}");
            ok = false;
        }
    }
    ok
}
