//! Bounded reads of the decoder's two streams: exact reads that name the archive and the
//! offset on failure, item headers checked against the range they must lie in, and a
//! small read window so decoding one entry costs one read of the store, not one per item.

use std::fmt::Display;

use crate::pxar::format::{Header, HEADER_SIZE};
use crate::util::error::{CorruptKind, Error, Result};
use crate::util::ReadAt;

use super::Archive;

/// Bytes the window reads at once: an entry's FILENAME, ENTRY and small attributes.
pub(super) const WINDOW: usize = 4096;

/// Fill `buf` from `off`; the count is short only at the end of the stream. Each call
/// moves forward (a reader's zero ends the loop), so it cannot spin.
pub(super) fn fill<R: ReadAt + ?Sized>(r: &R, off: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = r.read_at(off + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n.min(buf.len() - done);
    }
    Ok(done)
}

pub(super) fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

impl<R: ReadAt> Archive<R> {
    /// A broken format rule at `off` of the metadata stream.
    pub(super) fn bad(&self, off: u64, why: impl Display) -> Error {
        Error::corrupt(
            format!("{} at offset {off}", self.what),
            CorruptKind::Format(why.to_string()),
        )
    }

    /// Exactly `buf.len()` bytes of `r` (the metadata stream, or the payload stream when
    /// `payload`) from `off`; anything less is a truncated stream.
    pub(super) fn read_exact_in(
        &self,
        r: &R,
        payload: bool,
        off: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let stream = if payload { " payload stream" } else { "" };
        let name = || format!("{}{stream} at offset {off}", self.what);
        let size = r.size();
        let fits = off
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= size);
        let got = if fits {
            fill(r, off, buf).map_err(|e| e.context(name()))?
        } else {
            0
        };
        if got < buf.len() {
            return Err(Error::corrupt(
                name(),
                CorruptKind::Format(format!(
                    "truncated: {} bytes needed, the stream holds {size}",
                    off.saturating_add(buf.len() as u64)
                )),
            ));
        }
        Ok(())
    }

    /// Exactly `buf.len()` bytes of the metadata stream from `off`.
    pub(super) fn read_exact(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.read_exact_in(&self.meta, false, off, buf)
    }
}

/// Reads of one entry's items, all inside `[.., limit)` (its parent's range, or its own
/// once known), through a window of `WINDOW` bytes.
pub(super) struct Cursor<'a, R: ReadAt> {
    ar: &'a Archive<R>,
    base: u64,
    buf: Vec<u8>,
    pub limit: u64,
}

impl<'a, R: ReadAt> Cursor<'a, R> {
    pub fn new(ar: &'a Archive<R>, limit: u64) -> Self {
        Cursor {
            ar,
            base: 0,
            buf: Vec::new(),
            limit: limit.min(ar.size),
        }
    }

    /// `out.len()` bytes from `off`, which the caller checked lie below `limit`.
    pub fn read(&mut self, off: u64, out: &mut [u8]) -> Result<()> {
        let end = off.saturating_add(out.len() as u64);
        if off >= self.base && end <= self.base + self.buf.len() as u64 {
            let from = (off - self.base) as usize;
            out.copy_from_slice(&self.buf[from..from + out.len()]);
            return Ok(());
        }
        let room = self.limit.saturating_sub(off).min(WINDOW as u64) as usize;
        if out.len() >= WINDOW || room < out.len() {
            return self.ar.read_exact(off, out);
        }
        self.buf.resize(room, 0);
        if self.ar.read_exact(off, &mut self.buf).is_err() {
            // The window reaches past what is needed, maybe into a neighbour's bad
            // chunk: read only the bytes needed, whose error (if any) is the real one.
            self.buf.clear();
            return self.ar.read_exact(off, out);
        }
        self.base = off;
        out.copy_from_slice(&self.buf[..out.len()]);
        Ok(())
    }

    /// The item header at `off`, whose whole item must end by `limit`.
    pub fn header(&mut self, off: u64) -> Result<Header> {
        if off.saturating_add(HEADER_SIZE) > self.limit {
            return Err(self.ar.bad(
                off,
                format!(
                    "truncated or overrunning: no room for an item header before {}",
                    self.limit
                ),
            ));
        }
        let mut b = [0u8; 16];
        self.read(off, &mut b)?;
        let h = Header::parse(&b);
        if h.full_size < HEADER_SIZE {
            return Err(self.ar.bad(
                off,
                format!("item size {} is smaller than its header", h.full_size),
            ));
        }
        if off.saturating_add(h.full_size) > self.limit {
            return Err(self.ar.bad(
                off,
                format!(
                    "item of {} bytes (type {:016x}) runs past the end of its range at {}",
                    h.full_size, h.htype, self.limit
                ),
            ));
        }
        Ok(h)
    }

    /// The content of the item `h` at `off`, at most `max` bytes (the format's cap,
    /// checked before anything is allocated).
    pub fn content(&mut self, off: u64, h: Header, max: u64, what: &str) -> Result<Vec<u8>> {
        let len = h.full_size - HEADER_SIZE;
        if len > max {
            return Err(self.ar.bad(
                off,
                format!("{what} of {len} bytes exceeds the format's limit of {max}"),
            ));
        }
        let mut v = vec![0u8; len as usize];
        self.read(off + HEADER_SIZE, &mut v)?;
        Ok(v)
    }

    /// The content of `h` at `off`, which must be exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self, off: u64, h: Header, what: &str) -> Result<[u8; N]> {
        if h.full_size != HEADER_SIZE + N as u64 {
            return Err(self.ar.bad(
                off,
                format!(
                    "{what} of {} bytes, expected {}",
                    h.full_size,
                    HEADER_SIZE + N as u64
                ),
            ));
        }
        let mut b = [0u8; N];
        self.read(off + HEADER_SIZE, &mut b)?;
        Ok(b)
    }
}
