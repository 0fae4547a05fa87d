//! Reading archives: offset -> chunk through the index, a bounded LRU of verified chunks
//! shared by every handle (single-flight per digest), sequential readahead on background
//! threads, and decoded blobs. `ChunkStore::read_verified` is the only source of bytes:
//! nothing unverified is returned or cached, and a request touching a bad chunk fails
//! whole (a short read would shrink the file in the kernel's eyes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::store::format::blob;
use crate::store::format::index::Index;
use crate::store::format::names::BackupDir;
use crate::store::lock::SnapshotLock;
use crate::store::Datastore;
use crate::util::digest::Digest;
use crate::util::error::{Error, IoContext, Result};

use super::Vfs;

/// Chunks fetched ahead of a sequential reader, beyond the one it is in.
const READAHEAD_CHUNKS: usize = 2;
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

    /// The verified content of a chunk, from the cache or read (once) from the store.
    pub fn get(&self, ds: &Datastore, digest: &Digest, len: u64) -> Result<Arc<Vec<u8>>> {
        let mut g = self.inner.lock();
        loop {
            if let Some(v) = g.get(digest) {
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
        let res = ds
            .chunk_store()
            .read_verified(digest, Some(len))
            .map(Arc::new);
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

type Job = (Arc<Datastore>, Arc<ChunkCache>, Digest, u64);

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
                    let Ok((ds, cache, digest, len)) = job else {
                        return;
                    };
                    let _ = cache.get(&ds, &digest, len);
                });
            if let Err(e) = spawned {
                log::warn!("no readahead thread: {e}");
            }
        }
        Prefetcher { tx }
    }

    fn queue(&self, job: Job) {
        let _ = self.tx.try_send(job);
    }
}

impl Default for Prefetcher {
    fn default() -> Self {
        Prefetcher::new()
    }
}

/// What an open archive reads from.
#[derive(Debug)]
pub enum Content {
    Index(Index),
    Blob(Vec<u8>),
}

/// An open archive file: its content source and the shared snapshot lock that keeps
/// prune and forget away while it is open.
#[derive(Debug)]
pub struct ArchiveHandle {
    pub dir: BackupDir,
    pub file: String,
    pub content: Content,
    /// Where the previous read ended: a read starting there is sequential.
    last_end: AtomicU64,
    _lock: SnapshotLock,
}

impl Vfs {
    /// Open an archive: lock the snapshot shared, load and check its index or blob
    /// against the manifest.
    pub(super) fn open_archive(&self, dir: &BackupDir, file: &str) -> Result<ArchiveHandle> {
        let lock = self.ds.locker().lock_snapshot(dir, false)?;
        let path = self.ds.snapshot_path(dir).join(file);
        let listed = self
            .snap_view(dir)
            .ok()
            .and_then(|v| v.manifest.as_ref().ok().and_then(|m| m.0.file(file)));
        let what = format!("{dir}/{file}");
        let content = if file.ends_with(".blob") {
            let raw = fs::read(&path).ctx(path.display())?;
            if let Some(entry) = &listed {
                if Digest::of(&raw) != entry.csum {
                    return Err(Error::Corrupt(format!(
                        "{what}: checksum differs from the manifest's"
                    )));
                }
            }
            Content::Blob(blob::decode(&raw).map_err(|e| e.context(&what))?)
        } else {
            let idx = Index::open(&path)?;
            if let Some(entry) = &listed {
                if idx.csum() != entry.csum || idx.size() != entry.size {
                    return Err(Error::Corrupt(format!(
                        "{what}: index checksum or size differs from the manifest's"
                    )));
                }
            }
            Content::Index(idx)
        };
        Ok(ArchiveHandle {
            dir: dir.clone(),
            file: file.to_string(),
            content,
            last_end: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The size shown for an archive (decoded blob size, image or stream length).
    pub(super) fn archive_size(
        &self,
        node: &super::node::Node,
        dir: &BackupDir,
        file: &str,
        md: &fs::Metadata,
    ) -> Result<u64> {
        if let Some(s) = self.sizes.lock().get(node) {
            return Ok(*s);
        }
        let path = self.ds.snapshot_path(dir).join(file);
        let listed = self
            .snap_view(dir)
            .ok()
            .and_then(|v| v.manifest.as_ref().ok().and_then(|m| m.0.file(file)));
        let size = if file.ends_with(".blob") {
            match fs::read(&path)
                .ctx(path.display())
                .and_then(|raw| blob::decode(&raw))
            {
                Ok(data) => data.len() as u64,
                Err(e) => {
                    self.log_once(&path.display().to_string(), &e);
                    md.len()
                }
            }
        } else if let Some(entry) = listed {
            entry.size
        } else {
            Index::open(&path)?.size()
        };
        self.sizes.lock().insert(node.clone(), size);
        Ok(size)
    }

    /// `size` bytes at `offset` (fewer only at the end of the file).
    pub(super) fn read_archive(
        &self,
        h: &ArchiveHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        let idx = match &h.content {
            Content::Blob(data) => {
                let start = (offset as usize).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                return Ok(data[start..end].to_vec());
            }
            Content::Index(idx) => idx,
        };
        let total = idx.size();
        if offset >= total {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(size as u64).min(total);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        let mut last_chunk = 0;
        while pos < end {
            let (i, in_chunk) = idx.locate(pos).ok_or_else(|| {
                Error::Corrupt(format!(
                    "{}/{}: offset {pos} not in the index",
                    h.dir, h.file
                ))
            })?;
            let info = idx.chunk_info(i).ok_or_else(|| {
                Error::Corrupt(format!("{}/{}: chunk {i} missing", h.dir, h.file))
            })?;
            let data = self
                .cache
                .get(&self.ds, &info.digest, info.len())
                .map_err(|e| {
                    let e = e.context(format!("{}/{}", h.dir, h.file));
                    self.log_once(&info.digest.to_hex(), &e);
                    e
                })?;
            let from = in_chunk as usize;
            let n = ((end - pos) as usize).min(data.len() - from);
            out.extend_from_slice(&data[from..from + n]);
            pos += n as u64;
            last_chunk = i;
        }
        let sequential = h.last_end.swap(end, Ordering::Relaxed) == offset;
        if sequential {
            for i in last_chunk + 1..=last_chunk + READAHEAD_CHUNKS {
                let Some(info) = idx.chunk_info(i) else {
                    break;
                };
                if !self.cache.is_known(&info.digest) {
                    self.prefetch.queue((
                        self.ds.clone(),
                        self.cache.clone(),
                        info.digest,
                        info.len(),
                    ));
                }
            }
        }
        Ok(out)
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
}
