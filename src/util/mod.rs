//! What every layer shares and nothing of the datastore: the error type and its two
//! mappings, digests, time, task ids, shell globs, and the audited libc calls.

pub mod digest;
pub mod error;
pub mod glob;
pub mod sys;
#[cfg(test)]
pub mod testdata;
pub mod time;
pub mod upid;
pub mod walk;

use error::Result;

/// Random access to a byte stream of known size: what the pxar decoder reads through,
/// implemented by the store's `IndexReader` (and by plain buffers in tests), so pxar
/// needs nothing of the store.
pub trait ReadAt {
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`; fewer bytes only at the end of the stream.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let start = offset.min(self.len() as u64) as usize;
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A stream held in memory (a decoded blob, a test's archive).
impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self[..].read_at(offset, buf)
    }
}

/// `n` and the noun, plural unless `n` is 1: "1 snapshot", "2 snapshots", "0 chunks".
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
