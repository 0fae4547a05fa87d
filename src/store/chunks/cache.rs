//! The shared cache of verified chunks: a bounded LRU (single-flight per digest, so two
//! readers of one chunk decode it once) and background readahead into it. Every buffer
//! in it passed `ChunkStore::read_verified_into`, and a hit is handed out only for the
//! length it was verified at, so no index can make a reader see more or fewer bytes than
//! the chunk holds. Buffers of evicted chunks are kept in a small pool and decoded into
//! again (chunk files are decoded as they are read, into no buffer of their own): with
//! the mount's malloc limits (blocks of 2 MiB and more are mmapped and returned when
//! freed) a fresh 4 MiB buffer costs 1,024 page faults and their zeroing, a recycled one
//! none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::store::chunks::ChunkStore;
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Result};

/// Chunks fetched ahead of a sequential reader, beyond the one it is in (fewer when the
/// cache cannot hold them all: see `IndexReader`). Measured on cold reads of a 1 GiB
/// image on 2 cores: 2 ahead on 2 threads (the old setting) 2.5-2.9 s, 4 on 4 threads
/// 1.8-2.6 s, 5 on 4 threads 1.7-1.9 s.
pub const READAHEAD_CHUNKS: usize = 5;
/// Threads that read, decode and verify chunks ahead of readers: enough to keep two
/// cores decoding while others wait for the disk (a chunk file is read synchronously).
const READAHEAD_THREADS: usize = 4;
const READAHEAD_QUEUE: usize = 16;
/// Free buffers kept for reuse (chunks being decoded take them; evicted chunks give
/// them back).
const POOL_BUFFERS: usize = 4;
/// Evicted chunks kept until their last reader lets go, to be pooled then. Readahead
/// evicts the chunk a sequential reader just finished, whose last READ may still be
/// being answered from it: without this, 46 of 256 chunk buffers of a cold 1 GiB read
/// were freed and allocated (and faulted in) again.
const RETIRED_BUFFERS: usize = 2;

/// The verified-chunk cache. Invariants: every cached buffer passed `read_verified_into`;
/// `bytes` is the sum of cached lengths and stays at most `capacity` (one chunk larger
/// than the capacity is returned but not kept); a digest is in `loading` while exactly
/// one thread reads it, and others wait for that thread instead of reading it again;
/// `reserved` is the length of the chunks being loaded to be kept, for which older ones
/// are evicted before the load, so their buffers are decoded into.
#[derive(Debug)]
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
    loaded: Condvar,
    capacity: u64,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<Digest, Entry>,
    /// Use tick -> digest, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: u64,
    loading: HashSet<Digest>,
    reserved: u64,
    /// Free buffers, any length (`len() == 0`), at most `POOL_BUFFERS`.
    pool: Vec<Vec<u8>>,
    /// Evicted chunks a reader still held (a READ being answered from one): pooled once
    /// the cache holds the last reference, at most `RETIRED_BUFFERS`.
    retired: Vec<Arc<Vec<u8>>>,
    /// Chunks read from disk (for tests and statistics).
    reads: u64,
    /// Reads answered from the cache, and reads that had to load their chunk.
    hits: u64,
    misses: u64,
    /// Buffers allocated because the pool had none large enough.
    allocated: u64,
}

#[derive(Debug)]
struct Entry {
    data: Arc<Vec<u8>>,
    tick: u64,
    /// Read ahead and not handed to a reader yet: evicted only when nothing else is left,
    /// and never to make room for more readahead.
    fresh: bool,
}

impl CacheInner {
    /// A hit, for a reader: the chunk becomes the most recently used.
    fn get(&mut self, d: &Digest) -> Option<Arc<Vec<u8>>> {
        let e = self.map.get_mut(d)?;
        self.tick += 1;
        self.order.remove(&e.tick);
        self.order.insert(self.tick, *d);
        e.tick = self.tick;
        e.fresh = false;
        Some(e.data.clone())
    }

    /// Drop the least recently used chunk a reader has had (else, unless `keep_fresh`,
    /// the oldest read ahead), its buffer to the pool unless a reader still holds it.
    /// False when there is none.
    fn evict_oldest(&mut self, keep_fresh: bool) -> bool {
        let victim = (self.order.iter())
            .find(|(_, d)| self.map.get(d).is_some_and(|e| !e.fresh))
            .or_else(|| self.order.iter().next().filter(|_| !keep_fresh))
            .map(|(t, d)| (*t, *d));
        let Some((tick, d)) = victim else {
            return false;
        };
        self.order.remove(&tick);
        if let Some(e) = self.map.remove(&d) {
            self.bytes -= e.data.len() as u64;
            match Arc::try_unwrap(e.data) {
                Ok(buf) => self.give(buf),
                Err(held) if self.retired.len() < RETIRED_BUFFERS => self.retired.push(held),
                Err(_) => {}
            }
        }
        true
    }

    fn insert(&mut self, d: Digest, data: Arc<Vec<u8>>, capacity: u64, fresh: bool) {
        let len = data.len() as u64;
        if len > capacity || self.map.contains_key(&d) {
            return;
        }
        while self.bytes + len > capacity && self.evict_oldest(false) {}
        self.tick += 1;
        self.order.insert(self.tick, d);
        self.map.insert(
            d,
            Entry {
                data,
                tick: self.tick,
                fresh,
            },
        );
        self.bytes += len;
    }

    /// A free buffer for decoding a chunk of `len` bytes (which takes one byte more: see
    /// `decode_read_into`): the smallest pooled one holding that without growing and not
    /// much larger (the cache counts a chunk's length, and the whole buffer is resident),
    /// else a new one.
    fn take(&mut self, len: usize) -> Vec<u8> {
        for held in std::mem::take(&mut self.retired) {
            match Arc::try_unwrap(held) {
                Ok(buf) => self.give(buf),
                Err(held) => self.retired.push(held),
            }
        }
        let want = len.saturating_add(1);
        let fits = |b: &Vec<u8>| (want..=want.saturating_add(want / 4)).contains(&b.capacity());
        let best = (self.pool.iter().enumerate())
            .filter(|(_, b)| fits(b))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => self.pool.remove(i),
            None => {
                // Pooled buffers that fit none of the chunks read now (a pxar archive's
                // chunks, then an image's) would hold the pool's slots for good, and
                // every later buffer would be a fresh one: the longest pooled gives way.
                if !self.pool.is_empty() {
                    self.pool.remove(0);
                }
                self.allocated += 1;
                Vec::with_capacity(want)
            }
        }
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0 && self.pool.len() < POOL_BUFFERS {
            buf.clear();
            self.pool.push(buf);
        }
    }
}

/// Removes a digest from `loading`, releases its reservation and wakes waiters, even if
/// the loader panics.
struct LoadingGuard<'a> {
    cache: &'a ChunkCache,
    digest: Digest,
    reserved: u64,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.cache.inner.lock();
        g.loading.remove(&self.digest);
        g.reserved -= self.reserved;
        drop(g);
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
                    return Err(super::chunk_corrupt(
                        digest,
                        &store.chunk_path(digest),
                        CorruptKind::Length {
                            actual: v.len() as u64,
                            expected: len,
                        },
                    ));
                }
                g.hits += 1;
                return Ok(v);
            }
            if !g.loading.contains(digest) {
                break;
            }
            self.loaded.wait(&mut g);
        }
        g.misses += 1;
        // Room for it now, so the evicted chunk's buffer is the one decoded into.
        let reserved = if len <= self.capacity {
            while g.bytes + g.reserved + len > self.capacity && g.evict_oldest(false) {}
            len
        } else {
            0
        };
        self.load(g, store, digest, len, reserved, false)
    }

    /// Read a chunk ahead of a reader, unless it is cached or being read already, or
    /// there is no room for it but what chunks read ahead and not read yet take.
    fn read_ahead(&self, store: &ChunkStore, digest: &Digest, len: u64) {
        let mut g = self.inner.lock();
        if g.map.contains_key(digest) || g.loading.contains(digest) || len > self.capacity {
            return;
        }
        while g.bytes + g.reserved + len > self.capacity {
            if !g.evict_oldest(true) {
                return;
            }
        }
        let _ = self.load(g, store, digest, len, len, true);
    }

    /// Read a chunk that is neither cached nor being read (`g` locked), `reserved` bytes
    /// of the capacity kept for it while it is read.
    fn load(
        &self,
        mut g: parking_lot::MutexGuard<'_, CacheInner>,
        store: &ChunkStore,
        digest: &Digest,
        len: u64,
        reserved: u64,
        fresh: bool,
    ) -> Result<Arc<Vec<u8>>> {
        g.loading.insert(*digest);
        g.reads += 1;
        g.reserved += reserved;
        let out = g.take(usize::try_from(len).unwrap_or(0));
        drop(g);
        let guard = LoadingGuard {
            cache: self,
            digest: *digest,
            reserved,
        };
        let res = store
            .read_verified_into(digest, Some(len), out)
            .map(Arc::new);
        let mut g = self.inner.lock();
        if let Ok(data) = &res {
            g.insert(*digest, data.clone(), self.capacity, fresh);
        }
        drop(g);
        drop(guard);
        res
    }

    fn is_known(&self, digest: &Digest) -> bool {
        let g = self.inner.lock();
        g.map.contains_key(digest) || g.loading.contains(digest)
    }

    /// The most bytes of chunks it keeps.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Chunks read from disk (and verified) so far, read ahead or not.
    pub fn disk_reads(&self) -> u64 {
        self.inner.lock().reads
    }

    /// Reads answered from the cache (a chunk being loaded counts when it arrives).
    pub fn hits(&self) -> u64 {
        self.inner.lock().hits
    }

    /// Reads that had to load their chunk themselves (readahead was not ahead).
    pub fn misses(&self) -> u64 {
        self.inner.lock().misses
    }

    pub fn cached_bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// Buffers allocated so far (the others were recycled).
    pub fn buffers_allocated(&self) -> u64 {
        self.inner.lock().allocated
    }

    /// Bytes of the free buffers kept for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        let g = self.inner.lock();
        g.pool.iter().map(|b| b.capacity() as u64).sum()
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
                    cache.read_ahead(&store, &digest, len);
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
    use crate::util::error::Error;

    #[test]
    fn lru_evicts_oldest_and_respects_capacity() {
        let mut c = CacheInner::default();
        let d = |n: u8| Digest::of(&[n]);
        c.insert(d(1), Arc::new(vec![0; 40]), 100, false);
        c.insert(d(2), Arc::new(vec![0; 40]), 100, false);
        assert!(c.get(&d(1)).is_some()); // 1 is now the newest
        c.insert(d(3), Arc::new(vec![0; 40]), 100, false);
        assert!(c.get(&d(2)).is_none());
        assert!(c.get(&d(1)).is_some() && c.get(&d(3)).is_some());
        assert_eq!(c.bytes, 80);
        c.insert(d(4), Arc::new(vec![0; 400]), 100, false);
        assert!(c.get(&d(4)).is_none());
        assert_eq!(c.bytes, 80);
    }

    /// Buffers too small for the chunks read now give way: after one allocation per
    /// small buffer at most, the large chunks' buffers are recycled.
    #[test]
    fn pooled_buffers_too_small_give_way_to_the_sizes_read_now() {
        let mut c = CacheInner::default();
        for _ in 0..POOL_BUFFERS {
            c.give(Vec::with_capacity(100));
        }
        for _ in 0..2 * POOL_BUFFERS {
            let a = c.take(10_000);
            let b = c.take(10_000);
            assert!(a.capacity() >= 10_000 && b.capacity() >= 10_000);
            c.give(a);
            c.give(b);
        }
        assert_eq!(c.allocated, 2, "two buffers, then recycled");
        assert_eq!(c.pool.len(), POOL_BUFFERS);
        assert_eq!(c.pool.iter().filter(|b| b.capacity() < 10_000).count(), 2);
    }

    /// A pooled buffer much larger than the chunk is not decoded into: the cache counts
    /// the chunk's length, but all of a once-filled buffer stays resident (a pxar
    /// archive's 16 MiB chunk, then an image's 4 MiB ones). Such buffers give way too.
    #[test]
    fn pooled_buffers_much_larger_are_not_used_for_smaller_chunks() {
        let mut c = CacheInner::default();
        for _ in 0..POOL_BUFFERS {
            c.give(Vec::with_capacity(40_000));
        }
        for _ in 0..2 * POOL_BUFFERS {
            let a = c.take(10_000);
            let b = c.take(10_000);
            assert!(
                (10_001..=12_501).contains(&a.capacity()),
                "{}",
                a.capacity()
            );
            assert!(
                (10_001..=12_501).contains(&b.capacity()),
                "{}",
                b.capacity()
            );
            c.give(a);
            c.give(b);
        }
        assert_eq!(c.allocated, 2, "two buffers, then recycled");
        // One a fifth larger than needed still serves.
        let mut c = CacheInner::default();
        c.give(Vec::with_capacity(12_000));
        assert_eq!(c.take(10_000).capacity(), 12_000);
        assert_eq!(c.allocated, 0);
    }

    fn temp_store(tag: &str) -> (std::path::PathBuf, ChunkStore) {
        let root = std::env::temp_dir().join(format!(
            "pbsfs-{tag}-{}",
            crate::store::files::random_suffix(8)
        ));
        std::fs::create_dir_all(&root).unwrap();
        let owner = crate::store::files::Owner::of(&root).unwrap();
        let store = ChunkStore::create(&root, owner, false).unwrap();
        (root, store)
    }

    /// Chunks of `len` bytes, distinct and compressible (zstd path).
    fn chunks(store: &ChunkStore, n: u8, len: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..len).map(|j| (j / 1000) as u8 ^ i).collect();
                store.insert_plain(&data).unwrap().0
            })
            .collect()
    }

    #[test]
    fn evicted_chunks_buffers_are_reused_with_the_right_content() {
        let (root, store) = temp_store("pool");
        const LEN: usize = 300_000;
        let d = chunks(&store, 4, LEN);
        let cache = ChunkCache::new(2 * LEN as u64);
        for want in &d[..2] {
            cache.get(&store, want, LEN as u64).unwrap();
        }
        // Two chunks cached; chunk files are decoded as read, into no buffer of the pool.
        let warm = cache.buffers_allocated();
        assert_eq!(warm, 2);
        assert_eq!(cache.pooled_bytes(), 0);
        // Every further miss evicts a chunk first and decodes into its buffer.
        for round in 0..3 {
            for (i, want) in d.iter().enumerate() {
                let got = cache.get(&store, want, LEN as u64).unwrap();
                assert_eq!(got.len(), LEN);
                assert_eq!(Digest::of(&got), *want, "round {round}, chunk {i}");
            }
        }
        assert_eq!(
            cache.disk_reads(),
            2 + 2 + 4 + 4,
            "the first two hit in round 0"
        );
        assert_eq!(
            cache.buffers_allocated(),
            warm,
            "no buffer allocated after warm-up"
        );
        assert_eq!(cache.cached_bytes(), 2 * LEN as u64);
        assert!(cache.pooled_bytes() <= (POOL_BUFFERS * (LEN + 64)) as u64);
        // A chunk held by a reader is not recycled when evicted: it stays intact, and
        // is recycled once the reader lets go.
        let held = cache.get(&store, &d[0], LEN as u64).unwrap();
        for want in &d[1..] {
            cache.get(&store, want, LEN as u64).unwrap();
        }
        assert_eq!(Digest::of(&held), d[0]);
        drop(held);
        for want in &d {
            let got = cache.get(&store, want, LEN as u64).unwrap();
            assert_eq!(Digest::of(&got), *want);
        }
        assert_eq!(
            cache.buffers_allocated(),
            warm + 1,
            "one replaces the held chunk's, which then joins the pool"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn readahead_never_evicts_chunks_not_read_yet() {
        let (root, store) = temp_store("ahead");
        const LEN: usize = 1000;
        let d = chunks(&store, 3, LEN);
        let cache = ChunkCache::new(2 * LEN as u64);
        cache.read_ahead(&store, &d[0], LEN as u64);
        cache.read_ahead(&store, &d[1], LEN as u64);
        assert_eq!(cache.disk_reads(), 2);
        // Full of chunks no reader has had: no room for more readahead.
        cache.read_ahead(&store, &d[2], LEN as u64);
        assert_eq!(cache.disk_reads(), 2);
        // Once one was read, it gives way.
        cache.get(&store, &d[0], LEN as u64).unwrap();
        cache.read_ahead(&store, &d[2], LEN as u64);
        assert_eq!(cache.disk_reads(), 3);
        cache.get(&store, &d[1], LEN as u64).unwrap();
        cache.get(&store, &d[2], LEN as u64).unwrap();
        assert_eq!(cache.disk_reads(), 3, "both read ahead were kept");
        // A reader's miss evicts what it must, read ahead or not.
        let (root2, store2) = temp_store("ahead2");
        let e = chunks(&store2, 3, LEN);
        let small = ChunkCache::new(2 * LEN as u64);
        small.read_ahead(&store2, &e[0], LEN as u64);
        small.read_ahead(&store2, &e[1], LEN as u64);
        assert_eq!(
            Digest::of(&small.get(&store2, &e[2], LEN as u64).unwrap()),
            e[2]
        );
        assert_eq!(small.cached_bytes(), 2 * LEN as u64);
        std::fs::remove_dir_all(root).unwrap();
        std::fs::remove_dir_all(root2).unwrap();
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
