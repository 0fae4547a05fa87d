//! A regular file's content while it is written: exactly the announced number of
//! bytes, into the one stream (v1) or the payload stream (split); an unfinished file
//! breaks the encoder, since its PAYLOAD header already announced the size.

use std::io::Write;

use super::{Encoder, LinkOffset};
use crate::util::error::{Error, Result};

/// The content of a file started with `create_file`: exactly the announced number of
/// bytes, then `finish`.
pub struct FileWriter<'a, W: Write, P: Write = std::io::Sink> {
    pub(super) enc: &'a mut Encoder<W, P>,
    pub(super) name: Vec<u8>,
    pub(super) at: u64,
    pub(super) size: u64,
    pub(super) remaining: u64,
    pub(super) done: bool,
}

impl<W: Write, P: Write> FileWriter<'_, W, P> {
    /// Bytes still owed.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.remaining {
            return Err(Error::invalid(
                format!("file {:?}", String::from_utf8_lossy(&self.name)),
                "more content than its announced size",
            ));
        }
        self.enc.payload_raw(data)?;
        self.remaining -= data.len() as u64;
        Ok(())
    }

    /// Complete the file; its offset is what hardlinks to it point back to.
    pub fn finish(mut self) -> Result<LinkOffset> {
        if self.remaining != 0 {
            return Err(Error::invalid(
                format!("file {:?}", String::from_utf8_lossy(&self.name)),
                format!("{} bytes short of its announced size", self.remaining),
            ));
        }
        self.done = true;
        let (name, at) = (std::mem::take(&mut self.name), self.at);
        // pxar 1.0.0: a split file's goodbye size is its metadata plus its payload.
        let extra = if self.enc.payload.is_some() {
            self.size
        } else {
            0
        };
        self.enc.end_entry(&name, at, extra);
        Ok(LinkOffset(at))
    }
}

impl<W: Write, P: Write> Drop for FileWriter<'_, W, P> {
    fn drop(&mut self) {
        if !self.done {
            self.enc.broken = true;
        }
    }
}
