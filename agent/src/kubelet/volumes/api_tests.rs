//! Root tests of configMap, secret and projected volumes through the manager: real tmpfs
//! mounts in unique temporary directories, torn down by a guard even when a test fails.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::test_fixture::{Fixture, TestResult};
use super::*;
use crate::kubelet::api_objects::{PodObjects, TokenKey};

impl Fixture {
    fn api_pod(&self, volumes: serde_json::Value) -> Result<Pod, serde_json::Error> {
        let mut pod: Pod = serde_json::from_value(json!({
            "spec": {"volumes": volumes, "containers": [{"name": "app"}]}
        }))?;
        pod.metadata = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        };
        Ok(pod)
    }
}

fn objects(
    config: serde_json::Value,
    secret: serde_json::Value,
) -> Result<PodObjects, serde_json::Error> {
    let mut objects = PodObjects::default();
    objects.insert_config_map(serde_json::from_value(config)?);
    objects.insert_secret(serde_json::from_value(secret)?);
    Ok(objects)
}

fn base_objects() -> Result<PodObjects, serde_json::Error> {
    objects(
        json!({"metadata": {"name": "cfg", "resourceVersion": "1"},
               "data": {"app.conf": "port=80", "mode": "fast"},
               "binaryData": {"logo.bin": "AAEC"}}),
        json!({"metadata": {"name": "creds"}, "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}}),
    )
}

fn fs_type(path: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let canonical = path.canonicalize().ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields.get(4)?;
        let dash = fields.iter().position(|f| *f == "-")?;
        (Path::new(point) == canonical).then(|| fields.get(dash + 1).map(|s| s.to_string()))?
    })
}

fn mode(path: &Path) -> Result<u32, std::io::Error> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

#[test]
fn config_map_volume_has_every_key_and_follows_changes() -> TestResult {
    let fx = Fixture::new("api")?;
    let pod = fx.api_pod(json!([{"name": "conf", "configMap": {"name": "cfg"}}]))?;
    fx.manager.setup(&pod, &base_objects()?)?;
    let dir = fx.volume_dir("kubernetes.io~configmap", "conf");
    assert_eq!(fs::read_to_string(dir.join("app.conf"))?, "port=80");
    assert_eq!(fs::read(dir.join("logo.bin"))?, [0u8, 1, 2]);
    assert_eq!(mode(&dir.join("..data/mode"))?, 0o644);
    assert_eq!(
        fs_type(&dir),
        None,
        "a configMap volume lives on the pods disk"
    );
    let first = fs::read_link(dir.join("..data"))?;

    let changed = objects(
        json!({"metadata": {"name": "cfg", "resourceVersion": "2"}, "data": {"app.conf": "port=8080"}}),
        json!({"metadata": {"name": "creds"}}),
    )?;
    fx.manager.refresh(&pod, &changed)?;
    assert_eq!(fs::read_to_string(dir.join("app.conf"))?, "port=8080");
    assert!(!dir.join("mode").exists(), "a removed key disappears");
    let second = fs::read_link(dir.join("..data"))?;
    assert_ne!(first, second);
    assert!(!dir.join(&first).exists(), "the old version is removed");

    Ok(())
}

#[test]
fn secret_volume_is_on_tmpfs_with_item_modes() -> TestResult {
    let fx = Fixture::new("api")?;
    let pod = fx.api_pod(json!([{"name": "creds", "secret": {
        "secretName": "creds", "defaultMode": 0o400,
        "items": [{"key": "password", "path": "db/pass", "mode": 0o440}, {"key": "user", "path": "user"}]
    }}]))?;
    fx.manager.setup(&pod, &base_objects()?)?;
    let dir = fx.volume_dir("kubernetes.io~secret", "creds");
    assert_eq!(fs_type(&dir).as_deref(), Some("tmpfs"));
    assert_eq!(fs::read_to_string(dir.join("db/pass"))?, "hunter2");
    assert_eq!(mode(&dir.join("..data/db/pass"))?, 0o440);
    assert_eq!(fs::read_to_string(dir.join("user"))?, "admin");
    assert_eq!(mode(&dir.join("..data/user"))?, 0o400);
    assert!(
        !dir.join("password").exists(),
        "only listed items are projected"
    );
    fx.manager.teardown(&fx.uid)?;
    assert_eq!(fs_type(&dir), None);
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn missing_objects_and_keys_fail_unless_optional() -> TestResult {
    let fx = Fixture::new("api")?;
    let none = PodObjects::default();
    let pod = fx.api_pod(json!([{"name": "conf", "configMap": {"name": "ghost"}}]))?;
    let err = fx
        .manager
        .setup(&pod, &none)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err("MountVolume.SetUp failed for volume \"conf\" : configmap \"ghost\" not found".into())
    );
    let pod = fx.api_pod(json!([{"name": "creds", "secret": {"secretName": "creds",
        "items": [{"key": "nope", "path": "x"}]}}]))?;
    assert!(matches!(
        fx.manager.setup(&pod, &base_objects()?),
        Err(VolumeError::MissingKey { ref key, kind: "secret", .. }) if key == "nope"
    ));
    let pod = fx.api_pod(json!([
        {"name": "conf", "configMap": {"name": "ghost", "optional": true}},
        {"name": "creds", "secret": {"secretName": "creds", "optional": true,
            "items": [{"key": "nope", "path": "x"}, {"key": "user", "path": "u"}]}}
    ]))?;
    fx.manager.setup(&pod, &base_objects()?)?;
    let conf = fx.volume_dir("kubernetes.io~configmap", "conf");
    assert!(
        conf.join("..data").exists(),
        "an optional missing object gives an empty volume"
    );
    let creds = fx.volume_dir("kubernetes.io~secret", "creds");
    assert!(!creds.join("x").exists());
    assert_eq!(fs::read_to_string(creds.join("u"))?, "admin");
    Ok(())
}

#[test]
fn hostile_item_paths_are_refused_before_writing() -> TestResult {
    let fx = Fixture::new("api")?;
    for path in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "..data/x",
        "..2024",
        "",
    ] {
        let pod = fx.api_pod(json!([{"name": "conf", "configMap": {"name": "cfg",
            "items": [{"key": "mode", "path": path}]}}]))?;
        assert!(
            matches!(
                fx.manager.setup(&pod, &base_objects()?),
                Err(VolumeError::InvalidItemPath { .. })
            ),
            "{path:?} accepted"
        );
    }
    let pod =
        fx.api_pod(json!([{"name": "conf", "configMap": {"name": "cfg", "defaultMode": 0o1777}}]))?;
    assert!(matches!(
        fx.manager.setup(&pod, &base_objects()?),
        Err(VolumeError::InvalidVolume { .. })
    ));
    let parent = fx
        .manager
        .pods_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    assert!(!parent.join("escape").exists() && !parent.join("b").exists());
    Ok(())
}

#[test]
fn projected_volume_merges_sources_on_tmpfs() -> TestResult {
    let fx = Fixture::new("api")?;
    let pod = fx.api_pod(json!([{"name": "kube-api-access", "projected": {"defaultMode": 0o420, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "cfg", "items": [{"key": "mode", "path": "cfg/mode"}]}},
        {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
    ]}}]))?;
    let mut objects = base_objects()?;
    let key = TokenKey {
        audience: String::new(),
        expiration_seconds: 3607,
    };
    objects.insert_token(key.clone(), "jwt-1".into());
    fx.manager.setup(&pod, &objects)?;
    let dir = fx.volume_dir("kubernetes.io~projected", "kube-api-access");
    assert_eq!(fs_type(&dir).as_deref(), Some("tmpfs"));
    assert_eq!(fs::read_to_string(dir.join("token"))?, "jwt-1");
    assert_eq!(mode(&dir.join("..data/token"))?, 0o420 & 0o777);
    assert_eq!(fs::read_to_string(dir.join("cfg/mode"))?, "fast");
    assert_eq!(fs::read_to_string(dir.join("user"))?, "admin");
    assert_eq!(fs::read_to_string(dir.join("namespace"))?, "shop");
    let first = fs::read_link(dir.join("..data"))?;

    // A renewed token is swapped in with the rest of the volume.
    objects.insert_token(key, "jwt-2".into());
    fx.manager.refresh(&pod, &objects)?;
    assert_eq!(fs::read_to_string(dir.join("token"))?, "jwt-2");
    assert_ne!(fs::read_link(dir.join("..data"))?, first);

    let mut c = pod
        .spec
        .as_ref()
        .map(|s| s.containers[0].clone())
        .unwrap_or_default();
    c.volume_mounts = Some(vec![k8s_openapi::api::core::v1::VolumeMount {
        name: "kube-api-access".into(),
        mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        ..Default::default()
    }]);
    let mounts = fx.manager.container_mounts(&pod, &c, &BTreeMap::new())?;
    assert!(mounts[0].readonly, "API data volumes are mounted read-only");
    Ok(())
}

/// Whether an error is the one a case expects.
type Expect = fn(&VolumeError) -> bool;

#[test]
fn projected_volume_refusals() -> TestResult {
    let fx = Fixture::new("api")?;
    let cases: Vec<(serde_json::Value, Expect)> = vec![
        (json!([{"serviceAccountToken": {"path": "token"}}]), |e| {
            matches!(e, VolumeError::TokenNotIssued { .. })
        }),
        (
            json!([{"clusterTrustBundle": {"path": "ca.pem", "name": "b"}}]),
            |e| e.to_string().contains("clusterTrustBundle"),
        ),
        (
            json!([{"configMap": {"name": "cfg", "items": [{"key": "mode", "path": "x"}]}},
                {"secret": {"name": "creds", "items": [{"key": "user", "path": "x"}]}}]),
            |e| e.to_string().contains("duplicate path"),
        ),
        (
            json!([{"serviceAccountToken": {"path": "../token"}}]),
            |e| matches!(e, VolumeError::InvalidItemPath { .. }),
        ),
    ];
    for (sources, expected) in cases {
        let pod = fx.api_pod(json!([{"name": "p", "projected": {"sources": sources}}]))?;
        match fx.manager.setup(&pod, &base_objects()?) {
            Err(e) if expected(&e) => {}
            other => return Err(format!("{sources}: unexpected {other:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn several_sources_are_refused() -> TestResult {
    let fx = Fixture::new("api")?;
    let pod = fx.api_pod(
        json!([{"name": "v", "configMap": {"name": "cfg"}, "secret": {"secretName": "creds"}}]),
    )?;
    assert!(matches!(
        fx.manager.setup(&pod, &base_objects()?),
        Err(VolumeError::InvalidVolume { .. })
    ));
    Ok(())
}
