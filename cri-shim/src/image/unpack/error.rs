//! Why applying a layer failed; every variant names the entry, limit or stream at fault.

use std::io;
use std::path::PathBuf;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer's media type is not a tar layer this runtime can apply.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// The destination directory could not be opened.
    #[error("opening layer destination {}: {source}", path.display())]
    Destination {
        /// The destination directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The decompressor could not be started.
    #[error("starting the {compression} decoder: {source}")]
    Decoder {
        /// Name of the compression.
        compression: &'static str,
        /// What the decoder said.
        #[source]
        source: io::Error,
    },
    /// Reading the blob itself failed (download or file error).
    #[error("reading layer blob: {0}")]
    Read(#[source] io::Error),
    /// The compressed stream or the tar structure is damaged or ends early.
    #[error("layer is truncated or corrupt: {0}")]
    Corrupt(String),
    /// More decompressed bytes than `max_bytes` allows.
    #[error("layer exceeds the max_bytes limit of {max} uncompressed bytes")]
    TooManyBytes {
        /// The limit in force.
        max: u64,
    },
    /// More tar entries than `max_entries` allows.
    #[error("layer exceeds the max_entries limit of {max} entries")]
    TooManyEntries {
        /// The limit in force.
        max: u64,
    },
    /// One entry declares more data than `max_bytes` allows, so nothing of it is written.
    #[error("entry {path:?} declares {size} bytes, more than the max_bytes limit of {max}")]
    EntryTooLarge {
        /// The entry's path as written in the layer.
        path: String,
        /// Its declared size.
        size: u64,
        /// The limit in force.
        max: u64,
    },
    /// The tar metadata of one entry (headers, long names, PAX records) is too large to buffer.
    #[error("tar metadata of one entry (headers, long names, PAX records) exceeds {max} bytes")]
    MetadataTooLarge {
        /// The built-in bound.
        max: u64,
    },
    /// An entry's path is empty, holds a NUL byte or is too long.
    #[error("entry {path:?} has an invalid path: {reason}")]
    InvalidPath {
        /// The entry's path as written in the layer.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry's path has a `..` component.
    #[error("entry {path:?} escapes the layer root")]
    EscapesRoot {
        /// The entry's path as written in the layer.
        path: String,
    },
    /// An entry would be written through a symlink inside the layer.
    #[error("entry {path:?} passes through symlink {symlink:?}")]
    ThroughSymlink {
        /// The entry's path as written in the layer.
        path: String,
        /// The symlink in the way, relative to the layer root.
        symlink: String,
    },
    /// A parent of an entry exists but is not a directory.
    #[error("entry {path:?} needs {parent:?} to be a directory, but it is not")]
    ParentNotDirectory {
        /// The entry's path as written in the layer.
        path: String,
        /// The offending parent, relative to the layer root.
        parent: String,
    },
    /// A hard link's target is outside the layer, missing, or not linkable.
    #[error("hard link {path:?} -> {target:?}: {reason}")]
    BadHardLink {
        /// The link's path as written in the layer.
        path: String,
        /// Its target as written in the layer.
        target: String,
        /// Why it cannot be created.
        reason: String,
    },
    /// A header field cannot be used (bad number, missing link name, ...).
    #[error("entry {path:?} has an invalid header: {reason}")]
    InvalidHeader {
        /// The entry's path as written in the layer.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry type is not one a container image layer may hold.
    #[error("entry {path:?} has unsupported tar entry type {kind:?}")]
    UnsupportedEntryType {
        /// The entry's path as written in the layer.
        path: String,
        /// The type flag byte, as a character.
        kind: char,
    },
    /// A filesystem operation for an entry failed.
    #[error("entry {path:?}: {op}: {source}")]
    Io {
        /// The entry's path as written in the layer.
        path: String,
        /// What was being done.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// A filesystem failure for the entry shown as `path`.
    pub(crate) fn io(path: &str, op: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io {
            path: path.to_owned(),
            op,
            source: source.into(),
        }
    }

    /// An unusable header field of the entry shown as `path`.
    pub(crate) fn header(path: &str, reason: impl Into<String>) -> Self {
        Self::InvalidHeader {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
