use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::kubelet::api_objects::PodObjects;

use super::super::error::Problem;
use super::super::test_support::{ctx, first, node, pod};
use super::*;

fn env_of(container: serde_json::Value) -> Result<Vec<(String, String)>, ConvertError> {
    let p = pod(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "say \"hi\"\n"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "sa", "containers": [container]},
    }));
    container_env(&p, first(&p), &ctx(node()))
}

fn one(value_from: serde_json::Value) -> Result<String, ConvertError> {
    let env = env_of(json!({"name": "c", "env": [{"name": "X", "valueFrom": value_from}]}))?;
    Ok(env.into_iter().next().map(|(_, v)| v).unwrap_or_default())
}

fn field(path: &str) -> Result<String, ConvertError> {
    one(json!({"fieldRef": {"fieldPath": path}}))
}

#[test]
fn values_expand_earlier_variables_only() {
    let env = env_of(json!({"name": "c", "env": [
        {"name": "A", "value": "a"},
        {"name": "B", "value": "$(A)-$(C)-$$(A)"},
        {"name": "C", "value": "c"},
        {"name": "A", "value": "$(A)2"},
        {"name": "EMPTY"},
    ]}));
    let want: Vec<(String, String)> =
        [("A", "a2"), ("B", "a-$(C)-$(A)"), ("C", "c"), ("EMPTY", "")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    assert_eq!(env, Ok(want));
}

#[test]
fn service_variables_are_referable_and_appended() {
    let p = pod(
        json!({"metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "c", "env": [
            {"name": "URL", "value": "http://$(DB_SERVICE_HOST)"},
            {"name": "DB_SERVICE_PORT", "value": "mine"}]}]}}),
    );
    let mut objects = PodObjects::default();
    objects.insert_service(
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "n"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 5432}]}}))
        .unwrap_or_default(),
    );
    let mut context = ctx(node());
    context.objects = Arc::new(objects);
    let env = container_env(&p, first(&p), &context).unwrap_or_default();
    assert_eq!(env[0], ("URL".to_owned(), "http://10.0.0.1".to_owned()));
    assert_eq!(env[1], ("DB_SERVICE_PORT".to_owned(), "mine".to_owned()));
    let rest: BTreeMap<String, String> = env[2..].iter().cloned().collect();
    assert_eq!(
        rest.get("DB_SERVICE_HOST").map(String::as_str),
        Some("10.0.0.1")
    );
    assert_eq!(
        rest.get("DB_PORT").map(String::as_str),
        Some("tcp://10.0.0.1:5432")
    );
    assert!(!rest.contains_key("DB_SERVICE_PORT"));
}

#[test]
fn field_refs() {
    let ok = |path: &str, want: &str| assert_eq!(field(path), Ok(want.to_owned()), "{path}");
    ok("metadata.name", "web");
    ok("metadata.namespace", "shop");
    ok("metadata.uid", "u1");
    ok("metadata.labels['app']", "web");
    ok("metadata.labels['missing']", "");
    ok("metadata.annotations['note']", "say \"hi\"\n");
    ok("metadata.labels", "app=\"web\"\ntier=\"front\"");
    ok("metadata.annotations", "note=\"say \\\"hi\\\"\\n\"");
    ok("spec.nodeName", "node-1");
    ok("spec.serviceAccountName", "sa");
    ok("status.hostIP", "192.168.1.10");
    ok("status.hostIPs", "192.168.1.10,fd00::10");
    ok("status.podIP", "10.0.0.5");
    ok("status.podIPs", "10.0.0.5,fd10::5");
}

#[test]
fn bad_field_refs_name_the_field() {
    let err = field("spec.restartPolicy").err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("spec.containers[c].env[X].valueFrom.fieldRef.fieldPath: unsupported fieldPath: spec.restartPolicy".to_owned())
    );
    assert!(field("metadata.name['x']").is_err());
    assert!(field("").is_err());
    let err = one(json!({"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}})).err();
    assert_eq!(
        err.map(|e| e.field),
        Some("spec.containers[c].env[X].valueFrom.fieldRef.apiVersion".to_owned())
    );
}

fn resource(
    container: serde_json::Value,
    selector: serde_json::Value,
) -> Result<String, ConvertError> {
    let mut c = container;
    c["env"] = json!([{"name": "X", "valueFrom": {"resourceFieldRef": selector}}]);
    env_of(c).map(|e| e.into_iter().next().map(|(_, v)| v).unwrap_or_default())
}

#[test]
fn resource_field_refs_with_divisors_and_node_defaults() {
    let c = json!({"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "100Mi"},
                                             "limits": {"cpu": "1500m", "memory": "1Gi", "hugepages-2Mi": "4Mi"}}});
    let r = |sel: serde_json::Value| resource(c.clone(), sel);
    assert_eq!(r(json!({"resource": "limits.cpu"})), Ok("2".into()));
    assert_eq!(
        r(json!({"resource": "limits.cpu", "divisor": "1m"})),
        Ok("1500".into())
    );
    assert_eq!(r(json!({"resource": "requests.cpu"})), Ok("1".into()));
    assert_eq!(
        r(json!({"resource": "requests.cpu", "divisor": "0"})),
        Ok("1".into())
    );
    assert_eq!(
        r(json!({"resource": "limits.memory", "divisor": "1Mi"})),
        Ok("1024".into())
    );
    assert_eq!(
        r(json!({"resource": "requests.memory", "divisor": "1G"})),
        Ok("1".into())
    );
    assert_eq!(
        r(json!({"resource": "requests.memory"})),
        Ok((100u64 << 20).to_string())
    );
    assert_eq!(
        r(json!({"resource": "limits.hugepages-2Mi", "divisor": "1Mi"})),
        Ok("4".into())
    );
    // Unset limits report node allocatable (4 cpu, 8Gi, 100Gi).
    let bare = json!({"name": "c"});
    assert_eq!(
        resource(bare.clone(), json!({"resource": "limits.cpu"})),
        Ok("4".into())
    );
    assert_eq!(
        resource(
            bare.clone(),
            json!({"resource": "limits.memory", "divisor": "1Gi"})
        ),
        Ok("8".into())
    );
    assert_eq!(
        resource(
            bare.clone(),
            json!({"resource": "limits.ephemeral-storage", "divisor": "1Gi"})
        ),
        Ok("100".into())
    );
    assert_eq!(
        resource(bare, json!({"resource": "requests.memory"})),
        Ok("0".into())
    );
}

#[test]
fn bad_resource_field_refs() {
    let c = json!({"name": "c"});
    for sel in [
        json!({"resource": "limits.gpu"}),
        json!({"resource": "cpu"}),
        json!({"resource": "limits.cpu", "divisor": "2"}),
        json!({"resource": "limits.memory", "divisor": "1m"}),
        json!({"resource": "limits.memory", "divisor": "12X"}),
        json!({"resource": "limits.cpu", "containerName": "nope"}),
    ] {
        assert!(resource(c.clone(), sel.clone()).is_err(), "{sel}");
    }
}

fn objects() -> PodObjects {
    let mut objects = PodObjects::default();
    objects.insert_config_map(
        serde_json::from_value(json!({"metadata": {"name": "cm"},
            "data": {"k": "from-cm", "A": "cm-a", "B": "cm-b", "1bad": "x", "bad=key": "y"}}))
        .unwrap_or_default(),
    );
    objects.insert_secret(
        serde_json::from_value(json!({"metadata": {"name": "s"},
            "data": {"k": "c2VjcmV0", "B": "c2VjLWI="}}))
        .unwrap_or_default(),
    );
    objects
}

fn env_with(
    container: serde_json::Value,
    objects: PodObjects,
) -> Result<Vec<(String, String)>, ConvertError> {
    let p = pod(
        json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
        "spec": {"enableServiceLinks": false, "containers": [container]}}),
    );
    let mut context = ctx(node());
    context.objects = Arc::new(objects);
    container_env(&p, first(&p), &context)
}

#[test]
fn missing_objects_and_keys_fail_unless_optional() {
    let err = one(json!({"configMapKeyRef": {"name": "cm", "key": "k"}})).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(
            "spec.containers[c].env[X].valueFrom.configMapKeyRef: configmap \"cm\" not found"
                .to_owned()
        )
    );
    assert!(matches!(
        one(json!({"secretKeyRef": {"name": "s", "key": "k"}})).map_err(|e| e.problem),
        Err(Problem::Missing(_))
    ));
    let optional = env_of(json!({"name": "c", "env": [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}},
        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": true}}}]}));
    assert_eq!(optional, Ok(vec![]));
    assert!(env_of(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]})).is_err());
    assert_eq!(
        env_of(json!({"name": "c", "envFrom": [{"secretRef": {"name": "s", "optional": true}}]})),
        Ok(vec![])
    );
    let missing_key = env_with(
        json!({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope"}}}]}),
        objects(),
    );
    assert_eq!(
        missing_key.map_err(|e| e.problem),
        Err(Problem::Missing(
            "couldn't find key nope in Secret shop/s".into()
        ))
    );
    let optional_key = env_with(
        json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}}]}),
        objects(),
    );
    assert_eq!(optional_key, Ok(vec![]));
}

#[test]
fn env_overrides_env_from_in_declaration_order() {
    let env = env_with(
        json!({"name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "S_"},
                    {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "A", "value": "env-a"},
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "REF", "value": "$(B)"}
        ]}),
        objects(),
    );
    let env: BTreeMap<String, String> = env.unwrap_or_default().into_iter().collect();
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("A"), Some("env-a"));
    assert_eq!(
        get("B"),
        Some("sec-b"),
        "a later envFrom replaces an earlier one"
    );
    assert_eq!(get("S_k"), Some("secret"));
    assert_eq!(get("S_B"), Some("sec-b"));
    assert_eq!(get("CM"), Some("from-cm"));
    assert_eq!(get("SEC"), Some("secret"));
    assert_eq!(get("REF"), Some("sec-b"));
    assert_eq!(get("1bad"), None);
    assert_eq!(get("bad=key"), None);
}

#[test]
fn invalid_env_from_keys_are_reported_like_the_kubelet() {
    let p = pod(
        json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "envFrom": [
            {"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "9"}]}]}}),
    );
    let messages = invalid_env_from_keys(&p, first(&p), &objects());
    assert_eq!(
        messages,
        [
            "Keys [1bad, bad=key] from the EnvFrom configMap shop/cm were skipped since they are considered invalid environment variable names.",
            "Keys [9B, 9k] from the EnvFrom secret shop/s were skipped since they are considered invalid environment variable names.",
        ]
    );
}
