//! The spec's mounts, in order, each placed at a destination resolved inside the rootfs.

mod cgroupfs;
pub mod options;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::error::{ExecutorError, Result, SysContext};
use super::resolve::{self, fd_path, Leaf};
use options::MountOptions;

/// Performs every mount of the spec below `root` (the rootfs, before pivot_root); relative
/// bind sources are relative to `bundle`.
pub fn mount_all(root: BorrowedFd<'_>, mounts: &[Mount], bundle: &Path) -> Result<()> {
    for mount in mounts {
        mount_one(root, mount, bundle)?;
    }
    Ok(())
}

fn mount_one(root: BorrowedFd<'_>, mount: &Mount, bundle: &Path) -> Result<()> {
    let mut options = options::parse(mount.options().as_deref().unwrap_or_default());
    let fstype = mount.typ().as_deref().unwrap_or("");
    let destination = mount.destination();
    if options.bind || fstype == "bind" || fstype == "rbind" {
        options.recursive |= fstype == "rbind";
        bind(root, mount, &options, bundle)?;
    } else if fstype == "cgroup" {
        cgroupfs::mount(root, destination, &options)?;
    } else {
        if fstype.is_empty() {
            return Err(ExecutorError::Invalid(format!(
                "mount {}: no type and not a bind mount",
                destination.display()
            )));
        }
        let target = resolve::open_or_create(root, destination, Leaf::Dir)?;
        let source = mount
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(fstype));
        let data = options.data();
        mount_at(
            Some(&source),
            &fd_path(target.as_fd()),
            Some(fstype),
            options.flags,
            data.as_deref(),
        )
        .sys(|| format!("mounting {fstype} on {}", destination.display()))?;
    }
    set_propagation(root, destination, &options.propagation)
}

fn bind(root: BorrowedFd<'_>, mount: &Mount, options: &MountOptions, bundle: &Path) -> Result<()> {
    let destination = mount.destination();
    let source = mount.source().as_ref().ok_or_else(|| {
        ExecutorError::Invalid(format!(
            "bind mount on {} has no source",
            destination.display()
        ))
    })?;
    let source = bundle.join(source);
    let metadata = std::fs::metadata(&source).sys(|| {
        format!(
            "bind mount source {} (for {})",
            source.display(),
            destination.display()
        )
    })?;
    let leaf = if metadata.is_dir() {
        Leaf::Dir
    } else {
        Leaf::File
    };
    let target = resolve::open_or_create(root, destination, leaf)?;
    let mut flags = MsFlags::MS_BIND;
    if options.recursive {
        flags |= MsFlags::MS_REC;
    }
    mount_at(Some(&source), &fd_path(target.as_fd()), None, flags, None).sys(|| {
        format!(
            "bind mounting {} on {}",
            source.display(),
            destination.display()
        )
    })?;
    let remount = options.remount_flags();
    if !remount.is_empty() {
        remount_bind(root, destination, remount)?;
    }
    Ok(())
}

/// Changes the per-mount flags of the bind mount at `destination` (mount(2) ignores them
/// when creating a bind).
pub fn remount_bind(root: BorrowedFd<'_>, destination: &Path, flags: MsFlags) -> Result<()> {
    let mounted = reopen(root, destination)?;
    mount_at(
        None,
        &fd_path(mounted.as_fd()),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None,
    )
    .sys(|| format!("remounting {} with {flags:?}", destination.display()))
}

fn set_propagation(root: BorrowedFd<'_>, destination: &Path, changes: &[MsFlags]) -> Result<()> {
    for &change in changes {
        let mounted = reopen(root, destination)?;
        mount_at(None, &fd_path(mounted.as_fd()), None, change, None)
            .sys(|| format!("changing propagation of {}", destination.display()))?;
    }
    Ok(())
}

/// The root of what is now mounted at `destination`: descriptors taken before mounting
/// still name the covered directory.
pub fn reopen(root: BorrowedFd<'_>, destination: &Path) -> Result<OwnedFd> {
    resolve::open(root, destination).sys(|| format!("opening {}", destination.display()))
}

/// mount(2) with plain `&str`/`&Path` arguments.
pub fn mount_at(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(source, target, fstype, flags, data)
}
