//! A dynamic-index upload: a `std::io::Write` that cuts the stream written into it with
//! the content-defined chunker and hands each chunk to worker threads, which hash it and
//! either reuse it (the base references it: validated in the background, spec §11.5) or
//! compress and insert it. The index entries come back in stream order at `finish`.
//! Memory: the chunk being cut plus a bounded queue of chunks in flight.

use std::collections::HashSet;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::backup::chunker::Chunker;
use crate::backup::{BackupReport, UploadStats};
use crate::store::chunks::{ChunkStore, Inserted};
use crate::store::format::blob;
use crate::util::digest::Digest;
use crate::util::error::{Error, Result};

/// What a worker did with one chunk (of a pxar stream here, of an image in image.rs).
pub(super) struct Done {
    pub(super) seq: usize,
    pub(super) digest: Digest,
    pub(super) len: u64,
    /// `None`: reused from the base; else how the insert went and the encoded size.
    inserted: Option<(Inserted, u64)>,
}

/// The chunks of one stream, in order, and what writing them took.
pub(super) struct Uploaded {
    pub entries: Vec<(u64, Digest)>,
    pub size: u64,
}

pub(super) struct ChunkSink {
    chunker: Chunker,
    buf: Vec<u8>,
    pos: u64,
    seq: usize,
    work: Option<SyncSender<(usize, Vec<u8>)>>,
    done: Receiver<Result<Done>>,
    workers: Vec<JoinHandle<()>>,
    /// Digests by sequence number, filled as workers report.
    digests: Vec<Option<(u64, Digest)>>,
    validate: Option<Sender<Digest>>,
    /// The first failure (a worker's, which `Write` cannot carry with its kind).
    failed: Option<Error>,
    report: BackupReport,
    stats: UploadStats,
}

impl ChunkSink {
    pub(super) fn new(
        store: &ChunkStore,
        reuse: &Arc<HashSet<Digest>>,
        validate: Option<&Sender<Digest>>,
        avg_chunk: u64,
    ) -> ChunkSink {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16);
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(workers);
        let work_rx = Arc::new(parking_lot::Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let handles = (0..workers)
            .map(|_| {
                let (work_rx, done_tx) = (Arc::clone(&work_rx), done_tx.clone());
                let (store, reuse) = (store.clone(), Arc::clone(reuse));
                std::thread::spawn(move || loop {
                    let job = work_rx.lock().recv();
                    let Ok((seq, data)) = job else { break };
                    let res = process(&store, &reuse, seq, &data);
                    if done_tx.send(res).is_err() {
                        break;
                    }
                })
            })
            .collect();
        let chunker = Chunker::new(avg_chunk as usize);
        ChunkSink {
            buf: Vec::with_capacity(chunker.max_size().min(1 << 20)),
            chunker,
            pos: 0,
            seq: 0,
            work: Some(work_tx),
            done: done_rx,
            workers: handles,
            digests: Vec::new(),
            validate: validate.cloned(),
            failed: None,
            report: BackupReport::default(),
            stats: UploadStats::default(),
        }
    }

    /// The real error behind a failed `write` (a store error keeps its kind).
    pub(super) fn take_error(&mut self) -> Option<Error> {
        self.failed.take()
    }

    fn record(&mut self, d: Done) {
        if self.digests.len() <= d.seq {
            self.digests.resize(d.seq + 1, None);
        }
        self.digests[d.seq] = Some((d.len, d.digest));
        count(
            &d,
            &mut self.report,
            &mut self.stats,
            self.validate.as_ref(),
        );
    }

    fn drain(&mut self) {
        while let Ok(r) = self.done.try_recv() {
            match r {
                Ok(d) => self.record(d),
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            }
        }
    }

    fn cut(&mut self) -> io::Result<()> {
        let cap = self.chunker.max_size().min(1 << 20);
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(cap));
        let seq = self.seq;
        self.seq += 1;
        let sent = self.work.as_ref().map(|w| w.send((seq, chunk)));
        self.drain();
        if self.failed.is_none() && !matches!(sent, Some(Ok(()))) {
            self.failed = Some(Error::other("chunk upload", "the worker threads stopped"));
        }
        match self.failed {
            Some(_) => Err(io::Error::other("chunk upload failed")),
            None => Ok(()),
        }
    }

    /// Append whole chunks of an earlier stream as they are (`(length, digest)`, never
    /// read, hashed or written: the caller validates them), after cutting the current
    /// chunk short. `absorb`: the bytes written last that the first of them already
    /// begins with (the caller knows them equal); they are dropped, not cut, if they
    /// are still in the current chunk. Returns how many were dropped.
    pub(super) fn inject(&mut self, chunks: &[(u64, Digest)], absorb: u64) -> io::Result<u64> {
        if self.failed.is_some() {
            return Err(io::Error::other("chunk upload failed"));
        }
        let absorb = if absorb <= self.buf.len() as u64 {
            absorb
        } else {
            0
        };
        self.buf.truncate(self.buf.len() - absorb as usize);
        self.pos -= absorb;
        if !self.buf.is_empty() {
            self.cut()?;
        }
        self.chunker.reset();
        for &(len, digest) in chunks {
            let seq = self.seq;
            self.seq += 1;
            if self.digests.len() <= seq {
                self.digests.resize(seq + 1, None);
            }
            self.digests[seq] = Some((len, digest));
            self.report.chunks += 1;
            self.report.bytes += len;
            self.report.reused_chunks += 1;
            self.pos += len;
        }
        Ok(absorb)
    }

    /// Cut the last chunk, wait for the workers, and return the entries in stream
    /// order; the counters go into `report` and `stats`.
    pub(super) fn finish(
        mut self,
        report: &mut BackupReport,
        stats: &mut UploadStats,
    ) -> Result<Uploaded> {
        if !self.buf.is_empty() && self.failed.is_none() {
            let _ = self.cut();
        }
        self.work = None;
        for h in std::mem::take(&mut self.workers) {
            if h.join().is_err() {
                self.failed
                    .get_or_insert(Error::other("chunk upload", "a worker thread panicked"));
            }
        }
        while let Ok(r) = self.done.recv() {
            match r {
                Ok(d) => self.record(d),
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut end = 0u64;
        let mut entries = Vec::with_capacity(self.digests.len());
        for (i, d) in self.digests.iter().enumerate() {
            let (len, digest) = d.ok_or_else(|| {
                Error::other("chunk upload", format!("chunk {i} was never processed"))
            })?;
            end += len;
            entries.push((end, digest));
        }
        if entries.len() != self.seq {
            return Err(Error::other("chunk upload", "chunks were lost"));
        }
        add_report(report, &self.report);
        stats.count += self.stats.count;
        stats.size += self.stats.size;
        stats.compressed_size += self.stats.compressed_size;
        stats.duplicates += self.stats.duplicates;
        Ok(Uploaded {
            entries,
            size: self.pos,
        })
    }
}

fn add_report(to: &mut BackupReport, r: &BackupReport) {
    to.bytes += r.bytes;
    to.chunks += r.chunks;
    to.new_chunks += r.new_chunks;
    to.new_bytes += r.new_bytes;
    to.reused_chunks += r.reused_chunks;
}

/// Count one processed chunk into `report` and `stats`; a reused one goes to `validate`
/// (checked in the background, spec §11.5).
pub(super) fn count(
    d: &Done,
    report: &mut BackupReport,
    stats: &mut UploadStats,
    validate: Option<&Sender<Digest>>,
) {
    report.chunks += 1;
    report.bytes += d.len;
    match d.inserted {
        None => {
            report.reused_chunks += 1;
            if let Some(tx) = validate {
                let _ = tx.send(d.digest);
            }
        }
        Some((kind, enc_len)) => {
            stats.count += 1;
            stats.size += d.len;
            stats.compressed_size += enc_len;
            if kind == Inserted::Existed {
                stats.duplicates += 1;
                report.reused_chunks += 1;
            } else {
                report.new_chunks += 1;
                report.new_bytes += d.len;
            }
        }
    }
}

/// Hash chunk `seq` and, unless the base references it, encode and store it.
pub(super) fn process(
    store: &ChunkStore,
    reuse: &HashSet<Digest>,
    seq: usize,
    data: &[u8],
) -> Result<Done> {
    let digest = Digest::of(data);
    let len = data.len() as u64;
    let inserted = if reuse.contains(&digest) {
        None
    } else {
        blob::encode_with(data, true, |enc| {
            Ok((store.insert_chunk(&digest, enc)?, enc.len() as u64))
        })
        .map(Some)?
    };
    Ok(Done {
        seq,
        digest,
        len,
        inserted,
    })
}

impl io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("chunk upload failed"));
        }
        let mut rest = data;
        while let Some(n) = self.chunker.scan(rest) {
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            self.cut()?;
        }
        self.buf.extend_from_slice(rest);
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ChunkSink {
    fn drop(&mut self) {
        // An abandoned upload: stop the workers (they end when the queue closes).
        self.work = None;
        for h in std::mem::take(&mut self.workers) {
            let _ = h.join();
        }
    }
}
