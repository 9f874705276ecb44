//! IP family resolution (kube-apiserver's `initIPFamilyFields`): `ipFamilies`, `ipFamilyPolicy` and
//! `clusterIPs` made consistent with each other and with the families the cluster serves.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::cidr::IpFamily;
use crate::apiserver::status::FieldError;

fn other(family: IpFamily) -> IpFamily {
    match family {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

fn strings(spec: &Map<String, Value>, key: &str) -> Vec<String> {
    spec.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn families_of(spec: &Map<String, Value>) -> Vec<IpFamily> {
    strings(spec, "ipFamilies")
        .iter()
        .filter_map(|f| IpFamily::parse(f))
        .collect()
}

fn store(spec: &mut Map<String, Value>, families: &[IpFamily], policy: &str) {
    let names: Vec<&str> = families.iter().map(|f| f.as_str()).collect();
    spec.insert("ipFamilies".into(), json!(names));
    spec.insert("ipFamilyPolicy".into(), json!(policy));
}

/// Makes `clusterIP` and `clusterIPs` agree (either may be given alone).
pub fn sync_cluster_ips(spec: &mut Map<String, Value>) {
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ips = strings(spec, "clusterIPs");
    match (ip.is_empty(), ips.first()) {
        (false, None) => {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        (true, Some(first)) => {
            spec.insert("clusterIP".into(), json!(first));
        }
        _ => {}
    }
}

/// Resolves the family fields of a ClusterIP/NodePort/LoadBalancer Service's `spec` against the cluster's
/// `configured` families (primary first); returns the field errors kube-apiserver reports.
pub fn resolve(spec: &mut Map<String, Value>, configured: &[IpFamily]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(&primary) = configured.first() else {
        return vec![FieldError::invalid(
            "spec.ipFamilies",
            &json!([]),
            "no service CIDR is configured",
        )];
    };
    let ips = strings(spec, "clusterIPs");
    let mut families = families_of(spec);
    for (i, ip) in ips.iter().enumerate() {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            break;
        };
        let family = IpFamily::of(addr);
        match families.get(i) {
            Some(&expected) if expected != family => errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(ips),
                format!(
                    "expected an {} value as indicated by `ipFamilies[{i}]`",
                    expected.as_str()
                ),
            )),
            Some(_) => {}
            None if !configured.contains(&family) => errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(ips),
                format!("{} is not configured on this cluster", family.as_str()),
            )),
            None => families.push(family),
        }
    }
    if ips.len() == 2 && families.len() == 2 && families[0] == families[1] {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[1]",
            &json!(ips),
            "may specify no more than one IP for each IP family",
        ));
    }
    if !errs.is_empty() {
        return errs;
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .map(str::to_string);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let selectorless = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if headless && selectorless {
        // Selectorless headless Services are served by DNS alone, so they may name any family.
        if families.is_empty() {
            families.push(primary);
        }
        let policy = policy.unwrap_or_else(|| "RequireDualStack".into());
        if policy != "SingleStack" && families.len() == 1 {
            families.push(other(families[0]));
        }
        store(spec, &families, &policy);
        return errs;
    }
    let policy = policy.unwrap_or_else(|| "SingleStack".into());
    for (i, family) in families.iter().enumerate() {
        if !configured.contains(family) {
            errs.push(FieldError::invalid(
                format!("spec.ipFamilies[{i}]"),
                &json!(family.as_str()),
                "not configured on this cluster",
            ));
        }
    }
    let dual_stack_cluster = configured.len() > 1;
    if policy == "RequireDualStack" && !dual_stack_cluster {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            &json!(policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    if policy == "SingleStack" && families.len() > 1 {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            &json!(policy),
            "must be RequireDualStack or PreferDualStack when multiple 'ipFamilies' are specified",
        ));
    }
    if !errs.is_empty() {
        return errs;
    }
    if families.is_empty() {
        families.push(primary);
    }
    if policy != "SingleStack" && dual_stack_cluster && families.len() == 1 {
        families.push(other(families[0]));
    }
    store(spec, &families, &policy);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: Value, configured: &[IpFamily]) -> Result<(Value, Value), Vec<String>> {
        let mut spec = spec.as_object().cloned().unwrap_or_default();
        sync_cluster_ips(&mut spec);
        let errs = resolve(&mut spec, configured);
        if errs.is_empty() {
            Ok((spec["ipFamilies"].clone(), spec["ipFamilyPolicy"].clone()))
        } else {
            Err(errs.iter().map(ToString::to_string).collect())
        }
    }

    const V4: &[IpFamily] = &[IpFamily::V4];
    const DUAL: &[IpFamily] = &[IpFamily::V4, IpFamily::V6];
    const DUAL6: &[IpFamily] = &[IpFamily::V6, IpFamily::V4];

    #[test]
    fn families_default_to_the_primary_and_grow_with_dual_stack_policies() {
        let ok = |f: Value, p: &str| Ok((f, json!(p)));
        assert_eq!(run(json!({}), V4), ok(json!(["IPv4"]), "SingleStack"));
        assert_eq!(run(json!({}), DUAL6), ok(json!(["IPv6"]), "SingleStack"));
        assert_eq!(
            run(json!({"ipFamilyPolicy": "PreferDualStack"}), V4),
            ok(json!(["IPv4"]), "PreferDualStack")
        );
        assert_eq!(
            run(json!({"ipFamilyPolicy": "PreferDualStack"}), DUAL),
            ok(json!(["IPv4", "IPv6"]), "PreferDualStack")
        );
        assert_eq!(
            run(
                json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}),
                DUAL
            ),
            ok(json!(["IPv6", "IPv4"]), "RequireDualStack")
        );
        assert_eq!(
            run(json!({"clusterIP": "fd00:10:96::5"}), DUAL),
            ok(json!(["IPv6"]), "SingleStack")
        );
        assert_eq!(
            run(json!({"clusterIP": "None"}), V4),
            ok(json!(["IPv4", "IPv6"]), "RequireDualStack"),
            "selectorless headless services default to both families"
        );
        assert_eq!(
            run(json!({"clusterIP": "None", "selector": {"app": "db"}}), V4),
            ok(json!(["IPv4"]), "SingleStack")
        );
    }

    #[test]
    fn impossible_family_requests_are_invalid() {
        assert_eq!(
            run(json!({"ipFamilyPolicy": "RequireDualStack"}), V4),
            Err(vec!["spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".to_string()])
        );
        assert_eq!(
            run(json!({"ipFamilies": ["IPv6"]}), V4),
            Err(vec![
                "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"
                    .to_string()
            ])
        );
        assert_eq!(
            run(json!({"clusterIP": "fd00::1"}), V4),
            Err(vec!["spec.clusterIPs[0]: Invalid value: []string{\"fd00::1\"}: IPv6 is not configured on this cluster".to_string()])
        );
        assert_eq!(
            run(json!({"clusterIP": "10.96.0.1", "ipFamilies": ["IPv6"]}), DUAL),
            Err(vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.1\"}: expected an IPv6 value as indicated by `ipFamilies[0]`".to_string()])
        );
        assert_eq!(
            run(json!({"ipFamilies": ["IPv4", "IPv6"]}), DUAL),
            Err(vec!["spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be RequireDualStack or PreferDualStack when multiple 'ipFamilies' are specified".to_string()])
        );
    }
}
