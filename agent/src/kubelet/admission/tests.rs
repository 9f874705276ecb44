use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use super::resources::pod_requests;
use super::*;

fn node(extra: Value) -> Node {
    let mut base = json!({
        "metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux", "zone": "a", "gen": "5"}},
        "spec": {},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi", "pods": "3"}}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut base = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn requesting(name: &str, requests: Value) -> Pod {
    pod(
        name,
        json!({"spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}]}}),
    )
}

fn reason(result: Result<(), Rejection>) -> String {
    result.map_or_else(|r| r.reason, |()| "admitted".to_owned())
}

#[test]
fn a_pod_that_fits_is_admitted() {
    let running = requesting("a", json!({"cpu": "500m", "memory": "1Gi"}));
    let new = requesting("b", json!({"cpu": "1", "memory": "1Gi"}));
    assert_eq!(admit(&new, &node(json!({})), &[running]), Ok(()));
}

#[test]
fn cpu_shortage_is_out_of_cpu_with_the_kubelets_message() {
    let running = requesting("a", json!({"cpu": "100m"}));
    let new = requesting("b", json!({"cpu": "3"}));
    let rejection = admit(&new, &node(json!({})), &[running]).unwrap_err();
    assert_eq!(rejection.reason, "OutOfcpu");
    assert_eq!(
        rejection.message,
        "Node didn't have enough resource: cpu, requested: 3000, used: 100, capacity: 2000"
    );
}

#[test]
fn memory_and_ephemeral_storage_shortages_name_the_resource() {
    let new = requesting("b", json!({"memory": "5Gi"}));
    assert_eq!(reason(admit(&new, &node(json!({})), &[])), "OutOfmemory");
    let new = requesting("b", json!({"ephemeral-storage": "11Gi"}));
    let rejection = admit(&new, &node(json!({})), &[]).unwrap_err();
    assert_eq!(rejection.reason, "OutOfephemeral-storage");
    assert!(rejection.message.contains("requested: 11811160064"));
}

#[test]
fn limits_default_requests() {
    let new = pod(
        "b",
        json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "3"}}}]}}),
    );
    assert_eq!(reason(admit(&new, &node(json!({})), &[])), "OutOfcpu");
}

#[test]
fn the_pod_limit_counts_active_pods_only() {
    let node = node(json!({}));
    let active: Vec<Pod> = (0..3).map(|i| pod(&format!("p{i}"), json!({}))).collect();
    let rejection = admit(&pod("new", json!({})), &node, &active).unwrap_err();
    assert_eq!(rejection.reason, "OutOfpods");
    assert_eq!(
        rejection.message,
        "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
    );
    let mut finished = active.clone();
    finished[0].status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
    finished[1].status = serde_json::from_value(json!({"phase": "Failed"})).unwrap();
    assert_eq!(admit(&pod("new", json!({})), &node, &finished), Ok(()));
}

#[test]
fn terminal_pods_hold_no_resources_and_a_pod_does_not_compete_with_itself() {
    let mut done = requesting("a", json!({"cpu": "2"}));
    done.status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
    let new = requesting("b", json!({"cpu": "2"}));
    assert_eq!(admit(&new, &node(json!({})), &[done]), Ok(()));
    assert_eq!(
        admit(&new, &node(json!({})), std::slice::from_ref(&new)),
        Ok(())
    );
}

#[test]
fn init_containers_count_as_their_maximum_not_their_sum() {
    let spec = json!({"spec": {
        "initContainers": [
            {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "1500m"}}},
            {"name": "i2", "image": "x", "resources": {"requests": {"cpu": "1"}}}
        ],
        "containers": [
            {"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "b", "image": "x", "resources": {"requests": {"cpu": "500m"}}}
        ]
    }});
    let requests = pod_requests(&pod("p", spec)).unwrap();
    assert_eq!(requests["cpu"].milli_value(), 1500);
    assert_eq!(requests["memory"].value(), 1 << 30);
}

#[test]
fn sidecars_add_to_the_steady_state_and_to_later_init_containers() {
    let spec = json!({"spec": {
        "initContainers": [
            {"name": "side", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "300m"}}},
            {"name": "init", "image": "x", "resources": {"requests": {"cpu": "1"}}}
        ],
        "containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "500m"}}}],
        "overhead": {"cpu": "50m"}
    }});
    // max(500m + 300m, 1000m + 300m) + 50m overhead.
    let requests = pod_requests(&pod("p", spec)).unwrap();
    assert_eq!(requests["cpu"].milli_value(), 1350);
}

#[test]
fn hugepages_without_allocatable_are_refused_but_unknown_extended_resources_are_ignored() {
    let new = requesting("b", json!({"hugepages-2Mi": "4Mi"}));
    assert_eq!(
        reason(admit(&new, &node(json!({})), &[])),
        "OutOfhugepages-2Mi"
    );
    let new = requesting("b", json!({"example.com/gpu": "1"}));
    assert_eq!(admit(&new, &node(json!({})), &[]), Ok(()));
    let with_gpu = node(json!({"status": {"allocatable": {"example.com/gpu": "1"}}}));
    let new = requesting("b", json!({"example.com/gpu": "2"}));
    assert_eq!(reason(admit(&new, &with_gpu, &[])), "OutOfexample.com/gpu");
}

#[test]
fn malformed_requests_are_an_admission_error() {
    let new = requesting("b", json!({"cpu": "lots"}));
    let rejection = admit(&new, &node(json!({})), &[]).unwrap_err();
    assert_eq!(rejection.reason, "UnexpectedAdmissionError");
    assert!(
        rejection.message.contains("resources.requests.cpu"),
        "{}",
        rejection.message
    );
}

#[test]
fn node_selector_must_match_every_label() {
    let node = node(json!({}));
    let ok = pod("p", json!({"spec": {"nodeSelector": {"zone": "a"}}}));
    assert_eq!(admit(&ok, &node, &[]), Ok(()));
    let bad = pod(
        "p",
        json!({"spec": {"nodeSelector": {"zone": "a", "disk": "ssd"}}}),
    );
    let rejection = admit(&bad, &node, &[]).unwrap_err();
    assert_eq!(rejection.reason, "NodeAffinity");
    assert_eq!(
        rejection.message,
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
}

fn affinity(terms: Value) -> Pod {
    pod(
        "p",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
    )
}

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    json!({"matchExpressions": [{"key": key, "operator": operator, "values": values}]})
}

#[test]
fn required_node_affinity_operators() {
    let node = node(json!({}));
    let check = |terms: Value| admit(&affinity(terms), &node, &[]).is_ok();
    assert!(check(json!([expr("zone", "In", &["b", "a"])])));
    assert!(!check(json!([expr("zone", "In", &["b"])])));
    assert!(check(json!([expr("zone", "NotIn", &["b"])])));
    assert!(check(json!([expr("disk", "NotIn", &["ssd"])])));
    assert!(check(json!([expr("zone", "Exists", &[])])));
    assert!(!check(json!([expr("disk", "Exists", &[])])));
    assert!(check(json!([expr("disk", "DoesNotExist", &[])])));
    assert!(check(json!([expr("gen", "Gt", &["4"])])));
    assert!(!check(json!([expr("gen", "Lt", &["5"])])));
    assert!(!check(json!([expr("zone", "Gt", &["1"])])));
    // Terms are ORed; an invalid term (Exists with values) never matches but others may.
    assert!(check(json!([
        expr("zone", "Exists", &["x"]),
        expr("zone", "In", &["a"])
    ])));
    assert!(!check(json!([expr("zone", "Exists", &["x"])])));
    // No terms, or an empty term, match nothing.
    assert!(!check(json!([])));
    assert!(!check(json!([{}])));
    let field = |op: &str, name: &str| json!([{"matchFields": [{"key": "metadata.name", "operator": op, "values": [name]}]}]);
    assert!(check(field("In", "n1")));
    assert!(!check(field("In", "n2")));
    assert!(check(field("NotIn", "n2")));
}

#[test]
fn a_pod_bound_to_another_node_is_refused() {
    let other = pod("p", json!({"spec": {"nodeName": "n2"}}));
    assert_eq!(reason(admit(&other, &node(json!({})), &[])), "NodeName");
}

#[test]
fn host_port_conflicts_are_node_ports() {
    let port = |ip: &str, port: i32, protocol: &str| {
        json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [
            {"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": protocol}]}]}})
    };
    let node = node(json!({}));
    let running = pod("a", port("", 8080, "TCP"));
    let rejection = admit(
        &pod("b", port("10.0.0.1", 8080, "")),
        &node,
        std::slice::from_ref(&running),
    );
    assert_eq!(reason(rejection), "NodePorts");
    assert_eq!(
        admit(
            &pod("b", port("", 8080, "UDP")),
            &node,
            std::slice::from_ref(&running)
        ),
        Ok(())
    );
    assert_eq!(
        admit(&pod("b", port("", 8081, "TCP")), &node, &[running]),
        Ok(())
    );
    let specific = pod("a", port("10.0.0.1", 8080, "TCP"));
    assert_eq!(
        admit(&pod("b", port("10.0.0.2", 8080, "TCP")), &node, &[specific]),
        Ok(())
    );
}

fn tainted(effect: &str) -> Node {
    node(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": effect}]}}))
}

fn tolerating(toleration: Value) -> Pod {
    pod("p", json!({"spec": {"tolerations": [toleration]}}))
}

#[test]
fn untolerated_no_execute_taints_are_taint_toleration() {
    let node = tainted("NoExecute");
    let rejection = admit(&pod("p", json!({})), &node, &[]).unwrap_err();
    assert_eq!(rejection.reason, "TaintToleration");
    assert_eq!(
        rejection.message,
        "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
    );
    let ok = |t: Value| admit(&tolerating(t), &node, &[]).is_ok();
    assert!(ok(
        json!({"key": "dedicated", "operator": "Equal", "value": "db"})
    ));
    assert!(ok(
        json!({"key": "dedicated", "value": "db", "effect": "NoExecute"})
    ));
    assert!(!ok(
        json!({"key": "dedicated", "operator": "Equal", "value": "web"})
    ));
    assert!(ok(json!({"key": "dedicated", "operator": "Exists"})));
    assert!(ok(json!({"operator": "Exists"})));
    assert!(!ok(
        json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"})
    ));
    assert!(!ok(json!({"key": "other", "operator": "Exists"})));
}

#[test]
fn no_schedule_taints_do_not_reject_a_bound_pod_and_static_pods_ignore_taints() {
    // The kubelet only enforces NoExecute: NoSchedule is the scheduler's business.
    assert_eq!(
        admit(&pod("p", json!({})), &tainted("NoSchedule"), &[]),
        Ok(())
    );
    let static_pod = pod(
        "p",
        json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}),
    );
    assert_eq!(admit(&static_pod, &tainted("NoExecute"), &[]), Ok(()));
}

#[test]
fn os_label_and_os_field_must_be_linux() {
    let node = node(json!({}));
    let windows = pod(
        "p",
        json!({"metadata": {"labels": {"kubernetes.io/os": "windows"}}}),
    );
    assert_eq!(
        reason(admit(&windows, &node, &[])),
        "PodOSSelectorNodeLabelDoesNotMatch"
    );
    let field = pod("p", json!({"spec": {"os": {"name": "windows"}}}));
    assert_eq!(reason(admit(&field, &node, &[])), "PodOSNotSupported");
    let linux = pod(
        "p",
        json!({"metadata": {"labels": {"kubernetes.io/os": "linux"}}, "spec": {"os": {"name": "linux"}}}),
    );
    assert_eq!(admit(&linux, &node, &[]), Ok(()));
}

#[test]
fn resources_are_reported_before_affinity() {
    let pod = pod(
        "p",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "9"}}}]}}),
    );
    assert_eq!(reason(admit(&pod, &node(json!({})), &[])), "OutOfcpu");
}
