//! Pulling images from OCI/Docker registries into the store.

mod auth;
mod endpoint;
mod layer;
pub(crate) mod manifest;
mod single_flight;
mod token;

use std::sync::Arc;

use futures::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

pub use auth::Credentials;
use endpoint::{Endpoint, Endpoints};
use manifest::{Descriptor, Fetched};
use single_flight::KeyedLocks;

use crate::config::RuntimeConfig;
use crate::image::digest::Digest;
use crate::image::error::ImageError;
use crate::image::reference::ImageName;
use crate::image::store::{ImageRecord, ImageStore, LayerRecord};
use crate::image::unpack::{Compression, UnpackOptions};

/// Largest image config accepted.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Fetches images into the store; shared by all pulls so concurrent pulls share work.
pub struct Puller {
    config: Arc<RuntimeConfig>,
    store: Arc<ImageStore>,
    endpoints: Endpoints,
    layer_locks: KeyedLocks,
    options: UnpackOptions,
}

impl Puller {
    /// A puller writing into `store`.
    pub fn new(config: Arc<RuntimeConfig>, store: Arc<ImageStore>) -> Self {
        let options = UnpackOptions {
            limits: config.unpack_limits.limits(),
            create_device_nodes: config.create_device_nodes,
        };
        Self {
            config,
            store,
            endpoints: Endpoints::default(),
            layer_locks: KeyedLocks::default(),
            options,
        }
    }

    /// Pull `name`, trying mirrors first. `credentials` are for the image's own registry;
    /// without them the docker config file is consulted. The caller holds off garbage
    /// collection for the duration.
    pub async fn pull(
        &self,
        name: &ImageName,
        credentials: Option<Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        let registry = name.registry().to_owned();
        let (mirrors, upstream) =
            self.endpoints
                .for_reference(&self.config, name.reference(), |host| {
                    // The request's credentials are for the image's own registry, never for mirrors.
                    match (&credentials, host == registry) {
                        (Some(c), true) => Ok(Some(c.clone())),
                        _ => self.configured_credentials(host),
                    }
                })?;
        for mirror in &mirrors {
            match self.pull_from(mirror, name).await {
                Ok(record) => return Ok(record),
                Err(e) => {
                    tracing::warn!(mirror = %mirror.host, image = %name.whole(), error = %e, "mirror failed, trying next");
                }
            }
        }
        self.pull_from(&upstream, name).await
    }

    /// How layers are unpacked (limits, device policy).
    pub fn unpack_options(&self) -> &UnpackOptions {
        &self.options
    }

    /// What to present to the endpoint; identity tokens are exchanged for an access token.
    async fn registry_auth(
        &self,
        ep: &Endpoint,
        name: &ImageName,
    ) -> Result<RegistryAuth, ImageError> {
        Ok(match &ep.credentials {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::RegistryToken(token)) => RegistryAuth::Bearer(token.clone()),
            Some(Credentials::IdentityToken(refresh)) => {
                let settings = self.config.registry(&ep.host);
                let repository = name.reference().repository();
                RegistryAuth::Bearer(
                    token::access_token(&settings, &ep.host, repository, refresh).await?,
                )
            }
        })
    }

    fn configured_credentials(&self, host: &str) -> Result<Option<Credentials>, ImageError> {
        match &self.config.auth_file {
            Some(path) => Credentials::from_docker_config(path, host),
            None => Ok(None),
        }
    }

    async fn pull_from(&self, ep: &Endpoint, name: &ImageName) -> Result<ImageRecord, ImageError> {
        let auth = self.registry_auth(ep, name).await?;
        let (bytes, _) = ep
            .client
            .pull_manifest_raw(&ep.reference, &auth, manifest::ACCEPTED)
            .await
            .map_err(|e| registry_error(ep, e))?;
        let top_digest = Digest::of(&bytes);
        if let Some(pinned) = name.digest() {
            if pinned != top_digest {
                return Err(ImageError::DigestMismatch {
                    expected: pinned.to_string(),
                    actual: top_digest.to_string(),
                });
            }
        }
        let (manifest_bytes, manifest_digest) = match manifest::parse(&bytes, &top_digest)? {
            Fetched::Image(_) => (bytes.to_vec(), top_digest.clone()),
            Fetched::Index(entries) => {
                let chosen = manifest::select_host_platform(&entries, &top_digest)?;
                let digest = chosen.digest()?;
                let reference = ep.reference.clone_with_digest(digest.to_string());
                let (bytes, _) = ep
                    .client
                    .pull_manifest_raw(&reference, &auth, manifest::ACCEPTED)
                    .await
                    .map_err(|e| registry_error(ep, e))?;
                verify(&digest, chosen.size()?, &bytes)?;
                (bytes.to_vec(), digest)
            }
        };
        let Fetched::Image(image) = manifest::parse(&manifest_bytes, &manifest_digest)? else {
            return Err(ImageError::InvalidContent {
                what: "image index",
                digest: top_digest.to_string(),
                reason: "platform entry points at another index".into(),
            });
        };

        let config_digest = image.config.digest()?;
        let config_bytes = self.small_blob(ep, &image.config, MAX_CONFIG_BYTES).await?;
        let diff_ids = manifest::diff_ids(&config_bytes, &config_digest, image.layers.len())?;
        let layers = layer_records(&image.layers, diff_ids)?;

        let jobs: Vec<_> = image
            .layers
            .iter()
            .zip(&layers)
            .map(|(descriptor, layer)| self.ensure_layer(ep, layer, &descriptor.urls))
            .collect();
        // Every job runs to its end even after one fails, so each cleans up its scratch
        // before the error is reported.
        let results: Vec<Result<(), ImageError>> = futures::stream::iter(jobs)
            .buffer_unordered(self.config.max_concurrent_downloads.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;

        self.store.blobs.put(&manifest_digest, &manifest_bytes)?;
        self.store.blobs.put(&config_digest, &config_bytes)?;
        let record = ImageRecord {
            id: config_digest,
            repo_tags: name.tagged().into_iter().collect(),
            repo_digests: vec![name.with_digest(&top_digest)],
            manifest: manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            config_size: config_bytes.len() as u64,
            layers,
            pinned: false,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.records().upsert(record))
            .await
            .map_err(|e| ImageError::io("recording image", std::io::Error::other(e)))?
            .map_err(|e| ImageError::io("recording image", e))
    }

    /// Make sure a layer's blob and snapshot are stored; concurrent pulls of the same layer
    /// wait for the first instead of fetching it again.
    async fn ensure_layer(
        &self,
        ep: &Endpoint,
        layer: &LayerRecord,
        urls: &Option<Vec<String>>,
    ) -> Result<(), ImageError> {
        let lock = self.layer_locks.get(layer.diff_id.hex());
        let _held = lock.lock().await;
        let unpacked = self.store.snapshots.contains(&layer.diff_id);
        if unpacked && self.store.blobs.contains(&layer.digest) {
            return Ok(());
        }
        tracing::debug!(layer = %layer.digest, unpack = !unpacked, "fetching layer");
        layer::fetch(&self.store, ep, layer, urls, !unpacked, &self.options).await
    }

    /// A small blob (config), from the store or the registry, verified.
    async fn small_blob(
        &self,
        ep: &Endpoint,
        descriptor: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let digest = descriptor.digest()?;
        let size = descriptor.size()?;
        if size > limit {
            return Err(ImageError::InvalidContent {
                what: "image config",
                digest: digest.to_string(),
                reason: format!("{size} bytes exceeds the {limit} byte limit"),
            });
        }
        if self.store.blobs.contains(&digest) {
            return self
                .store
                .blobs
                .read(&digest)
                .map_err(|e| ImageError::io("reading config", e));
        }
        let sized = ep
            .client
            .pull_blob_stream(&ep.reference, digest.to_string().as_str())
            .await
            .map_err(|e| registry_error(ep, e))?;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = sized.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| registry_error(ep, OciDistributionError::IoError(e)))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > size {
                break;
            }
        }
        verify(&digest, size, &bytes)?;
        Ok(bytes)
    }
}

/// Check that content matches the descriptor that named it.
pub(crate) fn verify(digest: &Digest, size: u64, bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.len() as u64 != size {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn layer_records(
    descriptors: &[Descriptor],
    diff_ids: Vec<Digest>,
) -> Result<Vec<LayerRecord>, ImageError> {
    descriptors
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            let digest = d.digest()?;
            Compression::from_media_type(&d.media_type).map_err(|source| ImageError::Unpack {
                digest: digest.to_string(),
                source,
            })?;
            Ok(LayerRecord {
                digest,
                media_type: d.media_type.clone(),
                size: d.size()?,
                diff_id,
            })
        })
        .collect()
}

/// A registry client error, naming the image and host.
fn registry_error(ep: &Endpoint, e: OciDistributionError) -> ImageError {
    ImageError::Registry {
        reference: ep.reference.whole(),
        registry: ep.host.clone(),
        message: e.to_string(),
    }
}
