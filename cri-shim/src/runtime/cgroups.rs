//! Cgroups of sandboxes and containers in the cgroupfs layout (`<parent>/<id>` in every
//! hierarchy), on cgroup v1 and v2, through cgroups-rs.

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, HugePageResource, MaxValue, Resources};
use oci_spec::runtime::LinuxResources;

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {message}")]
pub struct CgroupError {
    /// The cgroup path.
    pub path: String,
    /// What failed.
    pub message: String,
}

fn error(path: &str, message: impl std::fmt::Display) -> CgroupError {
    CgroupError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// `parent/leaf` as an absolute cgroup path; a parent that tries to climb with `..` is refused.
pub fn child_path(parent: &str, leaf: &str) -> Result<String, CgroupError> {
    let parent = parent.trim_matches('/');
    if parent.split('/').any(|c| c == ".." || c == ".") {
        return Err(error(parent, "cgroup parent must not contain `.` or `..`"));
    }
    Ok(if parent.is_empty() {
        format!("/{leaf}")
    } else {
        format!("/{parent}/{leaf}")
    })
}

fn load(path: &str) -> Cgroup {
    Cgroup::load(hierarchies::auto(), path.trim_start_matches('/'))
}

/// Whether the host runs the unified (v2-only) hierarchy.
pub fn is_v2() -> bool {
    hierarchies::is_cgroup2_unified_mode()
}

/// Create the cgroup (and missing parents) with the given limits (a container spec's
/// `linux.resources`; device rules are the executor's).
pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
    let cgroup = Cgroup::new(hierarchies::auto(), path.trim_start_matches('/'))
        .map_err(|e| error(path, format!("creating: {e}")))?;
    if let Some(resources) = resources {
        apply(&cgroup, path, resources)?;
    }
    Ok(())
}

/// Change the limits of an existing cgroup.
pub fn update(path: &str, resources: &LinuxResources) -> Result<(), CgroupError> {
    let cgroup = load(path);
    if !cgroup.exists() {
        return Err(error(path, "does not exist"));
    }
    apply(&cgroup, path, resources)
}

fn apply(cgroup: &Cgroup, path: &str, resources: &LinuxResources) -> Result<(), CgroupError> {
    cgroup
        .apply(&to_resources(resources))
        .map_err(|e| error(path, format!("setting limits: {e}")))?;
    if let Some(memory) = resources.memory() {
        set_memory(cgroup, path, memory.limit(), memory.swap())?;
    }
    Ok(())
}

/// Memory and memory+swap limits (OCI counts swap as memory + swap, -1 unlimited). cgroups-rs
/// drops write errors and writes the limit first, so raising both on v1 would fail: the
/// kernel keeps `memory.limit_in_bytes` ≤ `memory.memsw.limit_in_bytes` at every step.
/// The order is runc's: swap first when it grows past the current limit.
fn set_memory(
    cgroup: &Cgroup,
    path: &str,
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<(), CgroupError> {
    let Some(memory) = cgroup.controller_of::<MemController>() else {
        return match (limit, swap) {
            (None, None) => Ok(()),
            _ => Err(error(path, "no memory controller")),
        };
    };
    let set_limit = |v: i64| {
        memory
            .set_limit(v)
            .map_err(|e| error(path, format!("setting the memory limit to {v}: {e}")))
    };
    let set_swap = |v: i64| {
        memory
            .set_memswap_limit(v)
            .map_err(|e| error(path, format!("setting the swap limit to {v}: {e}")))
    };
    if is_v2() {
        // v2 limits swap alone: memory.swap.max = (memory + swap) - memory.
        if let Some(limit) = limit {
            set_limit(limit)?;
        }
        if let Some(swap) = swap {
            let swap_only = match (swap, limit) {
                (-1, _) | (_, None | Some(-1)) => -1,
                (total, Some(limit)) => total.saturating_sub(limit).max(0),
            };
            set_swap(swap_only)?;
        }
        return Ok(());
    }
    match (limit, swap) {
        (Some(limit), Some(swap)) => {
            let current = memory.memory_stat().limit_in_bytes;
            if swap == -1 || current < swap {
                set_swap(swap)?;
                set_limit(limit)
            } else {
                set_limit(limit)?;
                set_swap(swap)
            }
        }
        (Some(limit), None) => set_limit(limit),
        (None, Some(swap)) => set_swap(swap),
        (None, None) => Ok(()),
    }
}

/// OCI resources in cgroups-rs terms, memory aside (see [`set_memory`]).
fn to_resources(oci: &LinuxResources) -> Resources {
    let mut resources = Resources::default();
    if let Some(cpu) = oci.cpu() {
        resources.cpu.shares = cpu.shares();
        resources.cpu.quota = cpu.quota();
        resources.cpu.period = cpu.period();
        resources.cpu.cpus = cpu.cpus().clone();
        resources.cpu.mems = cpu.mems().clone();
    }
    resources.hugepages.limits = oci
        .hugepage_limits()
        .iter()
        .flatten()
        .map(|h| HugePageResource {
            size: h.page_size().clone(),
            limit: u64::try_from(h.limit()).unwrap_or(0),
        })
        .collect();
    for (key, value) in oci.unified().iter().flatten() {
        // v2 interface files; cgroups-rs writes the controller's attrs verbatim.
        if key.starts_with("memory.") {
            resources.memory.attrs.insert(key.clone(), value.clone());
        } else if key.starts_with("cpu.") || key.starts_with("cpuset.") {
            resources.cpu.attrs.insert(key.clone(), value.clone());
        }
    }
    resources
}

/// Limit the number of processes in a cgroup (the kubelet's pod pids limit).
pub fn limit_pids(path: &str, max: i64) -> Result<(), CgroupError> {
    let mut resources = Resources::default();
    resources.pid.maximum_number_of_processes = Some(MaxValue::Value(max));
    load(path)
        .apply(&resources)
        .map_err(|e| error(path, format!("setting pids.max: {e}")))
}

/// Remove the cgroup. Absent is fine; one that still holds processes is an error.
pub fn remove(path: &str) -> Result<(), CgroupError> {
    let cgroup = load(path);
    if !cgroup.exists() {
        return Ok(());
    }
    cgroup
        .delete()
        .map_err(|e| error(path, format!("removing: {e}")))
}

/// Kill every process left in the cgroup (used when a crash left one behind).
pub fn kill_all(path: &str) {
    let cgroup = load(path);
    for pid in cgroup.procs() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Processes in the cgroup (0 when it does not exist).
pub fn process_count(path: &str) -> u64 {
    let cgroup = load(path);
    if !cgroup.exists() {
        return 0;
    }
    cgroup.procs().len() as u64
}

/// Resource usage of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, page cache included.
    pub memory_usage_bytes: u64,
    /// Memory in use minus inactive file pages: what the kubelet evicts on.
    pub working_set_bytes: u64,
    /// Anonymous memory (and swap cache).
    pub rss_bytes: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
}

/// Current usage of the cgroup, or `None` when it does not exist.
pub fn usage(path: &str) -> Option<CgroupUsage> {
    let cgroup = load(path);
    if !cgroup.exists() {
        return None;
    }
    let mut usage = CgroupUsage::default();
    if let Some(acct) = cgroup.controller_of::<CpuAcctController>() {
        usage.cpu_usage_ns = acct.cpuacct().usage;
    } else if let Some(cpu) = cgroup.controller_of::<CpuController>() {
        // v2: cpu.stat usage_usec.
        usage.cpu_usage_ns = stat_value(&cpu.cpu().stat, "usage_usec").saturating_mul(1000);
    }
    if let Some(memory) = cgroup.controller_of::<MemController>() {
        let m = memory.memory_stat();
        usage.memory_usage_bytes = m.usage_in_bytes;
        usage.working_set_bytes = m.usage_in_bytes.saturating_sub(m.stat.total_inactive_file);
        usage.rss_bytes = m.stat.total_rss;
        usage.page_faults = m.stat.total_pgfault;
        usage.major_page_faults = m.stat.total_pgmajfault;
    }
    Some(usage)
}

fn stat_value(stat: &str, key: &str) -> u64 {
    stat.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_paths_are_absolute_and_refuse_climbing() {
        assert_eq!(
            child_path("/kubepods/pod1", "abc").unwrap(),
            "/kubepods/pod1/abc"
        );
        assert_eq!(child_path("kubepods/", "abc").unwrap(), "/kubepods/abc");
        assert_eq!(child_path("", "abc").unwrap(), "/abc");
        assert!(child_path("/kubepods/../../etc", "x").is_err());
    }

    #[test]
    fn spec_resources_map_to_cgroups_rs() {
        let r = to_resources(&LinuxResources::default());
        assert_eq!(r.cpu.shares, None);
        assert_eq!(r.cpu.quota, None);
        let cri = k8s_cri::v1::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let r = to_resources(&crate::spec::container_resources(&cri).unwrap());
        assert_eq!(r.cpu.shares, Some(512));
        assert_eq!(r.cpu.quota, Some(50_000));
        assert_eq!(r.cpu.period, Some(100_000));
        assert_eq!(r.cpu.cpus.as_deref(), Some("0"));
        // Memory is written by set_memory, in an order cgroups-rs does not know.
        assert_eq!(r.memory.memory_hard_limit, None);
    }

    #[test]
    fn v2_cpu_stat_is_parsed() {
        assert_eq!(
            stat_value("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            1234
        );
        assert_eq!(stat_value("", "usage_usec"), 0);
    }
}
