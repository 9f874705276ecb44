//! emptyDir volumes: a 0777 directory on the node's disk, or a tmpfs for `medium: Memory`
//! (also the backing store of downwardAPI volumes, as in the kubelet).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{mount, MsFlags};

use super::error::VolumeError;
use super::mounts::is_mount_point;
use crate::kubelet::convert::{Amount, QuantityError};

/// Where an emptyDir keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Medium {
    /// A directory on the filesystem holding the pods directory.
    Disk,
    /// A tmpfs mounted on the volume directory.
    Memory,
}

/// The medium named in the spec; hugepages are not offered on this node.
pub(super) fn parse_medium(volume: &str, medium: Option<&str>) -> Result<Medium, VolumeError> {
    match medium.unwrap_or("") {
        "" => Ok(Medium::Disk),
        "Memory" => Ok(Medium::Memory),
        other => Err(VolumeError::InvalidVolume {
            volume: volume.to_string(),
            reason: format!("unsupported emptyDir medium {other:?}"),
        }),
    }
}

/// Creates the volume directory (mode 0777 like the kubelet) and, for memory, mounts a tmpfs
/// of `tmpfs_size` bytes on it. A volume already set up is left alone.
pub(super) fn setup(dir: &Path, medium: Medium, tmpfs_size: u64) -> Result<(), VolumeError> {
    if medium == Medium::Memory && is_mount_point(dir)? {
        return Ok(());
    }
    make_world_writable_dir(dir)?;
    if medium == Medium::Memory {
        let options = format!("size={tmpfs_size}");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| VolumeError::io("mount tmpfs on", dir, e))?;
    }
    Ok(())
}

fn make_world_writable_dir(dir: &Path) -> Result<(), VolumeError> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(|e| VolumeError::io("create directory", parent, e))?;
    }
    match fs::DirBuilder::new().mode(0o777).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(VolumeError::io("create directory", dir, e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| VolumeError::io("inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(VolumeError::io(
            "use as volume directory",
            dir,
            io::Error::from(io::ErrorKind::NotADirectory),
        ));
    }
    // The umask stripped bits from mkdir's mode.
    if meta.permissions().mode() & 0o777 != 0o777 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))
            .map_err(|e| VolumeError::io("chmod", dir, e))?;
    }
    Ok(())
}

/// The tmpfs size as the kubelet computes it: node allocatable memory, lowered to the pod's
/// memory limit (when every container declares one), lowered to the volume's sizeLimit.
pub(super) fn memory_volume_size(
    volume: &str,
    pod: &Pod,
    size_limit: Option<&str>,
    allocatable_memory: u64,
) -> Result<u64, VolumeError> {
    let quantity_error = |source| VolumeError::Quantity {
        volume: volume.to_string(),
        source,
    };
    let mut size = allocatable_memory;
    if let Some(limit) = pod_memory_limit(pod).map_err(quantity_error)? {
        if limit > 0 && limit <= size {
            size = limit;
        }
    }
    if let Some(text) = size_limit {
        let bytes = Amount::parse(text).map_err(quantity_error)?.value();
        if let Ok(bytes) = u64::try_from(bytes) {
            if bytes > 0 && bytes <= size {
                size = bytes;
            }
        }
    }
    Ok(size)
}

/// The pod-level memory limit of the pod cgroup: None unless every container declares one.
fn pod_memory_limit(pod: &Pod) -> Result<Option<u64>, QuantityError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let mut app_sum: u64 = 0;
    for c in &spec.containers {
        let Some(limit) = container_memory_limit(c)? else {
            return Ok(None);
        };
        app_sum = app_sum.saturating_add(limit);
    }
    // Sidecars run next to the app containers and next to every init container after them.
    let mut sidecar_sum: u64 = 0;
    let mut init_peak: u64 = 0;
    for c in spec.init_containers.iter().flatten() {
        let Some(limit) = container_memory_limit(c)? else {
            return Ok(None);
        };
        if c.restart_policy.as_deref() == Some("Always") {
            sidecar_sum = sidecar_sum.saturating_add(limit);
            init_peak = init_peak.max(sidecar_sum);
        } else {
            init_peak = init_peak.max(sidecar_sum.saturating_add(limit));
        }
    }
    let mut total = app_sum.saturating_add(sidecar_sum).max(init_peak);
    if let Some(overhead) = spec.overhead.as_ref().and_then(|o| o.get("memory")) {
        let bytes = Amount::parse(&overhead.0)?.value();
        total = total.saturating_add(u64::try_from(bytes).unwrap_or(0));
    }
    Ok(Some(total))
}

fn container_memory_limit(c: &Container) -> Result<Option<u64>, QuantityError> {
    let Some(q) = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
    else {
        return Ok(None);
    };
    let bytes = Amount::parse(&q.0)?.value();
    Ok(u64::try_from(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use std::collections::BTreeMap;

    fn container(name: &str, memory: Option<&str>) -> Container {
        Container {
            name: name.into(),
            resources: memory.map(|m| ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    K8sQuantity(m.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const GI: u64 = 1 << 30;

    #[test]
    fn size_defaults_to_node_allocatable() -> Result<(), VolumeError> {
        let p = pod(vec![container("a", None)], vec![]);
        assert_eq!(memory_volume_size("v", &p, None, 8 * GI)?, 8 * GI);
        Ok(())
    }

    #[test]
    fn size_is_capped_by_pod_limit_then_size_limit() -> Result<(), VolumeError> {
        let p = pod(
            vec![container("a", Some("1Gi")), container("b", Some("1Gi"))],
            vec![container("init", Some("3Gi"))],
        );
        assert_eq!(memory_volume_size("v", &p, None, 8 * GI)?, 3 * GI);
        assert_eq!(memory_volume_size("v", &p, Some("64Mi"), 8 * GI)?, 64 << 20);
        // A sizeLimit above what the pod may use does not raise the size.
        assert_eq!(memory_volume_size("v", &p, Some("5Gi"), 8 * GI)?, 3 * GI);
        // A pod limit above allocatable is ignored.
        assert_eq!(memory_volume_size("v", &p, None, 2 * GI)?, 2 * GI);
        Ok(())
    }

    #[test]
    fn sidecars_add_to_the_pod_limit() -> Result<(), VolumeError> {
        let mut sidecar = container("side", Some("1Gi"));
        sidecar.restart_policy = Some("Always".into());
        let p = pod(vec![container("a", Some("1Gi"))], vec![sidecar]);
        assert_eq!(memory_volume_size("v", &p, None, 8 * GI)?, 2 * GI);
        Ok(())
    }

    #[test]
    fn bad_quantities_and_media_are_errors() {
        let p = pod(vec![container("a", Some("lots"))], vec![]);
        assert!(matches!(
            memory_volume_size("v", &p, None, GI),
            Err(VolumeError::Quantity { .. })
        ));
        let p = pod(vec![], vec![]);
        assert!(memory_volume_size("v", &p, Some("1 Gi"), GI).is_err());
        assert!(parse_medium("v", Some("HugePages")).is_err());
        assert!(matches!(
            parse_medium("v", Some("Memory")),
            Ok(Medium::Memory)
        ));
        assert!(matches!(parse_medium("v", None), Ok(Medium::Disk)));
    }

    #[test]
    fn disk_volume_is_world_writable_and_idempotent() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("volumes/kubernetes.io~empty-dir/cache");
        setup(&dir, Medium::Disk, 0)?;
        fs::write(dir.join("keep"), b"data")?;
        setup(&dir, Medium::Disk, 0)?;
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o7777, 0o777);
        assert_eq!(fs::read(dir.join("keep"))?, b"data");
        Ok(())
    }
}
