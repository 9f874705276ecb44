//! The payloads of API-backed volumes, as the kubelet's configmap, secret and projected
//! plugins make them (`MakePayload`): every key, or the listed items with their own paths
//! and modes; a missing object or key is an error unless the source is optional.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeSource, KeyToPath, Pod, ProjectedVolumeSource,
    SecretVolumeSource,
};

use super::allocatable::NodeAllocatable;
use super::atomic_writer::{clean_item_path, FileProjection, Payload};
use super::downward_api;
use super::error::VolumeError;
use crate::kubelet::api_objects::{PodObjects, TokenKey};

/// The API's default file mode for configMap, secret and projected volumes.
const DEFAULT_MODE: i32 = 0o644;
/// The API's default lifetime of a projected serviceAccountToken.
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The files of a configMap volume.
pub(super) fn config_map(
    volume: &str,
    source: &ConfigMapVolumeSource,
    objects: &PodObjects,
) -> Result<Payload, VolumeError> {
    let mode = default_mode(volume, source.default_mode)?;
    let optional = source.optional.unwrap_or(false);
    let mut out = Payload::new();
    let keys = KeySource {
        kind: ObjectKind::ConfigMap,
        name: &source.name,
        items: source.items.as_deref(),
        optional,
    };
    keys.project(volume, mode, objects, &mut out)?;
    Ok(out)
}

/// The files of a secret volume.
pub(super) fn secret(
    volume: &str,
    source: &SecretVolumeSource,
    objects: &PodObjects,
) -> Result<Payload, VolumeError> {
    let name = source
        .secret_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(volume, "secretName is required".into()))?;
    let mode = default_mode(volume, source.default_mode)?;
    let optional = source.optional.unwrap_or(false);
    let mut out = Payload::new();
    let keys = KeySource {
        kind: ObjectKind::Secret,
        name,
        items: source.items.as_deref(),
        optional,
    };
    keys.project(volume, mode, objects, &mut out)?;
    Ok(out)
}

/// The files of a projected volume: its sources merged, paths unique across sources.
pub(super) fn projected(
    volume: &str,
    pod: &Pod,
    source: &ProjectedVolumeSource,
    objects: &PodObjects,
    allocatable: &NodeAllocatable,
) -> Result<Payload, VolumeError> {
    let mode = default_mode(volume, source.default_mode)?;
    let mut out = Payload::new();
    for (i, projection) in source.sources.iter().flatten().enumerate() {
        let mut files = Payload::new();
        let kinds = [
            projection.config_map.is_some(),
            projection.secret.is_some(),
            projection.downward_api.is_some(),
            projection.service_account_token.is_some(),
            projection.cluster_trust_bundle.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(invalid(
                volume,
                format!("sources[{i}] must have exactly one projection"),
            ));
        }
        if let Some(cm) = &projection.config_map {
            let keys = KeySource {
                kind: ObjectKind::ConfigMap,
                name: &cm.name,
                items: cm.items.as_deref(),
                optional: cm.optional.unwrap_or(false),
            };
            keys.project(volume, mode, objects, &mut files)?;
        } else if let Some(secret) = &projection.secret {
            let keys = KeySource {
                kind: ObjectKind::Secret,
                name: &secret.name,
                items: secret.items.as_deref(),
                optional: secret.optional.unwrap_or(false),
            };
            keys.project(volume, mode, objects, &mut files)?;
        } else if let Some(da) = &projection.downward_api {
            let source = DownwardAPIVolumeSource {
                items: da.items.clone(),
                default_mode: Some(mode as i32),
            };
            files = downward_api::payload(volume, pod, &source, allocatable)?;
        } else if let Some(token) = &projection.service_account_token {
            let path = clean(volume, &token.path)?;
            let key = TokenKey {
                audience: token.audience.clone().unwrap_or_default(),
                expiration_seconds: token
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
            };
            let data = objects
                .token(&key)
                .ok_or_else(|| VolumeError::TokenNotIssued {
                    volume: volume.to_string(),
                    audience: key.audience.clone(),
                })?;
            files.insert(
                path,
                FileProjection {
                    data: data.as_bytes().to_vec(),
                    mode,
                },
            );
        } else {
            return Err(invalid(
                volume,
                "clusterTrustBundle projections are not supported by this node".into(),
            ));
        }
        for (path, file) in files {
            if out.insert(path.clone(), file).is_some() {
                return Err(invalid(
                    volume,
                    format!("conflicting duplicate path {path:?}"),
                ));
            }
        }
    }
    Ok(out)
}

/// The two kinds of object whose keys become files.
#[derive(Clone, Copy)]
enum ObjectKind {
    ConfigMap,
    Secret,
}

impl ObjectKind {
    fn label(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "configmap",
            ObjectKind::Secret => "secret",
        }
    }

    /// Key → bytes of the named object; `None` when the pod's objects do not hold it.
    fn data(self, name: &str, objects: &PodObjects) -> Option<BTreeMap<String, Vec<u8>>> {
        match self {
            ObjectKind::ConfigMap => objects.config_map(name).map(|cm| {
                let text = cm.data.iter().flatten();
                let binary = cm.binary_data.iter().flatten();
                text.map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .chain(binary.map(|(k, v)| (k.clone(), v.0.clone())))
                    .collect()
            }),
            ObjectKind::Secret => objects.secret(name).map(|secret| {
                let data = secret.data.iter().flatten();
                data.map(|(k, v)| (k.clone(), v.0.clone())).collect()
            }),
        }
    }
}

/// One configMap or secret source of a volume or projection.
struct KeySource<'a> {
    kind: ObjectKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
}

impl KeySource<'_> {
    /// Every key under its own name, or the listed items (missing keys skipped when optional).
    fn project(
        &self,
        volume: &str,
        mode: u32,
        objects: &PodObjects,
        out: &mut Payload,
    ) -> Result<(), VolumeError> {
        let kind = self.kind.label();
        let Some(data) = self.kind.data(self.name, objects) else {
            return if self.optional {
                Ok(())
            } else {
                Err(not_found(volume, kind, self.name))
            };
        };
        let items = self.items.unwrap_or_default();
        if items.is_empty() {
            for (key, data) in data {
                out.insert(clean(volume, &key)?, FileProjection { data, mode });
            }
            return Ok(());
        }
        for item in items {
            let Some(data) = data.get(&item.key).cloned() else {
                if self.optional {
                    continue;
                }
                return Err(VolumeError::MissingKey {
                    volume: volume.to_string(),
                    kind,
                    name: self.name.to_string(),
                    key: item.key.clone(),
                });
            };
            let mode = match item.mode {
                Some(m) => checked_mode(m).ok_or_else(|| {
                    invalid(
                        volume,
                        format!("item {:?}: mode must be between 0 and 0777", item.path),
                    )
                })?,
                None => mode,
            };
            out.insert(clean(volume, &item.path)?, FileProjection { data, mode });
        }
        Ok(())
    }
}

fn clean(volume: &str, path: &str) -> Result<String, VolumeError> {
    clean_item_path(path).map_err(|reason| VolumeError::InvalidItemPath {
        volume: volume.to_string(),
        path: path.to_string(),
        reason,
    })
}

fn default_mode(volume: &str, mode: Option<i32>) -> Result<u32, VolumeError> {
    checked_mode(mode.unwrap_or(DEFAULT_MODE))
        .ok_or_else(|| invalid(volume, "defaultMode must be between 0 and 0777".into()))
}

fn checked_mode(mode: i32) -> Option<u32> {
    u32::try_from(mode).ok().filter(|m| *m <= 0o777)
}

fn invalid(volume: &str, reason: String) -> VolumeError {
    VolumeError::InvalidVolume {
        volume: volume.to_string(),
        reason,
    }
}

fn not_found(volume: &str, kind: &'static str, name: &str) -> VolumeError {
    VolumeError::ObjectNotFound {
        volume: volume.to_string(),
        kind,
        name: name.to_string(),
    }
}
