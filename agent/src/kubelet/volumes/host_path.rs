//! hostPath volumes: used in place; the `type` check (and create) is the kubelet's
//! `checkTypeInternal`, following symlinks as `os.Stat` does.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path};

use super::error::VolumeError;

/// Checks (and for the *OrCreate types creates) the host path as the pod's hostPath type asks.
pub(super) fn check(volume: &str, path: &str, kind: Option<&str>) -> Result<(), VolumeError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid(
            volume,
            format!("hostPath {path:?} must be an absolute path"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            volume,
            format!("hostPath {path:?} must not contain '..'"),
        ));
    }
    let kind = kind.unwrap_or("");
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if !exists(p) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(p)
            .map_err(|e| VolumeError::io("create hostPath directory", p, e)),
        "Directory" | "DirectoryOrCreate" => expect(p, "directory", |t| t.is_dir()),
        "FileOrCreate" if !exists(p) => OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(p)
            .map(drop)
            .map_err(|e| VolumeError::io("create hostPath file", p, e)),
        "File" | "FileOrCreate" => expect(p, "file", |t| t.is_file()),
        "Socket" => expect(p, "socket file", |t| t.is_socket()),
        "CharDevice" => expect(p, "character device", |t| t.is_char_device()),
        "BlockDevice" => expect(p, "block device", |t| t.is_block_device()),
        other => Err(invalid(
            volume,
            format!("{other} is an invalid volume type"),
        )),
    }
}

fn invalid(volume: &str, reason: String) -> VolumeError {
    VolumeError::InvalidVolume {
        volume: volume.to_string(),
        reason,
    }
}

fn exists(p: &Path) -> bool {
    !matches!(fs::metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

fn expect(
    p: &Path,
    expected: &'static str,
    is: impl Fn(&fs::FileType) -> bool,
) -> Result<(), VolumeError> {
    match fs::metadata(p) {
        Ok(m) if is(&m.file_type()) => Ok(()),
        _ => Err(VolumeError::HostPathType {
            path: p.to_path_buf(),
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn s(p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    fn type_error(r: Result<(), VolumeError>) -> Option<(String, &'static str)> {
        match r {
            Err(VolumeError::HostPathType { path, expected }) => Some((s(&path), expected)),
            _ => None,
        }
    }

    #[test]
    fn directory_types() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("a/b");
        assert_eq!(
            type_error(check("v", &s(&dir), Some("Directory"))),
            Some((s(&dir), "directory"))
        );
        check("v", &s(&dir), Some("DirectoryOrCreate"))?;
        assert!(dir.is_dir());
        assert_eq!(
            fs::metadata(&dir)?.permissions().mode() & 0o777,
            0o755 & !umask()
        );
        check("v", &s(&dir), Some("Directory"))?;
        check("v", &s(&dir), Some("DirectoryOrCreate"))?;
        let file = tmp.path().join("f");
        fs::write(&file, b"")?;
        assert_eq!(
            type_error(check("v", &s(&file), Some("DirectoryOrCreate"))),
            Some((s(&file), "directory"))
        );
        Ok(())
    }

    /// Read without setting it: umask(2) would race with the other tests.
    fn umask() -> u32 {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    #[test]
    fn file_types() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("f");
        assert!(type_error(check("v", &s(&file), Some("File"))).is_some());
        check("v", &s(&file), Some("FileOrCreate"))?;
        assert!(file.is_file());
        check("v", &s(&file), Some("File"))?;
        // FileOrCreate does not create parents, like the kubelet.
        let deep = tmp.path().join("missing/f");
        assert!(matches!(
            check("v", &s(&deep), Some("FileOrCreate")),
            Err(VolumeError::Io { .. })
        ));
        assert_eq!(
            type_error(check("v", &s(tmp.path()), Some("File"))),
            Some((s(tmp.path()), "file"))
        );
        // Symlinks are followed.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&file, &link)?;
        check("v", &s(&link), Some("File"))?;
        Ok(())
    }

    #[test]
    fn socket_and_devices() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let sock = tmp.path().join("s.sock");
        let _listener = UnixListener::bind(&sock)?;
        check("v", &s(&sock), Some("Socket"))?;
        assert_eq!(
            type_error(check("v", &s(&sock), Some("CharDevice"))),
            Some((s(&sock), "character device"))
        );
        check("v", "/dev/null", Some("CharDevice"))?;
        assert_eq!(
            type_error(check("v", "/dev/null", Some("Socket"))),
            Some(("/dev/null".into(), "socket file"))
        );
        assert_eq!(
            type_error(check("v", "/dev/null", Some("BlockDevice"))),
            Some(("/dev/null".into(), "block device"))
        );
        let msg = check("v", "/dev/null", Some("BlockDevice"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some("hostPath type check failed: /dev/null is not a block device")
        );
        Ok(())
    }

    #[test]
    fn untyped_and_invalid() {
        assert!(check("v", "/does/not/exist/anywhere", None).is_ok());
        assert!(check("v", "/does/not/exist/anywhere", Some("")).is_ok());
        assert!(matches!(
            check("v", "/tmp", Some("Dir")),
            Err(VolumeError::InvalidVolume { .. })
        ));
        assert!(check("v", "relative/path", None).is_err());
        assert!(check("v", "/tmp/../etc", None).is_err());
    }
}
