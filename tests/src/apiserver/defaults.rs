//! The defaults and create-time resets kube-apiserver applies to new objects (pods, namespaces, secrets),
//! so clients see the fields they rely on; Services have their own module, [`super::services`].

use base64::Engine;
use serde_json::{json, Map, Value};

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_string()).or_insert(value);
}

fn container_defaults(container: &mut Value) {
    let Some(c) = container.as_object_mut() else {
        return;
    };
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    // Like the defaulter: `:latest` or no tag (and no digest) pulls Always.
    let last = image.rsplit('/').next().unwrap_or_default();
    let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
    set_default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let res =
        |c: &Value, kind: &str, r: &str| c.pointer(&format!("/resources/{kind}/{r}")).cloned();
    let any = containers.iter().any(|c| {
        ["cpu", "memory"]
            .iter()
            .any(|r| res(c, "requests", r).is_some() || res(c, "limits", r).is_some())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = res(c, "limits", r);
            limit.is_some() && res(c, "requests", r).is_none_or(|req| Some(req) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Pod defaults (restart policy, grace period, DNS policy, service account, container pull policies) and
/// the create-time status (`Pending` with the QoS class).
pub fn pod(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        set_default(spec, "restartPolicy", json!("Always"));
        set_default(spec, "terminationGracePeriodSeconds", json!(30));
        set_default(spec, "dnsPolicy", json!("ClusterFirst"));
        set_default(spec, "schedulerName", json!("default-scheduler"));
        set_default(spec, "securityContext", json!({}));
        set_default(spec, "enableServiceLinks", json!(true));
        set_default(spec, "priority", json!(0));
        let sa = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .cloned()
            .unwrap_or(json!("default"));
        set_default(spec, "serviceAccountName", sa.clone());
        set_default(spec, "serviceAccount", sa);
        for key in ["containers", "initContainers", "ephemeralContainers"] {
            if let Some(Value::Array(list)) = spec.get_mut(key) {
                list.iter_mut().for_each(container_defaults);
            }
        }
    }
    let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
    if let Some(map) = obj.as_object_mut() {
        map.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

/// Namespace status and the `kubernetes.io/metadata.name` label kube-apiserver adds.
pub fn namespace(obj: &mut Value, name: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert(json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(map) = obj.as_object_mut() {
        map.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
        map.insert("status".into(), json!({"phase": "Active"}));
    }
}

/// Secret type default and `stringData` folded into base64 `data`, as the API does on every write.
pub fn secret(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    set_default(map, "type", json!("Opaque"));
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map.entry("data").or_insert(json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in strings {
                let text = v.as_str().unwrap_or_default();
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_defaults_pending_status_and_qos() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx:1.27",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}, "status": {"phase": "Running"}});
        pod(&mut p);
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "Burstable"})
        );
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        let mut g = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        pod(&mut g);
        assert_eq!(g["status"]["qosClass"], "Guaranteed");
        let mut b = json!({"spec": {"containers": [{"name": "a", "image": "x@sha256:00"}]}});
        pod(&mut b);
        assert_eq!(b["status"]["qosClass"], "BestEffort");
        assert_eq!(
            b["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn secrets_fold_string_data() {
        let mut sec = json!({"stringData": {"user": "admin"}, "data": {"x": "eQ=="}});
        secret(&mut sec);
        assert_eq!(
            sec,
            json!({"type": "Opaque", "data": {"x": "eQ==", "user": "YWRtaW4="}})
        );
    }
}
