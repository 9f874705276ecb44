//! Reading a manifest file into static pods: YAML (several documents) or JSON, with the
//! defaults the kubelet applies to static pods (namespace, node-suffixed name, content UID).

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::validate::validate_pod;
use super::{CONFIG_FILE_ANNOTATION, CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION};

/// Largest manifest file read; a bigger one is refused rather than buffered.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Why a manifest file gave no pods.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any sane manifest.
    #[error("{path}: {size} bytes is over the {MAX_MANIFEST_BYTES}-byte manifest limit")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A document is not a valid Pod.
    #[error("{path}: document {index}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based document number.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Node facts the kubelet stamps on static pods.
#[derive(Debug, Clone)]
pub struct StaticPodDefaults {
    /// The node's name: suffix of every static pod's name and input of its UID.
    pub node_name: String,
}

/// Read every Pod in `path`. Empty documents are skipped; any invalid one fails the file,
/// so a half-valid file never runs half its pods.
pub fn load_file(path: &Path, defaults: &StaticPodDefaults) -> Result<Vec<Pod>, ManifestError> {
    let shown = path.display().to_string();
    let read_error = |source| ManifestError::Read {
        path: shown.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { path: shown, size });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let documents = parse_documents(&text).map_err(|(index, message)| ManifestError::Invalid {
        path: shown.clone(),
        index,
        message,
    })?;
    documents
        .into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let invalid = |message: String| ManifestError::Invalid {
                path: shown.clone(),
                index: i + 1,
                message,
            };
            let pod = to_static_pod(doc, path, i, defaults).map_err(invalid)?;
            validate_pod(&pod).map_err(|errors| invalid(errors.join("; ")))?;
            Ok(pod)
        })
        .collect()
}

/// The file's non-empty documents as JSON values; `Err((index, message))` on bad syntax.
fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, (usize, String)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map(|v| vec![v])
            .map_err(|e| (1, format!("invalid JSON: {e}")));
    }
    let mut documents = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| (i + 1, format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(value)
            .map_err(|e| (i + 1, format!("YAML that has no JSON form: {e}")))?;
        documents.push(json);
    }
    Ok(documents)
}

/// Check kind/apiVersion, decode, and apply the static pod defaults.
fn to_static_pod(
    document: serde_json::Value,
    path: &Path,
    index: usize,
    defaults: &StaticPodDefaults,
) -> Result<Pod, String> {
    let field = |name: &str| {
        document
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("apiVersion").as_deref(), field("kind").as_deref()) {
        (Some("v1"), Some("Pod")) => {}
        (api_version, kind) => {
            return Err(format!(
                "expected apiVersion v1, kind Pod; found apiVersion {api_version:?}, kind {kind:?}"
            ))
        }
    }
    let hash = content_hash(&defaults.node_name, path, index, &document);
    let mut pod: Pod = serde_json::from_value(document).map_err(|e| format!("not a Pod: {e}"))?;
    let meta = &mut pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name: required".to_owned());
    }
    // Like the kubelet: static pods are named after their node so two nodes never clash.
    meta.name = Some(format!("{name}-{}", defaults.node_name));
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".to_owned());
    }
    if meta.uid.as_deref().unwrap_or("").is_empty() {
        meta.uid = Some(hash.clone());
    }
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), "file".to_owned());
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), hash);
    annotations.insert(
        CONFIG_FILE_ANNOTATION.to_owned(),
        path.display().to_string(),
    );
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(defaults.node_name.clone());
    }
    // When the agent first read it: static pods have no API server to stamp them.
    if pod.metadata.creation_timestamp.is_none() {
        pod.metadata.creation_timestamp = Some(Time(jiff::Timestamp::now()));
    }
    Ok(pod)
}

/// A UUID-shaped digest of node, file, position and content: a changed manifest is a new
/// pod (the kubelet replaces static pods rather than updating them in place).
fn content_hash(node: &str, path: &Path, index: usize, document: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "host:{node}\0file:{}\0doc:{index}\0",
        path.display()
    ));
    hasher.update(document.to_string());
    let digest = hex::encode(&hasher.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &digest[..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> StaticPodDefaults {
        StaticPodDefaults {
            node_name: "node1".to_owned(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: busybox\n";

    #[test]
    fn yaml_documents_become_static_pods_with_kubelet_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{WEB}---\n---\n{}", WEB.replace("web", "db"));
        let pods = load_file(&write(dir.path(), "a.yaml", &text), &defaults()).unwrap();
        assert_eq!(pods.len(), 2);
        let web = &pods[0];
        assert_eq!(web.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(web.metadata.namespace.as_deref(), Some("default"));
        let uid = web.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 36);
        let annotations = web.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(
            web.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node1")
        );
        assert_ne!(pods[1].metadata.uid, web.metadata.uid);
        assert!(web.metadata.creation_timestamp.is_some());
    }

    #[test]
    fn the_uid_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.yaml", WEB);
        let first = load_file(&path, &defaults()).unwrap()[0]
            .metadata
            .uid
            .clone();
        let again = load_file(&path, &defaults()).unwrap()[0]
            .metadata
            .uid
            .clone();
        assert_eq!(first, again);
        write(dir.path(), "a.yaml", &WEB.replace("busybox", "busybox:2"));
        let changed = load_file(&path, &defaults()).unwrap()[0]
            .metadata
            .uid
            .clone();
        assert_ne!(first, changed);
    }

    #[test]
    fn json_manifests_load() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"ops"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        let pods = load_file(&write(dir.path(), "j.json", json), &defaults()).unwrap();
        assert_eq!(pods[0].metadata.namespace.as_deref(), Some("ops"));
    }

    #[test]
    fn bad_files_name_the_document_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "kind: Deployment\napiVersion: apps/v1\n",
                "expected apiVersion v1, kind Pod",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: []}\n",
                "metadata.name",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: 7\n",
                "not a Pod",
            ),
            ("{ not json", "invalid JSON"),
            ("a: [unclosed\n", "invalid YAML"),
        ];
        for (text, expected) in cases {
            let err = load_file(&write(dir.path(), "bad.yaml", text), &defaults())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("document 1"), "{err}");
        }
        let second_bad = format!("{WEB}---\nkind: Pod\n");
        let err = load_file(&write(dir.path(), "two.yaml", &second_bad), &defaults())
            .unwrap_err()
            .to_string();
        assert!(err.contains("document 2"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        let err = load_file(&path, &defaults()).unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
    }
}
