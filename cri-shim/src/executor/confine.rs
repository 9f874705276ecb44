//! The steps that take privileges away, in the one order that works: the seccomp filter
//! needs CAP_SYS_ADMIN unless no_new_privs is set, the bounding set needs CAP_SETPCAP, the
//! uid change needs CAP_SETUID, and a filter loaded early must still allow what follows.

use oci_spec::runtime::{LinuxSeccomp, Process};

use super::error::{Result, SysContext};
use super::{capabilities, process, seccomp};

/// Applies rlimits, umask, seccomp, the user, capabilities and no_new_privs of `process`.
/// After this only writing the report, reading the gate and execve remain, which any
/// sensible profile allows.
pub fn confine(process: &Process, profile: Option<&LinuxSeccomp>) -> Result<()> {
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    process::set_umask(process.user());
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    // Compiled up front, while every syscall (and allocation) is still allowed.
    let filter = profile.map(seccomp::build).transpose()?;
    if !no_new_privs {
        // Without no_new_privs only CAP_SYS_ADMIN allows loading a filter: load it now.
        if let Some(filter) = &filter {
            seccomp::load(filter)?;
        }
    }
    if let Some(caps) = process.capabilities() {
        capabilities::limit_bounding(caps)?;
    }
    process::switch_user(process.user())?;
    if let Some(caps) = process.capabilities() {
        capabilities::apply(caps)?;
    }
    if no_new_privs {
        nix::sys::prctl::set_no_new_privs().sys(|| "setting no_new_privs")?;
        if let Some(filter) = &filter {
            seccomp::load(filter)?;
        }
    }
    Ok(())
}
