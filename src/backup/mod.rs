//! Backup: read sources into a new snapshot (fixed indexes for images, blobs for small
//! files, pxar archives of folders with their catalog) under the locks a PBS backup
//! takes, writing the manifest last so a crash never leaves a finished snapshot that
//! references missing data. Chunks the base snapshot already references are reused;
//! their existence is checked in the background (spec §11.5) unless the base was
//! verified recently.

mod base;
pub mod chunker;
mod exclude;
mod image;
mod image_read;
mod pxar;
mod pxar_meta;
mod pxar_out;
mod pxar_prev;
mod pxar_walk;
mod source;
mod upload;

use std::collections::HashSet;
use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::store::format::manifest::Manifest;
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::Datastore;
use crate::util::digest::Digest;

use crate::util::error::{Error, IoContext, Result};
pub use base::recently_verified;
use base::{load_base, mark_base_failed};
use image::{backup_blob, backup_image, UploadStats};
pub use pxar::ChangeDetectionMode;
use source::check_source;
pub use source::{ArchiveSource, MAX_BLOB_SOURCE};

pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The smallest fixed-index chunk the PBS client writes; smaller ones (tests, tiny
/// images) are valid but warned about.
pub const PBS_MIN_CHUNK_SIZE: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub time: Option<i64>,
    pub notes: Option<String>,
    pub chunk_size: u64,
    pub owner: String,
    /// Create the group's namespace when it does not exist. PBS requires namespaces to
    /// be created before backups go into them, so by default a missing one is refused:
    /// a typo must not create a namespace nobody asked for.
    pub create_ns: bool,
    /// Called with bytes done and total after each chunk (progress bar).
    pub progress: Option<fn(u64, u64)>,
    /// Exclude patterns of pxar archives (the PBS client's `--exclude`).
    pub excludes: Vec<String>,
    /// Descend into other file systems below a pxar archive's folder.
    pub all_file_systems: bool,
    /// How pxar archives are written (the PBS client's `--change-detection-mode`).
    pub change_detection: ChangeDetectionMode,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            time: None,
            notes: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            owner: "root@pam".into(),
            create_ns: false,
            progress: None,
            excludes: Vec::new(),
            all_file_systems: false,
            change_detection: ChangeDetectionMode::Legacy,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub snapshot: Option<BackupDir>,
    /// Logical bytes read from the sources.
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks written to the store.
    pub new_chunks: u64,
    /// Plain bytes of the written chunks.
    pub new_bytes: u64,
    /// Chunks not written: referenced by the base, or already in the store.
    pub reused_chunks: u64,
    /// Reused chunks whose existence was checked in the background.
    pub validated_chunks: u64,
    /// Files of pxar archives reported and skipped or stored as read (unreadable,
    /// changed while read).
    pub warnings: u64,
    /// Regular files of pxar archives read from the source, and their bytes.
    pub files_read: u64,
    pub file_bytes_read: u64,
    /// Regular files referenced from the previous snapshot's payload stream unread
    /// (metadata change detection), and their bytes.
    pub files_reused: u64,
    pub file_bytes_reused: u64,
    /// pxar archives written.
    pub pxar_archives: u64,
    pub seconds: f64,
}

impl BackupReport {
    fn add_files(&mut self, c: &pxar_out::FileCounts) {
        self.pxar_archives += 1;
        self.files_read += c.read;
        self.file_bytes_read += c.bytes_read;
        self.files_reused += c.reused;
        self.file_bytes_reused += c.bytes_reused;
    }

    /// Logical bytes per byte actually written.
    pub fn dedup_ratio(&self) -> f64 {
        if self.new_bytes == 0 {
            f64::INFINITY
        } else {
            self.bytes as f64 / self.new_bytes as f64
        }
    }
}

/// Run a backup of `sources` into a new snapshot of `group`.
pub fn run_backup(
    ds: &Datastore,
    group: &BackupGroup,
    sources: &[ArchiveSource],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let started = Instant::now();
    ds.check_writable()?;
    if !opts.chunk_size.is_power_of_two() || !(64..=(16 << 20)).contains(&opts.chunk_size) {
        return Err(Error::invalid(
            format!("chunk size {}", opts.chunk_size),
            "must be a power of two from 64 bytes to 16M",
        ));
    }
    if opts.chunk_size < PBS_MIN_CHUNK_SIZE {
        log::warn!(
            "chunk size {} is below 64K: the PBS client never writes chunks this small (PBS \
             reads them; meant for tests and tiny images)",
            opts.chunk_size
        );
    }
    // Everything that can be refused is refused before anything is created.
    let time = opts.time.unwrap_or_else(crate::util::time::now);
    let dir = BackupDir::for_new_backup(group.clone(), time)?;
    if !group.ns.is_root() && !opts.create_ns && !ds.ns_path(&group.ns).is_dir() {
        let why = "backup refused (PBS requires a namespace to be created before backups go \
                   into it: create it, or pass --create-ns)";
        return Err(Error::not_found(format!("namespace '{}'", group.ns)).context(why));
    }
    let mut names = HashSet::new();
    for s in sources {
        if !names.insert(s.server_name()) {
            return Err(Error::invalid(
                format!("archive '{}'", s.name()),
                "given twice",
            ));
        }
    }
    if let Some(n) = &opts.notes {
        crate::store::format::notes::validate_notes(n.as_bytes(), "backup notes")?;
    }
    for s in sources {
        check_source(s)?;
    }
    pxar::check_options(opts, sources)?;
    let _process = ds.locker().lock_process(false)?;
    let created = ds.create_group(group, &opts.owner)?;
    let group_lock = ds.locker().lock_group(group)?;
    let res = backup_locked(ds, &dir, sources, opts, started);
    if res.is_err() && created {
        // A group this failed run created would be left with no snapshot.
        ds.remove_empty_group_locked(group, group_lock);
    }
    res
}

/// The part of a backup that runs under the group lock.
fn backup_locked(
    ds: &Datastore,
    dir: &BackupDir,
    sources: &[ArchiveSource],
    opts: &BackupOptions,
    started: Instant,
) -> Result<BackupReport> {
    let (group, time) = (&dir.group, dir.time);
    let base = ds.last_finished(group)?;
    if let Some(b) = &base {
        if time <= b.dir.time {
            return Err(Error::invalid(
                format!(
                    "backup time {}",
                    crate::util::time::format_utc(time).unwrap_or_else(|| time.to_string())
                ),
                format!("not newer than the group's last snapshot {}", b.dir),
            ));
        }
    }

    // The base stays locked shared, so it cannot be pruned while we rely on its chunks.
    let (reuse, base_lock, validate) = match &base {
        Some(b) => load_base(ds, b)?,
        None => (HashSet::new(), None, false),
    };
    let reuse = Arc::new(reuse);

    let snap_lock = ds.create_snapshot_dir(dir)?;
    // Previous archives referenced by pxar archives (metadata mode): locked shared
    // until the snapshot is written.
    let claimed = std::cell::RefCell::new(Vec::new());
    let result = (|| {
        let mut report = BackupReport::default();
        let (tx, rx) = mpsc::channel::<Digest>();
        let store = ds.chunk_store().clone();
        let checker = std::thread::spawn(move || {
            let mut missing = Vec::new();
            let mut checked = 0u64;
            for d in rx {
                checked += 1;
                if !store.exists(&d) {
                    missing.push(d);
                }
            }
            (checked, missing)
        });
        let mut manifest = Manifest::new(dir);
        let mut stats = UploadStats::default();
        let mut outcome = Ok(());
        let uploads = pxar::Uploads {
            ds,
            reuse: &reuse,
            validate: validate.then_some(&tx),
            checker: &tx,
            claimed: &claimed,
            chunk_size: opts.chunk_size,
        };
        let mut catalog = None;
        for src in sources {
            let entry = match src {
                ArchiveSource::Image { path, .. } => {
                    let tx = validate.then_some(&tx);
                    backup_image(
                        ds,
                        dir,
                        src,
                        path,
                        opts,
                        &reuse,
                        tx,
                        &mut report,
                        &mut stats,
                    )
                    .map(|e| vec![e])
                }
                ArchiveSource::Blob { path, .. } => {
                    backup_blob(ds, dir, src, path, &mut report).map(|e| vec![e])
                }
                ArchiveSource::Pxar { path, .. } => pxar::backup_pxar(
                    &uploads,
                    dir,
                    src,
                    path,
                    opts,
                    &mut catalog,
                    &mut report,
                    &mut stats,
                ),
            };
            match entry {
                Ok(list) => list.iter().for_each(|e| manifest.add_file(e)),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // The catalog last, as the PBS client uploads it after the archives.
        if let (Ok(()), Some(c)) = (&outcome, catalog.take()) {
            match pxar::finish_catalog(ds, dir, c, &mut report, &mut stats) {
                Ok(e) => manifest.add_file(&e),
                Err(e) => outcome = Err(e),
            }
        }
        // Every sink (holding a sender) ends before the checker can.
        drop(catalog);
        drop(tx);
        let (checked, missing) = checker.join().expect("checker thread");
        report.validated_chunks = checked;
        outcome?;
        if let Some(first) = missing.first() {
            // Every snapshot whose chunks were taken over and that references a missing
            // one is marked failed: the next run does not reuse it and heals the store.
            let mut bad: Vec<&BackupDir> = Vec::new();
            let claimed = claimed.borrow();
            let refs = |set: &HashSet<Digest>| missing.iter().any(|d| set.contains(d));
            if let Some(b) = base.as_ref().filter(|_| refs(&reuse)) {
                bad.push(&b.dir);
            }
            for c in claimed.iter().filter(|c| refs(&c.digests)) {
                if !bad.contains(&&c.dir) {
                    bad.push(&c.dir);
                }
            }
            for b in &bad {
                mark_base_failed(ds, b);
            }
            let named: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
            let missing_chunk = Error::ChunkMissing {
                digest: *first,
                path: ds.chunk_store().chunk_path(first),
            };
            return Err(missing_chunk.context(format!(
                "base snapshot {} ({} chunks missing in all; marked as failed verification and \
                 not reused again: run the backup again)",
                named.join(", "),
                missing.len()
            )));
        }
        // Chunks are written without fsync each; one syncfs makes them all durable
        // before the manifest makes the snapshot visible (PBS's "filesystem" level).
        let f = File::open(ds.chunk_store().dir()).ctx(ds.chunk_store().dir().display())?;
        crate::util::sys::syncfs(&f).ctx("syncfs")?;
        if let Some(n) = &opts.notes {
            manifest
                .unprotected_mut()
                .insert("notes".into(), Value::String(n.clone()));
        }
        manifest.unprotected_mut().insert(
            "chunk_upload_stats".into(),
            json!({
                "count": stats.count,
                "size": stats.size,
                "compressed_size": stats.compressed_size,
                "duplicates": stats.duplicates,
            }),
        );
        ds.create_manifest(dir, &manifest, &snap_lock)?;
        report.snapshot = Some(dir.clone());
        Ok(report)
    })();
    drop(base_lock);
    drop(claimed);
    match result {
        Ok(mut r) => {
            r.seconds = started.elapsed().as_secs_f64();
            Ok(r)
        }
        Err(e) => {
            // Through the opened group folder: never a symlink planted meanwhile.
            if let Ok(g) = ds.fs().dir(&ds.group_path(&dir.group)) {
                let _ = std::fs::remove_dir_all(g.join(dir.time_string()));
            }
            drop(snap_lock);
            ds.locker().remove_snapshot_lock_files(dir);
            Err(e.context(format!("backup {dir}")))
        }
    }
}
