//! What the runtime attaches: a pod's network namespace and interface, the pod's identity
//! (passed to plugins as `CNI_ARGS`) and its port mappings (the `portMappings` capability).

use std::net::IpAddr;
use std::path::PathBuf;

use cni_plugins::types::{self, CniResult};
use serde_json::{json, Map, Value};

use super::error::NetworkError;

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
const MAX_IFNAME: usize = 15;

/// Longest container ID accepted (it becomes part of a file name).
const MAX_CONTAINER_ID: usize = 200;

/// A pod sandbox to attach to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The sandbox ID (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface inside the pod (`CNI_IFNAME`, normally "eth0").
    pub ifname: String,
    /// Who the pod is (`CNI_ARGS`).
    pub pod: PodIdentity,
    /// Host ports forwarded into the pod.
    pub port_mappings: Vec<PortMapping>,
}

/// The Kubernetes identity of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// A host port forwarded to a pod port (one entry of the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: u16,
    /// Port in the pod.
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// Node address to bind; empty for all.
    pub host_ip: String,
}

/// An existing attachment, as DEL, CHECK and GC name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentRef {
    /// The sandbox ID.
    pub container_id: String,
    /// The interface inside the pod.
    pub ifname: String,
}

impl From<&Attachment> for AttachmentRef {
    fn from(attachment: &Attachment) -> Self {
        Self {
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
        }
    }
}

impl From<&AttachmentRef> for types::Attachment {
    fn from(reference: &AttachmentRef) -> Self {
        Self {
            container_id: reference.container_id.clone(),
            ifname: reference.ifname.clone(),
        }
    }
}

impl AttachmentRef {
    /// Check that the IDs can be passed to plugins and used in cache file names.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let id = &self.container_id;
        let id_ok = !id.is_empty()
            && id.len() <= MAX_CONTAINER_ID
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(NetworkError::InvalidAttachment(format!(
                "container ID {id:?} must be 1 to {MAX_CONTAINER_ID} letters, digits, '_', '.' \
                 or '-' and not start with '.'"
            )));
        }
        let ifname = &self.ifname;
        let ifname_ok = !ifname.is_empty()
            && ifname.len() <= MAX_IFNAME
            && ifname != "."
            && ifname != ".."
            && !ifname
                .contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if !ifname_ok {
            return Err(NetworkError::InvalidAttachment(format!(
                "interface name {ifname:?} is not a valid Linux interface name"
            )));
        }
        Ok(())
    }
}

impl Attachment {
    /// Check IDs and the values passed in `CNI_ARGS` and `runtimeConfig`.
    pub fn validate(&self) -> Result<(), NetworkError> {
        AttachmentRef::from(self).validate()?;
        if self.netns.as_os_str().is_empty() {
            return Err(NetworkError::InvalidAttachment(
                "no network namespace path".to_owned(),
            ));
        }
        let pod = &self.pod;
        for (what, value) in [
            ("namespace", &pod.namespace),
            ("name", &pod.name),
            ("uid", &pod.uid),
        ] {
            // ';' separates CNI_ARGS pairs and cannot be escaped.
            if value.contains(|c: char| c == ';' || c.is_control()) {
                return Err(NetworkError::InvalidAttachment(format!(
                    "pod {what} {value:?} contains ';' or a control character"
                )));
            }
        }
        for mapping in &self.port_mappings {
            if !matches!(mapping.protocol.as_str(), "tcp" | "udp" | "sctp") {
                return Err(NetworkError::InvalidAttachment(format!(
                    "port mapping protocol {:?} is not tcp, udp or sctp",
                    mapping.protocol
                )));
            }
            if mapping.host_port == 0 || mapping.container_port == 0 {
                return Err(NetworkError::InvalidAttachment(format!(
                    "port mapping {}→{} uses port 0",
                    mapping.host_port, mapping.container_port
                )));
            }
            if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<IpAddr>().is_err() {
                return Err(NetworkError::InvalidAttachment(format!(
                    "port mapping host IP {:?} is not an address",
                    mapping.host_ip
                )));
            }
        }
        Ok(())
    }

    /// The `CNI_ARGS` pairs Kubernetes runtimes pass.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.pod.namespace.as_str()),
            ("K8S_POD_NAME", self.pod.name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id.as_str()),
            ("K8S_POD_UID", self.pod.uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The capability arguments the runtime offers; each plugin gets those it declares.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mappings = self
            .port_mappings
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol,
                });
                if !m.host_ip.is_empty() {
                    entry["hostIP"] = Value::from(m.host_ip.as_str());
                }
                entry
            })
            .collect();
        let mut args = Map::new();
        args.insert("portMappings".into(), Value::Array(mappings));
        args
    }
}

/// `CNI_ARGS` for DEL when nothing about the pod is known but its sandbox ID.
pub(crate) fn minimal_cni_args(container_id: &str) -> Vec<(String, String)> {
    vec![
        ("IgnoreUnknown".to_owned(), "1".to_owned()),
        (
            "K8S_POD_INFRA_CONTAINER_ID".to_owned(),
            container_id.to_owned(),
        ),
    ]
}

/// The pod's addresses for PodSandboxStatus: the first IPv4 address first, then the first
/// IPv6 address (Kubernetes takes at most one per family). Addresses on container
/// interfaces are preferred over host-side ones when the result says which is which.
pub fn pod_ips(result: &CniResult) -> Vec<String> {
    let in_pod = |ip: &&types::IpConfig| {
        ip.interface
            .and_then(|index| result.interfaces.get(index))
            .is_some_and(|iface| !iface.sandbox.is_empty())
    };
    let mut candidates: Vec<IpAddr> = result
        .ips
        .iter()
        .filter(in_pod)
        .map(|ip| ip.address.addr)
        .collect();
    if candidates.is_empty() {
        candidates = result.ips.iter().map(|ip| ip.address.addr).collect();
    }
    let v4 = candidates.iter().find(|a| a.is_ipv4());
    let v6 = candidates.iter().find(|a| a.is_ipv6());
    v4.into_iter().chain(v6).map(IpAddr::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            container_id: "abc123".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            pod: PodIdentity {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u-1".into(),
            },
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
            }],
        }
    }

    #[test]
    fn args_and_capabilities() {
        let a = attachment();
        a.validate().unwrap();
        let args: Vec<String> = a
            .cni_args()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            args.join(";"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        assert_eq!(
            Value::Object(a.capability_args()),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
                                     "hostIP": "127.0.0.1"}]})
        );
    }

    #[test]
    fn unsafe_values_are_refused() {
        let cases: [fn(&mut Attachment); 7] = [
            |a| a.container_id = "../etc".into(),
            |a| a.container_id = String::new(),
            |a| a.ifname = "a/b".into(),
            |a| a.ifname = "much-too-long-interface".into(),
            |a| a.pod.name = "x;K8S_POD_UID=evil".into(),
            |a| a.port_mappings[0].protocol = "icmp".into(),
            |a| a.port_mappings[0].host_ip = "localhost".into(),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut a = attachment();
            change(&mut a);
            assert!(
                matches!(a.validate(), Err(NetworkError::InvalidAttachment(_))),
                "case {i}"
            );
        }
    }

    #[test]
    fn pod_ips_prefer_container_addresses_v4_first() {
        let result: CniResult = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "eth0", "mac": "bb:bb:bb:bb:bb:bb", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.0.0.1/24", "interface": 0},
                {"address": "fd00::5/64", "interface": 1},
                {"address": "10.0.0.5/24", "interface": 1},
                {"address": "10.0.0.6/24", "interface": 1},
                {"address": "fd00::6/64", "interface": 1}
            ]
        }))
        .unwrap();
        assert_eq!(pod_ips(&result), ["10.0.0.5", "fd00::5"]);
        let bare: CniResult =
            serde_json::from_value(json!({"ips": [{"address": "fd00::7/64"}]})).unwrap();
        assert_eq!(pod_ips(&bare), ["fd00::7"]);
        assert!(pod_ips(&CniResult::default()).is_empty());
    }
}
