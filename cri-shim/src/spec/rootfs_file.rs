//! Reading files of an image (/etc/passwd, /etc/group) without ever leaving its rootfs.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Most bytes read from one file; account databases are tiny, a huge one is hostile.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// How often a lookup is retried when the kernel reports a concurrent rename (EAGAIN).
const RESOLVE_RETRIES: usize = 8;

/// Read `relative` (e.g. `etc/passwd`) inside `rootfs`. Every symlink on the way is resolved
/// as if `rootfs` were `/` (openat2 RESOLVE_IN_ROOT), so an image whose /etc/passwd links to
/// an absolute path or climbs with `..` only ever reaches files of its own rootfs.
/// `Ok(None)` when the file does not exist there.
pub(crate) fn read_in_root(rootfs: &Path, relative: &str) -> io::Result<Option<String>> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // NONBLOCK: a FIFO planted at the path must not hang the CRI server on open.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempt = 0;
    let fd = loop {
        match rustix::fs::openat2(&root, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => break fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(Errno::AGAIN) if attempt < RESOLVE_RETRIES => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_a_plain_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let text = read_in_root(root.path(), "etc/passwd").unwrap().unwrap();
        assert!(text.starts_with("root:x:0:0"));
    }

    #[test]
    fn missing_file_or_directory_is_none() {
        let root = tempfile::tempdir().unwrap();
        assert!(read_in_root(root.path(), "etc/passwd").unwrap().is_none());
        // etc is a file, not a directory
        std::fs::write(root.path().join("etc"), "x").unwrap();
        assert!(read_in_root(root.path(), "etc/passwd").unwrap().is_none());
    }

    #[test]
    fn absolute_symlink_stays_inside_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let host_file = host.path().join("host-passwd");
        std::fs::write(&host_file, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        symlink(&host_file, root.path().join("etc/passwd")).unwrap();
        // The link's target is looked up under the rootfs, where it does not exist.
        assert!(read_in_root(root.path(), "etc/passwd").unwrap().is_none());

        // Once the same absolute path exists inside the rootfs, that copy is what is read.
        let inside = root.path().join(host_file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "inside:x:1:1::/:/bin/sh\n").unwrap();
        let text = read_in_root(root.path(), "etc/passwd").unwrap().unwrap();
        assert!(text.starts_with("inside:"), "{text}");
    }

    #[test]
    fn dotdot_symlink_is_clamped_at_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(host.path().join("secret"), "hostonly:x:1:1::/:/bin/sh\n").unwrap();
        symlink("../../secret", root.join("etc/passwd")).unwrap();
        assert!(read_in_root(&root, "etc/passwd").unwrap().is_none());
    }

    #[test]
    fn refuses_non_regular_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/passwd")).unwrap();
        assert!(read_in_root(root.path(), "etc/passwd").is_err());
        std::fs::remove_dir(root.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(read_in_root(root.path(), "etc/passwd").is_err());
    }
}
