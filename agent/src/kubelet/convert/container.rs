//! `ContainerConfig` (`generateContainerConfig`): identity, image, command and args with
//! `$(VAR)` expansion, environment, mounts, logs, stdio, resources and security.

use std::collections::HashMap;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig, Mount,
};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::container_env;
use super::error::ConvertError;
use super::expansion::expand;
use super::labels::{container_annotations, container_labels};
use super::resources::container_linux_resources;
use super::security::{container_security_context, verify_run_as_non_root};
use super::{container_path, PodContext};

/// What the pod worker knows about one container start beyond the spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerInputs {
    /// Restarts so far; also the CRI attempt and the log file number.
    pub restart_count: u32,
    /// The pulled image's reference (ID or digest) for CRI; empty: the spec's image.
    pub image_ref: String,
    /// The image's numeric user from ImageStatus, if it has one.
    pub image_uid: Option<i64>,
    /// The image's user name from ImageStatus, if it is not numeric.
    pub image_username: String,
    /// Mounts prepared by the volume manager, used as given.
    pub mounts: Vec<Mount>,
}

/// `<container>/<restart>.log`, relative to the sandbox's log directory.
pub fn container_log_path(container_name: &str, restart_count: u32) -> String {
    format!("{container_name}/{restart_count}.log")
}

/// The container's config for CreateContainer.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    inputs: ContainerInputs,
    ctx: &PodContext,
) -> Result<ContainerConfig, ConvertError> {
    check_container_name(pod, container)?;
    verify_run_as_non_root(pod, container, inputs.image_uid, &inputs.image_username)?;
    let envs = container_env(pod, container, ctx)?;
    let lookup: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand(item, |name| lookup.get(name).map(|v| (*v).to_owned())))
            .collect()
    };
    let spec_image = container.image.clone().unwrap_or_default();
    let image = if inputs.image_ref.is_empty() {
        spec_image.clone()
    } else {
        inputs.image_ref.clone()
    };
    let security = container_security_context(
        pod,
        container,
        inputs.image_uid,
        &inputs.image_username,
        &ctx.node,
    )?;
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.restart_count,
        }),
        image: Some(ImageSpec {
            image,
            user_specified_image: spec_image,
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: envs
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: inputs.mounts,
        labels: container_labels(pod, container),
        annotations: container_annotations(pod, container, inputs.restart_count),
        log_path: container_log_path(&container.name, inputs.restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(container_linux_resources(pod, container, &ctx.node)?),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

/// Container names become log paths: only RFC 1123 labels are accepted.
fn check_container_name(pod: &Pod, container: &Container) -> Result<(), ConvertError> {
    let name = container.name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = name.len() <= 63
        && edge(name.first())
        && edge(name.last())
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConvertError::invalid(
            format!("{}.name", container_path(pod, container)),
            format!("{:?} is not a valid DNS label", container.name),
        ))
    }
}

#[cfg(test)]
mod tests;
