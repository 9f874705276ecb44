//! The kubelet's AtomicWriter: a payload of files is written into a fresh `..<timestamp>`
//! directory, `..data` is swapped to it with one rename, and the user-visible names are
//! symlinks `name → ..data/name`, so readers always see one complete version.
//!
//! Everything is done through directory file descriptors with `O_NOFOLLOW`/`RESOLVE_BENEATH`,
//! so a symlink planted in the volume can never redirect a write.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::error::VolumeError;

/// The symlink naming the current version.
const DATA_DIR: &str = "..data";
/// Where the next `..data` symlink is made before being renamed over it.
const DATA_DIR_TMP: &str = "..data_tmp";
/// Limits of the kubelet's validatePath.
const MAX_PATH_LENGTH: usize = 4096;
const MAX_FILE_NAME_LENGTH: usize = 255;

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileProjection {
    /// File content.
    pub(super) data: Vec<u8>,
    /// Permission bits (0..=0o777).
    pub(super) mode: u32,
}

/// Files by clean relative path.
pub(super) type Payload = BTreeMap<String, FileProjection>;

/// Validates an item path as the kubelet does and returns it cleaned (`a//./b` → `a/b`).
pub(super) fn clean_item_path(path: &str) -> Result<String, &'static str> {
    if path.is_empty() {
        return Err("must not be empty");
    }
    if path.starts_with('/') {
        return Err("must be a relative path");
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err("must be at most 4096 characters");
    }
    if path.contains('\0') {
        return Err("must not contain NUL");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            ".." => return Err("must not contain '..'"),
            "" | "." => {}
            p if p.len() > MAX_FILE_NAME_LENGTH => {
                return Err("file names must be at most 255 characters")
            }
            p => parts.push(p),
        }
    }
    match parts.first() {
        None => Err("must name a file"),
        // `..data` and the timestamp directories belong to the writer.
        Some(first) if first.starts_with("..") => Err("must not start with '..'"),
        Some(_) => Ok(parts.join("/")),
    }
}

/// Writes `payload` into `target` (an existing directory). Returns whether anything changed:
/// an identical payload leaves the current version in place.
pub(super) fn write(volume: &str, target: &Path, payload: &Payload) -> Result<bool, VolumeError> {
    for path in payload.keys() {
        match clean_item_path(path) {
            Ok(clean) if clean == *path => {}
            Ok(_) => return Err(item_error(volume, path, "is not in clean form")),
            Err(reason) => return Err(item_error(volume, path, reason)),
        }
    }
    let io = |op, e: Errno| VolumeError::io(op, target, e);
    let dir = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open volume directory", e))?;
    let top_level: BTreeSet<&str> = payload.keys().filter_map(|p| p.split('/').next()).collect();

    if let Some(old) = current_version(&dir) {
        if version_matches(target, &dir, &old, payload)? && visible_links_ok(&dir, &top_level) {
            remove_stale_versions(target, &old)?;
            return Ok(false);
        }
    }

    // Refuse before anything changes, so a bad volume keeps its current version.
    for name in &top_level {
        if !link_slot_usable(&dir, name) {
            return Err(item_error(
                volume,
                name,
                "a file the writer did not create is in the way",
            ));
        }
    }
    let (version, version_fd) = make_version_dir(target, &dir)?;
    write_payload(target, &version, &version_fd, payload)?;
    rfs::fsync(&version_fd).map_err(|e| io("fsync", e))?;

    match rfs::unlinkat(&dir, DATA_DIR_TMP, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(io("remove ..data_tmp in", e)),
    }
    rfs::symlinkat(version.as_str(), &dir, DATA_DIR_TMP)
        .map_err(|e| io("symlink ..data_tmp in", e))?;
    rfs::renameat(&dir, DATA_DIR_TMP, &dir, DATA_DIR).map_err(|e| io("swap ..data in", e))?;

    for name in &top_level {
        create_visible_link(volume, target, &dir, name)?;
    }
    remove_unneeded_links(target, &dir, &top_level)?;
    rfs::fsync(&dir).map_err(|e| io("fsync", e))?;
    remove_stale_versions(target, &version)?;
    Ok(true)
}

fn item_error(volume: &str, path: &str, reason: &'static str) -> VolumeError {
    VolumeError::InvalidItemPath {
        volume: volume.to_string(),
        path: path.to_string(),
        reason,
    }
}

/// The version `..data` points to, if it is one of ours.
fn current_version(dir: &OwnedFd) -> Option<String> {
    let link = rfs::readlinkat(dir, DATA_DIR, Vec::new()).ok()?;
    let name = link.into_string().ok()?;
    (name.starts_with("..") && !name.contains('/') && name != DATA_DIR).then_some(name)
}

/// Whether the version directory holds exactly the payload (same files, bytes and modes).
fn version_matches(
    target: &Path,
    dir: &OwnedFd,
    version: &str,
    payload: &Payload,
) -> Result<bool, VolumeError> {
    let mut present = BTreeSet::new();
    if list_files(&target.join(version), "", &mut present).is_err() {
        return Ok(false);
    }
    if present.len() != payload.len() || !payload.keys().all(|k| present.contains(k)) {
        return Ok(false);
    }
    for (path, file) in payload {
        let Ok(fd) = rfs::openat2(
            dir,
            format!("{version}/{path}").as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        ) else {
            return Ok(false);
        };
        let mode = rfs::fstat(&fd)
            .map(|st| st.st_mode & 0o7777)
            .unwrap_or(u32::MAX);
        let mut data = Vec::new();
        if File::from(fd).read_to_end(&mut data).is_err() || data != file.data || mode != file.mode
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Regular files below `dir`, as relative paths; anything else makes the version unusable.
fn list_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| std::io::ErrorKind::InvalidData)?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_files(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.insert(rel);
        } else {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(())
}

fn visible_links_ok(dir: &OwnedFd, top_level: &BTreeSet<&str>) -> bool {
    top_level.iter().all(|name| {
        rfs::readlinkat(dir, *name, Vec::new())
            .is_ok_and(|t| t.as_bytes() == format!("{DATA_DIR}/{name}").as_bytes())
    })
}

/// Creates `..YYYY_MM_DD_HH_MM_SS.<random>` (the kubelet's name) with mode 0755.
fn make_version_dir(target: &Path, dir: &OwnedFd) -> Result<(String, OwnedFd), VolumeError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let stamp = jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S")
        .to_string();
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
        let salt = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = nanos ^ std::process::id().rotate_left(16) ^ salt.wrapping_mul(2_654_435_761);
        let name = format!("..{stamp}.{random}");
        match rfs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                let fd = open_dir_nofollow(dir, &name)
                    .map_err(|e| VolumeError::io("open", target.join(&name), e))?;
                // mkdir's mode went through the umask.
                rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                    .map_err(|e| VolumeError::io("chmod", target.join(&name), e))?;
                return Ok((name, fd));
            }
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(VolumeError::io("create version directory in", target, e)),
        }
    }
    Err(VolumeError::io("create version directory in", target, last))
}

fn open_dir_nofollow(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn write_payload(
    target: &Path,
    version: &str,
    version_fd: &OwnedFd,
    payload: &Payload,
) -> Result<(), VolumeError> {
    for (path, file) in payload {
        let full = target.join(version).join(path);
        let io = |op, e: Errno| VolumeError::io(op, &full, e);
        let mut parts: Vec<&str> = path.split('/').collect();
        let Some(name) = parts.pop() else {
            continue;
        };
        let mut parent = version_fd
            .try_clone()
            .map_err(|e| VolumeError::io("dup", &full, e))?;
        for part in parts {
            let created = match rfs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(io("create parent directory of", e)),
            };
            let child =
                open_dir_nofollow(&parent, part).map_err(|e| io("open parent directory of", e))?;
            if created {
                rfs::fchmod(&child, Mode::from_raw_mode(0o755))
                    .map_err(|e| io("chmod parent of", e))?;
            }
            parent = child;
        }
        let fd = rfs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(file.mode),
        )
        .map_err(|e| io("create", e))?;
        rfs::fchmod(&fd, Mode::from_raw_mode(file.mode)).map_err(|e| io("chmod", e))?;
        let mut f = File::from(fd);
        f.write_all(&file.data)
            .map_err(|e| VolumeError::io("write", &full, e))?;
        f.sync_all()
            .map_err(|e| VolumeError::io("fsync", &full, e))?;
        rfs::fsync(&parent).map_err(|e| io("fsync parent of", e))?;
    }
    Ok(())
}

/// Whether `name` is free or already our link into `..data`.
fn link_slot_usable(dir: &OwnedFd, name: &str) -> bool {
    match rfs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => t.as_bytes() == format!("{DATA_DIR}/{name}").as_bytes(),
        Err(e) => e == Errno::NOENT,
    }
}

/// Makes `name → ..data/name`; refuses to replace anything the writer did not create.
fn create_visible_link(
    volume: &str,
    target: &Path,
    dir: &OwnedFd,
    name: &str,
) -> Result<(), VolumeError> {
    let expected = format!("{DATA_DIR}/{name}");
    match rfs::readlinkat(dir, name, Vec::new()) {
        Ok(t) if t.as_bytes() == expected.as_bytes() => Ok(()),
        Err(Errno::NOENT) => rfs::symlinkat(expected.as_str(), dir, name)
            .map_err(|e| VolumeError::io("symlink", target.join(name), e)),
        Ok(_) | Err(Errno::INVAL) => Err(item_error(
            volume,
            name,
            "a file the writer did not create is in the way",
        )),
        Err(e) => Err(VolumeError::io("read link", target.join(name), e)),
    }
}

/// Removes visible links of files that left the payload (only links into `..data`).
fn remove_unneeded_links(
    target: &Path,
    dir: &OwnedFd,
    keep: &BTreeSet<&str>,
) -> Result<(), VolumeError> {
    let entries = fs::read_dir(target).map_err(|e| VolumeError::io("list", target, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("list", target, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with("..") || keep.contains(name.as_str()) {
            continue;
        }
        let ours = rfs::readlinkat(dir, name.as_str(), Vec::new())
            .is_ok_and(|t| t.as_bytes() == format!("{DATA_DIR}/{name}").as_bytes());
        if ours {
            match rfs::unlinkat(dir, name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(VolumeError::io("remove", target.join(&name), e)),
            }
        }
    }
    Ok(())
}

/// Removes every version directory but `current` (older ones and leftovers of a crash).
fn remove_stale_versions(target: &Path, current: &str) -> Result<(), VolumeError> {
    let entries = fs::read_dir(target).map_err(|e| VolumeError::io("list", target, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("list", target, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with("..") || name == current || name == DATA_DIR {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| VolumeError::io("inspect", &path, e))?;
        let removed = if kind.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(VolumeError::io("remove old version", &path, e))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn item_paths_are_validated_and_cleaned() {
        assert_eq!(clean_item_path("a//./b"), Ok("a/b".into()));
        assert_eq!(clean_item_path("labels"), Ok("labels".into()));
        assert_eq!(clean_item_path("a/..b"), Ok("a/..b".into()));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "..data/x",
            "..x",
            ".",
            "./",
            "a\0b",
        ] {
            assert!(clean_item_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(clean_item_path(&"a".repeat(256)).is_err());
        assert!(clean_item_path(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn writes_versioned_files_behind_symlinks() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        let p = payload(&[("name", "web", 0o644), ("sub/dir/uid", "123", 0o600)]);
        assert!(write("v", dir, &p)?);
        assert_eq!(fs::read_to_string(dir.join("name"))?, "web");
        assert_eq!(fs::read_to_string(dir.join("sub/dir/uid"))?, "123");
        assert_eq!(fs::read_link(dir.join("name"))?, Path::new("..data/name"));
        assert_eq!(fs::read_link(dir.join("sub"))?, Path::new("..data/sub"));
        let data = fs::read_link(dir.join(DATA_DIR))?;
        let version = data.to_string_lossy().into_owned();
        assert!(version.starts_with("..20"), "{version}");
        assert_eq!(versions(dir), vec![version.clone()]);
        assert_eq!(
            fs::metadata(dir.join("sub/dir/uid"))?.permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.join(&version))?.permissions().mode() & 0o777,
            0o755
        );
        // The same payload again changes nothing.
        assert!(!write("v", dir, &p)?);
        assert_eq!(fs::read_link(dir.join(DATA_DIR))?, data);
        Ok(())
    }

    #[test]
    fn update_replaces_content_and_keeps_only_the_current_version() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        write(
            "v",
            dir,
            &payload(&[("labels", "a=\"1\"", 0o644), ("gone", "x", 0o644)]),
        )?;
        // A leftover of a crash between mkdir and the swap.
        fs::create_dir(dir.join("..2000_01_01_00_00_00.1"))?;
        let p2 = payload(&[("labels", "a=\"2\"", 0o644), ("new", "y", 0o644)]);
        assert!(write("v", dir, &p2)?);
        assert_eq!(fs::read_to_string(dir.join("labels"))?, "a=\"2\"");
        assert_eq!(fs::read_to_string(dir.join("new"))?, "y");
        assert!(
            fs::symlink_metadata(dir.join("gone")).is_err(),
            "stale link kept"
        );
        let current = fs::read_link(dir.join(DATA_DIR))?
            .to_string_lossy()
            .into_owned();
        assert_eq!(versions(dir), vec![current]);
        // Mode changes alone are an update too.
        let p3 = payload(&[("labels", "a=\"2\"", 0o400), ("new", "y", 0o644)]);
        assert!(write("v", dir, &p3)?);
        assert_eq!(
            fs::metadata(dir.join("labels"))?.permissions().mode() & 0o777,
            0o400
        );
        Ok(())
    }

    #[test]
    fn planted_symlinks_are_not_followed() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let dir = tmp.path();
        std::os::unix::fs::symlink(outside.path(), dir.join("labels"))?;
        let p = payload(&[("labels", "x", 0o644)]);
        assert!(matches!(
            write("v", dir, &p),
            Err(VolumeError::InvalidItemPath { .. })
        ));
        assert_eq!(
            fs::read_dir(outside.path())?.count(),
            0,
            "wrote outside the volume"
        );
        let bad = payload(&[("../escape", "x", 0o644)]);
        assert!(matches!(
            write("v", dir, &bad),
            Err(VolumeError::InvalidItemPath { .. })
        ));
        let abs = payload(&[("/etc/x", "x", 0o644)]);
        assert!(matches!(
            write("v", dir, &abs),
            Err(VolumeError::InvalidItemPath { .. })
        ));
        Ok(())
    }
}
