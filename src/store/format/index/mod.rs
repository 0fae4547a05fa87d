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
