//! Where the walk's entries go: the encoder, through a lookahead queue in metadata
//! change detection. An unchanged file (same metadata and size as the previous
//! archive's entry at its path, `pxar_prev`) is queued with the entries after it until
//! a file must be read (or 256 files wait); then the queue is decided by PBS's rule: the
//! whole chunks of the previous payload stream holding the queued files are injected
//! into the new payload stream and each file becomes a PAYLOAD_REF into them, unless
//! the padding this leaves (injected bytes no file uses: removed or changed files'
//! payloads) would exceed 10% (PBS's `CHUNK_PADDING_THRESHOLD`) of the injected bytes;
//! then the queued files are read and written again. The ratio is the archive's so
//! far, not the queue's alone: a change costs up to a chunk of padding, which a short
//! run of unchanged files after it cannot amortize but the archive does; and padding
//! within one chunk is always accepted, as no reuse can cost less.
//! Payload references go forward through the stream, in metadata order.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use crate::backup::pxar_prev::{OldPayload, Previous};
use crate::backup::upload::ChunkSink;
use crate::pxar::encoder::{Encoder, LinkOffset, Metadata};
use crate::pxar::format::HEADER_SIZE;
use crate::util::digest::Digest;
use crate::util::error::{Error, Result};

/// Padding above this share of the injected bytes: re-encode instead (PBS: 0.1).
const CHUNK_PADDING_THRESHOLD: f64 = 0.1;
/// Queued unchanged files (each holds its open file, to be read if re-encoded).
const MAX_QUEUED_FILES: usize = 256;

/// A payload output that can take whole chunks of an earlier stream.
pub(super) trait Inject: Write {
    /// Append `chunks` after a forced cut, dropping up to `absorb` bytes written last
    /// (which the first chunk begins with); returns how many were dropped.
    fn inject(&mut self, chunks: &[(u64, Digest)], absorb: u64) -> std::io::Result<u64>;
}

impl Inject for ChunkSink {
    fn inject(&mut self, chunks: &[(u64, Digest)], absorb: u64) -> std::io::Result<u64> {
        ChunkSink::inject(self, chunks, absorb)
    }
}

impl<T: Inject> Inject for &mut T {
    fn inject(&mut self, chunks: &[(u64, Digest)], absorb: u64) -> std::io::Result<u64> {
        (**self).inject(chunks, absorb)
    }
}

impl Inject for std::io::Sink {
    fn inject(&mut self, _: &[(u64, Digest)], _: u64) -> std::io::Result<u64> {
        Err(std::io::Error::other("not a split archive"))
    }
}

/// Files read and files referenced, with their content bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileCounts {
    pub read: u64,
    pub bytes_read: u64,
    pub reused: u64,
    pub bytes_reused: u64,
}

/// An unchanged file waiting for the queue's decision, open to be read if need be.
struct Queued {
    name: Vec<u8>,
    meta: Metadata,
    md: std::fs::Metadata,
    file: File,
    shown: String,
    old: OldPayload,
}

/// An entry waiting for the queue's decision.
enum Op {
    File(Box<Queued>),
    Dir(Vec<u8>, Metadata),
    DirEnd,
    Symlink(Vec<u8>, Metadata, Vec<u8>),
    Device(Vec<u8>, Metadata, u64, u64),
    Special(Vec<u8>, Metadata),
    Hardlink(Vec<u8>, Vec<u8>, LinkOffset),
}

/// The previous chunk injected last: its index, where it starts in the new stream,
/// and the payload position right after it (still there: nothing written since).
#[derive(Clone, Copy)]
struct Last {
    index: usize,
    new_start: u64,
    pos_after: u64,
    /// Where the last file referenced from it ends in the previous stream.
    old_end: u64,
}

pub(super) struct Out<W: Write, P: Inject> {
    pub enc: Encoder<W, P>,
    prev: Option<Previous>,
    queue: Vec<Op>,
    queued_files: usize,
    last: Option<Last>,
    /// Bytes of the chunks injected so far, the part no file uses, the largest chunk.
    injected: u64,
    padding: u64,
    largest: u64,
    pub counts: FileCounts,
    pub warnings: u64,
    buf: Vec<u8>,
}

impl<W: Write, P: Inject> Out<W, P> {
    pub fn new(enc: Encoder<W, P>, prev: Option<Previous>) -> Self {
        Out {
            enc,
            prev,
            queue: Vec::new(),
            queued_files: 0,
            last: None,
            injected: 0,
            padding: 0,
            largest: 0,
            counts: FileCounts::default(),
            warnings: 0,
            buf: vec![0; 1 << 20],
        }
    }

    pub fn previous(&self) -> Option<&Previous> {
        self.prev.as_ref()
    }

    pub fn create_directory(&mut self, name: &[u8], meta: &Metadata) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.create_directory(name, meta);
        }
        self.queue.push(Op::Dir(name.to_vec(), meta.clone()));
        Ok(())
    }

    pub fn finish_directory(&mut self) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.finish_directory();
        }
        self.queue.push(Op::DirEnd);
        Ok(())
    }

    pub fn add_symlink(&mut self, name: &[u8], meta: &Metadata, target: &[u8]) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.add_symlink(name, meta, target);
        }
        self.queue
            .push(Op::Symlink(name.to_vec(), meta.clone(), target.to_vec()));
        Ok(())
    }

    pub fn add_device(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        major: u64,
        minor: u64,
    ) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.add_device(name, meta, major, minor);
        }
        self.queue
            .push(Op::Device(name.to_vec(), meta.clone(), major, minor));
        Ok(())
    }

    pub fn add_fifo_or_socket(&mut self, name: &[u8], meta: &Metadata) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.add_fifo_or_socket(name, meta);
        }
        self.queue.push(Op::Special(name.to_vec(), meta.clone()));
        Ok(())
    }

    pub fn add_hardlink(&mut self, name: &[u8], target: &[u8], offset: LinkOffset) -> Result<()> {
        if self.queue.is_empty() {
            return self.enc.add_hardlink(name, target, offset);
        }
        self.queue
            .push(Op::Hardlink(name.to_vec(), target.to_vec(), offset));
        Ok(())
    }

    /// A file whose content is in memory (the `.pxarexclude-cli` file).
    pub fn add_file(&mut self, name: &[u8], meta: &Metadata, data: &[u8]) -> Result<()> {
        self.flush(true)?;
        self.settle_tail();
        self.enc.add_file(name, meta, data).map(|_| ())
    }

    /// A file to read now (new, changed, or with other names: hardlinks point at its
    /// offset, which only a file written now has).
    pub fn read_file(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        md: &std::fs::Metadata,
        file: &mut File,
        shown: &str,
    ) -> Result<LinkOffset> {
        self.flush(true)?;
        self.settle_tail();
        self.copy(name, meta, md, file, shown)
    }

    /// An unchanged file, referenced from the previous payload stream unless the
    /// queue's decision says otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn unchanged_file(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        md: std::fs::Metadata,
        file: File,
        shown: String,
        old: OldPayload,
    ) -> Result<()> {
        self.queue.push(Op::File(Box::new(Queued {
            name: name.to_vec(),
            meta: meta.clone(),
            md,
            file,
            shown,
            old,
        })));
        self.queued_files += 1;
        if self.queued_files >= MAX_QUEUED_FILES {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Decide the queue and write it. The queued files are referenced if the padding
    /// of all chunks injected into this archive so far, these included, stays at most
    /// 10% of their bytes (or within one chunk, which a single change always costs).
    /// `final_tail`: a file is written or the archive ends next, so the unused tail of
    /// the last chunk injected for the queue is padding now, not pending.
    fn flush(&mut self, final_tail: bool) -> Result<()> {
        if self.queue.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.queue);
        self.queued_files = 0;
        let files = ops.iter().any(|op| matches!(op, Op::File(_)));
        let reuse = match self.simulate(&ops, final_tail && files) {
            Some((total, padding, largest)) => {
                let total = self.injected + total;
                let padding = self.padding + padding;
                let largest = self.largest.max(largest);
                let ok =
                    padding as f64 <= CHUNK_PADDING_THRESHOLD * total as f64 || padding <= largest;
                log::debug!(
                    "queue of {} entries: {padding} of {total} injected bytes padding: {}",
                    ops.len(),
                    if ok { "referenced" } else { "read again" }
                );
                if ok {
                    (self.injected, self.padding, self.largest) = (total, padding, largest);
                }
                ok
            }
            None => false,
        };
        if !reuse {
            self.settle_tail();
        }
        for op in ops {
            match op {
                Op::File(q) => {
                    let mut q = *q;
                    if reuse {
                        self.reference(&q.name, &q.meta, q.md.len(), q.old)?;
                    } else {
                        self.copy(&q.name, &q.meta, &q.md, &mut q.file, &q.shown)?;
                    }
                }
                Op::Dir(name, meta) => self.enc.create_directory(&name, &meta)?,
                Op::DirEnd => self.enc.finish_directory()?,
                Op::Symlink(name, meta, target) => self.enc.add_symlink(&name, &meta, &target)?,
                Op::Device(name, meta, major, minor) => {
                    self.enc.add_device(&name, &meta, major, minor)?
                }
                Op::Special(name, meta) => self.enc.add_fifo_or_socket(&name, &meta)?,
                Op::Hardlink(name, target, offset) => {
                    self.enc.add_hardlink(&name, &target, offset)?
                }
            }
        }
        if reuse && final_tail && files {
            // Its tail was counted above.
            self.last = None;
        }
        Ok(())
    }

    /// The last injected chunk, if the payload stream still ends with it.
    fn open_last(&self) -> Option<Last> {
        self.last
            .filter(|l| self.enc.payload_position() == Some(l.pos_after))
    }

    /// The chunks to inject for `old`: from its first, or after it when the stream
    /// still ends with that chunk and the file comes after the last one referenced in it.
    /// `open`: the chunk the stream ends with and where the last file referenced in it
    /// ends in the previous stream.
    fn first_new_chunk(open: Option<(usize, u64)>, old: &OldPayload) -> usize {
        match open {
            Some((index, old_end)) if index == old.first && old.start >= old_end => old.first + 1,
            _ => old.first,
        }
    }

    /// What referencing the queued files would inject (bytes, the largest chunk) and
    /// the padding it would make certain: skipped bytes between files inside a chunk,
    /// the head of each chunk run before its first file, and the unused tail of a chunk
    /// the stream moves past. The tail after the last queued file counts when `final_tail`
    /// (a file is written or the archive ends next); otherwise it stays pending, as
    /// later files may still use it (`settle_tail` counts it once the stream moves on).
    fn simulate(&self, ops: &[Op], final_tail: bool) -> Option<(u64, u64, u64)> {
        let prev = self.prev.as_ref()?;
        let mut open = self.open_last().map(|l| (l.index, l.old_end));
        let (mut total, mut padding, mut largest) = (0u64, 0u64, 0u64);
        for op in ops {
            let Op::File(q) = op else { continue };
            let old = &q.old;
            let from = Self::first_new_chunk(open, old);
            match open {
                Some((_, old_end)) if from == old.first + 1 => padding += old.start - old_end,
                _ => {
                    if let Some((index, old_end)) = open {
                        padding += prev.chunk(index)?.end.saturating_sub(old_end);
                    }
                    padding += old.start - prev.chunk(old.first)?.start;
                }
            }
            for i in from..=old.last {
                let c = prev.chunk(i)?;
                total += c.len();
                largest = largest.max(c.len());
            }
            open = Some((old.last, old.end));
        }
        if let (true, Some((index, old_end))) = (final_tail, open) {
            padding += prev.chunk(index)?.end.saturating_sub(old_end);
        }
        Some((total, padding, largest))
    }

    /// The stream moves past the last injected chunk: its unused tail is padding now.
    fn settle_tail(&mut self) {
        let tail = match (self.open_last(), &self.prev) {
            (Some(l), Some(prev)) => prev
                .chunk(l.index)
                .map_or(0, |c| c.end.saturating_sub(l.old_end)),
            _ => 0,
        };
        self.padding += tail;
        self.last = None;
    }

    /// Write an unchanged file as a PAYLOAD_REF, injecting the chunks it needs.
    fn reference(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        size: u64,
        old: OldPayload,
    ) -> Result<()> {
        let prev = self
            .prev
            .as_ref()
            .expect("only queued with a previous archive");
        let open = self.open_last().map(|l| (l.index, l.old_end));
        let from = Self::first_new_chunk(open, &old);
        if from <= old.last {
            let chunks: Vec<(u64, Digest)> = (from..=old.last)
                .map(|i| prev.chunk(i).map(|c| (c.len(), c.digest)))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::invalid(&prev.what, "a payload chunk out of range"))?;
            let pos = self.enc.payload_position().unwrap_or(0);
            // The new stream's start marker is the previous stream's first bytes: taking
            // its first chunk over keeps every offset (and so the metadata stream) as it
            // was, and an unchanged tree's archive identical.
            let absorb = if from == 0 && pos == HEADER_SIZE && prev.starts_with_marker {
                HEADER_SIZE
            } else {
                0
            };
            let added: u64 = chunks.iter().map(|c| c.0).sum();
            let ends_with_tail = prev.ends_with_tail && Some(old.last) == prev.last_chunk();
            let out = self
                .enc
                .payload_mut()
                .ok_or_else(|| Error::invalid("pxar payload stream", "not a split archive"))?;
            let absorb = out
                .inject(&chunks, absorb)
                .map_err(|e| Error::io("pxar payload stream", e))?;
            self.enc.payload_injected(absorb, added, ends_with_tail)?;
            if let Some(tx) = &prev.validate {
                for (_, d) in &chunks {
                    let _ = tx.send(*d);
                }
            }
            let last_len = chunks.last().map_or(0, |c| c.0);
            let pos_after = self.enc.payload_position().unwrap_or(0);
            self.last = Some(Last {
                index: old.last,
                new_start: pos_after - last_len,
                pos_after,
                old_end: 0,
            });
        }
        // The chunk the file starts in is now the last injected one or an earlier one of
        // this injection: find its new start from the last chunk's.
        let prev = self.prev.as_ref().expect("checked");
        let last = self.last.expect("a chunk was injected");
        let mut start = last.new_start;
        for i in old.first..old.last {
            start -= prev.chunk(i).map_or(0, |c| c.len());
        }
        let first = prev.chunk(old.first).expect("checked when queued");
        let offset = start + (old.start - first.start);
        self.enc.add_payload_ref(name, meta, offset, size)?;
        if let Some(l) = &mut self.last {
            l.old_end = old.end;
        }
        self.counts.reused += 1;
        self.counts.bytes_reused += size;
        Ok(())
    }

    /// Write a file read from `file`, `shown` naming it in warnings.
    fn copy(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        md: &std::fs::Metadata,
        file: &mut File,
        shown: &str,
    ) -> Result<LinkOffset> {
        let size = md.len();
        let mut w = self.enc.create_file(name, meta, size)?;
        let mut failed = None;
        while w.remaining() > 0 {
            let want = w.remaining().min(self.buf.len() as u64) as usize;
            match file.read(&mut self.buf[..want]) {
                Ok(0) => break,
                Ok(n) => w.write(&self.buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let short = w.remaining();
        if short > 0 {
            // The PAYLOAD header announced `size` bytes: pad as the PBS client does.
            self.buf.fill(0);
            while w.remaining() > 0 {
                let n = w.remaining().min(self.buf.len() as u64) as usize;
                w.write(&self.buf[..n])?;
            }
        }
        let offset = w.finish()?;
        self.counts.read += 1;
        self.counts.bytes_read += size - short;
        if let Some(e) = failed {
            self.warn(
                shown,
                format!(
                    "read failed after {} of {size} bytes ({e}): the rest is stored as zeros",
                    size - short
                ),
            );
        } else if short > 0 {
            self.warn(
                shown,
                format!(
                    "shrank while being read ({} of {size} bytes): padded with zeros",
                    size - short
                ),
            );
        }
        match file.metadata() {
            Ok(after)
                if after.len() != size
                    || after.mtime() != md.mtime()
                    || after.mtime_nsec() != md.mtime_nsec() =>
            {
                self.warn(
                    shown,
                    format!(
                        "changed while being read (size {size} -> {}): stored as read",
                        after.len()
                    ),
                );
            }
            _ => {}
        }
        Ok(offset)
    }

    fn warn(&mut self, shown: &str, why: String) {
        self.warnings += 1;
        log::warn!("{shown}: {why}");
    }

    /// Write what is queued and hand back the encoder, to be finished.
    pub fn finish(mut self) -> Result<(Encoder<W, P>, FileCounts, u64)> {
        self.flush(true)?;
        Ok((self.enc, self.counts, self.warnings))
    }
}
