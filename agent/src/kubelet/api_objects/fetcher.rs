//! [`ObjectFetcher`]: reads what pods refer to, watches exactly those objects while some pod
//! refers to them (the kubelet's Watch change-detection strategy), keeps service-account
//! tokens fresh, and tells each pod when something it uses changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::try_join_all;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::references::{service_account_name, References};
use super::tokens::{self, Binding, Token};
use super::{ObjectError, PodObjects, TokenKey};
use crate::kubelet::bootstrap::ApiClient;

/// Longest pause between two attempts to (re)start a broken watch.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(30);
/// Pause before retrying a failed token refresh while the old token is still valid.
const TOKEN_RETRY_SECONDS: i64 = 10;
/// First pause after a watch broke.
const MIN_WATCH_BACKOFF: Duration = Duration::from_millis(500);

/// Fetches, caches and watches the ConfigMaps, Secrets, Services and tokens pods refer to.
#[derive(Clone)]
pub struct ObjectFetcher {
    shared: Arc<Shared>,
}

struct Shared {
    client: ApiClient,
    state: Mutex<State>,
}

/// What is watched: one named object, or every object of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WatchKey {
    namespace: String,
    name: Option<String>,
}

/// One watch and what it has seen.
struct Watched<K> {
    /// Objects by name (at most one for a named watch).
    objects: BTreeMap<String, K>,
    /// Whether the watch has listed once: until then a direct read fills `objects`.
    synced: bool,
    /// UIDs of the pods that refer to it; the watch stops when none is left.
    pods: BTreeSet<String>,
    task: AbortHandle,
}

impl<K> Drop for Watched<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch keys of one pod, per kind.
#[derive(Debug, Clone, Default)]
struct PodKeys {
    config_maps: BTreeSet<WatchKey>,
    secrets: BTreeSet<WatchKey>,
    services: BTreeSet<WatchKey>,
}

struct PodEntry {
    keys: PodKeys,
    tokens: BTreeMap<TokenKey, Token>,
    changed: watch::Sender<u64>,
    timer: Option<AbortHandle>,
}

impl PodEntry {
    fn new() -> PodEntry {
        PodEntry {
            keys: PodKeys::default(),
            tokens: BTreeMap::new(),
            changed: watch::channel(0).0,
            timer: None,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Drop for PodEntry {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
    }
}

#[derive(Default)]
struct State {
    config_maps: BTreeMap<WatchKey, Watched<ConfigMap>>,
    secrets: BTreeMap<WatchKey, Watched<Secret>>,
    services: BTreeMap<WatchKey, Watched<Service>>,
    pods: BTreeMap<String, PodEntry>,
}

/// A kind of watched object: where its watches live in the state.
trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Lower-case name for errors, as the kubelet's managers spell it.
    const NAME: &'static str;
    fn table(state: &mut State) -> &mut BTreeMap<WatchKey, Watched<Self>>;
    fn keys(keys: &PodKeys) -> &BTreeSet<WatchKey>;
}

impl Kind for ConfigMap {
    const NAME: &'static str = "configmap";
    fn table(state: &mut State) -> &mut BTreeMap<WatchKey, Watched<Self>> {
        &mut state.config_maps
    }
    fn keys(keys: &PodKeys) -> &BTreeSet<WatchKey> {
        &keys.config_maps
    }
}

impl Kind for Secret {
    const NAME: &'static str = "secret";
    fn table(state: &mut State) -> &mut BTreeMap<WatchKey, Watched<Self>> {
        &mut state.secrets
    }
    fn keys(keys: &PodKeys) -> &BTreeSet<WatchKey> {
        &keys.secrets
    }
}

impl Kind for Service {
    const NAME: &'static str = "services";
    fn table(state: &mut State) -> &mut BTreeMap<WatchKey, Watched<Self>> {
        &mut state.services
    }
    fn keys(keys: &PodKeys) -> &BTreeSet<WatchKey> {
        &keys.services
    }
}

impl PodKeys {
    fn new(namespace: &str, refs: &References) -> PodKeys {
        let named = |names: &BTreeSet<String>| {
            names
                .iter()
                .map(|n| WatchKey {
                    namespace: namespace.to_string(),
                    name: Some(n.clone()),
                })
                .collect()
        };
        let mut services = BTreeSet::new();
        if refs.service_links {
            services.insert(WatchKey {
                namespace: namespace.to_string(),
                name: None,
            });
        }
        // The master service is always wanted (the kubelet injects KUBERNETES_SERVICE_HOST
        // even without service links); a list of `default` already holds it.
        if !(refs.service_links && namespace == "default") {
            services.insert(WatchKey {
                namespace: "default".into(),
                name: Some("kubernetes".into()),
            });
        }
        PodKeys {
            config_maps: named(&refs.config_maps),
            secrets: named(&refs.secrets),
            services,
        }
    }
}

impl ObjectFetcher {
    /// A fetcher making its requests and watches with `client` (its current client each
    /// time, so a rotated certificate is picked up).
    pub fn new(client: ApiClient) -> ObjectFetcher {
        ObjectFetcher {
            shared: Arc::new(Shared {
                client,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Reads (from the watch cache when it has synced, else from the API) everything `pod`
    /// refers to, requests or reuses its tokens, and watches what it refers to from now on.
    /// References the pod no longer has are released.
    pub async fn resolve(&self, pod: &Pod) -> Result<PodObjects, ObjectError> {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let uid =
            meta.uid
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| ObjectError::MissingUid {
                    pod: format!("{namespace}/{}", meta.name.as_deref().unwrap_or("")),
                })?;
        let refs = References::of(pod);
        let keys = PodKeys::new(&namespace, &refs);
        let (cms, secrets, services) = {
            let mut state = self.shared.lock();
            let entry = state.pods.entry(uid.clone()).or_insert_with(PodEntry::new);
            let old = std::mem::replace(&mut entry.keys, keys.clone());
            (
                self.register::<ConfigMap>(&mut state, &uid, &old, &keys),
                self.register::<Secret>(&mut state, &uid, &old, &keys),
                self.register::<Service>(&mut state, &uid, &old, &keys),
            )
        };
        tokio::try_join!(
            try_join_all(cms.iter().map(|k| self.fetch::<ConfigMap>(k))),
            try_join_all(secrets.iter().map(|k| self.fetch::<Secret>(k))),
            try_join_all(services.iter().map(|k| self.fetch::<Service>(k))),
        )?;
        let binding = Binding {
            namespace: &namespace,
            service_account: &service_account_name(pod),
            pod_name: meta.name.as_deref().unwrap_or(""),
            pod_uid: &uid,
        };
        let tokens = self.tokens(&uid, &binding, &refs.tokens).await?;
        let mut out = PodObjects::default();
        let mut state = self.shared.lock();
        for key in &keys.config_maps {
            for cm in state
                .config_maps
                .get(key)
                .into_iter()
                .flat_map(|w| w.objects.values())
            {
                out.insert_config_map(cm.clone());
            }
        }
        for key in &keys.secrets {
            for s in state
                .secrets
                .get(key)
                .into_iter()
                .flat_map(|w| w.objects.values())
            {
                out.insert_secret(s.clone());
            }
        }
        for key in &keys.services {
            for s in state
                .services
                .get(key)
                .into_iter()
                .flat_map(|w| w.objects.values())
            {
                out.insert_service(s.clone());
            }
        }
        for (key, token) in &tokens {
            out.insert_token(key.clone(), token.token.clone());
        }
        if let Some(entry) = state.pods.get_mut(&uid) {
            entry.tokens = tokens;
            self.schedule_token_refresh(&uid, entry);
        }
        Ok(out)
    }

    /// A channel whose value changes whenever an object the pod refers to changes, or one
    /// of its tokens is due for refresh: the pod worker then resolves again.
    pub fn subscribe(&self, pod_uid: &str) -> watch::Receiver<u64> {
        let mut state = self.shared.lock();
        state
            .pods
            .entry(pod_uid.to_string())
            .or_insert_with(PodEntry::new)
            .changed
            .subscribe()
    }

    /// Releases everything the pod referred to (its watches stop when no other pod needs
    /// them) and drops its tokens.
    pub fn forget(&self, pod_uid: &str) {
        let mut state = self.shared.lock();
        let Some(entry) = state.pods.remove(pod_uid) else {
            return;
        };
        let none = PodKeys::default();
        self.register::<ConfigMap>(&mut state, pod_uid, &entry.keys, &none);
        self.register::<Secret>(&mut state, pod_uid, &entry.keys, &none);
        self.register::<Service>(&mut state, pod_uid, &entry.keys, &none);
    }

    /// How many watches are running (one per referenced object or watched namespace).
    pub fn watch_count(&self) -> usize {
        let state = self.shared.lock();
        state.config_maps.len() + state.secrets.len() + state.services.len()
    }

    /// Moves the pod from `old` to `new` keys of kind K; returns the keys whose watch has
    /// not listed yet, which must be read directly.
    fn register<K: Kind>(
        &self,
        state: &mut State,
        uid: &str,
        old: &PodKeys,
        new: &PodKeys,
    ) -> Vec<WatchKey> {
        let (old, new) = (K::keys(old), K::keys(new));
        let table = K::table(state);
        for key in old.difference(new) {
            if let Some(watched) = table.get_mut(key) {
                watched.pods.remove(uid);
                if watched.pods.is_empty() {
                    table.remove(key);
                }
            }
        }
        let mut unsynced = Vec::new();
        for key in new {
            let watched = table.entry(key.clone()).or_insert_with(|| Watched {
                objects: BTreeMap::new(),
                synced: false,
                pods: BTreeSet::new(),
                task: tokio::spawn(watch_loop::<K>(Arc::downgrade(&self.shared), key.clone()))
                    .abort_handle(),
            });
            watched.pods.insert(uid.to_string());
            if !watched.synced {
                unsynced.push(key.clone());
            }
        }
        unsynced
    }

    /// Reads one key from the API into its (not yet synced) watch entry.
    async fn fetch<K: Kind>(&self, key: &WatchKey) -> Result<(), ObjectError> {
        let api: Api<K> = Api::namespaced(self.shared.client.current(), &key.namespace);
        let error = |source| ObjectError::Get {
            kind: K::NAME,
            namespace: key.namespace.clone(),
            name: key.name.clone().unwrap_or_default(),
            source,
        };
        let objects: BTreeMap<String, K> = match &key.name {
            Some(name) => api
                .get_opt(name)
                .await
                .map_err(error)?
                .map(|o| (name.clone(), o))
                .into_iter()
                .collect(),
            None => api
                .list(&ListParams::default())
                .await
                .map_err(error)?
                .items
                .into_iter()
                .map(|o| (o.meta().name.clone().unwrap_or_default(), o))
                .collect(),
        };
        let mut state = self.shared.lock();
        if let Some(watched) = K::table(&mut state).get_mut(key) {
            if !watched.synced {
                watched.objects = objects;
            }
        }
        Ok(())
    }

    /// The pod's tokens for `wanted`: cached ones while fresh, new ones otherwise.
    async fn tokens(
        &self,
        uid: &str,
        binding: &Binding<'_>,
        wanted: &BTreeSet<TokenKey>,
    ) -> Result<BTreeMap<TokenKey, Token>, ObjectError> {
        let cached = {
            let state = self.shared.lock();
            state
                .pods
                .get(uid)
                .map(|e| e.tokens.clone())
                .unwrap_or_default()
        };
        let now = Timestamp::now();
        let mut out = BTreeMap::new();
        for key in wanted {
            let token = match cached.get(key) {
                Some(t) if !t.needs_refresh(now) => t.clone(),
                old => match tokens::request(self.shared.client.current(), binding, key).await {
                    Ok(fresh) => fresh,
                    // Like the token manager: a failed refresh keeps a token still valid.
                    Err(error) => match old.filter(|t| t.usable(now)) {
                        Some(t) => {
                            tracing::warn!(%error, "token refresh failed; keeping the valid token");
                            // Retry later rather than at once, or the timer would spin.
                            let mut kept = t.clone();
                            kept.refresh_at = now
                                .checked_add(jiff::SignedDuration::from_secs(TOKEN_RETRY_SECONDS))
                                .unwrap_or(now);
                            kept
                        }
                        None => return Err(error),
                    },
                },
            };
            out.insert(key.clone(), token);
        }
        Ok(out)
    }

    /// Wakes the pod when its earliest token is due.
    fn schedule_token_refresh(&self, uid: &str, entry: &mut PodEntry) {
        if let Some(timer) = entry.timer.take() {
            timer.abort();
        }
        let Some(due) = entry.tokens.values().map(|t| t.refresh_at).min() else {
            return;
        };
        let wait = Duration::try_from(due.duration_since(Timestamp::now())).unwrap_or_default();
        let shared = Arc::downgrade(&self.shared);
        let uid = uid.to_string();
        entry.timer = Some(
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(shared) = shared.upgrade() {
                    if let Some(entry) = shared.lock().pods.get(&uid) {
                        entry.bump();
                    }
                }
            })
            .abort_handle(),
        );
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge every pod: the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to a watch's objects; notifies its pods when an object's
    /// resourceVersion (or the set of objects) changed.
    fn update<K: Kind>(
        &self,
        key: &WatchKey,
        synced: bool,
        change: impl FnOnce(&mut BTreeMap<String, K>),
    ) {
        let mut state = self.lock();
        let Some(watched) = K::table(&mut state).get_mut(key) else {
            return;
        };
        let before = versions(&watched.objects);
        change(&mut watched.objects);
        watched.synced |= synced;
        if versions(&watched.objects) == before {
            return;
        }
        let pods: Vec<String> = watched.pods.iter().cloned().collect();
        for uid in pods {
            if let Some(entry) = state.pods.get(&uid) {
                entry.bump();
            }
        }
    }
}

fn versions<K: Resource>(objects: &BTreeMap<String, K>) -> Vec<(String, Option<String>)> {
    objects
        .iter()
        .map(|(n, o)| (n.clone(), o.meta().resource_version.clone()))
        .collect()
}

fn name_of<K: Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

/// Follows one key until its entry is dropped (the last pod let go) or the fetcher is gone;
/// a broken watch is restarted after a jittered exponential back-off and relists.
async fn watch_loop<K: Kind>(shared: Weak<Shared>, key: WatchKey) {
    let mut backoff = MIN_WATCH_BACKOFF;
    loop {
        let Some(client) = shared.upgrade().map(|s| s.client.current()) else {
            return;
        };
        let api: Api<K> = Api::namespaced(client, &key.namespace);
        let config = match &key.name {
            Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
            None => watcher::Config::default(),
        };
        let mut stream = std::pin::pin!(watcher::watcher(api, config));
        let mut buffer = BTreeMap::new();
        while let Some(event) = stream.next().await {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            match event {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(obj)) => {
                    buffer.insert(name_of(&obj), obj);
                }
                Ok(Event::InitDone) => {
                    let listed = std::mem::take(&mut buffer);
                    shared.update::<K>(&key, true, |objects| *objects = listed);
                    backoff = MIN_WATCH_BACKOFF;
                }
                Ok(Event::Apply(obj)) => shared.update::<K>(&key, false, |objects| {
                    objects.insert(name_of(&obj), obj);
                }),
                Ok(Event::Delete(obj)) => shared.update::<K>(&key, false, |objects| {
                    objects.remove(&name_of(&obj));
                }),
                Err(error) => {
                    tracing::debug!(kind = K::NAME, namespace = %key.namespace, name = ?key.name, %error, "watch broke; restarting");
                    break;
                }
            }
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
    }
}

/// `base` plus up to 50 % jitter, so watches broken together do not retry together.
fn jittered(base: Duration) -> Duration {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    base + base.mul_f64(f64::from(noise % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_service_is_always_watched() {
        let mut refs = References {
            service_links: true,
            ..Default::default()
        };
        let ns = |keys: &PodKeys| keys.services.iter().cloned().collect::<Vec<_>>();
        let key = |ns: &str, name: Option<&str>| WatchKey {
            namespace: ns.into(),
            name: name.map(Into::into),
        };
        assert_eq!(
            ns(&PodKeys::new("apps", &refs)),
            [key("apps", None), key("default", Some("kubernetes"))]
        );
        assert_eq!(ns(&PodKeys::new("default", &refs)), [key("default", None)]);
        refs.service_links = false;
        assert_eq!(
            ns(&PodKeys::new("apps", &refs)),
            [key("default", Some("kubernetes"))]
        );
    }

    #[test]
    fn jitter_stays_within_half() {
        let d = jittered(Duration::from_secs(2));
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(3));
    }
}
