//! `pbsfs cat`: an archive's content on stdout, every chunk verified, the index or blob
//! checked against the manifest first. The snapshot is locked shared while it is read.

use std::io::Write;
use std::sync::Arc;

use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::ArchiveData;
use crate::util::error::{exit, IoContext, Result};

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
    let name = super::resolve_archive(&ds, &d, &m, archive)?;
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
