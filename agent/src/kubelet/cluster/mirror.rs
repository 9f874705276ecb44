//! Mirror pods: the API's read-only copy of each static pod (annotation
//! `kubernetes.io/config.mirror` = the static pod's config hash, owned by the Node), created
//! when missing, replaced when stale or deleted by a user, removed when orphaned.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::status_sync::StatusTarget;
use crate::kubelet::source::CONFIG_HASH_ANNOTATION;

/// Marks a pod in the API as the mirror of a static pod; the value is the static pod's hash.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A change to make in the API.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorAction {
    /// Create this mirror pod.
    Create(Box<Pod>),
    /// Delete the mirror pod with this identity (grace 0, UID precondition).
    Delete(StatusTarget),
}

/// Where a static pod's status goes, once its mirror exists.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorStatus {
    /// The static pod's UID (its worker).
    pub static_uid: String,
    /// The mirror pod.
    pub target: StatusTarget,
    /// The mirror pod as the API holds it.
    pub api_pod: Pod,
}

/// Whether an API pod is a mirror pod.
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// What to change so every running static pod has exactly one current mirror.
pub fn plan(
    node: &str,
    node_uid: Option<&str>,
    static_pods: &[Pod],
    api_pods: &BTreeMap<String, Pod>,
) -> (Vec<MirrorAction>, Vec<MirrorStatus>) {
    let mirrors: BTreeMap<(String, String), &Pod> = api_pods
        .values()
        .filter(|p| is_mirror(p))
        .map(|p| (full_name(p), p))
        .collect();
    let mut actions = Vec::new();
    let mut statuses = Vec::new();
    let wanted: BTreeMap<(String, String), &Pod> = static_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (full_name(p), p))
        .collect();
    for (name, static_pod) in &wanted {
        let hash = annotation(static_pod, CONFIG_HASH_ANNOTATION).unwrap_or_default();
        match mirrors.get(name) {
            None => {
                if let Some(node_uid) = node_uid {
                    actions.push(MirrorAction::Create(Box::new(mirror_of(
                        static_pod, node, node_uid,
                    ))));
                }
            }
            Some(mirror) => {
                let current = annotation(mirror, CONFIG_MIRROR_ANNOTATION) == Some(hash)
                    && mirror.metadata.deletion_timestamp.is_none();
                match (current, target(mirror)) {
                    (true, Some(target)) => statuses.push(MirrorStatus {
                        static_uid: static_pod.metadata.uid.clone().unwrap_or_default(),
                        target,
                        api_pod: (*mirror).clone(),
                    }),
                    (false, Some(target)) => actions.push(MirrorAction::Delete(target)),
                    (_, None) => {}
                }
            }
        }
    }
    for (name, mirror) in &mirrors {
        if !wanted.contains_key(name) {
            if let Some(target) = target(mirror) {
                actions.push(MirrorAction::Delete(target));
            }
        }
    }
    (actions, statuses)
}

/// The mirror pod of a static pod: same name, labels, annotations and spec, bound to the node.
fn mirror_of(static_pod: &Pod, node: &str, node_uid: &str) -> Pod {
    let mut annotations = static_pod.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations
        .get(CONFIG_HASH_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    annotations.insert(CONFIG_MIRROR_ANNOTATION.to_owned(), hash);
    let mut spec = static_pod.spec.clone().unwrap_or_default();
    spec.node_name = Some(node.to_owned());
    Pod {
        metadata: ObjectMeta {
            name: static_pod.metadata.name.clone(),
            namespace: static_pod.metadata.namespace.clone(),
            labels: static_pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: node.to_owned(),
                uid: node_uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn target(pod: &Pod) -> Option<StatusTarget> {
    Some(StatusTarget {
        namespace: pod.metadata.namespace.clone()?,
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
    })
}

fn full_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn static_pod(name: &str, hash: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "default", "uid": format!("static-{hash}"),
                "labels": {"app": "web"},
                "annotations": {"kubernetes.io/config.hash": hash, "kubernetes.io/config.source": "file"}
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod")
    }

    fn mirror(name: &str, hash: &str, uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "default", "uid": uid,
                "annotations": {"kubernetes.io/config.mirror": hash}
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod")
    }

    fn api(pods: &[Pod]) -> BTreeMap<String, Pod> {
        pods.iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p.clone()))
            .collect()
    }

    #[test]
    fn a_missing_mirror_is_created_owned_by_the_node() {
        let (actions, statuses) = plan(
            "n1",
            Some("node-uid"),
            &[static_pod("web-n1", "h1")],
            &api(&[]),
        );
        assert!(statuses.is_empty());
        let [MirrorAction::Create(pod)] = actions.as_slice() else {
            panic!("expected one create, got {actions:?}");
        };
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations[CONFIG_MIRROR_ANNOTATION], "h1");
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("n1")
        );
        let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );
        assert_eq!(pod.metadata.uid, None);
    }

    #[test]
    fn nothing_is_created_before_the_node_is_registered() {
        let (actions, _) = plan("n1", None, &[static_pod("web-n1", "h1")], &api(&[]));
        assert!(actions.is_empty());
    }

    #[test]
    fn a_current_mirror_receives_the_static_pods_status() {
        let (actions, statuses) = plan(
            "n1",
            Some("node-uid"),
            &[static_pod("web-n1", "h1")],
            &api(&[mirror("web-n1", "h1", "m1")]),
        );
        assert!(actions.is_empty());
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].static_uid, "static-h1");
        assert_eq!(statuses[0].target.uid, "m1");
    }

    #[test]
    fn stale_deleted_and_orphaned_mirrors_are_deleted() {
        let mut deleted = mirror("db-n1", "h2", "m2");
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let (actions, statuses) = plan(
            "n1",
            Some("node-uid"),
            &[static_pod("web-n1", "h1-new"), static_pod("db-n1", "h2")],
            &api(&[
                mirror("web-n1", "h1-old", "m1"),
                deleted,
                mirror("gone-n1", "h3", "m3"),
            ]),
        );
        assert!(statuses.is_empty());
        let mut uids: Vec<String> = actions
            .iter()
            .map(|a| match a {
                MirrorAction::Delete(t) => t.uid.clone(),
                MirrorAction::Create(p) => format!("create {:?}", p.metadata.name),
            })
            .collect();
        uids.sort();
        assert_eq!(uids, ["m1", "m2", "m3"]);
    }
}
