//! The plugin entry point every Capstan CNI plugin shares: read `CNI_*` and the config from
//! stdin, dispatch the command, print the result or the spec's error JSON.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::json;

use crate::error::{code, CniError};
use crate::types::{CniResult, Command, Env, NetConf};
use crate::version;

/// Largest network configuration read from stdin.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One invocation: its environment and configuration.
#[derive(Debug)]
pub struct Context {
    /// The `CNI_*` variables.
    pub env: Env,
    /// The common configuration fields.
    pub conf: NetConf,
    /// The configuration as received, for plugin-specific fields.
    pub raw: Vec<u8>,
}

impl Context {
    /// Parse the plugin-specific configuration (code 7 on failure).
    pub fn plugin_conf<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_slice(&self.raw).map_err(|e| {
            CniError::invalid_config(format!(
                "invalid {} configuration: {e}",
                self.conf.plugin_type
            ))
        })
    }
}

/// What a plugin does for each command.
pub trait Plugin {
    /// ADD: create the attachment and describe it.
    fn add(&self, ctx: &Context) -> Result<CniResult, CniError>;
    /// DEL: remove the attachment; succeeds when parts are already gone.
    fn del(&self, ctx: &Context) -> Result<(), CniError>;
    /// CHECK: verify what ADD made.
    fn check(&self, ctx: &Context) -> Result<(), CniError>;
    /// STATUS: whether the plugin can serve ADDs now.
    fn status(&self, _ctx: &Context) -> Result<(), CniError> {
        Ok(())
    }
    /// GC: release what attachments outside the valid list hold.
    fn gc(&self, _ctx: &Context) -> Result<(), CniError> {
        Ok(())
    }
}

/// Run `plugin` as a CNI executable.
pub fn run(plugin: &impl Plugin) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match dispatch(plugin, |k| std::env::var(k).ok(), std::io::stdin().lock()) {
        Ok(Some(output)) => {
            let _ = writeln!(stdout, "{output}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(stdout, "{}", serde_json::to_value(&err).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

/// The command's output (none for DEL, CHECK, STATUS, GC), or the error to report.
pub fn dispatch(
    plugin: &impl Plugin,
    vars: impl Fn(&str) -> Option<String>,
    stdin: impl Read,
) -> Result<Option<serde_json::Value>, CniError> {
    let env = Env::from_vars(vars)?;
    let mut raw = Vec::new();
    stdin
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| CniError::io("reading the network configuration", e))?;
    if raw.len() as u64 > MAX_CONFIG_BYTES {
        return Err(CniError::invalid_config(format!(
            "network configuration exceeds {MAX_CONFIG_BYTES} bytes"
        )));
    }
    if env.command == Command::Version {
        return Ok(Some(version_answer(&raw)));
    }
    let conf = NetConf::parse(&raw)?;
    version::require_supported(&conf.cni_version)?;
    let cni_version = conf.cni_version.clone();
    let requires = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("{what} is not defined for CNI {cni_version}"),
                "",
            ))
        }
    };
    let ctx = Context { env, conf, raw };
    let outcome = match ctx.env.command {
        Command::Add => plugin.add(&ctx).map(|r| Some(r.to_version(&cni_version))),
        Command::Del => plugin.del(&ctx).map(|()| None),
        Command::Check => {
            requires(version::has_check(&cni_version), "CHECK")?;
            plugin.check(&ctx).map(|()| None)
        }
        Command::Status => {
            requires(version::has_status_and_gc(&cni_version), "STATUS")?;
            plugin.status(&ctx).map(|()| None)
        }
        Command::Gc => {
            requires(version::has_status_and_gc(&cni_version), "GC")?;
            plugin.gc(&ctx).map(|()| None)
        }
        Command::Version => Ok(Some(version_answer(&ctx.raw))),
    };
    outcome.map_err(|e| e.in_version(&cni_version))
}

/// VERSION's answer: the versions supported, in the version asked for (or the latest).
fn version_answer(raw: &[u8]) -> serde_json::Value {
    let asked = serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_owned());
    json!({"cniVersion": asked, "supportedVersions": version::SUPPORTED})
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Plugin for Echo {
        fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
            Ok(CniResult {
                interfaces: vec![crate::types::Interface {
                    name: ctx.env.ifname.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Context) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Context) -> Result<(), CniError> {
            Err(CniError::new(101, "nothing to check", ""))
        }
    }

    fn env(command: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k| match k {
            "CNI_COMMAND" => Some(command.to_owned()),
            "CNI_CONTAINERID" => Some("c".to_owned()),
            "CNI_NETNS" => Some("/proc/self/ns/net".to_owned()),
            "CNI_IFNAME" => Some("eth0".to_owned()),
            _ => None,
        }
    }

    const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"n","type":"echo"}"#;

    #[test]
    fn commands_dispatch_and_errors_carry_codes() {
        let out = dispatch(&Echo, env("ADD"), CONF).unwrap().unwrap();
        assert_eq!(out["interfaces"][0]["name"], "eth0");
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(dispatch(&Echo, env("DEL"), CONF).unwrap(), None);
        let err = dispatch(&Echo, env("CHECK"), CONF).unwrap_err();
        assert_eq!((err.code, err.cni_version.as_str()), (101, "1.0.0"));
        // STATUS and GC only exist from 1.1.0.
        assert_eq!(dispatch(&Echo, env("STATUS"), CONF).unwrap_err().code, 1);
        let conf11 = br#"{"cniVersion":"1.1.0","name":"n","type":"echo"}"#;
        assert_eq!(dispatch(&Echo, env("STATUS"), &conf11[..]).unwrap(), None);
        let old = br#"{"cniVersion":"9.9.9","name":"n","type":"echo"}"#;
        assert_eq!(dispatch(&Echo, env("ADD"), &old[..]).unwrap_err().code, 1);
        assert_eq!(
            dispatch(&Echo, env("ADD"), &b"[1,"[..]).unwrap_err().code,
            6
        );
    }

    #[test]
    fn version_lists_supported_versions() {
        let out = dispatch(&Echo, env("VERSION"), &br#"{"cniVersion":"0.4.0"}"#[..])
            .unwrap()
            .unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(
            out["supportedVersions"].as_array().unwrap().len(),
            version::SUPPORTED.len()
        );
    }
}
