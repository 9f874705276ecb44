//! kube-apiserver's static Service validation (`ValidateService`): type, ports, policies, affinity and the
//! shape of the cluster IP fields, as field errors with kube-apiserver's paths and wording.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::defaults::externally_accessible;
use crate::apiserver::status::FieldError;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const FAMILIES: &[&str] = &["IPv4", "IPv6"];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// An RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both ends, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// An IANA service name (a named port): at most 15 lower-case alphanumerics or '-', with a letter, no
/// leading, trailing or doubled '-'.
fn iana_svc_name_error(s: &str) -> Option<&'static str> {
    if s.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !s.chars().all(|c| lower_alnum(c) || c == '-') {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if s.contains("--") {
        Some("must not contain consecutive hyphens")
    } else if !s.chars().any(|c| c.is_ascii_lowercase()) {
        Some("must contain at least one letter (a-z)")
    } else if s.starts_with('-') || s.ends_with('-') {
        Some("must not begin or end with a hyphen")
    } else {
        None
    }
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Go's rendering of a duplicated `core.ServicePort` key.
fn service_port_key(protocol: &str, port: i64) -> String {
    format!("core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}")
}

fn validate_port<'a>(
    i: usize,
    port: &'a Map<String, Value>,
    many: bool,
    ty: &str,
    names: &mut HashSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    let path = format!("spec.ports[{i}]");
    match text(port, "name").filter(|n| !n.is_empty()) {
        None if many => errs.push(FieldError::required(format!("{path}.name"), "")),
        Some(name) if !is_dns1123_label(name) => errs.push(FieldError::invalid(
            format!("{path}.name"),
            &json!(name),
            DNS1123_LABEL,
        )),
        Some(name) if !names.insert(name) => {
            errs.push(FieldError::duplicate(format!("{path}.name"), &json!(name)))
        }
        _ => {}
    }
    let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=65535).contains(&number) {
        errs.push(FieldError::invalid(
            format!("{path}.port"),
            &json!(number),
            PORT_RANGE,
        ));
    }
    let protocol = port.get("protocol").cloned().unwrap_or(json!(""));
    if !protocol.as_str().is_some_and(|p| PROTOCOLS.contains(&p)) {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            &protocol,
            PROTOCOLS,
        ));
    }
    match port.get("targetPort") {
        Some(Value::Number(n)) if !n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => errs
            .push(FieldError::invalid(
                format!("{path}.targetPort"),
                &Value::Number(n.clone()),
                PORT_RANGE,
            )),
        Some(Value::String(s)) => {
            if let Some(msg) = iana_svc_name_error(s) {
                errs.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    &json!(s),
                    msg,
                ));
            }
        }
        _ => {}
    }
    let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
    if node_port != 0 && matches!(ty, "ClusterIP" | "ExternalName") {
        errs.push(FieldError::forbidden(
            format!("{path}.nodePort"),
            &format!("may not be used when `type` is '{ty}'"),
        ));
    }
}

fn validate_ports(spec: &Map<String, Value>, ty: &str, headless: bool, errs: &mut Vec<FieldError>) {
    let ports: Vec<&Map<String, Value>> = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_port(i, port, ports.len() > 1, ty, &mut names, errs);
        let protocol = text(port, "protocol").unwrap_or("TCP");
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !keys.insert((protocol, number)) {
            errs.push(FieldError::duplicate_rendered(
                format!("spec.ports[{i}]"),
                &service_port_key(protocol, number),
            ));
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 && !node_ports.insert((protocol, node_port)) {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                &json!(node_port),
            ));
        }
    }
}

fn validate_policies(spec: &Map<String, Value>, ty: &str, errs: &mut Vec<FieldError>) {
    let affinity = spec.get("sessionAffinity").cloned().unwrap_or(json!(""));
    match affinity.as_str() {
        Some("ClientIP") => {
            let timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|config| config.pointer("/clientIP/timeoutSeconds"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if !(1..=86400).contains(&timeout) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    &json!(timeout),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        Some("None") => {
            if spec
                .get("sessionAffinityConfig")
                .is_some_and(|c| !c.is_null())
            {
                errs.push(FieldError::forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        _ => errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            &affinity,
            &["ClientIP", "None"],
        )),
    }
    if let Some(policy) = spec.get("externalTrafficPolicy").filter(|v| !v.is_null()) {
        if !externally_accessible(spec) {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                policy,
                "may only be set for externally-accessible services",
            ));
        } else if !policy
            .as_str()
            .is_some_and(|p| ["Cluster", "Local"].contains(&p))
        {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                policy,
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(policy) = spec.get("internalTrafficPolicy").filter(|v| !v.is_null()) {
        if !policy
            .as_str()
            .is_some_and(|p| ["Cluster", "Local"].contains(&p))
        {
            errs.push(FieldError::not_supported(
                "spec.internalTrafficPolicy",
                policy,
                &["Cluster", "Local"],
            ));
        }
    }
    let hc = spec
        .get("healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let local_lb = ty == "LoadBalancer" && text(spec, "externalTrafficPolicy") == Some("Local");
    if hc != 0 && !local_lb {
        errs.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    if let Some(dist) = spec.get("trafficDistribution").filter(|v| !v.is_null()) {
        if dist.as_str() != Some("PreferClose") {
            errs.push(FieldError::not_supported(
                "spec.trafficDistribution",
                dist,
                &["PreferClose"],
            ));
        }
    }
}

fn validate_ip_fields(spec: &Map<String, Value>, ty: &str, errs: &mut Vec<FieldError>) {
    let cluster_ip = text(spec, "clusterIP").unwrap_or_default();
    let ips: Vec<&str> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default()).collect())
        .unwrap_or_default();
    if ty == "ExternalName" {
        if !cluster_ip.is_empty() || !ips.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        if spec.get("ipFamilyPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                "spec.ipFamilyPolicy",
                "may not be set for ExternalName services",
            ));
        }
        if spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            errs.push(FieldError::forbidden(
                "spec.ipFamilies",
                "may not be set for ExternalName services",
            ));
        }
        let name = text(spec, "externalName")
            .unwrap_or_default()
            .trim_end_matches('.');
        if name.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else if !is_dns1123_subdomain(name) {
            errs.push(FieldError::invalid(
                "spec.externalName",
                &json!(name),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ));
        }
        return;
    }
    if !cluster_ip.is_empty() && ips.first().is_some_and(|first| *first != cluster_ip) {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &json!(ips),
            "must match clusterIP when both are specified",
        ));
    }
    for (i, ip) in ips.iter().enumerate() {
        if *ip == "None" {
            if i > 0 || ips.len() > 1 {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    &json!(ips),
                    "must be a valid IP address or 'None' as the only entry",
                ));
            }
        } else if ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            &json!(ips),
            "may only hold up to 2 values",
        ));
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").filter(|v| !v.is_null()) {
        if !policy.as_str().is_some_and(|p| POLICIES.contains(&p)) {
            errs.push(FieldError::not_supported(
                "spec.ipFamilyPolicy",
                policy,
                POLICIES,
            ));
        }
    }
    let families = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, family) in families.iter().enumerate() {
        if !family.as_str().is_some_and(|f| FAMILIES.contains(&f)) {
            errs.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                family,
                FAMILIES,
            ));
        } else if !seen.insert(family.as_str()) {
            errs.push(FieldError::duplicate(
                format!("spec.ipFamilies[{i}]"),
                family,
            ));
        }
    }
    if families.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.ipFamilies",
            &Value::Array(families.clone()),
            "may specify no more than one IP for each IP family",
        ));
    }
}

/// Every static validation error of a (defaulted) Service, in kube-apiserver's order.
pub fn validate(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !is_dns1035_label(name) {
        errs.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            DNS1035_LABEL,
        ));
    }
    let empty = Map::new();
    let spec = svc.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    let ty_value = spec.get("type").cloned().unwrap_or(json!("ClusterIP"));
    let ty = ty_value.as_str().unwrap_or_default();
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", &ty_value, TYPES));
    }
    let headless = text(spec, "clusterIP") == Some("None");
    validate_ports(spec, ty, headless, &mut errs);
    validate_policies(spec, ty, &mut errs);
    validate_ip_fields(spec, ty, &mut errs);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(svc: Value) -> Vec<String> {
        let mut svc = svc;
        super::super::defaults::apply(&mut svc);
        validate(&svc).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ports_are_checked_like_kube_apiserver() {
        let errs = fields(json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 0},
            {"name": "http", "port": 70000, "protocol": "ICMP"},
            {"port": 443, "targetPort": "Bad_Name"},
            {"name": "again", "port": 443}]}}));
        assert_eq!(
            errs,
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Duplicate value: \"http\"",
                "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Required value",
                "spec.ports[2].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[3]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:443, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]
        );
    }

    #[test]
    fn type_name_policies_and_ip_fields_are_checked() {
        assert_eq!(
            fields(json!({"metadata": {"name": "Web"}, "spec": {"type": "Magic", "ports": [{"port": 80, "nodePort": 30080}]}})),
            vec![
                format!("metadata.name: Invalid value: \"Web\": {DNS1035_LABEL}"),
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string(),
            ]
        );
        assert_eq!(
            fields(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "nodePort": 30080}], "externalTrafficPolicy": "Local",
                "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.6"], "ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "Both"}})),
            vec![
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
                "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.6\"}: must match clusterIP when both are specified",
                "spec.ipFamilyPolicy: Unsupported value: \"Both\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
                "spec.ipFamilies[1]: Duplicate value: \"IPv4\"",
            ]
        );
        assert_eq!(
            fields(json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None"}})),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName"}})),
            vec!["spec.externalName: Required value"]
        );
        assert_eq!(
            fields(
                json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com."}})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(json!({"metadata": {"name": "web"}, "spec": {}})),
            vec!["spec.ports: Required value"]
        );
    }
}
