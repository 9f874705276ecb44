//! Service environment variables (`pkg/kubelet/envvars` and `getServiceEnvVarMap`):
//! `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<PORT NAME>]` and Docker-link style
//! `<SVC>_PORT[_<port>_<PROTO>[_PROTO|_PORT|_ADDR]]` for every Service with a cluster IP.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};

/// Services whose variables every pod gets, even without service links.
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

/// The service variables of a pod: its namespace's Services when `enableServiceLinks`
/// (default true), plus the master services of `default`; a namespace Service wins over a
/// master service of the same name.
pub fn service_env(pod: &Pod, services: &[Service]) -> BTreeMap<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services.iter().filter(|s| cluster_ip(s).is_some()) {
        let name = service.metadata.name.as_deref().unwrap_or("");
        let ns = service.metadata.namespace.as_deref().unwrap_or("default");
        if ns == "default" && MASTER_SERVICES.contains(&name) {
            chosen.entry(name).or_insert(service);
        } else if ns == namespace && links {
            chosen.insert(name, service);
        }
    }
    let mut out = BTreeMap::new();
    for service in chosen.values() {
        for (k, v) in from_service(service) {
            out.insert(k, v);
        }
    }
    out
}

/// A Service's cluster IP, when it has one (not headless, not ExternalName).
fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// `makeEnvVariableName`: upper case, `-` → `_`.
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The variables of one Service (`FromServices`).
fn from_service(service: &Service) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(service) else {
        return Vec::new();
    };
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or(""));
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    let Some(first) = ports.first() else {
        return out;
    };
    let service_port = format!("{prefix}_SERVICE_PORT");
    out.push((service_port.clone(), first.port.to_string()));
    for port in ports {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{service_port}_{}", env_name(name)),
                port.port.to_string(),
            ));
        }
    }
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    for (i, port) in ports.iter().enumerate() {
        let protocol = port
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{host}:{}", port.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), ip.to_string()));
        out.push((port_prefix, url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap_or_default()
    }

    fn pod(ns: &str, links: Option<bool>) -> Pod {
        let mut spec = json!({"containers": []});
        if let Some(l) = links {
            spec["enableServiceLinks"] = json!(l);
        }
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .unwrap_or_default()
    }

    fn services() -> Vec<Service> {
        vec![
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            service(
                "shop",
                "redis-primary",
                "10.0.0.11",
                json!([
                    {"port": 6379},
                    {"name": "metrics", "port": 9121, "protocol": "UDP"}
                ]),
            ),
            service("shop", "headless", "None", json!([{"port": 80}])),
            service("other", "db", "10.0.0.12", json!([{"port": 5432}])),
            service("shop", "v6", "fd00::5", json!([{"port": 80}])),
        ]
    }

    #[test]
    fn docker_link_names() {
        let env = service_env(&pod("shop", None), &services());
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("REDIS_PRIMARY_SERVICE_HOST"), Some("10.0.0.11"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_METRICS"), Some("9121"));
        assert_eq!(get("REDIS_PRIMARY_PORT"), Some("tcp://10.0.0.11:6379"));
        assert_eq!(
            get("REDIS_PRIMARY_PORT_6379_TCP"),
            Some("tcp://10.0.0.11:6379")
        );
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_ADDR"), Some("10.0.0.11"));
        assert_eq!(
            get("REDIS_PRIMARY_PORT_9121_UDP"),
            Some("udp://10.0.0.11:9121")
        );
        assert_eq!(get("V6_PORT"), Some("tcp://[fd00::5]:80"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("DB_SERVICE_HOST"), None);
    }

    #[test]
    fn links_off_keeps_the_master_service() {
        let env = service_env(&pod("shop", Some(false)), &services());
        assert_eq!(
            env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
            Some("10.96.0.1")
        );
        assert!(!env.contains_key("REDIS_PRIMARY_SERVICE_HOST"));
        let mut own = services();
        own.push(service(
            "shop",
            "kubernetes",
            "10.0.0.99",
            json!([{"port": 1}]),
        ));
        let env = service_env(&pod("shop", None), &own);
        assert_eq!(
            env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
            Some("10.0.0.99")
        );
    }
}
