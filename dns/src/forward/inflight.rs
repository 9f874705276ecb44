//! Deduplication of identical in-flight upstream queries: the first asker resolves, the
//! others wait for its result.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::watch;

/// The table of questions currently being resolved.
pub struct InFlight<K, V> {
    map: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

/// What a caller of [`InFlight::join`] must do.
pub enum Role<'a, K: Hash + Eq + Clone, V: Clone> {
    /// Resolve, then [`Leader::finish`].
    Leader(Leader<'a, K, V>),
    /// Wait on [`wait`] for the leader's result.
    Follower(watch::Receiver<Option<V>>),
}

/// The resolving caller; dropping it without finishing releases the followers with `None`.
pub struct Leader<'a, K: Hash + Eq + Clone, V: Clone> {
    table: &'a InFlight<K, V>,
    key: K,
    sender: watch::Sender<Option<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for InFlight<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> InFlight<K, V> {
    /// Becomes the leader for `key`, or a follower of the current leader.
    pub fn join(&self, key: &K) -> Role<'_, K, V> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (sender, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Role::Leader(Leader {
            table: self,
            key: key.clone(),
            sender,
        })
    }

    /// Number of questions in flight.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Leader<'_, K, V> {
    /// Publishes the result to the followers (the entry is removed on drop).
    pub fn finish(self, value: V) {
        self.sender.send_replace(Some(value));
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        self.table
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Waits for the leader's result; `None` if the leader went away without one.
pub async fn wait<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Option<V> {
    match rx.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_share_the_leaders_result() {
        let table: InFlight<&str, u32> = InFlight::default();
        let Role::Leader(leader) = table.join(&"q") else {
            panic!("first caller leads");
        };
        let Role::Follower(f1) = table.join(&"q") else {
            panic!("second caller follows");
        };
        let Role::Follower(f2) = table.join(&"q") else {
            panic!("third caller follows");
        };
        assert!(matches!(table.join(&"other"), Role::Leader(_)));
        let waiters = tokio::spawn(async move { (wait(f1).await, wait(f2).await) });
        leader.finish(7);
        assert_eq!(waiters.await.unwrap(), (Some(7), Some(7)));
        assert!(table.is_empty());
        assert!(
            matches!(table.join(&"q"), Role::Leader(_)),
            "next round leads again"
        );
    }

    #[tokio::test]
    async fn dropped_leader_releases_followers() {
        let table: InFlight<&str, u32> = InFlight::default();
        let leader = table.join(&"q");
        let Role::Follower(f) = table.join(&"q") else {
            panic!("follows");
        };
        drop(leader);
        assert_eq!(wait(f).await, None);
        assert!(table.is_empty());
    }
}
