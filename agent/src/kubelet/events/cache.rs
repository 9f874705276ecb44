//! A bounded map that forgets the least recently used key, like the groupcache LRU that
//! client-go's event correlator keeps its state in.

use std::collections::HashMap;

/// At most `capacity` entries; touching an entry makes it the most recent.
#[derive(Debug)]
pub struct Lru<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
}

impl<V> Lru<V> {
    /// An empty cache holding up to `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The entry for `key`, marked as just used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(used, value)| {
            *used = tick;
            value
        })
    }

    /// Insert or replace `key`, evicting the least recently used entry when full.
    pub fn put(&mut self, key: String, value: V) {
        self.tick += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (self.tick, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.put("a".into(), 1);
        lru.put("b".into(), 2);
        assert_eq!(lru.get_mut("a"), Some(&mut 1));
        lru.put("c".into(), 3);
        assert_eq!(lru.get_mut("b"), None);
        assert_eq!(lru.get_mut("a"), Some(&mut 1));
        assert_eq!(lru.get_mut("c"), Some(&mut 3));
        lru.put("c".into(), 4);
        assert_eq!(lru.get_mut("c"), Some(&mut 4));
    }
}
