//! Taints and tolerations (component-helpers' `FindMatchingUntoleratedTaint` with the
//! kubelet's filter: only `NoExecute` taints keep a pod off a node it is already bound to).

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

/// The first `NoExecute` taint none of the pod's tolerations tolerates.
pub(super) fn untolerated_no_execute<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// `Toleration.ToleratesTaint`: an empty effect matches every effect, an empty key with
/// `Exists` every key; `Equal` (or no operator) compares values, `Exists` ignores them.
pub(super) fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}
