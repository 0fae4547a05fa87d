//! Verify (spec §2.3, §5.4, §11.3): every chunk a snapshot references exists, passes its
//! CRC, decodes, hashes to its name and has the index's length; index checksums and
//! blob checksums match the manifest. A chunk shared by many snapshots is checked once
//! per run, on all cores. Holds the shared snapshot lock while checking, and the
//! manifest lock only to record `verify_state`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::store::chunks::ChunkCheck;
use crate::store::format::blob;
use crate::store::format::index::Index;
use crate::store::format::manifest::VerifyState;
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::digest::Digest;
use crate::util::error::{Error, Result};
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
    pub bad_chunks: BTreeMap<Digest, (String, Vec<String>)>,
    pub chunks_checked: u64,
    pub encrypted_chunks: u64,
    /// Errors recording verify_state (not damage).
    pub record_errors: Vec<String>,
}

impl VerifyReport {
    pub fn damaged(&self) -> bool {
        self.snapshots
            .iter()
            .any(|(_, o)| matches!(o, SnapshotOutcome::Failed(_)))
    }
}

#[derive(Debug, Clone)]
enum ChunkResult {
    /// Verified; plain length.
    Good(u64),
    Encrypted,
    Bad(String),
}

/// Results shared across snapshots of one run.
#[derive(Default)]
struct Cache {
    chunks: Mutex<HashMap<Digest, ChunkResult>>,
}

/// PBS's worker id of a snapshot task: `<store>:[<ns>/]<type>/<id>/<TIME as %08X>`.
pub fn snapshot_worker_id(ds: &Datastore, d: &BackupDir) -> String {
    let ns = if d.group.ns.is_root() {
        String::new()
    } else {
        format!("{}/", d.group.ns)
    };
    format!(
        "{}:{ns}{}/{}/{:08X}",
        ds.name(),
        d.group.ty,
        d.group.id,
        d.time
    )
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
    let cache = Cache::default();
    let mut report = VerifyReport::default();
    for d in dirs {
        let outcome = verify_one(ds, d, opts, &cache, &mut report);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => SnapshotOutcome::Failed(vec![e.to_string()]),
        };
        if matches!(outcome, SnapshotOutcome::Ok | SnapshotOutcome::Failed(_)) {
            let worker = if opts.worker_type.is_empty() {
                "verify_snapshot"
            } else {
                &opts.worker_type
            };
            let wid = snapshot_worker_id(ds, d);
            let state = VerifyState {
                ok: outcome == SnapshotOutcome::Ok,
                upid: Upid::new(worker, &wid, "root@pam").to_string(),
            };
            let res = ds.update_manifest(d, |u| {
                u.insert("verify_state".into(), state.to_value());
                Ok(())
            });
            if let Err(e) = res {
                report
                    .record_errors
                    .push(format!("{d}: could not record verify_state: {e}"));
            }
        }
        report.snapshots.push((d.clone(), outcome));
    }
    report.chunks_checked = cache.chunks.lock().len() as u64;
    if opts.rename_bad {
        for (digest, (why, _)) in &report.bad_chunks {
            if why.contains("missing") {
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
    let _lock = match ds.locker().lock_snapshot(d, false) {
        Ok(l) => l,
        Err(e @ Error::LockBusy(_)) => return Ok(SnapshotOutcome::Locked(e.to_string())),
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
        if f.filename.ends_with(".blob") {
            if let Err(e) = check_blob(&path, &f) {
                problems.push(format!("{what}: {e}"));
            }
            continue;
        }
        if !(f.filename.ends_with(".fidx") || f.filename.ends_with(".didx")) {
            continue;
        }
        let idx = match Index::open(&path) {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        if idx.csum() != f.csum {
            problems.push(format!(
                "{what}: index checksum {} differs from the manifest's {}",
                idx.csum(),
                f.csum
            ));
        }
        if idx.size() != f.size {
            problems.push(format!(
                "{what}: index size {} differs from the manifest's {}",
                idx.size(),
                f.size
            ));
        }
        let chunks: Vec<(Digest, u64)> = idx.chunks().map(|c| (c.digest, c.len())).collect();
        check_chunks(ds, &chunks, cache);
        let results = cache.chunks.lock();
        for (digest, len) in &chunks {
            let bad = match &results[digest] {
                ChunkResult::Good(l) if l == len => None,
                ChunkResult::Good(l) => Some(format!("length {l} differs from the index's {len}")),
                ChunkResult::Encrypted => None,
                ChunkResult::Bad(why) => Some(why.clone()),
            };
            if let Some(why) = bad {
                let entry = report
                    .bad_chunks
                    .entry(*digest)
                    .or_insert_with(|| (why.clone(), Vec::new()));
                if !entry.1.contains(&what) {
                    entry.1.push(what.clone());
                }
                problems.push(format!("{what}: chunk {digest}: {why}"));
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
                    Err(e) => ChunkResult::Bad(short_reason(&e, digest)),
                };
                cache.chunks.lock().insert(*digest, r);
            });
        }
    });
}

/// The reason without the "chunk <digest> (<path>): " prefix the store adds.
fn short_reason(e: &Error, digest: &Digest) -> String {
    let s = e.to_string();
    let prefix = format!("chunk {digest} (");
    match s.strip_prefix(&prefix).and_then(|r| r.split_once("): ")) {
        Some((_, why)) => why.to_string(),
        None => s,
    }
}

fn check_blob(path: &std::path::Path, f: &crate::store::format::manifest::FileEntry) -> Result<()> {
    let raw = std::fs::read(path).map_err(|e| Error::io("blob", e))?;
    if raw.len() as u64 != f.size {
        return Err(Error::Corrupt(format!(
            "blob has {} bytes, the manifest says {}",
            raw.len(),
            f.size
        )));
    }
    let csum = Digest::of(&raw);
    if csum != f.csum {
        return Err(Error::Corrupt(format!(
            "blob checksum {csum} differs from the manifest's {}",
            f.csum
        )));
    }
    match blob::decode(&raw) {
        Ok(_) | Err(Error::Encrypted(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
