//! Path resolution confined to the container's root filesystem.
//!
//! Mount destinations come from the spec but are looked up in an untrusted image: a
//! symlink such as `/data -> /etc` must land on `<rootfs>/etc`, never on the host's `/etc`.
//! `openat2(RESOLVE_IN_ROOT)` makes the kernel treat the rootfs as `/` for the whole walk
//! (absolute symlinks and `..` included), and the result is an `O_PATH` descriptor, so
//! the object mounted on is exactly the one resolved, without a second lookup to race.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::error::{Result, SysContext};

/// Most symlinks followed while creating missing components (as the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// What to create when the last component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// A directory (mount point of a filesystem or a directory bind).
    Dir,
    /// An empty regular file (mount point of a file bind or a device).
    File,
}

/// `/proc/self/fd/N`: a path that names exactly the object behind `fd` (used as mount
/// source or target so the kernel does not look the path up again).
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `path` relative to the root: leading `/` and `.` components dropped (`..` is kept; the
/// kernel clamps it at the root).
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}

/// Opens `path` inside `root` as an `O_PATH` descriptor; fails with ENOENT when missing.
pub fn open(root: BorrowedFd<'_>, path: &Path) -> std::io::Result<OwnedFd> {
    open_rel(root, &relative(path)).map_err(Into::into)
}

fn open_rel(root: BorrowedFd<'_>, rel: &Path) -> std::result::Result<OwnedFd, Errno> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens `path` inside `root`, creating missing components (directories, and `leaf` for
/// the last one). Dangling symlinks are followed and their targets created, still inside
/// the root.
pub fn open_or_create(root: BorrowedFd<'_>, path: &Path, leaf: Leaf) -> Result<OwnedFd> {
    create(root, &relative(path), leaf, 0)
        .sys(|| format!("creating {} in the root filesystem", path.display()))
}

fn create(
    root: BorrowedFd<'_>,
    rel: &Path,
    leaf: Leaf,
    links: usize,
) -> std::result::Result<OwnedFd, Errno> {
    match open_rel(root, rel) {
        Err(Errno::NOENT) => {}
        other => return other,
    }
    let components: Vec<&OsStr> = rel.iter().collect();
    let mut prefix = PathBuf::new();
    for (index, name) in components.iter().enumerate() {
        let next = prefix.join(name);
        match open_rel(root, &next) {
            Ok(_) => {
                prefix = next;
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        let parent = open_rel(root, &prefix)?;
        let last = index + 1 == components.len();
        let made = if last && leaf == Leaf::File {
            rustix::fs::openat(
                parent.as_fd(),
                *name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(parent.as_fd(), *name, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) => prefix = next,
            // The name exists but does not resolve: a dangling symlink. Create its target
            // (relative to the symlink's directory, or to the root when absolute).
            Err(Errno::EXIST) => {
                if links >= MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(parent.as_fd(), *name, Vec::new())?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                let mut redirected = if target.is_absolute() {
                    relative(&target)
                } else {
                    prefix.join(&target)
                };
                for rest in &components[index + 1..] {
                    redirected.push(rest);
                }
                return create(root, &redirected, leaf, links + 1);
            }
            Err(e) => return Err(e),
        }
    }
    open_rel(root, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn real_path(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd.as_fd())).expect("readlink")
    }

    fn root_fd(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("open root")
    }

    #[test]
    fn relative_drops_root_and_dots() {
        assert_eq!(relative(Path::new("/a/./b/")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("/")), PathBuf::new());
        assert_eq!(relative(Path::new("/a/../b")), PathBuf::from("a/../b"));
    }

    #[test]
    fn absolute_symlink_stays_inside_the_root() {
        let host = tempfile::tempdir().expect("tempdir");
        let rootfs = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(rootfs.path()).expect("canonicalize");
        symlink(host.path(), root.join("data")).expect("symlink");
        let fd = open_or_create(root_fd(&root).as_fd(), Path::new("/data/sub"), Leaf::Dir)
            .expect("create");
        let inside = root.join(relative(host.path())).join("sub");
        assert_eq!(real_path(&fd), inside);
        assert!(inside.is_dir());
        assert_eq!(std::fs::read_dir(host.path()).expect("ls").count(), 0);
    }

    #[test]
    fn dotdot_is_clamped_at_the_root() {
        let rootfs = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(rootfs.path()).expect("canonicalize");
        symlink("../../../..", root.join("up")).expect("symlink");
        let fd = open_or_create(root_fd(&root).as_fd(), Path::new("up/etc/x"), Leaf::File)
            .expect("create");
        assert_eq!(real_path(&fd), root.join("etc/x"));
        assert!(root.join("etc/x").is_file());
    }

    #[test]
    fn existing_paths_are_opened_not_created() {
        let rootfs = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(rootfs.path()).expect("canonicalize");
        std::fs::write(root.join("file"), b"x").expect("write");
        let fd =
            open_or_create(root_fd(&root).as_fd(), Path::new("/file"), Leaf::Dir).expect("open");
        assert_eq!(real_path(&fd), root.join("file"));
        assert!(open(root_fd(&root).as_fd(), Path::new("/missing")).is_err());
    }

    #[test]
    fn component_under_a_file_is_an_error() {
        let rootfs = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(rootfs.path()).expect("canonicalize");
        std::fs::write(root.join("file"), b"x").expect("write");
        let err = open_or_create(root_fd(&root).as_fd(), Path::new("/file/x"), Leaf::Dir)
            .expect_err("not a directory");
        assert!(err.to_string().contains("/file/x"), "{err}");
    }

    #[test]
    fn symlink_loops_end() {
        let rootfs = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(rootfs.path()).expect("canonicalize");
        symlink("b", root.join("a")).expect("symlink");
        symlink("a", root.join("b")).expect("symlink");
        assert!(open_or_create(root_fd(&root).as_fd(), Path::new("/a/x"), Leaf::Dir).is_err());
    }
}
