//! Running a delegated plugin (typically IPAM) as a runtime would: found by `type` in the
//! `CNI_PATH` directories, given the same `CNI_*` variables and the whole network config on
//! stdin; its result or error JSON comes back as a [`CniResult`] or [`CniError`].

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use serde_json::Value;

use crate::error::{code, CniError};
use crate::types::{CniResult, Command, Env};

/// Error code when the delegate cannot be found, run, or understood.
pub const DELEGATE_FAILED: u32 = code::PLUGIN_SPECIFIC;

/// The executable for plugin `name` in `dirs` (the first match, as the spec says).
pub fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CniError::invalid_config(format!(
            "plugin type {name:?} is not a plain executable name"
        )));
    }
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
        .ok_or_else(|| {
            CniError::new(
                DELEGATE_FAILED,
                format!("plugin {name:?} not found"),
                format!("searched CNI_PATH: {}", join_dirs(dirs)),
            )
        })
}

/// ADD through `plugin`: its result, converted to the 1.x layout.
pub fn add(plugin: &str, env: &Env, config: &[u8]) -> Result<CniResult, CniError> {
    start(plugin, Command::Add, env, config)?.wait_result()
}

/// DEL through `plugin`.
pub fn del(plugin: &str, env: &Env, config: &[u8]) -> Result<(), CniError> {
    exec(plugin, Command::Del, env, config).map(drop)
}

/// CHECK through `plugin`.
pub fn check(plugin: &str, env: &Env, config: &[u8]) -> Result<(), CniError> {
    exec(plugin, Command::Check, env, config).map(drop)
}

/// STATUS through `plugin`.
pub fn status(plugin: &str, env: &Env, config: &[u8]) -> Result<(), CniError> {
    exec(plugin, Command::Status, env, config).map(drop)
}

/// GC through `plugin`.
pub fn gc(plugin: &str, env: &Env, config: &[u8]) -> Result<(), CniError> {
    exec(plugin, Command::Gc, env, config).map(drop)
}

/// Run `plugin` for `command`: its stdout JSON on success (`None` when empty), its error
/// passed through unchanged on failure.
pub fn exec(
    plugin: &str,
    command: Command,
    env: &Env,
    config: &[u8],
) -> Result<Option<Value>, CniError> {
    start(plugin, command, env, config)?.wait()
}

/// Start `plugin` for `command` with `config` on stdin; the caller may work meanwhile and
/// collect the outcome with [`Running::wait`].
pub fn start(
    plugin: &str,
    command: Command,
    env: &Env,
    config: &[u8],
) -> Result<Running, CniError> {
    let path = find(plugin, &env.path)?;
    let mut process = Process::new(&path);
    process
        .env("CNI_COMMAND", command_name(command))
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", join_args(&env.args))
        .env("CNI_PATH", join_dirs(&env.path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &env.netns {
        Some(netns) => process.env("CNI_NETNS", netns),
        None => process.env_remove("CNI_NETNS"),
    };
    let mut child = process.spawn().map_err(|e| {
        CniError::new(
            DELEGATE_FAILED,
            format!("starting plugin {plugin:?} ({})", path.display()),
            e.to_string(),
        )
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading its config; its exit status tells what happened.
        let _ = stdin.write_all(config);
    }
    Ok(Running {
        child,
        plugin: plugin.to_owned(),
    })
}

/// A delegated plugin that is running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    plugin: String,
}

impl Running {
    /// Wait for the plugin: its stdout JSON on success (`None` when empty), its error passed
    /// through unchanged on failure.
    pub fn wait(self) -> Result<Option<Value>, CniError> {
        let plugin = self.plugin;
        let out = self.child.wait_with_output().map_err(|e| {
            CniError::new(
                DELEGATE_FAILED,
                format!("waiting for plugin {plugin:?}"),
                e.to_string(),
            )
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stdout = stdout.trim();
        if out.status.success() {
            if stdout.is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(stdout).map(Some).map_err(|e| {
                CniError::new(
                    DELEGATE_FAILED,
                    format!("plugin {plugin:?} printed invalid JSON: {e}"),
                    truncate(stdout),
                )
            });
        }
        Err(
            serde_json::from_str::<CniError>(stdout).unwrap_or_else(|_| {
                let stderr = String::from_utf8_lossy(&out.stderr);
                CniError::new(
                    DELEGATE_FAILED,
                    format!(
                        "plugin {plugin:?} failed ({}) without a CNI error",
                        out.status
                    ),
                    truncate(&format!("stdout: {stdout} stderr: {}", stderr.trim())),
                )
            }),
        )
    }

    /// Wait for an ADD: its result, converted to the 1.x layout.
    pub fn wait_result(self) -> Result<CniResult, CniError> {
        let plugin = self.plugin.clone();
        let value = self.wait()?.ok_or_else(|| {
            CniError::new(
                DELEGATE_FAILED,
                format!("plugin {plugin:?} returned no result for ADD"),
                "",
            )
        })?;
        if value.get("ip4").is_some() || value.get("ip6").is_some() {
            return Err(CniError::new(
                DELEGATE_FAILED,
                format!("plugin {plugin:?} returned a pre-0.3.0 result"),
                value.to_string(),
            ));
        }
        serde_json::from_value(value.clone()).map_err(|e| {
            CniError::new(
                DELEGATE_FAILED,
                format!("plugin {plugin:?} returned an invalid result: {e}"),
                value.to_string(),
            )
        })
    }
}

/// The spec's name of a command (`CNI_COMMAND`).
pub fn command_name(command: Command) -> &'static str {
    match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Version => "VERSION",
        Command::Status => "STATUS",
        Command::Gc => "GC",
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn join_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    std::env::join_paths(dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Keep error details readable when a plugin prints pages.
fn truncate(text: &str) -> String {
    const MAX: usize = 2000;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn env(dir: &Path) -> Env {
        Env {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: vec![("K".into(), "V".into())],
            path: vec![dir.join("missing"), dir.to_owned()],
        }
    }

    #[test]
    fn results_errors_and_environment_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "ok",
            r#"cat >/dev/null
printf '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1"}],"dns":{"nameservers":["%s"]}}' "$CNI_COMMAND-$CNI_ARGS-$CNI_IFNAME""#,
        );
        script(
            dir.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"later"}'; exit 1"#,
        );
        script(dir.path(), "crash", "echo oops >&2; exit 2");
        script(dir.path(), "garbage", "echo not-json");
        let env = env(dir.path());
        let result = add("ok", &env, b"{}").unwrap();
        assert_eq!(result.ips[0].address.to_string(), "10.0.0.2/24");
        assert_eq!(result.dns.nameservers, ["ADD-K=V-eth0"]);
        let err = del("bad", &env, b"{}").unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (11, "busy"));
        let err = del("crash", &env, b"{}").unwrap_err();
        assert_eq!(err.code, DELEGATE_FAILED);
        assert!(err.details.contains("oops"), "{err}");
        assert_eq!(
            add("garbage", &env, b"{}").unwrap_err().code,
            DELEGATE_FAILED
        );
        let err = add("absent", &env, b"{}").unwrap_err();
        assert!(err.msg.contains("absent"), "{err}");
        assert_eq!(add("../ok", &env, b"{}").unwrap_err().code, 7);
    }
}
