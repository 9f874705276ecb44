//! Running one plugin as the CNI specification says: `CNI_*` variables, the configuration
//! on stdin, the result or an error result on stdout, all within a time limit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cni_plugins::error::CniError;
use cni_plugins::types::Command;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::error::NetworkError;

/// Most stderr bytes kept for an error message.
const MAX_STDERR_IN_ERROR: usize = 4096;

/// Attempts at starting a plugin whose file is briefly busy being written (ETXTBSY).
const SPAWN_ATTEMPTS: u32 = 5;

/// The `CNI_*` values of one call other than the command.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallEnv {
    /// `CNI_CONTAINERID` (unset when empty).
    pub container_id: String,
    /// `CNI_NETNS` (unset when `None`).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (unset when empty).
    pub ifname: String,
    /// `CNI_ARGS` pairs (unset when empty).
    pub args: Vec<(String, String)>,
}

impl CallEnv {
    /// `CNI_ARGS` as the spec writes it.
    pub fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Finds plugins in the plugin directories and runs them.
#[derive(Debug, Clone)]
pub(crate) struct PluginExec {
    bin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

impl PluginExec {
    /// Plugins are looked up in `bin_dirs` in order; each call may take `timeout`.
    pub fn new(bin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self { bin_dirs, timeout }
    }

    /// The executable for `plugin`: the first plugin directory holding it.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, NetworkError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| is_executable(path))
            .ok_or_else(|| NetworkError::PluginNotFound {
                plugin: plugin.to_owned(),
                dirs: self.bin_dirs.clone(),
            })
    }

    /// Run `plugin` for `command` with `config` on stdin. Returns stdout parsed as JSON
    /// (`None` when empty) on success, and the plugin's error result as an error.
    pub async fn run(
        &self,
        plugin: &str,
        command: Command,
        env: &CallEnv,
        config: &Value,
    ) -> Result<Option<Value>, NetworkError> {
        let path = self.find(plugin)?;
        let name = command.as_str();
        let stdin = serde_json::to_vec(config).map_err(|e| NetworkError::BadOutput {
            plugin: plugin.to_owned(),
            command: name,
            reason: format!("configuration cannot be encoded: {e}"),
        })?;
        let call = self.call(&path, command, env, &stdin);
        let output = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| NetworkError::Timeout {
                plugin: plugin.to_owned(),
                command: name,
                timeout: self.timeout,
            })?
            .map_err(|source| NetworkError::Exec {
                path: path.clone(),
                source,
            })?;
        interpret(plugin, name, output)
    }

    async fn call(
        &self,
        path: &Path,
        command: Command,
        env: &CallEnv,
        stdin: &[u8],
    ) -> std::io::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new(path);
        // Plugins inherit the runtime's environment (PATH for iptables, nft, ...) but no
        // stray CNI_* values from it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(key);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        cmd.env("CNI_COMMAND", command.as_str());
        cmd.env("CNI_PATH", join_paths(&self.bin_dirs));
        if !env.container_id.is_empty() {
            cmd.env("CNI_CONTAINERID", &env.container_id);
        }
        if let Some(netns) = &env.netns {
            cmd.env("CNI_NETNS", netns);
        }
        if !env.ifname.is_empty() {
            cmd.env("CNI_IFNAME", &env.ifname);
        }
        if !env.args.is_empty() {
            cmd.env("CNI_ARGS", env.args_string());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out call drops the future, which must not leave the plugin running.
            .kill_on_drop(true);
        let mut child = spawn(&mut cmd).await?;
        let mut pipe = child.stdin.take();
        let feed = async move {
            if let Some(pipe) = pipe.as_mut() {
                // A plugin may exit without reading its configuration (EPIPE): its exit
                // status and output tell what happened, not the write error.
                let _ = pipe.write_all(stdin).await;
                let _ = pipe.shutdown().await;
            }
            drop(pipe);
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output
    }
}

/// Start the plugin, retrying while its file is busy (a plugin being installed, or a
/// descriptor of it briefly inherited by a concurrently forked process).
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut attempt = 1;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// The call's outcome from its exit status and output.
fn interpret(
    plugin: &str,
    command: &'static str,
    output: std::process::Output,
) -> Result<Option<Value>, NetworkError> {
    let stdout = &output.stdout;
    let empty = stdout.iter().all(u8::is_ascii_whitespace);
    if output.status.success() {
        if empty {
            return Ok(None);
        }
        return serde_json::from_slice(stdout)
            .map(Some)
            .map_err(|e| NetworkError::BadOutput {
                plugin: plugin.to_owned(),
                command,
                reason: format!("not JSON ({e}): {}", lossy_truncated(stdout)),
            });
    }
    if let Ok(error) = serde_json::from_slice::<CniError>(stdout) {
        return Err(NetworkError::Plugin {
            plugin: plugin.to_owned(),
            command,
            code: error.code,
            msg: error.msg,
            details: error.details,
        });
    }
    let mut stderr = lossy_truncated(&output.stderr);
    if !empty {
        stderr = format!("{stderr} (stdout: {})", lossy_truncated(stdout));
    }
    Err(NetworkError::PluginCrashed {
        plugin: plugin.to_owned(),
        command,
        status: output.status.to_string(),
        stderr,
    })
}

fn lossy_truncated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= MAX_STDERR_IN_ERROR {
        return text.to_owned();
    }
    let mut end = MAX_STDERR_IN_ERROR;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn join_paths(dirs: &[PathBuf]) -> OsString {
    // Directories containing ':' cannot be expressed in CNI_PATH; they are left out
    // rather than failing every call.
    std::env::join_paths(dirs).unwrap_or_else(|_| {
        std::env::join_paths(dirs.iter().filter(|d| !d.to_string_lossy().contains(':')))
            .unwrap_or_default()
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
