//! Pod admission as the kubelet's predicate admit handler does it
//! (`pkg/kubelet/lifecycle/predicate.go`): before a pod bound to this node starts, check it
//! against the Node and the pods already admitted, and reject it with the kubelet's reason
//! and message when it cannot run here.
//!
//! Order (the first failure is the one reported, as the kubelet reports `reasons[0]`):
//! the `kubernetes.io/os` label, `spec.os`, then the scheduler's admission checks —
//! resources (pods count, cpu, memory, ephemeral-storage, other allocatable resources),
//! required node affinity and nodeSelector, nodeName, host ports — then untolerated
//! `NoExecute` taints (not for static pods, which the kubelet never rejects on taints).

use k8s_openapi::api::core::v1::{Node, Pod};

mod affinity;
mod ports;
mod resources;
mod taints;
#[cfg(test)]
mod tests;

/// The OS this agent runs pods for (Go's `runtime.GOOS`).
const NODE_OS: &str = "linux";

/// Label carrying a node's (and optionally a pod's) operating system.
const OS_LABEL: &str = "kubernetes.io/os";

/// Why a pod may not run on this node: the pod's `status.reason` and `status.message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason (`OutOfcpu`, `NodeAffinity`, `TaintToleration`, ...).
    pub reason: String,
    /// Human-readable explanation, worded as the kubelet words it.
    pub message: String,
}

impl Rejection {
    /// A scheduler predicate failure: reason is the predicate's name.
    fn predicate(name: &str, description: &str) -> Rejection {
        Rejection {
            reason: name.to_owned(),
            message: format!("Predicate {name} failed: {description}"),
        }
    }
}

/// Whether `pod` may run on `node` next to `admitted` (the pods already admitted; terminal
/// ones among them are ignored).
pub fn admit(pod: &Pod, node: &Node, admitted: &[Pod]) -> Result<(), Rejection> {
    check_os(pod, node)?;
    let active: Vec<&Pod> = admitted
        .iter()
        .filter(|p| !is_terminal(p) && !same_pod(p, pod))
        .collect();
    resources::fits(pod, node, &active)?;
    if !affinity::matches_required(pod, node) {
        return Err(Rejection::predicate(
            "NodeAffinity",
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    let wanted = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if wanted.is_some_and(|wanted| !wanted.is_empty() && wanted != name) {
        return Err(Rejection::predicate(
            "NodeName",
            "node(s) didn't match the requested node name",
        ));
    }
    if let Some(conflict) = ports::conflict(pod, &active) {
        tracing::debug!(port = %conflict, "host port already in use");
        return Err(Rejection::predicate(
            "NodePorts",
            "node(s) didn't have free ports for the requested pod ports",
        ));
    }
    if !is_static(pod) && taints::untolerated_no_execute(pod, node).is_some() {
        return Err(Rejection::predicate(
            "TaintToleration",
            "node(s) had taints that the pod didn't tolerate",
        ));
    }
    Ok(())
}

/// The OS checks that run before the others (preemption cannot help them).
fn check_os(pod: &Pod, node: &Node) -> Result<(), Rejection> {
    let node_os = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OS_LABEL))
        .map(String::as_str)
        .filter(|os| *os == NODE_OS)
        // A missing or wrong node label is treated as the real OS, as the kubelet does.
        .unwrap_or(NODE_OS);
    let pod_os = pod.metadata.labels.as_ref().and_then(|l| l.get(OS_LABEL));
    if pod_os.is_some_and(|os| os != node_os) {
        return Err(Rejection {
            reason: "PodOSSelectorNodeLabelDoesNotMatch".to_owned(),
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                .to_owned(),
        });
    }
    let field = pod.spec.as_ref().and_then(|s| s.os.as_ref());
    if field.is_some_and(|os| os.name != NODE_OS) {
        return Err(Rejection {
            reason: "PodOSNotSupported".to_owned(),
            message: "Failed to admit pod as the OS field doesn't match node OS".to_owned(),
        });
    }
    Ok(())
}

/// Succeeded or Failed: such pods hold no resources.
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The same pod seen again (an update): it must not compete with itself.
fn same_pod(a: &Pod, b: &Pod) -> bool {
    match (a.metadata.uid.as_deref(), b.metadata.uid.as_deref()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A pod from a file or URL rather than the API server.
fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::kubelet::source::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|source| source != "api")
}
