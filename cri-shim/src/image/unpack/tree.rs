//! Walking directories under the layer root one component at a time, never following a
//! symlink, so nothing can be reached outside the root.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Flags for opening a directory component: refuses symlinks and non-directories.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Mode of parent directories that the layer does not list itself.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why a directory inside the layer could not be reached, naming the path reached so far.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component is a symlink.
    Symlink(String),
    /// A component exists but is not a directory.
    NotDir(String),
    /// A component is missing and creating it was not asked for.
    Missing,
    /// The kernel refused.
    Io(String, io::Error),
}

/// What a name held before an entry is written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Nothing (any non-directory there was removed).
    Empty,
    /// A directory, kept.
    Dir,
}

/// The layer root, plus the last directory reached under it (entries come grouped by dir).
pub(crate) struct Tree {
    root: Rc<OwnedFd>,
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    created: u64,
}

impl Tree {
    /// Open the destination directory; it is trusted, so it may itself be reached via symlinks.
    pub(crate) fn open(dest: &Path) -> io::Result<Self> {
        let fd = rfs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root: Rc::new(fd),
            cache: None,
            created: 0,
        })
    }

    /// Directories created implicitly as parents.
    pub(crate) fn created(&self) -> u64 {
        self.created
    }

    /// Open directory `dir` (normalized, relative to the root), creating missing components
    /// (mode 0755) when `create` is set.
    pub(crate) fn dir(&mut self, dir: &[u8], create: bool) -> Result<Rc<OwnedFd>, WalkError> {
        let (mut cur, mut pos) = match &self.cache {
            Some((key, fd)) if is_ancestor_or_self(key, dir) => (fd.clone(), key.len()),
            _ => (self.root.clone(), 0),
        };
        while pos < dir.len() {
            if dir[pos] == b'/' {
                pos += 1;
            }
            let end = dir[pos..]
                .iter()
                .position(|b| *b == b'/')
                .map_or(dir.len(), |i| pos + i);
            let shown = || String::from_utf8_lossy(&dir[..end]).into_owned();
            cur = match self.step(cur.as_fd(), &dir[pos..end], create) {
                Ok(fd) => Rc::new(fd),
                Err(Step::Symlink) => return Err(WalkError::Symlink(shown())),
                Err(Step::NotDir) => return Err(WalkError::NotDir(shown())),
                Err(Step::Missing) => return Err(WalkError::Missing),
                Err(Step::Io(e)) => return Err(WalkError::Io(shown(), e.into())),
            };
            pos = end;
        }
        self.cache = Some((dir.to_vec(), cur.clone()));
        Ok(cur)
    }

    /// Open one component below `parent`.
    fn step(&mut self, parent: BorrowedFd<'_>, name: &[u8], create: bool) -> Result<OwnedFd, Step> {
        match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if create => {
                rfs::mkdirat(parent, name, Mode::from_raw_mode(IMPLICIT_DIR_MODE))
                    .map_err(Step::Io)?;
                self.created += 1;
                let fd = rfs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(Step::Io)?;
                // mkdir's mode went through the umask.
                rfs::fchmod(&fd, Mode::from_raw_mode(IMPLICIT_DIR_MODE)).map_err(Step::Io)?;
                Ok(fd)
            }
            Err(Errno::NOENT) => Err(Step::Missing),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => match file_type(parent, name) {
                Ok(Some(FileType::Symlink)) => Err(Step::Symlink),
                Ok(Some(_)) => Err(Step::NotDir),
                _ => Err(Step::Io(e)),
            },
            Err(e) => Err(Step::Io(e)),
        }
    }

    /// Make room for an entry at `name` in `parent`: anything there that is not a directory is
    /// unlinked; a directory is kept when `keep_dir`, otherwise removed with its contents.
    pub(crate) fn clear(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
    ) -> io::Result<Slot> {
        match file_type(parent, name)? {
            None => Ok(Slot::Empty),
            Some(FileType::Directory) if keep_dir => Ok(Slot::Dir),
            Some(FileType::Directory) => {
                // The cached directory may be inside what goes away.
                self.cache = None;
                remove_tree(parent, name)?;
                Ok(Slot::Empty)
            }
            Some(_) => {
                rfs::unlinkat(parent, name, AtFlags::empty())?;
                Ok(Slot::Empty)
            }
        }
    }
}

/// One component could not be opened.
enum Step {
    Symlink,
    NotDir,
    Missing,
    Io(Errno),
}

/// Whether `key` is `dir` or one of its ancestors (the root is left to the uncached path).
fn is_ancestor_or_self(key: &[u8], dir: &[u8]) -> bool {
    !key.is_empty() && dir.starts_with(key) && (dir.len() == key.len() || dir[key.len()] == b'/')
}

/// The type of `name` in `parent` without following it; `None` if it does not exist.
pub(crate) fn file_type(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<FileType>> {
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Remove directory `name` in `parent` and everything below it, without following symlinks.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let fd = rfs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    // Collect first: unlinking while reading a directory may skip entries.
    let mut children = Vec::new();
    for child in rfs::Dir::read_from(&fd)? {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push((child_name.to_vec(), child.file_type()));
        }
    }
    for (child, kind) in children {
        let is_dir = match kind {
            FileType::Directory => true,
            FileType::Unknown => file_type(fd.as_fd(), &child)? == Some(FileType::Directory),
            _ => false,
        };
        if is_dir {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            rfs::unlinkat(&fd, child.as_slice(), AtFlags::empty())?;
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}
