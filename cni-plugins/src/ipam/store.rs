//! The on-disk allocation store, in host-local's layout so either plugin can read the other's
//! state: `<dataDir>/<network>/<ip>` holding "containerID\r\nifname", `last_reserved_ip.<set>`
//! and a `lock` file that every operation holds an exclusive flock on.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::error::CniError;

/// Separator between container ID and interface name in an allocation file (host-local's).
const LINE_BREAK: &str = "\r\n";
/// Prefix of the per-range-set round-robin files.
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Prefix of temporary files; any found while holding the lock are from a killed process.
const TEMP_PREFIX: &str = ".capstan-ipam-tmp.";

/// Who holds an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Container ID (trimmed, as host-local stores it).
    pub container_id: String,
    /// Interface name; absent in files written before host-local recorded it.
    pub ifname: Option<String>,
}

impl Holder {
    /// The holder for an attachment.
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Self {
            container_id: container_id.trim().to_owned(),
            ifname: Some(ifname.to_owned()),
        }
    }

    /// Decode a file's content (host-local trims surrounding whitespace before comparing).
    pub fn decode(content: &str) -> Self {
        match content.trim().split_once(LINE_BREAK) {
            Some((id, ifname)) => Self {
                container_id: id.to_owned(),
                ifname: Some(ifname.to_owned()),
            },
            None => Self {
                container_id: content.trim().to_owned(),
                ifname: None,
            },
        }
    }

    /// The file content.
    pub fn encode(&self) -> String {
        match &self.ifname {
            Some(ifname) => format!("{}{LINE_BREAK}{ifname}", self.container_id),
            None => self.container_id.clone(),
        }
    }

    /// Whether this (stored) holder is the attachment `other`: exact, or a legacy file of
    /// the same container.
    pub fn is(&self, other: &Holder) -> bool {
        self.container_id == other.container_id
            && (self.ifname.is_none() || self.ifname == other.ifname)
    }
}

/// One allocation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address (the file name).
    pub ip: IpAddr,
    /// Its holder, if the file could be read.
    pub holder: Option<Holder>,
}

/// A network's directory, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Holds the flock; closing the descriptor releases it.
    _lock: File,
}

impl Store {
    /// Create the network directory if needed and lock it.
    pub fn create(dir: &Path) -> Result<Self, CniError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| io_error("creating", dir, e))?;
        Self::lock(dir)
    }

    /// Lock an existing network directory; `None` when it does not exist (nothing allocated).
    pub fn open_existing(dir: &Path) -> Result<Option<Self>, CniError> {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Self::lock(dir).map(Some),
            Ok(_) => Err(CniError::io(
                format!("{} is not a directory", dir.display()),
                "",
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", dir, e)),
        }
    }

    fn lock(dir: &Path) -> Result<Self, CniError> {
        let path = dir.join("lock");
        // Read-only with create and mode 0750, as host-local's go-filemutex opens it.
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o750),
        )
        .map_err(|e| io_error("opening", &path, e))?;
        loop {
            match rustix::fs::flock(&fd, FlockOperation::LockExclusive) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_error("locking", &path, e)),
                Ok(()) => break,
            }
        }
        let store = Self {
            dir: dir.to_owned(),
            _lock: File::from(fd),
        };
        store.remove_stale_temps()?;
        Ok(store)
    }

    /// Temp files only exist while their creator holds the lock, so any seen now are left
    /// by a process that died.
    fn remove_stale_temps(&self) -> Result<(), CniError> {
        for entry in self.entries()? {
            if entry.starts_with(TEMP_PREFIX) {
                remove_if_present(&self.dir.join(&entry))?;
            }
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<String>, CniError> {
        let read = fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, e))?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| io_error("listing", &self.dir, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every allocation file (named by an IP address) in the directory.
    pub fn allocations(&self) -> Result<Vec<Allocation>, CniError> {
        let mut out = Vec::new();
        for name in self.entries()? {
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let path = self.dir.join(&name);
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            // An unreadable file still takes its address.
            let holder = fs::read(&path)
                .ok()
                .map(|bytes| Holder::decode(&String::from_utf8_lossy(&bytes)));
            out.push(Allocation { ip, holder });
        }
        Ok(out)
    }

    /// Take `ip` for `holder`; false when it is already taken. The file appears atomically
    /// with its content: written under a temp name, then hard-linked to the address's name
    /// (which fails if the name exists).
    pub fn reserve(&self, ip: IpAddr, holder: &Holder) -> Result<bool, CniError> {
        let temp = self.write_temp(holder.encode().as_bytes())?;
        let target = self.dir.join(ip.to_string());
        let linked = fs::hard_link(&temp, &target);
        remove_if_present(&temp)?;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error("creating", &target, e)),
        }
    }

    /// Remove the allocation of `ip` (no error if it is already gone).
    pub fn release(&self, ip: IpAddr) -> Result<(), CniError> {
        remove_if_present(&self.dir.join(ip.to_string()))
    }

    /// The last address reserved from range set `set`, if recorded and readable.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Record the last address reserved from range set `set` (replaced atomically).
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), CniError> {
        let temp = self.write_temp(ip.to_string().as_bytes())?;
        let target = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        let renamed = fs::rename(&temp, &target).map_err(|e| io_error("writing", &target, e));
        if renamed.is_err() {
            let _ = remove_if_present(&temp);
        }
        renamed
    }

    /// Check that files can be created in the directory (for STATUS).
    pub fn probe(&self) -> Result<(), CniError> {
        let temp = self.write_temp(b"probe")?;
        remove_if_present(&temp)
    }

    fn write_temp(&self, content: &[u8]) -> Result<PathBuf, CniError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}.{n}", std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| f.write_all(content));
        if let Err(e) = written {
            let _ = remove_if_present(&path);
            return Err(io_error("writing", &path, e));
        }
        Ok(path)
    }
}

fn remove_if_present(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error("removing", path, e)),
        _ => Ok(()),
    }
}

fn io_error(what: &str, path: &Path, err: impl std::fmt::Display) -> CniError {
    CniError::io(format!("{what} {}", path.display()), err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_round_trip_host_local_content() {
        let h = Holder::new(" c1 ", "eth0");
        assert_eq!(h.encode(), "c1\r\neth0");
        assert_eq!(Holder::decode("c1\r\neth0"), h);
        let legacy = Holder::decode("c1\n");
        assert_eq!(legacy.ifname, None);
        assert!(legacy.is(&h) && h.is(&h));
        assert!(!Holder::new("c1", "eth1").is(&h));
    }

    #[test]
    fn reserve_is_exclusive_and_leaves_no_temps() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        let store = Store::create(&dir).unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(store.reserve(ip, &Holder::new("a", "eth0")).unwrap());
        assert!(!store.reserve(ip, &Holder::new("b", "eth0")).unwrap());
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"a\r\neth0");
        store.set_last_reserved(0, ip).unwrap();
        assert_eq!(store.last_reserved(0), Some(ip));
        let mut names = store.entries().unwrap();
        names.sort();
        assert_eq!(names, ["10.0.0.2", "last_reserved_ip.0", "lock"]);
        store.release(ip).unwrap();
        store.release(ip).unwrap();
        assert!(store.allocations().unwrap().is_empty());
    }

    #[test]
    fn stale_temps_are_removed_on_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        drop(Store::create(&dir).unwrap());
        fs::write(dir.join(format!("{TEMP_PREFIX}999.0")), "x\r\neth0").unwrap();
        let store = Store::open_existing(&dir).unwrap().unwrap();
        assert_eq!(store.entries().unwrap(), ["lock"]);
        assert!(Store::open_existing(&tmp.path().join("none"))
            .unwrap()
            .is_none());
    }
}
