//! Verify (spec §2.3, §5.4, §11.3): every chunk a snapshot references exists, passes its
//! CRC, decodes, hashes to its name and has the index's length; index checksums and
//! blob checksums match the manifest. A chunk shared by many snapshots is checked once
//! per run, on all cores. Holds the shared snapshot lock while checking, and the
//! manifest lock only to record `verify_state`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::store::chunks::ChunkCheck;
use crate::store::format::archive::ArchiveKind;
use crate::store::format::blob;
use crate::store::format::manifest::{CryptMode, FileEntry, VerifyState};
use crate::store::format::names::BackupDir;
use crate::store::ops::{Progress, ProgressFn};
use crate::store::Datastore;
use crate::util::digest::Digest;
use crate::util::error::{exit, CorruptKind, Error, Result};
use crate::util::upid::Upid;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub ignore_verified: bool,
    pub outdated_after: Option<u64>,
    pub rename_bad: bool,
    /// PBS worker type for the recorded UPID: verify_snapshot, verify_group or verify.
    pub worker_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    Ok,
    Failed(Vec<String>),
    /// Skipped by `--ignore-verified`.
    AlreadyVerified,
    /// Could not take the shared snapshot lock (a backup, prune or protect runs).
    Locked(String),
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub snapshots: Vec<(BackupDir, SnapshotOutcome)>,
    /// Each bad chunk, why, and the archives (`snapshot/file`) referencing it.
    pub bad_chunks: BTreeMap<Digest, BadChunk>,
    pub chunks_checked: u64,
    pub encrypted_chunks: u64,
    /// Errors recording verify_state or renaming bad chunks (not damage).
    pub record_errors: Vec<String>,
    /// Why nothing was recorded (a store that may not be written); not an error.
    pub not_recorded: Option<String>,
}

impl VerifyReport {
    pub fn damaged(&self) -> bool {
        self.snapshots
            .iter()
            .any(|(_, o)| matches!(o, SnapshotOutcome::Failed(_)))
    }

    /// The truth in one number: damage is 1; good data whose result could not be
    /// recorded where recording is possible (a lock timeout) is 2; else 0.
    pub fn exit_code(&self) -> i32 {
        if self.damaged() {
            exit::DAMAGE
        } else if !self.record_errors.is_empty() {
            exit::FAILURE
        } else {
            exit::OK
        }
    }
}

/// A chunk that failed its check.
#[derive(Debug, Clone)]
pub struct BadChunk {
    pub error: Error,
    /// The archives (`snapshot/file`) that reference it.
    pub archives: Vec<String>,
}

impl BadChunk {
    /// Missing rather than damaged: nothing to rename.
    pub fn is_missing(&self) -> bool {
        matches!(self.error.kind(), Error::ChunkMissing { .. })
    }

    /// Why, without the digest and path the report already names.
    pub fn reason(&self) -> String {
        reason(&self.error)
    }
}

fn reason(e: &Error) -> String {
    match e.kind() {
        Error::ChunkMissing { .. } => "missing".into(),
        Error::ChunkCorrupt { why, .. } => why.to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone)]
enum ChunkResult {
    /// Verified; plain length.
    Good(u64),
    Encrypted,
    Bad(Error),
}

/// Results shared across snapshots of one run, and how far the run is.
#[derive(Default)]
struct Cache<'a> {
    chunks: Mutex<HashMap<Digest, ChunkResult>>,
    progress: Option<ProgressFn<'a>>,
    /// The snapshot being checked (1-based) and their number.
    snapshot: u64,
    snapshots: u64,
    /// Distinct chunks checked, and queued (checked or to check), this run.
    checked: AtomicU64,
    queued: AtomicU64,
}

impl Cache<'_> {
    fn report(&self) {
        if let Some(report) = self.progress {
            report(Progress::Verify {
                snapshot: self.snapshot,
                snapshots: self.snapshots,
                chunks: self.checked.load(Ordering::Relaxed),
                chunks_total: self.queued.load(Ordering::Relaxed),
            });
        }
    }
}

/// Should `--ignore-verified` skip a snapshot with this state?
fn skip_verified(m: &crate::store::format::manifest::Manifest, opts: &VerifyOptions) -> bool {
    if !opts.ignore_verified {
        return false;
    }
    let Some(Ok(state)) = m.verify_state() else {
        return false;
    };
    match opts.outdated_after {
        None => true,
        Some(days) => match Upid::parse(&state.upid) {
            Ok(u) => (crate::util::time::now() - u.starttime) / 86_400 <= days as i64,
            Err(_) => false,
        },
    }
}

/// Verify `dirs` and record a `verify_state` on each snapshot checked.
pub fn verify_snapshots(
    ds: &Datastore,
    dirs: &[BackupDir],
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    verify_snapshots_with_progress(ds, dirs, opts, None)
}

/// `verify_snapshots`, reporting the snapshot being checked and the chunks checked
/// (`Progress::Verify`, from the checking threads).
pub fn verify_snapshots_with_progress(
    ds: &Datastore,
    dirs: &[BackupDir],
    opts: &VerifyOptions,
    progress: Option<ProgressFn>,
) -> Result<VerifyReport> {
    let access = ds.access();
    if let Some(r) = access.no_chunks {
        return Err(Error::Unavailable {
            what: format!("verify of datastore {}", ds.root().display()),
            why: r.to_string(),
        });
    }
    let mut cache = Cache {
        progress,
        snapshots: dirs.len() as u64,
        ..Cache::default()
    };
    let mut report = VerifyReport {
        not_recorded: access.no_writes.map(|r| r.to_string()),
        ..VerifyReport::default()
    };
    for d in dirs {
        cache.snapshot += 1;
        cache.report();
        let outcome = verify_one(ds, d, opts, &cache, &mut report);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => SnapshotOutcome::Failed(vec![e.to_string()]),
        };
        let checked = matches!(outcome, SnapshotOutcome::Ok | SnapshotOutcome::Failed(_));
        if checked && report.not_recorded.is_none() {
            let worker = if opts.worker_type.is_empty() {
                "verify_snapshot"
            } else {
                &opts.worker_type
            };
            let wid = d.worker_id(&ds.name());
            let state = VerifyState {
                ok: outcome == SnapshotOutcome::Ok,
                upid: Upid::new(worker, &wid, "root@pam").to_string(),
            };
            let res = ds.update_manifest(d, |u| {
                u.insert("verify_state".into(), state.to_value());
                Ok(())
            });
            match res {
                Ok(()) => {}
                // The store became read-only meanwhile: nothing more can be recorded.
                Err(e) if matches!(e.kind(), Error::ReadOnly { .. }) => {
                    report.not_recorded = Some(e.to_string())
                }
                Err(e) => report
                    .record_errors
                    .push(format!("{d}: could not record verify_state: {e}")),
            }
        }
        report.snapshots.push((d.clone(), outcome));
    }
    report.chunks_checked = cache.chunks.lock().len() as u64;
    if opts.rename_bad && report.not_recorded.is_none() {
        for (digest, bad) in &report.bad_chunks {
            if bad.is_missing() {
                continue;
            }
            match ds.chunk_store().rename_bad(digest) {
                Ok(p) => log::warn!("renamed corrupt chunk {digest} to {}", p.display()),
                Err(e) => report
                    .record_errors
                    .push(format!("rename chunk {digest}: {e}")),
            }
        }
    }
    Ok(report)
}

fn verify_one(
    ds: &Datastore,
    d: &BackupDir,
    opts: &VerifyOptions,
    cache: &Cache,
    report: &mut VerifyReport,
) -> Result<SnapshotOutcome> {
    let _lock = match ds.locker().lock_snapshot_shared(d) {
        Ok(l) => l,
        Err(e @ Error::LockBusy { .. }) => return Ok(SnapshotOutcome::Locked(e.to_string())),
        Err(e) => return Err(e),
    };
    let m = ds.load_manifest(d)?;
    if skip_verified(&m, opts) {
        return Ok(SnapshotOutcome::AlreadyVerified);
    }
    let mut problems = Vec::new();
    let folder = ds.snapshot_path(d);
    for f in m.files()? {
        let path = folder.join(&f.filename);
        let what = format!("{d}/{}", f.filename);
        let Some(kind) = ArchiveKind::of_file(&f.filename) else {
            continue;
        };
        if !kind.is_index() {
            if let Err(e) = check_blob(ds, &path, &f) {
                problems.push(format!("{what}: {e}"));
            }
            continue;
        }
        let idx = match ds
            .read_index(&path)
            .and_then(|idx| f.check_index(&idx).map(|_| idx))
        {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        let chunks: Vec<(Digest, u64)> = idx.chunks().map(|c| (c.digest, c.len())).collect();
        check_chunks(ds, &chunks, cache);
        let results = cache.chunks.lock();
        // PBS fails a snapshot whose chunks' crypt mode disagrees with its archive's
        // (spec §11.3); the chunk itself is sound, so it is not renamed.
        let want_encrypted = f.crypt_mode == CryptMode::Encrypt;
        if let Some((digest, _)) = chunks.iter().find(|(d, _)| match &results[d] {
            ChunkResult::Encrypted => !want_encrypted,
            ChunkResult::Good(_) => want_encrypted,
            ChunkResult::Bad(_) => false,
        }) {
            problems.push(format!(
                "{what}: chunk {digest} is {} but the archive's crypt-mode is {}",
                if want_encrypted {
                    "not encrypted"
                } else {
                    "encrypted"
                },
                f.crypt_mode.as_str()
            ));
        }
        for (digest, len) in &chunks {
            let bad = match &results[digest] {
                ChunkResult::Good(l) if l == len => None,
                // Verified earlier in this run at another index's length.
                ChunkResult::Good(l) => Some(Error::ChunkCorrupt {
                    digest: *digest,
                    path: ds.chunk_store().chunk_path(digest),
                    why: CorruptKind::Length {
                        actual: *l,
                        expected: *len,
                    },
                }),
                ChunkResult::Encrypted => None,
                ChunkResult::Bad(e) => Some(e.clone()),
            };
            if let Some(error) = bad {
                problems.push(format!("{what}: chunk {digest}: {}", reason(&error)));
                let entry = report
                    .bad_chunks
                    .entry(*digest)
                    .or_insert_with(|| BadChunk {
                        error,
                        archives: Vec::new(),
                    });
                if !entry.archives.contains(&what) {
                    entry.archives.push(what.clone());
                }
            }
        }
        report.encrypted_chunks += chunks
            .iter()
            .filter(|(d, _)| matches!(results[d], ChunkResult::Encrypted))
            .count() as u64;
    }
    problems.dedup();
    Ok(if problems.is_empty() {
        SnapshotOutcome::Ok
    } else {
        SnapshotOutcome::Failed(problems)
    })
}

/// Check every chunk not checked yet in this run, on all cores.
fn check_chunks(ds: &Datastore, chunks: &[(Digest, u64)], cache: &Cache) {
    let todo: Vec<(Digest, u64)> = {
        let known = cache.chunks.lock();
        let mut seen = std::collections::HashSet::new();
        chunks
            .iter()
            .filter(|(d, _)| !known.contains_key(d) && seen.insert(*d))
            .copied()
            .collect()
    };
    cache.queued.fetch_add(todo.len() as u64, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(todo.len().max(1));
    let store = ds.chunk_store();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((digest, len)) = todo.get(i) else {
                    break;
                };
                let r = match store.verify_chunk(digest, Some(*len)) {
                    Ok(ChunkCheck::Verified) => ChunkResult::Good(*len),
                    Ok(ChunkCheck::EncryptedUnverifiable) => ChunkResult::Encrypted,
                    Err(e) => ChunkResult::Bad(e),
                };
                cache.chunks.lock().insert(*digest, r);
                cache.checked.fetch_add(1, Ordering::Relaxed);
                cache.report();
            });
        }
    });
}

/// A blob against its manifest entry; an encrypted blob can only be CRC-checked.
fn check_blob(ds: &Datastore, path: &std::path::Path, f: &FileEntry) -> Result<()> {
    let raw = ds.fs().read(path, blob::MAX_BLOB_FILE)?;
    f.check_blob(&raw)?;
    match blob::decode(&raw) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), Error::Encrypted { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
