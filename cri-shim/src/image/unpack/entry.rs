//! Applying one tar entry to the layer tree: files, directories, links, special files and
//! whiteouts, each created relative to a directory fd reached without following symlinks.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, Dev, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags,
};
use tar::EntryType;

use super::error::UnpackError;
use super::meta::Meta;
use super::path::{lossy, RelPath};
use super::stream::Probe;
use super::tree::{file_type, Slot, Tree, WalkError};
use super::whiteout::{self, Whiteout, OPAQUE_XATTR};
use super::UnpackOptions;

/// Flags for creating a regular file: never reuse or follow what is already there.
const CREATE_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Size of the buffer that file data is copied through.
const COPY_BUF: usize = 128 * 1024;

/// What an entry creates, from its type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
    Char,
    Block,
    Unsupported(char),
}

impl Kind {
    fn of(header: &tar::Header, raw_path: &[u8]) -> Self {
        match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Pre-POSIX archives mark directories only by a trailing slash on a '\0' type.
                if header.as_bytes()[156] == 0 && raw_path.ends_with(b"/") {
                    Self::Dir
                } else {
                    Self::File
                }
            }
            EntryType::Directory => Self::Dir,
            EntryType::Symlink => Self::Symlink,
            EntryType::Link => Self::HardLink,
            EntryType::Fifo => Self::Fifo,
            EntryType::Char => Self::Char,
            EntryType::Block => Self::Block,
            other => Self::Unsupported(char::from(other.as_byte())),
        }
    }
}

/// Applies entries in order and tallies what they created.
pub(crate) struct Applier<'o> {
    tree: Tree,
    options: &'o UnpackOptions,
    buf: Vec<u8>,
    /// Directory mtimes, set last because creating children changes them.
    dir_times: Vec<(RelPath, Timespec)>,
    bytes: u64,
    inodes: u64,
}

impl<'o> Applier<'o> {
    /// Start applying into `tree`.
    pub(crate) fn new(tree: Tree, options: &'o UnpackOptions) -> Self {
        Self {
            tree,
            options,
            buf: vec![0; COPY_BUF],
            dir_times: Vec::new(),
            bytes: 0,
            inodes: 0,
        }
    }

    /// Apply one entry, reading all of its data from the stream.
    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        probe: &Probe,
    ) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = lossy(&raw);
        let size = entry.size();
        self.check_size(&shown, size, probe)?;
        if entry.header().entry_type().is_pax_global_extensions() {
            // Archive-wide PAX defaults (comments, charset) carry nothing a snapshot needs.
            return self.drain(entry, &shown, size, probe);
        }
        let path = RelPath::parse(&raw).map_err(|p| p.into_error(&shown))?;
        let meta = Meta::read(entry, &shown)?;
        if let Some(whiteout) = whiteout::classify(&path).map_err(|p| p.into_error(&shown))? {
            self.drain(entry, &shown, size, probe)?;
            return self.whiteout(whiteout, &shown, &meta);
        }
        let kind = Kind::of(entry.header(), &raw);
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        if kind != Kind::File {
            self.drain(entry, &shown, size, probe)?;
        }
        match kind {
            Kind::File => self.file(entry, &path, &shown, &meta, probe),
            Kind::Dir => self.dir(&path, &shown, &meta),
            Kind::Symlink => {
                let target =
                    link.ok_or_else(|| UnpackError::header(&shown, "symlink without a target"))?;
                self.symlink(&path, &shown, &meta, &target)
            }
            Kind::HardLink => {
                let target =
                    link.ok_or_else(|| UnpackError::header(&shown, "hard link without a target"))?;
                self.hardlink(&path, &shown, &target)
            }
            Kind::Fifo => self.node(&path, &shown, &meta, FileType::Fifo, 0),
            Kind::Char | Kind::Block if !self.options.create_device_nodes => {
                tracing::warn!(entry = %shown, "skipping device node in layer; the runtime provides /dev");
                Ok(())
            }
            Kind::Char | Kind::Block => {
                let header = entry.header();
                let number = |n: io::Result<Option<u32>>| {
                    n.ok().flatten().ok_or_else(|| {
                        UnpackError::header(&shown, "device without valid major/minor numbers")
                    })
                };
                let dev = rfs::makedev(
                    number(header.device_major())?,
                    number(header.device_minor())?,
                );
                let file_type = if kind == Kind::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                self.node(&path, &shown, &meta, file_type, dev)
            }
            Kind::Unsupported(kind) => Err(UnpackError::UnsupportedEntryType { path: shown, kind }),
        }
    }

    /// Parent directories created without an entry of their own.
    pub(crate) fn implicit_dirs(&self) -> u64 {
        self.tree.created()
    }

    /// Set directory mtimes now that nothing more is created inside them; returns
    /// (content bytes written, inodes created).
    pub(crate) fn finish(mut self) -> Result<(u64, u64), UnpackError> {
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let fd = match self.tree.dir(path.as_bytes(), false) {
                Ok(fd) => fd,
                // A later entry replaced the directory.
                Err(WalkError::Symlink(_) | WalkError::NotDir(_) | WalkError::Missing) => continue,
                Err(WalkError::Io(_, e)) => {
                    return Err(UnpackError::io(
                        &path.to_string(),
                        "opening directory to set its times",
                        e,
                    ))
                }
            };
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            rfs::futimens(&*fd, &times)
                .map_err(|e| UnpackError::io(&path.to_string(), "setting directory times", e))?;
        }
        Ok((self.bytes, self.inodes + self.tree.created()))
    }

    /// Refuse an entry whose declared size cannot fit, before anything of it is written.
    fn check_size(&self, shown: &str, size: u64, probe: &Probe) -> Result<(), UnpackError> {
        let max = probe.max_bytes();
        if size > max {
            return Err(UnpackError::EntryTooLarge {
                path: shown.to_owned(),
                size,
                max,
            });
        }
        // Sparse entries expand to more than they read, so what is written is bounded too.
        if probe.total().saturating_add(size) > max || self.bytes.saturating_add(size) > max {
            return Err(UnpackError::TooManyBytes { max });
        }
        Ok(())
    }

    /// Read and discard the rest of an entry's data, checking it is all there.
    fn drain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
        size: u64,
        probe: &Probe,
    ) -> Result<(), UnpackError> {
        let mut seen = 0u64;
        loop {
            let n = read_some(entry, &mut self.buf, shown, probe)?;
            if n == 0 {
                break;
            }
            seen += n as u64;
        }
        check_complete(shown, seen, size)
    }

    /// The parent directory (created as needed) and final name of a non-root entry.
    fn parent<'p>(
        &mut self,
        path: &'p RelPath,
        shown: &str,
    ) -> Result<(Rc<OwnedFd>, &'p [u8]), UnpackError> {
        let (dir, name) = path.split().ok_or_else(|| UnpackError::InvalidPath {
            path: shown.to_owned(),
            reason: "names the layer root itself",
        })?;
        let fd = self.tree.dir(dir, true).map_err(|e| walk_error(shown, e))?;
        Ok((fd, name))
    }

    /// Remove whatever an earlier entry left at `name`, keeping a directory when `keep_dir`.
    fn clear(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        shown: &str,
        keep_dir: bool,
    ) -> Result<Slot, UnpackError> {
        self.tree
            .clear(parent.as_fd(), name, keep_dir)
            .map_err(|e| UnpackError::io(shown, "replacing the existing entry", e))
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        shown: &str,
        meta: &Meta,
        probe: &Probe,
    ) -> Result<(), UnpackError> {
        let size = entry.size();
        let (parent, name) = self.parent(path, shown)?;
        self.clear(&parent, name, shown, false)?;
        let fd = rfs::openat(&*parent, name, CREATE_FLAGS, Mode::from_raw_mode(0o600))
            .map_err(|e| UnpackError::io(shown, "creating file", e))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = read_some(entry, &mut self.buf, shown, probe)?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| UnpackError::io(shown, "writing file data", e))?;
            written += n as u64;
        }
        check_complete(shown, written, size)?;
        // chown clears setuid/setgid, so the full mode goes on after it.
        rfs::fchown(&file, Some(meta.uid), Some(meta.gid))
            .map_err(|e| UnpackError::io(shown, "setting owner", e))?;
        rfs::fchmod(&file, meta.mode).map_err(|e| UnpackError::io(shown, "setting mode", e))?;
        // After chown too, which drops security.capability.
        meta.apply_xattrs(&file, shown)?;
        rfs::futimens(&file, &meta.times())
            .map_err(|e| UnpackError::io(shown, "setting times", e))?;
        self.bytes += written;
        self.inodes += 1;
        Ok(())
    }

    fn dir(&mut self, path: &RelPath, shown: &str, meta: &Meta) -> Result<(), UnpackError> {
        if let Some((parent, name)) = path.split() {
            let parent = self
                .tree
                .dir(parent, true)
                .map_err(|e| walk_error(shown, e))?;
            if self.clear(&parent, name, shown, true)? == Slot::Empty {
                rfs::mkdirat(&*parent, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| UnpackError::io(shown, "creating directory", e))?;
                self.inodes += 1;
            }
        }
        let fd = self
            .tree
            .dir(path.as_bytes(), false)
            .map_err(|e| walk_error(shown, e))?;
        rfs::fchown(&*fd, Some(meta.uid), Some(meta.gid))
            .map_err(|e| UnpackError::io(shown, "setting owner", e))?;
        rfs::fchmod(&*fd, meta.mode).map_err(|e| UnpackError::io(shown, "setting mode", e))?;
        meta.apply_xattrs(&*fd, shown)?;
        self.dir_times.push((path.clone(), meta.mtime));
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &RelPath,
        shown: &str,
        meta: &Meta,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        if target.is_empty() {
            return Err(UnpackError::header(shown, "symlink with an empty target"));
        }
        let (parent, name) = self.parent(path, shown)?;
        self.clear(&parent, name, shown, false)?;
        // The target is only data inside the snapshot; it is never resolved here.
        rfs::symlinkat(target, &*parent, name)
            .map_err(|e| UnpackError::io(shown, "creating symlink", e))?;
        self.inodes += 1;
        chown_at(&parent, name, meta, shown)?;
        set_times_at(&parent, name, meta, shown)?;
        if !meta.xattrs.is_empty() {
            tracing::debug!(entry = %shown, "extended attributes on a symlink are not applied");
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        path: &RelPath,
        shown: &str,
        target_raw: &[u8],
    ) -> Result<(), UnpackError> {
        let bad = |reason: String| UnpackError::BadHardLink {
            path: shown.to_owned(),
            target: lossy(target_raw),
            reason,
        };
        let target =
            RelPath::parse(target_raw).map_err(|p| bad(format!("target {}", p.reason())))?;
        let (target_dir, target_name) = target
            .split()
            .ok_or_else(|| bad("target is the layer root".to_owned()))?;
        if target == *path {
            return Err(bad("links to itself".to_owned()));
        }
        let missing = || bad("target does not exist in the layer".to_owned());
        let target_parent = self.tree.dir(target_dir, false).map_err(|e| match e {
            WalkError::Symlink(s) => bad(format!("target passes through symlink {s:?}")),
            WalkError::NotDir(_) | WalkError::Missing => missing(),
            WalkError::Io(s, e) => bad(format!("opening {s:?}: {e}")),
        })?;
        match file_type(target_parent.as_fd(), target_name) {
            Ok(None) => return Err(missing()),
            Ok(Some(FileType::Directory)) => return Err(bad("target is a directory".to_owned())),
            Ok(Some(_)) => {}
            Err(e) => return Err(bad(format!("inspecting target: {e}"))),
        }
        let (parent, name) = self.parent(path, shown)?;
        self.clear(&parent, name, shown, false)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never what it points to.
        rfs::linkat(
            &*target_parent,
            target_name,
            &*parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| bad(format!("linking: {}", io::Error::from(e))))?;
        self.inodes += 1;
        Ok(())
    }

    /// A FIFO or device node.
    fn node(
        &mut self,
        path: &RelPath,
        shown: &str,
        meta: &Meta,
        kind: FileType,
        dev: Dev,
    ) -> Result<(), UnpackError> {
        let (parent, name) = self.parent(path, shown)?;
        self.clear(&parent, name, shown, false)?;
        rfs::mknodat(&*parent, name, kind, meta.mode, dev)
            .map_err(|e| UnpackError::io(shown, "creating node", e))?;
        self.inodes += 1;
        chown_at(&parent, name, meta, shown)?;
        // mknod's mode went through the umask and chown cleared setuid/setgid. The node was
        // just created by us, so following it (chmodat has no NOFOLLOW) cannot leave the tree.
        rfs::chmodat(&*parent, name, meta.mode, AtFlags::empty())
            .map_err(|e| UnpackError::io(shown, "setting mode", e))?;
        set_times_at(&parent, name, meta, shown)
    }

    fn whiteout(
        &mut self,
        whiteout: Whiteout,
        shown: &str,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match whiteout {
            Whiteout::Ignore => {
                tracing::debug!(entry = %shown, "ignoring whiteout metadata entry");
                Ok(())
            }
            Whiteout::Opaque(dir) => {
                let fd = self
                    .tree
                    .dir(dir.as_bytes(), true)
                    .map_err(|e| walk_error(shown, e))?;
                rfs::fsetxattr(&*fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| UnpackError::io(shown, "marking directory opaque", e))
            }
            Whiteout::Remove(hidden) => {
                let (parent, name) = self.parent(&hidden, shown)?;
                let existing = file_type(parent.as_fd(), name)
                    .map_err(|e| UnpackError::io(shown, "inspecting whiteout target", e))?;
                if existing.is_some() {
                    // OCI: a whiteout hides lower layers only, never what this layer itself holds.
                    tracing::debug!(entry = %shown, "whiteout names an entry of the same layer; kept the entry");
                    return Ok(());
                }
                rfs::mknodat(
                    &*parent,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(|e| UnpackError::io(shown, "creating whiteout", e))?;
                self.inodes += 1;
                rfs::chownat(
                    &*parent,
                    name,
                    Some(meta.uid),
                    Some(meta.gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| UnpackError::io(shown, "setting whiteout owner", e))
            }
        }
    }
}

/// One read of entry data, with stream failures explained.
fn read_some<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    buf: &mut [u8],
    shown: &str,
    probe: &Probe,
) -> Result<usize, UnpackError> {
    loop {
        match entry.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(probe.error(e, format_args!("reading data of entry {shown:?}"))),
        }
    }
}

/// An entry whose data stops short means the stream ended inside it.
fn check_complete(shown: &str, got: u64, size: u64) -> Result<(), UnpackError> {
    if got < size {
        return Err(UnpackError::Corrupt(format!(
            "entry {shown:?} ends after {got} of its {size} bytes"
        )));
    }
    Ok(())
}

/// The error for an entry whose parent directories could not be reached.
fn walk_error(shown: &str, e: WalkError) -> UnpackError {
    match e {
        WalkError::Symlink(symlink) => UnpackError::ThroughSymlink {
            path: shown.to_owned(),
            symlink,
        },
        WalkError::NotDir(parent) => UnpackError::ParentNotDirectory {
            path: shown.to_owned(),
            parent,
        },
        WalkError::Missing => {
            UnpackError::io(shown, "opening parent directory", io::ErrorKind::NotFound)
        }
        WalkError::Io(_, e) => UnpackError::io(shown, "opening parent directory", e),
    }
}

/// Set the owner of `parent/name` without following it if it is a symlink.
fn chown_at(parent: &OwnedFd, name: &[u8], meta: &Meta, shown: &str) -> Result<(), UnpackError> {
    rfs::chownat(
        parent,
        name,
        Some(meta.uid),
        Some(meta.gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| UnpackError::io(shown, "setting owner", e))
}

/// Set the times of `parent/name` without following it if it is a symlink.
fn set_times_at(
    parent: &OwnedFd,
    name: &[u8],
    meta: &Meta,
    shown: &str,
) -> Result<(), UnpackError> {
    rfs::utimensat(parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| UnpackError::io(shown, "setting times", e))
}
