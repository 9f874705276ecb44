//! Sandbox and container records: one JSON file per object (`<dir>/<id>/record.json`,
//! written atomically) with an in-memory index, so a restarted server sees what the last
//! one made.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::image::store::fsutil;

/// A record kept by a [`Table`].
pub trait Record: Clone + Serialize + DeserializeOwned {
    /// The object's ID (also its directory name).
    fn id(&self) -> &str;
}

/// Records of one kind.
#[derive(Debug)]
pub struct Table<T> {
    dir: PathBuf,
    tmp: PathBuf,
    index: Mutex<HashMap<String, T>>,
    /// Serialises lifecycle operations per object ID.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const RECORD_FILE: &str = "record.json";

impl<T: Record> Table<T> {
    /// Open the table at `dir`, loading every readable record. Unreadable ones are
    /// returned by ID so the caller can clean them up.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<String>)> {
        let tmp = dir.join(".tmp");
        fsutil::reset_dir(&tmp)?;
        let mut index = HashMap::new();
        let mut broken = Vec::new();
        for name in fsutil::list_names(dir)? {
            if name.starts_with('.') {
                continue;
            }
            let path = dir.join(&name).join(RECORD_FILE);
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<T>(&b).ok())
            {
                Some(record) if record.id() == name => {
                    index.insert(name, record);
                }
                _ => broken.push(name),
            }
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                tmp,
                index: Mutex::new(index),
                locks: Mutex::new(HashMap::new()),
            },
            broken,
        ))
    }

    fn index(&self) -> MutexGuard<'_, HashMap<String, T>> {
        // Records are replaced whole, so a poisoned lock still holds consistent data.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of an object (its record and whatever else it owns).
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Persist a record (create or replace), then index it.
    pub fn save(&self, record: &T) -> io::Result<()> {
        let dir = self.dir_of(record.id());
        std::fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        fsutil::write_atomic(&self.tmp, &dir.join(RECORD_FILE), &bytes)?;
        self.index().insert(record.id().to_owned(), record.clone());
        Ok(())
    }

    /// A record by ID.
    pub fn get(&self, id: &str) -> Option<T> {
        self.index().get(id).cloned()
    }

    /// Every record.
    pub fn all(&self) -> Vec<T> {
        self.index().values().cloned().collect()
    }

    /// Forget a record and delete its directory.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.index().remove(id);
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        fsutil::remove_tree(&self.dir_of(id))
    }

    /// The lock serialising lifecycle operations on one object.
    pub fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

/// Serde for prost messages as base64 protobuf: CRI configs are kept exactly as received.
pub mod proto_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize a message.
    pub fn serialize<M: prost::Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec()))
    }

    /// Deserialize a message.
    pub fn deserialize<'de, M: prost::Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

/// A new random 64-hex-digit object ID.
pub fn new_id() -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
    struct Thing {
        id: String,
        #[serde(with = "proto_base64")]
        config: k8s_cri::v1::PodSandboxMetadata,
    }
    impl Record for Thing {
        fn id(&self) -> &str {
            &self.id
        }
    }

    #[test]
    fn records_survive_reopen_and_broken_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (table, broken) = Table::<Thing>::open(dir.path()).unwrap();
        assert!(broken.is_empty());
        let thing = Thing {
            id: new_id(),
            config: k8s_cri::v1::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            },
        };
        table.save(&thing).unwrap();
        std::fs::create_dir(dir.path().join("garbage")).unwrap();
        std::fs::write(dir.path().join("garbage/record.json"), b"{nope").unwrap();
        let (table, broken) = Table::<Thing>::open(dir.path()).unwrap();
        assert_eq!(table.get(&thing.id), Some(thing.clone()));
        assert_eq!(broken, vec!["garbage".to_owned()]);
        table.remove(&thing.id).unwrap();
        assert!(table.get(&thing.id).is_none());
        assert!(!dir.path().join(&thing.id).exists());
    }
}
