//! `pbsfs cat`: an archive's content on stdout, every chunk verified, the index or blob
//! checked against the manifest first. The snapshot is locked shared while it is read.

use std::io::Write;
use std::sync::Arc;

use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::ArchiveData;
use crate::store::format::archive::ArchiveName;
use crate::store::format::manifest::{Manifest, CLIENT_LOG_BLOB_NAME};
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};

/// Map a user's archive name (`drive-scsi0.img`, `drive-scsi0.img.fidx`, `client.log`) to
/// an archive the snapshot has: one its manifest lists, or its `client.log.blob`.
fn resolve_archive(ds: &Datastore, d: &BackupDir, m: &Manifest, name: &str) -> Result<ArchiveName> {
    let mut files: Vec<String> = m.files()?.into_iter().map(|f| f.filename).collect();
    if ds
        .fs()
        .is_file(&ds.snapshot_path(d).join(CLIENT_LOG_BLOB_NAME))
    {
        files.push(CLIENT_LOG_BLOB_NAME.to_string());
    }
    match ArchiveName::resolve(name, files.iter().map(String::as_str)) {
        Some(file) => ArchiveName::parse(&file),
        None => Err(Error::not_found(format!(
            "archive '{name}' in snapshot {d} (it has: {})",
            files.join(", ")
        ))),
    }
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
    let _lock = ds.locker().lock_snapshot_shared(&d)?;
    let m = ds.load_manifest(&d)?;
    let name = resolve_archive(&ds, &d, &m, archive)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    // Each chunk is read once: a cache would only hold what is never asked for again.
    match ds.open_archive(&d, &m, &name, Arc::new(ChunkCache::new(0)))? {
        ArchiveData::Blob(data) => out.write_all(&data).ctx("stdout")?,
        ArchiveData::Index(reader) => {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            reader.copy_to(&mut out, workers)?;
        }
    }
    out.flush().ctx("stdout")?;
    Ok(exit::OK)
}
