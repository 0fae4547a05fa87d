//! The archives that are not pxar: an image file as a fixed index of equal chunks
//! (read in order, hashed, compressed and inserted on every core) and a small file as one
//! blob. Both write into the snapshot folder `backup_locked` holds locked.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::sync::mpsc;

use super::image_read::{ChunkBuf, ImageReader};
use super::source::{empty_image, source_len};
use super::upload::{self, Done};
use super::{ArchiveSource, BackupOptions, BackupReport, MAX_BLOB_SOURCE};
use crate::store::files::{self, TempFile};
use crate::store::format::blob;
use crate::store::format::index::fixed::FixedIndex;
use crate::store::format::manifest::{CryptMode, FileEntry};
use crate::store::format::names::BackupDir;
use crate::store::{Datastore, FILE_MODE};
use crate::util::digest::Digest;
use crate::util::error::{Error, IoContext, Result};

/// What the manifest's `chunk_upload_stats` reports of the image chunks written.
#[derive(Default)]
pub(super) struct UploadStats {
    pub(super) count: u64,
    pub(super) size: u64,
    pub(super) compressed_size: u64,
    pub(super) duplicates: u64,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backup_image(
    ds: &Datastore,
    dir: &BackupDir,
    src: &ArchiveSource,
    path: &std::path::Path,
    opts: &BackupOptions,
    reuse: &HashSet<Digest>,
    validate: Option<&mpsc::Sender<Digest>>,
    report: &mut BackupReport,
    stats: &mut UploadStats,
) -> Result<FileEntry> {
    let mut file = File::open(path).ctx(path.display())?;
    let size = source_len(&mut file, path)?;
    if size == 0 {
        // Checked before anything was created; the source shrank since. Never write an
        // empty fixed index (spec §11.9).
        return Err(empty_image(src, path));
    }
    let cs = opts.chunk_size;
    let n = size.div_ceil(cs) as usize;
    let mut digests = vec![Digest([0; 32]); n];
    // Read sequentially; hash, compress and insert on all cores.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(1);
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(usize, ChunkBuf)>(workers * 2);
    // Workers own the receiver: once they stop, the reader's next send fails and it stops.
    let work_rx = std::sync::Arc::new(parking_lot::Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::channel::<Result<Done>>();
    // Chunk buffers go back to the reader once encoded: a few are reused for the
    // whole image, so no chunk is read into memory never touched before.
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    let store = ds.chunk_store();
    let mut read_err = None;
    std::thread::scope(|s| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let spare_tx = spare_tx.clone();
            let work_rx = std::sync::Arc::clone(&work_rx);
            s.spawn(move || loop {
                let job = work_rx.lock().recv();
                let Ok((i, chunk)) = job else { break };
                let res = upload::process(store, reuse, i, chunk.data());
                // The reader may be gone (done, or failed): the buffer is then freed.
                let _ = spare_tx.send(chunk.buf);
                if done_tx.send(res).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        drop(spare_tx);
        drop(work_rx);
        let mut image = ImageReader::new(path, file, cs);
        let reader = s.spawn(move || -> Result<()> {
            for i in 0..n {
                let len = (size - i as u64 * cs).min(cs);
                let spare = spare_rx.try_recv().unwrap_or_default();
                let chunk = image.read_chunk(i as u64 * cs, len as usize, spare)?;
                if work_tx.send((i, chunk)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut done = 0u64;
        for r in done_rx {
            match r {
                Ok(d) => {
                    digests[d.seq] = d.digest;
                    done += d.len;
                    upload::count(&d, report, stats, validate);
                    if let Some(p) = opts.progress {
                        p(done, size);
                    }
                }
                Err(e) => {
                    read_err.get_or_insert(e);
                    // Dropping the receiver stops the workers and the reader.
                    break;
                }
            }
        }
        if let Ok(Err(e)) = reader.join() {
            read_err.get_or_insert(e);
        }
    });
    if let Some(e) = read_err {
        return Err(e);
    }
    let idx = FixedIndex::new(size, cs, digests, crate::util::time::now())?;
    let folder = ds.fs().dir(&ds.snapshot_path(dir))?;
    files::write_index_file(&folder.join(src.server_name()), &idx.to_bytes(), ds.owner())
        .map_err(|e| e.context(format!("{dir}/{}", src.server_name())))?;
    Ok(FileEntry {
        filename: src.server_name(),
        crypt_mode: CryptMode::None,
        size,
        csum: idx.csum,
    })
}

pub(super) fn backup_blob(
    ds: &Datastore,
    dir: &BackupDir,
    src: &ArchiveSource,
    path: &std::path::Path,
    report: &mut BackupReport,
) -> Result<FileEntry> {
    // Checked by check_source; read with a bound in case the file grew since.
    let mut data = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_BLOB_SOURCE + 1).read_to_end(&mut data))
        .ctx(path.display())?;
    if data.len() as u64 > MAX_BLOB_SOURCE {
        return Err(Error::TooLarge {
            what: format!("{} (grew while read)", path.display()),
            size: data.len() as u64,
            limit: MAX_BLOB_SOURCE,
        });
    }
    let encoded = blob::encode(&data, true)?;
    // Through the opened snapshot folder: no symlink planted on the way is followed.
    let folder = ds.fs().dir(&ds.snapshot_path(dir))?;
    let mut tmp = TempFile::new(&folder.path(), src.name(), FILE_MODE, ds.owner())?;
    tmp.write_all(&encoded)?;
    tmp.sync()?;
    tmp.persist(&folder.join(src.server_name()))
        .map_err(|e| e.context(format!("{dir}/{}", src.server_name())))?;
    report.bytes += data.len() as u64;
    Ok(FileEntry {
        filename: src.server_name(),
        crypt_mode: CryptMode::None,
        size: encoded.len() as u64,
        csum: Digest::of(&encoded),
    })
}
