//! Connecting the kubelet to its cluster: the API client (with certificate rotation), node
//! registration, status and lease, the node's pod watch, the status manager, events and
//! the fetcher of objects pods refer to.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use tokio::sync::watch;

use super::{watch_assigned, AssignedPods, ClusterPods, StatusSync};
use crate::kubelet::api_objects::ObjectFetcher;
use crate::kubelet::bootstrap::{ApiClient, RotationOptions};
use crate::kubelet::config::KubeletConfig;
use crate::kubelet::events::EventSink;
use crate::kubelet::node_status::{self, NodeStatusSettings};
use crate::kubelet::runtime::Cri;
use crate::kubelet::status::{Event, EventKind, PodStore};

/// The API client for `kubeconfig`, its client certificate rotated in the background for as
/// long as the process runs. Only a kubeconfig that cannot be read fails.
pub async fn connect(kubeconfig: &Path) -> anyhow::Result<ApiClient> {
    let client = ApiClient::from_kubeconfig(kubeconfig)
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
    let rotating = client.clone();
    tokio::spawn(async move {
        // Only an in-memory client cannot rotate; from a kubeconfig it runs for good.
        if let Err(error) = rotating.run_rotation(RotationOptions::default()).await {
            tracing::warn!(%error, "client certificate rotation stopped");
        }
    });
    Ok(client)
}

/// The live connection to the API server.
pub struct Connection {
    /// Pods bound to this node, as listed and watched.
    pub assigned: watch::Receiver<Option<AssignedPods>>,
    /// This node's Node object as the API last returned it.
    pub node: watch::Receiver<Option<Node>>,
    /// Resolves configMaps, secrets, tokens and services for the workers.
    pub fetcher: ObjectFetcher,
    /// Admission, status targets and mirror pods.
    pub pods: ClusterPods,
}

impl Connection {
    /// Start every background loop with `client`; an unreachable server is retried in the
    /// loops.
    pub async fn start(
        client: ApiClient,
        config: &KubeletConfig,
        node_name: &str,
        cri: &Cri,
        store: &Arc<PodStore>,
    ) -> anyhow::Result<Connection> {
        let settings = NodeStatusSettings::from_config(config, node_name)
            .map_err(anyhow::Error::msg)
            .context("node status settings")?;

        let (node_tx, node) = watch::channel(None);
        tokio::spawn(node_status::run(
            client.clone(),
            cri.clone(),
            settings,
            node_tx,
            std::future::pending::<()>(),
        ));

        let events = EventSink::new(client.clone(), node_name);
        store.set_event_listener(Arc::new(move |pod: &Pod, event: &Event| {
            let kind = match event.kind {
                EventKind::Normal => "Normal",
                EventKind::Warning => "Warning",
            };
            events.record(
                &reference(pod, event.container.as_deref()),
                kind,
                &event.reason,
                &event.message,
            );
        }));

        let status = StatusSync::start(client.clone(), store.clone());
        let assigned = watch_assigned(client.clone(), node_name.to_owned());
        let fetcher = ObjectFetcher::new(client.clone());
        Ok(Connection {
            assigned,
            node,
            fetcher,
            pods: ClusterPods::new(client, node_name.to_owned(), status),
        })
    }
}

/// The object an event is about: the pod, or one of its containers (`fieldPath`).
fn reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let spec = pod.spec.as_ref();
    let is_init = container.is_some_and(|name| {
        spec.and_then(|s| s.init_containers.as_ref())
            .is_some_and(|list| list.iter().any(|c| c.name == name))
    });
    let field_path = container.map(|name| {
        let list = if is_init {
            "initContainers"
        } else {
            "containers"
        };
        format!("spec.{list}{{{name}}}")
    });
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        field_path,
        ..ObjectReference::default()
    }
}
