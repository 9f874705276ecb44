//! `capstan shim exec`: run one more process in a running container.

use std::convert::Infallible;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxSeccomp, Process};

use super::error::{ExecutorError, Result, SysContext};
use super::{bundle, cgroup, confine, namespaces, process, report};

/// Prefix of error messages on stderr.
const PREFIX: &str = "capstan exec: ";

/// Joins the container of `init_pid`, runs `process_file`'s process in it and exits with its
/// status. Must be called while the process is single-threaded (setns of a mount namespace
/// refuses threaded callers).
pub fn main(init_pid: i32, bundle_dir: &Path, process_file: &Path) -> ! {
    match run(init_pid, bundle_dir, process_file) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{PREFIX}{e}");
            std::process::exit(report::FAILURE_EXIT)
        }
    }
}

fn run(init_pid: i32, bundle_dir: &Path, process_file: &Path) -> Result<i32> {
    let spec = bundle::load_spec(bundle_dir)?;
    let proc_spec = bundle::load_process(process_file)?;
    let linux = bundle::linux(&spec);

    // Through the host's cgroupfs, before the mount namespace changes what /sys shows.
    cgroup::join_process(init_pid)?;
    namespaces::join_process(init_pid, linux.namespaces().as_deref().unwrap_or_default())?;

    // SAFETY: `capstan shim exec` is single-threaded; the child only runs setup code and
    // execve (allocating is fine without other threads holding locks).
    match unsafe { nix::unistd::fork() }.sys(|| "fork")? {
        ForkResult::Child => {
            // Our parent as seen from here (0 when it is outside our PID namespace).
            let parent = nix::unistd::getppid();
            let Err(e) = child(&proc_spec, linux.seccomp().as_ref(), parent);
            eprintln!("{PREFIX}{e}");
            report::exit_now(report::FAILURE_EXIT)
        }
        ForkResult::Parent { child } => wait(child),
    }
}

/// Inside every namespace now (the PID namespace applies to us as a forked child).
fn child(
    proc_spec: &Process,
    profile: Option<&LinuxSeccomp>,
    parent: nix::unistd::Pid,
) -> Result<Infallible> {
    process::set_oom_score_adj(proc_spec.oom_score_adj())?;
    if proc_spec.terminal().unwrap_or(false) {
        process::new_session(true)?;
    }
    process::enter_cwd(proc_spec.cwd())?;
    let command = process::command(proc_spec)?;
    confine::confine(proc_spec, profile)?;
    // After the uid change, which clears the parent-death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).sys(|| "setting the parent-death signal")?;
    // Reparented meanwhile: the parent died before the signal was armed.
    if nix::unistd::getppid() != parent {
        return Err(ExecutorError::Invalid("capstan exec exited".into()));
    }
    process::reset_signals()?;
    Err(process::exec(&command))
}

/// The child's exit code, 128+signal when it was killed.
fn wait(child: nix::unistd::Pid) -> Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).sys(|| format!("waiting for {child}")),
        }
    }
}
