//! Drop guards: `Cleanup` runs registered closures LIFO, `TempRoot` is a temp directory removed on drop.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::names::unique_name;

/// Environment variable that, when set to a non-empty value, keeps `TempRoot` directories for debugging.
pub const KEEP_ENV: &str = "CAPSTAN_TEST_KEEP";

type Action = Box<dyn FnOnce() -> Result<()>>;

/// Runs registered closures in reverse order when dropped, also while a test panics.
///
/// A closure that panics or returns an error is reported on stderr and the rest still run.
#[derive(Default)]
pub struct Cleanup {
    actions: Vec<(String, Action)>,
}

impl Cleanup {
    /// Creates an empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an infallible closure to run on drop.
    pub fn defer(&mut self, name: impl Into<String>, f: impl FnOnce() + 'static) {
        self.actions.push((
            name.into(),
            Box::new(move || {
                f();
                Ok(())
            }),
        ));
    }

    /// Registers a fallible closure to run on drop; an error is logged, not propagated.
    pub fn defer_fallible(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce() -> Result<()> + 'static,
    ) {
        self.actions.push((name.into(), Box::new(f)));
    }

    /// Number of closures still pending.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// True when no closure is pending.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Runs all pending closures now (LIFO) and returns the names of those that failed.
    pub fn run_now(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some((name, action)) = self.actions.pop() {
            match catch_unwind(AssertUnwindSafe(action)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("cleanup '{name}' failed: {e:#}");
                    failed.push(name);
                }
                Err(_) => {
                    eprintln!("cleanup '{name}' panicked");
                    failed.push(name);
                }
            }
        }
        failed
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run_now();
    }
}

/// A fresh directory under `std::env::temp_dir()`, removed (robustly) on drop.
#[derive(Debug)]
pub struct TempRoot {
    path: PathBuf,
    keep: bool,
}

impl TempRoot {
    /// Creates `<tmp>/capstan-<unique prefix>` with mode 0755.
    pub fn new(prefix: &str) -> Result<Self> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("capstan-{}", unique_name(prefix)));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                    let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty());
                    return Ok(Self { path, keep });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        anyhow::bail!(
            "could not create a unique temp dir under {}",
            base.display()
        )
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Keeps the directory on drop and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }

    /// Removes the directory now, returning the first error.
    pub fn remove(mut self) -> Result<()> {
        self.keep = true; // Drop must not try again.
        remove_tree(&self.path)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("keeping temp dir {}", self.path.display());
            return;
        }
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("could not remove temp dir {}: {e:#}", self.path.display());
        }
    }
}

/// Removes `root` recursively without following symlinks, unmounting mounts below it and fixing permissions.
///
/// Mount points that cannot be unmounted are left in place (never descended into) and reported.
pub fn remove_tree(root: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", root.display())),
    };
    if !meta.is_dir() {
        return fs::remove_file(root).with_context(|| format!("removing {}", root.display()));
    }
    let mounts = unmount_below(root);
    let mut errors = Vec::new();
    remove_dir_contents(root, meta.dev(), &mounts, &mut errors);
    if let Err(e) = remove_entry(root, true) {
        errors.push(format!("{}: {e}", root.display()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("remove_tree {}: {}", root.display(), errors.join("; "))
    }
}

/// Lazily unmounts every mount at or below `root` (deepest first); returns those still mounted.
fn unmount_below(root: &Path) -> Vec<PathBuf> {
    let mut mounts = mounts_below(root);
    if mounts.is_empty() {
        return mounts;
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
    mounts_below(root)
}

/// Mount points listed in /proc/self/mountinfo at or below `root`.
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&root))
        .collect()
}

/// Decodes the `\040`-style octal escapes used in /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Empties `dir` depth-first, staying on device `dev` and skipping `mounts`; errors are collected.
fn remove_dir_contents(dir: &Path, dev: u64, mounts: &[PathBuf], errors: &mut Vec<String>) {
    let _ = make_writable(dir);
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if meta.dev() != dev || mounts.iter().any(|m| m == &path) {
                errors.push(format!(
                    "{}: still a mount point, left alone",
                    path.display()
                ));
                continue;
            }
            remove_dir_contents(&path, dev, mounts, errors);
            if let Err(e) = remove_entry(&path, true) {
                errors.push(format!("{}: {e}", path.display()));
            }
        } else if let Err(e) = remove_entry(&path, false) {
            errors.push(format!("{}: {e}", path.display()));
        }
    }
}

/// Removes one file or empty directory, making its parent writable and retrying on a permission error.
fn remove_entry(path: &Path, is_dir: bool) -> io::Result<()> {
    let attempt = || {
        if is_dir {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        }
    };
    match attempt() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if let Some(parent) = path.parent() {
                make_writable(parent)?;
            }
            attempt()
        }
        Err(e) => Err(e),
    }
}

/// Adds owner rwx to a directory (never follows a symlink).
fn make_writable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(
            dir,
            fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn cleanup_runs_lifo_even_on_panic() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut c = Cleanup::new();
            for i in 0..3 {
                let log = log.clone();
                c.defer(format!("step {i}"), move || log.borrow_mut().push(i));
            }
            panic!("test failure");
        }));
        assert!(result.is_err());
        assert_eq!(*log.borrow(), vec![2, 1, 0]);
    }

    #[test]
    fn temp_root_removes_read_only_dirs_without_following_symlinks() {
        let outside = TempRoot::new("outside").unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        let root = TempRoot::new("unit").unwrap();
        let path = root.path().to_path_buf();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        drop(root);
        assert!(!path.exists());
        assert!(outside.join("keep").exists());
    }
}
