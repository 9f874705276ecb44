//! Serialises plugin runs: each run reads its table and then rewrites it, so two runs
//! (ADD twice, GC racing DEL) must not interleave. One lock for all tables: runs take
//! milliseconds, and per-table lock files could never be removed safely.

use std::fs::{File, OpenOptions};

use rustix::fs::{flock, FlockOperation};

/// Directory of the lock file.
const LOCK_DIR: &str = "/run/capstan";

/// The exclusive lock, released on drop.
#[derive(Debug)]
pub struct PortmapLock {
    _file: Option<File>,
}

/// Take the lock, waiting for other runs. Best effort: without a writable /run the run
/// proceeds unlocked, as each nft transaction is still atomic.
pub fn lock() -> PortmapLock {
    let file = std::fs::create_dir_all(LOCK_DIR).ok().and_then(|()| {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{LOCK_DIR}/portmap.lock"))
            .ok()?;
        flock(&file, FlockOperation::LockExclusive).ok()?;
        Some(file)
    });
    PortmapLock { _file: file }
}
