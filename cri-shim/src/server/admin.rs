//! Capstan's ImageAdmin service (image import).

use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::admin::image_admin_server::ImageAdmin;
use crate::admin::{ImportImageRequest, ImportImageResponse, ImportedImage};
use crate::image::ImageService;

/// Serves ImageAdmin from the image service.
pub struct Admin {
    images: Arc<ImageService>,
}

impl Admin {
    /// Wrap the image service.
    pub fn new(images: Arc<ImageService>) -> Self {
        Self { images }
    }
}

#[tonic::async_trait]
impl ImageAdmin for Admin {
    async fn import_image(
        &self,
        request: Request<ImportImageRequest>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let path = request.into_inner().path;
        if !Path::new(&path).is_absolute() {
            return Err(Status::invalid_argument(format!(
                "archive path {path:?} must be absolute"
            )));
        }
        let records = self.images.import(Path::new(&path)).await?;
        Ok(Response::new(ImportImageResponse {
            images: records
                .into_iter()
                .map(|r| ImportedImage {
                    id: r.id.to_string(),
                    size: r.size(),
                    repo_tags: r.repo_tags,
                })
                .collect(),
        }))
    }
}
