//! Crash-safe file operations shared by the stores.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A random name for temporary files and directories.
pub fn temp_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Write `bytes` to `path` atomically: temp file in `tmp_dir`, fsync, rename, fsync parent.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(temp_name("write"));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsync the directory holding `path`, so a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Remove a directory tree, tolerating its absence.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Empty a scratch directory left by a crash, creating it if missing.
pub fn reset_dir(path: &Path) -> io::Result<()> {
    remove_tree(path)?;
    fs::create_dir_all(path)
}

/// Entries of a directory whose names are digests' hex parts.
pub fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Attach the path to an I/O error so it says where it happened.
pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.into();
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
