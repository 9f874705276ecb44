//! The portmap configuration: the plugin's own fields and the runtime's port mappings,
//! validated into typed values (code 7 naming the offending field).

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::error::CniError;
use crate::types::{CniResult, IpNet};

/// The nftables table used when the configuration names none.
pub const DEFAULT_TABLE: &str = "capstan-portmap";

/// Longest table name accepted (it also names the lock file).
const MAX_TABLE_LEN: usize = 64;

/// The plugin-specific configuration fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortmapConf {
    /// Masquerade hairpin and localhost traffic to the host ports (default true).
    #[serde(default)]
    snat: Option<bool>,
    /// The nftables `inet` table holding the rules.
    #[serde(default)]
    table: Option<String>,
}

impl PortmapConf {
    /// Whether hairpin/localhost traffic is masqueraded.
    pub fn snat(&self) -> bool {
        self.snat.unwrap_or(true)
    }

    /// The validated table name: it is spliced into nft scripts, which cannot quote names.
    pub fn table(&self) -> Result<&str, CniError> {
        let table = self.table.as_deref().unwrap_or(DEFAULT_TABLE);
        let valid = table.len() <= MAX_TABLE_LEN
            && table.starts_with(|c: char| c.is_ascii_alphabetic())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(table)
        } else {
            Err(CniError::invalid_config(format!(
                "table: {table:?} is not a valid table name (a letter, then up to \
                 {MAX_TABLE_LEN} letters, digits, '-' or '_')"
            )))
        }
    }
}

/// A transport protocol a mapping forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        })
    }
}

/// One validated port mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Port on the node.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Node address to match; `None` for every local address of both families.
    pub host_ip: Option<IpAddr>,
}

/// A mapping as the runtime sends it, before validation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    host_port: Option<i64>,
    container_port: Option<i64>,
    protocol: Option<String>,
    #[serde(rename = "hostIP")]
    host_ip: Option<String>,
}

/// The port mappings in `runtimeConfig.portMappings` (none when absent).
pub fn port_mappings(runtime_config: Option<&Value>) -> Result<Vec<PortMapping>, CniError> {
    let field = "runtimeConfig.portMappings";
    let list = match runtime_config.and_then(|rc| rc.get("portMappings")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(CniError::invalid_config(format!("{field} is not a list"))),
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let raw: RawMapping = serde_json::from_value(entry.clone())
                .map_err(|e| CniError::invalid_config(format!("{field}[{i}]: {e}")))?;
            validate(&raw, &format!("{field}[{i}]"))
        })
        .collect()
}

fn validate(raw: &RawMapping, at: &str) -> Result<PortMapping, CniError> {
    let port = |value: Option<i64>, name: &str| {
        let value =
            value.ok_or_else(|| CniError::invalid_config(format!("{at}.{name} is required")))?;
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                CniError::invalid_config(format!(
                    "{at}.{name}: {value} is not a port number (1-65535)"
                ))
            })
    };
    let protocol = match raw
        .protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some("sctp") => Protocol::Sctp,
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "{at}.protocol: {other:?} is not tcp, udp or sctp"
            )))
        }
    };
    let host_ip = match raw.host_ip.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
            CniError::invalid_config(format!("{at}.hostIP: {text:?} is not an IP address"))
        })?),
    };
    Ok(PortMapping {
        host_port: port(raw.host_port, "hostPort")?,
        container_port: port(raw.container_port, "containerPort")?,
        protocol,
        host_ip,
    })
}

/// The container's addresses (with their subnets) that mappings forward to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAddrs {
    /// The IPv4 address.
    pub v4: Option<IpNet>,
    /// The IPv6 address.
    pub v6: Option<IpNet>,
}

impl ContainerAddrs {
    /// The first address of each family in `result`, preferring ones on the sandbox
    /// interface `ifname` (a result may also list host-side addresses).
    pub fn from_result(result: &CniResult, ifname: &str) -> Self {
        let on_ifname = |index: Option<usize>| {
            index
                .and_then(|i| result.interfaces.get(i))
                .is_some_and(|iface| iface.name == ifname && !iface.sandbox.is_empty())
        };
        let pick = |v4: bool| {
            let family = || {
                result
                    .ips
                    .iter()
                    .filter(move |ip| ip.address.addr.is_ipv4() == v4)
            };
            family()
                .find(|ip| on_ifname(ip.interface))
                .or_else(|| family().next())
                .map(|ip| ip.address)
        };
        Self {
            v4: pick(true),
            v6: pick(false),
        }
    }

    /// The container address of `addr`'s family.
    pub fn of_family(&self, v4: bool) -> Option<IpNet> {
        if v4 {
            self.v4
        } else {
            self.v6
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(mapping: Value) -> Result<Vec<PortMapping>, CniError> {
        port_mappings(Some(&json!({ "portMappings": [mapping] })))
    }

    #[test]
    fn mappings_are_validated_naming_the_field() {
        let ok = one(
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "UDP",
                            "hostIP": "10.0.0.1"}),
        )
        .unwrap();
        assert_eq!(ok[0].protocol, Protocol::Udp);
        assert_eq!(ok[0].host_ip, Some("10.0.0.1".parse().unwrap()));
        let default = one(json!({"hostPort": 1, "containerPort": 65535, "hostIP": ""})).unwrap();
        assert_eq!(
            (default[0].protocol, default[0].host_ip),
            (Protocol::Tcp, None)
        );
        for (bad, field) in [
            (json!({"hostPort": 0, "containerPort": 80}), "hostPort"),
            (json!({"hostPort": 70000, "containerPort": 80}), "hostPort"),
            (json!({"hostPort": -1, "containerPort": 80}), "hostPort"),
            (json!({"hostPort": 80}), "containerPort"),
            (
                json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}),
                "protocol",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "hostIP": "x"}),
                "hostIP",
            ),
            (
                json!({"hostPort": "80", "containerPort": 80}),
                "portMappings[0]",
            ),
        ] {
            let err = one(bad.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{bad}");
            assert!(err.msg.contains(field), "{bad}: {}", err.msg);
        }
        assert!(port_mappings(None).unwrap().is_empty());
        assert!(port_mappings(Some(&json!({"portMappings": 3}))).is_err());
    }

    #[test]
    fn table_names_must_be_plain_identifiers() {
        let conf =
            |t: Value| -> PortmapConf { serde_json::from_value(json!({ "table": t })).unwrap() };
        assert_eq!(conf(Value::Null).table().unwrap(), DEFAULT_TABLE);
        assert!(conf(json!("pm_1-x")).table().is_ok());
        for bad in ["", "1abc", "a b", "a;flush ruleset", "a\"b"] {
            assert_eq!(conf(json!(bad)).table().unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn container_addresses_prefer_the_sandbox_interface() {
        let result: CniResult = serde_json::from_value(json!({
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.0.0.1/24", "interface": 0},
                    {"address": "10.0.0.5/24", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}]
        }))
        .unwrap();
        let addrs = ContainerAddrs::from_result(&result, "eth0");
        assert_eq!(addrs.v4.unwrap().to_string(), "10.0.0.5/24");
        assert_eq!(addrs.v6.unwrap().to_string(), "fd00::5/64");
    }
}
