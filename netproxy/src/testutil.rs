//! Test fixtures: Services and EndpointSlices from compact descriptions, and a backend that
//! records scripts and can optionally check them with `nft -c` (root).

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use crate::error::ProxyError;
use crate::model::IpFamily;
use crate::nft::NftBackend;

/// A ClusterIP Service `ns/name` with `ip` and `ports` given as (name, protocol, port, nodePort).
pub fn service(
    ns: &str,
    name: &str,
    ip: &str,
    ports: &[(&str, &str, i32, Option<i32>)],
    extra: Value,
) -> Arc<Service> {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port, np)| {
            let mut v = json!({"name": n, "protocol": p, "port": port, "targetPort": port});
            if let Some(np) = np {
                v["nodePort"] = json!(np);
            }
            v
        })
        .collect();
    let mut spec =
        json!({"clusterIP": ip, "clusterIPs": [ip], "ports": ports, "type": "ClusterIP"});
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
        spec.extend(extra);
    }
    Arc::new(
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .unwrap(),
    )
}

/// A slice of `ns/service` with `ports` (name, protocol, port) and endpoints (ip, ready, node).
pub fn slice(
    ns: &str,
    service: &str,
    name: &str,
    ports: &[(&str, &str, i32)],
    eps: &[(&str, bool, &str)],
) -> Arc<EndpointSlice> {
    let family = if eps.first().is_some_and(|e| e.0.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, ready, node)| json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}, "nodeName": node}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": family, "ports": ports, "endpoints": eps
        }))
        .unwrap(),
    )
}

/// Records applied scripts; `tables` is what list_table answers.
#[derive(Clone, Default)]
pub struct Recorder {
    /// Scripts applied so far.
    pub scripts: Arc<Mutex<Vec<String>>>,
    /// Listed tables, per family (None = absent).
    pub tables: Arc<Mutex<[Option<Value>; 2]>>,
    /// Fail the next apply.
    pub fail_next: Arc<Mutex<bool>>,
}

impl Recorder {
    /// The last script applied.
    pub fn last(&self) -> String {
        self.scripts
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

impl NftBackend for Recorder {
    fn apply(&mut self, script: &str) -> Result<(), ProxyError> {
        if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
            return Err(ProxyError::Nft {
                command: "-f -".into(),
                stderr: "injected".into(),
            });
        }
        self.scripts.lock().unwrap().push(script.to_owned());
        Ok(())
    }

    fn list_table(&mut self, family: IpFamily, _table: &str) -> Result<Option<Value>, ProxyError> {
        let i = usize::from(family == IpFamily::V6);
        Ok(self.tables.lock().unwrap()[i].clone())
    }
}
