//! Tar layer entries (including whiteouts and hostile raw headers) and a byte-exact tar writer.

use tar::{EntryType, Header};

/// Fixed mtime for every entry, so builds are deterministic (2023-11-14T22:13:20Z).
pub const MTIME: u64 = 1_700_000_000;

/// Prefix that marks a whiteout entry (`dir/.wh.NAME` deletes `dir/NAME`).
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// Name of the opaque-directory marker (`dir/.wh..wh..opq`).
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Ownership and permission bits of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits, including setuid/setgid/sticky (e.g. `0o4755`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

/// One tar entry. Paths are written verbatim (no normalisation), so `../x` and `/x` produce hostile entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        /// Path inside the layer, written verbatim.
        path: String,
        /// File contents.
        content: Vec<u8>,
        /// Mode and owner.
        meta: Meta,
    },
    /// A directory (written with a trailing `/`).
    Dir {
        /// Path inside the layer.
        path: String,
        /// Mode and owner.
        meta: Meta,
    },
    /// A symbolic link.
    Symlink {
        /// Path of the link.
        path: String,
        /// Link target, written verbatim.
        target: String,
        /// Mode and owner.
        meta: Meta,
    },
    /// A hard link to an earlier entry.
    Hardlink {
        /// Path of the link.
        path: String,
        /// Path of the linked entry, written verbatim.
        target: String,
        /// Mode and owner.
        meta: Meta,
    },
    /// A character device node.
    CharDevice {
        /// Path of the node.
        path: String,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
        /// Mode and owner.
        meta: Meta,
    },
    /// A block device node.
    BlockDevice {
        /// Path of the node.
        path: String,
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
        /// Mode and owner.
        meta: Meta,
    },
    /// A named pipe.
    Fifo {
        /// Path of the pipe.
        path: String,
        /// Mode and owner.
        meta: Meta,
    },
    /// Whiteout: written as `dirname(path)/.wh.basename(path)`.
    Whiteout {
        /// The path deleted from lower layers.
        path: String,
    },
    /// Opaque marker: written as `dir/.wh..wh..opq`.
    Opaque {
        /// The directory whose lower-layer contents are hidden.
        dir: String,
    },
    /// An arbitrary 512-byte header block (padded or cut to 512) followed by `data` padded to 512 bytes.
    ///
    /// Nothing is validated or fixed up: use it for non-UTF-8 or NUL-laden names, bad checksums, lying sizes.
    Raw {
        /// Header bytes (see [`raw_file_header`] for a valid starting point).
        header: Vec<u8>,
        /// Data written after the header.
        data: Vec<u8>,
    },
}

impl Entry {
    /// Regular file with mode 0644 owned by root.
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.into(),
            content: content.into(),
            meta: Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Regular file with the given mode, owned by root.
    pub fn file_mode(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry::file(path, content).with_mode(mode)
    }

    /// Directory with mode 0755 owned by root.
    pub fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            meta: Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Symlink `path -> target`.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
            meta: Meta {
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Hard link `path` to `target`.
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
            meta: Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Character device `major:minor` with mode 0666.
    pub fn char_device(path: &str, major: u32, minor: u32) -> Entry {
        Entry::CharDevice {
            path: path.into(),
            major,
            minor,
            meta: Meta {
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Block device `major:minor` with mode 0660.
    pub fn block_device(path: &str, major: u32, minor: u32) -> Entry {
        Entry::BlockDevice {
            path: path.into(),
            major,
            minor,
            meta: Meta {
                mode: 0o660,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Named pipe with mode 0644.
    pub fn fifo(path: &str) -> Entry {
        Entry::Fifo {
            path: path.into(),
            meta: Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        }
    }

    /// Whiteout deleting `path` from lower layers.
    pub fn whiteout(path: &str) -> Entry {
        Entry::Whiteout { path: path.into() }
    }

    /// Opaque marker hiding the lower-layer contents of `dir`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::Opaque { dir: dir.into() }
    }

    /// Raw header bytes plus data, written unchanged.
    pub fn raw(header: impl Into<Vec<u8>>, data: impl Into<Vec<u8>>) -> Entry {
        Entry::Raw {
            header: header.into(),
            data: data.into(),
        }
    }

    /// Replaces the permission bits (no-op for whiteouts, opaque markers and raw entries).
    pub fn with_mode(mut self, mode: u32) -> Entry {
        if let Some(meta) = self.meta_mut() {
            meta.mode = mode;
        }
        self
    }

    /// Replaces the owner (no-op for whiteouts, opaque markers and raw entries).
    pub fn with_owner(mut self, uid: u64, gid: u64) -> Entry {
        if let Some(meta) = self.meta_mut() {
            meta.uid = uid;
            meta.gid = gid;
        }
        self
    }

    fn meta_mut(&mut self) -> Option<&mut Meta> {
        match self {
            Entry::File { meta, .. }
            | Entry::Dir { meta, .. }
            | Entry::Symlink { meta, .. }
            | Entry::Hardlink { meta, .. }
            | Entry::CharDevice { meta, .. }
            | Entry::BlockDevice { meta, .. }
            | Entry::Fifo { meta, .. } => Some(meta),
            Entry::Whiteout { .. } | Entry::Opaque { .. } | Entry::Raw { .. } => None,
        }
    }
}

/// An ordered list of entries forming one layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    /// Entries in archive order.
    pub entries: Vec<Entry>,
}

impl Layer {
    /// A layer from entries.
    pub fn new(entries: Vec<Entry>) -> Layer {
        Layer { entries }
    }

    /// Appends an entry.
    pub fn push(&mut self, entry: Entry) -> &mut Layer {
        self.entries.push(entry);
        self
    }

    /// The layer as a blob compressed with `compression` (digest, size and diff ID computed).
    pub fn blob(
        &self,
        compression: super::blob::Compression,
    ) -> anyhow::Result<super::blob::LayerBlob> {
        super::blob::LayerBlob::from_tar(&self.tar(), compression)
    }

    /// The uncompressed tar stream (GNU format, long names via `././@LongLink`, two zero blocks at the end).
    pub fn tar(&self) -> Vec<u8> {
        let mut w = TarWriter::default();
        for e in &self.entries {
            w.entry(e);
        }
        w.finish()
    }
}

/// Appends tar blocks to a buffer.
#[derive(Default)]
struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    fn entry(&mut self, e: &Entry) {
        match e {
            Entry::File {
                path,
                content,
                meta,
            } => self.put(path, EntryType::Regular, meta, None, content, None),
            Entry::Dir { path, meta } => {
                let p = if path.ends_with('/') {
                    path.clone()
                } else {
                    format!("{path}/")
                };
                self.put(&p, EntryType::Directory, meta, None, &[], None)
            }
            Entry::Symlink { path, target, meta } => {
                self.put(path, EntryType::Symlink, meta, Some(target), &[], None)
            }
            Entry::Hardlink { path, target, meta } => {
                self.put(path, EntryType::Link, meta, Some(target), &[], None)
            }
            Entry::CharDevice {
                path,
                major,
                minor,
                meta,
            } => self.put(
                path,
                EntryType::Char,
                meta,
                None,
                &[],
                Some((*major, *minor)),
            ),
            Entry::BlockDevice {
                path,
                major,
                minor,
                meta,
            } => self.put(
                path,
                EntryType::Block,
                meta,
                None,
                &[],
                Some((*major, *minor)),
            ),
            Entry::Fifo { path, meta } => self.put(path, EntryType::Fifo, meta, None, &[], None),
            Entry::Whiteout { path } => {
                let trimmed = path.trim_end_matches('/');
                let (dir, base) = trimmed
                    .rsplit_once('/')
                    .map_or(("", trimmed), |(d, b)| (d, b));
                let name = if dir.is_empty() {
                    format!("{WHITEOUT_PREFIX}{base}")
                } else {
                    format!("{dir}/{WHITEOUT_PREFIX}{base}")
                };
                self.put(
                    &name,
                    EntryType::Regular,
                    &Meta {
                        mode: 0,
                        uid: 0,
                        gid: 0,
                    },
                    None,
                    &[],
                    None,
                )
            }
            Entry::Opaque { dir } => {
                let dir = dir.trim_end_matches('/');
                let name = if dir.is_empty() {
                    OPAQUE_MARKER.to_string()
                } else {
                    format!("{dir}/{OPAQUE_MARKER}")
                };
                self.put(
                    &name,
                    EntryType::Regular,
                    &Meta {
                        mode: 0,
                        uid: 0,
                        gid: 0,
                    },
                    None,
                    &[],
                    None,
                )
            }
            Entry::Raw { header, data } => {
                let mut block = header.clone();
                block.resize(512, 0);
                self.out.extend_from_slice(&block);
                self.data(data);
            }
        }
    }

    /// Writes a header (with GNU long-name/long-link extensions when needed) and the data.
    fn put(
        &mut self,
        path: &str,
        ty: EntryType,
        meta: &Meta,
        link: Option<&str>,
        data: &[u8],
        dev: Option<(u32, u32)>,
    ) {
        if path.len() > 100 {
            self.long(EntryType::GNULongName, path.as_bytes());
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            self.long(EntryType::GNULongLink, link.as_bytes());
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        copy_truncated(&mut h.as_old_mut().name, path.as_bytes());
        if let Some(link) = link {
            copy_truncated(&mut h.as_old_mut().linkname, link.as_bytes());
        }
        if let Some(gnu) = h.as_gnu_mut() {
            copy_truncated(&mut gnu.uname, b"root");
            copy_truncated(&mut gnu.gname, b"root");
        }
        if let Some((major, minor)) = dev {
            h.set_device_major(major)
                .expect("gnu header has device fields");
            h.set_device_minor(minor)
                .expect("gnu header has device fields");
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.data(data);
    }

    /// A GNU `././@LongLink` pseudo-entry carrying a long name or link target.
    fn long(&mut self, ty: EntryType, value: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(0o644);
        h.set_mtime(0);
        let mut data = value.to_vec();
        data.push(0);
        h.set_size(data.len() as u64);
        copy_truncated(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.data(&data);
    }

    fn data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.resize(self.out.len() + pad, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

/// Copies as much of `src` as fits into `dst` (rest stays NUL).
fn copy_truncated(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// A valid GNU header block for a regular file named by raw bytes, for building `Entry::Raw` headers.
pub fn raw_file_header(name: &[u8], size: u64, mode: u32) -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_size(size);
    copy_truncated(&mut h.as_old_mut().name, name);
    h.set_cksum();
    h.as_bytes().to_vec()
}
