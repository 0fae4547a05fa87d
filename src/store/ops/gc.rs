//! Garbage collection (spec §6, §11.8): under the exclusive process lock, mark every
//! chunk referenced by any index below the store (hidden folders excluded) by touching
//! its atime, then sweep chunks whose atime is older than the start minus the cutoff.
//! Writes `.gc-status`.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::store::chunks::ChunkFileKind;
use crate::store::files;
use crate::store::{Datastore, FILE_MODE};
use crate::util::digest::Digest;
use crate::util::error::{Error, IoContext, Result};
use crate::util::sys;
use crate::util::upid::Upid;

/// PBS's default cutoff: 24 h 5 min (relatime updates atime at most once a day).
pub const DEFAULT_ATIME_CUTOFF: u64 = 86_400 + 300;
const GC_STATUS: &str = ".gc-status";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub upid: String,
    pub index_file_count: u64,
    /// Sum of the logical sizes of all indexes.
    pub index_data_bytes: u64,
    pub disk_chunks: u64,
    pub disk_bytes: u64,
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    pub pending_chunks: u64,
    pub pending_bytes: u64,
    pub removed_bad: u64,
    pub still_bad: u64,
    /// Referenced chunks that are missing.
    pub missing_chunks: u64,
}

impl GcReport {
    pub fn dedup_factor(&self) -> f64 {
        if self.disk_bytes == 0 {
            1.0
        } else {
            self.index_data_bytes as f64 / self.disk_bytes as f64
        }
    }
}

/// Start time of the newest GC recorded in `.gc-status` (from its UPID).
pub fn last_gc_start(ds: &Datastore) -> Option<i64> {
    let text = fs::read(ds.root().join(GC_STATUS)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Upid::parse(v.get("upid")?.as_str()?)
        .ok()
        .map(|u| u.starttime)
}

/// Every `*.fidx` / `*.didx` below the store root, hidden entries skipped.
fn find_indexes(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e)
                if dir.file_name().is_some_and(|n| n == "lost+found")
                    && e.raw_os_error() == Some(libc::EPERM) =>
            {
                continue
            }
            Err(e) => return Err(Error::io(format!("gc: list {}", dir.display()), e)),
        };
        for e in rd {
            let e = e.ctx(dir.display())?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let ft = e.file_type().ctx(e.path().display())?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && (name.ends_with(".fidx") || name.ends_with(".didx")) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Check that atime updates stick: move an existing chunk's atime into the past, touch
/// it, and see it move (no new chunk, no sleep). An empty store needs no check.
fn check_atime_updates(ds: &Datastore, start: i64) -> Result<()> {
    let cs = ds.chunk_store();
    for prefix in 0..=0xffffu16 {
        let Some(f) = cs
            .list_prefix(prefix)?
            .into_iter()
            .find(|f| matches!(f.kind, ChunkFileKind::Chunk(_)))
        else {
            continue;
        };
        let old = f.atime;
        sys::set_atime(&f.path, start - 2 * 86_400).ctx(f.path.display())?;
        sys::touch_atime(&f.path).ctx(f.path.display())?;
        let now = fs::metadata(&f.path).ctx(f.path.display())?.atime();
        if now < start - 1 {
            let _ = sys::set_atime(&f.path, old);
            return Err(Error::io(
                format!(
                    "gc: the filesystem of {} does not honour atime updates (touched {}, atime stayed {now})",
                    ds.root().display(),
                    f.path.display()
                ),
                std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            ));
        }
        return Ok(());
    }
    Ok(())
}

/// Run a GC with `cutoff` seconds (default 24h5m).
pub fn run_gc(ds: &Datastore, cutoff: u64) -> Result<GcReport> {
    ds.check_writable()?;
    let _lock = ds.locker().lock_process(true)?;
    // The coarse clock is what the kernel stamps atimes with: a chunk touched now never
    // gets an atime before `start` (spec §11.8).
    let start_ns = sys::coarse_now_ns();
    let start = start_ns.0;
    let upid = Upid::new("garbage_collection", &ds.name(), "root@pam");
    let mut report = GcReport {
        upid: upid.to_string(),
        ..Default::default()
    };
    check_atime_updates(ds, start)?;

    // Phase 1: mark.
    let cs = ds.chunk_store();
    let mut touched: HashSet<Digest> = HashSet::new();
    for path in find_indexes(ds.root())? {
        let idx = files::read_index(&path).map_err(|e| {
            e.context("gc aborted (an unreadable index would let its chunks be swept)")
        })?;
        report.index_file_count += 1;
        report.index_data_bytes += idx.size();
        for c in idx.chunks() {
            if !touched.insert(c.digest) {
                continue;
            }
            if !cs.touch(&c.digest)? {
                report.missing_chunks += 1;
                log::warn!(
                    "gc: chunk {} referenced by {} is missing",
                    c.digest,
                    path.display()
                );
                let base = cs.chunk_path(&c.digest);
                for n in 0..=9 {
                    let bad = base.with_file_name(format!("{}.{n}.bad", c.digest));
                    let _ = sys::touch_atime(&bad);
                }
            }
        }
    }

    // Phase 2: sweep, prefix folders shared out to all cores.
    let min_atime = start - cutoff as i64;
    let next = std::sync::atomic::AtomicU32::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let parts: Vec<Result<GcReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut part = GcReport::default();
                    loop {
                        let prefix = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if prefix > 0xffff {
                            return Ok(part);
                        }
                        sweep_prefix(cs, prefix as u16, min_atime, start_ns, &mut part)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    for part in parts {
        let p = part?;
        report.removed_chunks += p.removed_chunks;
        report.removed_bytes += p.removed_bytes;
        report.pending_chunks += p.pending_chunks;
        report.pending_bytes += p.pending_bytes;
        report.disk_chunks += p.disk_chunks;
        report.disk_bytes += p.disk_bytes;
        report.removed_bad += p.removed_bad;
        report.still_bad += p.still_bad;
    }

    let status = json!({
        "upid": report.upid,
        "index-file-count": report.index_file_count,
        "index-data-bytes": report.index_data_bytes,
        "disk-bytes": report.disk_bytes,
        "disk-chunks": report.disk_chunks,
        "removed-bytes": report.removed_bytes,
        "removed-chunks": report.removed_chunks,
        "pending-bytes": report.pending_bytes,
        "pending-chunks": report.pending_chunks,
        "removed-bad": report.removed_bad,
        "still-bad": report.still_bad,
    });
    let text = serde_json::to_string_pretty(&status).expect("json");
    files::replace_file(
        &ds.root().join(GC_STATUS),
        text.as_bytes(),
        FILE_MODE,
        ds.owner(),
        true,
    )?;
    Ok(report)
}

/// Sweep one prefix folder into `r`.
fn sweep_prefix(
    cs: &crate::store::chunks::ChunkStore,
    prefix: u16,
    min_atime: i64,
    start_ns: (i64, i64),
    r: &mut GcReport,
) -> Result<()> {
    for f in cs.list_prefix(prefix)? {
        match f.kind {
            ChunkFileKind::Chunk(_) => {
                if f.atime < min_atime {
                    remove(&f.path)?;
                    r.removed_chunks += 1;
                    r.removed_bytes += f.size;
                    continue;
                }
                // Not marked by this run (marks are stamped from the same coarse clock,
                // so never before the start): removed by a later gc.
                if (f.atime, f.atime_nsec) < start_ns {
                    r.pending_chunks += 1;
                    r.pending_bytes += f.size;
                }
                r.disk_chunks += 1;
                r.disk_bytes += f.size;
            }
            ChunkFileKind::Bad(_) => {
                if f.atime < min_atime {
                    remove(&f.path)?;
                    r.removed_bad += 1;
                } else {
                    r.still_bad += 1;
                }
            }
            ChunkFileKind::Other => {}
        }
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("gc: remove {}", path.display()), e)),
    }
}
