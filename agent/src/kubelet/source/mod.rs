//! Where pods come from. Today: static pod manifests in a watched directory (kubelet's
//! `staticPodPath`); the API server joins as a second source in cluster mode.

mod manifest;
mod validate;
mod watch;

pub use manifest::{load_file, ManifestError, StaticPodDefaults};
pub use validate::validate_pod;
pub use watch::{watch_directory, SourceSnapshot};

/// Annotation naming the source of a pod (`file` for static pods), as the kubelet sets it.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation holding the static pod's content hash (its UID), as the kubelet sets it.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation naming the manifest file a static pod came from.
pub const CONFIG_FILE_ANNOTATION: &str = "capstan.io/config.file";
