//! Host port conflicts (the scheduler's `nodeports` check): a `hostPort` already taken by an
//! admitted pod for the same protocol on the same or a wildcard address.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// One `hostIP:hostPort/protocol` a pod claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPort {
    ip: String,
    port: i32,
    protocol: String,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.protocol)
    }
}

impl HostPort {
    fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || wildcard(&self.ip) || wildcard(&other.ip))
    }
}

/// The host ports of app containers and sidecars (restartable init containers), with the
/// API defaults (address 0.0.0.0, protocol TCP) filled in.
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|port| *port > 0)?;
            let ip = p.host_ip.as_deref().filter(|ip| !ip.is_empty());
            let protocol = p.protocol.as_deref().filter(|p| !p.is_empty());
            Some(HostPort {
                ip: ip.unwrap_or("0.0.0.0").to_owned(),
                port,
                protocol: protocol.unwrap_or("TCP").to_owned(),
            })
        })
        .collect()
}

/// The first of the pod's host ports an admitted pod already holds.
pub(super) fn conflict(pod: &Pod, active: &[&Pod]) -> Option<HostPort> {
    let taken: Vec<HostPort> = active.iter().flat_map(|p| host_ports(p)).collect();
    host_ports(pod)
        .into_iter()
        .find(|wanted| taken.iter().any(|t| t.conflicts(wanted)))
}
