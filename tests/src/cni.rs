//! Invoking CNI plugins exactly as a runtime does: `CNI_*` variables, the config on stdin,
//! the result or error JSON on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

/// Where Debian's reference plugins live.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// One plugin invocation's outcome.
#[derive(Debug)]
pub struct Invocation {
    /// Whether the plugin exited 0.
    pub success: bool,
    /// stdout parsed as JSON (`Null` when empty).
    pub json: Value,
    /// stderr, for diagnostics.
    pub stderr: String,
}

impl Invocation {
    /// The result, or an error with the plugin's error JSON and stderr.
    pub fn ok(self) -> Result<Value> {
        anyhow::ensure!(self.success, "plugin failed: {} {}", self.json, self.stderr);
        Ok(self.json)
    }

    /// The spec error code of a failed invocation.
    pub fn code(&self) -> Option<u64> {
        self.json.get("code").and_then(Value::as_u64)
    }
}

/// The attachment a plugin is asked about.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty for none).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// Run `plugin` (a path) for `command` with `config` on stdin; `cni_path` is searched by
/// plugins that delegate (e.g. to an IPAM plugin).
pub fn invoke(
    plugin: &Path,
    command: &str,
    attachment: &Attachment,
    config: &Value,
    cni_path: &[PathBuf],
) -> Result<Invocation> {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_NETNS", &attachment.netns)
        .env("CNI_IFNAME", &attachment.ifname)
        .env("CNI_PATH", std::env::join_paths(cni_path)?)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(config.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let json = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "{} printed non-JSON: {}",
                plugin.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })?
    };
    Ok(Invocation {
        success: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run a plugin chain (a conflist's `plugins`) for ADD as a runtime does: each plugin gets
/// the network's name and version and the previous plugin's result as `prevResult`.
pub fn add_chain(
    plugins: &[(PathBuf, Value)],
    name: &str,
    version: &str,
    attachment: &Attachment,
    cni_path: &[PathBuf],
) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for (plugin, conf) in plugins {
        let conf = chained_conf(conf, name, version, prev.as_ref());
        prev = Some(invoke(plugin, "ADD", attachment, &conf, cni_path)?.ok()?);
    }
    prev.context("empty plugin chain")
}

/// DEL through a chain in reverse order, each with the final ADD result as `prevResult`.
pub fn del_chain(
    plugins: &[(PathBuf, Value)],
    name: &str,
    version: &str,
    attachment: &Attachment,
    result: Option<&Value>,
    cni_path: &[PathBuf],
) -> Result<()> {
    for (plugin, conf) in plugins.iter().rev() {
        let conf = chained_conf(conf, name, version, result);
        invoke(plugin, "DEL", attachment, &conf, cni_path)?.ok()?;
    }
    Ok(())
}

fn chained_conf(conf: &Value, name: &str, version: &str, prev: Option<&Value>) -> Value {
    let mut conf = conf.clone();
    conf["name"] = Value::from(name);
    conf["cniVersion"] = Value::from(version);
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}
