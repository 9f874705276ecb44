//! Applying one OCI image layer (a possibly compressed tar stream) into a fresh snapshot
//! directory that becomes an overlayfs lowerdir, safely against hostile input: every write
//! goes through directory fds reached without following symlinks, so nothing lands outside
//! the destination, and limits bound what a tar bomb can cost.

mod entry;
mod error;
mod limits;
mod meta;
mod path;
mod stream;
mod tree;
mod whiteout;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::Read;
use std::path::Path;

pub use error::UnpackError;
pub use limits::UnpackLimits;

use entry::Applier;
use tree::Tree;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip; several concatenated members are read as one stream.
    Gzip,
    /// zstd; several concatenated frames are read as one stream.
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type (application/vnd.oci.image.layer.v1.tar[+gzip|+zstd],
    /// the .nondistributable. variants, application/vnd.docker.image.rootfs.diff.tar.gzip,
    /// application/vnd.docker.image.rootfs.foreign.diff.tar.gzip). Unknown → UnpackError::UnsupportedMediaType.
    pub fn from_media_type(media_type: &str) -> Result<Self, UnpackError> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Self::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            // Not in Docker's schema 2 spec, but written by BuildKit and accepted by containerd.
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Self::Zstd,
            other => return Err(UnpackError::UnsupportedMediaType(other.to_owned())),
        })
    }

    /// Sniff from the first bytes (gzip 1f 8b, zstd 28 b5 2f fd, else None) — used for `docker save` archives whose layers have no media type.
    pub fn sniff(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// Short name for messages.
    fn name(self) -> &'static str {
        match self {
            Self::None => "tar",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for applying a layer.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Bounds that stop tar bombs.
    pub limits: UnpackLimits,
    /// Create char/block device nodes found in layers (default false: skipped with a warning, since the runtime provides /dev).
    pub create_device_nodes: bool,
}

/// What applying a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// "sha256:<hex>" of the whole decompressed stream, read to EOF even after the tar end marker.
    pub diff_id: String,
    /// File content bytes written.
    pub bytes: u64,
    /// Files, dirs, links (and special files) created.
    pub inodes: u64,
    /// Tar entries read.
    pub entries: u64,
}

/// Apply one layer read from `blob` (compressed as `compression`) into `dest`, an existing empty directory that becomes an overlayfs lowerdir.
pub fn apply_layer<R: Read>(
    blob: R,
    compression: Compression,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let tree = Tree::open(dest).map_err(|source| UnpackError::Destination {
        path: dest.to_owned(),
        source,
    })?;
    let (stream, probe) = stream::open(blob, compression, options.limits.max_bytes)?;
    let mut archive = tar::Archive::new(stream);
    let mut applier = Applier::new(tree, options);
    let mut count = 0u64;
    {
        let mut entries = archive
            .entries()
            .map_err(|e| probe.error(e, "opening the tar stream"))?;
        loop {
            // The tar reader buffers long names and PAX records while finding the next entry.
            probe.begin_metadata();
            let next = entries.next();
            probe.end_metadata();
            let Some(next) = next else { break };
            let mut entry = next.map_err(|e| {
                probe.error(
                    e,
                    format_args!("reading the tar header of entry #{}", count + 1),
                )
            })?;
            count += 1;
            applier.apply(&mut entry, &probe)?;
            // Implicit parents count too: one deep path must not create unbounded directories.
            if count + applier.implicit_dirs() > options.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    max: options.limits.max_entries,
                });
            }
        }
    }
    let diff_id = archive.into_inner().finish()?;
    let (bytes, inodes) = applier.finish()?;
    Ok(LayerStats {
        diff_id,
        bytes,
        inodes,
        entries: count,
    })
}
