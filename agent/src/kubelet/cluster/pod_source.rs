//! The API pod source: a watch of pods with `spec.nodeName=<node>`, kept as a full set that
//! is only replaced when a (re)list is complete, so a relist after 410 Gone or an API
//! restart never looks like pods going away.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use super::retry::Retry;
use crate::kubelet::bootstrap::ApiClient;

/// Consecutive watch errors after which the watch is rebuilt with the current client (a
/// rotated certificate); fewer resume from the last resourceVersion.
const REBUILD_AFTER_ERRORS: u32 = 30;

/// The node's pods by UID, as the API last listed and watched them.
pub type AssignedPods = Arc<BTreeMap<String, Pod>>;

/// Watch the pods bound to `node`; the receiver holds None until the first list completes.
pub fn watch_assigned(client: ApiClient, node: String) -> watch::Receiver<Option<AssignedPods>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(client, node, tx));
    rx
}

async fn run(client: ApiClient, node: String, tx: watch::Sender<Option<AssignedPods>>) {
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    loop {
        let api: Api<Pod> = Api::all(client.current());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut stream = watcher(api, config).backoff(Retry::api()).boxed();
        let mut listing: Option<BTreeMap<String, Pod>> = None;
        let mut errors = 0;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => {
                    errors = 0;
                    event
                }
                Err(error) => {
                    errors += 1;
                    tracing::warn!(%error, "watching this node's pods");
                    if errors >= REBUILD_AFTER_ERRORS {
                        break;
                    }
                    continue;
                }
            };
            match event {
                Event::Init => listing = Some(BTreeMap::new()),
                Event::InitApply(pod) => {
                    if let (Some(listing), Some(uid)) = (listing.as_mut(), uid(&pod)) {
                        listing.insert(uid, pod);
                    }
                }
                Event::InitDone => {
                    pods = listing.take().unwrap_or_default();
                    tx.send_replace(Some(Arc::new(pods.clone())));
                }
                Event::Apply(pod) => {
                    if let Some(uid) = uid(&pod) {
                        pods.insert(uid, pod);
                        tx.send_replace(Some(Arc::new(pods.clone())));
                    }
                }
                Event::Delete(pod) => {
                    if let Some(uid) = uid(&pod) {
                        pods.remove(&uid);
                        tx.send_replace(Some(Arc::new(pods.clone())));
                    }
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(super::retry::API_RETRY_MAX).await;
    }
}

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}
