//! Bounded memo tables of the mount: a map that forgets entries beyond a fixed number,
//! so caches keyed by what users browse (snapshot views, group listings, archive sizes,
//! errors already logged) never grow with the size of the datastore or the uptime.
//! Eviction is CLOCK (second chance): the oldest entry not read since it last came
//! round goes, so what a listing keeps using stays while one-off entries pass through.

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
    /// Each value with its "read since it last came round" bit.
    map: HashMap<K, (V, bool)>,
    /// The clock: keys oldest first; every key of `map` at least once (removed keys may
    /// linger until they come round).
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
        self.inner.lock().map.get_mut(k).map(|(v, used)| {
            *used = true;
            v.clone()
        })
    }

    /// Insert or replace; when the table is full, the oldest entry not read since it
    /// last came round goes.
    pub fn insert(&self, k: K, v: V) {
        let mut g = self.inner.lock();
        if let Some(slot) = g.map.get_mut(&k) {
            *slot = (v, true);
            return;
        }
        while g.map.len() >= self.capacity {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            match g.map.get_mut(&old) {
                Some((_, used)) if *used => {
                    *used = false;
                    g.order.push_back(old);
                }
                Some(_) => {
                    g.map.remove(&old);
                }
                None => {}
            }
        }
        g.map.insert(k.clone(), (v, false));
        g.order.push_back(k);
        // Keys removed by `remove` linger in the clock: drop them before it outgrows
        // the table.
        if g.order.len() > 2 * self.capacity {
            let Inner { map, order } = &mut *g;
            let mut seen = std::collections::HashSet::new();
            order.retain(|k| map.contains_key(k) && seen.insert(k.clone()));
        }
    }

    /// Forget `k` (its source changed).
    pub fn remove(&self, k: &K) {
        self.inner.lock().map.remove(k);
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

    #[test]
    fn entries_in_use_survive_a_stream_of_new_ones() {
        let m = Memo::new(10);
        m.insert(-1, 0);
        for i in 0..1_000 {
            assert_eq!(m.get(&-1), Some(0), "at {i}");
            m.insert(i, i);
            assert!(m.len() <= 10);
        }
        for i in 0..100 {
            m.remove(&-1);
            m.insert(-1, i);
        }
        assert!(m.inner.lock().order.len() <= 20);
        assert_eq!(m.get(&-1), Some(99));
    }
}
