//! Pod volumes that need no API server, laid out and behaving like the kubelet's:
//!
//! - `emptyDir` → `<pods_dir>/<uid>/volumes/kubernetes.io~empty-dir/<name>`, mode 0777; with
//!   `medium: Memory` a tmpfs is mounted there (root mode 1777, the tmpfs default the kubelet
//!   keeps). Its `size=` is the kubelet's: node allocatable memory, lowered to the pod's memory
//!   limit when every container declares one, lowered to `sizeLimit`. A disk emptyDir's
//!   `sizeLimit` is an eviction threshold, not enforced here.
//! - `hostPath` → used in place after the kubelet's type checks (`""`, `DirectoryOrCreate`
//!   (0755), `Directory`, `FileOrCreate` (0644, parent must exist), `File`, `Socket`,
//!   `CharDevice`, `BlockDevice`); symlinks are followed as `os.Stat` does.
//! - `downwardAPI` → a tmpfs at `.../kubernetes.io~downward-api/<name>` written by an
//!   [AtomicWriter](atomic_writer) (`..<timestamp>` dirs, `..data` swapped by rename,
//!   `name → ..data/name` links); always mounted read-only.
//! - `configMap` → `.../kubernetes.io~configmap/<name>` on disk; `secret` →
//!   `.../kubernetes.io~secret/<name>` and `projected` (serviceAccountToken, configMap,
//!   secret, downwardAPI sources) → `.../kubernetes.io~projected/<name>`, each on its own
//!   tmpfs so secret material never reaches the disk. All keys or the listed items (path,
//!   mode), `defaultMode` 0644, binaryData, `optional`; data comes from the
//!   [`PodObjects`](crate::kubelet::api_objects::PodObjects) given to setup/refresh and is
//!   written by the atomic writer; mounted read-only.
//! - A volume without a source is an emptyDir (API defaulting). persistentVolumeClaim and
//!   the rest are [`VolumeError::Unsupported`].
//! - subPath/subPathExpr are resolved beneath the volume with `openat2(RESOLVE_BENEATH)`,
//!   created if missing, and bind-mounted from the opened fd to
//!   `<uid>/volume-subpaths/<volume>/<container>/<index>`, which is what the runtime gets.
//!
//! Usage from the pod worker: [`VolumeManager::setup`] before the sandbox,
//! [`VolumeManager::container_mounts`] per container, [`VolumeManager::refresh`] on metadata
//! updates, [`VolumeManager::teardown`] after RemovePodSandbox, and
//! [`VolumeManager::known_pods`] at start to tear down orphans.

mod allocatable;
mod api_data;
#[cfg(test)]
mod api_tests;
mod atomic_writer;
mod downward_api;
mod empty_dir;
mod error;
mod expand;
mod host_path;
mod layout;
mod manager;
mod mounts;
mod subpath;
#[cfg(test)]
mod test_fixture;
#[cfg(test)]
mod tests;

pub use allocatable::NodeAllocatable;
pub use error::VolumeError;
pub use manager::VolumeManager;
