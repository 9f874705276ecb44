//! downwardAPI volume contents: fieldRef (pod metadata) and resourceFieldRef (container
//! resources, unset limits defaulting to node allocatable), formatted as the kubelet does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeSource, ObjectFieldSelector, Pod, ResourceFieldSelector,
};

use super::allocatable::NodeAllocatable;
use super::atomic_writer::{clean_item_path, FileProjection, Payload};
use super::error::VolumeError;
use super::quantity::Quantity;

/// The API's default file mode for downwardAPI items.
const DEFAULT_MODE: i32 = 0o644;

/// The files of one downwardAPI volume.
pub(super) fn payload(
    volume: &str,
    pod: &Pod,
    source: &DownwardAPIVolumeSource,
    allocatable: &NodeAllocatable,
) -> Result<Payload, VolumeError> {
    let invalid = |reason: String| VolumeError::InvalidVolume {
        volume: volume.to_string(),
        reason,
    };
    let default_mode = checked_mode(source.default_mode.unwrap_or(DEFAULT_MODE))
        .ok_or_else(|| invalid("defaultMode must be between 0 and 0777".into()))?;
    let mut out = Payload::new();
    for item in source.items.iter().flatten() {
        let path = clean_item_path(&item.path).map_err(|reason| VolumeError::InvalidItemPath {
            volume: volume.to_string(),
            path: item.path.clone(),
            reason,
        })?;
        let mode = match item.mode {
            Some(m) => checked_mode(m).ok_or_else(|| {
                invalid(format!("item {path:?}: mode must be between 0 and 0777"))
            })?,
            None => default_mode,
        };
        let data = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => field_value(pod, f),
            (None, Some(r)) => resource_value(pod, r, allocatable),
            _ => Err("exactly one of fieldRef and resourceFieldRef is required".to_string()),
        }
        .map_err(|e| invalid(format!("item {path:?}: {e}")))?;
        if out.contains_key(&path) {
            return Err(invalid(format!("item path {path:?} is used twice")));
        }
        out.insert(
            path,
            FileProjection {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(out)
}

fn checked_mode(mode: i32) -> Option<u32> {
    u32::try_from(mode).ok().filter(|m| *m <= 0o777)
}

/// The value of a metadata field path (the set the API allows in downwardAPI volumes).
fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, String> {
    let meta = &pod.metadata;
    let path = selector.field_path.as_str();
    if let Some((field, key)) = split_subscript(path) {
        let map = match field {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(format!("unsupported fieldPath {path:?}")),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    match path {
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        // Static pods without a namespace are defaulted to "default" by the kubelet.
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
        _ => Err(format!("unsupported fieldPath {path:?}")),
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`), as SplitMaybeSubscriptedPath.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (field, key) = inner.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}

/// `key="value"` lines in key order, Go-quoted, no trailing newline (the kubelet's FormatMap).
pub(super) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in map.into_iter().flatten().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&go_quote(v));
    }
    out
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

/// A container resource value divided by the divisor and rounded up
/// (the kubelet's ExtractResourceValueByContainerNameAndNodeAllocatable).
fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    allocatable: &NodeAllocatable,
) -> Result<String, String> {
    let name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or("resourceFieldRef needs containerName in a volume")?;
    let container = find_container(pod, name).ok_or_else(|| format!("no container {name:?}"))?;
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", selector.resource))?;
    let cpu = resource == "cpu";
    if !(cpu
        || resource == "memory"
        || resource == "ephemeral-storage"
        || resource.starts_with("hugepages-"))
        || !(kind == "limits" || kind == "requests")
    {
        return Err(format!("unsupported resource {:?}", selector.resource));
    }
    let resources = container.resources.as_ref();
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource));
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(resource))
        // API defaulting: a request left unset takes the limit.
        .or(limit);
    let spec_value = if kind == "limits" { limit } else { request };
    let parse = |text: &str| Quantity::parse(text).map_err(|e| e.to_string());
    let value = match spec_value {
        Some(q) => parse(&q.0)?,
        None if kind == "limits" => {
            let fallback = match resource {
                "cpu" => format!("{}m", allocatable.cpu_millis),
                "memory" => allocatable.memory_bytes.to_string(),
                "ephemeral-storage" => allocatable.ephemeral_storage_bytes.to_string(),
                _ => "0".to_string(),
            };
            parse(&fallback)?
        }
        None => parse("0")?,
    };
    let divisor = match selector.divisor.as_ref() {
        Some(d) => parse(&d.0)?,
        None => parse("1")?,
    };
    let divisor = if divisor.is_zero() {
        parse("1")?
    } else {
        divisor
    };
    let overflow = || format!("{} is out of range", selector.resource);
    let (num, den) = if cpu {
        (value.ceil_milli(), divisor.ceil_milli())
    } else {
        (value.ceil_value(), divisor.ceil_value())
    };
    let (num, den) = (num.ok_or_else(overflow)?, den.ok_or_else(overflow)?);
    if den <= 0 {
        return Err(format!("divisor of {} must be positive", selector.resource));
    }
    let q = num.div_euclid(den) + i64::from(num.rem_euclid(den) != 0);
    Ok(q.to_string())
}

/// App containers first, then init containers, as the kubelet searches.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NODE: NodeAllocatable = NodeAllocatable {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };

    fn test_pod() -> Pod {
        let limits = BTreeMap::from([
            ("cpu".to_string(), Q("250m".into())),
            ("memory".to_string(), Q("64Mi".into())),
        ]);
        let requests = BTreeMap::from([("cpu".to_string(), Q("100m".into()))]);
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("tier".to_string(), "front".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "note".to_string(),
                    "say \"hi\"\n\ttab\\ é \u{1}".to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "app".into(),
                        resources: Some(ResourceRequirements {
                            limits: Some(limits),
                            requests: Some(requests),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Container {
                        name: "bare".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    fn resource(
        path: &str,
        container: &str,
        res: &str,
        divisor: Option<&str>,
    ) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(container.into()),
                resource: res.into(),
                divisor: divisor.map(|d| Q(d.into())),
            }),
            ..Default::default()
        }
    }

    fn files(items: Vec<DownwardAPIVolumeFile>) -> Result<BTreeMap<String, String>, VolumeError> {
        let source = DownwardAPIVolumeSource {
            items: Some(items),
            default_mode: None,
        };
        Ok(payload("info", &test_pod(), &source, &NODE)?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.data).into_owned()))
            .collect())
    }

    #[test]
    fn metadata_fields() -> Result<(), VolumeError> {
        let got = files(vec![
            field("name", "metadata.name"),
            field("ns", "metadata.namespace"),
            field("uid", "metadata.uid"),
            field("labels", "metadata.labels"),
            field("annotations", "metadata.annotations"),
            field("app", "metadata.labels['app']"),
            field("missing", "metadata.labels['nope']"),
        ])?;
        assert_eq!(got["name"], "web");
        assert_eq!(got["ns"], "prod");
        assert_eq!(got["uid"], "u-1");
        assert_eq!(got["labels"], "app=\"web\"\ntier=\"front\"");
        assert_eq!(got["annotations"], r#"note="say \"hi\"\n\ttab\\ é \x01""#);
        assert_eq!(got["app"], "web");
        assert_eq!(got["missing"], "");
        Ok(())
    }

    #[test]
    fn resource_fields_with_divisors_and_node_defaults() -> Result<(), VolumeError> {
        let got = files(vec![
            resource("cpu", "app", "limits.cpu", None),
            resource("cpu_m", "app", "limits.cpu", Some("1m")),
            resource("req_cpu_m", "app", "requests.cpu", Some("1m")),
            resource("mem", "app", "limits.memory", None),
            resource("mem_mi", "app", "limits.memory", Some("1Mi")),
            resource("req_mem", "app", "requests.memory", None),
            resource("node_cpu", "bare", "limits.cpu", None),
            resource("node_mem_gi", "bare", "limits.memory", Some("1Gi")),
            resource(
                "node_disk_gi",
                "bare",
                "limits.ephemeral-storage",
                Some("1Gi"),
            ),
            resource("bare_req", "bare", "requests.memory", None),
        ])?;
        assert_eq!(got["cpu"], "1"); // 250m rounds up
        assert_eq!(got["cpu_m"], "250");
        assert_eq!(got["req_cpu_m"], "100");
        assert_eq!(got["mem"], (64u64 << 20).to_string());
        assert_eq!(got["mem_mi"], "64");
        assert_eq!(got["req_mem"], (64u64 << 20).to_string()); // request defaults to limit
        assert_eq!(got["node_cpu"], "4");
        assert_eq!(got["node_mem_gi"], "8");
        assert_eq!(got["node_disk_gi"], "100");
        assert_eq!(got["bare_req"], "0");
        Ok(())
    }

    #[test]
    fn bad_items_are_refused() {
        for item in [
            field("x", "spec.nodeName"),
            field("x", "metadata.generateName"),
            resource("x", "ghost", "limits.cpu", None),
            resource("x", "app", "limits.gpu", None),
            resource("x", "app", "cpu", None),
            resource("x", "app", "limits.cpu", Some("lots")),
            DownwardAPIVolumeFile {
                path: "x".into(),
                ..Default::default()
            },
        ] {
            assert!(files(vec![item.clone()]).is_err(), "{item:?} accepted");
        }
        for path in ["../x", "/etc/passwd", "..data", "a/../../b"] {
            assert!(matches!(
                files(vec![field(path, "metadata.name")]),
                Err(VolumeError::InvalidItemPath { .. })
            ));
        }
        assert!(files(vec![
            field("a", "metadata.name"),
            field("./a", "metadata.uid")
        ])
        .is_err());
        let mut mode = field("m", "metadata.name");
        mode.mode = Some(0o1000);
        assert!(files(vec![mode]).is_err());
    }

    #[test]
    fn modes_default_and_override() -> Result<(), VolumeError> {
        let mut item = field("m", "metadata.name");
        item.mode = Some(0o400);
        let source = DownwardAPIVolumeSource {
            items: Some(vec![item, field("d", "metadata.name")]),
            default_mode: Some(0o640),
        };
        let p = payload("info", &test_pod(), &source, &NODE)?;
        assert_eq!(p.get("m").map(|f| f.mode), Some(0o400));
        assert_eq!(p.get("d").map(|f| f.mode), Some(0o640));
        Ok(())
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(
            go_quote("\u{7f}\u{a0}\u{200b}😀"),
            "\"\\x7f\\u00a0\\u200b😀\""
        );
    }
}
