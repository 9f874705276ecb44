//! An in-memory [`Objects`] for the unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;

use super::{ApiError, Objects};

/// Objects keyed by (resource, namespace, name); upsert bumps a counter as resourceVersion.
#[derive(Default)]
pub(super) struct MemObjects {
    items: Mutex<BTreeMap<(String, String, String), Value>>,
    version: Mutex<u64>,
}

impl MemObjects {
    /// Stores `obj` under its metadata.name.
    pub(super) fn put(&self, resource: &str, namespace: &str, obj: Value) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.items
            .lock()
            .unwrap()
            .insert((resource.to_owned(), namespace.to_owned(), name), obj);
    }

    /// Deletes one object.
    pub(super) fn remove(&self, resource: &str, namespace: &str, name: &str) {
        self.items.lock().unwrap().remove(&(
            resource.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        ));
    }
}

impl Objects for MemObjects {
    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.items
            .lock()
            .unwrap()
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn list(&self, resource: &str, namespace: &str) -> Vec<Value> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .filter(|((r, ns, _), _)| r == resource && (namespace.is_empty() || ns == namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn upsert(&self, resource: &str, namespace: &str, mut obj: Value) -> Result<Value, ApiError> {
        let mut version = self.version.lock().unwrap();
        *version += 1;
        obj["metadata"]["resourceVersion"] = Value::from(version.to_string());
        self.put(resource, namespace, obj.clone());
        Ok(obj)
    }
}

/// The DER inside a one-block PEM.
pub(super) fn pem_der(pem: &str) -> Vec<u8> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}
