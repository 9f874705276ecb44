//! `/dev` of a container: the standard nodes, bind-mounted from the host (which works
//! without CAP_MKNOD and keeps the host's major/minor numbers), the standard symlinks, the
//! console of a terminal, and the spec's `linux.devices`.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;

use super::error::{ExecutorError, Result, SysContext};
use super::mounts::mount_at;
use super::resolve::{self, fd_path, relative, Leaf};

/// Nodes every container gets when `/dev` is a fresh tmpfs.
pub const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks every container gets in a fresh `/dev` (name, target).
pub const DEFAULT_SYMLINKS: [(&str, &str); 6] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// Whether the spec mounts a tmpfs on `/dev` (then the executor populates it).
pub fn dev_is_tmpfs(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        relative(m.destination()) == Path::new("dev") && m.typ().as_deref() == Some("tmpfs")
    })
}

/// Populates `/dev` inside `root` (before pivot_root; host paths are still visible).
pub fn setup(
    root: BorrowedFd<'_>,
    mounts: &[Mount],
    devices: &[LinuxDevice],
    terminal: bool,
) -> Result<()> {
    if dev_is_tmpfs(mounts) {
        // A spec device on a default node's path replaces it (privileged containers list
        // the host's /dev/tty, for one): binding first would leave a busy mount point.
        for name in DEFAULT_DEVICES {
            let path = Path::new("/dev").join(name);
            if !devices.iter().any(|d| d.path() == &path) {
                bind_host_node(root, &path)?;
            }
        }
        let dev = resolve::open(root, Path::new("dev")).sys(|| "opening /dev")?;
        for (name, target) in DEFAULT_SYMLINKS {
            match rustix::fs::symlinkat(target, dev.as_fd(), name) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).sys(|| format!("linking /dev/{name} to {target}")),
            }
        }
        if terminal {
            bind_console(root)?;
        }
    }
    for device in devices {
        create(root, device)?;
    }
    Ok(())
}

/// Binds the pty slave the monitor made our stdin on `/dev/console`. The bind source is
/// the slave's path looked up again: the descriptor belongs to the monitor's mount
/// namespace, and mount(2) refuses sources from another namespace.
fn bind_console(root: BorrowedFd<'_>) -> Result<()> {
    let slave = std::fs::read_link("/proc/self/fd/0").sys(|| "finding the terminal of stdin")?;
    let by_fd = rustix::fs::fstat(std::io::stdin().as_fd()).sys(|| "stat of stdin")?;
    let by_path = rustix::fs::stat(&slave).sys(|| format!("stat of {}", slave.display()))?;
    if by_fd.st_rdev != by_path.st_rdev || by_fd.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(ExecutorError::Invalid(format!(
            "stdin is not the terminal {}",
            slave.display()
        )));
    }
    let console = resolve::open_or_create(root, Path::new("/dev/console"), Leaf::File)?;
    mount_at(
        Some(&slave),
        &fd_path(console.as_fd()),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .sys(|| format!("bind mounting {} on /dev/console", slave.display()))
}

/// Bind-mounts the host's node at `path` on the same path inside `root`.
fn bind_host_node(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let target = resolve::open_or_create(root, path, Leaf::File)?;
    mount_at(
        Some(path),
        &fd_path(target.as_fd()),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .sys(|| format!("bind mounting the host's {}", path.display()))
}

/// Creates one `linux.devices` node with mknod, falling back to a bind of the host's node
/// when mknod is not permitted.
fn create(root: BorrowedFd<'_>, device: &LinuxDevice) -> Result<()> {
    let path = device.path();
    let (parent_path, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (parent, name),
        _ => {
            return Err(ExecutorError::Invalid(format!(
                "device path {} names no file",
                path.display()
            )))
        }
    };
    let file_type = node_type(device.typ()).ok_or_else(|| {
        ExecutorError::Invalid(format!(
            "device {}: type {} is not a node type",
            path.display(),
            device.typ().as_str()
        ))
    })?;
    let major = u32::try_from(device.major()).ok();
    let minor = u32::try_from(device.minor()).ok();
    let (Some(major), Some(minor)) = (major, minor) else {
        return Err(ExecutorError::Invalid(format!(
            "device {}: bad major/minor {}:{}",
            path.display(),
            device.major(),
            device.minor()
        )));
    };
    let parent = resolve::open_or_create(root, parent_path, Leaf::Dir)?;
    match rustix::fs::unlinkat(parent.as_fd(), name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).sys(|| format!("replacing {}", path.display())),
    }
    let mode = Mode::from_raw_mode(device.file_mode().unwrap_or(0o666) & 0o7777);
    match rustix::fs::mknodat(
        parent.as_fd(),
        name,
        file_type,
        mode,
        rustix::fs::makedev(major, minor),
    ) {
        Ok(()) => {}
        Err(Errno::PERM) => return bind_host_node(root, path),
        Err(e) => return Err(e).sys(|| format!("creating device {}", path.display())),
    }
    let uid = device.uid().filter(|&id| id != u32::MAX);
    let gid = device.gid().filter(|&id| id != u32::MAX);
    if uid.is_some() || gid.is_some() {
        rustix::fs::chownat(
            parent.as_fd(),
            name,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .sys(|| format!("changing the owner of {}", path.display()))?;
    }
    Ok(())
}

/// The file type mknod creates for a spec device type (`a` is only a cgroup rule).
pub fn node_type(typ: LinuxDeviceType) -> Option<FileType> {
    match typ {
        LinuxDeviceType::C | LinuxDeviceType::U => Some(FileType::CharacterDevice),
        LinuxDeviceType::B => Some(FileType::BlockDevice),
        LinuxDeviceType::P => Some(FileType::Fifo),
        LinuxDeviceType::A => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    #[test]
    fn only_a_tmpfs_dev_is_populated() {
        let tmpfs = MountBuilder::default()
            .destination("/dev/")
            .typ("tmpfs")
            .build()
            .expect("mount");
        let bind = MountBuilder::default()
            .destination("/dev")
            .typ("bind")
            .build()
            .expect("mount");
        assert!(dev_is_tmpfs(&[tmpfs]));
        assert!(!dev_is_tmpfs(&[bind]));
        assert!(!dev_is_tmpfs(&[]));
    }

    #[test]
    fn node_types() {
        assert_eq!(
            node_type(LinuxDeviceType::C),
            Some(FileType::CharacterDevice)
        );
        assert_eq!(node_type(LinuxDeviceType::B), Some(FileType::BlockDevice));
        assert_eq!(node_type(LinuxDeviceType::P), Some(FileType::Fifo));
        assert_eq!(node_type(LinuxDeviceType::A), None);
    }
}
