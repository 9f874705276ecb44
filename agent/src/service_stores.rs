//! The cluster-wide stores the service proxy and the DNS server share: Services and
//! EndpointSlices (and, for DNS's verified pod records, Pods), one watch each per agent,
//! with one change counter for all of them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::informer::{Changes, Informer};
use crate::kubelet::bootstrap::ApiClient;

/// Every Service and EndpointSlice at one moment.
pub struct ServiceSnapshot {
    /// All Services of the cluster.
    pub services: Vec<Arc<Service>>,
    /// All EndpointSlices of the cluster.
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// Shared Service/EndpointSlice(/Pod) informers.
#[derive(Clone)]
pub struct ServiceStores {
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    pods: Option<Informer<Pod>>,
    changes: Changes,
}

impl ServiceStores {
    /// Start the watches; `with_pods` adds a cluster-wide pod watch (DNS verified pod records).
    pub fn start(client: &ApiClient, with_pods: bool) -> Self {
        let changes = Changes::default();
        let config = watcher::Config::default;
        ServiceStores {
            services: Informer::start(client.clone(), config(), changes.clone()),
            slices: Informer::start(client.clone(), config(), changes.clone()),
            pods: with_pods.then(|| Informer::start(client.clone(), config(), changes.clone())),
            changes,
        }
    }

    /// Bumped whenever any of the stores changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Services and EndpointSlices, or None until both have been listed.
    pub fn services_and_slices(&self) -> Option<ServiceSnapshot> {
        Some(ServiceSnapshot {
            services: self.services.state()?,
            slices: self.slices.state()?,
        })
    }

    /// Pods when watched and listed; an empty list when not watched.
    pub fn pods(&self) -> Option<Vec<Arc<Pod>>> {
        match &self.pods {
            Some(pods) => pods.state(),
            None => Some(Vec::new()),
        }
    }
}
