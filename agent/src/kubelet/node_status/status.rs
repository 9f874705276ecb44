//! The desired `status` of the Node, whether it differs from what the API has (heartbeats
//! aside), and the strategic merge patch that moves it there.

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

use super::conditions::conditions;
use super::pressure::Pressure;
use super::resources::NodeResources;

/// Everything one status computation observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Capacity and allocatable.
    pub resources: NodeResources,
    /// Pressure conditions that hold.
    pub pressure: Pressure,
    /// Runtime readiness (`Err`: the NotReady message).
    pub ready: Result<(), String>,
    /// InternalIP and Hostname.
    pub addresses: Vec<NodeAddress>,
    /// nodeInfo.
    pub info: NodeSystemInfo,
    /// The runtime's images; `None` when listing failed (the previous list is kept).
    pub images: Option<Vec<ContainerImage>>,
    /// The port reported as the kubelet endpoint.
    pub kubelet_port: i32,
}

/// The status to report: `previous` with the observed parts replaced (fields this agent does
/// not own, such as volumesInUse, are kept).
pub fn desired(previous: Option<&NodeStatus>, observed: &Observed, now: &Time) -> NodeStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let before = status.conditions.take().unwrap_or_default();
    status.conditions = Some(conditions(&before, observed.pressure, &observed.ready, now));
    status.capacity = Some(observed.resources.capacity.clone());
    status.allocatable = Some(observed.resources.allocatable.clone());
    status.addresses = Some(observed.addresses.clone());
    status.node_info = Some(observed.info.clone());
    if let Some(images) = &observed.images {
        status.images = Some(images.clone());
    }
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: observed.kubelet_port,
        }),
    });
    status
}

/// The status with every condition's heartbeat blanked: what "changed" compares.
fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut status = status.clone();
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_heartbeat_time = None;
    }
    status
}

/// Whether anything but the heartbeats differs (the kubelet's `nodeStatusHasChanged`).
pub fn changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    without_heartbeats(old) != without_heartbeats(new)
}

/// A strategic merge patch for `nodes/<n>/status` from `old` to `new`: only the fields that
/// differ; map entries that went away are nulled; lists are sent whole (conditions and
/// addresses merge by type on the server).
pub fn patch(old: &NodeStatus, new: &NodeStatus) -> Value {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut out = Map::new();
    if let Value::Object(new) = &new {
        for (key, value) in new {
            let before = old.get(key);
            if before == Some(value) {
                continue;
            }
            let value = match (before, value) {
                (Some(Value::Object(b)), Value::Object(n))
                    if matches!(key.as_str(), "capacity" | "allocatable") =>
                {
                    let mut merged = n.clone();
                    for gone in b.keys().filter(|k| !n.contains_key(*k)) {
                        merged.insert(gone.clone(), Value::Null);
                    }
                    Value::Object(merged)
                }
                _ => value.clone(),
            };
            out.insert(key.clone(), value);
        }
    }
    serde_json::json!({ "status": out })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn observed() -> Observed {
        let map = |cpu: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("pods".to_owned(), Quantity("110".to_owned())),
            ])
        };
        Observed {
            resources: NodeResources {
                capacity: map("4"),
                allocatable: map("3500m"),
            },
            pressure: Pressure::default(),
            ready: Ok(()),
            addresses: vec![NodeAddress {
                type_: "Hostname".to_owned(),
                address: "n1".to_owned(),
            }],
            info: NodeSystemInfo {
                kubelet_version: "v1.33.0".to_owned(),
                ..NodeSystemInfo::default()
            },
            images: Some(Vec::new()),
            kubelet_port: 10250,
        }
    }

    #[test]
    fn only_heartbeats_moving_is_no_change() {
        let first = desired(None, &observed(), &at(100));
        let second = desired(Some(&first), &observed(), &at(110));
        assert_ne!(first, second, "the heartbeat moved");
        assert!(!changed(&first, &second));
        let mut busy = observed();
        busy.ready = Err("runtime down".to_owned());
        let third = desired(Some(&second), &busy, &at(120));
        assert!(changed(&second, &third));
        let mut images = observed();
        images.images = Some(vec![ContainerImage {
            names: Some(vec!["busybox".to_owned()]),
            size_bytes: Some(1),
        }]);
        assert!(changed(&second, &desired(Some(&second), &images, &at(120))));
    }

    #[test]
    fn a_failed_image_listing_keeps_the_previous_images() {
        let mut with = observed();
        with.images = Some(vec![ContainerImage {
            names: Some(vec!["busybox".to_owned()]),
            size_bytes: Some(1),
        }]);
        let first = desired(None, &with, &at(100));
        let mut without = observed();
        without.images = None;
        let second = desired(Some(&first), &without, &at(110));
        assert_eq!(second.images, first.images);
    }

    #[test]
    fn the_patch_carries_only_what_changed_and_nulls_removed_resources() {
        let first = desired(None, &observed(), &at(100));
        let mut grown = observed();
        grown.resources.capacity.remove("pods");
        grown
            .resources
            .capacity
            .insert("hugepages-2Mi".to_owned(), Quantity("0".to_owned()));
        let second = desired(Some(&first), &grown, &at(110));
        let patch = patch(&first, &second);
        let status = patch["status"].as_object().unwrap();
        let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["capacity", "conditions"]);
        assert_eq!(status["capacity"]["pods"], Value::Null);
        assert_eq!(status["capacity"]["hugepages-2Mi"], "0");
        assert_eq!(status["conditions"].as_array().unwrap().len(), 4);
        // From nothing, everything is sent.
        let full = super::patch(&NodeStatus::default(), &first);
        for key in [
            "capacity",
            "allocatable",
            "conditions",
            "addresses",
            "nodeInfo",
            "images",
            "daemonEndpoints",
        ] {
            assert!(
                full["status"].get(key).is_some(),
                "{key} missing from {full}"
            );
        }
    }
}
