//! kube-apiserver's Service defaulting (`SetDefaults_Service`): type, session affinity, traffic policies,
//! port protocols and target ports; and the status a new Service starts with.

use serde_json::{json, Map, Value};

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Whether traffic from outside the cluster reaches the Service (NodePort, LoadBalancer, or external IPs).
pub fn externally_accessible(spec: &Map<String, Value>) -> bool {
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    matches!(ty, "NodePort" | "LoadBalancer") || (ty == "ClusterIP" && external_ips)
}

/// Applies the defaults to a Service's spec (on every write, as decoding does in kube-apiserver).
pub fn apply(svc: &mut Value) {
    let Some(map) = svc.as_object_mut() else {
        return;
    };
    let spec = map.entry("spec").or_insert(json!({}));
    if !spec.is_object() {
        *spec = json!({});
    }
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let config = spec.entry("sessionAffinityConfig").or_insert(json!({}));
        if let Some(config) = config.as_object_mut() {
            let client = config.entry("clientIP").or_insert(json!({}));
            if let Some(client) = client.as_object_mut() {
                set_default(client, "timeoutSeconds", json!(10800));
            }
        }
    }
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if externally_accessible(spec) {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset {
                if let Some(p) = port.get("port").cloned() {
                    port.insert("targetPort".into(), p);
                }
            }
        }
    }
}

/// The status of a newly created Service.
pub fn initial_status(svc: &mut Value) {
    if let Some(map) = svc.as_object_mut() {
        map.insert("status".into(), json!({"loadBalancer": {}}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_type() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
        let mut np = json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}});
        apply(&mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            np["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        let mut en = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        apply(&mut en);
        assert!(en["spec"].get("internalTrafficPolicy").is_none());
    }
}
