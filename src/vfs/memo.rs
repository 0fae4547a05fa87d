//! Bounded memo tables of the mount: a map that forgets its oldest entries beyond a
//! fixed number, so caches keyed by what users browse (snapshot views, archive sizes,
//! errors already logged) never grow with the size of the datastore or the uptime.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use parking_lot::Mutex;

#[derive(Debug)]
pub struct Memo<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, V>,
    /// Insertion order, oldest first; each key of `map` once.
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Memo<K, V> {
        Memo {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        self.inner.lock().map.get(k).cloned()
    }

    /// Insert or replace; the oldest entries go when the table is full.
    pub fn insert(&self, k: K, v: V) {
        let mut g = self.inner.lock();
        if g.map.insert(k.clone(), v).is_none() {
            g.order.push_back(k);
            while g.order.len() > self.capacity {
                if let Some(old) = g.order.pop_front() {
                    g.map.remove(&old);
                }
            }
        }
    }

    /// Insert `k` if absent; true when it was absent (for "log once").
    pub fn first_time(&self, k: K, v: V) -> bool {
        if self.inner.lock().map.contains_key(&k) {
            return false;
        }
        self.insert(k, v);
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_never_holds_more_than_its_capacity_and_forgets_the_oldest() {
        let m = Memo::new(100);
        for i in 0..10_000u32 {
            m.insert(i, i * 2);
            assert!(m.len() <= 100);
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.get(&9_999), Some(19_998));
        assert_eq!(m.get(&9_900), Some(19_800));
        assert_eq!(m.get(&9_899), None);
        m.insert(9_999, 1);
        assert_eq!(m.get(&9_999), Some(1));
        assert_eq!(m.len(), 100);
        assert!(m.first_time(5, 0));
        assert!(!m.first_time(5, 0));
    }
}
