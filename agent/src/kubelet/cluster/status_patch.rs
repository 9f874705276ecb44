//! The strategic merge patch that takes a pod's status in the API from what was last sent to
//! what the workers compute now: only changed fields, list elements by their merge keys.

use serde_json::{json, Map, Value};

/// Status lists the API server merges by a key (pod status patch strategy), with that key.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("conditions", "type"),
    ("containerStatuses", "name"),
    ("initContainerStatuses", "name"),
    ("ephemeralContainerStatuses", "name"),
    ("podIPs", "ip"),
    ("hostIPs", "ip"),
];

/// Top-level status fields the kubelet owns, so it may clear them; others (the scheduler's
/// nominatedNodeName, a controller's resize) are left alone.
const KUBELET_FIELDS: &[&str] = &[
    "phase",
    "message",
    "reason",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "qosClass",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
];

/// The patch for `pods/<name>/status`, or None when nothing changed. `uid` goes into the
/// patch so the server refuses it for a different pod of the same name (as the kubelet does).
pub fn status_patch(uid: &str, old: &Value, new: &Value) -> Option<Value> {
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut status = Map::new();
    for (key, value) in new {
        match old.get(key) {
            Some(before) if before == value => {}
            Some(before) => match merge_key(key).and_then(|k| list_patch(k, before, value)) {
                Some(Value::Array(items)) if items.is_empty() => {}
                Some(merged) => {
                    status.insert(key.clone(), merged);
                }
                None => {
                    status.insert(key.clone(), value.clone());
                }
            },
            None => {
                status.insert(key.clone(), value.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) && KUBELET_FIELDS.contains(&key.as_str()) {
            status.insert(key.clone(), Value::Null);
        }
    }
    if status.is_empty() {
        return None;
    }
    Some(json!({ "metadata": { "uid": uid }, "status": status }))
}

fn merge_key(field: &str) -> Option<&'static str> {
    MERGE_KEYS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, key)| *key)
}

/// Changed and new elements in full, removed ones as `$patch: delete`; None when either
/// side is not a list of keyed objects (then the whole value is replaced).
fn list_patch(merge_key: &str, old: &Value, new: &Value) -> Option<Value> {
    let (old, new) = (old.as_array()?, new.as_array()?);
    let key_of = |item: &Value| item.get(merge_key).cloned();
    if old.iter().chain(new).any(|item| key_of(item).is_none()) {
        return None;
    }
    let mut patch: Vec<Value> = new
        .iter()
        .filter(|item| !old.contains(item))
        .cloned()
        .collect();
    // Conditions other components own (readiness gates, DisruptionTarget) must stay.
    let deletes = merge_key != "type";
    for item in old.iter().filter(|_| deletes) {
        let key = key_of(item);
        if !new.iter().any(|n| key_of(n) == key) {
            patch.push(json!({ "$patch": "delete", merge_key: key }));
        }
    }
    Some(Value::Array(patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_needs_no_patch() {
        let status =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(status_patch("u1", &status, &status), None);
    }

    #[test]
    fn only_changed_fields_and_conditions_are_sent() {
        let old = json!({
            "phase": "Pending",
            "hostIP": "10.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]
        });
        let new = json!({
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "podIP": "10.244.0.5",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}
            ]
        });
        let patch = status_patch("u1", &old, &new).expect("a patch");
        assert_eq!(
            patch,
            json!({
                "metadata": {"uid": "u1"},
                "status": {
                    "phase": "Running",
                    "podIP": "10.244.0.5",
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            })
        );
    }

    #[test]
    fn removed_list_elements_and_fields_are_deleted() {
        let old = json!({
            "message": "old",
            "containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": true}]
        });
        let new = json!({"containerStatuses": [{"name": "a", "ready": true}]});
        let patch = status_patch("u1", &old, &new).expect("a patch");
        assert_eq!(
            patch["status"],
            json!({
                "message": null,
                "containerStatuses": [{"$patch": "delete", "name": "b"}]
            })
        );
    }

    #[test]
    fn conditions_and_fields_of_other_components_stay() {
        let old = json!({
            "nominatedNodeName": "n1",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "example.com/gate", "status": "True"}]
        });
        let new = json!({"conditions": [{"type": "PodScheduled", "status": "True"}]});
        assert_eq!(status_patch("u1", &old, &new), None);
    }

    #[test]
    fn lists_without_merge_keys_are_replaced_whole() {
        let old = json!({"podIPs": [{"ip": "10.0.0.1"}], "conditions": [{"status": "True"}]});
        let new = json!({"podIPs": [{"ip": "10.0.0.2"}], "conditions": [{"status": "False"}]});
        let patch = status_patch("u1", &old, &new).expect("a patch");
        assert_eq!(
            patch["status"],
            json!({
                "podIPs": [{"ip": "10.0.0.2"}, {"$patch": "delete", "ip": "10.0.0.1"}],
                "conditions": [{"status": "False"}]
            })
        );
    }
}
