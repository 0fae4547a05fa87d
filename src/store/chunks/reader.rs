//! Reading archives: `IndexReader`, the one random-access reader over an index that
//! `cat`, the mount, restore and the pxar decoder use (offset -> chunk through the index,
//! chunks through the shared verified cache, optional readahead), and `open_archive`,
//! which checks an index or blob against the snapshot's manifest before anything is read.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::store::chunks::cache::{ChunkCache, Prefetcher, READAHEAD_CHUNKS};
use crate::store::chunks::ChunkStore;
use crate::store::format::archive::{ArchiveKind, ArchiveName, Storage};
use crate::store::format::blob;
use crate::store::format::index::Index;
use crate::store::format::manifest::Manifest;
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::error::{CorruptKind, Error, IoContext, Result};
use crate::util::ReadAt;

/// Random access to the bytes an index describes. Every byte handed out comes from a
/// chunk that passed `read_verified` at the length the index gives for it.
#[derive(Debug)]
pub struct IndexReader {
    index: Index,
    store: ChunkStore,
    cache: Arc<ChunkCache>,
    /// The archive, for errors (`vm/100/2024-05-02T08:11:33Z/drive-scsi0.img.fidx`).
    what: String,
    readahead: Option<Arc<Prefetcher>>,
    /// Where the previous read ended (`NOT_READ` before the first): a read starting near
    /// there is sequential.
    last_end: AtomicU64,
}

/// `last_end` of a reader that has served no read yet.
const NOT_READ: u64 = u64::MAX;
/// How far past the previous read's end a read still counts as sequential: a READ the
/// kernel sent before the one just before it (up to 1 MiB each) arrived first.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// Bytes read: a range of a cached, verified chunk (shared, not copied), or a copy of a
/// range that spans chunks.
#[derive(Debug)]
pub enum SharedBytes {
    Chunk {
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
    },
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            SharedBytes::Chunk { data, from, to } => &data[*from..*to],
            SharedBytes::Owned(v) => v,
        }
    }
}

impl IndexReader {
    pub fn new(
        index: Index,
        store: ChunkStore,
        cache: Arc<ChunkCache>,
        what: impl Into<String>,
    ) -> IndexReader {
        IndexReader {
            index,
            store,
            cache,
            what: what.into(),
            readahead: None,
            last_end: AtomicU64::new(NOT_READ),
        }
    }

    /// Sequential reads queue the next chunks on `prefetch`'s threads.
    pub fn with_readahead(mut self, prefetch: Arc<Prefetcher>) -> IndexReader {
        self.readahead = Some(prefetch);
        self
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The stream length the index describes.
    pub fn size(&self) -> u64 {
        self.index.size()
    }

    /// The verified content of chunk `i`, named after the archive on error.
    pub fn chunk(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let info = self
            .index
            .chunk_info(i)
            .ok_or_else(|| Error::format(&self.what, format!("chunk {i} is not in the index")))?;
        self.cache
            .get(&self.store, &info.digest, info.len())
            .map_err(|e| e.context(&self.what))
    }

    /// Fill `buf` from `offset`; fewer bytes only at the end of the stream. A range that
    /// touches a bad chunk fails whole: a short read would look like the end of file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let total = self.index.size();
        if offset >= total || buf.is_empty() {
            return Ok(0);
        }
        let end = offset.saturating_add(buf.len() as u64).min(total);
        self.read_ahead(offset, end)?;
        self.fill(offset, end, buf)?;
        Ok((end - offset) as usize)
    }

    /// Up to `len` bytes from `offset` (fewer only at the end of the stream), as a slice
    /// of the cached chunk when the range lies in one (no copy), else copied once.
    pub fn read_shared(&self, offset: u64, len: usize) -> Result<SharedBytes> {
        let total = self.index.size();
        if offset >= total || len == 0 {
            return Ok(SharedBytes::Owned(Vec::new()));
        }
        let end = offset.saturating_add(len as u64).min(total);
        self.read_ahead(offset, end)?;
        let (i, in_chunk) = self.locate(offset)?;
        let data = self.chunk(i)?;
        let from = self.start_in(&data, i, offset, in_chunk)?;
        let n = (end - offset) as usize;
        if data.len() - from >= n {
            return Ok(SharedBytes::Chunk {
                data,
                from,
                to: from + n,
            });
        }
        drop(data);
        let mut buf = vec![0u8; n];
        self.fill(offset, end, &mut buf)?;
        Ok(SharedBytes::Owned(buf))
    }

    fn locate(&self, pos: u64) -> Result<(usize, u64)> {
        self.index
            .locate(pos)
            .ok_or_else(|| Error::format(&self.what, format!("offset {pos} is not in the index")))
    }

    /// Where `pos` (at `in_chunk` in chunk `i`) lies in the chunk's verified `data`.
    fn start_in(&self, data: &[u8], i: usize, pos: u64, in_chunk: u64) -> Result<usize> {
        // The cache checked the length against the index: `in_chunk` lies inside.
        usize::try_from(in_chunk)
            .ok()
            .filter(|f| *f < data.len())
            .ok_or_else(|| {
                Error::corrupt(
                    &self.what,
                    CorruptKind::Format(format!("offset {pos} lies past the end of chunk {i}")),
                )
            })
    }

    /// Copy `offset..end` (inside the stream) into `buf`.
    fn fill(&self, offset: u64, end: u64, buf: &mut [u8]) -> Result<()> {
        let mut pos = offset;
        while pos < end {
            let (i, in_chunk) = self.locate(pos)?;
            let data = self.chunk(i)?;
            let from = self.start_in(&data, i, pos, in_chunk)?;
            let n = ((end - pos) as usize).min(data.len() - from);
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&data[from..from + n]);
            pos += n as u64;
        }
        Ok(())
    }

    /// Before a read of `offset..end` is served: when it is the handle's first and starts
    /// the stream, or starts where the previous one ended or a little after it (the
    /// kernel has several READs of a sequential reader in flight, which may arrive out of
    /// order), queue the chunks after the first one it touches, up to `READAHEAD_CHUNKS`
    /// past its last, so they are read, decoded and verified on the readahead threads
    /// while this thread serves the first. A read elsewhere (random access, a read back)
    /// starts none.
    fn read_ahead(&self, offset: u64, end: u64) -> Result<()> {
        let Some(p) = &self.readahead else {
            return Ok(());
        };
        let prev = self.last_end.swap(end, Ordering::Relaxed);
        let sequential = match prev {
            NOT_READ => offset == 0,
            prev => offset >= prev && offset - prev <= SEQUENTIAL_SLACK,
        };
        if !sequential {
            return Ok(());
        }
        let (first, _) = self.locate(offset)?;
        let (last, _) = self.locate(end - 1)?;
        // No further than the cache holds along with the chunk being read: a chunk
        // fetched only to be evicted before it is read is work lost.
        let mut room = self.cache.capacity();
        for i in first..=last + READAHEAD_CHUNKS {
            let Some(info) = self.index.chunk_info(i) else {
                break;
            };
            room = match room.checked_sub(info.len()) {
                Some(r) => r,
                None => break,
            };
            if i > first {
                p.queue(&self.store, &self.cache, info.digest, info.len());
            }
        }
        Ok(())
    }

    /// Write the whole stream to `out` in order, verifying up to `2 * workers` chunks
    /// ahead on `workers` threads. Stops at the first bad chunk: only verified bytes
    /// before it are written.
    pub fn copy_to(&self, out: &mut impl Write, workers: usize) -> Result<u64> {
        let n = self.index.chunk_count();
        let window = workers.max(1) * 2;
        let mut written = 0u64;
        let mut start = 0;
        while start < n {
            let end = (start + window).min(n);
            let results: Vec<Result<Arc<Vec<u8>>>> = std::thread::scope(|s| {
                let handles: Vec<_> = (start..end)
                    .map(|i| s.spawn(move || self.chunk(i)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::other(&self.what, "a reader panicked")))
                    })
                    .collect()
            });
            for r in results {
                let data = r?;
                out.write_all(&data).ctx("output")?;
                written += data.len() as u64;
            }
            start = end;
        }
        Ok(written)
    }
}

impl ReadAt for IndexReader {
    fn size(&self) -> u64 {
        IndexReader::size(self)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        IndexReader::read_at(self, offset, buf)
    }
}

/// An archive opened for reading.
#[derive(Debug)]
pub enum ArchiveData {
    Index(Box<IndexReader>),
    /// A decoded blob.
    Blob(Vec<u8>),
}

impl ArchiveData {
    pub fn size(&self) -> u64 {
        match self {
            ArchiveData::Index(r) => r.size(),
            ArchiveData::Blob(b) => b.len() as u64,
        }
    }
}

/// The streams of a pxar archive: the single stream, or a split pair's metadata stream
/// and its payload stream.
#[derive(Debug)]
pub struct PxarStreams {
    pub meta: IndexReader,
    pub payload: Option<IndexReader>,
}

impl Datastore {
    /// Open a pxar archive (`root.pxar.didx`, or the split pair behind
    /// `root.mpxar.didx`), each index checked against the manifest.
    pub fn open_pxar(
        &self,
        d: &BackupDir,
        m: &Manifest,
        name: &ArchiveName,
        cache: Arc<ChunkCache>,
    ) -> Result<PxarStreams> {
        let index = |n: &ArchiveName| match self.open_archive(d, m, n, cache.clone())? {
            ArchiveData::Index(r) => Ok(*r),
            ArchiveData::Blob(_) => Err(Error::invalid(format!("{d}/{n}"), "not an index")),
        };
        match name.kind() {
            ArchiveKind::Pxar => Ok(PxarStreams {
                meta: index(name)?,
                payload: None,
            }),
            ArchiveKind::SplitMeta => {
                let payload = name.split_payload().expect("a split metadata stream");
                Ok(PxarStreams {
                    meta: index(name)?,
                    payload: Some(index(&payload)?),
                })
            }
            _ => Err(Error::invalid(format!("{d}/{name}"), "not a pxar archive")),
        }
    }

    /// Open an archive of snapshot `d` for reading, checked as every reader checks it:
    /// an index or blob must be listed in the manifest and match its checksum and size;
    /// `client.log.blob` (never listed, spec §1.6) is only CRC-checked.
    pub fn open_archive(
        &self,
        d: &BackupDir,
        m: &Manifest,
        name: &ArchiveName,
        cache: Arc<ChunkCache>,
    ) -> Result<ArchiveData> {
        let what = format!("{d}/{name}");
        let path = self.snapshot_path(d).join(name.file());
        let entry = match name.kind() {
            ArchiveKind::ClientLog => None,
            _ => Some(
                m.file(name.file())
                    .ok_or_else(|| Error::corrupt(&what, CorruptKind::NotInManifest))?,
            ),
        };
        match name.kind().storage() {
            Storage::Blob => {
                let raw = self
                    .fs()
                    .read(&path, blob::MAX_BLOB_FILE)
                    .map_err(|e| e.context(format!("snapshot {d}")))?;
                if let Some(entry) = &entry {
                    entry.check_blob(&raw).map_err(|e| e.context(&what))?;
                }
                let data = blob::decode(&raw).map_err(|e| e.context(&what))?;
                Ok(ArchiveData::Blob(data))
            }
            Storage::FixedIndex | Storage::DynamicIndex => {
                let idx = self
                    .read_index(&path)
                    .map_err(|e| e.context(format!("snapshot {d}")))?;
                if let Some(entry) = &entry {
                    entry.check_index(&idx).map_err(|e| e.context(&what))?;
                }
                Ok(ArchiveData::Index(Box::new(IndexReader::new(
                    idx,
                    self.chunk_store().clone(),
                    cache,
                    what,
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::files::{self, Owner};
    use crate::store::format::index::dynamic::DynamicIndex;

    fn store() -> (std::path::PathBuf, ChunkStore) {
        let root = std::env::temp_dir().join(format!("pbsfs-reader-{}", files::random_suffix(8)));
        std::fs::create_dir_all(&root).unwrap();
        let owner = Owner::of(&root).unwrap();
        (
            root.clone(),
            ChunkStore::create(&root, owner, false).unwrap(),
        )
    }

    #[test]
    fn reads_at_any_offset_equal_the_stream() {
        let (root, cs) = store();
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize * 7]).collect();
        let mut entries = Vec::new();
        let mut end = 0;
        for p in &parts {
            let (d, _, _) = cs.insert_plain(p).unwrap();
            end += p.len() as u64;
            entries.push((end, d));
        }
        let whole: Vec<u8> = parts.concat();
        let idx = Index::Dynamic(DynamicIndex::new(entries, 0).unwrap());
        let r = IndexReader::new(idx, cs, Arc::new(ChunkCache::new(1 << 20)), "t");
        for (off, len) in [
            (0, 1),
            (999, 2),
            (0, whole.len()),
            (2500, 3000),
            (5000, 100),
        ] {
            let mut buf = vec![0u8; len];
            let n = r.read_at(off as u64, &mut buf).unwrap();
            let want = &whole[off.min(whole.len())..(off + len).min(whole.len())];
            assert_eq!(&buf[..n], want, "{off}+{len}");
        }
        let mut out = Vec::new();
        assert_eq!(r.copy_to(&mut out, 2).unwrap(), whole.len() as u64);
        assert_eq!(out, whole);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn shared_reads_slice_one_chunk_and_copy_across_chunks() {
        let (root, cs) = store();
        let parts: Vec<Vec<u8>> = (0..3u8)
            .map(|i| (0..5000u32).map(|j| (j % 253) as u8 ^ i).collect())
            .collect();
        let mut entries = Vec::new();
        let mut end = 0;
        for p in &parts {
            let (d, _, _) = cs.insert_plain(p).unwrap();
            end += p.len() as u64;
            entries.push((end, d));
        }
        let whole: Vec<u8> = parts.concat();
        let idx = Index::Dynamic(DynamicIndex::new(entries, 0).unwrap());
        let r = IndexReader::new(idx, cs, Arc::new(ChunkCache::new(1 << 20)), "t");
        for (off, len, one_chunk) in [
            (0usize, 5000usize, true),
            (100, 10, true),
            (4999, 1, true),
            (4999, 2, false),
            (0, 15000, false),
            (12000, 9999, true), // to the end of the stream
            (15000, 10, true),   // past it: nothing
        ] {
            let got = r.read_shared(off as u64, len).unwrap();
            let want = &whole[off.min(whole.len())..(off + len).min(whole.len())];
            assert_eq!(got.as_ref(), want, "{off}+{len}");
            assert_eq!(
                matches!(got, SharedBytes::Chunk { .. }) || want.is_empty(),
                one_chunk,
                "{off}+{len}"
            );
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_first_read_of_a_handle_starts_readahead_before_it_is_served() {
        let (root, cs) = store();
        let mut entries = Vec::new();
        for i in 0..8u64 {
            let (d, _, _) = cs.insert_plain(&vec![i as u8; 1000]).unwrap();
            entries.push(((i + 1) * 1000, d));
        }
        let idx = Index::Dynamic(DynamicIndex::new(entries, 0).unwrap());
        // Room for the chunk being read and 3 more: readahead stops there.
        let cache = Arc::new(ChunkCache::new(4000));
        let r = IndexReader::new(idx, cs, cache.clone(), "t")
            .with_readahead(Arc::new(Prefetcher::new()));
        let settle = |want: u64| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while cache.disk_reads() < want && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            cache.disk_reads()
        };
        // The first read of the stream: readahead starts with it, not after it.
        let mut buf = [0u8; 10];
        assert_eq!(r.read_at(0, &mut buf).unwrap(), 10);
        assert_eq!(buf, [0u8; 10]);
        assert_eq!(settle(4), 4, "chunk 0 and the 3 after it");
        // A read back is not sequential: nothing more is read ahead.
        assert_eq!(r.read_shared(5, 1).unwrap().as_ref(), [0]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(cache.disk_reads(), 4);
        // Reads of what was read ahead are hits.
        for (off, v) in [(1500u64, 1u8), (3999, 3)] {
            assert_eq!(r.read_shared(off, 1).unwrap().as_ref(), [v]);
        }
        // A handle whose first read is not at the start reads nothing ahead.
        let idx = r.index().clone();
        let other = IndexReader::new(idx, r.store.clone(), Arc::new(ChunkCache::new(4000)), "t")
            .with_readahead(Arc::new(Prefetcher::new()));
        assert_eq!(other.read_shared(2500, 1).unwrap().as_ref(), [2]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(other.cache.disk_reads(), 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Before the cache checked lengths on a hit, an index claiming a longer range for a
    /// cached digest made `data.len() - from` underflow: a panic in a FUSE thread.
    #[test]
    fn an_index_claiming_more_bytes_for_a_cached_chunk_is_an_error_not_a_panic() {
        let (root, cs) = store();
        let (d, _, _) = cs.insert_plain(&[1u8; 100]).unwrap();
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let honest = Index::Dynamic(DynamicIndex::new(vec![(100, d)], 0).unwrap());
        let r = IndexReader::new(honest, cs.clone(), cache.clone(), "honest");
        let mut buf = [0u8; 100];
        assert_eq!(r.read_at(0, &mut buf).unwrap(), 100);
        let lying = Index::Dynamic(DynamicIndex::new(vec![(4096, d)], 0).unwrap());
        let r = IndexReader::new(lying, cs, cache, "lying");
        let mut buf = [0u8; 512];
        let e = r.read_at(1000, &mut buf).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        assert!(matches!(
            e.kind(),
            Error::ChunkCorrupt {
                why: CorruptKind::Length {
                    actual: 100,
                    expected: 4096
                },
                ..
            }
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
