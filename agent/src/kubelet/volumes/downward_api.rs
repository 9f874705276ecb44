//! downwardAPI volume contents: fieldRef (pod metadata) and resourceFieldRef (container
//! resources, unset limits defaulting to node allocatable), with the values computed by
//! the same code as downward API env vars (`convert`).

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeSource, ObjectFieldSelector, Pod, ResourceFieldSelector,
};

use super::allocatable::NodeAllocatable;
use super::atomic_writer::{clean_item_path, FileProjection, Payload};
use super::error::VolumeError;
use crate::kubelet::convert::{
    pod_field_value, resource_field_value, Allocatable, Amount, NodeInfo,
};

/// The API's default file mode for downwardAPI items.
const DEFAULT_MODE: i32 = 0o644;

/// The field paths API validation allows in downwardAPI volumes (no spec or status fields).
const VOLUME_FIELD_PATHS: [&str; 5] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];

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
    let node = OnceLock::new();
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
            (None, Some(r)) => resource_value(pod, r, node.get_or_init(|| node_info(allocatable))),
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

/// A metadata field path's value; spec and status fields are refused in volumes.
fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, String> {
    let path = selector.field_path.as_str();
    let base = path.split_once("['").map_or(path, |(b, _)| b);
    let subscript_ok = base == path || base == "metadata.labels" || base == "metadata.annotations";
    if !VOLUME_FIELD_PATHS.contains(&base) || !subscript_ok {
        return Err(format!("unsupported fieldPath {path:?}"));
    }
    pod_field_value(pod, &[], &[], selector, "fieldRef").map_err(|e| e.to_string())
}

/// A container resource value; volumes must name the container.
fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    node: &NodeInfo,
) -> Result<String, String> {
    let name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or("resourceFieldRef needs containerName in a volume")?;
    let container = find_container(pod, name).ok_or_else(|| format!("no container {name:?}"))?;
    resource_field_value(pod, container, selector, node, "resourceFieldRef")
        .map_err(|e| e.to_string())
}

/// The node facts `resource_field_value` reads: allocatable for unset limits.
fn node_info(allocatable: &NodeAllocatable) -> NodeInfo {
    let units = |n: u64| Amount::from_units(i64::try_from(n).unwrap_or(i64::MAX));
    NodeInfo {
        allocatable: Allocatable {
            cpu: Some(Amount::from_nanos(
                i128::from(allocatable.cpu_millis) * 1_000_000,
            )),
            memory: Some(units(allocatable.memory_bytes)),
            ephemeral_storage: Some(units(allocatable.ephemeral_storage_bytes)),
        },
        ..Default::default()
    }
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
    use std::collections::BTreeMap;

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
}
