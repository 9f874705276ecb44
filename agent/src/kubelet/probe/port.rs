//! Port and address helpers shared by the network handlers.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Resolves a handler's port like the kubelet's `probe.ResolveContainerPort`: a number, a
/// named container port, or a number written as a string; the result must be 1..=65535.
pub(super) fn resolve(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => match named_port(container, name) {
            Some(n) => i64::from(n),
            None => name
                .parse::<i64>()
                .map_err(|_| format!("port {name} not found"))?,
        },
    };
    checked(number)
}

/// A port number from a handler field that has no names (grpc).
pub(super) fn checked(number: i64) -> Result<u16, String> {
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn named_port(container: &Container, name: &str) -> Option<i32> {
    container
        .ports
        .as_deref()?
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// `host:port`, with IPv6 literals bracketed (Go's `net.JoinHostPort`).
pub(super) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The handler's host, or the pod IP when it names none.
pub(super) fn host_or_pod_ip(host: Option<&str>, pod_ip: Option<&str>) -> Result<String, String> {
    match host
        .filter(|h| !h.is_empty())
        .or(pod_ip.filter(|ip| !ip.is_empty()))
    {
        Some(h) => Ok(h.to_owned()),
        None => Err("the pod has no IP address yet and the handler names no host".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_numbers_names_and_numeric_strings() {
        let c = container();
        assert_eq!(resolve(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(resolve(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(resolve(&IntOrString::String("9090".into()), &c), Ok(9090));
    }

    #[test]
    fn rejects_missing_names_and_out_of_range_ports() {
        let c = container();
        assert_eq!(
            resolve(&IntOrString::String("grpc".into()), &c),
            Err("port grpc not found".into())
        );
        assert_eq!(
            resolve(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
        assert_eq!(
            resolve(&IntOrString::Int(65536), &c),
            Err("invalid port number: 65536".into())
        );
        assert_eq!(
            resolve(&IntOrString::Int(-1), &c),
            Err("invalid port number: -1".into())
        );
        assert_eq!(
            resolve(&IntOrString::String("99999999999".into()), &c),
            Err("invalid port number: 99999999999".into())
        );
    }

    #[test]
    fn joins_ipv6_in_brackets_and_prefers_the_handler_host() {
        assert_eq!(join_host_port("fd00::5", 80), "[fd00::5]:80");
        assert_eq!(join_host_port("10.1.0.5", 80), "10.1.0.5:80");
        assert_eq!(
            host_or_pod_ip(Some(""), Some("10.1.0.5")),
            Ok("10.1.0.5".into())
        );
        assert_eq!(
            host_or_pod_ip(Some("example"), Some("10.1.0.5")),
            Ok("example".into())
        );
        assert!(host_or_pod_ip(None, None).is_err());
    }
}
