//! The resource fit check (the scheduler's `noderesources.Fits`, which the kubelet runs):
//! the pod's effective requests against allocatable minus what admitted pods request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};

use super::Rejection;
use crate::kubelet::convert::{container_resources, parse_quantity_field, Amount, ConvertError};

/// Requests by resource name.
pub(super) type Requests = BTreeMap<String, Amount>;

/// The pod's effective requests, as `resourcehelper.PodRequests`: the larger of the app
/// containers plus sidecars and each init container (plus the sidecars started before it),
/// plus the pod's overhead. Requests default from limits, as API defaulting makes them.
pub(super) fn pod_requests(pod: &Pod) -> Result<Requests, ConvertError> {
    let spec = pod.spec.as_ref();
    let mut total = Requests::new();
    for container in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        add(&mut total, &container_requests(pod, container)?);
    }
    let mut sidecars = Requests::new();
    let mut init_peak = Requests::new();
    for container in spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
    {
        let requests = container_requests(pod, container)?;
        let while_running = if container.restart_policy.as_deref() == Some("Always") {
            add(&mut total, &requests);
            add(&mut sidecars, &requests);
            sidecars.clone()
        } else {
            let mut with_sidecars = requests;
            add(&mut with_sidecars, &sidecars);
            with_sidecars
        };
        max_into(&mut init_peak, &while_running);
    }
    max_into(&mut total, &init_peak);
    for (name, quantity) in spec.and_then(|s| s.overhead.as_ref()).into_iter().flatten() {
        let amount = parse_quantity_field(&format!("spec.overhead.{name}"), quantity)?;
        add(&mut total, &BTreeMap::from([(name.clone(), amount)]));
    }
    Ok(total)
}

fn container_requests(pod: &Pod, container: &Container) -> Result<Requests, ConvertError> {
    Ok(container_resources(pod, container)?.requests)
}

fn add(into: &mut Requests, other: &Requests) {
    for (name, amount) in other {
        let entry = into.entry(name.clone()).or_default();
        *entry = entry.saturating_add(*amount);
    }
}

fn max_into(into: &mut Requests, other: &Requests) {
    for (name, amount) in other {
        let entry = into.entry(name.clone()).or_default();
        *entry = (*entry).max(*amount);
    }
}

/// The unit a resource is compared in: millicores for CPU, whole units otherwise.
fn scaled(name: &str, amount: Amount) -> i64 {
    if name == "cpu" {
        amount.milli_value()
    } else {
        amount.value()
    }
}

/// An extended resource (a domain other than kubernetes.io): the kubelet ignores requests of
/// ones the node does not list, since they may be cluster-level resources.
fn is_extended(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, _)) => !domain.ends_with("kubernetes.io") && !name.starts_with("requests."),
        None => false,
    }
}

/// Whether `pod` fits next to `active` within the node's allocatable resources.
pub(super) fn fits(pod: &Pod, node: &Node, active: &[&Pod]) -> Result<(), Rejection> {
    let allocatable = node_allocatable(node);
    let used_pods = i64::try_from(active.len()).unwrap_or(i64::MAX);
    let allowed_pods = allocatable.get("pods").map_or(0, |a| a.value());
    if used_pods.saturating_add(1) > allowed_pods {
        return Err(insufficient("pods", 1, used_pods, allowed_pods));
    }
    let requests = pod_requests(pod).map_err(|error| Rejection {
        reason: "UnexpectedAdmissionError".to_owned(),
        message: format!("Failed to admit pod: {error}"),
    })?;
    if requests.values().all(|a| a.is_zero()) {
        return Ok(());
    }
    let mut used = Requests::new();
    for other in active {
        // Admitted pods were valid when admitted; a quantity that no longer parses counts 0.
        if let Ok(requests) = pod_requests(other) {
            add(&mut used, &requests);
        }
    }
    // cpu, memory and ephemeral-storage first, in the scheduler's order, then the rest.
    let mut names: Vec<&str> = ["cpu", "memory", "ephemeral-storage"].into();
    names.extend(
        requests
            .keys()
            .map(String::as_str)
            .filter(|n| !matches!(*n, "cpu" | "memory" | "ephemeral-storage" | "pods")),
    );
    for name in names {
        let Some(request) = requests.get(name).map(|a| scaled(name, *a)) else {
            continue;
        };
        if is_extended(name) && !allocatable.contains_key(name) {
            continue;
        }
        let capacity = allocatable.get(name).map_or(0, |a| scaled(name, *a));
        let in_use = used.get(name).map_or(0, |a| scaled(name, *a));
        let native = matches!(name, "cpu" | "memory" | "ephemeral-storage");
        // The native resources skip a zero request; others compare even zero, as Fits does.
        if (native && request == 0) || request <= capacity.saturating_sub(in_use) {
            continue;
        }
        return Err(insufficient(name, request, in_use, capacity));
    }
    Ok(())
}

fn node_allocatable(node: &Node) -> Requests {
    let list = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    list.into_iter()
        .flatten()
        .filter_map(|(name, quantity)| Some((name.clone(), Amount::parse(&quantity.0).ok()?)))
        .collect()
}

fn insufficient(name: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    Rejection {
        reason: format!("OutOf{name}"),
        message: format!(
            "Node didn't have enough resource: {name}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}
