//! The image store: blobs, snapshots and image records under one root, each crash-safe.

mod blobs;
pub mod fsutil;
mod records;
mod snapshots;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use blobs::{BlobStore, BlobWriter};
pub use records::{ImageRecord, LayerRecord, Records};
pub use snapshots::{PreparedSnapshot, SnapshotStore, Usage};

use crate::image::digest::Digest;

/// Everything stored for images on this node.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// Compressed blobs by digest.
    pub blobs: BlobStore,
    /// Unpacked layers by diff ID.
    pub snapshots: SnapshotStore,
    records: Mutex<Records>,
    /// Held for the store's lifetime: one runtime per store.
    _lock: std::fs::File,
}

impl ImageStore {
    /// Open the store at `root`, cleaning whatever an interrupted write left behind.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let lock = lock_exclusive(root)?;
        let scratch = root.join("tmp");
        fsutil::reset_dir(&scratch)?;
        Ok(Self {
            root: root.to_owned(),
            blobs: BlobStore::open(root)?,
            snapshots: SnapshotStore::open(root)?,
            records: Mutex::new(Records::open(root, &scratch)?),
            _lock: lock,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image records, locked.
    pub fn records(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave records half-written (they are written
        // atomically), so a poisoned lock is still safe to use.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delete blobs and snapshots no image record references. The caller must exclude
    /// concurrent pulls, whose content is not yet referenced.
    pub fn collect_garbage(&self) -> io::Result<GcReport> {
        let (live_blobs, live_snapshots) = {
            let records = self.records();
            let blobs: HashSet<Digest> = records.all().flat_map(|r| r.blobs().cloned()).collect();
            let snapshots: HashSet<Digest> = records
                .all()
                .flat_map(|r| r.layers.iter().map(|l| l.diff_id.clone()))
                .collect();
            (blobs, snapshots)
        };
        let mut report = GcReport::default();
        for digest in self.blobs.list()? {
            if !live_blobs.contains(&digest) {
                self.blobs.remove(&digest)?;
                report.blobs += 1;
            }
        }
        for diff_id in self.snapshots.list()? {
            if !live_snapshots.contains(&diff_id) {
                self.snapshots.remove(&diff_id)?;
                report.snapshots += 1;
            }
        }
        Ok(report)
    }

    /// Bytes and inodes used by blobs and snapshots.
    pub fn usage(&self) -> io::Result<Usage> {
        let mut usage = Usage::default();
        for digest in self.blobs.list()? {
            usage.bytes += self.blobs.size(&digest).unwrap_or(0);
            usage.inodes += 1;
        }
        for diff_id in self.snapshots.list()? {
            if let Ok(layer) = self.snapshots.usage(&diff_id) {
                usage.bytes += layer.bytes;
                usage.inodes += layer.inodes;
            }
        }
        Ok(usage)
    }
}

/// Lock the store root, failing at once if another process holds it.
fn lock_exclusive(root: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "image store {} is in use by another process ({e})",
                    root.display()
                ),
            )
        },
    )?;
    Ok(file)
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Snapshots deleted.
    pub snapshots: usize,
}
