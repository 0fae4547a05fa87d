//! What fixed and dynamic indexes have in common: the 4096-byte header, chunk ranges,
//! `locate(offset)`, and opening either kind by its magic.

pub mod dynamic;
pub mod fixed;

use crate::store::format::index::dynamic::{DynamicIndex, DYNAMIC_INDEX_MAGIC};
use crate::store::format::index::fixed::{FixedIndex, FIXED_INDEX_MAGIC};
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, Result};

pub const INDEX_HEADER_SIZE: usize = 4096;
pub const INDEX_FILE_MODE: u32 = 0o644;

/// One chunk of an index: the stream range `[start, end)` it covers and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub start: u64,
    pub end: u64,
    pub digest: Digest,
}

impl ChunkInfo {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// See `Index::body_checker`.
#[derive(Debug)]
pub struct BodyChecker {
    dynamic: bool,
    pending: Vec<u8>,
    prev: u64,
    entry: u64,
}

impl BodyChecker {
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        if !self.dynamic {
            return Ok(());
        }
        while !data.is_empty() {
            let take = (40 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 40 {
                let end = read_u64(&self.pending, 0);
                dynamic::check_entry(self.entry, end, self.prev)?;
                self.prev = end;
                self.entry += 1;
                self.pending.clear();
            }
        }
        Ok(())
    }
}

/// A parsed `.fidx` or `.didx`.
#[derive(Debug, Clone)]
pub enum Index {
    Fixed(FixedIndex),
    Dynamic(DynamicIndex),
}

impl Index {
    pub fn parse(raw: &[u8]) -> Result<Index> {
        if raw.len() < INDEX_HEADER_SIZE {
            return Err(Error::corrupt(
                "index",
                CorruptKind::Truncated {
                    len: raw.len() as u64,
                    need: INDEX_HEADER_SIZE as u64,
                },
            ));
        }
        match <[u8; 8]>::try_from(&raw[..8]).expect("8 bytes") {
            FIXED_INDEX_MAGIC => Ok(Index::Fixed(FixedIndex::parse(raw)?)),
            DYNAMIC_INDEX_MAGIC => Ok(Index::Dynamic(DynamicIndex::parse(raw)?)),
            _ => Err(Error::corrupt("index", CorruptKind::Magic)),
        }
    }

    /// Check an index file's length against its 4096-byte header before reading the
    /// body: a fixed index must be exactly what its size and chunk size need, a dynamic
    /// index a whole number of 40-byte entries.
    pub fn check_file_len(header: &[u8], len: u64) -> Result<()> {
        let bad = |why| Error::corrupt("index", CorruptKind::Size { len, why });
        match header
            .get(..8)
            .map(|m| <[u8; 8]>::try_from(m).expect("8 bytes"))
        {
            Some(FIXED_INDEX_MAGIC) => {
                if FixedIndex::file_len(header)? != len {
                    return Err(bad(
                        "differs from what its header describes (truncated?); not read",
                    ));
                }
                Ok(())
            }
            Some(DYNAMIC_INDEX_MAGIC) => {
                let body = len.saturating_sub(INDEX_HEADER_SIZE as u64);
                if len < INDEX_HEADER_SIZE as u64 || !body.is_multiple_of(40) {
                    return Err(bad("not a header and whole 40-byte entries (not read)"));
                }
                Ok(())
            }
            _ => Err(Error::corrupt("index", CorruptKind::Magic)),
        }
    }

    /// A checker fed the body of the index whose header is `header` block by block: a
    /// dynamic index's end offsets must keep increasing, so garbage (a sparse file of
    /// zeros) is refused at its first entry, not after reading all of it.
    pub fn body_checker(header: &[u8]) -> BodyChecker {
        BodyChecker {
            dynamic: header.get(..8) == Some(&DYNAMIC_INDEX_MAGIC[..]),
            pending: Vec::new(),
            prev: 0,
            entry: 0,
        }
    }

    pub fn chunk_count(&self) -> usize {
        match self {
            Index::Fixed(i) => i.chunk_count(),
            Index::Dynamic(i) => i.chunk_count(),
        }
    }

    pub fn chunk_info(&self, i: usize) -> Option<ChunkInfo> {
        match self {
            Index::Fixed(x) => x.chunk_info(i),
            Index::Dynamic(x) => x.chunk_info(i),
        }
    }

    /// Total bytes of the image or stream (the manifest's `size`).
    pub fn size(&self) -> u64 {
        match self {
            Index::Fixed(i) => i.size,
            Index::Dynamic(i) => i.size(),
        }
    }

    /// The index checksum (the manifest's `csum`).
    pub fn csum(&self) -> Digest {
        match self {
            Index::Fixed(i) => i.csum,
            Index::Dynamic(i) => i.csum,
        }
    }

    pub fn ctime(&self) -> i64 {
        match self {
            Index::Fixed(i) => i.ctime,
            Index::Dynamic(i) => i.ctime,
        }
    }

    /// The chunk holding byte `offset` and the offset inside it; `None` at or past the end.
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        match self {
            Index::Fixed(i) => i.locate(offset),
            Index::Dynamic(i) => i.locate(offset),
        }
    }

    pub fn chunks(&self) -> impl Iterator<Item = ChunkInfo> + '_ {
        (0..self.chunk_count()).filter_map(|i| self.chunk_info(i))
    }
}

/// Write the common header fields: magic, uuid, ctime, csum.
pub(crate) fn header(magic: [u8; 8], uuid: [u8; 16], ctime: i64, csum: &Digest) -> Vec<u8> {
    let mut h = vec![0u8; INDEX_HEADER_SIZE];
    h[..8].copy_from_slice(&magic);
    h[8..24].copy_from_slice(&uuid);
    h[24..32].copy_from_slice(&ctime.to_le_bytes());
    h[32..64].copy_from_slice(csum.as_bytes());
    h
}

pub(crate) fn read_u64(raw: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"))
}
