//! Just enough OpenAPI v3 for kubectl: each group/version document declares, per kind, a PATCH operation
//! with the `fieldValidation` query parameter, so kubectl validates on the server (this server accepts the
//! parameter and does not check fields) instead of downloading schemas. No schemas are served.

use serde_json::{json, Map, Value};

use super::resources::{self, KINDS};

const HASH: &str = "capstan-1";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` root: one entry per served group/version.
pub fn root() -> Value {
    let mut paths = Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={HASH}")}),
        );
    }
    json!({"paths": paths})
}

/// The document of `/openapi/v3/<api/v1 | apis/group/version>`, or None when not served.
pub fn group_version(path: &str) -> Option<Value> {
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|k| gv_path(k.group, k.version) == path)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for k in kinds {
        let scope = if k.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let url = format!("/{path}/{scope}{}/{{name}}", k.plural);
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(url, json!({"patch": op.clone(), "put": op}));
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_patch_operations_with_field_validation() {
        let r = root();
        assert!(r["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"].is_string());
        let core = group_version("api/v1").expect("core");
        let op = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert_eq!(op["parameters"][0]["name"], "fieldValidation");
        assert!(group_version("apis/apps/v1").is_none());
    }
}
