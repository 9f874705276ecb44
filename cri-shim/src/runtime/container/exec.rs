//! ExecSync: run a command inside a running container and capture its output, bounded.
//! The built-in executor's helper (`capstan shim exec`) joins the container's namespaces,
//! cgroup, user, capabilities and seccomp; OCI handlers use their own `exec`.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_cri::v1::ExecSyncResponse;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::monitor::protocol::Handler;
use crate::runtime::error::RuntimeError;
use crate::runtime::sandbox::shim_binary;
use crate::runtime::Runtime;

/// What the exec helper prints before failing to enter the container.
const EXEC_ERROR_PREFIX: &[u8] = b"capstan exec: ";

impl Runtime {
    /// Run `cmd` in the container; `timeout` seconds (0: none).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecSyncResponse, RuntimeError> {
        let record = self.container(id)?;
        let state = self.process_state(id);
        let Some(started) = state.started.filter(|_| state.exit.is_none()) else {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        };
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "exec command is empty".into(),
            ));
        }
        let dir = self.containers.dir_of(id);
        let bundle = dir.join("bundle");
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(
            &std::fs::read(bundle.join("config.json"))
                .map_err(|e| RuntimeError::internal("reading OCI spec", e))?,
        )
        .map_err(|e| RuntimeError::internal("OCI spec", e))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        let process_file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(&dir)
            .map_err(|e| RuntimeError::internal("exec process file", e))?;
        serde_json::to_writer(process_file.as_file(), &process)
            .map_err(|e| RuntimeError::internal("writing exec process file", e))?;
        // Where an OCI runtime records the exec'd process: killing `runc exec` on a
        // timeout would leave that process running in the container.
        let pid_file = process_file.path().with_extension("pid");
        let mut command = match self.handler(&record.handler) {
            Handler::Builtin => {
                let mut c = Command::new(shim_binary()?);
                c.arg("shim")
                    .arg("exec")
                    .arg("--pid")
                    .arg(started.pid.to_string())
                    .arg("--bundle")
                    .arg(&bundle)
                    .arg("--process")
                    .arg(process_file.path());
                c
            }
            Handler::Oci { path, root } => {
                let mut c = Command::new(path);
                c.arg("--root")
                    .arg(root)
                    .arg("exec")
                    .arg("--pid-file")
                    .arg(&pid_file)
                    .arg("--process")
                    .arg(process_file.path())
                    .arg(id);
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| RuntimeError::internal("starting exec helper", e))?;
        // One budget for both streams: the limit bounds stdout plus stderr.
        let budget = AtomicUsize::new(self.config.max_exec_output_bytes);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let (out, err, status) = tokio::join!(
                read_bounded(stdout, &budget),
                read_bounded(stderr, &budget),
                child.wait()
            );
            (out, err, status)
        };
        let (stdout, stderr, status) = if timeout > 0 {
            match tokio::time::timeout(Duration::from_secs(timeout as u64), run).await {
                Ok(done) => done,
                Err(_) => {
                    kill_recorded(&pid_file);
                    return Err(RuntimeError::DeadlineExceeded(format!(
                        "command timed out after {timeout}s"
                    )));
                }
            }
        } else {
            run.await
        };
        let _ = std::fs::remove_file(&pid_file);
        let status = status.map_err(|e| RuntimeError::internal("waiting for exec", e))?;
        let exit_code = exit_code(status);
        if exit_code == 127 && stderr.starts_with(EXEC_ERROR_PREFIX) {
            return Err(RuntimeError::Internal(
                String::from_utf8_lossy(&stderr).trim().to_owned(),
            ));
        }
        Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        })
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// SIGKILL the process whose pid an OCI runtime wrote to `pid_file`, then remove the file.
fn kill_recorded(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|&pid| pid > 1) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Read everything, keeping what fits in the shared `budget` (taken from as bytes are
/// kept; the rest is drained so the writer never blocks on a full pipe).
async fn read_bounded(stream: Option<impl AsyncRead + Unpin>, budget: &AtomicUsize) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let take = budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        Some(left.saturating_sub(n))
                    })
                    .map_or(0, |left| left.min(n));
                kept.extend_from_slice(&buf[..take]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_bounded_and_drained() {
        let data = vec![7u8; 100_000];
        let kept = read_bounded(Some(&data[..]), &AtomicUsize::new(1000)).await;
        assert_eq!(kept.len(), 1000);
        let kept = read_bounded(Some(&data[..10]), &AtomicUsize::new(1000)).await;
        assert_eq!(kept.len(), 10);
        // Two streams share one budget.
        let budget = AtomicUsize::new(1000);
        let first = read_bounded(Some(&data[..600]), &budget).await;
        let second = read_bounded(Some(&data[..600]), &budget).await;
        assert_eq!((first.len(), second.len()), (600, 400));
    }
}
