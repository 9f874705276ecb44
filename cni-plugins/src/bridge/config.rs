//! The bridge plugin's configuration, with the reference `bridge` plugin's field names and
//! defaults; every rejection names the offending field.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::skel::Context;
use crate::types::Dns;

/// Bridge used when the config names none (as the reference plugin).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// A validated bridge network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// Network name (for masquerade bookkeeping).
    pub network: String,
    /// Bridge device name.
    pub bridge: String,
    /// Put the gateway addresses on the bridge (implied by `is_default_gateway`).
    pub is_gateway: bool,
    /// Route the container's default traffic via the gateway.
    pub is_default_gateway: bool,
    /// Masquerade traffic leaving the pod subnets.
    pub ip_masq: bool,
    /// Let traffic return through the port it came in by.
    pub hairpin_mode: bool,
    /// Put the bridge in promiscuous mode.
    pub promisc_mode: bool,
    /// MTU of the veth pair (and of a newly created bridge); `None`: the bridge's.
    pub mtu: Option<u32>,
    /// The IPAM plugin's executable name.
    pub ipam_type: String,
    /// DNS settings returned in the result.
    pub dns: Dns,
}

impl BridgeConf {
    /// Read and validate the configuration and the interface name of `ctx`.
    pub fn from_context(ctx: &Context) -> Result<Self, CniError> {
        let rest = &ctx.conf.rest;
        let bridge: String = field(rest, "bridge")?.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        if let Err(why) = check_ifname(&bridge) {
            return Err(CniError::invalid_config(format!(
                "field `bridge`: {bridge:?} {why}"
            )));
        }
        if !ctx.env.ifname.is_empty() {
            if let Err(why) = check_ifname(&ctx.env.ifname) {
                return Err(CniError::invalid_environment(format!(
                    "CNI_IFNAME {:?} {why}",
                    ctx.env.ifname
                )));
            }
        }
        let mtu = match field::<u32>(rest, "mtu")? {
            None | Some(0) => None,
            Some(mtu @ 68..=65535) => Some(mtu),
            Some(mtu) => {
                return Err(CniError::invalid_config(format!(
                    "field `mtu`: {mtu} is outside 68..=65535"
                )))
            }
        };
        let is_default_gateway = flag(rest, "isDefaultGateway")?;
        Ok(Self {
            network: ctx.conf.name.clone(),
            bridge,
            is_gateway: flag(rest, "isGateway")? || is_default_gateway,
            is_default_gateway,
            ip_masq: flag(rest, "ipMasq")?,
            hairpin_mode: flag(rest, "hairpinMode")?,
            promisc_mode: flag(rest, "promiscMode")?,
            mtu,
            ipam_type: ipam_type(ctx.conf.ipam.as_ref())?,
            dns: ctx.conf.dns.clone().unwrap_or_default(),
        })
    }
}

/// `ipam.type`, required: this plugin always delegates addressing.
fn ipam_type(ipam: Option<&Value>) -> Result<String, CniError> {
    let ipam = ipam.ok_or_else(|| {
        CniError::invalid_config("field `ipam` is missing: capstan-bridge needs an IPAM plugin")
    })?;
    match ipam.get("type").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && !name.contains('/') => Ok(name.to_owned()),
        Some(name) => Err(CniError::invalid_config(format!(
            "field `ipam.type`: {name:?} is not a plugin name"
        ))),
        None => Err(CniError::invalid_config(
            "field `ipam.type` is missing or not a string",
        )),
    }
}

/// An optional field of type `T`; `null` counts as absent.
fn field<T: DeserializeOwned>(rest: &Map<String, Value>, key: &str) -> Result<Option<T>, CniError> {
    match rest.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| CniError::invalid_config(format!("field `{key}`: {e}"))),
    }
}

fn flag(rest: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    Ok(field(rest, key)?.unwrap_or(false))
}

/// Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        Err("must be 1 to 15 bytes long")
    } else if name == "." || name == ".." {
        Err("is reserved")
    } else if name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
        Err("contains '/', ':' or whitespace")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Env, NetConf};

    fn ctx(json: &str) -> Context {
        Context {
            env: Env {
                command: Command::Add,
                container_id: "c".into(),
                netns: None,
                ifname: "eth0".into(),
                args: vec![],
                path: vec![],
            },
            conf: NetConf::parse(json.as_bytes()).unwrap(),
            raw: json.as_bytes().to_vec(),
        }
    }

    const BASE: &str = r#""cniVersion":"1.0.0","name":"n","type":"capstan-bridge""#;

    #[test]
    fn defaults_follow_the_reference_plugin() {
        let conf = BridgeConf::from_context(&ctx(&format!(
            r#"{{{BASE},"ipam":{{"type":"host-local"}}}}"#
        )))
        .unwrap();
        assert_eq!(conf.bridge, "cni0");
        assert_eq!(conf.mtu, None);
        assert!(!conf.is_gateway && !conf.ip_masq && !conf.hairpin_mode);
        assert_eq!(conf.ipam_type, "host-local");
        let conf = BridgeConf::from_context(&ctx(&format!(
            r#"{{{BASE},"bridge":"br1","isDefaultGateway":true,"mtu":1400,"ipam":{{"type":"x"}}}}"#
        )))
        .unwrap();
        assert!(conf.is_gateway && conf.is_default_gateway);
        assert_eq!((conf.bridge.as_str(), conf.mtu), ("br1", Some(1400)));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (r#""bridge":"br1""#, "`ipam`"),
            (r#""ipam":{}"#, "`ipam.type`"),
            (r#""ipam":{"type":"../x"}"#, "`ipam.type`"),
            (r#""isGateway":"yes","ipam":{"type":"x"}"#, "`isGateway`"),
            (r#""mtu":10,"ipam":{"type":"x"}"#, "`mtu`"),
            (r#""bridge":"a/b","ipam":{"type":"x"}"#, "`bridge`"),
            (
                r#""bridge":"waytoolongbridgename","ipam":{"type":"x"}"#,
                "`bridge`",
            ),
        ] {
            let err = BridgeConf::from_context(&ctx(&format!("{{{BASE},{body}}}"))).unwrap_err();
            assert_eq!(err.code, 7, "{body}");
            assert!(err.msg.contains(field), "{body}: {err}");
        }
    }
}
