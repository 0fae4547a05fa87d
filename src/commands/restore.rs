//! `pbsfs restore`: an image to a file (sparse, verified), a blob to a file, a pxar
//! archive (or one subtree) to a folder; a progress bar on a terminal and a summary.

use crate::util::count;
use std::sync::Arc;

use crate::cli::RestoreArgs;
use crate::pxar::decoder::Archive;
use crate::restore::{restore_image, restore_pxar, RestoreOptions, RestoreReport};
use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::ArchiveData;
use crate::store::format::archive::ArchiveKind;
use crate::util::error::{exit, Error, IoContext, Result};

pub fn run(args: &RestoreArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let d = super::resolve_snapshot(&ds, &ns, &args.snapshot)?;
    let _lock = ds.locker().lock_snapshot_shared(&d)?;
    let m = ds.load_manifest(&d)?;
    let name = super::resolve_archive(&ds, &d, &m, &args.archive)?;
    let opts = RestoreOptions {
        overwrite: args.overwrite,
        progress: super::progress::terminal_bytes("restore"),
    };
    let report = match name.kind() {
        ArchiveKind::Image | ArchiveKind::Stream | ArchiveKind::Blob | ArchiveKind::ClientLog => {
            if args.path.is_some() {
                return Err(Error::invalid(
                    "--path",
                    format!("{name} is not a pxar archive: it has no paths inside"),
                ));
            }
            match ds.open_archive(&d, &m, &name, Arc::new(ChunkCache::new(0)))? {
                ArchiveData::Index(reader) => restore_image(&reader, &args.target, &opts)?,
                ArchiveData::Blob(data) => restore_blob(&data, args, &opts)?,
            }
        }
        ArchiveKind::Pxar | ArchiveKind::SplitMeta => {
            let streams = ds.open_pxar(&d, &m, &name, Arc::new(ChunkCache::new(16 << 20)))?;
            let ar = Archive::open(streams.meta, streams.payload, format!("{d}/{name}"))?;
            let start = match &args.path {
                None => ar.root()?,
                Some(p) => ar
                    .lookup_path(p.as_bytes())?
                    .ok_or_else(|| Error::not_found(format!("{p} in archive {d}/{name}")))?,
            };
            restore_pxar(&ar, &start, &args.target, &opts)?
        }
        ArchiveKind::SplitPayload | ArchiveKind::Catalog => {
            return Err(Error::invalid(
                format!("archive {name}"),
                "not restorable by itself (restore the pxar archive it belongs to)",
            ))
        }
    };
    super::progress::finish_bytes();
    let mib = report.bytes as f64 / (1024.0 * 1024.0);
    println!(
        "restored {d}/{name} to {}: {}, {} ({mib:.1} MiB, {} in holes) in {:.1} s",
        args.target.display(),
        count(report.files, "file"),
        count(report.bytes, "byte"),
        report.sparse_bytes,
        report.seconds
    );
    Ok(exit::OK)
}

fn restore_blob(data: &[u8], args: &RestoreArgs, opts: &RestoreOptions) -> Result<RestoreReport> {
    if args.target.exists() && !opts.overwrite {
        return Err(Error::AlreadyExists {
            what: format!(
                "restore target {} (use --overwrite to replace it)",
                args.target.display()
            ),
        });
    }
    std::fs::write(&args.target, data).ctx(args.target.display())?;
    Ok(RestoreReport {
        files: 1,
        bytes: data.len() as u64,
        ..RestoreReport::default()
    })
}
