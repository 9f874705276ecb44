//! Containers run by an external runc-compatible runtime. `create` gets the container's
//! stdio pipes (runc hands them to the container); the container's init is reparented to
//! the monitor (a subreaper) when `create` exits.

use std::path::Path;
use std::process::{Command, Stdio as ProcessStdio};

use super::container::{into_streams, spec_cgroup, ChildStdio, Container, Stdio};
use super::logs::LogFile;
use super::process::PidView;
use crate::monitor::protocol::{CreateContainer, Handler};

/// The runtime's own log, kept out of the container's stderr.
const RUNTIME_LOG: &str = "runtime.log";
/// Where the runtime writes the init's PID.
const PID_FILE: &str = "pid";

/// `<runtime> create`, then the container as the monitor holds it.
pub fn create(
    request: &CreateContainer,
    runtime: &Path,
    root: &Path,
    pids: &PidView,
) -> Result<Container, String> {
    if request.tty {
        return Err("a terminal is not supported with OCI runtime handlers".to_owned());
    }
    let cgroup = spec_cgroup(&request.bundle)?;
    let log = LogFile::open(request.log_path.clone())
        .map_err(|e| format!("opening log {:?}: {e}", request.log_path))?;
    let Stdio { parent, child } = Stdio::new(false)?;
    let ChildStdio::Pipes { stdout, stderr } = child else {
        return Err("internal: pipes expected".to_owned());
    };
    let pid_file = request.state_dir.join(PID_FILE);
    let _ = std::fs::remove_file(&pid_file);
    let status = runtime_command(runtime, root, &request.state_dir)
        .arg("create")
        .arg("--bundle")
        .arg(&request.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&request.id)
        .stdin(ProcessStdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|e| format!("running {}: {e}", runtime.display()))?;
    let mut streams = into_streams(parent)?;
    if !status.success() {
        // On failure the runtime prints its error on the stderr it was given.
        let message = streams[1]
            .as_mut()
            .map(|s| s.read_now(8192))
            .unwrap_or_default();
        return Err(format!(
            "{} create: {} ({status})",
            runtime.display(),
            message.trim()
        ));
    }
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{} holds no PID: {text:?}", pid_file.display()))?;
    Ok(Container {
        id: request.id.clone(),
        pid,
        host_pid: pids.host_pid(pid),
        handler: Handler::Oci {
            path: runtime.to_owned(),
            root: root.to_owned(),
        },
        state_dir: request.state_dir.clone(),
        cgroup,
        log,
        streams,
        gate: None,
        started_at: None,
        exit: None,
    })
}

/// `<runtime> start <id>`.
pub fn start(runtime: &Path, root: &Path, state_dir: &Path, id: &str) -> Result<(), String> {
    run(runtime_command(runtime, root, state_dir).arg("start").arg(id), "start")
}

/// `<runtime> delete --force <id>`: the runtime's state and cgroup go.
pub fn delete(runtime: &Path, root: &Path, state_dir: &Path, id: &str) -> Result<(), String> {
    run(
        runtime_command(runtime, root, state_dir)
            .args(["delete", "--force"])
            .arg(id),
        "delete",
    )
}

fn runtime_command(runtime: &Path, root: &Path, state_dir: &Path) -> Command {
    let mut command = Command::new(runtime);
    command
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(state_dir.join(RUNTIME_LOG))
        .args(["--log-format", "json"]);
    command
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(ProcessStdio::null())
        .output()
        .map_err(|e| format!("running the runtime's {what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "runtime {what}: {} ({})",
            String::from_utf8_lossy(&output.stderr).trim(),
            output.status
        ))
    }
}

