//! A `cgroup` mount: on a unified (v2) host one cgroup2 filesystem; on a v1 or hybrid host
//! a tmpfs holding one mount per hierarchy, named as on the host (`memory`,
//! `cpu,cpuacct` with `cpu` and `cpuacct` links, `unified`, ...). A `cgroup` filesystem
//! cannot be mounted at once with every v1 controller, since the host already mounts them
//! in separate hierarchies. Mounted after the container's cgroup namespace was created,
//! each hierarchy's root is the container's own cgroup.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::mount::MsFlags;
use rustix::io::Errno;

use super::options::MountOptions;
use super::{mount_at, remount_bind, reopen};
use crate::executor::error::{Result, SysContext};
use crate::executor::mountinfo::cgroup_mounts;
use crate::executor::resolve::{self, fd_path, Leaf};

/// Where the host mounts its cgroup hierarchies.
const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One host cgroup hierarchy to mount again in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Directory name under the cgroup root (`memory`, `cpu,cpuacct`, `unified`).
    pub name: String,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Superblock options naming the controllers (`cpu,cpuacct`, `xattr,name=systemd`).
    pub options: String,
}

/// Mounts the cgroup filesystem(s) at `destination` inside `root`.
pub fn mount(root: BorrowedFd<'_>, destination: &Path, options: &MountOptions) -> Result<()> {
    if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        let target = resolve::open_or_create(root, destination, Leaf::Dir)?;
        return mount_at(
            Some(Path::new("cgroup2")),
            &fd_path(target.as_fd()),
            Some("cgroup2"),
            options.flags,
            None,
        )
        .sys(|| format!("mounting cgroup2 on {}", destination.display()));
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").sys(|| "reading /proc/self/mountinfo")?;
    let hierarchies = host_hierarchies(&mountinfo);

    let target = resolve::open_or_create(root, destination, Leaf::Dir)?;
    mount_at(
        Some(Path::new("tmpfs")),
        &fd_path(target.as_fd()),
        Some("tmpfs"),
        options.flags - MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .sys(|| format!("mounting tmpfs on {}", destination.display()))?;
    let top = reopen(root, destination)?;

    for hierarchy in &hierarchies {
        let path = destination.join(&hierarchy.name);
        let dir = resolve::open_or_create(root, &path, Leaf::Dir)?;
        let data = (!hierarchy.options.is_empty()).then_some(hierarchy.options.as_str());
        mount_at(
            Some(Path::new(&hierarchy.fstype)),
            &fd_path(dir.as_fd()),
            Some(&hierarchy.fstype),
            options.flags,
            data,
        )
        .sys(|| format!("mounting {} on {}", hierarchy.fstype, path.display()))?;
        for alias in hierarchy.name.split(',').filter(|a| *a != hierarchy.name) {
            match rustix::fs::symlinkat(hierarchy.name.as_str(), top.as_fd(), alias) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(e).sys(|| format!("linking {}/{alias}", destination.display()))
                }
            }
        }
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        remount_bind(root, destination, options.remount_flags())?;
    }
    Ok(())
}

/// The cgroup hierarchies mounted directly under the host's cgroup root.
pub fn host_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    cgroup_mounts(mountinfo)
        .into_iter()
        .filter(|m| m.mount_point.parent() == Some(Path::new(HOST_CGROUP_ROOT)))
        .filter_map(|m| {
            let name = m.mount_point.file_name()?.to_str()?.to_owned();
            // cgroup2 options (nsdelegate, ...) are per-superblock and not ours to pass.
            let options = if m.fstype == "cgroup" {
                m.options.join(",")
            } else {
                String::new()
            };
            Some(Hierarchy {
                name,
                fstype: m.fstype,
                options,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
32 26 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
40 31 0:30 / /mnt/elsewhere rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn hierarchies_under_the_host_root_with_their_controllers() {
        let found = host_hierarchies(HYBRID);
        let summary: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|h| (h.name.as_str(), h.fstype.as_str(), h.options.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("unified", "cgroup2", ""),
                ("systemd", "cgroup", "xattr,name=systemd"),
                ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                ("memory", "cgroup", "memory"),
            ]
        );
    }
}
