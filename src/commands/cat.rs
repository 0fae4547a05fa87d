//! `pbsfs cat`: an archive's content on stdout, every chunk verified, the index or blob
//! checked against the manifest first. The snapshot is locked shared while it is read.

use std::io::Write;
use std::sync::Arc;

use crate::pxar::decoder::Archive;
use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::ArchiveData;
use crate::util::error::{exit, Error, IoContext, Result};

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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    // `root.pxar/etc/hostname`: one file inside a pxar archive.
    if let Some((arch, inner)) = archive.split_once('/') {
        let name = super::resolve_archive(&ds, &d, &m, arch)?;
        let streams = ds.open_pxar(&d, &m, &name, Arc::new(ChunkCache::new(16 << 20)))?;
        let ar = Archive::open(streams.meta, streams.payload, format!("{d}/{name}"))?;
        let what = || format!("{inner} in archive {d}/{name}");
        let e = ar
            .lookup_path(inner.as_bytes())?
            .ok_or_else(|| Error::not_found(what()))?;
        let c = ar.content(&e).map_err(|e| e.context(what()))?;
        let mut buf = vec![0u8; (1 << 20).min(c.len() as usize)];
        let mut pos = 0;
        while pos < c.len() {
            let n = ar.read_content(&c, pos, &mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).ctx("stdout")?;
            pos += n as u64;
        }
        out.flush().ctx("stdout")?;
        return Ok(exit::OK);
    }
    let name = super::resolve_archive(&ds, &d, &m, archive)?;
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
