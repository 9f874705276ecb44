//! The volume manager: sets up, mounts into containers, refreshes and tears down the volumes
//! of pods under `<pods_dir>/<uid>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{Mount, MountPropagation};
use k8s_openapi::api::core::v1::{Container, Pod, Volume, VolumeMount};

use super::allocatable::NodeAllocatable;
use super::error::VolumeError;
use super::expand::expand_sub_path_expr;
use super::layout::{
    check_dns_label, check_pod_uid, PodDir, CONFIG_MAP_PLUGIN, DOWNWARD_API_PLUGIN,
    EMPTY_DIR_PLUGIN, PROJECTED_PLUGIN, SECRET_PLUGIN,
};
use super::{api_data, atomic_writer, downward_api, empty_dir, host_path, mounts, subpath};
use crate::kubelet::api_objects::PodObjects;

/// Prepares and removes the volumes of pods (emptyDir, hostPath, downwardAPI, and from the
/// API objects given: configMap, secret, projected).
#[derive(Debug, Clone)]
pub struct VolumeManager {
    pods_dir: PathBuf,
    allocatable: NodeAllocatable,
}

/// A pod volume with the source this node can serve.
enum Source<'a> {
    EmptyDir(&'a k8s_openapi::api::core::v1::EmptyDirVolumeSource),
    HostPath(&'a k8s_openapi::api::core::v1::HostPathVolumeSource),
    DownwardApi(&'a k8s_openapi::api::core::v1::DownwardAPIVolumeSource),
    ConfigMap(&'a k8s_openapi::api::core::v1::ConfigMapVolumeSource),
    Secret(&'a k8s_openapi::api::core::v1::SecretVolumeSource),
    Projected(&'a k8s_openapi::api::core::v1::ProjectedVolumeSource),
    /// No source at all: API defaulting makes it an emptyDir.
    DefaultEmptyDir,
}

impl VolumeManager {
    /// A manager for `<kubelet root>/pods`; `allocatable` fills unset limits and sizes tmpfs.
    pub fn new(pods_dir: PathBuf, allocatable: NodeAllocatable) -> Self {
        VolumeManager {
            pods_dir,
            allocatable,
        }
    }

    /// The pods directory this manager works in.
    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// Host path of a pod volume's data, when the volume is one this node serves.
    pub fn volume_path(&self, pod: &Pod, volume: &str) -> Result<PathBuf, VolumeError> {
        let dir = self.pod_dir(pod)?;
        let vol = pod_volumes(pod)
            .iter()
            .find(|v| v.name == volume)
            .ok_or_else(|| VolumeError::InvalidVolume {
                volume: volume.to_string(),
                reason: "not declared by the pod".into(),
            })?;
        Ok(host_side_path(&dir, vol, classify(vol)?))
    }

    /// Prepares every volume of the pod from `objects` (what the pod refers to in the API).
    /// Idempotent: on a running pod it changes nothing but the files of downwardAPI,
    /// configMap, secret and projected volumes, swapped in atomically when their data changed.
    pub fn setup(&self, pod: &Pod, objects: &PodObjects) -> Result<(), VolumeError> {
        self.prepare(pod, objects, false)
    }

    /// Rewrites the downwardAPI, configMap, secret and projected volumes (after the pod's
    /// metadata or a referenced object changed, or a token was renewed).
    pub fn refresh(&self, pod: &Pod, objects: &PodObjects) -> Result<(), VolumeError> {
        self.prepare(pod, objects, true)
    }

    fn prepare(&self, pod: &Pod, objects: &PodObjects, data_only: bool) -> Result<(), VolumeError> {
        let dir = self.pod_dir(pod)?;
        let volumes = pod_volumes(pod);
        let mut seen = BTreeSet::new();
        let mut classified = Vec::with_capacity(volumes.len());
        // Refuse the whole pod before touching the disk if any volume is unusable.
        for vol in volumes {
            check_dns_label("volume name", &vol.name)?;
            if !seen.insert(vol.name.as_str()) {
                return Err(VolumeError::DuplicateVolume(vol.name.clone()));
            }
            classified.push((vol, source_of(vol)?));
        }
        for (vol, source) in classified {
            let name = vol.name.as_str();
            let path = host_side_path(&dir, vol, source_kind(&source));
            match source {
                Source::EmptyDir(_) | Source::DefaultEmptyDir if data_only => {}
                Source::HostPath(_) if data_only => {}
                Source::EmptyDir(ed) => {
                    let medium = empty_dir::parse_medium(name, ed.medium.as_deref())?;
                    let size_limit = ed.size_limit.as_ref().map(|q| q.0.as_str());
                    let size = match medium {
                        empty_dir::Medium::Memory => empty_dir::memory_volume_size(
                            name,
                            pod,
                            size_limit,
                            self.allocatable.memory_bytes,
                        )?,
                        empty_dir::Medium::Disk => 0,
                    };
                    empty_dir::setup(&path, medium, size)?;
                }
                Source::DefaultEmptyDir => empty_dir::setup(&path, empty_dir::Medium::Disk, 0)?,
                Source::HostPath(hp) => host_path::check(name, &hp.path, hp.type_.as_deref())?,
                Source::DownwardApi(da) => {
                    let payload = downward_api::payload(name, pod, da, &self.allocatable)?;
                    self.write_on_tmpfs(pod, name, &path, &payload)?;
                }
                Source::ConfigMap(cm) => {
                    let payload = api_data::config_map(name, cm, objects)?;
                    empty_dir::setup(&path, empty_dir::Medium::Disk, 0)?;
                    atomic_writer::write(name, &path, &payload)?;
                }
                // Secret material never touches the disk.
                Source::Secret(secret) => {
                    let payload = api_data::secret(name, secret, objects)?;
                    self.write_on_tmpfs(pod, name, &path, &payload)?;
                }
                Source::Projected(projected) => {
                    let payload =
                        api_data::projected(name, pod, projected, objects, &self.allocatable)?;
                    self.write_on_tmpfs(pod, name, &path, &payload)?;
                }
            }
        }
        Ok(())
    }

    /// Writes `payload` atomically on the volume's own tmpfs (mounted on first use), sized
    /// like a memory emptyDir of the pod.
    fn write_on_tmpfs(
        &self,
        pod: &Pod,
        name: &str,
        path: &Path,
        payload: &atomic_writer::Payload,
    ) -> Result<(), VolumeError> {
        let size = empty_dir::memory_volume_size(name, pod, None, self.allocatable.memory_bytes)?;
        empty_dir::setup(path, empty_dir::Medium::Memory, size)?;
        atomic_writer::write(name, path, payload)?;
        Ok(())
    }

    /// CRI mounts for one container's volumeMounts: subPath/subPathExpr (expanded from `env`)
    /// resolved safely and bound under `volume-subpaths`, readOnly (always for downwardAPI,
    /// configMap, secret and projected),
    /// mountPropagation translated. The pod's volumes must have been set up.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, VolumeError> {
        let dir = self.pod_dir(pod)?;
        check_dns_label("container name", &container.name)?;
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let volumes = pod_volumes(pod);
        let mut out = Vec::new();
        for (index, vm) in container.volume_mounts.iter().flatten().enumerate() {
            let bad = |reason: String| VolumeError::InvalidMount {
                container: container.name.clone(),
                mount: vm.name.clone(),
                reason,
            };
            let vol = volumes.iter().find(|v| v.name == vm.name).ok_or_else(|| {
                VolumeError::UnknownVolume {
                    container: container.name.clone(),
                    mount: vm.name.clone(),
                }
            })?;
            check_dns_label("volume name", &vol.name)?;
            let kind = classify(vol)?;
            let volume_path = host_side_path(&dir, vol, kind);
            let propagation = translate_propagation(vm).map_err(bad)?;
            if propagation == MountPropagation::PropagationBidirectional && !privileged {
                return Err(bad(
                    "Bidirectional mount propagation is available only to privileged containers"
                        .into(),
                ));
            }
            let readonly = vm.read_only.unwrap_or(false) || kind.api_data();
            let recursive_read_only = match vm.recursive_read_only.as_deref() {
                None | Some("Disabled") | Some("IfPossible") => false,
                Some("Enabled") => {
                    return Err(bad(
                        "recursiveReadOnly Enabled is not supported by this node".into(),
                    ))
                }
                Some(other) => return Err(bad(format!("invalid recursiveReadOnly {other:?}"))),
            };
            let sub_path = sub_path_of(vm, env).map_err(bad)?;
            let host_path = match sub_path {
                Some(sp) => {
                    subpath::check_form(&sp).map_err(bad)?;
                    subpath::prepare(&subpath::SubPath {
                        volume: &vol.name,
                        volume_root: &volume_path,
                        sub_path: &sp,
                        target: dir.subpath_target(&vol.name, &container.name, index),
                    })?
                }
                None => volume_path,
            };
            let container_path = match vm.mount_path.as_str() {
                "" => return Err(bad("mountPath must not be empty".into())),
                p if p.starts_with('/') => p.to_string(),
                p => format!("/{p}"),
            };
            out.push(Mount {
                container_path,
                host_path: host_path.to_string_lossy().into_owned(),
                readonly,
                propagation: propagation as i32,
                recursive_read_only,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Unmounts and removes everything under `pods/<uid>`. Idempotent, and needs nothing but the
    /// disk and the mount table, so it works after a crash.
    pub fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        check_pod_uid(pod_uid)?;
        let dir = PodDir::new(&self.pods_dir, pod_uid)?;
        let root = dir.root();
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(VolumeError::io("inspect", root, e)),
            Ok(_) => {}
        }
        mounts::unmount_all_under(root)?;
        mounts::remove_all_one_filesystem(root)
    }

    /// UIDs that have a `pods/<uid>` directory (to clean orphans after a restart).
    pub fn known_pods(&self) -> Result<Vec<String>, VolumeError> {
        let entries = match fs::read_dir(&self.pods_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VolumeError::io("list", &self.pods_dir, e)),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("list", &self.pods_dir, e))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
                if check_pod_uid(&name).is_ok() {
                    uids.push(name);
                }
            }
        }
        uids.sort();
        Ok(uids)
    }

    fn pod_dir(&self, pod: &Pod) -> Result<PodDir, VolumeError> {
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .ok_or_else(|| VolumeError::MissingUid {
                pod: format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                ),
            })?;
        PodDir::new(&self.pods_dir, uid)
    }
}

/// The kind of a served volume, for paths and read-only rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EmptyDir,
    HostPath,
    DownwardApi,
    ConfigMap,
    Secret,
    Projected,
}

impl Kind {
    /// Volumes written by the kubelet from API data are always mounted read-only.
    fn api_data(self) -> bool {
        matches!(
            self,
            Kind::DownwardApi | Kind::ConfigMap | Kind::Secret | Kind::Projected
        )
    }
}

fn source_kind(s: &Source<'_>) -> Kind {
    match s {
        Source::EmptyDir(_) | Source::DefaultEmptyDir => Kind::EmptyDir,
        Source::HostPath(_) => Kind::HostPath,
        Source::DownwardApi(_) => Kind::DownwardApi,
        Source::ConfigMap(_) => Kind::ConfigMap,
        Source::Secret(_) => Kind::Secret,
        Source::Projected(_) => Kind::Projected,
    }
}

fn pod_volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[])
}

fn host_side_path(dir: &PodDir, vol: &Volume, kind: Kind) -> PathBuf {
    match (kind, vol.host_path.as_ref()) {
        (Kind::HostPath, Some(hp)) => PathBuf::from(&hp.path),
        (Kind::DownwardApi, _) => dir.volume(DOWNWARD_API_PLUGIN, &vol.name),
        (Kind::ConfigMap, _) => dir.volume(CONFIG_MAP_PLUGIN, &vol.name),
        (Kind::Secret, _) => dir.volume(SECRET_PLUGIN, &vol.name),
        (Kind::Projected, _) => dir.volume(PROJECTED_PLUGIN, &vol.name),
        _ => dir.volume(EMPTY_DIR_PLUGIN, &vol.name),
    }
}

/// The one source of a volume; several, or one this node cannot serve, is an error.
fn classify(vol: &Volume) -> Result<Kind, VolumeError> {
    source_of(vol).map(|s| source_kind(&s))
}

fn source_of(vol: &Volume) -> Result<Source<'_>, VolumeError> {
    let unsupported = [
        (
            "awsElasticBlockStore",
            vol.aws_elastic_block_store.is_some(),
        ),
        ("azureDisk", vol.azure_disk.is_some()),
        ("azureFile", vol.azure_file.is_some()),
        ("cephfs", vol.cephfs.is_some()),
        ("cinder", vol.cinder.is_some()),
        ("csi", vol.csi.is_some()),
        ("ephemeral", vol.ephemeral.is_some()),
        ("fc", vol.fc.is_some()),
        ("flexVolume", vol.flex_volume.is_some()),
        ("flocker", vol.flocker.is_some()),
        ("gcePersistentDisk", vol.gce_persistent_disk.is_some()),
        ("gitRepo", vol.git_repo.is_some()),
        ("glusterfs", vol.glusterfs.is_some()),
        ("image", vol.image.is_some()),
        ("iscsi", vol.iscsi.is_some()),
        ("nfs", vol.nfs.is_some()),
        (
            "persistentVolumeClaim",
            vol.persistent_volume_claim.is_some(),
        ),
        ("photonPersistentDisk", vol.photon_persistent_disk.is_some()),
        ("portworxVolume", vol.portworx_volume.is_some()),
        ("quobyte", vol.quobyte.is_some()),
        ("rbd", vol.rbd.is_some()),
        ("scaleIO", vol.scale_io.is_some()),
        ("storageos", vol.storageos.is_some()),
        ("vsphereVolume", vol.vsphere_volume.is_some()),
    ];
    let mut found: Vec<Source<'_>> = Vec::new();
    found.extend(vol.empty_dir.as_ref().map(Source::EmptyDir));
    found.extend(vol.host_path.as_ref().map(Source::HostPath));
    found.extend(vol.downward_api.as_ref().map(Source::DownwardApi));
    found.extend(vol.config_map.as_ref().map(Source::ConfigMap));
    found.extend(vol.secret.as_ref().map(Source::Secret));
    found.extend(vol.projected.as_ref().map(Source::Projected));
    let other: Vec<&'static str> = unsupported
        .iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect();
    if found.len() + other.len() > 1 {
        return Err(VolumeError::InvalidVolume {
            volume: vol.name.clone(),
            reason: "may not specify more than one volume type".into(),
        });
    }
    if let Some(kind) = other.first() {
        return Err(VolumeError::Unsupported {
            volume: vol.name.clone(),
            kind,
        });
    }
    Ok(found.pop().unwrap_or(Source::DefaultEmptyDir))
}

fn translate_propagation(vm: &VolumeMount) -> Result<MountPropagation, String> {
    match vm.mount_propagation.as_deref() {
        None | Some("None") => Ok(MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") => Ok(MountPropagation::PropagationBidirectional),
        Some(other) => Err(format!("invalid MountPropagation mode: {other:?}")),
    }
}

/// The mount's subPath, with subPathExpr expanded; None when it mounts the whole volume.
fn sub_path_of(vm: &VolumeMount, env: &BTreeMap<String, String>) -> Result<Option<String>, String> {
    let plain = vm.sub_path.as_deref().unwrap_or("");
    let expr = vm.sub_path_expr.as_deref().unwrap_or("");
    let sub_path = match (plain.is_empty(), expr.is_empty()) {
        (false, false) => return Err("subPath and subPathExpr are mutually exclusive".into()),
        (false, true) => plain.to_string(),
        (true, false) => expand_sub_path_expr(expr, env)
            .map_err(|missing| format!("missing value for {missing} in subPathExpr {expr:?}"))?,
        (true, true) => return Ok(None),
    };
    Ok(Some(sub_path))
}
