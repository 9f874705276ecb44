//! Strategic merge patch (`application/strategic-merge-patch+json`): a merge patch whose lists merge by
//! the merge keys of the Kubernetes types, with the `$patch`, `$retainKeys`, `$setElementOrder` and
//! `$deleteFromPrimitiveList` directives kubectl and the kubelet send.

use serde_json::{Map, Value};

use crate::apiserver::status::ApiError;

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListStrategy {
    /// Elements are maps merged by this key.
    MergeKey(&'static str),
    /// Primitive elements merged as a set.
    Set,
    /// The patch's list replaces the original.
    Replace,
}

/// The patch strategy of the list at `path` (map keys joined by '.', list elements add no segment).
fn strategy(resource: &str, path: &str) -> ListStrategy {
    use ListStrategy::*;
    let normalized = path
        .replace("spec.initContainers", "spec.containers")
        .replace("spec.ephemeralContainers", "spec.containers");
    match (resource, normalized.as_str()) {
        (_, "metadata.ownerReferences") => MergeKey("uid"),
        (_, "metadata.finalizers") => Set,
        ("pods", "spec.containers")
        | ("pods", "spec.volumes")
        | ("pods", "spec.imagePullSecrets") => MergeKey("name"),
        ("pods", "spec.containers.env") | ("pods", "spec.containers.resizePolicy") => {
            MergeKey("name")
        }
        ("pods", "spec.containers.ports") => MergeKey("containerPort"),
        ("pods", "spec.containers.volumeMounts") => MergeKey("mountPath"),
        ("pods", "spec.containers.volumeDevices") => MergeKey("devicePath"),
        ("pods", "spec.hostAliases") => MergeKey("ip"),
        ("pods", "status.conditions") => MergeKey("type"),
        ("pods", "status.containerStatuses")
        | ("pods", "status.initContainerStatuses")
        | ("pods", "status.ephemeralContainerStatuses")
        | ("pods", "status.resourceClaimStatuses") => MergeKey("name"),
        ("pods", "status.podIPs") | ("pods", "status.hostIPs") => MergeKey("ip"),
        ("nodes", "status.conditions") | ("nodes", "status.addresses") => MergeKey("type"),
        ("services", "spec.ports") => MergeKey("port"),
        ("services", "status.conditions") => MergeKey("type"),
        ("namespaces", "status.conditions") => MergeKey("type"),
        _ => Replace,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A patch value with every directive removed, as it is stored when nothing exists to merge into.
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|v| {
                    !v.as_object()
                        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| k.starts_with('$')))
                })
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn directive(map: &Map<String, Value>) -> Option<&str> {
    map.get("$patch").and_then(Value::as_str)
}

/// Applies a strategic merge `patch` to `target` (an object of `resource`, by storage key) in place.
pub fn apply(target: &mut Value, patch: &Value, resource: &str) -> Result<(), ApiError> {
    let Value::Object(patch_map) = patch else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    match target {
        Value::Object(target_map) => merge_map(target_map, patch_map, "", resource),
        _ => Ok(()),
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
    resource: &str,
) -> Result<(), ApiError> {
    if directive(patch) == Some("replace") {
        if let Value::Object(replacement) = strip(&Value::Object(patch.clone())) {
            *target = replacement;
        }
        return Ok(());
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(ApiError::bad_request(format!(
                "unknown strategic merge patch directive {key:?}"
            )));
        }
        let child = join(path, key);
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(pm) if directive(pm) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(pm) => match target.get_mut(key) {
                Some(Value::Object(tm)) => merge_map(tm, pm, &child, resource)?,
                _ => {
                    target.insert(key.clone(), strip(value));
                }
            },
            Value::Array(items) => {
                let merged = match strategy(resource, &child) {
                    ListStrategy::MergeKey(merge_key) => {
                        let current = target
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        merge_list(current, items, merge_key, &child, resource)?
                    }
                    ListStrategy::Set => {
                        let mut current = target
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for item in items.iter().map(strip) {
                            if !current.contains(&item) {
                                current.push(item);
                            }
                        }
                        current
                    }
                    ListStrategy::Replace => match strip(value) {
                        Value::Array(list) => list,
                        _ => Vec::new(),
                    },
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    for (key, order) in patch {
        if let (Some(field), Some(order)) =
            (key.strip_prefix("$setElementOrder/"), order.as_array())
        {
            let merge_key = match strategy(resource, &join(path, field)) {
                ListStrategy::MergeKey(k) => Some(k),
                _ => None,
            };
            if let Some(Value::Array(items)) = target.get_mut(field) {
                reorder(items, order, merge_key);
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    path: &str,
    resource: &str,
) -> Result<Vec<Value>, ApiError> {
    if patch.iter().any(|item| {
        item.as_object()
            .is_some_and(|m| directive(m) == Some("replace"))
    }) {
        return match strip(&Value::Array(patch.to_vec())) {
            Value::Array(list) => Ok(list),
            _ => Ok(Vec::new()),
        };
    }
    for item in patch {
        let Value::Object(pm) = item else {
            // Primitive elements in a keyed list: kube-apiserver treats the list as replaced.
            return Ok(patch.iter().map(strip).collect());
        };
        let Some(id) = pm.get(merge_key) else {
            return Err(ApiError::bad_request(format!(
                "map: {item} does not contain declared merge key: {merge_key}"
            )));
        };
        if directive(pm) == Some("delete") {
            current.retain(|e| e.get(merge_key) != Some(id));
            continue;
        }
        match current.iter_mut().find(|e| e.get(merge_key) == Some(id)) {
            Some(Value::Object(existing)) => merge_map(existing, pm, path, resource)?,
            _ => current.push(strip(item)),
        }
    }
    Ok(current)
}

/// Orders `items` as `order` lists them (by merge key for maps); items it does not name keep their relative order at the end.
fn reorder(items: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    let id = |v: &Value| match merge_key {
        Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
        None => v.clone(),
    };
    let wanted: Vec<Value> = order.iter().map(id).collect();
    items.sort_by_key(|item| {
        let item_id = id(item);
        wanted
            .iter()
            .position(|w| *w == item_id)
            .unwrap_or(usize::MAX)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(mut target: Value, patch: Value, resource: &str) -> Value {
        apply(&mut target, &patch, resource).expect("patch applies");
        target
    }

    /// "Update API Objects in Place Using kubectl patch": containers merge by name, tolerations are replaced.
    #[test]
    fn containers_merge_by_name_and_tolerations_are_replaced() {
        let pod = json!({"spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                                  "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]}});
        let out = patched(
            pod,
            json!({"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}],
                            "tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}),
            "pods",
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "patch-demo-ctr", "image": "nginx"}, {"name": "patch-demo-ctr-2", "image": "redis"}])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}])
        );
    }

    /// The kubelet's status patch: conditions by type and container statuses by name, with `$setElementOrder`.
    #[test]
    fn pod_status_conditions_merge_by_type() {
        let pod = json!({"status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0}, {"name": "side", "ready": true}],
            "podIPs": [{"ip": "10.0.0.5"}]}});
        let patch = json!({"status": {"phase": "Running",
            "$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}, {"type": "PodScheduled"}],
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True", "reason": null}],
            "containerStatuses": [{"name": "app", "ready": true}],
            "podIPs": [{"ip": "fd00::5"}]}});
        let out = patched(pod, patch, "pods");
        assert_eq!(out["status"]["phase"], "Running");
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
        assert_eq!(
            out["status"]["containerStatuses"],
            json!([{"name": "app", "ready": true, "restartCount": 0}, {"name": "side", "ready": true}])
        );
        assert_eq!(
            out["status"]["podIPs"],
            json!([{"ip": "10.0.0.5"}, {"ip": "fd00::5"}])
        );
    }

    #[test]
    fn node_addresses_merge_by_type_and_images_are_replaced() {
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
                                     "images": [{"names": ["a"]}, {"names": ["b"]}],
                                     "conditions": [{"type": "Ready", "status": "False"}]}});
        let out = patched(
            node,
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}], "images": [{"names": ["c"]}],
                              "conditions": [{"type": "MemoryPressure", "status": "False"}]}}),
            "nodes",
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
        );
        assert_eq!(out["status"]["images"], json!([{"names": ["c"]}]));
        assert_eq!(
            out["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn delete_replace_and_retain_keys_directives() {
        let pod = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}, {"name": "b"}]}});
        let out = patched(
            pod.clone(),
            json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]}}),
            "pods",
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "Y", "value": "2"}]}])
        );
        let out = patched(
            pod,
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
            "pods",
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "c"}]));
        // The docs' Deployment strategy example: $retainKeys drops rollingUpdate when switching to Recreate.
        let dep = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
        let out = patched(
            dep,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            "deployments",
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let meta = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        let out = patched(
            meta,
            json!({"spec": {"$patch": "replace", "y": 2}, "metadata": {"labels": {"a": null, "b": "2"}}}),
            "pods",
        );
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"y": 2}})
        );
    }

    #[test]
    fn finalizers_are_a_set_and_owner_references_merge_by_uid() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1", "name": "x"}]}});
        let out = patched(
            obj,
            json!({"metadata": {"finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"],
                                "ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "name": "y"}]}}),
            "pods",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "x", "controller": true}, {"uid": "2", "name": "y"}])
        );
    }

    #[test]
    fn malformed_patches_are_refused() {
        let mut pod = json!({"spec": {}});
        assert_eq!(
            apply(&mut pod, &json!([1]), "pods").map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(
            apply(
                &mut pod,
                &json!({"spec": {"containers": [{"image": "x"}]}}),
                "pods"
            )
            .map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(
            apply(&mut pod, &json!({"$bogus": 1}), "pods").map_err(|e| e.code),
            Err(400)
        );
    }
}
