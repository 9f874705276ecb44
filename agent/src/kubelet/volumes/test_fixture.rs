//! The fixture both volume test modules use: a pods directory in a unique temporary
//! directory and a guard that tears the pod down when the test ends, even on failure.

use std::path::PathBuf;

use super::{NodeAllocatable, VolumeManager};

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) const NODE: NodeAllocatable = NodeAllocatable {
    cpu_millis: 2000,
    memory_bytes: 1 << 30,
    ephemeral_storage_bytes: 10 << 30,
};

pub(super) struct Fixture {
    pub(super) manager: VolumeManager,
    pub(super) uid: String,
    // Dropped after `Drop::drop` ran the teardown.
    _tmp: tempfile::TempDir,
}

impl Fixture {
    /// A pod UID made of `prefix` and the temporary directory's unique name.
    pub(super) fn new(prefix: &str) -> Result<Self, std::io::Error> {
        let tmp = tempfile::tempdir()?;
        let unique = tmp
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uid = format!("{prefix}-{unique}")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
        Ok(Fixture {
            manager: VolumeManager::new(tmp.path().join("pods"), NODE),
            uid,
            _tmp: tmp,
        })
    }

    pub(super) fn pod_dir(&self) -> PathBuf {
        self.manager.pods_dir().join(&self.uid)
    }

    pub(super) fn volume_dir(&self, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir().join("volumes").join(plugin).join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = self.manager.teardown(&self.uid) {
            eprintln!("teardown in test cleanup failed: {e}");
        }
    }
}
