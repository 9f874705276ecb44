//! Network namespaces: open one by path and run code inside it on a dedicated thread, so the
//! caller's thread (and every socket it holds) stays in its own namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// `statfs` magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace (a `/run/netns/*` bind mount or `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace at `path`; `NotFound` when it is gone (also when only an unmounted
    /// placeholder file is left), `InvalidInput` when the file is no namespace.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let stat = rustix::fs::fstatfs(&file)?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs.
        if stat.f_type as i64 != NSFS_MAGIC {
            // `ip netns del` unmounts before unlinking: a plain file is a namespace gone.
            let kind = if file.metadata()?.len() == 0 {
                io::ErrorKind::NotFound
            } else {
                io::ErrorKind::InvalidInput
            };
            return Err(io::Error::new(
                kind,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's descriptor (e.g. for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Run `f` on a fresh thread that has entered this namespace, and return its value. The
    /// thread ends with `f`, so no other code ever runs in the wrong namespace.
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let fd = self.fd();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("netns".to_owned())
                .spawn_scoped(scope, move || {
                    move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))?;
                    Ok(f())
                })?;
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_own_namespace_and_rejects_plain_files() {
        // Entering our own namespace needs CAP_SYS_ADMIN; without it only the errors are checked.
        let ns = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
        match ns.run(|| 7) {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("gone");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            NetNs::open(&empty).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let full = dir.path().join("file");
        std::fs::write(&full, b"x").unwrap();
        assert_eq!(
            NetNs::open(&full).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            NetNs::open(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
