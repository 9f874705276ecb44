//! `init_container`'s steps, from the bundle to the gate.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::CloneFlags;

use super::error::{ExecutorError, Result, SysContext};
use super::{
    bundle, cgroup, confine, devices, mounts, namespaces, process, report, rootfs, sysctl,
};

/// How setup ended without an error.
#[derive(Debug)]
pub enum Outcome {
    /// The monitor closed the gate: leave without running the process.
    Cancelled,
}

/// Sets the container up, reports ready, waits on the gate and execs. Returns only when the
/// gate was closed or on failure.
pub fn run(bundle_dir: &Path, gate: OwnedFd, report_fd: &OwnedFd) -> Result<Outcome> {
    process::close_on_exec_above_stdio()?;
    let spec = bundle::load_spec(bundle_dir)?;
    let proc_spec = bundle::process(&spec)?;
    let linux = bundle::linux(&spec);
    let rootfs_path = bundle::rootfs(&spec, bundle_dir)?;

    // Before the cgroup namespace is created, so the container's cgroup becomes its root.
    if let Some(path) = linux.cgroups_path() {
        let path = path
            .to_str()
            .ok_or_else(|| ExecutorError::Invalid(format!("cgroup path {path:?} is not UTF-8")))?;
        cgroup::join(path)?;
    }

    let plan = namespaces::plan(linux.namespaces().as_deref().unwrap_or_default())?;
    let has_mount_ns = plan.unshare.contains(CloneFlags::CLONE_NEWNS)
        || plan
            .join
            .iter()
            .any(|(bit, _)| *bit == CloneFlags::CLONE_NEWNS);
    if !has_mount_ns {
        // Mounting the rootfs in the monitor's namespace would change the host.
        return Err(ExecutorError::Invalid(
            "the spec must give the container a mount namespace".into(),
        ));
    }
    namespaces::apply(&plan)?;
    if plan.owns_uts() {
        if let Some(hostname) = spec.hostname() {
            nix::unistd::sethostname(hostname).sys(|| format!("setting hostname {hostname}"))?;
        }
        if let Some(domainname) = spec.domainname() {
            set_domainname(domainname)?;
        }
    }
    // Through the host's /proc, before it is gone.
    process::set_oom_score_adj(proc_spec.oom_score_adj())?;

    // Device nodes and mount points get exactly the modes asked for.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    let terminal = proc_spec.terminal().unwrap_or(false);
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let root = rootfs::prepare(&rootfs_path, linux.rootfs_propagation().as_deref())?;
    {
        use std::os::fd::AsFd;
        mounts::mount_all(root.as_fd(), mounts, bundle_dir)?;
        devices::setup(
            root.as_fd(),
            mounts,
            linux.devices().as_deref().unwrap_or_default(),
            terminal,
        )?;
    }
    rootfs::pivot(&root)?;
    drop(root);

    if let Some(sysctl) = linux.sysctl() {
        sysctl::apply(sysctl)?;
    }
    rootfs::mask(linux.masked_paths().as_deref().unwrap_or_default())?;
    rootfs::make_readonly(linux.readonly_paths().as_deref().unwrap_or_default())?;
    if bundle::rootfs_readonly(&spec) {
        rootfs::readonly_root()?;
    }

    process::new_session(terminal)?;
    process::enter_cwd(proc_spec.cwd())?;
    let command = process::command(proc_spec)?;
    confine::confine(proc_spec, linux.seccomp().as_ref())?;

    report::ready(report_fd).sys(|| "reporting ready")?;
    match report::wait(gate).sys(|| "waiting on the gate")? {
        report::Gate::Cancelled => Ok(Outcome::Cancelled),
        report::Gate::Open => {
            process::reset_signals()?;
            Err(process::exec(&command))
        }
    }
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .sys(|| format!("setting domain name {name}"))
}
