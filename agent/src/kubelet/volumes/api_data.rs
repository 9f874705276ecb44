//! The payloads of API-backed volumes, as the kubelet's configmap, secret and projected
//! plugins make them (`MakePayload`): every key, or the listed items with their own paths
//! and modes; a missing object or key is an error unless the source is optional.

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
    config_map_files(
        volume,
        &source.name,
        source.items.as_deref(),
        mode,
        optional,
        objects,
        &mut out,
    )?;
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
    secret_files(
        volume,
        name,
        source.items.as_deref(),
        mode,
        optional,
        objects,
        &mut out,
    )?;
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
            let optional = cm.optional.unwrap_or(false);
            config_map_files(
                volume,
                &cm.name,
                cm.items.as_deref(),
                mode,
                optional,
                objects,
                &mut files,
            )?;
        } else if let Some(secret) = &projection.secret {
            let optional = secret.optional.unwrap_or(false);
            secret_files(
                volume,
                &secret.name,
                secret.items.as_deref(),
                mode,
                optional,
                objects,
                &mut files,
            )?;
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

fn config_map_files(
    volume: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    objects: &PodObjects,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let cm = objects.config_map(name);
    if cm.is_none() && !optional {
        return Err(not_found(volume, "configmap", name));
    }
    let lookup = |key: &str| {
        let cm = cm?;
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
            })
    };
    let keys: Vec<String> = cm
        .into_iter()
        .flat_map(|cm| {
            cm.data
                .iter()
                .flat_map(|d| d.keys())
                .chain(cm.binary_data.iter().flat_map(|d| d.keys()))
        })
        .cloned()
        .collect();
    project(
        volume,
        "configmap",
        name,
        &keys,
        lookup,
        items,
        mode,
        optional,
        out,
    )
}

fn secret_files(
    volume: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    objects: &PodObjects,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let secret = objects.secret(name);
    if secret.is_none() && !optional {
        return Err(not_found(volume, "secret", name));
    }
    let data = secret.and_then(|s| s.data.as_ref());
    let lookup = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
    let keys: Vec<String> = data.iter().flat_map(|d| d.keys()).cloned().collect();
    project(
        volume, "secret", name, &keys, lookup, items, mode, optional, out,
    )
}

/// Every key under its own name, or the listed items (missing keys skipped when optional).
#[allow(clippy::too_many_arguments)]
fn project(
    volume: &str,
    kind: &'static str,
    name: &str,
    keys: &[String],
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let items = items.unwrap_or_default();
    if items.is_empty() {
        for key in keys {
            if let Some(data) = lookup(key) {
                out.insert(clean(volume, key)?, FileProjection { data, mode });
            }
        }
        return Ok(());
    }
    for item in items {
        let Some(data) = lookup(&item.key) else {
            if optional {
                continue;
            }
            return Err(VolumeError::MissingKey {
                volume: volume.to_string(),
                kind,
                name: name.to_string(),
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
