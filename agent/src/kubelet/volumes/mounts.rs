//! Mount-table queries, unmounting and a removal that never crosses into another mount:
//! what teardown needs to be safe after a crash, when nothing but the disk is known.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::error::VolumeError;

/// How often one mount point is unmounted before giving up (mounts can be stacked).
const MAX_STACKED_MOUNTS: usize = 32;

/// Mount points listed in `/proc/self/mountinfo` at or below `root`, deepest first.
pub(super) fn mount_points_under(root: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    // The mount table holds resolved paths.
    let Ok(root) = root.canonicalize() else {
        return Ok(Vec::new());
    };
    let table = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| VolumeError::io("read", "/proc/self/mountinfo", e))?;
    Ok(filter_under(parse_mount_points(&table), &root))
}

/// Whether `path` itself is a mount point.
pub(super) fn is_mount_point(path: &Path) -> Result<bool, VolumeError> {
    let Ok(canonical) = path.canonicalize() else {
        return Ok(false);
    };
    let table = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| VolumeError::io("read", "/proc/self/mountinfo", e))?;
    Ok(parse_mount_points(&table).contains(&canonical))
}

fn filter_under(points: Vec<PathBuf>, root: &Path) -> Vec<PathBuf> {
    let mut under: Vec<PathBuf> = points.into_iter().filter(|p| p.starts_with(root)).collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    under.dedup();
    under
}

/// The mount point column (5th) of each mountinfo line, with octal escapes decoded.
fn parse_mount_points(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount paths as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted at `path` (stacked mounts included); lazily if busy.
pub(super) fn unmount_all_at(path: &Path) -> Result<(), VolumeError> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EBUSY) => {
                // A process still has it open: detach now, the kernel frees it when unused.
                umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|e| VolumeError::io("lazily unmount", path, e))?;
            }
            // Not (or no longer) a mount point, or already gone.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(VolumeError::io("unmount", path, e)),
        }
    }
    Err(VolumeError::StillMounted {
        path: path.to_path_buf(),
    })
}

/// Unmounts every mount at or below `root`, deepest first, and checks none is left.
pub(super) fn unmount_all_under(root: &Path) -> Result<(), VolumeError> {
    for point in mount_points_under(root)? {
        unmount_all_at(&point)?;
    }
    match mount_points_under(root)?.into_iter().next() {
        Some(path) => Err(VolumeError::StillMounted { path }),
        None => Ok(()),
    }
}

/// Removes `root` recursively without following symlinks and refusing to enter a directory
/// on another device (a mount that survived), like the kubelet's RemoveAllOneFilesystem.
pub(super) fn remove_all_one_filesystem(root: &Path) -> Result<(), VolumeError> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("inspect", root, e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(root).map_err(|e| VolumeError::io("remove", root, e));
    }
    remove_dir_on_device(root, meta.dev())
}

fn remove_dir_on_device(dir: &Path, dev: u64) -> Result<(), VolumeError> {
    let entries = fs::read_dir(dir).map_err(|e| VolumeError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("list", dir, e))?;
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(VolumeError::io("inspect", &path, e)),
        };
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(VolumeError::StillMounted { path });
            }
            remove_dir_on_device(&path, dev)?;
        } else {
            ignore_not_found(fs::remove_file(&path))
                .map_err(|e| VolumeError::io("remove", &path, e))?;
        }
    }
    ignore_not_found(fs::remove_dir(dir)).map_err(|e| VolumeError::io("remove directory", dir, e))
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /var/lib/capstan/pods/u1/volumes/kubernetes.io~empty-dir/m rw - tmpfs tmpfs rw
31 22 0:26 / /var/lib/capstan/pods/u1/volume-subpaths/v/c/0 rw - ext4 /dev/sda1 rw
32 22 0:27 / /var/lib/capstan/pods/u10/volumes/x rw - tmpfs tmpfs rw
33 22 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn lists_only_mounts_below_the_root_deepest_first() {
        let got = filter_under(
            parse_mount_points(SAMPLE),
            Path::new("/var/lib/capstan/pods/u1"),
        );
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/capstan/pods/u1/volume-subpaths/v/c/0"),
                PathBuf::from("/var/lib/capstan/pods/u1/volumes/kubernetes.io~empty-dir/m"),
            ]
        );
    }

    #[test]
    fn decodes_octal_escapes() {
        assert!(parse_mount_points(SAMPLE).contains(&PathBuf::from("/mnt/with space")));
        assert_eq!(unescape_octal(r"a\134b\011"), "a\\b\t");
        assert_eq!(unescape_octal(r"trailing\04"), r"trailing\04");
    }

    #[test]
    fn removes_a_tree_without_following_symlinks() -> Result<(), Box<dyn std::error::Error>> {
        let outside = tempfile::tempdir()?;
        let tree = tempfile::tempdir()?;
        let keep = outside.path().join("keep");
        fs::write(&keep, b"x")?;
        let root = tree.path().join("pod");
        fs::create_dir_all(root.join("a/b"))?;
        fs::write(root.join("a/b/f"), b"y")?;
        std::os::unix::fs::symlink(outside.path(), root.join("a/link"))?;
        remove_all_one_filesystem(&root)?;
        assert!(!root.exists());
        assert!(keep.exists(), "followed a symlink out of the tree");
        remove_all_one_filesystem(&root)?;
        Ok(())
    }
}
