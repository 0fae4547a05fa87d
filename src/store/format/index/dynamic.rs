//! Dynamic index `.didx` (spec §3.2): content-defined chunks of a stream; header, then
//! `(end: u64 LE, digest)` entries with increasing end offsets. `index_csum` is the
//! SHA-256 of the raw entry array.

use sha2::{Digest as _, Sha256};

use crate::store::format::index::{header, read_u64, ChunkInfo, INDEX_HEADER_SIZE};
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, Result};

const DIDX: &str = "dynamic index";

/// `sha256("Proxmox Backup dynamic sized chunk index v1.0")[0..8]`
pub const DYNAMIC_INDEX_MAGIC: [u8; 8] = [28, 145, 78, 165, 25, 186, 179, 205];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicIndex {
    pub uuid: [u8; 16],
    pub ctime: i64,
    pub csum: Digest,
    /// `(exclusive end offset, digest)`, strictly increasing ends.
    pub entries: Vec<(u64, Digest)>,
}

fn compute_csum(entries: &[(u64, Digest)]) -> Digest {
    let mut h = Sha256::new();
    for (end, d) in entries {
        h.update(end.to_le_bytes());
        h.update(d.as_bytes());
    }
    Digest(h.finalize().into())
}

impl DynamicIndex {
    pub fn new(entries: Vec<(u64, Digest)>, ctime: i64) -> Result<DynamicIndex> {
        check_ends(&entries)?;
        Ok(DynamicIndex {
            uuid: crate::store::files::random_bytes(),
            ctime,
            csum: compute_csum(&entries),
            entries,
        })
    }

    pub fn parse(raw: &[u8]) -> Result<DynamicIndex> {
        if raw.len() < INDEX_HEADER_SIZE || raw[..8] != DYNAMIC_INDEX_MAGIC {
            return Err(Error::format(DIDX, "bad magic or truncated header"));
        }
        let body = &raw[INDEX_HEADER_SIZE..];
        if !body.len().is_multiple_of(40) {
            return Err(Error::corrupt(
                DIDX,
                CorruptKind::Size {
                    len: raw.len() as u64,
                    why: "entries are not a multiple of 40 bytes (truncated?)",
                },
            ));
        }
        let entries: Vec<(u64, Digest)> = body
            .chunks_exact(40)
            .map(|e| {
                (
                    read_u64(e, 0),
                    Digest(e[8..40].try_into().expect("32 bytes")),
                )
            })
            .collect();
        check_ends(&entries)?;
        let stored = Digest(raw[32..64].try_into().expect("32 bytes"));
        let csum = Digest(Sha256::digest(body).into());
        if csum != stored {
            return Err(Error::format(
                DIDX,
                format!("checksum mismatch (stored {stored}, computed {csum})"),
            ));
        }
        Ok(DynamicIndex {
            uuid: raw[8..24].try_into().expect("16 bytes"),
            ctime: read_u64(raw, 24) as i64,
            csum,
            entries,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(DYNAMIC_INDEX_MAGIC, self.uuid, self.ctime, &self.csum);
        out.reserve(self.entries.len() * 40);
        for (end, d) in &self.entries {
            out.extend_from_slice(&end.to_le_bytes());
            out.extend_from_slice(d.as_bytes());
        }
        out
    }

    /// Stream length: the last end offset.
    pub fn size(&self) -> u64 {
        self.entries.last().map(|e| e.0).unwrap_or(0)
    }

    pub fn chunk_count(&self) -> usize {
        self.entries.len()
    }

    pub fn chunk_info(&self, i: usize) -> Option<ChunkInfo> {
        let (end, digest) = *self.entries.get(i)?;
        let start = if i == 0 { 0 } else { self.entries[i - 1].0 };
        Some(ChunkInfo { start, end, digest })
    }

    /// Binary search for the chunk holding `offset`.
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        let i = self.entries.partition_point(|(end, _)| *end <= offset);
        let info = self.chunk_info(i)?;
        Some((i, offset - info.start))
    }
}

fn check_ends(entries: &[(u64, Digest)]) -> Result<()> {
    let mut prev = 0u64;
    for (i, (end, _)) in entries.iter().enumerate() {
        check_entry(i as u64, *end, prev)?;
        prev = *end;
    }
    Ok(())
}

/// Entry `i` ending at `end` after one ending at `prev`: the ends increase, and no chunk
/// is longer than a chunk can be (readers size buffers by it: a huge end offset is
/// damage, never an allocation).
pub(crate) fn check_entry(i: u64, end: u64, prev: u64) -> Result<()> {
    if end <= prev {
        return Err(Error::format(
            DIDX,
            format!("entry {i}: end offset {end} does not increase (previous {prev})"),
        ));
    }
    let max = crate::store::format::blob::MAX_CHUNK_SIZE as u64;
    if end - prev > max {
        return Err(Error::format(
            DIDX,
            format!(
                "entry {i}: end offset {end} makes a chunk of {} bytes, over the largest \
                 chunk ({max} bytes)",
                end - prev
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DynamicIndex {
        let ends = [100u64, 250, 1000];
        let entries = ends
            .iter()
            .map(|e| (*e, Digest::of(&e.to_le_bytes())))
            .collect();
        DynamicIndex::new(entries, 5).unwrap()
    }

    #[test]
    fn round_trip_and_locate() {
        let idx = sample();
        let raw = idx.to_bytes();
        assert_eq!(raw.len(), 4096 + 3 * 40);
        assert_eq!(DynamicIndex::parse(&raw).unwrap(), idx);
        assert_eq!(idx.locate(0), Some((0, 0)));
        assert_eq!(idx.locate(99), Some((0, 99)));
        assert_eq!(idx.locate(100), Some((1, 0)));
        assert_eq!(idx.locate(999), Some((2, 749)));
        assert_eq!(idx.locate(1000), None);
        assert_eq!(idx.size(), 1000);
    }

    #[test]
    fn truncation_bad_order_and_bad_csum_are_refused() {
        let raw = sample().to_bytes();
        assert!(DynamicIndex::parse(&raw[..raw.len() - 7])
            .unwrap_err()
            .to_string()
            .contains("multiple of 40"));
        let mut bad = raw.clone();
        bad[4096 + 40..4096 + 48].copy_from_slice(&50u64.to_le_bytes());
        assert!(DynamicIndex::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("does not increase"));
        let mut bad = raw;
        bad[4096 + 20] ^= 1;
        assert!(DynamicIndex::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
