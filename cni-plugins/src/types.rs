//! The CNI specification's data: network configuration, execution environment and results.
//! Results are held in the 1.x layout and converted to older layouts when printed.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version;

/// The common part of a plugin's network configuration (the rest is plugin-specific).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of this configuration and of the result expected.
    pub cni_version: String,
    /// Network name, unique per host.
    pub name: String,
    /// Plugin executable name.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// IPAM plugin configuration, for plugins that delegate addressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    /// DNS settings to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The previous plugin's result in a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// Dynamic information from the runtime (port mappings, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    /// For GC: the attachments that must be kept.
    #[serde(
        default,
        rename = "cni.dev/valid-attachments",
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Everything else (plugin-specific fields).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl NetConf {
    /// Parse a configuration, mapping failures to the spec's codes (6: not JSON, 7: invalid).
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decoding("network configuration is not valid JSON", e))?;
        serde_json::from_value(value)
            .map_err(|e| CniError::invalid_config(format!("invalid network configuration: {e}")))
    }

    /// GC's list of attachments to keep. Required: a missing (or `null`) list is refused
    /// rather than read as "keep nothing", which would release every attachment.
    pub fn valid_attachments(&self) -> Result<&[Attachment], CniError> {
        self.valid_attachments
            .as_deref()
            .ok_or_else(|| CniError::invalid_config("GC requires cni.dev/valid-attachments"))
    }

    /// The previous result, converted to the 1.x layout.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .clone()
            .map(|value| {
                serde_json::from_value(value)
                    .map_err(|e| CniError::invalid_config(format!("invalid prevResult: {e}")))
            })
            .transpose()
    }
}

/// A container attachment named in GC's valid list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A plugin's success result (1.x layout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Spec version of the result.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes to install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// The result as JSON in the layout of `version` (pre-1.0 results tag each IP with its
    /// family).
    pub fn to_version(&self, version: &str) -> Value {
        let mut result = self.clone();
        result.cni_version = version.to_owned();
        for ip in &mut result.ips {
            ip.version = if version::is_1x(version) {
                None
            } else {
                Some(if ip.address.addr.is_ipv4() { "4" } else { "6" }.to_owned())
            };
        }
        serde_json::to_value(result).unwrap_or(Value::Null)
    }
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container interfaces, empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Default gateway for the address's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Address family ("4" or "6"), only in pre-1.0 results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A route in a result or an IPAM config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; the default gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Route priority (metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// An IP network or interface address: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address (host bits may be set, as in an interface address).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Address bits of the family (32 or 128).
    pub fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        from_bits(self.addr, to_bits(self.addr) & self.mask())
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && to_bits(ip) & self.mask() == to_bits(self.network())
    }

    /// The last address of the network (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        from_bits(
            self.addr,
            to_bits(self.network()) | !self.mask() & family_mask(self.addr),
        )
    }

    fn mask(&self) -> u128 {
        let bits = u32::from(self.max_prefix());
        let host = bits - u32::from(self.prefix);
        let all = family_mask(self.addr);
        if host >= 128 {
            0
        } else {
            (all >> host) << host & all
        }
    }
}

fn family_mask(addr: IpAddr) -> u128 {
    if addr.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

/// An address as an integer.
pub fn to_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An integer as an address of `family`'s kind.
pub fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(
            (bits & u128::from(u32::MAX)) as u32,
        )),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(bits)),
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not an address/prefix"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} has an invalid address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{text:?} has an invalid prefix length"))?;
        let net = Self { addr, prefix };
        if prefix > net.max_prefix() {
            return Err(format!(
                "{text:?} has a prefix length beyond {}",
                net.max_prefix()
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The CNI operation requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Report readiness.
    Status,
    /// Release resources of attachments not in the valid list.
    Gc,
}

impl Command {
    /// The command's `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Version => "VERSION",
            Self::Status => "STATUS",
            Self::Gc => "GC",
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` directories.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Read and check the environment (variables required per command, as the spec says).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(CniError::invalid_environment(format!(
                    "unknown CNI_COMMAND {other:?}"
                )))
            }
            None => return Err(CniError::invalid_environment("CNI_COMMAND is not set")),
        };
        let needs = |name: &str| -> Result<String, CniError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(value) => Ok(value),
                None => Err(CniError::invalid_environment(format!(
                    "{name} is required for this command"
                ))),
            }
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = if per_attachment {
            needs("CNI_CONTAINERID")?
        } else {
            String::new()
        };
        let ifname = if per_attachment {
            needs("CNI_IFNAME")?
        } else {
            String::new()
        };
        let netns = match command {
            Command::Add | Command::Check => Some(PathBuf::from(needs("CNI_NETNS")?)),
            _ => get("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None => Err(CniError::invalid_environment(format!(
                    "CNI_ARGS entry {pair:?} is not KEY=VALUE"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let path = std::env::split_paths(&get("CNI_PATH").unwrap_or_default()).collect();
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_compute() {
        let net: IpNet = "10.22.3.7/16".parse().unwrap();
        assert_eq!(net.network().to_string(), "10.22.0.0");
        assert_eq!(net.last().to_string(), "10.22.255.255");
        assert!(net.contains("10.22.200.1".parse().unwrap()));
        assert!(!net.contains("10.23.0.1".parse().unwrap()));
        let v6: IpNet = "fd00:1::5/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:1::");
        assert!(v6.contains("fd00:1::ffff".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_map_errors_to_spec_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"x"}"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("name"), "{err}");
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","bridge":"cni0","ipam":{"type":"y"}}"#,
        )
        .unwrap();
        assert_eq!(conf.rest["bridge"], "cni0");
        assert!(conf.ipam.is_some());
    }

    #[test]
    fn results_convert_to_older_layouts() {
        let result = CniResult {
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
                version: None,
            }],
            ..Default::default()
        };
        let old = result.to_version("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        let new = result.to_version("1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["address"], "10.1.0.5/24");
    }

    #[test]
    fn command_names_are_what_from_vars_reads() {
        use Command::*;
        for command in [Add, Del, Check, Version, Status, Gc] {
            let env = Env::from_vars(|k| match k {
                "CNI_COMMAND" => Some(command.as_str().to_owned()),
                "CNI_CONTAINERID" => Some("c1".to_owned()),
                "CNI_IFNAME" => Some("eth0".to_owned()),
                "CNI_NETNS" => Some("/run/netns/x".to_owned()),
                _ => None,
            })
            .unwrap();
            assert_eq!(env.command, command);
        }
    }

    #[test]
    fn environment_requirements_follow_the_command() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let env = Env::from_vars(vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"),
        ]))
        .unwrap();
        assert_eq!(env.args[1], ("K8S_POD_NAME".into(), "p".into()));
        let err =
            Env::from_vars(vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])).unwrap_err();
        assert_eq!(err.code, 4);
        // DEL does not need a netns; VERSION needs nothing.
        assert!(Env::from_vars(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0")
        ]))
        .is_ok());
        assert!(Env::from_vars(vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert_eq!(Env::from_vars(vars(&[])).unwrap_err().code, 4);
    }
}
