//! The shared cache of verified chunks: a bounded LRU (single-flight per digest, so two
//! readers of one chunk decode it once) and background readahead into it. Every buffer
//! in it passed `ChunkStore::read_verified`, and a hit is handed out only for the length
//! it was verified at, so no index can make a reader see more or fewer bytes than the
//! chunk holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::store::chunks::ChunkStore;
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, Result};

/// Chunks fetched ahead of a sequential reader, beyond the one it is in.
pub const READAHEAD_CHUNKS: usize = 2;
const READAHEAD_THREADS: usize = 2;
const READAHEAD_QUEUE: usize = 16;

/// The verified-chunk cache. Invariants: every cached buffer passed `read_verified`;
/// `bytes` is the sum of cached lengths and stays at most `capacity` (one chunk larger
/// than the capacity is returned but not kept); a digest is in `loading` while exactly
/// one thread reads it, and others wait for that thread instead of reading it again.
#[derive(Debug)]
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
    loaded: Condvar,
    capacity: u64,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<Digest, (Arc<Vec<u8>>, u64)>,
    /// Use tick -> digest, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: u64,
    loading: HashSet<Digest>,
    /// Chunks read from disk (for tests and statistics).
    reads: u64,
}

impl CacheInner {
    fn get(&mut self, d: &Digest) -> Option<Arc<Vec<u8>>> {
        let (data, old) = self.map.get(d).map(|(v, t)| (v.clone(), *t))?;
        self.tick += 1;
        self.order.remove(&old);
        self.order.insert(self.tick, *d);
        self.map.get_mut(d).expect("present").1 = self.tick;
        Some(data)
    }

    fn insert(&mut self, d: Digest, data: Arc<Vec<u8>>, capacity: u64) {
        let len = data.len() as u64;
        if len > capacity || self.map.contains_key(&d) {
            return;
        }
        while self.bytes + len > capacity {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((v, _)) = self.map.remove(&old) {
                self.bytes -= v.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, d);
        self.map.insert(d, (data, self.tick));
        self.bytes += len;
    }
}

/// Removes a digest from `loading` and wakes waiters, even if the loader panics.
struct LoadingGuard<'a> {
    cache: &'a ChunkCache,
    digest: Digest,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        self.cache.inner.lock().loading.remove(&self.digest);
        self.cache.loaded.notify_all();
    }
}

impl ChunkCache {
    pub fn new(capacity: u64) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(CacheInner::default()),
            loaded: Condvar::new(),
            capacity,
        }
    }

    /// The verified content of a chunk of `len` bytes, from the cache or read (once)
    /// from the store. A cached chunk of another length is an error, as on disk.
    pub fn get(&self, store: &ChunkStore, digest: &Digest, len: u64) -> Result<Arc<Vec<u8>>> {
        let mut g = self.inner.lock();
        loop {
            if let Some(v) = g.get(digest) {
                if v.len() as u64 != len {
                    return Err(Error::ChunkCorrupt {
                        digest: *digest,
                        path: store.chunk_path(digest),
                        why: CorruptKind::Length {
                            actual: v.len() as u64,
                            expected: len,
                        },
                    });
                }
                return Ok(v);
            }
            if !g.loading.contains(digest) {
                break;
            }
            self.loaded.wait(&mut g);
        }
        g.loading.insert(*digest);
        g.reads += 1;
        drop(g);
        let guard = LoadingGuard {
            cache: self,
            digest: *digest,
        };
        let res = store.read_verified(digest, Some(len)).map(Arc::new);
        if let Ok(data) = &res {
            self.inner
                .lock()
                .insert(*digest, data.clone(), self.capacity);
        }
        drop(guard);
        res
    }

    fn is_known(&self, digest: &Digest) -> bool {
        let g = self.inner.lock();
        g.map.contains_key(digest) || g.loading.contains(digest)
    }

    /// Chunks read from disk so far.
    pub fn disk_reads(&self) -> u64 {
        self.inner.lock().reads
    }

    pub fn cached_bytes(&self) -> u64 {
        self.inner.lock().bytes
    }
}

type Job = (ChunkStore, Arc<ChunkCache>, Digest, u64);

/// Background readahead: a bounded queue served by a few threads. Jobs that do not fit
/// are dropped (readahead is a hint); errors are left to the read that needs the chunk.
#[derive(Debug)]
pub struct Prefetcher {
    tx: SyncSender<Job>,
}

impl Prefetcher {
    pub fn new() -> Prefetcher {
        let (tx, rx) = mpsc::sync_channel::<Job>(READAHEAD_QUEUE);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..READAHEAD_THREADS {
            let rx: Arc<std::sync::Mutex<Receiver<Job>>> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pbsfs-readahead-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((store, cache, digest, len)) = job else {
                        return;
                    };
                    let _ = cache.get(&store, &digest, len);
                });
            if let Err(e) = spawned {
                log::warn!("no readahead thread: {e}");
            }
        }
        Prefetcher { tx }
    }

    /// Read `digest` into `cache` in the background, if the queue has room.
    pub fn queue(&self, store: &ChunkStore, cache: &Arc<ChunkCache>, digest: Digest, len: u64) {
        if !cache.is_known(&digest) {
            let _ = self
                .tx
                .try_send((store.clone(), cache.clone(), digest, len));
        }
    }
}

impl Default for Prefetcher {
    fn default() -> Self {
        Prefetcher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_oldest_and_respects_capacity() {
        let mut c = CacheInner::default();
        let d = |n: u8| Digest::of(&[n]);
        c.insert(d(1), Arc::new(vec![0; 40]), 100);
        c.insert(d(2), Arc::new(vec![0; 40]), 100);
        assert!(c.get(&d(1)).is_some()); // 1 is now the newest
        c.insert(d(3), Arc::new(vec![0; 40]), 100);
        assert!(c.get(&d(2)).is_none());
        assert!(c.get(&d(1)).is_some() && c.get(&d(3)).is_some());
        assert_eq!(c.bytes, 80);
        c.insert(d(4), Arc::new(vec![0; 400]), 100);
        assert!(c.get(&d(4)).is_none());
        assert_eq!(c.bytes, 80);
    }

    #[test]
    fn a_cache_hit_is_checked_against_the_length_asked_for() {
        let root = std::env::temp_dir().join(format!(
            "pbsfs-cache-{}",
            crate::store::files::random_suffix(8)
        ));
        std::fs::create_dir_all(&root).unwrap();
        let owner = crate::store::files::Owner::of(&root).unwrap();
        let store = ChunkStore::create(&root, owner, false).unwrap();
        let (d, _, _) = store.insert_plain(&[7u8; 100]).unwrap();
        let cache = ChunkCache::new(1 << 20);
        assert_eq!(cache.get(&store, &d, 100).unwrap().len(), 100);
        assert_eq!(cache.disk_reads(), 1);
        for claimed in [0, 99, 101, 1 << 20] {
            let e = cache.get(&store, &d, claimed).unwrap_err();
            assert!(matches!(
                e,
                Error::ChunkCorrupt { why: CorruptKind::Length { actual: 100, expected }, .. }
                    if expected == claimed
            ));
        }
        assert_eq!(cache.disk_reads(), 1, "answered from the cache");
        std::fs::remove_dir_all(root).unwrap();
    }
}
