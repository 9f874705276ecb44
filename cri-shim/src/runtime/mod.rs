//! The RuntimeService state: sandbox and container stores backed by disk, and their
//! operations. Every multi-step change records its intent first (phase `Creating`), so a
//! crash at any point is either finished or undone when the server starts again.

pub mod cgroups;
mod container;
pub mod error;
pub mod events;
pub mod files;
mod recover;
pub mod rootfs;
mod sandbox;
mod stats;
pub mod store;

use std::sync::Arc;

use crate::config::RuntimeConfig;
use crate::image::ImageService;
use crate::network::Cni;
use error::RuntimeError;
use events::EventHub;
use store::Table;

pub use container::{ContainerPhase, ContainerRecord};
pub use sandbox::{SandboxPhase, SandboxRecord};

/// Sandboxes and containers on this node.
pub struct Runtime {
    config: Arc<RuntimeConfig>,
    images: Arc<ImageService>,
    cni: Cni,
    sandboxes: Table<SandboxRecord>,
    containers: Table<ContainerRecord>,
    events: EventHub,
}

impl Runtime {
    /// Open the stores and repair what a crash left half-made.
    pub async fn open(
        config: Arc<RuntimeConfig>,
        images: Arc<ImageService>,
    ) -> Result<Arc<Self>, RuntimeError> {
        let open = |dir: std::path::PathBuf| {
            std::fs::create_dir_all(&dir)
                .map_err(|e| RuntimeError::internal(format!("creating {}", dir.display()), e))?;
            Ok::<_, RuntimeError>(dir)
        };
        let (sandboxes, broken_sandboxes) = Table::open(&open(config.sandbox_root())?)
            .map_err(|e| RuntimeError::internal("opening sandbox records", e))?;
        let (containers, broken_containers) = Table::open(&open(config.container_root())?)
            .map_err(|e| RuntimeError::internal("opening container records", e))?;
        std::fs::create_dir_all(&config.run_root)
            .map_err(|e| RuntimeError::internal("creating run root", e))?;
        let runtime = Arc::new(Self {
            cni: Cni::new(config.cni.clone()),
            config,
            images,
            sandboxes,
            containers,
            events: EventHub::new(),
        });
        let weak = Arc::downgrade(&runtime);
        runtime
            .events
            .describe_with(move |event| match weak.upgrade() {
                Some(runtime) => runtime.event_response(event),
                None => k8s_cri::v1::ContainerEventResponse::default(),
            });
        runtime.recover(broken_sandboxes, broken_containers).await;
        Ok(runtime)
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn sandbox(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        self.sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    fn container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        self.containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))
    }

    /// A container using the image, if any (its snapshots are that container's lowerdirs).
    pub fn container_using(&self, image_id: &str) -> Option<String> {
        self.containers
            .all()
            .into_iter()
            .find(|c| c.image_id == image_id)
            .map(|c| c.id)
    }
}

impl Runtime {
    /// Whether pods can be networked: the CNI configuration loads and its plugins answer
    /// STATUS.
    pub async fn network_ready(&self) -> Result<(), String> {
        self.cni.status().await.map_err(|e| e.to_string())
    }

    /// Lifecycle events from now on.
    pub fn subscribe_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<k8s_cri::v1::ContainerEventResponse> {
        self.events.subscribe()
    }

    /// A lifecycle event as CRI streams it (as containerd does): with the sandbox's status
    /// and the statuses of every container in the sandbox, so an evented PLEG rebuilds the
    /// whole pod from one event, Deleted included.
    fn event_response(
        &self,
        event: &events::LifecycleEvent,
    ) -> k8s_cri::v1::ContainerEventResponse {
        let sandbox = self.sandboxes.get(&event.sandbox_id);
        let mut containers: Vec<_> = self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.sandbox_id == event.sandbox_id && c.phase != ContainerPhase::Creating)
            .collect();
        containers.sort_by_key(|c| c.created_at);
        k8s_cri::v1::ContainerEventResponse {
            container_id: event.container_id.clone(),
            container_event_type: event.kind as i32,
            created_at: event.at,
            pod_sandbox_status: sandbox.as_ref().map(|s| self.status_of(s)),
            containers_statuses: containers.iter().map(|c| self.cri_status(c)).collect(),
        }
    }
}
