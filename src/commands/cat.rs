//! `pbsfs cat`: an archive's content on stdout, every chunk verified, the index checked
//! against the manifest first. The snapshot is locked shared while it is read.

use std::io::Write;

use crate::store::format::blob;
use crate::store::format::index::Index;
use crate::store::format::manifest::{Manifest, CLIENT_LOG_BLOB_NAME};
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::error::{Error, IoContext, Result};

/// Map a user's archive name (`drive-scsi0.img`, `drive-scsi0.img.fidx`, `client.log`) to
/// the file in the snapshot folder.
pub fn resolve_archive(ds: &Datastore, d: &BackupDir, m: &Manifest, name: &str) -> Result<String> {
    let files: Vec<String> = m.files()?.into_iter().map(|f| f.filename).collect();
    let on_disk_log = ds.snapshot_path(d).join(CLIENT_LOG_BLOB_NAME).is_file();
    let known =
        |n: &str| files.iter().any(|f| f == n) || (n == CLIENT_LOG_BLOB_NAME && on_disk_log);
    if known(name) {
        return Ok(name.to_string());
    }
    for ext in ["fidx", "didx", "blob"] {
        let n = format!("{name}.{ext}");
        if known(&n) {
            return Ok(n);
        }
    }
    Err(Error::NotFound(format!(
        "snapshot {d} has no archive '{name}' (it has: {})",
        files.join(", ")
    )))
}

pub fn run(
    store: &std::path::Path,
    ns: Option<&str>,
    snapshot: &str,
    archive: &str,
    pbs: Option<&str>,
) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    let ns = super::parse_ns(ns)?;
    let d = super::resolve_snapshot(&ds, &ns, snapshot)?;
    let _lock = ds.locker().lock_snapshot(&d, false)?;
    let m = ds.load_manifest(&d)?;
    let file = resolve_archive(&ds, &d, &m, archive)?;
    let path = ds.snapshot_path(&d).join(&file);
    let what = format!("{d}/{file}");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    if file.ends_with(".blob") {
        let raw = std::fs::read(&path).ctx(&what)?;
        if let Some(entry) = m.file(&file) {
            if crate::util::digest::Digest::of(&raw) != entry.csum {
                return Err(Error::Corrupt(format!(
                    "{what}: checksum differs from the manifest"
                )));
            }
        }
        let data = blob::decode(&raw).map_err(|e| e.context(&what))?;
        out.write_all(&data).ctx("stdout")?;
    } else {
        let idx = Index::open(&path)?;
        let entry = m
            .file(&file)
            .ok_or_else(|| Error::Corrupt(format!("{what}: not in the manifest")))?;
        if idx.csum() != entry.csum {
            return Err(Error::Corrupt(format!(
                "{what}: index checksum {} differs from the manifest's {}",
                idx.csum(),
                entry.csum
            )));
        }
        let chunks: Vec<_> = idx.chunks().collect();
        let store = ds.chunk_store();
        // Verify on all cores, a bounded window ahead; write strictly in order and stop
        // at the first bad chunk, so only verified bytes before it are ever written.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for window in chunks.chunks(workers * 2) {
            let results: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
                let handles: Vec<_> = window
                    .iter()
                    .map(|c| s.spawn(move || store.read_verified(&c.digest, Some(c.len()))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("reader thread"))
                    .collect()
            });
            for r in results {
                out.write_all(&r.map_err(|e| e.context(&what))?)
                    .ctx("stdout")?;
            }
        }
    }
    out.flush().ctx("stdout")?;
    Ok(0)
}
