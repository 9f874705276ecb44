//! Discovery documents (legacy, unaggregated form, which client-go falls back to when the response is plain
//! `application/json`): `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`.

use serde_json::{json, Value};

use super::resources::{self, KINDS};

/// The `/version` document (the Kubernetes version this server's API follows).
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "capstan-apiserver",
        "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// The `/api` document.
pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

/// The `/apis` document.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::groups()
        .iter()
        .map(|(g, v)| group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `/apis/<group>` document.
pub fn api_group(name: &str) -> Option<Value> {
    let (g, v) = resources::groups().into_iter().find(|(g, _)| *g == name)?;
    let mut doc = group(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// The APIResourceList of `group/version` ("" group = core), or None when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for k in kinds {
        let mut main = json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": k.verbs()});
        if !k.short_names.is_empty() {
            main["shortNames"] = json!(k.short_names);
        }
        list.push(main);
        for sub in k.subresources() {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "token" => ("TokenRequest", &["create"]),
                "binding" => ("Binding", &["create"]),
                _ => (k.kind, &["get", "patch", "update"]),
            };
            list.push(json!({"name": format!("{}/{sub}", k.plural), "singularName": "", "namespaced": k.namespaced,
                             "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_list_every_kind_and_subresource() {
        let core = resource_list("", "v1").expect("core served");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"serviceaccounts/token")
        );
        assert!(resource_list("apps", "v1").is_none());
        let apis = groups();
        assert!(apis["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "coordination.k8s.io")));
        assert_eq!(
            api_group("events.k8s.io").map(|g| g["preferredVersion"]["version"].clone()),
            Some(json!("v1"))
        );
    }
}
