//! Downward API values (`podFieldSelectorRuntimeValue`, `containerResourceRuntimeValue`,
//! `fieldpath.FormatMap`): one implementation for env vars and downwardAPI volume files.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use super::error::ConvertError;
use super::quantity::{parse_field, Amount};
use super::resources::container_resources;
use super::NodeInfo;

/// A downward API `fieldRef` value (`podFieldSelectorRuntimeValue`); `field` names the
/// selector in errors.
pub fn pod_field_value(
    pod: &Pod,
    host_ips: &[String],
    pod_ips: &[String],
    selector: &ObjectFieldSelector,
    field: &str,
) -> Result<String, ConvertError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if version != "v1" {
        return Err(ConvertError::invalid(
            format!("{field}.apiVersion"),
            format!("unsupported pod version: {version}"),
        ));
    }
    let path_field = format!("{field}.fieldPath");
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    if let Some((map, key)) = split_subscript(path) {
        let source = match map {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => {
                return Err(ConvertError::invalid(
                    path_field,
                    format!("field label does not support subscript: {path}"),
                ))
            }
        };
        return Ok(source
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => text(&meta.name),
        // Pods without a namespace (static pods) are in "default", as the kubelet defaults them.
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => text(&meta.uid),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" | "spec.host" => spec.map(|s| text(&s.node_name)).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .map(|s| text(&s.service_account_name))
            .unwrap_or_default(),
        "status.hostIP" => host_ips.first().cloned().ok_or_else(|| {
            ConvertError::invalid(&path_field, "the node has no IP address to report")
        })?,
        "status.hostIPs" => host_ips.join(","),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        _ => {
            return Err(ConvertError::invalid(
                path_field,
                format!("unsupported fieldPath: {path}"),
            ))
        }
    };
    Ok(value)
}

/// `SplitMaybeSubscriptedPath`: `metadata.labels['k']` → (`metadata.labels`, `k`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (map, key) = inner.split_once("['")?;
    (!map.is_empty()).then_some((map, key))
}

/// `fieldpath.FormatMap`: sorted `key="value"` lines, values quoted like Go's `%q`.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: printable characters as is, the rest escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's unicode.IsPrint for what label and annotation values hold: no controls, no spaces
/// other than U+0020, no format or private-use characters.
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF | 0xE0001..=0xE007F);
    !format_or_private
}

/// A downward API `resourceFieldRef` value (`containerResourceRuntimeValue`), with unset
/// cpu/memory/ephemeral-storage limits reported as node allocatable.
pub fn resource_field_value(
    pod: &Pod,
    container: &Container,
    selector: &ResourceFieldSelector,
    node: &NodeInfo,
    field: &str,
) -> Result<String, ConvertError> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => {
            let spec = pod.spec.as_ref();
            let apps = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
            let inits = spec
                .and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default();
            apps.iter()
                .chain(inits)
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    ConvertError::invalid(
                        format!("{field}.containerName"),
                        format!("container {name:?} not found in the pod"),
                    )
                })?
        }
    };
    let mut res = container_resources(pod, target)?;
    let allocatable = [
        ("cpu", node.allocatable.cpu),
        ("memory", node.allocatable.memory),
        ("ephemeral-storage", node.allocatable.ephemeral_storage),
    ];
    for (name, node_amount) in allocatable {
        if res.limit(name).is_zero() {
            if let Some(amount) = node_amount {
                res.limits.insert(name.to_owned(), amount);
            }
        }
    }
    let resource = selector.resource.as_str();
    let (side, name) = match resource.split_once('.') {
        Some(("limits", name)) => (&res.limits, name),
        Some(("requests", name)) => (&res.requests, name),
        _ => return Err(unsupported(field, resource)),
    };
    let is_cpu = name == "cpu";
    if !(is_cpu
        || name == "memory"
        || name == "ephemeral-storage"
        || name.starts_with("hugepages-"))
    {
        return Err(unsupported(field, resource));
    }
    let divisor = match &selector.divisor {
        Some(q) => parse_field(&format!("{field}.divisor"), q)?,
        None => Amount::ZERO,
    };
    let divisor = if divisor.is_zero() {
        Amount::from_units(1)
    } else {
        divisor
    };
    if !divisor_allowed(is_cpu, divisor) {
        let allowed = if is_cpu {
            "1m and 1 are"
        } else {
            "1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are"
        };
        return Err(ConvertError::invalid(
            format!("{field}.divisor"),
            format!("only divisor's values {allowed} supported with the {name} resource"),
        ));
    }
    let amount = side.get(name).copied().unwrap_or_default();
    let (numerator, denominator) = if is_cpu {
        (amount.milli_value(), divisor.milli_value())
    } else {
        (amount.value(), divisor.value())
    };
    Ok(ceil_div(numerator, denominator).to_string())
}

fn unsupported(field: &str, resource: &str) -> ConvertError {
    ConvertError::invalid(
        format!("{field}.resource"),
        format!("unsupported container resource: {resource}"),
    )
}

/// The divisors API validation admits (`validContainerResourceDivisorFor*`).
fn divisor_allowed(is_cpu: bool, divisor: Amount) -> bool {
    let units = |n: i64| Amount::from_units(n);
    if is_cpu {
        return divisor == Amount::from_nanos(1_000_000) || divisor == units(1);
    }
    let decimal = (0..=18).step_by(3).map(|e| units(10i64.pow(e)));
    let binary = (1..=6).map(|k| units(1i64 << (10 * k)));
    decimal.chain(binary).any(|d| d == divisor)
}

/// `ceil(n / d)` for non-negative n and positive d.
fn ceil_div(n: i64, d: i64) -> i64 {
    if d <= 0 {
        return n;
    }
    n / d + i64::from(n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(
            go_quote("\u{7f}\u{a0}\u{200b}😀"),
            "\"\\x7f\\u00a0\\u200b😀\""
        );
    }
}
