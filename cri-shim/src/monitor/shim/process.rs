//! Facts about processes the monitor needs: host PIDs of its children, OOM kills recorded
//! by a cgroup, and a clean signal state for forked children.

use std::path::Path;

use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{hierarchies, Cgroup, Controller};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};

/// Translates PIDs of the monitor's PID namespace into the host's (what the server and
/// `/proc` use). The monitor's `/proc` is the host's mount, so `/proc/self` names the
/// monitor by its host PID even when it is PID 1 of the pod's namespace.
#[derive(Debug, Clone, Copy)]
pub struct PidView {
    host_self: i32,
    /// Depth of the monitor's namespace below the host's (0: it is the host's).
    level: usize,
}

impl PidView {
    /// The view of the calling process.
    pub fn of_self() -> Self {
        let own = nix::unistd::getpid().as_raw();
        let host_self = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
            .unwrap_or(own);
        let level = ns_pids(host_self).map_or(0, |pids| pids.len().saturating_sub(1));
        Self { host_self, level }
    }

    /// Whether the monitor's PID namespace is not the host's (it is the pod's PID 1).
    pub fn nested(&self) -> bool {
        self.level > 0
    }

    /// The host PID of the monitor's child `pid` (a PID in the monitor's namespace).
    pub fn host_pid(&self, pid: i32) -> i32 {
        if self.level == 0 {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.host_self))
                .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
            .find(|&child| {
                ns_pids(child).and_then(|pids| pids.get(self.level).copied()) == Some(pid)
            })
            .unwrap_or(pid)
    }
}

/// The `NSpid` line of a host PID: its PID in each namespace from the host's inwards.
fn ns_pids(host_pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace()
        .skip(1)
        .map(|s| s.parse().ok())
        .collect()
}

/// Whether the container's memory cgroup (`linux.cgroupsPath`, cgroupfs layout) counted an
/// OOM kill: v1 `memory.oom_control`, v2 `memory.events`, line `oom_kill N`.
pub fn oom_killed(cgroup_path: Option<&str>) -> bool {
    let Some(path) = cgroup_path.filter(|p| p.starts_with('/')) else {
        return false;
    };
    let cgroup = Cgroup::load(hierarchies::auto(), path.trim_start_matches('/'));
    let Some(memory) = cgroup.controller_of::<MemController>() else {
        return false;
    };
    let file = if cgroup.v2() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    oom_kill_count(&memory.path().join(file)).is_some_and(|n| n > 0)
}

fn oom_kill_count(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_oom_kill(&text)
}

fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(key, _)| *key == "oom_kill")
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// Signals the monitor blocks and reads through its signalfd.
pub fn monitor_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Handlers for the signalfd's signals: a PID 1 never receives a signal it has no
/// handler for, blocked or not.
pub fn install_monitor_handlers() -> nix::Result<()> {
    for sig in monitor_signals().iter() {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { signal(sig, SigHandler::Handler(ignore_signal)) }?;
    }
    Ok(())
}

/// Give a freshly forked child the signal state a new process expects: nothing blocked,
/// default dispositions (Rust ignores SIGPIPE, and an ignored signal stays ignored
/// across exec).
pub fn reset_child_signals() {
    let _ = SigSet::empty().thread_set_mask();
    for sig in monitor_signals().iter().chain([Signal::SIGPIPE]) {
        // SAFETY: restoring the default disposition installs no code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
}

/// Give memory the monitor no longer uses back to the kernel: free heap pages, and stack
/// pages below the caller's frame (touched by setup, which ran deeper than the loop ever
/// goes while idle). Many monitors run per node, so their idle footprint matters.
pub fn release_memory() {
    // SAFETY: malloc_trim only returns free memory; it is safe in a single-threaded process.
    unsafe {
        libc::malloc_trim(0);
    }
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let page = 4096usize;
    // Keep a margin under this frame for the calls that follow (and signal delivery).
    let Some(unused_top) = (here & !(page - 1)).checked_sub(4 * page) else {
        return;
    };
    let Some(stack_bottom) = stack_bottom() else {
        return;
    };
    if stack_bottom < unused_top {
        // SAFETY: the range lies in the main thread's stack below the live frames (the
        // stack grows down); its pages read back as zero if ever touched again.
        unsafe {
            libc::madvise(
                stack_bottom as *mut libc::c_void,
                unused_top - stack_bottom,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// Lowest address of the main thread's stack mapping.
fn stack_bottom() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (start, _) = line.split_once('-')?;
    usize::from_str_radix(start, 16).ok()
}

/// Close every descriptor from 3 up except `keep` (in a forked child, so the container
/// holds nothing of the monitor's: sockets, other containers' pipes).
pub fn close_fds_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep.into_iter().filter(|&fd| fd >= 3) {
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range(2) only closes descriptors; the caller never uses them again.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_lines_are_found_in_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(3));
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn host_pid_of_a_child_in_the_same_namespace_is_itself() {
        let view = PidView::of_self();
        assert_eq!(view.host_pid(12345), 12345);
    }
}
