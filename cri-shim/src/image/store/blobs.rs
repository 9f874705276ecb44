//! Content-addressed blob store: `blobs/sha256/<hex>`, written through `ingest/`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::fsutil::{self, at};
use crate::image::digest::{Digest, Hasher};
use crate::image::error::ImageError;

/// Compressed layers, manifests and configs, named by digest.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    ingest: PathBuf,
}

impl BlobStore {
    /// Open (and create) the store under `root`, discarding ingests a crash left behind.
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir = root.join("blobs/sha256");
        let ingest = root.join("ingest");
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        fsutil::reset_dir(&ingest).map_err(at(&ingest))?;
        Ok(Self { dir, ingest })
    }

    /// Where a blob lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is committed.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a committed blob, if present.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Read a whole (small) blob.
    pub fn read(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let path = self.path(digest);
        fs::read(&path).map_err(at(path))
    }

    /// Verify and commit an in-memory blob.
    pub fn put(&self, expected: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        if self.contains(expected) {
            return Ok(());
        }
        let mut writer = self.writer(expected.clone(), bytes.len() as u64)?;
        writer.write(bytes)?;
        writer.commit()
    }

    /// Start writing a blob that must hash to `expected` and be `size` bytes long.
    pub fn writer(&self, expected: Digest, size: u64) -> Result<BlobWriter, ImageError> {
        let tmp = self.ingest.join(fsutil::temp_name(expected.hex()));
        let file = File::create(&tmp).map_err(|e| ImageError::io("creating ingest file", e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            target: self.path(&expected),
            expected,
            size,
            written: 0,
            hasher: Some(Hasher::default()),
        })
    }

    /// Delete a blob; absence is fine.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// All committed blobs.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let names = fsutil::list_names(&self.dir)?;
        Ok(names
            .iter()
            .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .collect())
    }
}

/// A blob being written; only `commit` makes it visible, dropping it discards it.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    expected: Digest,
    size: u64,
    written: u64,
    /// Taken when the content is verified; writing after that is refused.
    hasher: Option<Hasher>,
}

impl BlobWriter {
    /// Append bytes, refusing more than the descriptor's size.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.written += bytes.len() as u64;
        if self.written > self.size {
            return Err(ImageError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.size,
                actual: self.written,
            });
        }
        self.hasher.as_mut().ok_or_else(closed)?.update(bytes);
        let file = self.file.as_mut().ok_or_else(closed)?;
        file.write_all(bytes)
            .map_err(|e| ImageError::io("writing blob", e))
    }

    /// Check size and digest, then atomically move the blob into the store.
    pub fn commit(mut self) -> Result<(), ImageError> {
        if self.hasher.is_some() {
            self.verify()?;
        }
        let file = self.file.take().ok_or_else(closed)?;
        file.sync_all()
            .map_err(|e| ImageError::io("syncing blob", e))?;
        fs::rename(&self.tmp, &self.target)
            .and_then(|()| fsutil::sync_parent(&self.target))
            .map_err(|e| ImageError::io("committing blob", e))
    }

    /// Check size and digest of what was written, as the final state.
    pub fn verify(&mut self) -> Result<(), ImageError> {
        if self.written != self.size {
            return Err(ImageError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.size,
                actual: self.written,
            });
        }
        let actual = self.hasher.take().ok_or_else(closed)?.finish();
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a commit the file has been renamed away and this finds nothing.
        let _ = fs::remove_file(&self.tmp);
    }
}

fn closed() -> ImageError {
    ImageError::io(
        "writing blob",
        io::Error::other("blob writer already finished"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_requires_matching_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let good = Digest::of(b"layer");

        let mut w = store.writer(good.clone(), 5).unwrap();
        w.write(b"LAYER").unwrap();
        let err = w.commit().unwrap_err().to_string();
        assert!(err.contains(&good.to_string()), "{err}");
        assert!(!store.contains(&good));
        assert!(fsutil::list_names(&dir.path().join("ingest"))
            .unwrap()
            .is_empty());

        let mut w = store.writer(good.clone(), 4).unwrap();
        assert!(w.write(b"layer").is_err(), "oversized write accepted");
        drop(w);

        store.put(&good, b"layer").unwrap();
        assert_eq!(store.read(&good).unwrap(), b"layer");
        assert_eq!(store.list().unwrap(), vec![good]);
    }
}
