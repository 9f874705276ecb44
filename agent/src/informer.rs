//! Shared informers: one list+watch per API resource kind for the whole agent, kept in a
//! kube-runtime reflector store of `Arc` objects. The proxy and the DNS server read the
//! same Service and EndpointSlice stores instead of opening watches of their own.
//!
//! A store is replaced only when a (re)list completes, so a relist after 410 Gone or an API
//! server restart never looks like objects going away. After repeated failures the watch is
//! rebuilt on the API client's *current* `kube::Client`, which picks up a rotated client
//! certificate.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::kubelet::bootstrap::ApiClient;
use crate::kubelet::cluster::Retry;

/// Consecutive watch errors after which the watch is rebuilt with the current client (a
/// rotated certificate); fewer resume from the last resourceVersion.
pub const REBUILD_AFTER_ERRORS: u32 = 30;

/// A generation counter bumped on every change of any store that shares it; consumers wait
/// on a receiver and then read the stores.
#[derive(Clone)]
pub struct Changes {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            sender: Arc::new(watch::channel(0).0),
        }
    }
}

impl Changes {
    /// A receiver that sees every later bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    fn bump(&self) {
        self.sender.send_modify(|generation| *generation += 1);
    }
}

/// A live, shared cache of one kind of API object.
pub struct Informer<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    store: Store<K>,
    ready: Arc<AtomicBool>,
    task: Arc<AbortOnDrop>,
}

impl<K: Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Hash + Eq,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            ready: self.ready.clone(),
            task: self.task.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Start listing and watching every `K` the config selects (all namespaces), bumping
    /// `changes` whenever the store changes.
    pub fn start(client: ApiClient, config: watcher::Config, changes: Changes) -> Self {
        let writer = reflector::store::Writer::<K>::default();
        let store = writer.as_reader();
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(client, config, writer, changes, ready.clone()));
        Informer {
            store,
            ready,
            task: Arc::new(AbortOnDrop(task.abort_handle())),
        }
    }

    /// Every object, or None until the first list has completed (unknown is not empty).
    pub fn state(&self) -> Option<Vec<Arc<K>>> {
        self.is_ready().then(|| self.store.state())
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The underlying reflector store (lookups by key).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}

async fn run<K>(
    client: ApiClient,
    config: watcher::Config,
    mut writer: reflector::store::Writer<K>,
    changes: Changes,
    ready: Arc<AtomicBool>,
) where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    loop {
        let api: Api<K> = Api::all_with(client.current(), &K::DynamicType::default());
        let mut stream = watcher(api, config.clone()).backoff(Retry::api()).boxed();
        let mut errors = 0;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => {
                    errors = 0;
                    event
                }
                Err(error) => {
                    errors += 1;
                    tracing::warn!(%error, kind, "watching");
                    if errors >= REBUILD_AFTER_ERRORS {
                        break;
                    }
                    continue;
                }
            };
            writer.apply_watcher_event(&event);
            match event {
                Event::InitDone => {
                    ready.store(true, Ordering::Release);
                    changes.bump();
                }
                Event::Apply(_) | Event::Delete(_) => changes.bump(),
                Event::Init | Event::InitApply(_) => {}
            }
        }
        tracing::info!(kind, "rebuilding the watch on the current client");
    }
}

/// Stops the informer's task when the last handle goes.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
