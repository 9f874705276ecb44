//! Image records: what makes an image visible. One JSON file per image ID, written last in a
//! pull, so an image is listed only once all its blobs and snapshots are committed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{self, at};
use crate::image::digest::Digest;

/// A layer of an image: its compressed blob and the snapshot its contents unpack to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Layer media type as the manifest gave it.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar; names the snapshot.
    pub diff_id: Digest,
}

/// A stored image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Image ID: the digest of its config.
    pub id: Digest,
    /// Names like `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// Names like `docker.io/library/busybox@sha256:...`.
    pub repo_digests: Vec<String>,
    /// The manifest blob (for an image from an index, the platform's manifest).
    pub manifest: Digest,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// Config blob size in bytes.
    pub config_size: u64,
    /// Layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// Exempt from image garbage collection by the kubelet.
    #[serde(default)]
    pub pinned: bool,
}

impl ImageRecord {
    /// Size reported to CRI clients: manifest, config and compressed layers.
    pub fn size(&self) -> u64 {
        self.manifest_size + self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest, &self.id]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }

    /// Whether `name` refers to this image: a tag, a repo digest, the full ID or an ID prefix
    /// of at least 12 hex characters.
    pub fn matches(&self, name: &str) -> bool {
        if self
            .repo_tags
            .iter()
            .chain(&self.repo_digests)
            .any(|n| n == name)
        {
            return true;
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        hex.len() >= 12 && self.id.hex().starts_with(hex)
    }
}

/// The on-disk set of image records with an in-memory index.
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
    scratch: PathBuf,
    by_id: BTreeMap<Digest, ImageRecord>,
}

impl Records {
    /// Load every record under `root`; unreadable ones are reported and skipped.
    pub fn open(root: &Path, scratch: &Path) -> io::Result<Self> {
        let dir = root.join("images");
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        let mut by_id = BTreeMap::new();
        for name in fsutil::list_names(&dir)? {
            let path = dir.join(&name);
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => {
                    by_id.insert(record.id.clone(), record);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable image record")
                }
            }
        }
        Ok(Self {
            dir,
            scratch: scratch.to_owned(),
            by_id,
        })
    }

    /// All records.
    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    /// The record `name` refers to (tag, repo digest or ID).
    pub fn find(&self, name: &str) -> Option<&ImageRecord> {
        self.by_id.values().find(|r| r.matches(name))
    }

    /// Store a record, moving its tags off any other image that held them.
    pub fn upsert(&mut self, mut record: ImageRecord) -> io::Result<ImageRecord> {
        let moved: Vec<Digest> = self
            .by_id
            .values()
            .filter(|other| {
                other.id != record.id
                    && other.repo_tags.iter().any(|t| record.repo_tags.contains(t))
            })
            .map(|other| other.id.clone())
            .collect();
        for id in moved {
            if let Some(mut other) = self.by_id.get(&id).cloned() {
                other.repo_tags.retain(|t| !record.repo_tags.contains(t));
                self.write(other)?;
            }
        }
        if let Some(existing) = self.by_id.get(&record.id) {
            merge_names(&mut record.repo_tags, &existing.repo_tags);
            merge_names(&mut record.repo_digests, &existing.repo_digests);
            record.pinned |= existing.pinned;
        }
        self.write(record.clone())?;
        Ok(record)
    }

    /// Delete a record.
    pub fn remove(&mut self, id: &Digest) -> io::Result<()> {
        let path = self.dir.join(id.hex());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(path)(e)),
            _ => {}
        }
        fsutil::sync_parent(&path)?;
        self.by_id.remove(id);
        Ok(())
    }

    fn write(&mut self, record: ImageRecord) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.scratch, &self.dir.join(record.id.hex()), &json)?;
        self.by_id.insert(record.id.clone(), record);
        Ok(())
    }
}

fn merge_names(names: &mut Vec<String>, previous: &[String]) {
    for name in previous {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
}
