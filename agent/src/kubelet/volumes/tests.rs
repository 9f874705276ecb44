//! Root tests of the volume manager through its public API: real tmpfs and bind mounts in
//! unique temporary directories, torn down by a guard even when an assertion fails.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::MountPropagation;
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    HostPathVolumeSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::test_fixture::{Fixture, TestResult, NODE};
use super::*;
use crate::kubelet::api_objects::PodObjects;

/// Static pods: nothing resolved from an API server.
static NO_OBJECTS: std::sync::LazyLock<PodObjects> = std::sync::LazyLock::new(PodObjects::default);

/// Builders of this module's pods.
impl Fixture {
    fn pod(&self, volumes: Vec<Volume>, containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(self.uid.clone()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: size.map(|s| Quantity(s.into())),
        }),
        ..Default::default()
    }
}

fn host_path(name: &str, path: &Path) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some("Directory".into()),
        }),
        ..Default::default()
    }
}

fn downward(name: &str) -> Volume {
    let item = |path: &str, field: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            api_version: None,
        }),
        ..Default::default()
    };
    Volume {
        name: name.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                item("labels", "metadata.labels"),
                item("meta/name", "metadata.name"),
            ]),
            default_mode: None,
        }),
        ..Default::default()
    }
}

fn mount(volume: &str, path: &str, sub_path: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(Into::into),
        ..Default::default()
    }
}

fn container(name: &str, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: name.into(),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn mount_count(path: &Path) -> usize {
    let Ok(canonical) = path.canonicalize() else {
        return 0;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).map(PathBuf::from) == Some(canonical.clone()))
        .count()
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == TMPFS_MAGIC)
}

#[test]
fn memory_empty_dir_is_a_sized_tmpfs_and_teardown_unmounts() -> TestResult {
    let fx = Fixture::new("pod")?;
    let pod = fx.pod(
        vec![empty_dir("cache", Some("Memory"), Some("64Mi"))],
        vec![],
    );
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let dir = fx.pod_dir().join("volumes/kubernetes.io~empty-dir/cache");
    assert_eq!(mount_count(&dir), 1);
    assert!(is_tmpfs(&dir));
    let vfs = rustix::fs::statvfs(&dir)?;
    assert_eq!(vfs.f_blocks * vfs.f_frsize, 64 << 20);
    fs::write(dir.join("data"), b"kept")?;
    // Setup again: no second mount, data kept.
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    assert_eq!(mount_count(&dir), 1);
    assert_eq!(fs::read(dir.join("data"))?, b"kept");

    fx.manager.teardown(&fx.uid)?;
    assert_eq!(mount_count(&dir), 0);
    assert!(!fx.pod_dir().exists());
    fx.manager.teardown(&fx.uid)?;
    Ok(())
}

#[test]
fn memory_empty_dir_defaults_to_node_allocatable() -> TestResult {
    let fx = Fixture::new("pod")?;
    let pod = fx.pod(vec![empty_dir("m", Some("Memory"), None)], vec![]);
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let dir = fx.pod_dir().join("volumes/kubernetes.io~empty-dir/m");
    let vfs = rustix::fs::statvfs(&dir)?;
    assert_eq!(vfs.f_blocks * vfs.f_frsize, NODE.memory_bytes);
    Ok(())
}

#[test]
fn busy_tmpfs_is_detached_lazily() -> TestResult {
    let fx = Fixture::new("pod")?;
    let pod = fx.pod(vec![empty_dir("m", Some("Memory"), Some("1Mi"))], vec![]);
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let dir = fx.pod_dir().join("volumes/kubernetes.io~empty-dir/m");
    let _open = fs::File::create(dir.join("held-open"))?;
    fx.manager.teardown(&fx.uid)?;
    assert!(!fx.pod_dir().exists());
    Ok(())
}

#[test]
fn disk_empty_dir_and_default_source() -> TestResult {
    let fx = Fixture::new("pod")?;
    let no_source = Volume {
        name: "plain".into(),
        ..Default::default()
    };
    let pod = fx.pod(
        vec![empty_dir("disk", None, Some("1Gi")), no_source],
        vec![],
    );
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    for name in ["disk", "plain"] {
        let dir = fx
            .pod_dir()
            .join("volumes/kubernetes.io~empty-dir")
            .join(name);
        assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o7777, 0o777);
        assert_eq!(mount_count(&dir), 0);
        assert_eq!(fx.manager.volume_path(&pod, name)?, dir);
    }
    assert!(fx.manager.volume_path(&pod, "ghost").is_err());
    // A fresh manager (as after an agent restart) finds and removes the pod from disk alone.
    let restarted = VolumeManager::new(fx.manager.pods_dir().to_path_buf(), NODE);
    assert_eq!(restarted.known_pods()?, vec![fx.uid.clone()]);
    restarted.teardown(&fx.uid)?;
    assert!(fx.manager.known_pods()?.is_empty());
    Ok(())
}

#[test]
fn downward_api_is_written_refreshed_and_read_only() -> TestResult {
    let fx = Fixture::new("pod")?;
    let c = container("app", vec![mount("info", "etc/podinfo", None)]);
    let mut pod = fx.pod(vec![downward("info")], vec![c.clone()]);
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let dir = fx.pod_dir().join("volumes/kubernetes.io~downward-api/info");
    assert!(is_tmpfs(&dir));
    assert_eq!(fs::read_to_string(dir.join("labels"))?, "app=\"web\"");
    assert_eq!(fs::read_to_string(dir.join("meta/name"))?, "web");
    let first = fs::read_link(dir.join("..data"))?;

    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert("tier".into(), "front".into());
    fx.manager.refresh(&pod, &NO_OBJECTS)?;
    assert_eq!(
        fs::read_to_string(dir.join("labels"))?,
        "app=\"web\"\ntier=\"front\""
    );
    let second = fs::read_link(dir.join("..data"))?;
    assert_ne!(first, second);
    let versions: Vec<String> = fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("..") && n != "..data")
        .collect();
    assert_eq!(versions, vec![second.to_string_lossy().into_owned()]);
    // Setup on the running pod keeps the version when nothing changed.
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    assert_eq!(fs::read_link(dir.join("..data"))?, second);
    assert_eq!(mount_count(&dir), 1);

    let mounts = fx.manager.container_mounts(&pod, &c, &BTreeMap::new())?;
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].container_path, "/etc/podinfo");
    assert_eq!(mounts[0].host_path, dir.to_string_lossy());
    assert!(mounts[0].readonly);
    Ok(())
}

#[test]
fn sub_path_is_created_bound_and_unmounted_on_teardown() -> TestResult {
    let fx = Fixture::new("pod")?;
    let host = tempfile::tempdir()?;
    fs::create_dir(host.path().join("conf"))?;
    fs::write(host.path().join("conf/app.conf"), b"host data")?;
    let mut expr = mount("data", "/logs", None);
    expr.sub_path_expr = Some("logs/$(POD_NAME)".into());
    let mut shared = mount("data", "/shared", Some("shared"));
    shared.mount_propagation = Some("HostToContainer".into());
    shared.read_only = Some(true);
    let c = container(
        "app",
        vec![
            mount("data", "/data", None),
            expr,
            shared,
            mount("host", "/etc/app.conf", Some("conf/app.conf")),
        ],
    );
    let pod = fx.pod(
        vec![
            empty_dir("data", None, None),
            host_path("host", host.path()),
        ],
        vec![c.clone()],
    );
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let env = BTreeMap::from([("POD_NAME".to_string(), "web-0".to_string())]);
    let mounts = fx.manager.container_mounts(&pod, &c, &env)?;
    let volume = fx.pod_dir().join("volumes/kubernetes.io~empty-dir/data");
    let subpaths = fx.pod_dir().join("volume-subpaths");
    assert_eq!(mounts[0].host_path, volume.to_string_lossy());
    assert_eq!(
        mounts[1].host_path,
        subpaths.join("data/app/1").to_string_lossy()
    );
    assert_eq!(
        mounts[2].host_path,
        subpaths.join("data/app/2").to_string_lossy()
    );
    assert_eq!(
        mounts[2].propagation,
        MountPropagation::PropagationHostToContainer as i32
    );
    assert!(mounts[2].readonly && !mounts[1].readonly);
    let file_target = subpaths.join("host/app/3");
    assert_eq!(mounts[3].host_path, file_target.to_string_lossy());

    // The subPath directory was created with the volume's mode, and the bind shows it.
    let created = volume.join("logs/web-0");
    assert_eq!(fs::metadata(&created)?.permissions().mode() & 0o7777, 0o777);
    fs::write(created.join("x.log"), b"line")?;
    assert_eq!(fs::read(subpaths.join("data/app/1/x.log"))?, b"line");
    assert_eq!(fs::read(&file_target)?, b"host data");
    assert_eq!(mount_count(&file_target), 1);

    // Asking again reuses the binds.
    fx.manager.container_mounts(&pod, &c, &env)?;
    assert_eq!(mount_count(&file_target), 1);
    assert_eq!(mount_count(&subpaths.join("data/app/1")), 1);

    fx.manager.teardown(&fx.uid)?;
    assert_eq!(mount_count(&file_target), 0);
    assert!(!fx.pod_dir().exists());
    assert_eq!(
        fs::read(host.path().join("conf/app.conf"))?,
        b"host data",
        "teardown deleted host data"
    );
    fx.manager.teardown(&fx.uid)?;
    Ok(())
}

#[test]
fn sub_path_symlink_escapes_are_refused() -> TestResult {
    let fx = Fixture::new("pod")?;
    let pod = fx.pod(vec![empty_dir("data", None, None)], vec![]);
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let volume = fx.pod_dir().join("volumes/kubernetes.io~empty-dir/data");
    symlink("/etc", volume.join("abs"))?;
    symlink("../../../../../../../../etc", volume.join("rel"))?;
    fs::create_dir(volume.join("inside"))?;
    symlink("inside", volume.join("ok"))?;
    for sub in ["abs", "abs/passwd", "rel", "rel/new-dir", "abs/new/deeper"] {
        let c = container("app", vec![mount("data", "/x", Some(sub))]);
        match fx.manager.container_mounts(&pod, &c, &BTreeMap::new()) {
            Err(e @ VolumeError::SubPathEscapes { .. }) => {
                assert!(e.to_string().contains("escapes the volume"), "{e}");
            }
            other => panic!("subPath {sub:?}: expected an escape error, got {other:?}"),
        }
    }
    assert!(!Path::new("/etc/new-dir").exists() && !Path::new("/etc/new").exists());
    // A symlink that stays inside the volume is fine, as in the kubelet.
    let c = container("app", vec![mount("data", "/x", Some("ok/sub"))]);
    let mounts = fx.manager.container_mounts(&pod, &c, &BTreeMap::new())?;
    assert!(volume.join("inside/sub").is_dir());
    assert_eq!(
        fs::metadata(&mounts[0].host_path)?.ino(),
        fs::metadata(volume.join("inside/sub"))?.ino()
    );
    for bad in ["/etc", "../x", "a/../../x"] {
        let c = container("app", vec![mount("data", "/x", Some(bad))]);
        assert!(matches!(
            fx.manager.container_mounts(&pod, &c, &BTreeMap::new()),
            Err(VolumeError::InvalidMount { .. })
        ));
    }
    let mut expr = mount("data", "/x", None);
    expr.sub_path_expr = Some("$(UNSET)".into());
    let c = container("app", vec![expr]);
    assert!(matches!(
        fx.manager.container_mounts(&pod, &c, &BTreeMap::new()),
        Err(VolumeError::InvalidMount { .. })
    ));
    Ok(())
}

#[test]
fn bad_mounts_and_unsupported_volumes() -> TestResult {
    let fx = Fixture::new("pod")?;
    let pod = fx.pod(vec![empty_dir("data", None, None)], vec![]);
    fx.manager.setup(&pod, &NO_OBJECTS)?;
    let c = container("app", vec![mount("ghost", "/x", None)]);
    assert!(matches!(
        fx.manager.container_mounts(&pod, &c, &BTreeMap::new()),
        Err(VolumeError::UnknownVolume { .. })
    ));
    let mut bidi = mount("data", "/x", None);
    bidi.mount_propagation = Some("Bidirectional".into());
    let mut c = container("app", vec![bidi]);
    assert!(matches!(
        fx.manager.container_mounts(&pod, &c, &BTreeMap::new()),
        Err(VolumeError::InvalidMount { .. })
    ));
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let mounts = fx.manager.container_mounts(&pod, &c, &BTreeMap::new())?;
    assert_eq!(
        mounts[0].propagation,
        MountPropagation::PropagationBidirectional as i32
    );

    let cm = Volume {
        name: "cfg".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource::default()),
        ..Default::default()
    };
    let pod = fx.pod(vec![empty_dir("data", None, None), cm], vec![]);
    match fx.manager.setup(&pod, &NO_OBJECTS) {
        Err(e @ VolumeError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cfg") && msg.contains("persistentVolumeClaim"),
                "{msg}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    for name in ["../x", "Data"] {
        let pod = fx.pod(vec![empty_dir(name, None, None)], vec![]);
        assert!(matches!(
            fx.manager.setup(&pod, &NO_OBJECTS),
            Err(VolumeError::InvalidName { .. })
        ));
    }
    let pod = fx.pod(
        vec![empty_dir("a", None, None), empty_dir("a", None, None)],
        vec![],
    );
    assert!(matches!(
        fx.manager.setup(&pod, &NO_OBJECTS),
        Err(VolumeError::DuplicateVolume(_))
    ));
    assert!(fx.manager.teardown("../etc").is_err());
    Ok(())
}
