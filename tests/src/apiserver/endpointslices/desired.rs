//! The endpoints a Service should have (pure): the pods its selector picks in its namespace, one endpoint
//! per pod and address family, grouped by the ports resolved for that pod (a named target port can map to
//! different numbers on different pods).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::apiserver::services::cidr::IpFamily;

/// The Node label whose value becomes an endpoint's `zone`.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One port of an EndpointSlice: the Service port's name and protocol with the pod's port number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointPort {
    /// The Service port's name ("" when unnamed).
    pub name: String,
    /// The resolved target port on the pod.
    pub port: i64,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The Service port's `appProtocol`.
    pub app_protocol: Option<String>,
}

impl EndpointPort {
    /// The port as it appears in a slice's `ports`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "port": self.port, "protocol": self.protocol});
        if let Some(app) = &self.app_protocol {
            v["appProtocol"] = json!(app);
        }
        v
    }

    /// Reads a slice's `ports` entry.
    pub fn from_json(v: &Value) -> EndpointPort {
        EndpointPort {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            port: v["port"].as_i64().unwrap_or(0),
            protocol: v["protocol"].as_str().unwrap_or("TCP").to_string(),
            app_protocol: v["appProtocol"].as_str().map(str::to_string),
        }
    }
}

/// Which endpoints share a slice: one address type and one set of resolved ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The slice's `addressType`.
    pub family: IpFamily,
    /// The slice's ports, in Service port order.
    pub ports: Vec<EndpointPort>,
}

/// One endpoint: its address (its identity within an address type) and its JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The pod IP of the slice's family.
    pub address: String,
    /// The `endpoints[]` entry.
    pub value: Value,
}

/// Everything a managed Service's slices should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The address types the Service has slices for (its `ipFamilies`).
    pub families: Vec<IpFamily>,
    /// Endpoints by slice group, each group's endpoints ordered by pod name.
    pub groups: BTreeMap<GroupKey, Vec<Endpoint>>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`: the newest pod or Service change behind them.
    pub trigger_time: Option<String>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Service's label selector, when the endpoint slice controller manages it (a non-empty selector and
/// not ExternalName).
pub fn selector(service: &Value) -> Option<&Map<String, Value>> {
    if text(service, "/spec/type") == "ExternalName" {
        return None;
    }
    service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
}

fn selects(selector: &Map<String, Value>, pod: &Value) -> bool {
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    let listed = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["ip"].as_str()?.parse().ok())
                .collect::<Vec<IpAddr>>()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        text(pod, "/status/podIP").parse().into_iter().collect()
    } else {
        listed
    }
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// The pod's port for a Service port: the number, or the named container port with the same protocol.
fn resolve_port(pod: &Value, service_port: &Value) -> Option<i64> {
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => {
            let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
            containers
                .iter()
                .filter_map(|c| c["ports"].as_array())
                .flatten()
                .find(|p| {
                    p["name"] == name.as_str()
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol
                })
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => service_port["port"].as_i64(),
    }
}

fn resolved_ports(service: &Value, pod: &Value) -> Vec<EndpointPort> {
    let ports = service.pointer("/spec/ports").and_then(Value::as_array);
    ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: sp["name"].as_str().unwrap_or_default().to_string(),
                port: resolve_port(pod, sp)?,
                protocol: sp["protocol"].as_str().unwrap_or("TCP").to_string(),
                app_protocol: sp["appProtocol"].as_str().map(str::to_string),
            })
        })
        .collect()
}

fn endpoint(
    service: &Value,
    pod: &Value,
    address: IpAddr,
    zones: &HashMap<String, String>,
) -> Value {
    let publish = service.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
    let pod_ready = ready_condition(pod).is_some_and(|c| c["status"] == "True");
    let terminating = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let serving = publish || pod_ready;
    // A terminating pod is never ready, unless the Service publishes addresses regardless of readiness.
    let ready = publish || (serving && !terminating);
    let mut ep = json!({
        "addresses": [address.to_string()],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": text(pod, "/metadata/namespace"),
                      "name": text(pod, "/metadata/name"), "uid": text(pod, "/metadata/uid")},
    });
    let node = text(pod, "/spec/nodeName");
    if !node.is_empty() {
        ep["nodeName"] = json!(node);
        if let Some(zone) = zones.get(node) {
            ep["zone"] = json!(zone);
            if text(service, "/spec/trafficDistribution") == "PreferClose" {
                ep["hints"] = json!({"forZones": [{"name": zone}]});
            }
        }
    }
    let hostname = text(pod, "/spec/hostname");
    if !hostname.is_empty() && text(pod, "/spec/subdomain") == text(service, "/metadata/name") {
        ep["hostname"] = json!(hostname);
    }
    ep
}

/// When a pod last changed in a way that matters to its endpoint: its readiness transition, else creation.
fn pod_trigger_time(pod: &Value) -> Option<Timestamp> {
    ready_condition(pod)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .or_else(|| {
            pod.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        })
        .and_then(|t| t.parse().ok())
}

/// The endpoints of `service` from `pods` (any pods of its namespace) and node zones (`node name → zone`);
/// None when the controller does not manage the Service.
pub fn desired(
    service: &Value,
    pods: &[Value],
    zones: &HashMap<String, String>,
) -> Option<Desired> {
    let selector = selector(service)?;
    let mut families: Vec<IpFamily> = service
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| IpFamily::parse(f.as_str()?))
                .collect()
        })
        .unwrap_or_default();
    if families.is_empty() {
        families.push(IpFamily::V4);
    }
    let namespace = text(service, "/metadata/namespace");
    let mut selected: Vec<&Value> = pods
        .iter()
        .filter(|p| text(p, "/metadata/namespace") == namespace && selects(selector, p))
        .filter(|p| !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
        .collect();
    selected.sort_by_key(|p| text(p, "/metadata/name"));
    let mut groups: BTreeMap<GroupKey, Vec<Endpoint>> = BTreeMap::new();
    let mut trigger = service
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    for pod in selected {
        let ips = pod_ips(pod);
        if ips.is_empty() {
            continue;
        }
        trigger = trigger.max(pod_trigger_time(pod));
        let ports = resolved_ports(service, pod);
        for family in &families {
            let Some(ip) = ips.iter().find(|ip| IpFamily::of(**ip) == *family) else {
                continue;
            };
            let key = GroupKey {
                family: *family,
                ports: ports.clone(),
            };
            groups.entry(key).or_default().push(Endpoint {
                address: ip.to_string(),
                value: endpoint(service, pod, *ip, zones),
            });
        }
    }
    Some(Desired {
        families,
        groups,
        trigger_time: trigger.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid",
                                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"selector": {"app": "web"}, "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}});
        if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        s
    }

    fn pod(name: &str, ips: &[&str], ready: bool, http_port: i64) -> Value {
        let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"), "labels": {"app": "web"},
                            "creationTimestamp": "2024-01-01T00:00:05Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": http_port, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ips.first().map(|i| i["ip"].clone()).unwrap_or_default(), "podIPs": ips,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2024-01-01T00:01:00Z"}]}})
    }

    fn zones() -> HashMap<String, String> {
        HashMap::from([("n1".to_string(), "zone-a".to_string())])
    }

    #[test]
    fn ready_pods_with_ips_become_endpoints_grouped_by_resolved_ports() {
        let mut other = pod("other", &["10.0.0.9"], true, 80);
        other["metadata"]["labels"]["app"] = json!("db");
        let mut no_ip = pod("pending", &[], false, 8080);
        no_ip["status"].as_object_mut().map(|s| s.remove("podIP"));
        let mut done = pod("done", &["10.0.0.8"], false, 8080);
        done["status"]["phase"] = json!("Succeeded");
        let pods = vec![
            pod("b", &["10.0.0.2"], false, 8080),
            pod("a", &["10.0.0.1"], true, 8080),
            pod("c", &["10.0.0.3"], true, 9090),
            other,
            no_ip,
            done,
        ];
        let d = desired(&service(json!({})), &pods, &zones()).expect("managed");
        assert_eq!(d.families, vec![IpFamily::V4]);
        assert_eq!(d.trigger_time.as_deref(), Some("2024-01-01T00:01:00Z"));
        let groups: Vec<(i64, Vec<&str>)> = d
            .groups
            .iter()
            .map(|(k, eps)| {
                (
                    k.ports[0].port,
                    eps.iter().map(|e| e.address.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (8080, vec!["10.0.0.1", "10.0.0.2"]),
                (9090, vec!["10.0.0.3"])
            ]
        );
        let a = &d.groups.values().next().expect("group")[0].value;
        assert_eq!(
            a["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(a["nodeName"], "n1");
        assert_eq!(a["zone"], "zone-a");
        assert!(a.get("hints").is_none());
        assert_eq!(
            a["targetRef"],
            json!({"kind": "Pod", "namespace": "ns", "name": "a", "uid": "a-uid"})
        );
        let b = &d.groups.values().next().expect("group")[1].value;
        assert_eq!(
            b["conditions"],
            json!({"ready": false, "serving": false, "terminating": false})
        );
    }

    #[test]
    fn conditions_hints_hostnames_and_families() {
        let mut terminating = pod("t", &["10.0.0.1", "fd00::1"], true, 80);
        terminating["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:02:00Z");
        terminating["spec"]["hostname"] = json!("t0");
        terminating["spec"]["subdomain"] = json!("web");
        let svc = service(
            json!({"ipFamilies": ["IPv6", "IPv4"], "trafficDistribution": "PreferClose", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}),
        );
        let d = desired(&svc, std::slice::from_ref(&terminating), &zones()).expect("managed");
        let keys: Vec<IpFamily> = d.groups.keys().map(|k| k.family).collect();
        assert_eq!(keys, vec![IpFamily::V4, IpFamily::V6]);
        let v6 = &d.groups.values().nth(1).expect("v6")[0].value;
        assert_eq!(v6["addresses"], json!(["fd00::1"]));
        assert_eq!(
            v6["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        assert_eq!(v6["hints"], json!({"forZones": [{"name": "zone-a"}]}));
        assert_eq!(v6["hostname"], "t0");
        assert_eq!(d.groups.keys().next().map(|k| k.ports[0].port), Some(8080));
        let publish = service(json!({"publishNotReadyAddresses": true}));
        let d = desired(
            &publish,
            &[terminating, pod("n", &["10.0.0.2"], false, 80)],
            &HashMap::new(),
        )
        .expect("managed");
        let ready: Vec<bool> = d
            .groups
            .values()
            .flatten()
            .map(|e| e.value["conditions"]["ready"] == true)
            .collect();
        assert_eq!(ready, vec![true, true]);
        assert!(desired(&service(json!({"selector": {}})), &[], &zones()).is_none());
        assert!(desired(&service(json!({"type": "ExternalName"})), &[], &zones()).is_none());
    }
}
