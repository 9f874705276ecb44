//! The result cache: one JSON file per attachment under `<cacheDir>/results/`, holding
//! everything DEL and CHECK need (the configuration list used, the result, the arguments)
//! so they work after the configuration directory changed or the runtime restarted.
//! The layout follows libcni's `cniCacheV1`, so other CNI tools can read the entries.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::attachment::AttachmentRef;
use super::config::NetworkConfigList;
use super::error::NetworkError;

/// The entry format tag.
const KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheEntry {
    /// Format tag (`cniCacheV1`).
    pub kind: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The configuration list used for ADD, as base64 of its JSON.
    pub config: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The network's name.
    pub network_name: String,
    /// `CNI_NETNS` at ADD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// `CNI_ARGS` pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments offered at ADD.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    /// The chain's final ADD result, in the network's CNI version.
    #[serde(default)]
    pub result: Value,
}

impl CacheEntry {
    /// An entry for an attachment made with `list`.
    pub fn new(
        list: &NetworkConfigList,
        reference: &AttachmentRef,
        netns: &Path,
        cni_args: Vec<(String, String)>,
        capability_args: Map<String, Value>,
        result: Value,
    ) -> Self {
        let config = serde_json::to_vec(&list.to_json()).unwrap_or_default();
        Self {
            kind: KIND.to_owned(),
            container_id: reference.container_id.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(config),
            if_name: reference.ifname.clone(),
            network_name: list.name.clone(),
            netns: netns.to_string_lossy().into_owned(),
            cni_args,
            capability_args,
            result,
        }
    }

    /// The configuration list stored in the entry; `path` names the entry in errors.
    pub fn config_list(&self, path: &Path) -> Result<NetworkConfigList, NetworkError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.config)
            .map_err(|e| NetworkError::InvalidConfig {
                file: path.to_path_buf(),
                reason: format!("cached configuration is not base64: {e}"),
            })?;
        NetworkConfigList::parse(&bytes, path)
    }

    /// The attachment the entry describes.
    pub fn reference(&self) -> AttachmentRef {
        AttachmentRef {
            container_id: self.container_id.clone(),
            ifname: self.if_name.clone(),
        }
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub(crate) struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// The cache under `cache_dir` (entries live in its `results/`).
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("results"),
        }
    }

    /// Where the entry of `reference` on `network` lives.
    pub fn path(&self, network: &str, reference: &AttachmentRef) -> PathBuf {
        self.dir.join(format!(
            "{network}-{}-{}",
            reference.container_id, reference.ifname
        ))
    }

    /// Store an entry atomically and durably (temp file, fsync, rename, fsync of the dir),
    /// so a crash leaves either the old entry or the new one, never a torn file.
    pub fn write(&self, entry: &CacheEntry) -> Result<PathBuf, NetworkError> {
        let path = self.path(&entry.network_name, &entry.reference());
        let fail = |what: &str, e: std::io::Error| NetworkError::Cache {
            path: path.clone(),
            reason: format!("{what}: {e}"),
        };
        create_private_dir(&self.dir).map_err(|e| fail("creating the cache directory", e))?;
        let bytes = serde_json::to_vec(entry).map_err(|e| NetworkError::Cache {
            path: path.clone(),
            reason: format!("encoding: {e}"),
        })?;
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(|e| fail("creating a temporary file", e))?;
        temp.write_all(&bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| fail("writing", e))?;
        temp.persist(&path)
            .map_err(|e| fail("renaming into place", e.error))?;
        sync_dir(&self.dir).map_err(|e| fail("syncing the cache directory", e))?;
        Ok(path)
    }

    /// Remove an entry; a missing entry is not an error.
    pub fn remove(&self, path: &Path) -> Result<(), NetworkError> {
        match std::fs::remove_file(path) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| NetworkError::Cache {
                path: self.dir.clone(),
                reason: format!("syncing after removing {}: {e}", path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetworkError::Cache {
                path: path.to_path_buf(),
                reason: format!("removing: {e}"),
            }),
        }
    }

    /// Entries of `reference`, on any network.
    pub fn find(
        &self,
        reference: &AttachmentRef,
    ) -> Result<Vec<(PathBuf, CacheEntry)>, NetworkError> {
        let suffix = format!("-{}-{}", reference.container_id, reference.ifname);
        Ok(self
            .entries_named(|name| name.ends_with(&suffix))?
            .into_iter()
            .filter(|(_, e)| {
                e.container_id == reference.container_id && e.if_name == reference.ifname
            })
            .collect())
    }

    /// Entries of `network`.
    pub fn on_network(&self, network: &str) -> Result<Vec<(PathBuf, CacheEntry)>, NetworkError> {
        let prefix = format!("{network}-");
        Ok(self
            .entries_named(|name| name.starts_with(&prefix))?
            .into_iter()
            .filter(|(_, e)| e.network_name == network)
            .collect())
    }

    /// Readable entries whose file name passes `wanted`; unreadable ones are logged and
    /// skipped (an entry written by another tool must not block every operation).
    fn entries_named(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(PathBuf, CacheEntry)>, NetworkError> {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(NetworkError::Cache {
                    path: self.dir.clone(),
                    reason: format!("listing: {e}"),
                })
            }
        };
        let mut entries = Vec::new();
        for item in listing.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !wanted(name) {
                continue;
            }
            let path = item.path();
            match read_entry(&path) {
                Ok(entry) => entries.push((path, entry)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "unreadable CNI cache entry skipped");
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

fn read_entry(path: &Path) -> Result<CacheEntry, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if entry.kind != KIND {
        return Err(format!("unknown kind {:?}", entry.kind));
    }
    Ok(entry)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str) -> NetworkConfigList {
        NetworkConfigList::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"a"}}]}}"#)
                .as_bytes(),
            Path::new("t.conflist"),
        )
        .unwrap()
    }

    fn reference(id: &str) -> AttachmentRef {
        AttachmentRef {
            container_id: id.to_owned(),
            ifname: "eth0".to_owned(),
        }
    }

    #[test]
    fn entries_round_trip_and_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let net = list("net-a");
        let entry = CacheEntry::new(
            &net,
            &reference("c1"),
            Path::new("/run/netns/p"),
            vec![("K".into(), "V".into())],
            Map::new(),
            serde_json::json!({"cniVersion": "1.0.0"}),
        );
        let path = cache.write(&entry).unwrap();
        assert_eq!(path, dir.path().join("results/net-a-c1-eth0"));
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(raw["ifName"], "eth0");
        assert_eq!(raw["cniArgs"][0], serde_json::json!(["K", "V"]));

        // Another network's entry for another container, and a stray temp file.
        cache
            .write(&CacheEntry::new(
                &list("net-b"),
                &reference("c2"),
                Path::new("/x"),
                vec![],
                Map::new(),
                Value::Null,
            ))
            .unwrap();
        std::fs::write(dir.path().join("results/.tmp-junk"), "{").unwrap();
        std::fs::write(dir.path().join("results/net-a-bad-eth0"), "{").unwrap();

        let found = cache.find(&reference("c1")).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, entry);
        assert_eq!(
            found[0].1.config_list(&path).unwrap().to_json(),
            net.to_json()
        );
        let on_a = cache.on_network("net-a").unwrap();
        assert_eq!(on_a.len(), 1);
        assert_eq!(cache.on_network("net-b").unwrap()[0].1.container_id, "c2");

        cache.remove(&path).unwrap();
        cache.remove(&path).unwrap();
        assert!(cache.find(&reference("c1")).unwrap().is_empty());
    }
}
