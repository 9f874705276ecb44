//! Server-side printing (`Accept: ...;as=Table;g=meta.k8s.io`) for pods, nodes, CSRs, Services and
//! EndpointSlices, with kube-apiserver's columns, so `kubectl get pods` shows READY/STATUS/RESTARTS and
//! `kubectl get svc` CLUSTER-IP/PORT(S); other kinds fall back to kubectl's NAME/AGE.

use jiff::Timestamp;
use serde_json::{json, Value};

fn age(obj: &Value) -> String {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let secs = Timestamp::now()
        .as_second()
        .saturating_sub(created.as_second())
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    if let Some(reason) = pod.pointer("/status/reason").and_then(Value::as_str) {
        return reason.into();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in &statuses {
        for state in ["waiting", "terminated"] {
            if let Some(reason) = s
                .pointer(&format!("/state/{state}/reason"))
                .and_then(Value::as_str)
            {
                return reason.into();
            }
        }
    }
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .into()
}

fn pod_row(pod: &Value) -> Vec<Value> {
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let text = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        json!(text("/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod)),
        json!(restarts),
        json!(age(pod)),
        json!(text("/status/podIP")),
        json!(text("/spec/nodeName")),
    ]
}

fn node_row(node: &Value) -> Vec<Value> {
    let conditions = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    let mut status = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let text = |p: &str| {
        node.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        json!(text("/metadata/name")),
        json!(status),
        json!(roles),
        json!(age(node)),
        json!(text("/status/nodeInfo/kubeletVersion")),
    ]
}

fn csr_row(csr: &Value) -> Vec<Value> {
    let text = |p: &str| {
        csr.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string()
    };
    let mut conditions: Vec<String> = csr
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if csr
        .pointer("/status/certificate")
        .is_some_and(|c| c.as_str().is_some_and(|c| !c.is_empty()))
    {
        conditions.push("Issued".into());
    }
    let condition = if conditions.is_empty() {
        "Pending".to_string()
    } else {
        conditions.join(",")
    };
    let duration = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map_or("<none>".to_string(), |s| format!("{}m", s / 60));
    vec![
        json!(text("/metadata/name")),
        json!(age(csr)),
        json!(text("/spec/signerName")),
        json!(text("/spec/username")),
        json!(duration),
        json!(condition),
    ]
}

fn strings<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = &'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `EXTERNAL-IP` as kubectl shows it: external IPs, load-balancer ingress or `<pending>`, the external name.
fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = strings(svc, "/spec/externalIPs").collect();
    let joined = |list: &[&str]| {
        if list.is_empty() {
            "<none>".to_string()
        } else {
            list.join(",")
        }
    };
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some("ExternalName") => svc
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string(),
        Some("LoadBalancer") => {
            let ingress = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array);
            let mut all: Vec<&str> = ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                .collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        _ => joined(&external),
    }
}

fn service_row(svc: &Value) -> Vec<Value> {
    let text = |p: &str| {
        svc.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n != 0) {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    let selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let or_none = |list: Vec<String>| {
        if list.is_empty() {
            "<none>".to_string()
        } else {
            list.join(",")
        }
    };
    vec![
        json!(text("/metadata/name").unwrap_or("<none>")),
        json!(text("/spec/type").unwrap_or("ClusterIP")),
        json!(text("/spec/clusterIP").unwrap_or("<none>")),
        json!(service_external_ip(svc)),
        json!(or_none(ports)),
        json!(age(svc)),
        json!(or_none(selector)),
    ]
}

/// kubectl's short list: at most three entries, then `+ N more...`; `<unset>` when empty.
fn at_most_three(list: Vec<String>) -> String {
    match list.len() {
        0 => "<unset>".to_string(),
        n if n > 3 => format!("{} + {} more...", list[..3].join(","), n - 3),
        _ => list.join(","),
    }
}

fn endpoint_slice_row(slice: &Value) -> Vec<Value> {
    let ports: Vec<String> = slice
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = slice
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| strings(e, "/addresses"))
        .map(str::to_string)
        .collect();
    vec![
        json!(slice
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<none>")),
        json!(slice
            .get("addressType")
            .and_then(Value::as_str)
            .unwrap_or_default()),
        json!(at_most_three(ports)),
        json!(at_most_three(addresses)),
        json!(age(slice)),
    ]
}

/// Prints one object's cells.
type RowFn = fn(&Value) -> Vec<Value>;

/// The Table for `items` of kind key `resource`, or None when kubectl's own fallback is as good.
pub fn table(resource: &str, items: &[Value], rv: u64) -> Option<Value> {
    let (columns, row): (Vec<Value>, RowFn) = match resource {
        "pods" => (
            vec![
                column("Name", "string", 0),
                column("Ready", "string", 0),
                column("Status", "string", 0),
                column("Restarts", "integer", 0),
                column("Age", "string", 0),
                column("IP", "string", 1),
                column("Node", "string", 1),
            ],
            pod_row,
        ),
        "nodes" => (
            vec![
                column("Name", "string", 0),
                column("Status", "string", 0),
                column("Roles", "string", 0),
                column("Age", "string", 0),
                column("Version", "string", 0),
            ],
            node_row,
        ),
        "certificatesigningrequests" => (
            vec![
                column("Name", "string", 0),
                column("Age", "string", 0),
                column("SignerName", "string", 0),
                column("Requestor", "string", 0),
                column("RequestedDuration", "string", 0),
                column("Condition", "string", 0),
            ],
            csr_row,
        ),
        "services" => (
            vec![
                column("Name", "string", 0),
                column("Type", "string", 0),
                column("Cluster-IP", "string", 0),
                column("External-IP", "string", 0),
                column("Port(s)", "string", 0),
                column("Age", "string", 0),
                column("Selector", "string", 1),
            ],
            service_row,
        ),
        "endpointslices" => (
            vec![
                column("Name", "string", 0),
                column("AddressType", "string", 0),
                column("Ports", "string", 0),
                column("Endpoints", "string", 0),
                column("Age", "string", 0),
            ],
            endpoint_slice_row,
        ),
        _ => return None,
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let meta = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_default()});
            json!({"cells": row(obj), "object": meta})
        })
        .collect();
    Some(
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()},
                "columnDefinitions": columns, "rows": rows}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_rows_show_readiness_status_and_restarts() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table("pods", &[pod], 7).expect("pods print");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "1/2",
                "CrashLoopBackOff",
                3,
                age(&t["rows"][0]["object"]),
                "10.0.0.5",
                "n1"
            ])
        );
        assert!(table("configmaps", &[], 1).is_none());
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let t = table("nodes", &[node], 1).expect("nodes print");
        assert_eq!(t["rows"][0]["cells"][1], "Ready");
        assert_eq!(t["rows"][0]["cells"][2], "worker");
    }

    #[test]
    fn service_and_endpoint_slice_rows_show_ips_ports_and_endpoints() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let t = table("services", &[svc], 1).expect("services print");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.96.0.10");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11"}});
        let t = table("services", &[lb], 1).expect("services print");
        assert_eq!(t["rows"][0]["cells"][3], "<pending>");
        let slice = json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": (1..=5).map(|i| json!({"addresses": [format!("10.0.0.{i}")]})).collect::<Vec<_>>()});
        let t = table("endpointslices", &[slice], 1).expect("slices print");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "IPv4");
        assert_eq!(cells[2], "8080");
        assert_eq!(cells[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
        let empty =
            json!({"metadata": {"name": "e"}, "addressType": "IPv4", "ports": [], "endpoints": []});
        let t = table("endpointslices", &[empty], 1).expect("slices print");
        assert_eq!(t["rows"][0]["cells"][2], "<unset>");
    }
}
