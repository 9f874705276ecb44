//! Services as kube-apiserver's service registry handles them: defaults, validation, IP family resolution,
//! and cluster IP / node port allocation from the configured ranges. Allocations are derived from the
//! stored Services (nothing to leak: deleting a Service frees its IPs and ports) and decided under the
//! store's lock, so concurrent creates never share a value.
//!
//! Submodules: [`cidr`] (ranges and families), [`alloc`] (picking free values), [`defaults`], [`validate`]
//! (static checks) and [`families`] (`ipFamilies` / `ipFamilyPolicy` / `clusterIPs`).

pub mod alloc;
pub mod cidr;
pub mod defaults;
pub mod families;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use serde_json::{json, Map, Value};

use super::status::{ApiError, FieldError};
use alloc::{AllocError, Taken};
use cidr::{Cidr, IpFamily};

/// The default service CIDR (kube-apiserver's `--service-cluster-ip-range` in kubeadm clusters).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// The default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// The cluster's service IP ranges (primary first; two of different families make it dual-stack) and
/// node-port range.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRanges {
    cidrs: Vec<Cidr>,
    node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            cidrs: Cidr::parse(DEFAULT_SERVICE_CIDR).into_iter().collect(),
            node_ports: DEFAULT_NODE_PORT_RANGE,
        }
    }
}

impl ServiceRanges {
    /// Parses one or two CIDRs (of different families) and a node-port range.
    pub fn new(cidrs: &[String], node_ports: RangeInclusive<u16>) -> Result<ServiceRanges, String> {
        let parsed = cidrs
            .iter()
            .map(|c| Cidr::parse(c).ok_or_else(|| format!("invalid service CIDR {c:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        match parsed.as_slice() {
            [_] => {}
            [a, b] if a.family() != b.family() => {}
            _ => {
                return Err(format!(
                    "expected one service CIDR, or two of different IP families, got {cidrs:?}"
                ))
            }
        }
        if node_ports.is_empty() {
            return Err(format!("empty node port range {node_ports:?}"));
        }
        Ok(ServiceRanges {
            cidrs: parsed,
            node_ports,
        })
    }

    fn families(&self) -> Vec<IpFamily> {
        self.cidrs.iter().map(Cidr::family).collect()
    }

    fn cidr(&self, family: IpFamily) -> Option<&Cidr> {
        self.cidrs.iter().find(|c| c.family() == family)
    }
}

/// The cluster IPs and node ports held by `services`.
pub fn taken<'a>(services: impl Iterator<Item = &'a Value>) -> Taken {
    let mut taken = Taken::default();
    for svc in services {
        let spec = &svc["spec"];
        if let Some(ips) = spec["clusterIPs"].as_array() {
            taken.ips.extend(
                ips.iter()
                    .filter_map(|ip| ip.as_str()?.parse::<IpAddr>().ok()),
            );
        }
        let ports = spec["ports"].as_array().into_iter().flatten();
        let node_ports = ports
            .map(|p| &p["nodePort"])
            .chain([&spec["healthCheckNodePort"]]);
        taken
            .ports
            .extend(node_ports.filter_map(|p| u16::try_from(p.as_i64()?).ok()));
    }
    taken
}

fn name_of(svc: &Value) -> String {
    svc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn invalid(svc: &Value, errors: Vec<FieldError>) -> ApiError {
    ApiError::invalid_fields("Service", &name_of(svc), errors)
}

fn spec_mut(svc: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    svc.get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("spec must be an object"))
}

fn text<'a>(spec: &'a Map<String, Value>, key: &str) -> &'a str {
    spec.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn service_type(spec: &Map<String, Value>) -> &str {
    spec.get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_node_ports(spec: &Map<String, Value>) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

fn needs_health_check_port(spec: &Map<String, Value>) -> bool {
    service_type(spec) == "LoadBalancer" && text(spec, "externalTrafficPolicy") == "Local"
}

fn node_port_of(port: &Value) -> u16 {
    port.get("nodePort")
        .and_then(Value::as_i64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0)
}

/// Allocates the cluster IPs of a ClusterIP/NodePort/LoadBalancer Service (requested ones checked, the
/// rest picked at random), one per resolved family.
fn allocate_ips(
    ranges: &ServiceRanges,
    svc_name: &str,
    spec: &mut Map<String, Value>,
    taken: &Taken,
) -> Result<(), ApiError> {
    if text(spec, "clusterIP") == "None" {
        spec.insert("clusterIPs".into(), json!(["None"]));
        return Ok(());
    }
    let requested: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let families: Vec<IpFamily> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| IpFamily::parse(f.as_str()?))
                .collect()
        })
        .unwrap_or_default();
    let mut ips = Vec::new();
    for (i, family) in families.iter().enumerate() {
        let cidr = ranges.cidr(*family).ok_or_else(|| {
            ApiError::internal(format!("no service CIDR for {}", family.as_str()))
        })?;
        let ip = match requested.get(i).filter(|ip| !ip.is_empty()) {
            Some(text) => {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid cluster IP {text:?}")))?;
                alloc::this_ip(cidr, ip, taken).map_err(|e| {
                    ApiError::invalid_fields(
                        "Service",
                        svc_name,
                        vec![FieldError::invalid(
                            "spec.clusterIPs",
                            &json!(requested),
                            format!("failed to allocate IP {ip}: {e}"),
                        )],
                    )
                })?;
                ip
            }
            None => alloc::any_ip(cidr, taken)
                .map_err(|e| ApiError::internal(format!("failed to allocate a serviceIP: {e}")))?,
        };
        ips.push(ip.to_string());
    }
    if let Some(first) = ips.first() {
        spec.insert("clusterIP".into(), json!(first));
        spec.insert("clusterIPs".into(), json!(ips));
    }
    Ok(())
}

fn port_error(svc_name: &str, field: String, port: i64, e: AllocError) -> ApiError {
    match e {
        AllocError::Full(msg) => {
            ApiError::internal(format!("failed to allocate a nodePort: {msg}"))
        }
        e => ApiError::invalid_fields(
            "Service",
            svc_name,
            vec![FieldError::invalid(field, &json!(port), e.to_string())],
        ),
    }
}

/// Allocates node ports (ports with the same number share one, as kube-apiserver does) and the health
/// check node port.
fn allocate_ports(
    ranges: &ServiceRanges,
    svc_name: &str,
    spec: &mut Map<String, Value>,
    taken: &Taken,
) -> Result<(), ApiError> {
    let needs = needs_node_ports(spec);
    let needs_hc = needs_health_check_port(spec);
    let mut mine: HashSet<u16> = HashSet::new();
    let mut by_port: HashMap<i64, u16> = HashMap::new();
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    for port in ports.into_iter().flatten() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        let requested = node_port_of(port);
        if requested != 0 {
            by_port.entry(number).or_insert(requested);
        }
    }
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    for (i, port) in ports.into_iter().flatten().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        let requested = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        let chosen = if requested != 0 {
            let p = u16::try_from(requested).unwrap_or(0);
            if !mine.contains(&p) {
                alloc::this_port(&ranges.node_ports, requested, taken).map_err(|e| {
                    port_error(svc_name, format!("spec.ports[{i}].nodePort"), requested, e)
                })?;
            }
            p
        } else if !needs {
            continue;
        } else if let Some(shared) = by_port.get(&number) {
            *shared
        } else {
            alloc::any_port(&ranges.node_ports, taken, &mine)
                .map_err(|e| port_error(svc_name, format!("spec.ports[{i}].nodePort"), 0, e))?
        };
        mine.insert(chosen);
        by_port.insert(number, chosen);
        if let Some(p) = port.as_object_mut() {
            p.insert("nodePort".into(), json!(chosen));
        }
    }
    if needs_hc {
        let requested = spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let hc = if requested != 0 {
            let all = Taken {
                ips: HashSet::new(),
                ports: taken.ports.union(&mine).copied().collect(),
            };
            alloc::this_port(&ranges.node_ports, requested, &all).map_err(|e| {
                port_error(svc_name, "spec.healthCheckNodePort".into(), requested, e)
            })?
        } else {
            alloc::any_port(&ranges.node_ports, taken, &mine)
                .map_err(|e| port_error(svc_name, "spec.healthCheckNodePort".into(), 0, e))?
        };
        spec.insert("healthCheckNodePort".into(), json!(hc));
    }
    Ok(())
}

/// Validation, family resolution and allocation shared by create and update.
fn admit(ranges: &ServiceRanges, svc: &mut Value, taken: &Taken) -> Result<(), ApiError> {
    let errors = validate::validate(svc);
    if !errors.is_empty() {
        return Err(invalid(svc, errors));
    }
    let name = name_of(svc);
    let spec = spec_mut(svc)?;
    if service_type(spec) == "ExternalName" {
        return Ok(());
    }
    families::sync_cluster_ips(spec);
    let errors = families::resolve(spec, &ranges.families());
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields("Service", &name, errors));
    }
    allocate_ips(ranges, &name, spec, taken)?;
    allocate_ports(ranges, &name, spec, taken)
}

/// Defaults, validates and allocates a new Service; `taken` holds the other Services' allocations.
pub fn admit_create(
    ranges: &ServiceRanges,
    svc: &mut Value,
    taken: &Taken,
) -> Result<(), ApiError> {
    defaults::apply(svc);
    defaults::initial_status(svc);
    admit(ranges, svc, taken)
}

/// Fills what an update left out from the old object (cluster IPs, families, node ports by port name,
/// the health check port), as kube-apiserver's `patchAllocatedValues` does.
fn keep_allocations(old: &Map<String, Value>, new: &mut Map<String, Value>) {
    let had_ips = service_type(old) != "ExternalName";
    if had_ips && service_type(new) != "ExternalName" {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let missing = match new.get(key) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            };
            if missing {
                if let Some(v) = old.get(key) {
                    new.insert(key.into(), v.clone());
                }
            }
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let old_ports = old
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let by_name: HashMap<&str, u16> = old_ports
            .iter()
            .map(|p| (p["name"].as_str().unwrap_or_default(), node_port_of(p)))
            .collect();
        let used: HashSet<u16> = new
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(node_port_of).filter(|p| *p != 0).collect())
            .unwrap_or_default();
        for port in new
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if node_port_of(port) != 0 {
                continue;
            }
            let name = port["name"].as_str().unwrap_or_default();
            if let Some(&kept) = by_name.get(name).filter(|p| **p != 0 && !used.contains(p)) {
                if let Some(p) = port.as_object_mut() {
                    p.insert("nodePort".into(), json!(kept));
                }
            }
        }
    }
    if needs_health_check_port(old) && needs_health_check_port(new) {
        let missing = new
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0;
        if let (true, Some(hc)) = (missing, old.get("healthCheckNodePort")) {
            new.insert("healthCheckNodePort".into(), hc.clone());
        }
    }
}

/// Drops what the old type needed and the new one forbids, when the client left it unchanged
/// (kube-apiserver's `dropTypeDependentFields`): node ports, the health check port, the external traffic
/// policy, and cluster IPs on a change to ExternalName.
fn drop_type_dependent(old: &Map<String, Value>, new: &mut Map<String, Value>) {
    let unchanged = |new: &Map<String, Value>, key: &str| new.get(key) == old.get(key);
    if needs_node_ports(old) && !needs_node_ports(new) {
        let old_ports: Vec<u16> = old
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(node_port_of).collect())
            .unwrap_or_default();
        for port in new
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if old_ports.contains(&node_port_of(port)) {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    if needs_health_check_port(old)
        && !needs_health_check_port(new)
        && unchanged(new, "healthCheckNodePort")
    {
        new.remove("healthCheckNodePort");
    }
    if defaults::externally_accessible(old)
        && !defaults::externally_accessible(new)
        && unchanged(new, "externalTrafficPolicy")
    {
        new.remove("externalTrafficPolicy");
    }
    if service_type(old) == "LoadBalancer"
        && service_type(new) != "LoadBalancer"
        && unchanged(new, "allocateLoadBalancerNodePorts")
    {
        new.remove("allocateLoadBalancerNodePorts");
    }
    if service_type(old) != "ExternalName" && service_type(new) == "ExternalName" {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if unchanged(new, key) {
                new.remove(key);
            }
        }
    }
}

/// The primary cluster IP and family may not change (secondary ones may be added or removed).
fn check_immutable(
    name: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Result<(), ApiError> {
    if service_type(old) == "ExternalName" || service_type(new) == "ExternalName" {
        return Ok(());
    }
    let first = |spec: &Map<String, Value>, key: &str| {
        spec.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
    };
    let mut errors = Vec::new();
    if first(old, "clusterIPs").is_some() && first(new, "clusterIPs") != first(old, "clusterIPs") {
        let ips = new.get("clusterIPs").cloned().unwrap_or(json!([]));
        errors.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &ips,
            "may not change once set",
        ));
    }
    if first(old, "ipFamilies").is_some()
        && first(new, "ipFamilies").is_some_and(|f| Some(&f) != first(old, "ipFamilies").as_ref())
    {
        let family = first(new, "ipFamilies").unwrap_or_default();
        errors.push(FieldError::invalid(
            "spec.ipFamilies[0]",
            &family,
            "may not change once set",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields("Service", name, errors))
    }
}

/// Defaults, validates and allocates an update of `old` to `new`: allocations are kept, the primary
/// cluster IP is immutable, and what a type change needs is allocated (what it frees is released).
pub fn admit_update(
    ranges: &ServiceRanges,
    old: &Value,
    new: &mut Value,
    taken: &Taken,
) -> Result<(), ApiError> {
    defaults::apply(new);
    let name = name_of(new);
    let empty = Map::new();
    let old_spec = old.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    let spec = spec_mut(new)?;
    keep_allocations(old_spec, spec);
    drop_type_dependent(old_spec, spec);
    families::sync_cluster_ips(spec);
    check_immutable(&name, old_spec, spec)?;
    admit(ranges, new, taken)
}

#[cfg(test)]
mod tests;
