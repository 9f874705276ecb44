//! subPath mounts done safely, as the kubelet does since CVE-2017-1002101/CVE-2021-25741:
//! the path is resolved inside the volume with `openat2(RESOLVE_BENEATH)` (symlinks that stay
//! inside are fine, any escape is refused), missing directories are created without following
//! symlinks, and the runtime gets a bind mount of the opened file descriptor at
//! `<pod>/volume-subpaths/<volume>/<container>/<index>`, which a container cannot swap.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::error::VolumeError;
use super::mounts::{is_mount_point, unmount_all_at};

/// One subPath to prepare.
pub(super) struct SubPath<'a> {
    /// Volume name (for errors).
    pub(super) volume: &'a str,
    /// The volume's directory on the host.
    pub(super) volume_root: &'a Path,
    /// The subPath, already expanded.
    pub(super) sub_path: &'a str,
    /// Where the resolved path is bound.
    pub(super) target: PathBuf,
}

/// Checks the subPath's form: relative and without `..` (ValidatePathNoBacksteps).
pub(super) fn check_form(sub_path: &str) -> Result<(), String> {
    if sub_path.starts_with('/') {
        return Err(format!("subPath {sub_path:?} must not be an absolute path"));
    }
    if sub_path.split('/').any(|c| c == "..") {
        return Err(format!("subPath {sub_path:?} must not contain '..'"));
    }
    if sub_path.contains('\0') {
        return Err(format!("subPath {sub_path:?} must not contain NUL"));
    }
    Ok(())
}

/// Resolves the subPath (creating it as a directory if missing) and binds it at the target;
/// returns the target, the path to give the runtime.
pub(super) fn prepare(sp: &SubPath<'_>) -> Result<PathBuf, VolumeError> {
    let root_path = sp.volume_root;
    let root = rfs::open(
        root_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| VolumeError::io("open volume", root_path, e))?;
    let resolved = match resolve(&root, sp.sub_path) {
        Err(Errno::NOENT) => {
            let perm = rfs::fstat(&root)
                .map_err(|e| VolumeError::io("inspect volume", root_path, e))?
                .st_mode
                & 0o7777;
            make_dirs(sp, &root, perm)?;
            resolve(&root, sp.sub_path)
        }
        other => other,
    };
    let fd = resolved.map_err(|e| resolve_error(sp, e))?;
    let st =
        rfs::fstat(&fd).map_err(|e| VolumeError::io("inspect", root_path.join(sp.sub_path), e))?;
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    bind(sp, &fd, is_dir, (st.st_dev, st.st_ino))?;
    Ok(sp.target.clone())
}

fn resolve(root: &OwnedFd, sub_path: &str) -> Result<OwnedFd, Errno> {
    let path = if sub_path.trim_matches('/').is_empty() {
        "."
    } else {
        sub_path
    };
    rfs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

fn resolve_error(sp: &SubPath<'_>, e: Errno) -> VolumeError {
    match e {
        // openat2 reports an escape (absolute symlink, `..` out of the root) as EXDEV.
        Errno::XDEV => VolumeError::SubPathEscapes {
            volume: sp.volume.to_string(),
            sub_path: sp.sub_path.to_string(),
        },
        e => VolumeError::io("resolve subPath", sp.volume_root.join(sp.sub_path), e),
    }
}

/// Creates the missing tail of the subPath with the volume's mode, like SafeMakeDir: the
/// existing prefix is resolved beneath the root, new components are opened with O_NOFOLLOW.
fn make_dirs(sp: &SubPath<'_>, root: &OwnedFd, perm: u32) -> Result<(), VolumeError> {
    let parts: Vec<&str> = sp
        .sub_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut existing = 0;
    let mut parent = root
        .try_clone()
        .map_err(|e| VolumeError::io("dup", sp.volume_root, e))?;
    while existing < parts.len() {
        match resolve(root, &parts[..=existing].join("/")) {
            Ok(fd) => {
                parent = fd;
                existing += 1;
            }
            Err(Errno::NOENT) => break,
            Err(e) => return Err(resolve_error(sp, e)),
        }
    }
    for part in &parts[existing..] {
        let here = || sp.volume_root.join(parts.join("/"));
        match rfs::mkdirat(&parent, *part, Mode::from_raw_mode(perm & 0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(VolumeError::io("create subPath directory", here(), e)),
        }
        let child = rfs::openat(
            &parent,
            *part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // Someone raced a symlink into place.
            Errno::LOOP | Errno::NOTDIR => VolumeError::SubPathEscapes {
                volume: sp.volume.to_string(),
                sub_path: sp.sub_path.to_string(),
            },
            e => VolumeError::io("open subPath directory", here(), e),
        })?;
        rfs::fchmod(&child, Mode::from_raw_mode(perm))
            .map_err(|e| VolumeError::io("chmod subPath directory", here(), e))?;
        parent = child;
    }
    Ok(())
}

/// Bind-mounts `/proc/self/fd/<fd>` at the target; an existing bind of the same inode is kept.
fn bind(
    sp: &SubPath<'_>,
    fd: &OwnedFd,
    is_dir: bool,
    inode: (u64, u64),
) -> Result<(), VolumeError> {
    let target = &sp.target;
    if let Some(parent) = target.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(|e| VolumeError::io("create directory", parent, e))?;
    }
    if is_mount_point(target)? {
        let same = fs::metadata(target).is_ok_and(|m| (m.dev(), m.ino()) == inode);
        if same {
            return Ok(());
        }
        unmount_all_at(target)?;
    }
    prepare_target(target, is_dir)?;
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source.as_str()),
        target.as_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| VolumeError::io("bind subPath onto", target, e))
}

/// Makes the mount point a directory or an empty file matching the source.
fn prepare_target(target: &Path, is_dir: bool) -> Result<(), VolumeError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir && !m.is_symlink() => return Ok(()),
        Ok(m) => {
            let removed = if m.is_dir() {
                fs::remove_dir(target)
            } else {
                fs::remove_file(target)
            };
            removed.map_err(|e| VolumeError::io("replace subPath mount point", target, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(VolumeError::io("inspect", target, e)),
    }
    let created = if is_dir {
        fs::DirBuilder::new().mode(0o750).create(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o640)
            .open(target)
            .map(drop)
    };
    created.map_err(|e| VolumeError::io("create subPath mount point", target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_checks() {
        assert!(check_form("a/b").is_ok());
        assert!(check_form("a/..b").is_ok());
        assert!(check_form("/etc").is_err());
        assert!(check_form("../x").is_err());
        assert!(check_form("a/../../x").is_err());
        assert!(check_form("a/..").is_err());
    }
}
