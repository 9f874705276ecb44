//! The labels and annotations the kubelet puts on CRI sandboxes and containers, and reading
//! them back (the agent adopts running pods after a restart from these alone).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, LifecycleHandler, Pod};
use sha2::{Digest, Sha256};

/// Sandbox and container label: the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Sandbox and container label: the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Sandbox and container label: the pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Container label: the container's name in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Container annotation: hash of the container spec it was created from.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Container annotation: the restart count it was created with.
pub const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Container annotation: `terminationMessagePath`.
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Container annotation: `terminationMessagePolicy`.
pub const TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Container annotation: the preStop handler as JSON.
pub const PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Container annotation: the container's ports as JSON.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";
/// Container annotation: the pod's `deletionGracePeriodSeconds`.
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Container annotation: the pod's `terminationGracePeriodSeconds`.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";

/// Default of `terminationMessagePath` (API defaulting).
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Default of `terminationMessagePolicy` (API defaulting).
pub const DEFAULT_TERMINATION_MESSAGE_POLICY: &str = "File";

/// Labels of a pod sandbox: the pod's own labels plus its identity (`newPodLabels`).
pub fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    insert_identity(&mut labels, pod);
    labels
}

/// Annotations of a pod sandbox: the pod's annotations (`newPodAnnotations`).
pub fn sandbox_annotations(pod: &Pod) -> HashMap<String, String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels of a container: pod identity and container name (`newContainerLabels`).
pub fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    insert_identity(&mut labels, pod);
    labels.insert(CONTAINER_NAME_LABEL.to_owned(), container.name.clone());
    labels
}

/// Annotations of a container (`newContainerAnnotations`).
pub fn container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut annotations = HashMap::from([
        (
            CONTAINER_HASH_ANNOTATION.to_owned(),
            container_hash(container),
        ),
        (
            RESTART_COUNT_ANNOTATION.to_owned(),
            restart_count.to_string(),
        ),
        (
            TERMINATION_MESSAGE_PATH_ANNOTATION.to_owned(),
            non_empty(&container.termination_message_path)
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH)
                .to_owned(),
        ),
        (
            TERMINATION_MESSAGE_POLICY_ANNOTATION.to_owned(),
            non_empty(&container.termination_message_policy)
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_POLICY)
                .to_owned(),
        ),
    ]);
    if let Some(seconds) = pod.metadata.deletion_grace_period_seconds {
        annotations.insert(
            POD_DELETION_GRACE_PERIOD_ANNOTATION.to_owned(),
            seconds.to_string(),
        );
    }
    if let Some(seconds) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.to_owned(),
            seconds.to_string(),
        );
    }
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref());
    if let Some(json) = pre_stop.and_then(|h| serde_json::to_string(h).ok()) {
        annotations.insert(PRE_STOP_HANDLER_ANNOTATION.to_owned(), json);
    }
    let ports = container.ports.as_deref().unwrap_or_default();
    if let Some(json) = Some(ports)
        .filter(|p| !p.is_empty())
        .and_then(|p| serde_json::to_string(p).ok())
    {
        annotations.insert(CONTAINER_PORTS_ANNOTATION.to_owned(), json);
    }
    annotations
}

/// Hash of the whole container spec, hex (the kubelet's `HashContainer` hashes only name
/// and image because the API server forbids other changes; static pods can change in place).
pub fn container_hash(container: &Container) -> String {
    // Serialising a k8s-openapi struct cannot fail: it is plain data with string map keys.
    let json = serde_json::to_vec(container).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("{:x}", u64::from_be_bytes(first))
}

/// The pod a sandbox belongs to, read back from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxIdentity {
    /// `metadata.name`.
    pub pod_name: String,
    /// `metadata.namespace`.
    pub pod_namespace: String,
    /// `metadata.uid`.
    pub pod_uid: String,
}

impl SandboxIdentity {
    /// Reads the identity labels; `None` for sandboxes the kubelet did not create.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<SandboxIdentity> {
        Some(SandboxIdentity {
            pod_name: labels.get(POD_NAME_LABEL)?.clone(),
            pod_namespace: labels.get(POD_NAMESPACE_LABEL)?.clone(),
            pod_uid: labels.get(POD_UID_LABEL).filter(|u| !u.is_empty())?.clone(),
        })
    }
}

/// A container's pod and name, read back from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// The pod it belongs to.
    pub pod: SandboxIdentity,
    /// The container's name in the pod spec.
    pub container_name: String,
}

impl ContainerIdentity {
    /// Reads the identity labels; `None` for containers the kubelet did not create.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<ContainerIdentity> {
        Some(ContainerIdentity {
            pod: SandboxIdentity::from_labels(labels)?,
            container_name: labels.get(CONTAINER_NAME_LABEL)?.clone(),
        })
    }
}

/// What a container's annotations record about how it was created.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    /// [`container_hash`] of the spec it was created from (empty if missing).
    pub hash: String,
    /// Restart count it was created with (0 if missing, as the kubelet reads it).
    pub restart_count: u32,
    /// `terminationMessagePath`.
    pub termination_message_path: String,
    /// `terminationMessagePolicy`.
    pub termination_message_policy: String,
    /// The pod's `deletionGracePeriodSeconds` at creation.
    pub pod_deletion_grace_period: Option<i64>,
    /// The pod's `terminationGracePeriodSeconds` at creation.
    pub pod_termination_grace_period: Option<i64>,
    /// The preStop handler, to run it even when the pod spec is gone.
    pub pre_stop: Option<LifecycleHandler>,
    /// The container's ports.
    pub ports: Vec<ContainerPort>,
}

/// An annotation whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container annotation {key}: cannot parse {value:?}")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
}

impl ContainerRecord {
    /// Reads a container's annotations back; missing ones default like the kubelet's reader.
    pub fn from_annotations(
        annotations: &HashMap<String, String>,
    ) -> Result<ContainerRecord, AnnotationError> {
        let text = |key: &str| annotations.get(key).cloned().unwrap_or_default();
        Ok(ContainerRecord {
            hash: text(CONTAINER_HASH_ANNOTATION),
            restart_count: parsed(annotations, RESTART_COUNT_ANNOTATION)?.unwrap_or(0),
            termination_message_path: text(TERMINATION_MESSAGE_PATH_ANNOTATION),
            termination_message_policy: text(TERMINATION_MESSAGE_POLICY_ANNOTATION),
            pod_deletion_grace_period: parsed(annotations, POD_DELETION_GRACE_PERIOD_ANNOTATION)?,
            pod_termination_grace_period: parsed(
                annotations,
                POD_TERMINATION_GRACE_PERIOD_ANNOTATION,
            )?,
            pre_stop: json(annotations, PRE_STOP_HANDLER_ANNOTATION)?,
            ports: json(annotations, CONTAINER_PORTS_ANNOTATION)?.unwrap_or_default(),
        })
    }
}

fn parsed<T: std::str::FromStr>(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<T>, AnnotationError> {
    annotations
        .get(key)
        .map(|v| {
            v.parse().map_err(|_| AnnotationError {
                key,
                value: v.clone(),
            })
        })
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<T>, AnnotationError> {
    annotations
        .get(key)
        .map(|v| {
            serde_json::from_str(v).map_err(|_| AnnotationError {
                key,
                value: v.clone(),
            })
        })
        .transpose()
}

fn insert_identity(labels: &mut HashMap<String, String>, pod: &Pod) {
    let meta = &pod.metadata;
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    labels.insert(POD_NAME_LABEL.to_owned(), field(&meta.name));
    labels.insert(POD_NAMESPACE_LABEL.to_owned(), field(&meta.namespace));
    labels.insert(POD_UID_LABEL.to_owned(), field(&meta.uid));
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
