//! Containers run by an external runc-compatible runtime. `create` gets the container's
//! stdio pipes (runc hands them to the container); the container's init is reparented to
//! the monitor (a subreaper) when `create` exits.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio as ProcessStdio};

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

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
    let status = runtime_command(runtime, root, &request.state_dir, pids)
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
pub fn start(
    runtime: &Path,
    root: &Path,
    state_dir: &Path,
    id: &str,
    pids: &PidView,
) -> Result<(), String> {
    run(
        runtime_command(runtime, root, state_dir, pids)
            .arg("start")
            .arg(id),
        "start",
    )
}

/// `<runtime> delete --force <id>`: the runtime's state and cgroup go.
pub fn delete(
    runtime: &Path,
    root: &Path,
    state_dir: &Path,
    id: &str,
    pids: &PidView,
) -> Result<(), String> {
    run(
        runtime_command(runtime, root, state_dir, pids)
            .args(["delete", "--force"])
            .arg(id),
        "delete",
    )
}

/// The runtime with its root and log. When the monitor is PID 1 of the pod's namespace
/// the runtime runs with a `/proc` of that namespace (in a mount namespace of its own),
/// since it looks its processes up there by the PIDs it sees.
fn runtime_command(runtime: &Path, root: &Path, state_dir: &Path, pids: &PidView) -> Command {
    let mut command = Command::new(runtime);
    if pids.nested() {
        // SAFETY: runs in the forked child before exec; the monitor is single-threaded, so
        // the child may allocate, and it only makes syscalls.
        unsafe {
            command.pre_exec(|| own_proc().map_err(std::io::Error::from));
        }
    }
    command
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(state_dir.join(RUNTIME_LOG))
        .args(["--log-format", "json"]);
    command
}

/// A private mount namespace whose `/proc` shows the caller's PID namespace.
fn own_proc() -> nix::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    // Nothing mounted here may reach the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
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
