//! Container and pod statistics: CPU and memory from cgroups, writable-layer usage from the
//! upper directory, network counters from the pod's namespace, process counts.

use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};

use super::cgroups::{self, CgroupUsage};
use super::container::ContainerRecord;
use super::error::RuntimeError;
use super::sandbox::{labels_match, SandboxPhase, SandboxRecord};
use super::store::now_nanos;
use super::{rootfs, Runtime};

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

fn cpu(usage: &CgroupUsage, at: i64) -> CpuUsage {
    CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: value(usage.cpu_usage_ns),
        usage_nano_cores: None,
    }
}

fn memory(usage: &CgroupUsage, at: i64) -> MemoryUsage {
    MemoryUsage {
        timestamp: at,
        working_set_bytes: value(usage.working_set_bytes),
        available_bytes: None,
        usage_bytes: value(usage.memory_usage_bytes),
        rss_bytes: value(usage.rss_bytes),
        page_faults: value(usage.page_faults),
        major_page_faults: value(usage.major_page_faults),
    }
}

impl Runtime {
    fn stats_of(&self, record: &ContainerRecord) -> ContainerStats {
        let at = now_nanos();
        let usage = cgroups::usage(&record.cgroup_path).unwrap_or_default();
        let layout = rootfs::Layout::under(&self.containers.dir_of(&record.id));
        let (bytes, inodes) = rootfs::usage(&layout.upper);
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            cpu: Some(cpu(&usage, at)),
            memory: Some(memory(&usage, at)),
            writable_layer: Some(FilesystemUsage {
                timestamp: at,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.config.container_root().display().to_string(),
                }),
                used_bytes: value(bytes),
                inodes_used: value(inodes),
            }),
            swap: None,
        }
    }

    /// Statistics of one container.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        Ok(self.stats_of(&self.container(id)?))
    }

    /// Statistics of the containers matching the filter.
    pub fn list_container_stats(
        &self,
        filter: Option<&ContainerStatsFilter>,
    ) -> Vec<ContainerStats> {
        self.containers
            .all()
            .into_iter()
            .filter(|c| match filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || c.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty()
                            || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                        && labels_match(&c.config.labels, &f.label_selector)
                }
            })
            .map(|c| self.stats_of(&c))
            .collect()
    }

    fn sandbox_stats_of(&self, record: &SandboxRecord) -> PodSandboxStats {
        let at = now_nanos();
        let containers: Vec<ContainerStats> = self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id)
            .map(|c| self.stats_of(&c))
            .collect();
        // The pod's usage: its monitor's cgroup plus its containers' cgroups.
        let mut total = cgroups::child_path(&record.cgroup_parent, &record.id)
            .ok()
            .and_then(|p| cgroups::usage(&p))
            .unwrap_or_default();
        for c in self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id)
        {
            if let Some(u) = cgroups::usage(&c.cgroup_path) {
                total.cpu_usage_ns += u.cpu_usage_ns;
                total.memory_usage_bytes += u.memory_usage_bytes;
                total.working_set_bytes += u.working_set_bytes;
                total.rss_bytes += u.rss_bytes;
                total.page_faults += u.page_faults;
                total.major_page_faults += u.major_page_faults;
            }
        }
        let monitor = crate::monitor::launch::monitor_pid(&record.run_dir);
        let network = monitor
            .filter(|_| record.phase == SandboxPhase::Ready && !record.host_network())
            .map(|pid| network_usage(pid, at));
        let processes = self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.sandbox_id == record.id)
            .map(|c| cgroups::process_count(&c.cgroup_path))
            .sum::<u64>();
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu(&total, at)),
                memory: Some(memory(&total, at)),
                network,
                process: Some(ProcessUsage {
                    timestamp: at,
                    process_count: value(processes),
                }),
                containers,
            }),
            windows: None,
        }
    }

    /// Statistics of one sandbox.
    pub fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats, RuntimeError> {
        Ok(self.sandbox_stats_of(&self.sandbox(id)?))
    }

    /// Statistics of the sandboxes matching the filter.
    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<&PodSandboxStatsFilter>,
    ) -> Vec<PodSandboxStats> {
        self.sandboxes
            .all()
            .into_iter()
            .filter(|s| s.phase != SandboxPhase::Creating)
            .filter(|s| match filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || s.id.starts_with(&f.id))
                        && labels_match(&s.config.labels, &f.label_selector)
                }
            })
            .map(|s| self.sandbox_stats_of(&s))
            .collect()
    }
}

/// Interface counters seen from inside the pod's network namespace (via its monitor).
fn network_usage(monitor_pid: i32, at: i64) -> NetworkUsage {
    let text = std::fs::read_to_string(format!("/proc/{monitor_pid}/net/dev")).unwrap_or_default();
    let interfaces: Vec<NetworkInterfaceUsage> = parse_net_dev(&text)
        .into_iter()
        .filter(|i| i.name != "lo")
        .collect();
    NetworkUsage {
        timestamp: at,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
        interfaces,
    }
}

fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            if fields.len() < 11 {
                return None;
            }
            Some(NetworkInterfaceUsage {
                name: name.trim().to_owned(),
                rx_bytes: value(fields[0]),
                rx_errors: value(fields[2]),
                tx_bytes: value(fields[8]),
                tx_errors: value(fields[10]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_is_parsed() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    2    0    0     0          0         0     3000      30    1    0    0     0       0          0\n";
        let parsed = parse_net_dev(text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].name, "eth0");
        assert_eq!(parsed[1].rx_bytes, value(5000));
        assert_eq!(parsed[1].rx_errors, value(2));
        assert_eq!(parsed[1].tx_bytes, value(3000));
        assert_eq!(parsed[1].tx_errors, value(1));
    }
}
