//! The error type of the volume manager: every variant names what is wrong and where.

use std::io;
use std::path::PathBuf;

use crate::kubelet::convert::QuantityError;

/// Why preparing, mounting or removing a pod's volumes failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A name used as a path component (pod UID, volume or container name) is not safe.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name ("pod UID", "volume name", ...).
        what: &'static str,
        /// The offending name.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// The pod has no metadata.uid.
    #[error("pod {pod:?} has no metadata.uid")]
    MissingUid {
        /// namespace/name of the pod.
        pod: String,
    },
    /// Two volumes of the pod have the same name.
    #[error("volume {0:?} is declared more than once")]
    DuplicateVolume(String),
    /// The volume type needs an API server (or is not implemented on this node).
    #[error("volume {volume:?}: volume type {kind} is not supported in this mode")]
    Unsupported {
        /// Volume name.
        volume: String,
        /// Volume type as the pod spec spells it (configMap, secret, ...).
        kind: &'static str,
    },
    /// A volumeMount names a volume the pod does not declare.
    #[error("container {container:?}: volumeMount {mount:?} names unknown volume")]
    UnknownVolume {
        /// Container name.
        container: String,
        /// The volume name the mount asks for.
        mount: String,
    },
    /// The volume's spec is wrong in a way the API server would normally have refused.
    #[error("volume {volume:?}: {reason}")]
    InvalidVolume {
        /// Volume name.
        volume: String,
        /// What is wrong.
        reason: String,
    },
    /// A volumeMount's spec is wrong (mount path, propagation, subPath, ...).
    #[error("container {container:?}: volumeMount {mount:?}: {reason}")]
    InvalidMount {
        /// Container name.
        container: String,
        /// Volume name of the mount.
        mount: String,
        /// What is wrong.
        reason: String,
    },
    /// A size or resource quantity did not parse.
    #[error("volume {volume:?}: {source}")]
    Quantity {
        /// Volume name.
        volume: String,
        /// The parse failure.
        source: QuantityError,
    },
    /// A hostPath does not have the type the pod asks for.
    #[error("hostPath type check failed: {} is not a {expected}", path.display())]
    HostPathType {
        /// The host path.
        path: PathBuf,
        /// What it should have been ("directory", "socket file", ...).
        expected: &'static str,
    },
    /// A subPath resolves outside its volume (through `..` or a symlink).
    #[error("subPath {sub_path:?} of volume {volume:?} escapes the volume")]
    SubPathEscapes {
        /// Volume name.
        volume: String,
        /// The (expanded) subPath.
        sub_path: String,
    },
    /// A downwardAPI item path would leave its volume or hits a file the writer did not make.
    #[error("volume {volume:?}: invalid path {path:?}: {reason}")]
    InvalidItemPath {
        /// Volume name.
        volume: String,
        /// The item path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A configMap or secret the volume needs does not exist (and is not optional).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {kind} {name:?} not found")]
    ObjectNotFound {
        /// Volume name.
        volume: String,
        /// "configmap" or "secret".
        kind: &'static str,
        /// The object's name.
        name: String,
    },
    /// An item names a key the configMap or secret does not have (and is not optional).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {kind} {name:?} references non-existent key: {key}")]
    MissingKey {
        /// Volume name.
        volume: String,
        /// "configmap" or "secret".
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// No service-account token was issued for a projected serviceAccountToken source.
    #[error("MountVolume.SetUp failed for volume {volume:?} : no service account token issued for audience {audience:?}")]
    TokenNotIssued {
        /// Volume name.
        volume: String,
        /// The source's audience ("" for the API server's default).
        audience: String,
    },
    /// A mount point under the pod directory survived unmounting.
    #[error("{} is still mounted after unmount", path.display())]
    StillMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create directory", "mount tmpfs on", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl VolumeError {
    /// Builds an [`VolumeError::Io`] from anything convertible to `io::Error`.
    pub(super) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        VolumeError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}
