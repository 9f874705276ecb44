//! The files a join leaves behind, written crash-safely: the client certificate and key in
//! one timestamped file behind the `kubelet-client-current.pem` symlink (so rotation swaps
//! one link), and a kubeconfig that names that link. A failed join removes what it made.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::BootstrapError;

/// The symlink the kubeconfig names; it points at the newest certificate file.
pub const CURRENT: &str = "kubelet-client-current.pem";
const PREFIX: &str = "kubelet-client-";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `contents` to `path` with `mode` through a temp file, fsync, rename and a directory
/// fsync, so a crash leaves the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), BootstrapError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(io(path)(e));
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), BootstrapError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Store a certificate and its key as a new timestamped file and point `CURRENT` at it;
/// returns the new file and the one `CURRENT` pointed at before, if any.
pub fn store_pair(
    pki_dir: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(PathBuf, Option<PathBuf>), BootstrapError> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y-%m-%d-%H-%M-%S")
        .to_string();
    let mut file = pki_dir.join(format!("{PREFIX}{stamp}.pem"));
    let mut n = 1;
    while file.symlink_metadata().is_ok() {
        file = pki_dir.join(format!("{PREFIX}{stamp}-{n}.pem"));
        n += 1;
    }
    let mut contents = cert_pem.trim_end().to_owned();
    contents.push('\n');
    contents.push_str(key_pem.trim_end());
    contents.push('\n');
    write_atomic(&file, contents.as_bytes(), 0o600)?;
    let link = pki_dir.join(CURRENT);
    let previous = fs::read_link(&link).ok().map(|target| pki_dir.join(target));
    let temp = pki_dir.join(format!(".{CURRENT}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let target = file
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| file.clone());
    let swapped =
        std::os::unix::fs::symlink(&target, &temp).and_then(|()| fs::rename(&temp, &link));
    if let Err(e) = swapped {
        let _ = fs::remove_file(&temp);
        let _ = fs::remove_file(&file);
        return Err(io(&link)(e));
    }
    sync_dir(pki_dir)?;
    let previous = previous.filter(|p| *p != file);
    Ok((file, previous))
}

/// The kubeconfig of a joined node: the server, its CA inline, and the certificate link as
/// both client-certificate and client-key (the file holds both, like the kubelet's).
pub fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    current: &Path,
) -> Result<String, serde_yaml::Error> {
    let current = current.to_string_lossy();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "default-cluster",
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            },
        }],
        "contexts": [{
            "name": "default-context",
            "context": {"cluster": "default-cluster", "user": "default-auth", "namespace": "default"},
        }],
        "current-context": "default-context",
        "users": [{
            "name": "default-auth",
            "user": {"client-certificate": current, "client-key": current},
        }],
        "preferences": {},
    });
    serde_yaml::to_string(&config)
}

/// What a join wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFiles {
    /// The kubeconfig.
    pub kubeconfig: PathBuf,
    /// The `kubelet-client-current.pem` link.
    pub certificate: PathBuf,
    /// The timestamped file it points at.
    pub certificate_file: PathBuf,
}

/// Write the pki files and the kubeconfig; on any failure remove every file and directory
/// this call created, so a failed join leaves nothing behind.
pub fn write_join(
    kubeconfig: &Path,
    pki_dir: &Path,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<JoinFiles, BootstrapError> {
    let pki_dir = std::path::absolute(pki_dir).map_err(io(pki_dir))?;
    let mut created = Vec::new();
    let result = (|| {
        create_dirs(&pki_dir, 0o700, &mut created)?;
        let (file, _) = store_pair(&pki_dir, cert_pem, key_pem)?;
        created.push(file.clone());
        let link = pki_dir.join(CURRENT);
        created.push(link.clone());
        if let Some(parent) = kubeconfig.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dirs(parent, 0o755, &mut created)?;
        }
        let yaml = kubeconfig_yaml(server, ca_pem, &link)
            .map_err(|e| io(kubeconfig)(std::io::Error::other(e)))?;
        write_atomic(kubeconfig, yaml.as_bytes(), 0o600)?;
        Ok(JoinFiles {
            kubeconfig: kubeconfig.to_owned(),
            certificate: link,
            certificate_file: file,
        })
    })();
    if result.is_err() {
        for path in created.iter().rev() {
            let _ = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
        }
    }
    result
}

/// Create `dir` and its missing parents, recording each one made (outermost first).
fn create_dirs(dir: &Path, mode: u32, created: &mut Vec<PathBuf>) -> Result<(), BootstrapError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        DirBuilder::new().mode(mode).create(d).map_err(io(d))?;
        created.push(d.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn join_files_are_private_and_the_kubeconfig_names_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("etc/kubeconfig");
        let pki = dir.path().join("var/pki");
        let files = write_join(
            &kubeconfig,
            &pki,
            "https://127.0.0.1:6443",
            "CA\n",
            "CERT\n",
            "KEY\n",
        )
        .unwrap();
        assert_eq!(mode(&kubeconfig), 0o600);
        assert_eq!(mode(&files.certificate_file), 0o600);
        assert_eq!(mode(&pki), 0o700);
        assert_eq!(
            fs::read_to_string(&files.certificate).unwrap(),
            "CERT\nKEY\n"
        );
        let parsed = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        let link = files.certificate.to_string_lossy().into_owned();
        assert_eq!(user.client_certificate.as_deref(), Some(link.as_str()));
        assert_eq!(user.client_key.as_deref(), Some(link.as_str()));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            STANDARD
                .decode(cluster.certificate_authority_data.as_deref().unwrap())
                .unwrap(),
            b"CA\n"
        );
        // No temp files are left next to what was written.
        for d in [dir.path().join("etc"), pki] {
            for entry in fs::read_dir(d).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with('.'), "{name}");
            }
        }
    }

    #[test]
    fn failed_join_removes_everything_it_created() {
        let dir = tempfile::tempdir().unwrap();
        // The kubeconfig's directory is a file: writing the kubeconfig fails after the pki files.
        fs::write(dir.path().join("blocker"), "").unwrap();
        let kubeconfig = dir.path().join("blocker/kubeconfig");
        let err =
            write_join(&kubeconfig, &dir.path().join("a/pki"), "s", "CA", "C", "K").unwrap_err();
        assert!(matches!(err, BootstrapError::Io { .. }), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["blocker"]);
    }

    #[test]
    fn store_pair_swaps_the_link_and_reports_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let (first, none) = store_pair(dir.path(), "C1", "K1").unwrap();
        assert_eq!(none, None);
        let (second, previous) = store_pair(dir.path(), "C2", "K2").unwrap();
        assert_ne!(first, second);
        assert_eq!(previous, Some(first.clone()));
        assert_eq!(
            fs::read_to_string(dir.path().join(CURRENT)).unwrap(),
            "C2\nK2\n"
        );
        assert_eq!(fs::read_to_string(first).unwrap(), "C1\nK1\n");
    }

    #[test]
    fn write_atomic_replaces_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
    }
}
