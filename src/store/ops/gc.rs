//! Garbage collection (spec §6, §11.8): under the exclusive process lock, mark every
//! chunk referenced by any index below the store (hidden folders excluded) by touching
//! its atime, then sweep chunks whose atime is older than the start minus the cutoff.
//! Writes `.gc-status`. On a PBS-managed store GC is PBS's job: refused unless forced,
//! and a forced run drains PBS ≥ 4.2's move journal before sweeping (spec §11.9).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::store::chunks::{ChunkFileKind, ChunkStore};
use crate::store::files;
use crate::store::ops::{Progress, ProgressFn};
use crate::store::pbs_config::StoreConfig;
use crate::store::{Datastore, FILE_MODE};
use crate::util::digest::Digest;
use crate::util::error::{Error, IoContext, LockWhy, Result};
use crate::util::sys;
use crate::util::upid::Upid;

/// PBS's default cutoff: 24 h 5 min (relatime updates atime at most once a day).
pub const DEFAULT_ATIME_CUTOFF: u64 = 86_400 + 300;
const GC_STATUS: &str = ".gc-status";
/// PBS's wait for the move journal's lock (`DRAIN_LOCK_TIMEOUT`, spec §11.9).
const JOURNAL_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A journal holds the index paths of moves since the last GC; far less than this.
const JOURNAL_MAX_BYTES: u64 = 64 << 20;

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
    /// PBS's `GarbageCollectionStatus` object (its field names), as in `.gc-status`.
    pub fn status_json(&self) -> serde_json::Value {
        json!({
            "upid": self.upid,
            "index-file-count": self.index_file_count,
            "index-data-bytes": self.index_data_bytes,
            "disk-bytes": self.disk_bytes,
            "disk-chunks": self.disk_chunks,
            "removed-bytes": self.removed_bytes,
            "removed-chunks": self.removed_chunks,
            "pending-bytes": self.pending_bytes,
            "pending-chunks": self.pending_chunks,
            "removed-bad": self.removed_bad,
            "still-bad": self.still_bad,
        })
    }

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

/// Check that atime updates stick on the first chunk the mark phase keeps: move its
/// atime into the past, touch it, and see it move (no new chunk, no sleep). Done inside
/// the mark phase because only a kept chunk needs the check, and finding any chunk by
/// listing would cost a pass over all 65536 prefix folders when few or none exist.
fn check_atime_updates(ds: &Datastore, digest: &Digest, start: i64) -> Result<bool> {
    let cs = ds.chunk_store();
    let path = cs.chunk_path(digest);
    match sys::set_atime(&path, start - 2 * 86_400) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path.display(), e)),
    }
    if !cs.touch(digest)? {
        return Ok(false);
    }
    let now = fs::symlink_metadata(&path).ctx(path.display())?.atime();
    if now < start - 1 {
        return Err(Error::io(
            format!(
                "gc: the filesystem of {} does not honour atime updates (touched {}, atime stayed {now})",
                ds.root().display(),
                path.display()
            ),
            std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        ));
    }
    Ok(true)
}

/// Run a GC with `cutoff` seconds (default 24h5m). A store configured in PBS is
/// refused unless `force`: PBS's GC alone knows when its running backup writers started
/// (the safe cutoff), and while an outside GC holds the exclusive process lock PBS's
/// backups, pulls and tape restores cannot start.
pub fn run_gc(ds: &Datastore, cutoff: u64, force: bool) -> Result<GcReport> {
    run_gc_with_progress(ds, cutoff, force, None)
}

/// `run_gc`, reporting both phases: index files marked (`Progress::GcMark`), then
/// prefix folders swept (`Progress::GcSweep`, from the sweeping threads).
pub fn run_gc_with_progress(
    ds: &Datastore,
    cutoff: u64,
    force: bool,
    progress: Option<ProgressFn>,
) -> Result<GcReport> {
    ds.check_writable()?;
    if let (Some(cfg), false) = (ds.pbs_config(), force) {
        return Err(Error::NotPermitted {
            what: format!("datastore '{}' ({})", cfg.name, ds.root().display()),
            why: format!(
                "PBS manages this datastore, so garbage collection is PBS's job: run \
                 `proxmox-backup-manager garbage-collection start {}` (or pbsfs gc --force, \
                 only when PBS runs no backup)",
                cfg.name
            ),
        });
    }
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
    // Phase 1: mark; last, the indexes PBS moved meanwhile (its move journal).
    let cs = ds.chunk_store();
    let mut mark = Mark {
        touched: HashSet::new(),
        checked: false,
        start,
    };
    let indexes = find_indexes(ds.root())?;
    let total = indexes.len() as u64;
    for (i, path) in indexes.iter().enumerate() {
        mark_index(ds, path, &mut mark, &mut report)?;
        if let Some(tell) = progress {
            tell(Progress::GcMark {
                done: i as u64 + 1,
                total,
            });
        }
    }
    if let Some(cfg) = ds.pbs_config() {
        drain_move_journal(ds, cfg, &mut mark, &mut report)?;
    }

    // Phase 2: sweep, prefix folders shared out to all cores.
    let min_atime = start - cutoff as i64;
    let next = std::sync::atomic::AtomicU32::new(0);
    let swept = std::sync::atomic::AtomicU64::new(0);
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
                        if let Some(tell) = progress {
                            let done = swept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tell(Progress::GcSweep {
                                done: done + 1,
                                total: 0x10000,
                            });
                        }
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

    let text = serde_json::to_string_pretty(&report.status_json()).expect("json");
    files::replace_file(
        &ds.root().join(GC_STATUS),
        text.as_bytes(),
        FILE_MODE,
        ds.owner(),
        true,
    )?;
    Ok(report)
}

/// The mark phase's state: chunks touched this run, whether atime updates were checked.
struct Mark {
    touched: HashSet<Digest>,
    checked: bool,
    start: i64,
}

/// Touch every chunk `path` references (once per run), counting the index and its
/// missing chunks in `report`. An unreadable index aborts the run. Read beneath the
/// store root: no symlink on the way is followed.
fn mark_index(ds: &Datastore, path: &Path, mark: &mut Mark, report: &mut GcReport) -> Result<()> {
    let cs = ds.chunk_store();
    let idx = ds
        .fs()
        .read_index(path)
        .map_err(|e| e.context("gc aborted (an unreadable index would let its chunks be swept)"))?;
    report.index_file_count += 1;
    report.index_data_bytes += idx.size();
    for c in idx.chunks() {
        if !mark.touched.insert(c.digest) {
            continue;
        }
        let present = if mark.checked {
            cs.touch(&c.digest)?
        } else {
            mark.checked = check_atime_updates(ds, &c.digest, mark.start)?;
            mark.checked
        };
        if !present {
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
    Ok(())
}

/// Drain PBS ≥ 4.2's move journal (`<run dir>/locks/<store>/move-journal`, spec §11.9),
/// as PBS's GC does at the end of its mark phase: a namespace or group move appends the
/// new absolute path of each index it is about to rename there (one UTF-8 path per line,
/// PBS `move_journal::append_moved_indices`), so an index the walk missed at both its
/// old and new place is marked here. Under the journal's exclusive `flock` (polled for
/// 10 s, as PBS waits): mark each listed index that still exists, then truncate. An
/// absent journal means no move happened; on an error the journal is left as it was, so
/// PBS's next GC sees the entries again.
fn drain_move_journal(
    ds: &Datastore,
    cfg: &StoreConfig,
    mark: &mut Mark,
    report: &mut GcReport,
) -> Result<()> {
    let path = cfg.move_journal_path();
    let what = format!("move journal {}", path.display());
    // Anyone with the backup user's rights can plant a symlink or a FIFO here: never
    // follow one (truncating its target as root), never block on one.
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&what, e)),
    };
    let meta = file.metadata().ctx(&what)?;
    if !meta.is_file() {
        return Err(Error::invalid(&what, "not a regular file"));
    }
    let mut file = lock_journal(file, &path)?;
    let size = file.metadata().ctx(&what)?.len();
    if size > JOURNAL_MAX_BYTES {
        return Err(Error::TooLarge {
            what,
            size,
            limit: JOURNAL_MAX_BYTES,
        });
    }
    let mut raw = Vec::with_capacity(size as usize);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| (&mut file).take(JOURNAL_MAX_BYTES).read_to_end(&mut raw))
        .ctx(&what)?;
    for line in raw.split(|b| *b == b'\n') {
        let Ok(entry) = std::str::from_utf8(line) else {
            log::warn!("gc: {what}: skipping a line that is not UTF-8");
            continue;
        };
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(rel) = journal_index_rel(ds, cfg, Path::new(entry)) else {
            log::warn!("gc: {what}: ignoring {entry:?}: not an index file inside this datastore");
            continue;
        };
        let index = ds.root().join(&rel);
        match lstat_below(ds.root(), &rel) {
            Ok(m) if m.is_file() => mark_index(ds, &index, mark, report)?,
            // A move that crashed before its rename leaves an entry for nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("gc: {what}: {} vanished", index.display())
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                log::warn!("gc: {what}: ignoring {entry:?}: reached through a symlink")
            }
            Ok(_) => log::warn!("gc: {what}: ignoring {entry:?}: not a regular file"),
            Err(e) => return Err(Error::io(index.display(), e)),
        }
    }
    file.set_len(0).ctx(format!("truncate {what}"))?;
    Ok(())
}

/// Take the journal's exclusive `flock`, polling until PBS's 10 s deadline (a helper
/// thread blocked in `flock` would take it late and leak it).
fn lock_journal(file: File, path: &Path) -> Result<File> {
    let deadline = Instant::now() + JOURNAL_LOCK_TIMEOUT;
    let mut sleep = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", path.display()), e))
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::LockBusy {
                what: "gc: the move journal".into(),
                lock: path.to_path_buf(),
                why: LockWhy::TimedOut,
            });
        }
        std::thread::sleep(sleep.min(deadline - now));
        sleep = (sleep * 2).min(Duration::from_millis(20));
    }
}

/// Where a journal entry is in this store (relative to its root), if it names an index
/// file inside it. PBS writes the path as it sees the store (its `path`, or a removable
/// store's mount point), which may differ from the folder pbsfs opened (a symlink, a
/// bind mount): the part below either root is taken below ours. No `..`, no other kinds
/// of file.
fn journal_index_rel(ds: &Datastore, cfg: &StoreConfig, entry: &Path) -> Option<PathBuf> {
    let data = cfg.data_path();
    let roots = [
        Some(ds.root().to_path_buf()),
        Some(data.clone()),
        fs::canonicalize(&data).ok(),
    ];
    let rel = roots
        .iter()
        .flatten()
        .find_map(|r| entry.strip_prefix(r).ok())?;
    let name = rel.file_name()?.to_str()?;
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && (name.ends_with(".fidx") || name.ends_with(".didx"))).then(|| rel.to_path_buf())
}

/// `lstat` of `root/rel`, failing with ELOOP when a folder on the way is a symlink (it
/// could lead out of the store).
fn lstat_below(root: &Path, rel: &Path) -> std::io::Result<fs::Metadata> {
    let mut cur = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        cur.push(c);
        let m = fs::symlink_metadata(&cur)?;
        if parts.peek().is_none() {
            return Ok(m);
        }
        if m.file_type().is_symlink() {
            return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Sweep one prefix folder into `r`.
fn sweep_prefix(
    cs: &ChunkStore,
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
