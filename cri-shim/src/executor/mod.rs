//! The built-in OCI executor: turns a bundle's runtime spec into a running process.
//!
//! [`init_container`] runs in a child the monitor forked (already in the container's PID
//! namespace, stdio set up) and becomes the container's process; [`exec_main`] joins a
//! running container for ExecSync. Both never return.

mod bundle;
mod capabilities;
mod cgroup;
mod confine;
mod devices;
mod error;
mod exec;
mod init;
mod mountinfo;
mod mounts;
mod namespaces;
mod process;
pub mod report;
mod resolve;
mod rootfs;
mod seccomp;
mod sysctl;

use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::path::Path;

pub use error::ExecutorError;

/// Runs in a freshly forked, single-threaded child of the monitor; never returns.
///
/// Reads `bundle/config.json`, joins the cgroup and namespaces, prepares the rootfs
/// (mounts, devices, pivot_root, masked and read-only paths), applies rlimits,
/// oom_score_adj, user, capabilities, no_new_privs and seccomp, writes `R` on `report`
/// and blocks on `gate`: one byte execs `process.args`, EOF exits 0. Any failure is
/// reported as `E` + message, then exit 127.
pub fn init_container(bundle: &Path, gate: OwnedFd, report: OwnedFd) -> ! {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| init::run(bundle, gate, &report)));
    match outcome {
        Ok(Ok(init::Outcome::Cancelled)) => report::exit_now(0),
        Ok(Err(e)) => report::fail(&report, &e.to_string()),
        Err(panic) => report::fail(&report, &format!("executor bug: {}", panic_text(&panic))),
    }
}

/// Entry of `capstan shim exec`: joins the namespaces and cgroup of the container process
/// `init_pid`, runs the OCI `Process` in `process` with the spec's seccomp profile, and
/// exits with its code (128+signal when killed). Errors before exec: one line on stderr
/// prefixed `capstan exec: `, exit 127. Call it before any thread is started.
pub fn exec_main(init_pid: i32, bundle: &Path, process: &Path) -> ! {
    exec::main(init_pid, bundle, process)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
