//! Read-only layer snapshots: `snapshots/<diff-id hex>/fs`, one per distinct layer, shared by
//! every image that uses it and stacked as overlayfs lowerdirs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{self, at};
use crate::image::digest::Digest;

/// Disk usage of a snapshot, recorded when it was unpacked.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of file content.
    pub bytes: u64,
    /// Inodes (files, directories, links).
    pub inodes: u64,
}

/// Committed snapshots plus a scratch area for ones being unpacked.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    scratch: PathBuf,
}

const USAGE_FILE: &str = "usage.json";

impl SnapshotStore {
    /// Open (and create) the store under `root`, discarding unpacks a crash left behind.
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir = root.join("snapshots");
        let scratch = root.join("unpacking");
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        fsutil::reset_dir(&scratch).map_err(at(&scratch))?;
        Ok(Self { dir, scratch })
    }

    /// The directory holding the snapshot's files (an overlayfs lowerdir).
    pub fn fs_path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(diff_id.hex()).join("fs")
    }

    /// Whether the snapshot is committed.
    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.dir.join(diff_id.hex()).join(USAGE_FILE).is_file()
    }

    /// Recorded usage of a committed snapshot.
    pub fn usage(&self, diff_id: &Digest) -> io::Result<Usage> {
        let path = self.dir.join(diff_id.hex()).join(USAGE_FILE);
        let bytes = fs::read(&path).map_err(at(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A fresh empty directory to unpack a layer into.
    pub fn prepare(&self) -> io::Result<PreparedSnapshot> {
        let root = self.scratch.join(fsutil::temp_name("layer"));
        fs::create_dir_all(root.join("fs")).map_err(at(&root))?;
        Ok(PreparedSnapshot { root })
    }

    /// Make a prepared snapshot visible under its diff ID; if another pull got there first,
    /// theirs is kept.
    pub fn commit(
        &self,
        prepared: PreparedSnapshot,
        diff_id: &Digest,
        usage: Usage,
    ) -> io::Result<()> {
        let usage_json = serde_json::to_vec(&usage).map_err(io::Error::other)?;
        fs::write(prepared.root.join(USAGE_FILE), usage_json).map_err(at(&prepared.root))?;
        // The unpacked files reach the disk before the name that makes them visible does.
        rustix::fs::syncfs(fs::File::open(&prepared.root)?)?;
        let target = self.dir.join(diff_id.hex());
        if self.contains(diff_id) {
            return Ok(());
        }
        fsutil::remove_tree(&target)?;
        fs::rename(&prepared.root, &target).map_err(at(&target))?;
        fsutil::sync_parent(&target)
    }

    /// Delete a snapshot: renamed out of sight first so it never appears half-removed.
    pub fn remove(&self, diff_id: &Digest) -> io::Result<()> {
        let target = self.dir.join(diff_id.hex());
        let doomed = self.scratch.join(fsutil::temp_name("removing"));
        match fs::rename(&target, &doomed) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => fsutil::remove_tree(&doomed),
        }
    }

    /// Diff IDs of all snapshot directories, committed or not.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let names = fsutil::list_names(&self.dir)?;
        Ok(names
            .iter()
            .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .collect())
    }
}

/// A snapshot being unpacked; removed on drop unless committed.
#[derive(Debug)]
pub struct PreparedSnapshot {
    root: PathBuf,
}

impl PreparedSnapshot {
    /// The empty directory the layer is applied into.
    pub fn fs_path(&self) -> PathBuf {
        self.root.join("fs")
    }
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        // After a commit the directory has been renamed away and this finds nothing.
        let _ = fsutil::remove_tree(&self.root);
    }
}
