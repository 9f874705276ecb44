//! The image service: pull, list, inspect, remove and import images, backed by the store.

pub mod digest;
pub mod error;
mod import;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::RwLock;
use tracing::Instrument;

use crate::config::RuntimeConfig;
use error::ImageError;
use pull::{Credentials, Puller};
use reference::ImageName;
use store::{GcReport, ImageRecord, ImageStore, Records, Usage};

/// Images on this node.
pub struct ImageService {
    store: Arc<ImageStore>,
    puller: Puller,
    /// Pulls and imports share this; garbage collection takes it alone, so it never
    /// deletes content a pull has stored but not yet recorded.
    gc_gate: RwLock<()>,
}

impl ImageService {
    /// Open the store under the config's root.
    pub fn open(config: Arc<RuntimeConfig>) -> Result<Self, ImageError> {
        let root = config.image_root();
        let store =
            Arc::new(ImageStore::open(&root).map_err(|e| {
                ImageError::io(format!("opening image store {}", root.display()), e)
            })?);
        Ok(Self {
            puller: Puller::new(config, store.clone()),
            store,
            gc_gate: RwLock::new(()),
        })
    }

    /// The store (for the runtime to find snapshots).
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Pull an image by reference.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        let name = ImageName::parse(reference)?;
        let _gate = self.gc_gate.read().await;
        let started = std::time::Instant::now();
        let span = tracing::info_span!("pull", image = %name.whole());
        let record = self
            .puller
            .pull(&name, credentials)
            .instrument(span)
            .await?;
        tracing::info!(image = %name.whole(), id = %record.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
        Ok(record)
    }

    /// Images, optionally only those a reference or ID refers to.
    pub fn list(&self, filter: Option<&str>) -> Vec<ImageRecord> {
        let records = self.store.records();
        match filter.filter(|f| !f.is_empty()) {
            None => records.all().cloned().collect(),
            Some(f) => {
                let name = reference::lookup_name(f);
                records
                    .all()
                    .filter(|r| r.matches(&name) || r.matches(f))
                    .cloned()
                    .collect()
            }
        }
    }

    /// The image a reference or ID refers to, if stored.
    pub fn find(&self, name: &str) -> Option<ImageRecord> {
        lookup(&self.store.records(), name).cloned()
    }

    /// The stored image config (JSON) of an image.
    pub fn config_json(&self, record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        self.store
            .blobs
            .read(&record.id)
            .map_err(|e| ImageError::io(format!("reading config of {}", record.id), e))
    }

    /// Remove an image by reference or ID and free content no other image uses. Removing
    /// something absent succeeds, as CRI requires.
    pub async fn remove(&self, name: &str) -> Result<GcReport, ImageError> {
        let _gate = self.gc_gate.write().await;
        let store = self.store.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let found = lookup(&store.records(), &name).cloned();
            let Some(record) = found else {
                return Ok(GcReport::default());
            };
            store
                .records()
                .remove(&record.id)
                .map_err(|e| ImageError::io(format!("removing image record {}", record.id), e))?;
            store
                .collect_garbage()
                .map_err(|e| ImageError::io("collecting unused image content", e))
        })
        .await
        .map_err(|e| ImageError::io("remove task", std::io::Error::other(e)))?
    }

    /// Bytes and inodes used by the image filesystem.
    pub fn usage(&self) -> Result<Usage, ImageError> {
        self.store
            .usage()
            .map_err(|e| ImageError::io("measuring image store", e))
    }

    /// Load images from an OCI layout or `docker save` archive.
    pub async fn import(&self, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let _gate = self.gc_gate.read().await;
        import::import_archive(
            self.store.clone(),
            self.puller.unpack_options().clone(),
            path.to_owned(),
        )
        .await
    }
}

/// The record a user's name refers to: normalised as a reference first, verbatim otherwise.
fn lookup<'a>(records: &'a Records, name: &str) -> Option<&'a ImageRecord> {
    records
        .find(&reference::lookup_name(name))
        .or_else(|| records.find(name))
}
