//! The patch types kube-apiserver accepts, chosen by the request's Content-Type.

pub mod json;
pub mod merge;
pub mod strategic;

use serde_json::Value;

use super::status::ApiError;

/// Applies `patch` of `content_type` to `target` (an object of `resource`, by storage key).
pub fn apply(
    content_type: &str,
    target: &mut Value,
    patch: &Value,
    resource: &str,
) -> Result<(), ApiError> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => {
            merge::apply(target, patch);
            Ok(())
        }
        "application/strategic-merge-patch+json" => strategic::apply(target, patch, resource),
        "application/json-patch+json" => json::apply(target, patch),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}
