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
    /// Where the previous read ended: a read starting there is sequential.
    last_end: AtomicU64,
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
            last_end: AtomicU64::new(0),
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
        let mut pos = offset;
        let mut last_chunk = 0;
        while pos < end {
            let (i, in_chunk) = self.index.locate(pos).ok_or_else(|| {
                Error::format(&self.what, format!("offset {pos} is not in the index"))
            })?;
            let data = self.chunk(i)?;
            // The cache checked the length against the index: `in_chunk` lies inside.
            let from = usize::try_from(in_chunk)
                .ok()
                .filter(|f| *f < data.len())
                .ok_or_else(|| {
                    Error::corrupt(
                        &self.what,
                        CorruptKind::Format(format!("offset {pos} lies past the end of chunk {i}")),
                    )
                })?;
            let n = ((end - pos) as usize).min(data.len() - from);
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&data[from..from + n]);
            pos += n as u64;
            last_chunk = i;
        }
        if self.last_end.swap(end, Ordering::Relaxed) == offset {
            if let Some(p) = &self.readahead {
                for i in last_chunk + 1..=last_chunk + READAHEAD_CHUNKS {
                    let Some(info) = self.index.chunk_info(i) else {
                        break;
                    };
                    p.queue(&self.store, &self.cache, info.digest, info.len());
                }
            }
        }
        Ok((end - offset) as usize)
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
