//! The root filesystem around the spec's mounts: propagation, the rootfs as a mount point,
//! pivot_root, masked and read-only paths, the read-only root.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use rustix::fs::{Mode, OFlags};

use super::error::{ExecutorError, Result, SysContext};
use super::mounts::{mount_at, options};

/// Sets the propagation of every mount in our (new) namespace, so nothing we mount
/// reaches the host, then makes `rootfs` a mount point of its own (pivot_root needs one;
/// in tests it is a plain directory) and opens it.
pub fn prepare(rootfs: &Path, propagation: Option<&str>) -> Result<OwnedFd> {
    let flags = match propagation.filter(|p| !p.is_empty()) {
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(name) => options::propagation(name)
            .ok_or_else(|| ExecutorError::Invalid(format!("unknown rootfsPropagation {name:?}")))?,
    };
    mount_at(None, Path::new("/"), None, flags, None).sys(|| "setting propagation of /")?;
    mount_at(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .sys(|| format!("bind mounting {} on itself", rootfs.display()))?;
    rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("opening {}", rootfs.display()))
}

/// Makes the rootfs `/` and detaches the host's root from our namespace.
pub fn pivot(root: &OwnedFd) -> Result<()> {
    nix::unistd::fchdir(root).sys(|| "entering the root filesystem")?;
    // With new and old root the same directory, the old root ends up stacked on the new
    // one, where it can be detached without a directory to hold it.
    nix::unistd::pivot_root(".", ".").sys(|| "pivot_root")?;
    // Slave first, so detaching the old root does not propagate unmounts to the host.
    mount_at(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .sys(|| "making the old root a slave")?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).sys(|| "detaching the old root")?;
    nix::unistd::chdir("/").sys(|| "chdir /")
}

/// Hides `paths` (after pivot_root): /dev/null over files, an empty read-only tmpfs over
/// directories. Missing paths are skipped.
pub fn mask(paths: &[String]) -> Result<()> {
    for path in paths {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).sys(|| format!("masking {path}")),
        };
        let path = Path::new(path);
        if metadata.is_dir() {
            mount_at(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
        } else {
            mount_at(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )
        }
        .sys(|| format!("masking {}", path.display()))?;
    }
    Ok(())
}

/// Makes `paths` read-only (after pivot_root). Missing paths are skipped.
pub fn make_readonly(paths: &[String]) -> Result<()> {
    for path in paths {
        let path = Path::new(path);
        match mount_at(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e).sys(|| format!("bind mounting {}", path.display())),
        }
        remount_readonly(path)?;
    }
    Ok(())
}

/// Makes `/` read-only once every other mount is in place.
pub fn readonly_root() -> Result<()> {
    remount_readonly(Path::new("/"))
}

/// Remounts the mount at `path` read-only, keeping its nosuid/nodev/noexec/atime flags
/// (dropping them could be refused and would loosen the mount).
fn remount_readonly(path: &Path) -> Result<()> {
    let current = statvfs(path)
        .sys(|| format!("statfs {}", path.display()))?
        .flags();
    mount_at(
        None,
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags(current),
        None,
    )
    .sys(|| format!("remounting {} read-only", path.display()))
}

/// The mount flags a remount must repeat to keep them.
pub fn kept_flags(current: FsFlags) -> MsFlags {
    let pairs = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st, _)| current.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_flags_map_statvfs_to_mount_flags() {
        assert_eq!(
            kept_flags(FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC | FsFlags::ST_RDONLY),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
        );
        assert_eq!(kept_flags(FsFlags::empty()), MsFlags::empty());
    }
}
