//! Per-key async locks, so concurrent pulls of one layer do the work once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Locks created on demand per key and dropped when nobody holds them.
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// The lock for `key`.
    pub fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, weak| weak.strong_count() > 0);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_lock_until_dropped() {
        let locks = KeyedLocks::default();
        let a = locks.get("k");
        assert!(Arc::ptr_eq(&a, &locks.get("k")));
        assert!(!Arc::ptr_eq(&a, &locks.get("other")));
        drop(a);
        let _b = locks.get("b");
        let keys: Vec<String> = locks.locks.lock().unwrap().keys().cloned().collect();
        assert_eq!(keys, vec!["b".to_string()], "unused locks are dropped");
    }
}
