//! Container root filesystems: an overlay of the image's read-only snapshots with a
//! per-container writable layer, mounted on the host at `bundle/rootfs`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The kernel refuses mount data longer than a page.
const MAX_MOUNT_DATA: usize = 4095;

/// Where a container's layers live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Writable layer.
    pub upper: PathBuf,
    /// overlayfs scratch directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// Mount point.
    pub target: PathBuf,
}

impl Layout {
    /// The layout under a container's directory.
    pub fn under(container_dir: &Path) -> Self {
        Self {
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            target: container_dir.join("bundle").join("rootfs"),
        }
    }
}

/// Mount the overlay. `lower` is ordered lowest layer first, as images list them.
pub fn mount_overlay(layout: &Layout, lower: &[PathBuf]) -> io::Result<()> {
    if lower.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "image has no layers",
        ));
    }
    for dir in [&layout.upper, &layout.work, &layout.target] {
        std::fs::create_dir_all(dir)?;
    }
    let lowerdir = lower
        .iter()
        .rev()
        .map(|p| escape(p))
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        escape(&layout.upper),
        escape(&layout.work)
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "overlay options for {} layers exceed the kernel's limit",
                lower.len()
            ),
        ));
    }
    mount(
        Some("overlay"),
        &layout.target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "mounting overlay at {}: {e}",
            layout.target.display()
        ))
    })
}

/// overlayfs splits its options on `,` and lowerdirs on `:`; both are escaped with `\`.
fn escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Unmount the rootfs; not mounted (or absent) is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue, // stacked mounts from a crash-retried create
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "unmounting {}: {e}",
                    target.display()
                )))
            }
        }
    }
}

/// Bytes and inodes used by a writable layer (hard links counted once).
pub fn usage(upper: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![upper.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_separators_are_escaped() {
        assert_eq!(escape(Path::new("/a,b:c\\d")), "/a\\,b\\:c\\\\d");
        assert_eq!(escape(Path::new("/plain/path")), "/plain/path");
    }

    #[test]
    fn usage_counts_files_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("d/f"), dir.path().join("g")).unwrap();
        let (bytes, inodes) = usage(dir.path());
        assert_eq!(inodes, 2, "dir + one file (hard link counted once)");
        assert!(bytes >= 10_000, "{bytes}");
    }
}
