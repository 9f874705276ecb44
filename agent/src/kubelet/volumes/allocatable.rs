//! Node allocatable resources: the default for unset container limits in the downward API and
//! the default size of memory-backed volumes.

use std::fs;
use std::io;
use std::path::Path;

/// What the node offers to pods (after any reservations the caller subtracts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
}

impl NodeAllocatable {
    /// The machine's capacity: online CPUs, MemTotal, and the size of the filesystem holding
    /// `root` (the kubelet root), with nothing reserved.
    pub fn from_host(root: &Path) -> io::Result<Self> {
        let cpus = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .map_err(io::Error::from)?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1);
        let meminfo = fs::read_to_string("/proc/meminfo")?;
        let memory_bytes = parse_mem_total(&meminfo).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo")
        })?;
        let vfs = rustix::fs::statvfs(root)?;
        Ok(NodeAllocatable {
            cpu_millis: cpus.saturating_mul(1000),
            memory_bytes,
            ephemeral_storage_bytes: vfs.f_blocks.saturating_mul(vfs.f_frsize),
        })
    }
}

/// `MemTotal:  16318512 kB` → bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16318512 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(text), Some(16_318_512 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn host_values_are_plausible() -> io::Result<()> {
        let a = NodeAllocatable::from_host(Path::new("/"))?;
        assert!(a.cpu_millis >= 1000);
        assert!(a.memory_bytes > 64 << 20);
        assert!(a.ephemeral_storage_bytes > 0);
        Ok(())
    }
}
