//! A map that remembers which entry was used least recently: the sink keeps its open output
//! files in one, so the number of descriptors is bounded however many sources a fleet has.
//!
//! Invariant: `order` holds exactly one tick per entry, and an entry's tick is the highest
//! handed out when it was last inserted or touched; the smallest tick is the eviction candidate.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries keyed by `K`, ordered by last use.
#[derive(Debug)]
pub struct Lru<K, V> {
    entries: HashMap<K, (u64, V)>,
    order: BTreeMap<u64, K>,
    /// Incremented on every use; never reused, so ticks order the uses.
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is held, without counting as a use.
    #[cfg(test)]
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// The entry of `key`, without counting as a use.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|(_, value)| value)
    }

    /// The entry of `key`, which becomes the most recently used.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.tick += 1;
        let tick = self.tick;
        let (used, value) = self.entries.get_mut(key)?;
        if let Some(owned) = self.order.remove(used) {
            self.order.insert(tick, owned);
        }
        *used = tick;
        Some(value)
    }

    /// Inserts `value` as the most recently used; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.tick += 1;
        let old = self.entries.insert(key.clone(), (self.tick, value));
        if let Some((used, _)) = &old {
            self.order.remove(used);
        }
        self.order.insert(self.tick, key);
        old.map(|(_, value)| value)
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.order.pop_first()?;
        let (_, value) = self.entries.remove(&key)?;
        Some((key, value))
    }

    /// Removes the entry of `key`, if held.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (used, value) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut lru = Lru::default();
        for key in ["a", "b", "c"] {
            lru.insert(key.to_string(), key.len());
        }
        assert!(lru.get_mut("a").is_some());
        assert_eq!(lru.pop_oldest().map(|(k, _)| k).as_deref(), Some("b"));
        assert_eq!(lru.pop_oldest().map(|(k, _)| k).as_deref(), Some("c"));
        assert_eq!(lru.pop_oldest().map(|(k, _)| k).as_deref(), Some("a"));
        assert!(lru.pop_oldest().is_none() && lru.is_empty());
    }

    #[test]
    fn reinserting_replaces_and_counts_as_a_use() {
        let mut lru = Lru::default();
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.insert("a", 3), Some(1));
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.pop_oldest(), Some(("b", 2)));
        assert_eq!(lru.pop_oldest(), Some(("a", 3)));
    }

    #[test]
    fn a_miss_changes_nothing_and_clear_empties() {
        let mut lru = Lru::default();
        lru.insert(1, "one");
        lru.insert(2, "two");
        assert!(lru.get_mut(&3).is_none());
        assert!(lru.contains(&1) && !lru.contains(&3));
        assert_eq!(lru.pop_oldest(), Some((1, "one")));
        lru.clear();
        assert!(lru.is_empty() && lru.pop_oldest().is_none());
    }

    #[test]
    fn order_and_entries_stay_in_step_under_random_use() {
        let mut lru = Lru::default();
        let mut model: Vec<u32> = Vec::new(); // oldest first
        for _ in 0..10_000 {
            let key = fastrand::u32(0..50);
            match fastrand::u8(0..3) {
                0 => {
                    lru.insert(key, key);
                    model.retain(|&k| k != key);
                    model.push(key);
                }
                1 => {
                    if lru.get_mut(&key).is_some() {
                        model.retain(|&k| k != key);
                        model.push(key);
                    }
                }
                _ => {
                    let expected = (!model.is_empty()).then(|| model.remove(0));
                    assert_eq!(lru.pop_oldest().map(|(k, _)| k), expected);
                }
            }
            assert_eq!(lru.len(), model.len());
            assert_eq!(lru.order.len(), model.len());
        }
    }
}
