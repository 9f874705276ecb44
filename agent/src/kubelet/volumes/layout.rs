//! The on-disk layout under `<pods_dir>` (the kubelet's), and the checks that make pod UIDs,
//! volume and container names safe to use as path components.

use std::path::{Path, PathBuf};

use super::error::VolumeError;

/// Plugin directory name of emptyDir volumes.
pub(super) const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
/// Plugin directory name of downwardAPI volumes.
pub(super) const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
/// Plugin directory name of configMap volumes.
pub(super) const CONFIG_MAP_PLUGIN: &str = "kubernetes.io~configmap";
/// Plugin directory name of secret volumes.
pub(super) const SECRET_PLUGIN: &str = "kubernetes.io~secret";
/// Plugin directory name of projected volumes.
pub(super) const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";

/// Paths of one pod under the pods directory.
#[derive(Debug, Clone)]
pub(super) struct PodDir {
    root: PathBuf,
}

impl PodDir {
    /// `<pods_dir>/<uid>`, after checking the UID is one path component.
    pub(super) fn new(pods_dir: &Path, uid: &str) -> Result<Self, VolumeError> {
        check_pod_uid(uid)?;
        Ok(PodDir {
            root: pods_dir.join(uid),
        })
    }

    /// `<pods_dir>/<uid>`.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// `<pod>/volumes/<plugin>/<volume>`.
    pub(super) fn volume(&self, plugin: &str, volume: &str) -> PathBuf {
        self.root.join("volumes").join(plugin).join(volume)
    }

    /// `<pod>/volume-subpaths/<volume>/<container>/<index>`: where a resolved subPath is bound.
    pub(super) fn subpath_target(&self, volume: &str, container: &str, index: usize) -> PathBuf {
        self.root
            .join("volume-subpaths")
            .join(volume)
            .join(container)
            .join(index.to_string())
    }
}

/// Pod UIDs name a directory: one non-special path component of sane length.
pub(super) fn check_pod_uid(uid: &str) -> Result<(), VolumeError> {
    let bad = |reason| VolumeError::InvalidName {
        what: "pod UID",
        name: uid.to_string(),
        reason,
    };
    if uid.is_empty() || uid.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    if uid == "." || uid == ".." || uid.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(bad("may contain only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// Volume and container names are DNS-1123 labels (API validation), hence safe path components.
pub(super) fn check_dns_label(what: &'static str, name: &str) -> Result<(), VolumeError> {
    let bad = |reason| VolumeError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("may contain only lower-case letters, digits and '-'"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_single_components() {
        for good in [
            "0b4c5d2e-1f7a-4c3e-9d1a-aa00bb11cc22",
            "a1b2c3",
            "static_x.y",
        ] {
            assert!(check_pod_uid(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../etc", "a/b", ".hidden", "a b", "a\0b"] {
            assert!(check_pod_uid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_follow_dns_1123() {
        for good in ["data", "cache-1", "a", "0x"] {
            assert!(check_dns_label("volume name", good).is_ok(), "{good}");
        }
        for bad in ["", "Data", "-a", "a-", "a/b", "..", "a.b", &"x".repeat(64)] {
            assert!(check_dns_label("volume name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layout_matches_the_kubelet() -> Result<(), VolumeError> {
        let pod = PodDir::new(Path::new("/var/lib/capstan/pods"), "u1")?;
        assert_eq!(
            pod.volume(EMPTY_DIR_PLUGIN, "cache"),
            Path::new("/var/lib/capstan/pods/u1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert_eq!(
            pod.subpath_target("cache", "app", 2),
            Path::new("/var/lib/capstan/pods/u1/volume-subpaths/cache/app/2")
        );
        Ok(())
    }
}
