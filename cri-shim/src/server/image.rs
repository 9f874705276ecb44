//! CRI ImageService over the image service.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService as CriImageService;
use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::image::pull::Credentials;
use crate::image::store::ImageRecord;
use crate::image::ImageService;

/// Serves CRI ImageService from the image service.
pub struct Images {
    images: Arc<ImageService>,
    runtime: Arc<crate::runtime::Runtime>,
}

impl Images {
    /// Wrap the image service; `runtime` tells which images containers still use.
    pub fn new(images: Arc<ImageService>, runtime: Arc<crate::runtime::Runtime>) -> Self {
        Self { images, runtime }
    }

    /// The CRI view of a record; user comes from the image config.
    fn to_cri(&self, record: &ImageRecord) -> Image {
        let user = self
            .images
            .config_json(record)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ConfigUser>(&bytes).ok())
            .map(|c| c.config.user)
            .unwrap_or_default();
        let (uid, username) = split_user(&user);
        Image {
            id: record.id.to_string(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            size: record.size(),
            uid: uid.map(|value| Int64Value { value }),
            username,
            spec: Some(ImageSpec {
                image: record.id.to_string(),
                ..Default::default()
            }),
            pinned: record.pinned,
        }
    }
}

#[derive(Deserialize, Default)]
struct ConfigUser {
    #[serde(default)]
    config: UserField,
}

#[derive(Deserialize, Default)]
struct UserField {
    #[serde(default, rename = "User")]
    user: String,
}

/// `User` of an image config as CRI reports it: a numeric uid, or a name to resolve later.
fn split_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    match name.parse::<i64>() {
        _ if name.is_empty() => (None, String::new()),
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

fn image_name(spec: Option<ImageSpec>) -> Result<String, Status> {
    spec.map(|s| s.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Status::invalid_argument("image spec with a non-empty image is required"))
}

#[tonic::async_trait]
impl CriImageService for Images {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image);
        let images = self
            .images
            .list(filter.as_deref())
            .iter()
            .map(|r| self.to_cri(r))
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image)?;
        let Some(record) = self.images.find(&name) else {
            // CRI: an absent image is a nil image, not an error.
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            let config: serde_json::Value =
                serde_json::from_slice(&self.images.config_json(&record)?).map_err(|e| {
                    Status::internal(format!("stored config of {} is unreadable: {e}", record.id))
                })?;
            let verbose = serde_json::json!({
                "id": record.id,
                "manifestDigest": record.manifest,
                "layers": record.layers,
                "imageSpec": config,
            });
            info.insert("info".to_owned(), verbose.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(self.to_cri(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image)?;
        let credentials = match &request.auth {
            Some(auth) => Credentials::from_cri(auth)?,
            None => None,
        };
        let record = self
            .images
            .pull(&name, credentials)
            .await
            .inspect_err(|e| {
                tracing::warn!(image = %name, error = %e, "pull failed");
            })?;
        Ok(Response::new(PullImageResponse {
            image_ref: record.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let name = image_name(request.into_inner().image)?;
        // Its snapshots are lowerdirs of the containers' mounted rootfs.
        if let Some(record) = self.images.find(&name) {
            if let Some(container) = self.runtime.container_using(&record.id.to_string()) {
                return Err(Status::failed_precondition(format!(
                    "image {name} is in use by container {container}"
                )));
            }
        }
        let report = self.images.remove(&name).await?;
        tracing::info!(image = %name, blobs = report.blobs, snapshots = report.snapshots, "removed image");
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        // Walks the store: blocking work.
        let images = self.images.clone();
        let usage = tokio::task::spawn_blocking(move || images.usage())
            .await
            .map_err(|e| Status::internal(format!("measuring the image store: {e}")))??;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let filesystem = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.images.store().root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![filesystem],
            container_filesystems: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::split_user;

    #[test]
    fn config_user_maps_to_uid_or_name() {
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(split_user("1000:100"), (Some(1000), String::new()));
        assert_eq!(split_user("nobody"), (None, "nobody".to_owned()));
    }
}
