//! JSON patch (RFC 6902), `application/json-patch+json`, via the json-patch crate.

use serde_json::Value;

use crate::apiserver::status::ApiError;

/// Applies the JSON patch document `patch` to `target`; a malformed patch or failed operation is 422 like kube-apiserver.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops)
        .map_err(|e| ApiError::invalid(format!("the JSON patch could not be applied: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ops_apply_in_order_and_a_failed_test_is_refused() {
        let mut node = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/spec/taints/0"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "3"}
        ]);
        apply(&mut node, &patch).expect("patch applies");
        assert_eq!(
            node,
            json!({"metadata": {"labels": {"a": "3", "b": "2"}}, "spec": {"taints": []}})
        );
        let failing = json!([{"op": "test", "path": "/metadata/labels/a", "value": "9"}]);
        assert_eq!(apply(&mut node, &failing).map_err(|e| e.code), Err(422));
        assert_eq!(
            apply(&mut node, &json!({"op": "add"})).map_err(|e| e.code),
            Err(400)
        );
    }
}
