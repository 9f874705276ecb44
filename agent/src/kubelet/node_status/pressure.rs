//! The eviction signals the pressure conditions look at, observed from procfs and statfs,
//! compared with the hard thresholds.

use std::fs;
use std::path::Path;

use super::resources::{Threshold, Thresholds};

/// One signal's current value and the capacity percentages are taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// What is left (bytes, inodes or PIDs).
    pub available: u64,
    /// The total.
    pub capacity: u64,
}

/// The signals as last observed; `None` when one could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observations {
    /// `memory.available`: MemAvailable of MemTotal.
    pub memory: Option<Signal>,
    /// `nodefs.available`: free bytes of the kubelet root's filesystem.
    pub nodefs: Option<Signal>,
    /// `nodefs.inodesFree`.
    pub nodefs_inodes: Option<Signal>,
    /// `pid.available`: the PID limit minus the processes running.
    pub pids: Option<Signal>,
}

impl Observations {
    /// Reads the host (image filesystem signals are taken on the root's filesystem: the
    /// built-in runtime keeps images under the same state directory).
    pub fn from_host(root: &Path) -> Observations {
        let vfs = rustix::fs::statvfs(root).ok();
        Observations {
            memory: fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| memory(&t)),
            nodefs: vfs.as_ref().map(|v| Signal {
                available: v.f_bavail.saturating_mul(v.f_frsize),
                capacity: v.f_blocks.saturating_mul(v.f_frsize),
            }),
            nodefs_inodes: vfs.as_ref().map(|v| Signal {
                available: v.f_favail,
                capacity: v.f_files,
            }),
            pids: pids(),
        }
    }
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    line.trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

fn memory(meminfo: &str) -> Option<Signal> {
    Some(Signal {
        available: meminfo_kib(meminfo, "MemAvailable")?,
        capacity: meminfo_kib(meminfo, "MemTotal")?,
    })
}

/// The PID limit is the lower of `pid_max` and `threads-max`, as the kubelet's pidlimit
/// stats take it; the tasks in use are the kernel's count (`/proc/loadavg`'s `running/total`,
/// the same number sysinfo's `procs` reports).
fn pids() -> Option<Signal> {
    let read = |p: &str| fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let limit = read("/proc/sys/kernel/pid_max")?.min(read("/proc/sys/kernel/threads-max")?);
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    let in_use = tasks_in_use(&loadavg)?;
    Some(Signal {
        available: limit.saturating_sub(in_use),
        capacity: limit,
    })
}

/// `0.00 0.01 0.05 2/345 6789` → 345.
fn tasks_in_use(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Which pressure conditions hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// `memory.available` below its threshold.
    pub memory: bool,
    /// A nodefs or imagefs signal below its threshold.
    pub disk: bool,
    /// `pid.available` below its threshold.
    pub pid: bool,
}

/// Compares each observed signal with its threshold (a signal without a threshold, or not
/// observed, is no pressure).
pub fn pressure(observed: &Observations, thresholds: &Thresholds) -> Pressure {
    let below = |signal: &str, value: Option<Signal>| {
        let (Some(threshold), Some(value)) = (thresholds.get(signal), value) else {
            return false;
        };
        value.available < Threshold::of(threshold, value.capacity)
    };
    Pressure {
        memory: below("memory.available", observed.memory),
        disk: below("nodefs.available", observed.nodefs)
            || below("imagefs.available", observed.nodefs)
            || below("nodefs.inodesFree", observed.nodefs_inodes)
            || below("imagefs.inodesFree", observed.nodefs_inodes),
        pid: below("pid.available", observed.pids),
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::{default_thresholds, parse_thresholds};
    use super::*;

    fn signal(available: u64, capacity: u64) -> Option<Signal> {
        Some(Signal {
            available,
            capacity,
        })
    }

    #[test]
    fn pressure_follows_the_thresholds() {
        let thresholds = default_thresholds();
        let fine = Observations {
            memory: signal(2 << 30, 8 << 30),
            nodefs: signal(50, 100),
            nodefs_inodes: signal(90, 100),
            pids: signal(10, 1000),
        };
        // No pid.available threshold by default: no PID pressure however few are left.
        assert_eq!(pressure(&fine, &thresholds), Pressure::default());
        let low_memory = Observations {
            memory: signal(50 << 20, 8 << 30),
            ..fine
        };
        assert!(pressure(&low_memory, &thresholds).memory);
        // imagefs.available 15 % trips before nodefs.available 10 %.
        let disk = Observations {
            nodefs: signal(12, 100),
            ..fine
        };
        assert!(pressure(&disk, &thresholds).disk);
        let inodes = Observations {
            nodefs_inodes: signal(4, 100),
            ..fine
        };
        assert!(pressure(&inodes, &thresholds).disk);
        let pid =
            parse_thresholds(&[("pid.available".to_owned(), "5%".to_owned())].into()).unwrap();
        assert!(pressure(&fine, &pid).pid);
        assert_eq!(
            pressure(&Observations::default(), &thresholds),
            Pressure::default()
        );
    }

    #[test]
    fn meminfo_gives_available_of_total() {
        let text = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    400 kB\n";
        assert_eq!(memory(text), signal(400 * 1024, 1000 * 1024));
        assert_eq!(memory("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn loadavg_gives_the_task_count() {
        assert_eq!(tasks_in_use("0.00 0.01 0.05 2/345 6789\n"), Some(345));
        assert_eq!(tasks_in_use("0.00 0.01"), None);
    }

    #[test]
    fn host_observations_are_plausible() {
        let observed = Observations::from_host(Path::new("/"));
        let memory = observed.memory.unwrap();
        assert!(memory.available <= memory.capacity && memory.capacity > 0);
        assert!(observed.nodefs.unwrap().capacity > 0);
        assert!(observed.pids.unwrap().available > 0);
    }
}
