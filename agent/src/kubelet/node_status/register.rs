//! Registration: create the Node, or adopt the one that exists (keeping the labels this
//! agent owns in step; taints are only set at creation, as the kubelet does).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::info::default_labels;
use super::NodeStatusSettings;

/// The annotation the kubelet sets so the attach/detach controller owns volume attachment.
const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// The labels this agent sets and keeps: the defaults plus the configured ones.
pub fn owned_labels(settings: &NodeStatusSettings) -> BTreeMap<String, String> {
    let mut labels = default_labels(&settings.node_name);
    labels.extend(settings.node_labels.clone());
    labels
}

/// The Node as first created.
pub fn initial_node(settings: &NodeStatusSettings, status: NodeStatus) -> Node {
    let taints =
        (!settings.register_with_taints.is_empty()).then(|| settings.register_with_taints.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(settings.node_name.clone()),
            labels: Some(owned_labels(settings)),
            annotations: Some(BTreeMap::from([(
                CONTROLLER_MANAGED_ATTACH_DETACH.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints,
            ..NodeSpec::default()
        }),
        status: Some(status),
    }
}

/// A merge patch setting the owned labels the existing Node lacks or has with another
/// value; `None` when they are all in place. Other labels are left alone.
pub fn label_patch(existing: &Node, owned: &BTreeMap<String, String>) -> Option<serde_json::Value> {
    let current = existing.metadata.labels.clone().unwrap_or_default();
    let missing: BTreeMap<&String, &String> = owned
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .collect();
    (!missing.is_empty()).then(|| json!({ "metadata": { "labels": missing } }))
}

/// One registration attempt: create, or adopt on AlreadyExists; with `registerNode: false`
/// only an existing Node is accepted.
pub async fn try_register(
    api: &Api<Node>,
    settings: &NodeStatusSettings,
    status: NodeStatus,
) -> Result<Node, kube::Error> {
    let name = settings.node_name.as_str();
    if settings.register_node {
        match api
            .create(&PostParams::default(), &initial_node(settings, status))
            .await
        {
            Ok(node) => {
                tracing::info!(node = name, "registered the node");
                return Ok(node);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    let existing = api.get(name).await?;
    match label_patch(&existing, &owned_labels(settings)) {
        Some(patch) => {
            tracing::info!(
                node = name,
                "adopted the existing node, updating its labels"
            );
            api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
        }
        None => {
            tracing::info!(node = name, "adopted the existing node");
            Ok(existing)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Taint;

    use super::super::tests::settings;
    use super::*;

    #[test]
    fn the_initial_node_has_the_labels_taints_and_status() {
        let mut settings = settings();
        settings.node_labels =
            BTreeMap::from([("node.kubernetes.io/pool".to_owned(), "edge".to_owned())]);
        settings.register_with_taints = vec![Taint {
            key: "dedicated".to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        }];
        let node = initial_node(&settings, NodeStatus::default());
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert!(labels.contains_key("kubernetes.io/arch"));
        assert!(labels.contains_key("beta.kubernetes.io/os"));
        assert_eq!(labels["node.kubernetes.io/pool"], "edge");
        assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "dedicated");
        assert!(node.status.is_some());
    }

    #[test]
    fn adopting_patches_only_missing_or_wrong_owned_labels() {
        let settings = settings();
        let owned = owned_labels(&settings);
        let mut existing = initial_node(&settings, NodeStatus::default());
        assert_eq!(label_patch(&existing, &owned), None);
        let labels = existing.metadata.labels.as_mut().unwrap();
        labels.insert("kubernetes.io/os".to_owned(), "windows".to_owned());
        labels.remove("kubernetes.io/hostname");
        labels.insert("team".to_owned(), "a".to_owned());
        let patch = label_patch(&existing, &owned).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux"}}})
        );
    }
}
