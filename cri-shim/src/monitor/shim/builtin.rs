//! Containers run by the built-in executor: the monitor forks, the child sets up stdio and
//! calls `executor::init_container`; `R`/`E` on the report pipe say how setup went, one
//! byte on the gate makes it exec.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::container::{into_streams, spec_cgroup, Container, Gate, Stdio};
use super::logs::LogFile;
use super::process::{close_fds_except, reset_child_signals, PidView};
use crate::monitor::protocol::{CreateContainer, Handler, PidMode};

/// How long the executor may take to set a container up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the exec may take after the gate opens.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest error message read from the report pipe.
const MAX_REPORT: usize = 16 * 1024;

/// What the executor said on the report pipe.
enum Report {
    /// `R`: set up, waiting on the gate.
    Ready,
    /// `E` + message: failed (the child exits 127).
    Failed(String),
    /// EOF without a word: the child exec'd (after the gate) or died.
    Closed,
    /// Nothing in time.
    TimedOut,
}

/// Fork the container's process and wait until the executor has set it up.
pub fn create(
    request: &CreateContainer,
    pids: &PidView,
    own_pid_ns: &OwnedFd,
) -> Result<Container, String> {
    let cgroup = spec_cgroup(&request.bundle)?;
    let log = LogFile::open(request.log_path.clone())
        .map_err(|e| format!("opening log {:?}: {e}", request.log_path))?;
    let stdio = Stdio::new(request.tty)?;
    let (gate_r, gate_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let new_pid_ns = request.pid_mode == PidMode::Container;
    let child = fork_into(new_pid_ns, own_pid_ns)?;
    let Some(pid) = child else {
        run_child(request, &stdio, gate_r, report_w);
    };
    drop((gate_r, report_w));
    let Stdio {
        parent,
        child: child_ends,
    } = stdio;
    drop(child_ends);
    let streams = into_streams(parent)?;
    match wait_report(&report_r, SETUP_TIMEOUT) {
        Report::Ready => {}
        failure => {
            let message = failure_message(failure, "setup");
            let _ = kill(pid, Signal::SIGKILL);
            reap(pid);
            return Err(message);
        }
    }
    Ok(Container {
        id: request.id.clone(),
        pid: pid.as_raw(),
        host_pid: pids.host_pid(pid.as_raw()),
        handler: Handler::Builtin,
        state_dir: request.state_dir.clone(),
        cgroup,
        log,
        streams,
        gate: Some(Gate {
            gate: gate_w,
            report: report_r,
        }),
        started_at: None,
        exit: None,
    })
}

/// Open the gate and wait for the exec. On an error the process is exiting (127); the
/// caller reaps it.
pub fn start(gate: Gate) -> Result<(), String> {
    loop {
        match nix::unistd::write(&gate.gate, b"s") {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("opening the gate: {e}")),
        }
    }
    drop(gate.gate);
    match wait_report(&gate.report, EXEC_TIMEOUT) {
        Report::Closed => Ok(()),
        other => Err(failure_message(other, "exec")),
    }
}

fn failure_message(report: Report, stage: &str) -> String {
    match report {
        Report::Failed(message) => message,
        Report::Ready => format!("executor reported ready again during {stage}"),
        Report::Closed => format!("executor exited during {stage} without a report"),
        Report::TimedOut => format!("executor did not report within the {stage} timeout"),
    }
}

/// Wait for a specific child (it is not in the table yet, or is being dropped).
pub fn reap(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

/// Fork; with `new_pid_ns` the child is PID 1 of a namespace of its own. Returns the
/// child's PID in the parent, `None` in the child.
fn fork_into(new_pid_ns: bool, own_pid_ns: &OwnedFd) -> Result<Option<Pid>, String> {
    if new_pid_ns {
        nix::sched::unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| format!("new PID namespace: {e}"))?;
    }
    // SAFETY: the monitor is single-threaded, so the child may run any code.
    let forked = unsafe { nix::unistd::fork() };
    if new_pid_ns && !matches!(forked, Ok(ForkResult::Child)) {
        // Later children (other containers, runc) belong in the monitor's namespace again.
        if let Err(e) = nix::sched::setns(own_pid_ns, CloneFlags::CLONE_NEWPID) {
            eprintln!("capstan shim: restoring the PID namespace for children: {e}");
        }
    }
    match forked {
        Ok(ForkResult::Parent { child }) => Ok(Some(child)),
        Ok(ForkResult::Child) => Ok(None),
        Err(e) => Err(format!("forking the container: {e}")),
    }
}

/// The forked child: stdio, a clean descriptor table and signal state, then the executor.
fn run_child(request: &CreateContainer, stdio: &Stdio, gate: OwnedFd, report: OwnedFd) -> ! {
    reset_child_signals();
    if let Err(message) = stdio.install_in_child() {
        let _ = nix::unistd::write(&report, format!("E{message}").as_bytes());
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(127) }
    }
    close_fds_except(&[gate.as_raw_fd(), report.as_raw_fd()]);
    crate::executor::init_container(&request.bundle, gate, report)
}

fn wait_report(report: &OwnedFd, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    let mut message = Vec::new();
    let mut failed = false;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if left.is_zero() {
            return Report::TimedOut;
        }
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Report::Failed(format!("waiting for the executor: {e}")),
        }
        // Before an `E` read one byte at a time: an `R` must not swallow what follows.
        let want = if failed { buf.len() } else { 1 };
        match nix::unistd::read(report, &mut buf[..want]) {
            Ok(0) if failed => {
                return Report::Failed(String::from_utf8_lossy(&message).into_owned())
            }
            Ok(0) => return Report::Closed,
            Ok(n) if failed => {
                let room = MAX_REPORT.saturating_sub(message.len());
                message.extend_from_slice(&buf[..n.min(room)]);
            }
            Ok(_) => match buf[0] {
                b'R' => return Report::Ready,
                b'E' => failed = true,
                other => {
                    return Report::Failed(format!(
                        "executor wrote {:?} on its report pipe",
                        other as char
                    ))
                }
            },
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Report::Failed(format!("reading the executor's report: {e}")),
        }
    }
}
