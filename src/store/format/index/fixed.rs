//! Fixed index `.fidx` (spec §3.1): a disk image cut in equal chunks; header, then one
//! digest per chunk. The file size must be exact; `index_csum = H(all digests)`.

use sha2::{Digest as _, Sha256};

use crate::store::format::index::{header, read_u64, ChunkInfo, INDEX_HEADER_SIZE};
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, Result};

const FIDX: &str = "fixed index";

/// `sha256("Proxmox Backup fixed sized chunk index v1.0")[0..8]`
pub const FIXED_INDEX_MAGIC: [u8; 8] = [47, 127, 65, 237, 145, 253, 15, 205];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIndex {
    pub uuid: [u8; 16],
    pub ctime: i64,
    pub csum: Digest,
    /// Image size in bytes.
    pub size: u64,
    /// A power of two; the last chunk may be shorter.
    pub chunk_size: u64,
    pub digests: Vec<Digest>,
}

fn compute_csum(digests: &[Digest]) -> Digest {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d.as_bytes());
    }
    Digest(h.finalize().into())
}

impl FixedIndex {
    /// A new index of `size` bytes in chunks of `chunk_size`, digests in order.
    pub fn new(size: u64, chunk_size: u64, digests: Vec<Digest>, ctime: i64) -> Result<FixedIndex> {
        if !chunk_size.is_power_of_two() {
            return Err(Error::invalid(
                format!("chunk size {chunk_size}"),
                "not a power of two",
            ));
        }
        let n = size.div_ceil(chunk_size);
        if n != digests.len() as u64 {
            return Err(Error::invalid(
                "fixed index",
                format!(
                    "{} digests for {size} bytes in chunks of {chunk_size} ({n} expected)",
                    digests.len()
                ),
            ));
        }
        Ok(FixedIndex {
            uuid: crate::store::files::random_bytes(),
            ctime,
            csum: compute_csum(&digests),
            size,
            chunk_size,
            digests,
        })
    }

    /// The file length the header (size, chunk size) describes.
    pub fn file_len(header: &[u8]) -> Result<u64> {
        if header.len() < INDEX_HEADER_SIZE || header[..8] != FIXED_INDEX_MAGIC {
            return Err(Error::format(FIDX, "bad magic or truncated header"));
        }
        let size = read_u64(header, 64);
        let chunk_size = read_u64(header, 72);
        if chunk_size == 0 || !chunk_size.is_power_of_two() {
            return Err(Error::format(
                FIDX,
                format!("chunk size {chunk_size} is not a power of two"),
            ));
        }
        // Readers size buffers by the chunk length: an absurd one is damage, never an
        // allocation.
        if chunk_size > crate::store::format::blob::MAX_CHUNK_SIZE as u64 {
            return Err(Error::format(
                FIDX,
                format!(
                    "chunk size {chunk_size} exceeds the largest chunk ({} bytes)",
                    crate::store::format::blob::MAX_CHUNK_SIZE
                ),
            ));
        }
        size.div_ceil(chunk_size)
            .checked_mul(32)
            .and_then(|b| b.checked_add(INDEX_HEADER_SIZE as u64))
            .ok_or_else(|| Error::format(FIDX, format!("size {size} overflows")))
    }

    pub fn parse(raw: &[u8]) -> Result<FixedIndex> {
        if raw.len() < INDEX_HEADER_SIZE || raw[..8] != FIXED_INDEX_MAGIC {
            return Err(Error::format(FIDX, "bad magic or truncated header"));
        }
        let size = read_u64(raw, 64);
        let chunk_size = read_u64(raw, 72);
        let expected = FixedIndex::file_len(raw)?;
        if raw.len() as u64 != expected {
            return Err(Error::corrupt(
                FIDX,
                CorruptKind::Size {
                    len: raw.len() as u64,
                    why: "differs from what the header's size and chunk size need (truncated?)",
                },
            ));
        }
        let digests: Vec<Digest> = raw[INDEX_HEADER_SIZE..]
            .chunks_exact(32)
            .map(|c| Digest(c.try_into().expect("32 bytes")))
            .collect();
        let stored = Digest(raw[32..64].try_into().expect("32 bytes"));
        let csum = compute_csum(&digests);
        if csum != stored {
            return Err(Error::format(
                FIDX,
                format!("checksum mismatch (stored {stored}, computed {csum})"),
            ));
        }
        Ok(FixedIndex {
            uuid: raw[8..24].try_into().expect("16 bytes"),
            ctime: read_u64(raw, 24) as i64,
            csum,
            size,
            chunk_size,
            digests,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(FIXED_INDEX_MAGIC, self.uuid, self.ctime, &self.csum);
        out[64..72].copy_from_slice(&self.size.to_le_bytes());
        out[72..80].copy_from_slice(&self.chunk_size.to_le_bytes());
        out.reserve(self.digests.len() * 32);
        for d in &self.digests {
            out.extend_from_slice(d.as_bytes());
        }
        out
    }

    pub fn chunk_count(&self) -> usize {
        self.digests.len()
    }

    pub fn chunk_info(&self, i: usize) -> Option<ChunkInfo> {
        let digest = *self.digests.get(i)?;
        let start = i as u64 * self.chunk_size;
        let end = (start + self.chunk_size).min(self.size);
        Some(ChunkInfo { start, end, digest })
    }

    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.size {
            return None;
        }
        Some((
            (offset / self.chunk_size) as usize,
            offset % self.chunk_size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::index::Index;

    fn sample(size: u64, cs: u64) -> FixedIndex {
        let n = size.div_ceil(cs);
        let digests = (0..n).map(|i| Digest::of(&i.to_le_bytes())).collect();
        FixedIndex::new(size, cs, digests, 1_700_000_000).unwrap()
    }

    #[test]
    fn round_trip_is_byte_exact_and_checksum_is_of_the_digests() {
        let idx = sample(10_000, 4096);
        let raw = idx.to_bytes();
        assert_eq!(raw.len(), 4096 + 3 * 32);
        assert_eq!(&raw[..8], &FIXED_INDEX_MAGIC);
        assert_eq!(FixedIndex::parse(&raw).unwrap(), idx);
        assert_eq!(FixedIndex::parse(&raw).unwrap().to_bytes(), raw);
        let mut all = Vec::new();
        for d in &idx.digests {
            all.extend_from_slice(d.as_bytes());
        }
        assert_eq!(idx.csum, Digest::of(&all));
        assert!(raw[80..4096].iter().all(|b| *b == 0));
    }

    #[test]
    fn locate_at_zero_boundaries_last_byte_and_eof() {
        let idx = sample(10_000, 4096);
        assert_eq!(idx.locate(0), Some((0, 0)));
        assert_eq!(idx.locate(4095), Some((0, 4095)));
        assert_eq!(idx.locate(4096), Some((1, 0)));
        assert_eq!(idx.locate(9_999), Some((2, 9_999 - 8192)));
        assert_eq!(idx.locate(10_000), None);
        assert_eq!(idx.chunk_info(2).unwrap().len(), 10_000 - 8192);
        let empty = sample(0, 4096);
        assert_eq!(empty.locate(0), None);
        assert_eq!(
            FixedIndex::parse(&empty.to_bytes()).unwrap().chunk_count(),
            0
        );
    }

    #[test]
    fn wrong_size_bad_csum_and_bad_chunk_size_are_refused() {
        let raw = sample(10_000, 4096).to_bytes();
        let e = Index::parse(&raw[..raw.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut longer = raw.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(FixedIndex::parse(&longer).is_err());
        let mut bad = raw.clone();
        bad[4096] ^= 1;
        assert!(FixedIndex::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        let mut odd = raw;
        odd[72..80].copy_from_slice(&3000u64.to_le_bytes());
        assert!(FixedIndex::parse(&odd).is_err());
    }
}
