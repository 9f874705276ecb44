//! The monitor process itself (`capstan shim start`) and the `capstan shim exec` entry.
//! Blocking and single-threaded: it must run before any tokio runtime or thread exists.
//!
//! `start` sets up the pod's namespaces in the process the launcher spawned, forks the
//! monitor (PID 1 of the pod's PID namespace when asked), writes `monitor.pid`, reports
//! `ready` (or `error: <message>`) as one line on stdout and exits, so the monitor is not
//! a child of the server.

mod builtin;
mod conn;
mod container;
mod event_loop;
mod logs;
mod oci;
mod process;
mod setup;

use std::io::Write;
use std::path::Path;

use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::ForkResult;

use crate::monitor::config::PID_FILE;

/// Line the launcher reads when the monitor is ready.
pub const READY_LINE: &str = "ready";
/// Prefix of the line the launcher reads when the monitor failed.
pub const ERROR_PREFIX: &str = "error: ";

/// `capstan shim start --config FILE`; returns the exit code of the setup process.
pub fn start(config_path: &Path) -> i32 {
    let prepared = match setup::prepare(config_path) {
        Ok(prepared) => prepared,
        Err(message) => {
            undo(config_path);
            report(&format!("{ERROR_PREFIX}{message}"));
            return 1;
        }
    };
    let run_dir = prepared.config.run_dir.clone();
    // SAFETY: `capstan shim` runs before any thread is started.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            crate::monitor::launch::release(&run_dir);
            report(&format!("{ERROR_PREFIX}forking the monitor: {e}"));
            1
        }
        Ok(ForkResult::Child) => daemon(prepared),
        Ok(ForkResult::Parent { child }) => {
            let pid_file = run_dir.join(PID_FILE);
            if let Err(e) =
                crate::monitor::protocol::write_record(&run_dir, PID_FILE, &child.as_raw())
            {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                crate::monitor::launch::release(&run_dir);
                report(&format!(
                    "{ERROR_PREFIX}writing {}: {e}",
                    pid_file.display()
                ));
                return 1;
            }
            report(READY_LINE);
            0
        }
    }
}

/// `capstan shim exec`: the built-in executor joins a running container.
pub fn exec(init_pid: i32, bundle: &Path, process: &Path) -> ! {
    // Rust ignores SIGPIPE, and an ignored signal stays ignored across exec.
    // SAFETY: restoring the default disposition installs no code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    crate::executor::exec_main(init_pid, bundle, process)
}

/// Best-effort removal of what a failed setup may have made, when the config names a
/// run directory.
fn undo(config_path: &Path) {
    let config = std::fs::read(config_path).ok().and_then(|b| {
        serde_json::from_slice::<crate::monitor::config::SandboxMonitorConfig>(&b).ok()
    });
    if let Some(config) = config {
        crate::monitor::launch::release(&config.run_dir);
    }
}

fn report(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The monitor: detach, then serve until shut down.
fn daemon(prepared: setup::Prepared) -> ! {
    match detach() {
        Ok(signals) => {
            // From the shallowest frame: the setup's deep stack pages go.
            process::release_memory();
            let socket = prepared
                .config
                .run_dir
                .join(crate::monitor::config::SOCKET_FILE);
            match event_loop::Monitor::new(prepared.listener, signals, socket) {
                Ok(monitor) => monitor.run(),
                Err(e) => eprintln!("capstan shim: {e}"),
            }
        }
        Err(e) => eprintln!("capstan shim: detaching: {e}"),
    }
    std::process::exit(1)
}

/// A session of its own, subreaper, `/` as cwd, stdin/stdout on /dev/null (stderr stays
/// the monitor log the launcher opened), SIGCHLD and SIGTERM through a signalfd.
fn detach() -> nix::Result<SignalFd> {
    nix::unistd::setsid()?;
    nix::sys::prctl::set_child_subreaper(true)?;
    nix::unistd::chdir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    nix::unistd::dup2_stdin(&null)?;
    // Closes the launcher's pipe: it has read all it will get from us.
    nix::unistd::dup2_stdout(&null)?;
    process::install_monitor_handlers()?;
    let signals = process::monitor_signals();
    signals.thread_block()?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}
